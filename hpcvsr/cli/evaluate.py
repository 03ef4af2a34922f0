"""``hpcvsr evaluate`` (``python -m hpcvsr.evaluate``): parse the arguments, call :mod:`hpcvsr.inference.evaluate`."""

from __future__ import annotations

import argparse
import sys

from hpcvsr.errors import UserError, cli
from hpcvsr.inference import evaluate as lib
from hpcvsr.inference.evaluate import _table, build_predictor, evaluate_images, evaluate_sequence
from hpcvsr.io.atomic import write_json
from hpcvsr.ops import degrade as dg


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.evaluate", description=lib.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of PNG/JPEG/BMP images")
    src.add_argument("--sequence", help="HDF5 sequence file (python -m hpcvsr.data ...)")
    p.add_argument("--var", default="h", help="variable in --sequence (default h)")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--method", default="bicubic", choices=dg.UPSCALERS, help="interpolation baseline")
    p.add_argument("--model", help="model name (srcnn, srcnn_915, fsrcnn, fsrcnn_s, climate_fsrcnn)")
    p.add_argument("--weights", help="authors' .mat weights or an hpcvsr checkpoint .pt")
    p.add_argument("--degrade", default="bicubic", choices=dg.DEGRADATIONS, help="for --sequence")
    p.add_argument("--data-range", type=float, default=0.0, help="PSNR range for --sequence")
    p.add_argument("--shift", action="store_true", help="x3 one-pixel alignment of the FSRCNN authors (auto for fsrcnn x3)")
    p.add_argument("--json", help="write {'mean': ..., 'per_item': [...]} here")
    args = p.parse_args(argv)
    if args.scale < 1:
        raise UserError(f"--scale must be a positive integer, got {args.scale}")
    if args.model and args.model.startswith("fsrcnn") and args.scale == 3:
        args.shift = True
    predict, label = build_predictor(args, args.scale)
    acc = evaluate_images(args, predict) if args.images else evaluate_sequence(args, predict)
    mean = acc.summary()
    mean_out = {"psnr": mean["psnr_mean"], "ssim": mean["ssim"], "mse": mean["mse"], "mae": mean["mae"]}
    if args.sequence:
        mean_out.update({k: mean[k] for k in ("psnr", "rmse_phys", "mass_rel_err", "hf_energy_ratio") if k in mean})
        mean_out["psnr_global"] = mean_out.pop("psnr")
        mean_out["psnr"] = mean["psnr_mean"]
    rows = acc.items + [dict(name="**mean**", **{k: mean_out[k] for k in ("psnr", "ssim", "mse", "mae")})]
    print(f"{label}, x{args.scale}:")
    print(_table(rows), end="")
    if args.json:
        write_json(args.json, {"method": label, "scale": args.scale, "mean": mean_out, "per_item": acc.items})
    return 0


if __name__ == "__main__":
    sys.exit(main())
