"""``hpcvsr mapfig`` (``python -m hpcvsr.mapfig``): parse the arguments, call :mod:`hpcvsr.report.mapfig`."""

from __future__ import annotations

import argparse
import sys

from hpcvsr.errors import cli
from hpcvsr.report import mapfig as lib
from hpcvsr.report.mapfig import figure


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.mapfig", description=lib.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sr", required=True, help="output of python -m hpcvsr.infer ... --degrade --output SR.nc")
    p.add_argument("--hr", required=True, help="the NetCDF file that was super-resolved (the held-out high resolution)")
    p.add_argument("--var", required=True, help="variable name (the same in both files)")
    p.add_argument("--frame", type=int, default=0, help="frame index (default 0)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    from hpcvsr.io.atomic import atomic_path, check_writable

    check_writable(args.out, args.overwrite)
    fig = figure(args.sr, args.hr, args.var, args.frame)
    import matplotlib.pyplot as plt

    with atomic_path(args.out, overwrite=args.overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
