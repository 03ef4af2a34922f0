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

from hpcvsr.errors import UserError
from hpcvsr.io.catalog import PLAIN, Opening
from hpcvsr.io.sequences import MultiArchive, open_archive
from hpcvsr.ops import degrade as dg
from hpcvsr.ops import windows as win


@dataclass(frozen=True)
class Segment:
    """Frames [start, stop) of the variable ``var`` (and the further variables ``extra``, super-resolved
    together) of one file; ``select`` / ``isel`` choose extra dimensions (pairs of dimension and value),
    ``rows`` / ``cols`` the spatial crop ((start, stop), or () for all)."""

    path: str
    var: str
    start: int
    stop: int
    name: str = ""
    select: tuple = ()
    isel: tuple = ()
    opening: Opening = PLAIN  # how its files are read (gaps in time allowed, the origin of time units)
    rows: tuple = ()
    cols: tuple = ()
    extra: tuple = ()
    lr_path: str = ""  # paired: the coarse run whose same frames are the inputs ('' : the frames are degraded)
    lr_vars: tuple = ()  # its variables, one per variable of the segment

    @property
    def n(self) -> int:
        return self.stop - self.start

    @property
    def variables(self) -> tuple:
        """Every variable of the segment: one channel each, in this order."""
        return (self.var, *self.extra)

    @property
    def label(self) -> str:
        """``path:var`` (``path:var+var2...`` for several variables), for messages."""
        return f"{self.path}:{'+'.join(self.variables)}"

    def open(self, log: list | None = None):
        """The reader of the first variable (time, grid, attributes)."""
        return open_archive(self.path, self.var, select=dict(self.select), isel=dict(self.isel), log=log, opening=self.opening)

    def open_all(self, log: list | None = None) -> MultiArchive:
        """The reader of every variable, read together as channels."""
        return MultiArchive(self.path, self.variables, select=dict(self.select), isel=dict(self.isel), log=log, opening=self.opening)

    def open_lr(self, log: list | None = None) -> MultiArchive:
        """The reader of the coarse run of a paired segment."""
        return MultiArchive(self.lr_path, self.lr_vars, select=dict(self.select), isel=dict(self.isel), log=log, opening=self.opening)

    def read(self, arc, a: int, b: int) -> np.ndarray:
        """File frames [a, b) of the opened reader ``arc``, cropped."""
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


def unit(norms: list, x: torch.Tensor) -> torch.Tensor:
    """Frames (T, C, H, W) of C variables, each normalised by its own :class:`Normaliser`."""
    return torch.stack([n.unit(x[:, i]) for i, n in enumerate(norms)], 1)


def phys(norms: list, x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`unit`: (T, C, H, W) back in each variable's physical units."""
    return torch.stack([n.phys(x[:, i]) for i, n in enumerate(norms)], 1)


@dataclass
class Block:
    """Frames ``read`` = [r0, r1) of a segment (segment-local indices) held by this rank, of which
    it owns [o0, o1). ``hr`` is normalised (T, C, H, W) (C variables, :attr:`Segment.variables`, each
    normalised on its own) with missing cells filled (:func:`fill_missing`)
    and ``mask`` marks the valid ones (None: nothing is missing); ``lr`` is the degradation of ``hr``;
    ``bicubic`` and ``sr2d`` are the inputs a 3D stage may read (bicubic upscale, 2D outputs) over the
    same frames, set by :func:`hpcvsr.training.patches.prepare_inputs`; ``times`` the time features
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
    qm: torch.Tensor | None = None  # paired: ``lr`` bias-corrected by quantile mapping (the statistical baseline)
    det: torch.Tensor | None = None  # generative stage: the deterministic output of every own frame (NaN elsewhere)
    ensmean: torch.Tensor | None = None  # generative stage, held-out frames: the ensemble mean

    def target(self, index) -> torch.Tensor:
        """HR frames (or patches) ``self.hr[index]`` with NaN where values are missing."""
        hr = self.hr[index]
        return hr if self.mask is None else hr.masked_fill(~self.mask[index], float("nan"))

    @classmethod
    def in_memory(cls, hr: torch.Tensor, lr: torch.Tensor, name: str) -> Block:
        """A block of frames (T, C, H, W) that come from no file (e.g. still images): it owns all of them."""
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
        """The frames a model reads: 'lr', 'bicubic', 'sr2d' (or 'qm', the quantile-mapped 'lr'; 'det' and
        'ensmean', the generative stage's input and held-out ensemble mean)."""
        buf = {"lr": self.lr, "bicubic": self.bicubic, "sr2d": self.sr2d, "qm": self.qm, "det": self.det, "ensmean": self.ensmean}[source]
        if buf is None:
            raise RuntimeError(f"block buffer '{source}' was not prepared")  # programming error
        return buf


def fill_missing(x: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(frames (..., H, W) with missing (NaN) cells filled, validity mask or None when nothing is missing).

    A missing cell takes the mean of its frame's valid cells (0 for a frame with none), so the
    networks see a smooth field; the mask keeps those cells out of the loss, the metrics and the
    output. Infinite values are an error.
    """
    valid = torch.isfinite(x)
    if bool(valid.all()):
        return x, None
    if bool(torch.isinf(x).any()):
        raise UserError(f"{what} contains infinite values")
    n = valid.flatten(-2).sum(-1)
    mean = torch.where(valid, x, torch.zeros_like(x)).flatten(-2).sum(-1) / n.clamp_min(1)
    return torch.where(valid, x, mean[..., None, None].to(x)), valid


def read_block(seg: Segment, world: int, rank: int, halo: int, norms: list, scale: int, method: str,
               sigma: float = 1.6, pad: str = "replicate", device=None, reads: list | None = None, times: bool = False) -> Block:
    """Read this rank's block of ``seg`` plus ``halo`` frames each side, normalise it (``norms``: one
    :class:`Normaliser` per variable) and degrade it, or read the same frames of its coarse run when
    it is paired (and the frames' time features with ``times``)."""
    if seg.n < world:
        raise UserError(f"{seg.label} frames {seg.start}:{seg.stop} ({seg.n} frames) cannot be shared by {world} ranks; "
                        "use fewer ranks or more frames")
    own = win.block_range(seg.n, world, rank)
    r0, r1 = win.halo_range(*own, seg.n, halo)
    arc = seg.open_all(log=reads)
    try:
        data = seg.read(arc, seg.start + r0, seg.start + r1)
        feats = torch.from_numpy(arc.first.time_features(seg.start + r0, seg.start + r1)).to(device) if times else None
    finally:
        arc.close()
    hr = unit(norms, torch.from_numpy(data).to(device=device, dtype=torch.float32))
    dg.check_divisible(hr.shape, scale, what=f"{seg.label} frame")
    hr, mask = fill_missing(hr, seg.label)
    if seg.lr_path:  # the coarse run's own frames: nothing is degraded
        coarse = seg.open_lr(log=reads)
        try:
            raw = coarse.read(seg.start + r0, seg.start + r1)
        finally:
            coarse.close()
        lr, _ = fill_missing(unit(norms, torch.from_numpy(raw).to(device=device, dtype=torch.float32)), f"{seg.lr_path}:{'+'.join(seg.lr_vars)}")
    else:
        lr = dg.degrade(hr, scale, method, sigma)
    return Block(seg, own, (r0, r1), hr, lr, pad, mask=mask, times=feats)


def local_range(seg: Segment, world: int, rank: int, reads: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-variable (min, max) arrays (C,) of this rank's own frames of ``seg`` (for the data-derived
    normalisation); missing cells (NaN) do not count."""
    a, b = win.block_range(seg.n, world, rank)
    arc = seg.open_all(log=reads)
    lo, hi = np.full(len(seg.variables), np.inf), np.full(len(seg.variables), -np.inf)
    try:
        for i in range(a, b, 64):
            x = seg.read(arc, seg.start + i, seg.start + min(b, i + 64))
            for c in range(x.shape[1]):
                if np.isfinite(x[:, c]).any():
                    lo[c], hi[c] = min(lo[c], float(np.nanmin(x[:, c]))), max(hi[c], float(np.nanmax(x[:, c])))
    finally:
        arc.close()
    return lo, hi
