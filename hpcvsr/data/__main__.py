"""Make a sequence file in hpcvsr's HDF5 layout from any data source.

    python -m hpcvsr.data swe --frames 200 --size 128 128 --seed 1 --out swe.h5
    python -m hpcvsr.data phantom --frames 100 --size 128 128 --out phantom.h5
    python -m hpcvsr.data images [--folder DIR] --size 256 256 --out images.h5
    python -m hpcvsr.data video clip.y4m --out clip.h5           (.y4m, .yuv with --size, folder)
    python -m hpcvsr.data archive run.nc --var zeta --start 0 --stop 500 --out part.h5   [--select level=500]
"""

from __future__ import annotations

import argparse
import sys
import time

from ..config import parse_pairs
from ..errors import UserError, cli
from ..io.atomic import check_writable
from . import sources


def build(args) -> sources.Built:
    if args.source in sources.GENERATED:
        return sources.generate(args.source, args.frames, args.size, args.seed, progress=not args.quiet)
    if args.source == "images":
        return sources.still_images(args.folder, args.size_given)
    if args.source == "video":
        return sources.video(args.input, args.size_given, args.start, args.stop)
    return sources.archive(args.input, args.var, args.start, args.stop, select=parse_pairs(args.select, "--select"),
                           isel=parse_pairs(args.isel, "--isel"))


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", choices=("swe", "phantom", "images", "video", "archive"))
    p.add_argument("input", nargs="?", help="video file/folder or archive file")
    p.add_argument("--out", required=True, help="output HDF5 file")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folder", help="image folder (default: scikit-image's bundled images)")
    p.add_argument("--var", default="h", help="archive variable")
    p.add_argument("--select", action="append", default=[], metavar="DIM=VALUE", help="NetCDF: an extra dimension by coordinate value")
    p.add_argument("--isel", action="append", default=[], metavar="DIM=INDEX", help="NetCDF: an extra dimension by index")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--stop", type=int)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.size_given = args.size
    args.size = args.size or [128, 128]
    if args.source in ("video", "archive") and not args.input:
        raise UserError(f"'{args.source}' needs an input file")
    if args.frames < 1:
        raise UserError(f"--frames must be positive, got {args.frames}")
    if min(args.size) < 8:
        raise UserError(f"--size must be at least 8x8, got {args.size}")
    check_writable(args.out, args.overwrite)  # refuse before any work is done
    t0 = time.time()
    built = build(args)
    built.write(args.out, overwrite=args.overwrite)
    first = next(iter(built.variables.values()))
    print(f"wrote {args.out}: {', '.join(built.variables)} of shape {tuple(first.shape)} float32 in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
