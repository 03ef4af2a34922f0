"""``python -m hpcvsr.checkpoint``: the same as ``hpcvsr checkpoint`` (:mod:`hpcvsr.cli.checkpoint`)."""

import sys

from hpcvsr.cli.checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
