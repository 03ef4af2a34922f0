"""The held-out comparison: every method on the same blocks and the same crop, reduced over ranks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import metrics as mt
from .data import blocks as bl
from .data.patches import window_frames


@dataclass(frozen=True)
class Method:
    fn: Callable  # (inputs (k, window, ...), Where) -> (k, 1, H', W')
    window: int = 1  # frames per input
    source: str = "lr"  # buffer it reads: 'lr', 'bicubic' or 'sr2d'
    crop: int = 0  # border its output lacks


@torch.no_grad()
def evaluate_methods(methods: dict, blocks: list, *, crop: int, norm: bl.Normaliser, scale: int, env, batch: int = 4) -> tuple[dict, dict]:
    """({method: metrics}, {method: per-frame PSNR list}) of every :class:`Method` on ``blocks``,
    all cropped by ``crop`` pixels, with sums reduced across ranks."""
    results, per_frame = {}, {}
    n_total = sum(b.segment.n for b in blocks)
    for name, m in methods.items():
        acc = mt.MetricSums(data_range=1.0, unit_scale=norm.span, spectrum_cutoff=1.0 / scale)
        frame_psnr = torch.zeros(n_total, dtype=torch.float64, device=env.device)
        offset = 0
        for b in blocks:
            centres = b.centres()
            for i in range(0, len(centres), batch):
                cs = centres[i : i + batch]
                x, y, where = window_frames(b, cs, source=m.source, window=m.window)
                out = mt.shave(m.fn(x, where).squeeze(1), crop - m.crop)
                p = acc.update(out, mt.shave(y, crop), offset=norm.lo / norm.span)
                frame_psnr[offset + cs] = p.to(frame_psnr)
            offset += b.segment.n
        results[name] = acc.summary(env.all_reduce_sum(acc.sums.clone()))
        per_frame[name] = env.all_reduce_sum(frame_psnr).tolist()
    return results, per_frame
