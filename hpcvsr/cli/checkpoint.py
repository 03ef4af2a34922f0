"""``hpcvsr checkpoint`` (``python -m hpcvsr.checkpoint``): parse the arguments, call :mod:`hpcvsr.io.checkpoint`."""

from __future__ import annotations

import argparse
import os
import sys

from hpcvsr.errors import UserError, cli
from hpcvsr.io.checkpoint import VERSION, upgrade


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.checkpoint", description="Convert files of hpcvsr's first format.")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="convert a first-format checkpoint, model.pt or weights file (only files you trust)")
    up.add_argument("file")
    up.add_argument("--out", help="converted file (default: replace FILE, keeping FILE.v1)")
    args = p.parse_args(argv)
    dst = args.out or args.file
    if args.out and os.path.exists(args.out):
        raise UserError(f"{args.out} exists; refusing to overwrite it")
    if not os.path.isfile(args.file):
        raise UserError(f"file not found: {args.file}")
    if dst == args.file:
        os.replace(args.file, args.file + ".v1")
        src = args.file + ".v1"
    else:
        src = args.file
    kind = upgrade(src, dst)
    print(f"wrote {dst} ({kind} version {VERSION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
