"""Bounded fields: rain and concentrations are never negative, sea ice never above 1.

:class:`Bounded` wraps a stage network and clips its output to each variable's bounds (in the
network's normalised units); with the consistency constraint the bounds live in
:class:`~hpcvsr.models.constraint.Constrained` instead, which then projects onto the bounded
consistent fields. Both are the outermost layer of a stage, so every output of the stage, in
training, evaluation and inference, is within bounds.

Gradients: the forward pass gives the bounded field (the loss sees what is delivered), the backward
pass that of the unbounded layer (here the identity), a straight-through estimate. The exact
derivative of a clip is zero on the clipped cells, so a cell the network put below zero where it
rains would never learn to come back up; with this estimate it is pulled up, and a cell clipped
where the truth sits on the bound costs nothing either way.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from hpcvsr.models.base import Network
from hpcvsr.models.conditioning import Where, run, takes_where


def limits(values: list, missing: float) -> torch.Tensor:
    """(C, 1, 1) float64 bounds of C channels from a list with None where a side is unbounded (``missing``: -inf or inf)."""
    return torch.tensor([missing if v is None else float(v) for v in values], dtype=torch.float64).reshape(-1, 1, 1)


def through(out: torch.Tensor, bounded: torch.Tensor, unbounded: torch.Tensor | None = None) -> torch.Tensor:
    """``bounded`` forward, the gradient of ``unbounded`` (default ``out``) backward; ``bounded`` itself
    when nothing needs a gradient (evaluation and inference get the bounded values bitwise)."""
    if not out.requires_grad:
        return bounded
    base = out if unbounded is None else unbounded
    return base + (bounded - base).detach()


class Bounded(Network):
    """``net`` followed by a clip of each output channel to [``lo[c]``, ``hi[c]``] (None: unbounded side)."""

    def __init__(self, net: nn.Module, *, lo: list, hi: list):
        super().__init__()
        if len(lo) != len(hi):
            raise ValueError(f"{len(lo)} lower and {len(hi)} upper bounds")
        if any(a is not None and b is not None and not a < b for a, b in zip(lo, hi)) or any(
                v is not None and not math.isfinite(v) for v in (*lo, *hi)):
            raise ValueError(f"bounds must be finite with lo < hi, got {lo}, {hi}")
        self.net, self.lo, self.hi = net, list(lo), list(hi)
        self.crop, self.input_space = net.crop, net.input_space
        self.takes_where, self.frame_features = takes_where(net), net.frame_features
        # not in the state dict: the spec (lo, hi) rebuilds them, and the wrapped network's weights keep their names
        self.register_buffer("low", limits(lo, -math.inf), persistent=False)
        self.register_buffer("high", limits(hi, math.inf), persistent=False)

    def forward(self, x: torch.Tensor, where: Where | torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(where, torch.Tensor):  # (frames, windows): a clip batch of a network that shares per-frame work
            return self.forward_shared(x, where)
        return self.bound(run(self.net, x, where))

    def forward_shared(self, frames: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """The wrapped network's :meth:`~hpcvsr.models.vsr3d.VSR3D.forward_shared`, bounded."""
        return self.bound(self.net.forward_shared(frames, windows))

    def bound(self, out: torch.Tensor) -> torch.Tensor:
        return through(out, torch.clamp(out.detach(), self.low.to(out.dtype), self.high.to(out.dtype)))
