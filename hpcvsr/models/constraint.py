"""A final constraint layer: the output, degraded as the data were, reproduces the input exactly.

Climate users reject a super-resolved field that does not conserve what the coarse field
conserves. :class:`Constrained` wraps any stage network and projects its output onto the fields
consistent with the low-resolution frame (:func:`hpcvsr.ops.degrade.project`): with block-mean
data the output's cell averages are the input's cells (mass and energy budgets to round-off); with
bicubic, blur or point data, re-degrading the output gives back the input. The projection is the
smallest change (least squares) that does it, linear and differentiable, so the network trains
through it (Harder et al. 2023, "Physics-constrained deep learning for climate downscaling").

``reference`` says where the low-resolution frame comes from: ``'lr'``, the input is
low-resolution frames (a 2D network, an LR-window 3D network or composition), and the reference is
its (centre) frame; ``'hr'``, the input is high-resolution frames already consistent with the low-
resolution ones (the outputs of a constrained 2D stage), and the reference is its centre frame
degraded. ``frames`` is the window length the network reads (0 for a 2D network).

``lo`` / ``hi`` (one per output channel, None: unbounded side) bound the output as well
(:mod:`hpcvsr.models.bounds`): the projection is then onto the consistent fields within the bounds
(:func:`hpcvsr.ops.degrade.project_bounded`, block mean and point sampling), forward; backward, the
gradient of the unbounded projection (a straight-through estimate: see :mod:`hpcvsr.models.bounds`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from hpcvsr.models.base import Network
from hpcvsr.models.bounds import limits, through
from hpcvsr.models.conditioning import Where, run, takes_where
from hpcvsr.ops import degrade as dg


class Constrained(Network):
    """``net`` followed by the exact consistency projection onto its low-resolution input."""

    def __init__(self, net: nn.Module, *, method: str, scale: int, sigma: float = 1.6, reference: str = "lr", frames: int = 0,
                 lo: list | None = None, hi: list | None = None):
        super().__init__()
        if reference not in ("lr", "hr"):
            raise ValueError(f"reference must be 'lr' or 'hr', got {reference!r}")
        if net.crop:
            raise ValueError("a consistency constraint needs the whole frame; this network crops its border")
        self.net, self.method, self.scale, self.sigma = net, method, int(scale), float(sigma)
        self.reference, self.frames, self.crop = reference, int(frames), 0
        self.takes_where = takes_where(net)
        self.input_space = net.input_space
        self.bounded = lo is not None or hi is not None
        if self.bounded:
            if lo is None or hi is None or len(lo) != len(hi):
                raise ValueError(f"give one lower and one upper bound (or None) per channel, got {lo}, {hi}")
            if method not in dg.BOUNDED:
                raise ValueError(f"no bounded projection for degradation '{method}'")
            self.register_buffer("low", limits(lo, -math.inf), persistent=False)  # rebuilt from the spec, not in the state dict
            self.register_buffer("high", limits(hi, math.inf), persistent=False)

    def low_res(self, x: torch.Tensor) -> torch.Tensor:
        """The low-resolution frame (N, C, h, w) the output must reproduce."""
        if self.frames:  # windows (N, T, h, w) of one variable or (N, T, C, h, w) of several: the centre frame
            c = self.frames // 2
            x = x[:, c : c + 1] if x.dim() == 4 else x[:, c]
        return x if self.reference == "lr" else dg.degrade(x, self.scale, self.method, self.sigma)

    def forward(self, x: torch.Tensor, where: Where | None = None) -> torch.Tensor:
        out, ref = run(self.net, x, where), self.low_res(x)
        if not self.bounded:
            return dg.project(out, ref, self.scale, self.method, self.sigma)
        bounded = dg.project_bounded(out, ref, self.scale, self.method, self.low, self.high)
        return through(out, bounded, dg.project(out, ref, self.scale, self.method, self.sigma) if out.requires_grad else None)
