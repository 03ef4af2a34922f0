"""Pretrain a 2D network on natural images and save it as hpcvsr's bundled weights.

    python -m hpcvsr.pretrain --model climate_fsrcnn --scale 2 --out hpcvsr/weights/climate_fsrcnn_x2.pt

The images are the ones bundled with scikit-image (no download), as MATLAB luma in [0, 1],
degraded with MATLAB bicubic; two are held out for validation. This is how the weights in
``hpcvsr/weights/`` were made: transfer learning then works on machines without the
SRCNN / FSRCNN authors' files.
"""

from __future__ import annotations

import logging

import torch

from hpcvsr.data import blocks as bl
from hpcvsr.ops import degrade as dg

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
