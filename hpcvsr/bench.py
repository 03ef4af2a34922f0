"""``python -m hpcvsr.bench``: the same as ``hpcvsr bench`` (:mod:`hpcvsr.cli.bench`)."""

import contextlib
import sys

from hpcvsr.cli.bench import main

if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):  # piped into head
        sys.exit(main())
