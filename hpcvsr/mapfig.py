"""``python -m hpcvsr.mapfig``: the same as ``hpcvsr mapfig`` (:mod:`hpcvsr.cli.mapfig`)."""

import sys

from hpcvsr.cli.mapfig import main

if __name__ == "__main__":
    sys.exit(main())
