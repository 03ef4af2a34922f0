"""Several variables super-resolved by one network: shared weights per variable, then a mixing head.

:class:`Variables` wraps any 2D or 3D network of the package for C variables (e.g. u and v wind,
temperature, pressure), each normalised on its own. The wrapped network runs on every variable
with the same weights (``shared``: the variables are folded into the batch, so the network learns
from C times the samples) or as one copy per variable (``shared=False``: each copy learns only its
variable, as a single-variable model would); either way it starts exactly from the authors'
single-channel weights. A small head then sees all C outputs together and adds what one variable
says about another (a shared front, a wind shift). The head's last convolution starts at zero: at
initialisation each variable's output is the wrapped network's output for it alone.

Inputs: (N, C, h, w) for a 2D network; (N, T, C, H, W) windows for a 3D one. Output (N, C, H', W').
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from hpcvsr.models.base import Network
from hpcvsr.models.layers import conv, prelu


class Variables(Network):
    """``net`` run on each of ``channels`` variables (with shared weights, or one copy per variable
    when not ``shared``), plus a zero-initialised mixing head of three 3x3 convolutions (``width``
    features) on all of their outputs."""

    def __init__(self, net: nn.Module, *, channels: int, shared: bool = True, width: int = 32):
        super().__init__()
        if channels < 2:
            raise ValueError(f"Variables needs at least two channels, got {channels}")
        self.channels, self.shared = int(channels), bool(shared)
        if shared:
            self.net = net
        else:
            self.nets = nn.ModuleList([net] + [copy.deepcopy(net) for _ in range(channels - 1)])
        self.crop = net.crop
        self.input_space = net.input_space
        self.head = nn.Sequential(conv(channels, width, 3), prelu(0.0), conv(width, width, 3), prelu(0.0), conv(width, channels, 3))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.channels
        if x.shape[-3] != c:
            raise ValueError(f"input has {x.shape[-3]} variables, the network {c}")  # programming error
        if x.dim() == 4:  # 2D: (N, C, h, w) -> (N C, 1, h, w)
            n = x.shape[0]
            folded = x.reshape(n * c, 1, *x.shape[-2:])
        else:  # 3D: (N, T, C, H, W) -> (N C, T, H, W)
            n, t = x.shape[:2]
            folded = x.transpose(1, 2).reshape(n * c, t, *x.shape[-2:])
        if self.shared:
            y = self.net(folded)
            y = y.reshape(n, c, *y.shape[-2:])
        else:  # each copy on its own variable: folded rows i, i + c, ... are variable i
            parts = folded.reshape(n, c, *folded.shape[1:])
            y = torch.cat([f(parts[:, i]) for i, f in enumerate(self.nets)], 1)
        return y + self.head(y)

    def prefixes(self) -> list[str]:
        """Prefixes of the wrapped network's layer names inside this module (one, or one per copy)."""
        return ["net."] if self.shared else [f"nets.{i}." for i in range(self.channels)]
