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
from .errors import UserError, cli
from .models import MODELS_2D, build, entry
from .pipeline import PatchTask

log = logging.getLogger("hpcvsr")
VALIDATION = ("camera", "coffee")


def image_blocks(scale: int, names: list, pairs) -> list:
    out = []
    for name, y in pairs:
        if name not in names:
            continue
        hr = torch.from_numpy(dg.modcrop(y, scale)).float()[None] / 255.0
        seg = bl.Segment("skimage.data", name, 0, 1, name)
        out.append(bl.Block(seg, (0, 1), (0, 1), hr, dg.imresize(hr, (hr.shape[-2] // scale, hr.shape[-1] // scale))))
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
    if os.path.exists(args.out) and not args.overwrite:
        raise UserError(f"{args.out} exists; refusing to overwrite it (pass --overwrite)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)
    env = dist.init("cpu")
    pairs = images.load_luma(None)
    names = [n for n, _ in pairs]
    train = image_blocks(args.scale, [n for n in names if n not in VALIDATION], pairs)
    val = image_blocks(args.scale, list(VALIDATION), pairs)
    patch = {2: 48, 3: 48, 4: 48}[args.scale]
    model = build(args.model, args.scale)
    tcfg = TrainConfig(epochs=args.epochs, batch_size=16, lr=args.lr, patience=0, patch=patch, patches_per_epoch=args.patches, schedule="cosine", seed=args.seed)
    task = PatchTask(train, val, "lr", 1, 0, args.scale, patch, flips=True, train_eval_frames=1)
    tmp_ckpt = args.out + ".ckpt"
    e = entry(args.model, args.scale, {})
    hist = trainer.fit(task, model, tcfg, env, tmp_ckpt, dist.StopFlag().install(), "pretrain", e, {"pretrain": dataclasses.asdict(tcfg)})
    state = {"model": dict(e, state_dict={k: v.cpu() for k, v in model.state_dict().items()}),
             "made_by": f"python -m hpcvsr.pretrain --model {args.model} --scale {args.scale} --epochs {args.epochs} --patches {args.patches} --seed {args.seed}",
             "data": f"scikit-image bundled images {', '.join(n for n in names if n not in VALIDATION)}; validation {', '.join(VALIDATION)}",
             "history": hist}
    checkpoint.save(args.out, state)
    os.remove(tmp_ckpt)
    log.info("wrote %s (validation PSNR %.2f dB at epoch 0, %.2f dB final)", args.out, hist[0]["val"]["psnr"], hist[-1]["val"]["psnr"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
