"""SRCNN (Dong et al., ECCV 2014 / TPAMI 2016): f1-f2-f3 convolutions on the bicubic upscale."""

from __future__ import annotations

import torch
import torch.nn as nn

from hpcvsr.models.base import Network
from hpcvsr.models.layers import BicubicUp, conv, prelu


class SRCNN(Network):
    """SRCNN with filter sizes ``f1-f2-f3`` (9-1-5 or 9-5-5) and widths ``n1``, ``n2``.

    ``act='relu'`` as published or ``'prelu'`` as the climate study. The input is the
    low-resolution frame; the network runs on its MATLAB bicubic upscale.
    """

    def __init__(self, scale: int = 2, f1: int = 9, f2: int = 1, f3: int = 5, n1: int = 64, n2: int = 32, act: str = "relu", residual: bool = False):
        super().__init__()
        if act not in ("relu", "prelu"):
            raise ValueError(f"act must be 'relu' or 'prelu', got {act!r}")
        self.scale, self.residual = scale, residual
        self.up = BicubicUp(scale)
        self.conv1 = conv(1, n1, f1)
        self.conv2 = conv(n1, n2, f2)
        self.conv3 = conv(n2, 1, f3)
        self.act1 = nn.ReLU() if act == "relu" else prelu(0.0)
        self.act2 = nn.ReLU() if act == "relu" else prelu(0.0)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        b = self.up(lr)
        y = self.conv3(self.act2(self.conv2(self.act1(self.conv1(b)))))
        return y + b if self.residual else y
