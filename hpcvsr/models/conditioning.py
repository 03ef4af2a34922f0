"""What is tied to the place and the hour: conditioning a network on high-resolution maps and time.

On a fixed regional grid most of the fine detail a coarse field lacks is tied to the location
(orography, coastlines) and to the time of day or year, not to the neighbouring frames.
:class:`Conditioned` wraps any 2D or 3D network of the package and adds a small convolutional
head on the high-resolution grid that sees the network's output together with

* **static covariates**: normalised high-resolution fields (e.g. orography, land-sea mask), kept
  as a buffer so they travel with the model file;
* **learned location channels**: ``location`` maps of the training grid, trained with the network;
* **time features**: sin/cos of the hour of day and of the day of year of the output frame, and
  the second harmonic of the hour (sin/cos of twice it: daily cycles are not sinusoids);
* their **products** (every place channel times every time feature), so that a per-cell daily
  and seasonal cycle is a linear function of the head's input.

The head's last convolution starts at zero, so the wrapped network's output, and the authors'
pretrained start, are unchanged at initialisation. A sample's place maps are cut at its offset
on the grid (:class:`Where`): patches, whole frames and tiles see exactly the maps of the cells
they cover.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from hpcvsr.models.base import Network
from hpcvsr.models.layers import conv, prelu

N_TIME = 4  # sin/cos of hour of day, sin/cos of day of year (hpcvsr.io.cf.time_features)
N_BASIS = 6  # the time basis the head sees: those four and sin/cos of twice the hour angle


def time_basis(t: torch.Tensor) -> torch.Tensor:
    """(N, 6) [sin h, cos h, sin 2h, cos 2h, sin d, cos d] from time features (N, 4) [sin h, cos h, sin d, cos d]."""
    s, c = t[:, 0], t[:, 1]
    return torch.stack([s, c, 2 * s * c, c * c - s * s, t[:, 2], t[:, 3]], 1)


@dataclass(frozen=True)
class Where:
    """Where and when each sample of a batch lies: the high-resolution row and column of its
    first input pixel on the grid (``rows``, ``cols``: (N,) int64) and the time features of its
    frames (``times``: (N, T, 4), or None when the model uses none)."""

    rows: torch.Tensor
    cols: torch.Tensor
    times: torch.Tensor | None = None

    @classmethod
    def at(cls, n: int, row: int = 0, col: int = 0, times: torch.Tensor | None = None, device=None) -> Where:
        """``n`` samples at one offset (whole frames or one tile)."""
        full = torch.full((n,), 0, dtype=torch.int64, device=device)
        return cls(full + row, full + col, times)

    def frames(self, t: int) -> Where:
        """One entry per frame of windows of ``t`` frames (for a 2D network run on every frame)."""
        times = None if self.times is None else self.times.reshape(-1, 1, self.times.shape[-1])
        return Where(self.rows.repeat_interleave(t), self.cols.repeat_interleave(t), times)


def takes_where(model: nn.Module) -> bool:
    """Whether ``model`` (or the module DDP wraps) reads a :class:`Where`."""
    return bool(getattr(getattr(model, "module", model), "takes_where", False))


def run(model: nn.Module, x, where: Where | None):
    """``model(x, where)`` for a model that reads :class:`Where`, else ``model(x)``; ``x`` a tuple
    (frames, windows) is a clip batch (:class:`~hpcvsr.training.patches.PatchTask` with ``centres``) for
    a network that shares per-frame work: ``model(frames, windows)``."""
    if isinstance(x, tuple):
        return model(*x)
    if takes_where(model):
        if where is None:
            raise RuntimeError("a conditioned model was called without its Where")  # programming error
        return model(x, where)
    return model(x)


def set_static(model: nn.Module, fields: torch.Tensor) -> None:
    """Store the covariate maps in every conditioned part of ``model`` (however it is wrapped): each
    :class:`Conditioned` and each other part with static covariates (the generative stage)."""
    parts = [m for m in model.modules() if isinstance(m, Conditioned) or getattr(m, "takes_static", False)]
    if not parts:
        raise RuntimeError("set_static on a model without a Conditioned part")  # programming error
    for m in parts:
        m.set_static(fields)


def place_time(maps: torch.Tensor, n_time: int, where: Where, height: int, width: int, *, offset: int = 0,
               dtype=torch.float32) -> list:
    """The conditioning channels of a batch at its place and hour: the place ``maps`` (P, H, W) cut at
    ``where`` (+ ``offset``, a network's crop), the time basis of the output (centre) frame when
    ``n_time``, and every place channel times every time feature; a list of (N, ., height, width)."""
    n = len(where.rows)
    parts = []
    place = cut(maps, where.rows + offset, where.cols + offset, height, width).to(dtype) if len(maps) else None
    if place is not None:
        parts.append(place)
    if n_time:
        if where.times is None:
            raise RuntimeError("a time-conditioned model was called without time features")  # programming error
        t = time_basis(where.times[:, where.times.shape[1] // 2].to(dtype))
        parts.append(t[:, :, None, None].expand(n, n_time, height, width))
        if place is not None:
            parts.append((place[:, :, None] * t[:, None, :, None, None]).flatten(1, 2))
    return parts


def cut(maps: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, C, height, width) windows of ``maps`` (C, H, W) starting at (rows[i], cols[i]); columns are taken
    modulo W, so that a tile reaching across the seam of a periodic x axis reads the maps of the cells it covers.

    >>> cut(torch.arange(4.0).reshape(1, 1, 4), torch.tensor([0]), torch.tensor([-1]), 1, 3).flatten().tolist()
    [3.0, 0.0, 1.0]
    """
    r = rows[:, None] + torch.arange(height, device=maps.device)
    c = (cols[:, None] + torch.arange(width, device=maps.device)) % maps.shape[-1]
    return maps[:, r[:, :, None], c[:, None, :]].permute(1, 0, 2, 3)


class Conditioned(Network):
    """``net`` plus a head on its high-resolution output conditioned on place and time.

    ``grid`` is the high-resolution (H, W) the place channels cover; ``static`` the number of
    covariate maps (values set by :meth:`set_static` or loaded with the state), ``location`` the
    number of learned maps, ``time`` whether time features are used, ``channels`` the number of
    variables the network outputs (:class:`~hpcvsr.models.variables.Variables`). The wrapped network is one
    stage (compositions pass their :class:`Where` to conditioned parts) and its output must lie on
    the high-resolution grid.
    """

    takes_where = True

    def __init__(self, net: nn.Module, *, grid: list, static: int = 0, location: int = 0, time: bool = False, width: int = 32,
                 channels: int = 1):
        super().__init__()
        height, width_px = int(grid[0]), int(grid[1])
        self.net, self.grid = net, (height, width_px)
        self.crop = net.crop
        self.input_space = net.input_space
        self.register_buffer("static", torch.zeros(static, height, width_px))
        self.location = nn.Parameter(0.01 * torch.randn(location, height, width_px)) if location else None
        self.n_time = N_BASIS if time else 0
        places = static + location
        cin = channels + places + self.n_time + places * self.n_time
        self.head = nn.Sequential(conv(cin, width, 3), prelu(0.0), conv(width, width, 3), prelu(0.0), conv(width, channels, 3))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def set_static(self, fields: torch.Tensor) -> None:
        """Store the normalised covariate maps (S, H, W) on the grid."""
        if tuple(fields.shape) != tuple(self.static.shape):
            raise ValueError(f"static fields of shape {tuple(fields.shape)}, expected {tuple(self.static.shape)}")
        self.static.copy_(fields)

    def places(self) -> torch.Tensor:
        maps = [self.static]
        if self.location is not None:
            maps.append(self.location)
        return torch.cat(maps)

    def forward(self, x: torch.Tensor, where: Where) -> torch.Tensor:
        y = self.net(x)  # (N, channels, h, w)
        parts = place_time(self.places(), self.n_time, where, *y.shape[-2:], offset=self.crop, dtype=y.dtype)
        return y + self.head(torch.cat([y, *parts], 1))
