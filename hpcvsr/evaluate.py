"""Evaluate an interpolation method or a model on images or a sequence file.

    python -m hpcvsr.evaluate --method bicubic --scale 2 --images DIR [--json out.json]
    python -m hpcvsr.evaluate --model srcnn --weights x2.mat --scale 2 --images DIR
    python -m hpcvsr.evaluate --method bicubic --scale 4 --sequence swe.h5 --var h --degrade point

Images follow the SRCNN/FSRCNN protocol: MATLAB luma, modcrop, MATLAB bicubic downscaling,
values rounded to 8 bits, border shave = scale. Sequences are degraded with ``--degrade`` and
compared in their own units (PSNR range = the reference's max - min unless --data-range).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from .data import degrade as dg
from .data import images
from .errors import UserError, check_finite, cli
from .io.atomic import write_json
from .metrics import MetricSums, shave


def _table(rows: list[dict], keys=("psnr", "ssim", "mse", "mae")) -> str:
    head = "| item | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
    return head + "".join(
        f"| {r['name']} | " + " | ".join(f"{r[k]:.4f}" if k != "mse" else f"{r[k]:.6g}" for k in keys) + " |\n" for r in rows
    )


def build_predictor(args, scale: int):
    """A function LR (N, h, w) in [0, 1] -> SR (N, H, W) in [0, 1]."""
    if args.model:
        from .models import weights as weights_mod

        model = weights_mod.load_for_eval(args.model, args.weights, scale)
        model.eval()

        def predict(lr):
            with torch.no_grad():
                return model(lr.unsqueeze(1).float()).squeeze(1).double()

        return predict, f"{args.model} ({os.path.basename(args.weights) if args.weights else 'bundled'})"
    return (lambda lr: dg.upscale(lr, scale, args.method)), args.method


def evaluate_images(args, predict) -> MetricSums:
    scale = args.scale
    acc = MetricSums(data_range=255.0, keep_items=True)
    names = []
    for name, y in images.load_luma(args.images):
        hr = torch.from_numpy(dg.modcrop(y, scale)) / 255.0
        lr = dg.imresize(hr, (hr.shape[0] // scale, hr.shape[1] // scale))
        sr = predict(lr[None])[0]
        # as the authors: back to 8-bit before measuring
        sr8 = torch.round(sr.clamp(0, 1) * 255.0)
        hr8 = torch.round(hr * 255.0)
        if args.shift:
            # the FSRCNN authors' x3 alignment ('shave_x3'): their x3 output is one pixel ahead
            sr8, hr8 = sr8[:-1, :-1], hr8[1:, 1:]
        acc.update(shave(sr8, scale)[None], shave(hr8, scale)[None])
        names.append(name)
    for n, item in zip(names, acc.items):
        item["name"] = n
    return acc


def evaluate_sequence(args, predict) -> MetricSums:
    from .data import sequences

    scale = args.scale
    frames = sequences.read_frames(args.sequence, args.var)
    check_finite(frames, f"{args.sequence}:{args.var} (evaluate needs complete frames; train/infer handle missing values)")
    hr = torch.from_numpy(np.asarray(frames, dtype=np.float64))
    dg.check_divisible(hr.shape, scale, what=f"{args.sequence}:{args.var} frame")
    lo, hi = float(hr.min()), float(hr.max())
    rng = args.data_range or (hi - lo) or 1.0
    norm = (hr - lo) / rng
    lr = dg.degrade(norm, scale, args.degrade)
    acc = MetricSums(data_range=1.0, unit_scale=rng, spectrum_cutoff=1.0 / scale, keep_items=True)
    for i in range(0, len(norm), 16):
        acc.update(predict(lr[i : i + 16]), norm[i : i + 16], offset=lo / rng)
    for i, item in enumerate(acc.items):
        item["name"] = f"frame {i}"
    return acc


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
