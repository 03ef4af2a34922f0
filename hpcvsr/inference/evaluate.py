"""Evaluate an interpolation method or a model on images or a sequence file.

    python -m hpcvsr.evaluate --method bicubic --scale 2 --images DIR [--json out.json]
    python -m hpcvsr.evaluate --model srcnn --weights x2.mat --scale 2 --images DIR
    python -m hpcvsr.evaluate --method bicubic --scale 4 --sequence swe.h5 --var h --degrade point

Images follow the SRCNN/FSRCNN protocol: MATLAB luma, modcrop, MATLAB bicubic downscaling,
values rounded to 8 bits, border shave = scale. Sequences are degraded with ``--degrade`` and
compared in their own units (PSNR range = the reference's max - min unless --data-range).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from hpcvsr.data import images
from hpcvsr.errors import check_finite
from hpcvsr.ops import degrade as dg
from hpcvsr.ops.metrics import MetricSums, shave


def _table(rows: list[dict], keys=("psnr", "ssim", "mse", "mae")) -> str:
    head = "| item | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
    return head + "".join(
        f"| {r['name']} | " + " | ".join(f"{r[k]:.4f}" if k != "mse" else f"{r[k]:.6g}" for k in keys) + " |\n" for r in rows
    )


def build_predictor(args, scale: int):
    """A function LR (N, h, w) in [0, 1] -> SR (N, H, W) in [0, 1]."""
    if args.model:
        from hpcvsr.pipeline.build import load_for_eval

        model = load_for_eval(args.model, args.weights, scale)
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
    from hpcvsr.io import sequences

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
