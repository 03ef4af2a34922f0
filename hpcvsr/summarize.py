"""``python -m hpcvsr.summarize``: the same as ``hpcvsr summarize`` (:mod:`hpcvsr.cli.summarize`)."""

import sys

from hpcvsr.cli.summarize import main

if __name__ == "__main__":
    sys.exit(main())
