"""``python -m hpcvsr.train``: the same as ``hpcvsr train`` (:mod:`hpcvsr.cli.train`)."""

import sys

from hpcvsr.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
