"""3D-convolution video super-resolution over windows of consecutive frames."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import BicubicUp, he_init, prelu


def _conv3d(cin, cout, k, pad):
    return nn.Conv3d(cin, cout, k, padding=pad, padding_mode="replicate")


class VSR3D(nn.Module):
    """The climate study's 3D network (after 3DSRnet, Kim et al.).

    Input (N, T, H, W) high-resolution frames (T = ``frames``, 5 by default). Conv3d
    3x5x5 -> 32, 3x1x1 -> 8, 3x3x3 -> 8, 3x3x3 -> 8, 3x3x3 -> 32 ('same'), then
    (T - 1) / 2 layers 3x3x3 -> 32 'valid' (time T -> 1, each side 1 px smaller per layer), then a
    2D 5x5 conv -> 1 channel; PReLU after every layer, slopes initialised at 0. The output is the
    centre frame, ``T - 1`` px smaller in each dimension (4 px for 5 frames).

    ``residual``: add the centre input frame (the network learns a correction; the last PReLU
    is dropped). ``same_padding``: pad the valid layers spatially so no border is lost.
    """

    input_space = "hr"

    def __init__(self, scale: int = 2, frames: int = 5, width: int = 32, residual: bool = False, same_padding: bool = False):
        super().__init__()
        if frames < 3 or frames % 2 == 0:
            raise ValueError(f"frames must be odd and >= 3, got {frames}")
        self.frames, self.residual, self.same = frames, residual, same_padding
        self.n_valid = (frames - 1) // 2
        self.crop = 0 if same_padding else self.n_valid
        spec = [(1, width, (3, 5, 5)), (width, 8, (3, 1, 1)), (8, 8, 3), (8, 8, 3), (8, width, 3)]
        self.same_layers = nn.ModuleList(_conv3d(ci, co, k, "same") for ci, co, k in spec)
        self.same_acts = nn.ModuleList(prelu(0.0) for _ in spec)
        vpad = (0, 1, 1) if same_padding else 0
        self.valid_layers = nn.ModuleList(_conv3d(width, width, 3, vpad) for _ in range(self.n_valid))
        self.valid_acts = nn.ModuleList(prelu(0.0) for _ in range(self.n_valid))
        self.recon = nn.Conv2d(width, 1, 5, padding=2, padding_mode="replicate")
        self.recon_act = None if residual else prelu(0.0)
        he_init(self)
        if residual:
            nn.init.zeros_(self.recon.weight)
            nn.init.zeros_(self.recon.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.unsqueeze(1)  # (N, 1, T, H, W)
        for c, a in zip(self.same_layers, self.same_acts):
            y = a(c(y))
        for c, a in zip(self.valid_layers, self.valid_acts):
            y = a(c(y))
        y = self.recon(y[:, :, 0])
        if self.recon_act is not None:
            y = self.recon_act(y)
        if self.residual:
            centre = x[:, self.frames // 2 : self.frames // 2 + 1]
            if self.crop:
                centre = centre[..., self.crop : -self.crop, self.crop : -self.crop]
            y = y + centre
        return y


class SRNet3D(nn.Module):
    """The published 3DSRnet layout: six 64-channel 3x3x3 layers at low resolution (the last
    (T - 1) / 2 valid in time), a 3x3 conv to scale^2 channels, pixel shuffle, plus the bicubic
    upscale of the centre frame. Input (N, T, h, w) low-resolution frames."""

    input_space = "lr"

    def __init__(self, scale: int = 2, frames: int = 5, width: int = 64, layers: int = 6):
        super().__init__()
        n_valid = (frames - 1) // 2
        if layers <= n_valid:
            raise ValueError("layers must exceed the time-reducing layers")
        self.frames, self.scale, self.crop = frames, scale, 0
        chans = [1] + [width] * layers
        self.body = nn.ModuleList(
            _conv3d(chans[i], chans[i + 1], 3, "same" if i < layers - n_valid else (0, 1, 1)) for i in range(layers)
        )
        self.tail = nn.Conv2d(width, scale * scale, 3, padding=1, padding_mode="replicate")
        he_init(self)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        self.up = BicubicUp(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.unsqueeze(1)
        for c in self.body:
            y = F.relu(c(y))
        y = F.pixel_shuffle(self.tail(y[:, :, 0]), self.scale)
        c = self.frames // 2
        return y + self.up(x[:, c : c + 1])
