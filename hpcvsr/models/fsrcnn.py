"""FSRCNN (Dong et al., ECCV 2016) and the climate study's small FSRCNN variant."""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import AuthorsDeconv, BicubicUp, conv, mass_conserving, prelu


class FSRCNN(nn.Module):
    """FSRCNN(d, s, m): feature 5x5 -> d, shrink 1x1 -> s, m maps 3x3, expand 1x1 -> d,
    9x9 deconvolution with stride = scale. PReLU (one slope per layer) after every conv.
    FSRCNN(56, 12, 4) and FSRCNN-s(32, 5, 1) are the published models."""

    def __init__(self, scale: int = 2, d: int = 56, s: int = 12, m: int = 4, residual: bool = False):
        super().__init__()
        self.scale, self.residual = scale, residual
        self.feature = conv(1, d, 5)
        self.feature_act = prelu(0.25)
        self.shrink = conv(d, s, 1)
        self.shrink_act = prelu(0.25)
        self.map = nn.ModuleList(conv(s, s, 3) for _ in range(m))
        self.map_act = nn.ModuleList(prelu(0.25) for _ in range(m))
        self.expand = conv(s, d, 1)
        self.expand_act = prelu(0.25)
        self.deconv = AuthorsDeconv(d, scale)
        self.up = BicubicUp(scale) if residual else None

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = self.shrink_act(self.shrink(self.feature_act(self.feature(lr))))
        for c, a in zip(self.map, self.map_act):
            x = a(c(x))
        y = self.deconv(self.expand_act(self.expand(x)))
        return y + self.up(lr) if self.residual else y


class ClimateFSRCNN(nn.Module):
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
        self.feature = conv(1, d, 5)
        self.feature_act = prelu(0.0)
        self.shrink = conv(d, s, 1)
        self.shrink_act = prelu(0.0)
        self.map = nn.ModuleList(conv(s, s, 3) for _ in range(m))
        self.map_act = nn.ModuleList(prelu(0.0) for _ in range(m))
        self.expand = conv(s, d, 1)
        self.expand_act = prelu(0.0)
        self.deconv = nn.ConvTranspose2d(d, d, scale, stride=scale)
        self.deconv_act = prelu(0.0)
        self.recon = conv(d, 1, 5)
        self.recon_act = None if residual else prelu(0.0)
        self.up = BicubicUp(scale) if residual else None
        if residual:  # start from bicubic exactly: the detail branch is zero at initialisation
            nn.init.zeros_(self.recon.weight)
            nn.init.zeros_(self.recon.bias)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = self.shrink_act(self.shrink(self.feature_act(self.feature(lr))))
        for c, a in zip(self.map, self.map_act):
            x = a(c(x))
        x = self.deconv_act(self.deconv(self.expand_act(self.expand(x))))
        y = self.recon(x)
        if self.recon_act is not None:
            y = self.recon_act(y)
        if self.residual:
            y = y + self.up(lr)
        if self.conserve:
            y = mass_conserving(y, lr, self.scale)
        return y
