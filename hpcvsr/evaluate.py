"""``python -m hpcvsr.evaluate``: the same as ``hpcvsr evaluate`` (:mod:`hpcvsr.cli.evaluate`)."""

import sys

from hpcvsr.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
