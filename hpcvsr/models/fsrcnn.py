"""FSRCNN (Dong et al., ECCV 2016) and the climate study's small FSRCNN variant."""

from __future__ import annotations

import torch
import torch.nn as nn

from hpcvsr.models.base import Network
from hpcvsr.models.layers import AuthorsDeconv, BicubicUp, conv, mass_conserving, prelu


def add_trunk(module: nn.Module, d: int, s: int, m: int, slope: float) -> None:
    """FSRCNN's trunk on ``module``: feature 5x5 -> d, shrink 1x1 -> s, m maps 3x3, expand 1x1 -> d.

    Both models use these layer names, so weights move between them layer by layer.
    """
    module.feature, module.feature_act = conv(1, d, 5), prelu(slope)
    module.shrink, module.shrink_act = conv(d, s, 1), prelu(slope)
    module.map = nn.ModuleList(conv(s, s, 3) for _ in range(m))
    module.map_act = nn.ModuleList(prelu(slope) for _ in range(m))
    module.expand, module.expand_act = conv(s, d, 1), prelu(slope)


def run_trunk(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = module.shrink_act(module.shrink(module.feature_act(module.feature(x))))
    for c, a in zip(module.map, module.map_act):
        x = a(c(x))
    return module.expand_act(module.expand(x))


class FSRCNN(Network):
    """FSRCNN(d, s, m): feature 5x5 -> d, shrink 1x1 -> s, m maps 3x3, expand 1x1 -> d,
    9x9 deconvolution with stride = scale. PReLU (one slope per layer) after every conv.
    FSRCNN(56, 12, 4) and FSRCNN-s(32, 5, 1) are the published models."""

    def __init__(self, scale: int = 2, d: int = 56, s: int = 12, m: int = 4, residual: bool = False):
        super().__init__()
        self.scale, self.residual = scale, residual
        add_trunk(self, d, s, m, 0.25)
        self.deconv = AuthorsDeconv(d, scale)
        self.up = BicubicUp(scale) if residual else None

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        y = self.deconv(run_trunk(self, lr))
        return y + self.up(lr) if self.residual else y


class ClimateFSRCNN(Network):
    """The climate study's 2D model: conv 5x5 -> 32, 1x1 -> 8, 3x3 -> 8, 1x1 -> 32,
    transposed conv (k = stride = scale) with 32 filters, conv 5x5 -> 1; PReLU after every layer
    with slopes initialised at 0.

    Options beyond the study: ``residual`` (default) adds the bicubic upscale, so the network
    learns only the detail bicubic misses (the last PReLU is then dropped: a residual must be
    signed); ``mass_conserving`` makes every s x s output cell average exactly to its input
    cell, for block-mean degradation.
    """

    def __init__(self, scale: int = 2, d: int = 32, s: int = 8, m: int = 1, residual: bool = True, mass_conserving: bool = False):
        super().__init__()
        self.scale, self.residual, self.conserve = scale, residual, mass_conserving
        add_trunk(self, d, s, m, 0.0)
        self.deconv = nn.ConvTranspose2d(d, d, scale, stride=scale)
        self.deconv_act = prelu(0.0)
        self.recon = conv(d, 1, 5)
        self.recon_act = None if residual else prelu(0.0)
        self.up = BicubicUp(scale) if residual else None
        if residual:  # start from bicubic exactly: the detail branch is zero at initialisation
            nn.init.zeros_(self.recon.weight)
            nn.init.zeros_(self.recon.bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        y = self.recon(self.deconv_act(self.deconv(run_trunk(self, lr))))
        if self.recon_act is not None:
            y = self.recon_act(y)
        if self.residual:
            y = y + self.up(lr)
        if self.conserve:
            y = mass_conserving(y, lr, self.scale)
        return y
