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
"""

from __future__ import annotations

import torch
import torch.nn as nn

from hpcvsr.models.base import Network
from hpcvsr.models.conditioning import Where, run, takes_where
from hpcvsr.ops import degrade as dg


class Constrained(Network):
    """``net`` followed by the exact consistency projection onto its low-resolution input."""

    def __init__(self, net: nn.Module, *, method: str, scale: int, sigma: float = 1.6, reference: str = "lr", frames: int = 0):
        super().__init__()
        if reference not in ("lr", "hr"):
            raise ValueError(f"reference must be 'lr' or 'hr', got {reference!r}")
        if net.crop:
            raise ValueError("a consistency constraint needs the whole frame; this network crops its border")
        self.net, self.method, self.scale, self.sigma = net, method, int(scale), float(sigma)
        self.reference, self.frames, self.crop = reference, int(frames), 0
        self.takes_where = takes_where(net)
        self.input_space = net.input_space

    def low_res(self, x: torch.Tensor) -> torch.Tensor:
        """The low-resolution frame (N, C, h, w) the output must reproduce."""
        if self.frames:  # windows (N, T, h, w) of one variable or (N, T, C, h, w) of several: the centre frame
            c = self.frames // 2
            x = x[:, c : c + 1] if x.dim() == 4 else x[:, c]
        return x if self.reference == "lr" else dg.degrade(x, self.scale, self.method, self.sigma)

    def forward(self, x: torch.Tensor, where: Where | None = None) -> torch.Tensor:
        return dg.project(run(self.net, x, where), self.low_res(x), self.scale, self.method, self.sigma)
