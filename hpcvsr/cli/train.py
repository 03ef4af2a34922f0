"""``hpcvsr train`` (``python -m hpcvsr.train``): parse the arguments, call :mod:`hpcvsr.training.run`."""

from __future__ import annotations

import argparse
import sys

from hpcvsr.errors import cli
from hpcvsr.pipeline import config as config_mod
from hpcvsr.training import run as lib
from hpcvsr.training.run import train


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.train", description=lib.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    config_mod.add_arguments(p)
    p.add_argument("--run-dir", default="runs/quickstart", help="output and checkpoint folder (default runs/quickstart)")
    args = p.parse_args(argv)
    return train(args.config, args.run_dir, overrides=args.overrides)


if __name__ == "__main__":
    sys.exit(main())
