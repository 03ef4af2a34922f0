"""The held-out comparison: every method on the same blocks and the same crop, reduced over ranks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hpcvsr.ops import metrics as mt
from hpcvsr.training.patches import window_frames


@dataclass(frozen=True)
class Method:
    fn: Callable  # (inputs (data.patches.model_input), Where) -> (k, C, H', W')
    window: int = 1  # frames per input
    source: str = "lr"  # buffer it reads: 'lr', 'bicubic' or 'sr2d'
    crop: int = 0  # border its output lacks


@torch.no_grad()
def evaluate_methods(methods: dict, blocks: list, *, crop: int, norms: list, scale: int, env, batch: int = 4,
                     degradation: tuple | None = None) -> tuple[dict, dict]:
    """({variable: {method: metrics}}, {variable: {method: per-frame PSNR list}}) of every
    :class:`Method` on ``blocks``, all cropped by ``crop`` pixels; ``norms`` has one
    :class:`~hpcvsr.data.blocks.Normaliser` per variable (the blocks' channels). Every method's
    sums of all variables are reduced across ranks in one collective. With ``degradation`` (method,
    scale, sigma) and whole frames (no ``crop``), the consistency error of each output with its
    low-resolution input is measured too."""
    names = blocks[0].segment.variables
    results, per_frame = {v: {} for v in names}, {v: {} for v in names}
    n_total = sum(b.segment.n for b in blocks)
    for name, m in methods.items():
        accs = [mt.MetricSums(data_range=1.0, unit_scale=n.span, spectrum_cutoff=1.0 / scale, degradation=None if crop else degradation)
                for n in norms]
        frame_psnr = torch.zeros((len(norms), n_total), dtype=torch.float64, device=env.device)
        offset = 0
        for b in blocks:
            centres = b.centres()
            for i in range(0, len(centres), batch):
                cs = centres[i : i + batch]
                x, y, where = window_frames(b, cs, source=m.source, window=m.window)
                out, y = mt.shave(m.fn(x, where), crop - m.crop), mt.shave(y, crop)
                lr = b.lr[cs - b.read[0]]  # (k, C, h, w)
                for c, (acc, n) in enumerate(zip(accs, norms)):
                    p = acc.update(out[:, c], y[:, c], offset=n.lo / n.span, lr=lr[:, c])
                    frame_psnr[c, offset + cs] = p.to(frame_psnr)
            offset += b.segment.n
        sums = env.all_reduce_sum(torch.cat([torch.stack([a.sums for a in accs]), frame_psnr], 1))
        k = len(accs[0].sums)
        for c, (v, acc) in enumerate(zip(names, accs)):
            results[v][name] = acc.summary(sums[c, :k])
            per_frame[v][name] = sums[c, k:].tolist()
    return results, per_frame
