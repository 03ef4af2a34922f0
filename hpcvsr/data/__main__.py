"""``python -m hpcvsr.data``: the same as ``hpcvsr data`` (:mod:`hpcvsr.cli.data`)."""

import sys

from hpcvsr.cli.data import main

if __name__ == "__main__":
    sys.exit(main())
