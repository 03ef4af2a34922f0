"""``python -m hpcvsr.infer``: the same as ``hpcvsr infer`` (:mod:`hpcvsr.cli.infer`)."""

import sys

from hpcvsr.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
