"""Pretrain a 2D network on natural images and save it as hpcvsr's bundled weights.

    python -m hpcvsr.pretrain --model climate_fsrcnn --scale 2 --out hpcvsr/weights/climate_fsrcnn_x2.pt

The images are the ones bundled with scikit-image (no download), as MATLAB luma in [0, 1],
degraded with MATLAB bicubic; two are held out for validation. This is how the weights in
``hpcvsr/weights/`` were made: transfer learning then works on machines without the
SRCNN / FSRCNN authors' files.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

import torch

from . import checkpoint, dist, trainer
from .config import TrainConfig
from .data import blocks as bl
from .data import degrade as dg
from .data import images
from .data.patches import PatchTask
from .errors import cli
from .io.atomic import check_writable
from .models import MODELS_2D, build, entry

log = logging.getLogger("hpcvsr")
VALIDATION = ("camera", "coffee")


def image_blocks(scale: int, names: list, pairs) -> list:
    out = []
    for name, y in pairs:
        if name not in names:
            continue
        hr = torch.from_numpy(dg.modcrop(y, scale)).float()[None, None] / 255.0  # (1 frame, 1 channel, H, W)
        out.append(bl.Block.in_memory(hr, dg.imresize(hr, (hr.shape[-2] // scale, hr.shape[-1] // scale)), name))
    return out


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.pretrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="climate_fsrcnn", choices=MODELS_2D)
    p.add_argument("--scale", type=int, default=2, choices=(2, 3, 4))
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patches", type=int, default=4096, help="patches per epoch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    check_writable(args.out, args.overwrite)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)
    env = dist.init("cpu")
    pairs = images.load_luma(None)
    names = [n for n, _ in pairs]
    train = image_blocks(args.scale, [n for n in names if n not in VALIDATION], pairs)
    val = image_blocks(args.scale, list(VALIDATION), pairs)
    patch = 48
    model = build(args.model, args.scale)
    tcfg = TrainConfig(epochs=args.epochs, batch_size=16, lr=args.lr, patience=0, patch=patch, patches_per_epoch=args.patches, schedule="cosine",
                       seed=args.seed)
    task = PatchTask(train=train, val=val, source="lr", window=1, crop=0, scale=args.scale, patch=patch, flips=True, train_eval_frames=1)
    tmp_ckpt = args.out + ".ckpt"
    e = entry(args.model, args.scale, {})
    hist = trainer.fit(task, model, tcfg, env, ckpt_path=tmp_ckpt, stop=dist.StopFlag().install(), stage="pretrain", entry=e,
                       config={"pretrain": dataclasses.asdict(tcfg)})
    checkpoint.save_weights(
        args.out, checkpoint.model_entry(model, e),
        made_by=f"python -m hpcvsr.pretrain --model {args.model} --scale {args.scale} --epochs {args.epochs} --patches {args.patches} --seed {args.seed}",
        data=f"scikit-image bundled images {', '.join(n for n in names if n not in VALIDATION)}; validation {', '.join(VALIDATION)}",
        history=hist)
    os.remove(tmp_ckpt)
    log.info("wrote %s (validation PSNR %.2f dB at epoch 0, %.2f dB final)", args.out, hist[0]["val"]["psnr"], hist[-1]["val"]["psnr"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
