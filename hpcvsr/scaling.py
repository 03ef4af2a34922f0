"""``python -m hpcvsr.scaling``: the same as ``hpcvsr scaling`` (:mod:`hpcvsr.cli.scaling`)."""

import sys

from hpcvsr.cli.scaling import main

if __name__ == "__main__":
    sys.exit(main())
