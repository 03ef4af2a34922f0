"""Small building blocks shared by the models."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hpcvsr.ops.degrade import imresize


class BicubicUp(nn.Module):
    """MATLAB-compatible bicubic upscaling by an integer factor (no parameters)."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return imresize(x, (h * self.scale, w * self.scale))


def conv(cin: int, cout: int, k: int, padding_mode: str = "replicate") -> nn.Conv2d:
    """'Same' 2D convolution (correlation) with replicate padding, as the authors' imfilter."""
    return nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode=padding_mode)


def prelu(init: float) -> nn.PReLU:
    """PReLU with one shared slope per layer (as FSRCNN and the climate study)."""
    return nn.PReLU(num_parameters=1, init=init)


class AuthorsDeconv(nn.Module):
    """FSRCNN's deconvolution as the authors compute it.

    The LR feature map is padded by one pixel (replicate), each pixel scatters ``x * filter`` at
    stride ``scale`` (a transposed convolution), and the result is cropped from 0-based offset
    ``(k + 1) / 2 + scale - 1`` to ``scale`` times the input size.
    """

    def __init__(self, cin: int, scale: int, k: int = 9):
        super().__init__()
        self.scale, self.k = scale, k
        self.weight = nn.Parameter(torch.empty(cin, 1, k, k))
        self.bias = nn.Parameter(torch.zeros(1))
        nn.init.normal_(self.weight, std=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.scale
        y = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.weight, self.bias, stride=s)
        off = (self.k + 1) // 2 + s - 1
        return y[..., off : off + s * h, off : off + s * w]


def mass_conserving(sr: torch.Tensor, lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Shift each s x s cell of ``sr`` so its mean equals the matching ``lr`` value exactly.

    The hard constraint for block-mean degradation: block_mean(output) == lr by construction.
    """
    n, c, H, W = sr.shape
    cell = sr.reshape(n, c, H // scale, scale, W // scale, scale).mean(dim=(3, 5))
    corr = (lr - cell).repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    return sr + corr


def he_init(module: nn.Module) -> None:
    """He (Kaiming) normal initialisation of every convolution, zero biases.

    PyTorch's default initialisation shrinks activations by about 1/sqrt(6) per ReLU-like layer;
    over the 3D network's eight layers the features reaching the output would be nearly constant.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
