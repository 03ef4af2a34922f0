"""Make a sequence file in hpcvsr's HDF5 layout from any data source.

    python -m hpcvsr.data swe --frames 200 --size 128 128 --seed 1 --out swe.h5
    python -m hpcvsr.data phantom --frames 100 --size 128 128 --out phantom.h5
    python -m hpcvsr.data images [--folder DIR] --size 256 256 --out images.h5
    python -m hpcvsr.data video clip.y4m --out clip.h5           (.y4m, .yuv with --size, folder)
    python -m hpcvsr.data archive run.nc --var zeta --start 0 --stop 500 --out part.h5
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ..errors import UserError, cli
from . import images, phantom, sequences, swe, video


def _center_crop(img: np.ndarray, size) -> np.ndarray:
    h, w = size
    H, W = img.shape
    if H < h or W < w:
        raise UserError(f"image of {H}x{W} is smaller than the requested {h}x{w}")
    y, x = (H - h) // 2, (W - w) // 2
    return img[y : y + h, x : x + w]


def build(args) -> tuple[dict, dict, dict]:
    """(variables, attributes, units) for the chosen source."""
    if args.source == "swe":
        seq = swe.generate(args.frames, tuple(args.size), args.seed, progress=not args.quiet)
        variables = {"h": seq.h, "u": seq.u, "v": seq.v, "vort": seq.vort}
        return variables, swe.attributes(seq), swe.UNITS
    if args.source == "phantom":
        data = phantom.generate(args.frames, tuple(args.size), args.seed)
        return {"phantom": data}, {"source": "phantom", "seed": args.seed, "dx": 1.0, "dt": 1.0}, {"phantom": "1"}
    if args.source == "images":
        pairs = images.load_luma(args.folder)
        if not pairs:
            raise UserError("no images found")
        size = args.size_given or [min(y.shape[0] for _, y in pairs), min(y.shape[1] for _, y in pairs)]
        stack = np.stack([_center_crop(y, size) for _, y in pairs]).astype(np.float32)
        attrs = {"source": "images", "folder": args.folder or "skimage.data", "names": ",".join(n for n, _ in pairs), "dx": 1.0, "dt": 0.0}
        return {"y": stack}, attrs, {"y": "8-bit luma"}
    if args.source == "video":
        frames = video.read_video(args.input, args.size_given, args.start, args.stop)
        return {"y": frames}, {"source": "video", "input": args.input, "dx": 1.0, "dt": 1.0}, {"y": "8-bit luma"}
    arc = sequences.Archive(args.input, args.var)
    stop = len(arc) if args.stop is None else args.stop
    data = arc.read(args.start, stop)
    arc.close()
    attrs = {"source": "archive", "input": args.input, "var": args.var, "start": args.start}
    attrs.update({k: v for k, v in arc.attrs.items() if isinstance(v, (int, float, str, np.number))})
    return {args.var: data}, attrs, {args.var: str(arc.units or "1")}


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
    sequences.check_writable(args.out, args.overwrite)  # refuse before any work is done
    t0 = time.time()
    variables, attrs, units = build(args)
    sequences.write_sequence(args.out, variables, attrs, units, overwrite=args.overwrite)
    first = next(iter(variables.values()))
    print(f"wrote {args.out}: {', '.join(variables)} of shape {tuple(first.shape)} float32 in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
