"""``python -m hpcvsr COMMAND``: the same as ``hpcvsr COMMAND``."""

import sys

from hpcvsr.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
