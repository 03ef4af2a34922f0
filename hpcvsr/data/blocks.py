"""Per-rank frame blocks read lazily from HDF5: a rank's own frames plus the halo its windows need.

A :class:`Segment` is a contiguous run of frames in one file that is treated as a sequence of
its own (a training range, a validation range, a held-out file): windows never cross its ends,
which are padded as configured. :func:`read_block` reads exactly frames
``halo_range(block_range(...))`` of a segment and records what it read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from . import degrade as dg
from . import windows as win
from .sequences import open_archive


@dataclass(frozen=True)
class Segment:
    """Frames [start, stop) of one variable of one file; ``select`` / ``isel`` choose extra dimensions
    (pairs of dimension and value), ``rows`` / ``cols`` the spatial crop ((start, stop), or () for all)."""

    path: str
    var: str
    start: int
    stop: int
    name: str = ""
    select: tuple = ()
    isel: tuple = ()
    rows: tuple = ()
    cols: tuple = ()

    @property
    def n(self) -> int:
        return self.stop - self.start

    def open(self, log: list | None = None):
        return open_archive(self.path, self.var, select=dict(self.select), isel=dict(self.isel), log=log)

    def read(self, arc, a: int, b: int) -> np.ndarray:
        """File frames [a, b) of the opened archive ``arc``, cropped."""
        return arc.read(a, b, rows=slice(*self.rows) if self.rows else None, cols=slice(*self.cols) if self.cols else None)


@dataclass(frozen=True)
class Normaliser:
    """x -> (x - lo) / (hi - lo); values are reported back in physical units with :meth:`phys`."""

    lo: float = 0.0
    hi: float = 1.0
    units: str = ""

    @property
    def span(self) -> float:
        return self.hi - self.lo

    def unit(self, x):
        return (x - self.lo) / self.span

    def phys(self, x):
        return x * self.span + self.lo


@dataclass
class Block:
    """Frames ``read`` = [r0, r1) of a segment (segment-local indices) held by this rank, of which
    it owns [o0, o1). ``hr`` is normalised (T, H, W) with missing cells filled (:func:`fill_missing`)
    and ``mask`` marks the valid ones (None: nothing is missing); ``lr`` is the degradation of ``hr``;
    ``bicubic`` and ``sr2d`` are the inputs a 3D stage may read (bicubic upscale, 2D outputs) over the
    same frames, set by :func:`hpcvsr.data.patches.prepare_inputs`; ``times`` the time features
    (T, 4) of the same frames when the models are conditioned on time."""

    segment: Segment
    own: tuple[int, int]
    read: tuple[int, int]
    hr: torch.Tensor
    lr: torch.Tensor
    pad: str = "replicate"
    bicubic: torch.Tensor | None = None
    sr2d: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    times: torch.Tensor | None = None

    def target(self, index) -> torch.Tensor:
        """HR frames (or patches) ``self.hr[index]`` with NaN where values are missing."""
        hr = self.hr[index]
        return hr if self.mask is None else hr.masked_fill(~self.mask[index], float("nan"))

    @classmethod
    def in_memory(cls, hr: torch.Tensor, lr: torch.Tensor, name: str) -> Block:
        """A block of frames that come from no file (e.g. still images): it owns all of them."""
        n = hr.shape[0]
        return cls(Segment("(memory)", name, 0, n, name), (0, n), (0, n), hr, lr)

    @property
    def n_own(self) -> int:
        return self.own[1] - self.own[0]

    def centres(self) -> np.ndarray:
        """Segment-local indices of the frames this rank owns."""
        return np.arange(*self.own)

    def window_index(self, centres, size: int) -> np.ndarray:
        """(len(centres), size) indices into the buffers for windows around ``centres``."""
        if size == 1:
            return np.asarray(centres, dtype=np.int64)[:, None] - self.read[0]
        return win.local_window_indices(centres, self.segment.n, self.read[0], self.read[1], size, self.pad)

    def buffer(self, source: str) -> torch.Tensor:
        """The frames a model reads: 'lr', 'bicubic' or 'sr2d'."""
        buf = {"lr": self.lr, "bicubic": self.bicubic, "sr2d": self.sr2d}[source]
        if buf is None:
            raise RuntimeError(f"block buffer '{source}' was not prepared")  # programming error
        return buf


def fill_missing(x: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(frames with missing (NaN) cells filled, validity mask or None when nothing is missing).

    A missing cell takes the mean of its frame's valid cells (0 for a frame with none), so the
    networks see a smooth field; the mask keeps those cells out of the loss, the metrics and the
    output. Infinite values are an error.
    """
    valid = torch.isfinite(x)
    if bool(valid.all()):
        return x, None
    if bool(torch.isinf(x).any()):
        raise UserError(f"{what} contains infinite values")
    n = valid.flatten(1).sum(1)
    mean = torch.where(valid, x, torch.zeros_like(x)).flatten(1).sum(1) / n.clamp_min(1)
    return torch.where(valid, x, mean[:, None, None].to(x)), valid


def read_block(seg: Segment, world: int, rank: int, halo: int, norm: Normaliser, scale: int, method: str,
               sigma: float = 1.6, pad: str = "replicate", device=None, reads: list | None = None, times: bool = False) -> Block:
    """Read this rank's block of ``seg`` plus ``halo`` frames each side, normalise and degrade it
    (and the frames' time features with ``times``)."""
    if seg.n < world:
        raise UserError(f"{seg.path}:{seg.var} frames {seg.start}:{seg.stop} ({seg.n} frames) cannot be shared by {world} ranks; "
                        "use fewer ranks or more frames")
    own = win.block_range(seg.n, world, rank)
    r0, r1 = win.halo_range(*own, seg.n, halo)
    arc = seg.open(log=reads)
    try:
        data = seg.read(arc, seg.start + r0, seg.start + r1)
        feats = torch.from_numpy(arc.time_features(seg.start + r0, seg.start + r1)).to(device) if times else None
    finally:
        arc.close()
    hr = norm.unit(torch.from_numpy(data).to(device=device, dtype=torch.float32))
    dg.check_divisible(hr.shape, scale, what=f"{seg.path}:{seg.var} frame")
    hr, mask = fill_missing(hr, f"{seg.path}:{seg.var}")
    lr = dg.degrade(hr, scale, method, sigma)
    return Block(seg, own, (r0, r1), hr, lr, pad, mask=mask, times=feats)


def local_range(seg: Segment, world: int, rank: int, reads: list | None = None) -> tuple[float, float]:
    """(min, max) of this rank's own frames of ``seg`` (for the data-derived normalisation)."""
    a, b = win.block_range(seg.n, world, rank)
    arc = seg.open(log=reads)
    try:
        lo, hi = np.inf, -np.inf
        for i in range(a, b, 64):
            x = seg.read(arc, seg.start + i, seg.start + min(b, i + 64))
            if np.isfinite(x).any():  # missing cells (NaN) do not count
                lo, hi = min(lo, float(np.nanmin(x))), max(hi, float(np.nanmax(x)))
    finally:
        arc.close()
    return lo, hi
