"""``python -m hpcvsr.pretrain``: the same as ``hpcvsr pretrain`` (:mod:`hpcvsr.cli.pretrain`)."""

import sys

from hpcvsr.cli.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
