"""Compositions of a 2D and a 3D network trained end to end."""

from __future__ import annotations

import torch
import torch.nn as nn

from hpcvsr.models.base import Network
from hpcvsr.models.conditioning import Where, run, takes_where


class Joint2D3D(Network):
    """LR windows (N, T, h, w) -> 2D network on every frame -> 3D network -> centre frame.

    The single network the study could not build: gradients of the 3D loss reach the 2D stage.
    """

    def __init__(self, net2d: nn.Module, net3d: nn.Module):
        super().__init__()
        self.net2d, self.net3d = net2d, net3d
        self.crop = net3d.crop
        self.takes_where = takes_where(net2d) or takes_where(net3d)

    def forward(self, lr: torch.Tensor, where: Where | None = None) -> torch.Tensor:
        n, t, h, w = lr.shape
        frames = run(self.net2d, lr.reshape(n * t, 1, h, w), None if where is None else where.frames(t))
        return run(self.net3d, frames.reshape(n, t, *frames.shape[-2:]), where)


class Reverse3D2D(Network):
    """The reversed order the study proposed: a 3D network fuses the LR window into a better LR
    centre frame (same size, residual), then the 2D network super-resolves it."""

    def __init__(self, net3d: nn.Module, net2d: nn.Module):
        super().__init__()
        self.net3d, self.net2d = net3d, net2d
        self.crop = 0
        self.takes_where = takes_where(net2d)  # the 3D part works on the coarse grid: no place maps there

    def forward(self, lr: torch.Tensor, where: Where | None = None) -> torch.Tensor:
        return run(self.net2d, self.net3d(lr), where)
