"""The held-out comparison: every method on the same blocks and the same crop, reduced over ranks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hpcvsr.ops import metrics as mt
from hpcvsr.training.patches import window_frames

LEAD_TIME = ("first third", "middle third", "last third")  # of each held-out sequence's frames


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
    low-resolution input is measured too. Each method's metrics also hold ``lead_time``: the same
    metrics over the first, middle and last third of every block's sequence (a coarse run drifts from
    the fine one as time goes on)."""
    names = blocks[0].segment.variables
    results, per_frame = {v: {} for v in names}, {v: {} for v in names}
    n_total = sum(b.segment.n for b in blocks)
    for name, m in methods.items():
        def sums_per_variable():
            return [mt.MetricSums(data_range=1.0, unit_scale=n.span, spectrum_cutoff=1.0 / scale, degradation=None if crop else degradation,
                                  device=env.device) for n in norms]

        accs, thirds = sums_per_variable(), [sums_per_variable() for _ in LEAD_TIME]
        frame_psnr = torch.zeros((len(norms), n_total), dtype=torch.float64, device=env.device)
        offset = 0
        for b in blocks:
            centres = b.centres()
            for i in range(0, len(centres), batch):
                cs = centres[i : i + batch]
                x, y, where = window_frames(b, cs, source=m.source, window=m.window)
                out, y = mt.shave(m.fn(x, where), crop - m.crop), mt.shave(y, crop)
                lr = b.lr[cs - b.read[0]]  # (k, C, h, w)
                third = torch.from_numpy(np.minimum(len(LEAD_TIME) - 1, cs * len(LEAD_TIME) // b.segment.n))
                for c, (acc, n) in enumerate(zip(accs, norms)):
                    rows = acc.rows(out[:, c], y[:, c], offset=n.lo / n.span, lr=lr[:, c])
                    acc.add_rows(rows)
                    for t, part in enumerate(thirds):
                        if bool((third == t).any()):
                            part[c].add_rows({key: r[(third == t).to(r.device)] for key, r in rows.items()})
                    frame_psnr[c, offset + cs] = rows["psnr"].to(frame_psnr)
            offset += b.segment.n
        every = [accs, *thirds]  # every sum of every variable in one collective
        sums = env.all_reduce_sum(torch.cat([torch.cat([torch.stack([a.sums for a in group]) for group in every], 1), frame_psnr], 1))
        k = len(accs[0].sums)
        for c, (v, acc) in enumerate(zip(names, accs)):
            results[v][name] = dict(acc.summary(sums[c, :k]),
                                    lead_time=[acc.summary(sums[c, (t + 1) * k : (t + 2) * k]) for t in range(len(LEAD_TIME))])
            per_frame[v][name] = sums[c, len(every) * k :].tolist()
    return results, per_frame
