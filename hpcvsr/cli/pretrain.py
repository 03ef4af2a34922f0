"""``hpcvsr pretrain`` (``python -m hpcvsr.pretrain``): parse the arguments, call :mod:`hpcvsr.training.pretrain`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

import torch

from hpcvsr import dist
from hpcvsr.data import images
from hpcvsr.errors import cli
from hpcvsr.io import checkpoint
from hpcvsr.io.atomic import check_writable
from hpcvsr.models import MODELS_2D, build
from hpcvsr.pipeline.config import TrainConfig
from hpcvsr.training import pretrain as lib
from hpcvsr.training import trainer
from hpcvsr.training.patches import PatchTask
from hpcvsr.training.pretrain import VALIDATION, image_blocks, log


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.pretrain", description=lib.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    hist = trainer.fit(task, model, tcfg, env, ckpt_path=tmp_ckpt, stop=dist.StopFlag().install(), stage="pretrain",
                       config={"pretrain": dataclasses.asdict(tcfg)})
    checkpoint.save_weights(
        args.out, checkpoint.model_entry(model),
        made_by=f"python -m hpcvsr.pretrain --model {args.model} --scale {args.scale} --epochs {args.epochs} --patches {args.patches} --seed {args.seed}",
        data=f"scikit-image bundled images {', '.join(n for n in names if n not in VALIDATION)}; validation {', '.join(VALIDATION)}",
        history=hist)
    os.remove(tmp_ckpt)
    log.info("wrote %s (validation PSNR %.2f dB at epoch 0, %.2f dB final)", args.out, hist[0]["val"]["psnr"], hist[-1]["val"]["psnr"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
