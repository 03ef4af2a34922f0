"""Apply a trained run to low-resolution frames: 2D and 3D stages fused per chunk of frames.

:class:`Predictor` loads ``model.pt`` of a run directory and maps a buffer of normalised LR
frames (own frames plus the halo its windows need) to super-resolved centre frames. The
intermediate 2D frames stay in memory. Frames too large for memory are processed in spatial
tiles with overlapping halos (:func:`~hpcvsr.ops.windows.tile_grid`), which reproduce the
untiled output to float tolerance. Computation is batched in groups aligned to global frame
indices, so a frame's result does not depend on how frames are spread over ranks. On an x
axis that wraps around (a global longitude), frames and tiles read across the seam
(:func:`wrapped_tiles`), so a frame's result does not depend on where the seam lies either.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from hpcvsr.data.blocks import Normaliser, fill_missing, unit
from hpcvsr.errors import UserError
from hpcvsr.io import cf, checkpoint
from hpcvsr.models import from_entry
from hpcvsr.models.conditioning import Where, run
from hpcvsr.models.inputs import model_input
from hpcvsr.models.lowering import lower
from hpcvsr.ops import degrade as dg
from hpcvsr.ops import noise
from hpcvsr.ops import windows as win
from hpcvsr.ops.metrics import shave
from hpcvsr.pipeline import kinds
from hpcvsr.pipeline.segments import axis_mismatch

# LR columns a degradation reads across a periodic seam: bicubic's antialiased kernel reaches 2, blur's 13 taps 6 HR pixels
DEGRADE_REACH = 4


class Predictor:
    """A trained run's networks, applied to normalised LR frames.

    ``tile`` is the spatial tile side in HR pixels (0: whole frames) and ``tile_halo`` the
    overlap each side in LR pixels; ``precision`` 'bf16' runs the 3D bodies in bf16 (fp32 residual;
    :func:`hpcvsr.models.lowering.lower`), ``compile`` wraps the networks in ``torch.compile``.
    ``members`` > 0 (a run with a generative stage): every frame becomes that many ensemble members,
    whose noise comes from ``seed`` and each pixel's global frame, row and column (:mod:`hpcvsr.ops.noise`).
    """

    def __init__(self, run_dir: str, device, *, batch: int = 8, tile: int = 0, tile_halo: int = 16, precision: str = "fp32",
                 compile: bool = False, members: int = 0, seed: int = 0):
        path = os.path.join(run_dir, "model.pt")
        if not os.path.exists(path):
            raise UserError(f"{run_dir}: no model.pt (is it a finished training run directory?)")
        mf = checkpoint.load_model(path)
        self.hash = checkpoint.file_hash(path)
        self.pipeline, self.kind, self.scale = mf.pipeline, kinds.kind(mf.pipeline), mf.scale
        self.degrade, self.sigma = mf.degrade, mf.blur_sigma
        self.window, self.pad, self.crop, self.config = mf.window, mf.pad, mf.crop, mf.config
        channels = mf.variables or [dict(mf.normaliser, var=mf.var)]  # one entry per variable (channel)
        self.vars = [c["var"] for c in channels]
        self.norms = [Normaliser(c["lo"], c["hi"], c.get("units", "")) for c in channels]
        self.device, self.batch, self.tile, self.tile_halo = device, batch, tile, tile_halo
        self.precision = precision
        # the inference forms: exact rewrites everywhere; bf16 only in the 3D bodies (the 2D output is the field itself)
        self.net2d = lower(from_entry(mf.net2d).to(device).eval(), "fp32")
        self.net = lower(from_entry(mf.model).to(device).eval(), precision) if self.kind.has_3d else None
        self.input_space = self.net.input_space if self.net is not None else "hr"
        # a bare 3D network with per-frame features: overlapping windows share their frames' work
        self.shared = self.net if self.net is not None and self.net.frame_features else None
        if compile:
            self.net2d = torch.compile(self.net2d, dynamic=False)
            self.net = torch.compile(self.net, dynamic=False) if self.net is not None else None
        self.win_size = self.kind.window(self.window)  # frames per window
        self.halo = self.kind.halo(self.window)
        self.source = self.kind.source(self.input_space)
        self.condition = mf.condition  # {} unless the networks are conditioned on place or time
        self.needs_time = bool(self.condition.get("time_features"))
        self.tied_to_grid = bool(self.condition.get("static_vars") or self.condition.get("location_channels"))
        # what an output's consistency with its input is measured by: its degradation, on whole frames of a degraded input
        self.consistency = None if self.crop or self.degrade in dg.PAIRED else (self.degrade, self.scale, self.sigma)
        if tile and tile_halo * self.scale < self.crop:
            raise UserError(f"infer.tile_halo={tile_halo} LR pixels is smaller than the model's {self.crop}-pixel border crop")
        self.gen = from_entry(mf.gen).to(device).eval() if mf.gen else None
        self.members, self.seed = int(members), int(seed)
        if self.members < 0:
            raise UserError(f"--members must be >= 0, got {members}")
        if self.members and self.gen is None:
            raise UserError(f"{run_dir}: --members needs a run with a generative stage (pipeline 2d_3d_gen); this run's pipeline is "
                            f"{self.pipeline}, which gives one deterministic output")
        if self.members and tile and tile_halo * self.scale < self.gen.radius + 2 * self.scale:
            raise UserError(f"infer.tile_halo={tile_halo} LR pixels is smaller than the generative stage's reach "
                            f"({self.gen.radius} fine pixels plus its bicubic input's)")

    def output_positions(self, h: int, w: int, *, crop: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Where the output's rows and columns lie on an ``h`` x ``w`` low-resolution grid, in its index
        units: low-resolution pixels placed as the degradation places them, less the model's border
        (``crop``); what the NetCDF writer and the :class:`~hpcvsr.inference.resolver.SuperResolver`
        give the fine grid's coordinates from (:func:`hpcvsr.io.cf.fine_grid`)."""
        s, c, centred = self.scale, self.crop if crop else 0, dg.CENTRED[self.degrade]
        return (cf.fine_positions(h, s, centred=centred)[c : h * s - c], cf.fine_positions(w, s, centred=centred)[c : w * s - c])

    def check_grid(self, where: str, shape: tuple, axes: dict) -> None:
        """Refuse a high-resolution grid (``shape``, 1D ``axes`` {"y", "x"}) other than the one the
        model's place channels (static covariates, learned maps) were trained on."""
        if not self.tied_to_grid:
            return
        grid, what = tuple(self.condition["grid"]), ("static covariates " + ", ".join(self.condition["static_vars"])
                                                      if self.condition.get("static_vars") else "learned location channels")
        if tuple(shape) != grid:
            raise UserError(f"{where}: the super-resolved grid would be {shape[0]}x{shape[1]}, but this model's {what} cover the "
                            f"training grid of {grid[0]}x{grid[1]}; it applies only to that grid")
        for k, ref in self.condition.get("axes", {}).items():
            why = axis_mismatch(axes[k], ref) if k in axes else ""
            if why:
                raise UserError(f"{where}: its {k} coordinate {why} of the training grid; this model's {what} apply only to that grid")

    @torch.no_grad()
    def _frames(self, lr: torch.Tensor, idx: np.ndarray, times: torch.Tensor | None = None, origin: tuple = (0, 0), *, frame0: int = 0,
                width: int = 0) -> torch.Tensor:
        """Whole-frame prediction: LR buffer (T, C, h, w), windows ``idx`` (k, window) -> (k, C, H', W'),
        or (k, M, C, H', W') with ``members`` M.

        ``times`` (T, 4) are the buffer frames' time features, ``origin`` the high-resolution row
        and column of the buffer's first pixel on the grid (a tile's offset); ``frame0`` the global
        index of the buffer's first frame and ``width`` > 0 the frame's high-resolution width on a
        periodic x axis (members' noise: columns modulo it)."""
        det = self._deterministic(lr, idx, times, origin)
        if not self.members:
            return det
        centre = torch.from_numpy(idx[:, idx.shape[1] // 2]).to(lr.device)
        rows = range(origin[0], origin[0] + det.shape[-2])
        cols = torch.arange(origin[1], origin[1] + det.shape[-1])
        cols = cols % width if width else cols
        frames = (frame0 + idx[:, idx.shape[1] // 2]).tolist()
        out = torch.empty((len(det), self.members, *det.shape[1:]), device=det.device)
        for sel in torch.arange(len(det)).split(max(1, self.batch // 2)):
            z = noise.fields(self.seed, self.members, self.gen.noise, [frames[i] for i in sel.tolist()], rows, cols, device=det.device)
            where = Where.at(len(sel), *origin, times=None if times is None else times[centre[sel]][:, None], device=det.device)
            out[sel] = self.gen(det[sel], lr[centre[sel]], z, where)
        return out

    @torch.no_grad()
    def _deterministic(self, lr: torch.Tensor, idx: np.ndarray, times: torch.Tensor | None = None, origin: tuple = (0, 0)) -> torch.Tensor:
        """The 2D / 3D networks' output (k, C, H', W') of windows ``idx`` of the LR buffer (:meth:`_frames`)."""
        b = self.batch

        def where(frames: torch.Tensor) -> Where:  # frames: (n, window) buffer indices
            return Where.at(len(frames), *origin, times=None if times is None else times[frames], device=lr.device)

        if self.net is None:
            centre = torch.from_numpy(idx[:, idx.shape[1] // 2]).to(lr.device)
            return torch.cat([run(self.net2d, lr[c], where(c[:, None])) for c in centre.split(b)])
        if self.source == "sr2d":
            need = torch.from_numpy(np.unique(idx)).to(lr.device)
            sr = torch.empty((*lr.shape[:2], lr.shape[2] * self.scale, lr.shape[3] * self.scale), device=lr.device)
            for sel in need.split(b):
                sr[sel] = run(self.net2d, lr[sel], where(sel[:, None]))
            src = sr
        elif self.source == "bicubic":
            src = dg.upscale(lr, self.scale)
        else:  # windows of LR frames
            src = lr
        return self.windows_3d(src, idx, where)

    @torch.no_grad()
    def windows_3d(self, src: torch.Tensor, idx: np.ndarray, where=None) -> torch.Tensor:
        """The 3D network on windows ``idx`` (k, window) of the buffer ``src`` (T, C, H, W) in batches,
        overlapping windows sharing their frames' work when the network allows it; ``where(w)`` gives
        a conditioned network the places and times of windows ``w``."""
        t = torch.from_numpy(idx).to(src.device)
        if self.shared is not None and src.shape[1] == 1:
            return torch.cat([self.shared.forward_shared(src[:, 0], w) for w in t.split(self.batch)])
        return torch.cat([run(self.net, model_input(src[w]), where(w) if where else None) for w in t.split(self.batch)])

    def predict(self, lr: torch.Tensor, idx: np.ndarray, times: torch.Tensor | None = None, *, periodic_x: bool = False,
                frame0: int = 0) -> torch.Tensor:
        """(k, C, H - 2 crop, W - 2 crop) super-resolved frames of the LR buffer (T, C, h, w) of the
        model's C variables ((k, M, C, ...) with ``members`` M), tiled when ``tile`` is set; ``times``:
        the buffer frames' time features (T, 4) for a time-conditioned model; ``frame0`` the global index
        of the buffer's first frame (members' noise).

        ``periodic_x``: the x axis wraps around (a global longitude, :func:`hpcvsr.io.cf.periodic_x`).
        Every tile then reads ``tile_halo`` LR columns past either end of the frame from its other end,
        before any network layer (the bicubic upscale of a network included), so the output does not
        depend on where the seam lies; a model tied to the grid reads its place maps across the seam
        alike (:func:`hpcvsr.models.conditioning.cut`)."""
        if self.needs_time and times is None:
            raise RuntimeError("this model needs the frames' time features")  # programming error: infer checks the input first
        wrap = periodic_x
        if not self.tile and not wrap:
            return self._frames(lr, idx, times, frame0=frame0)
        h, w = lr.shape[-2:]
        s, c = self.scale, self.crop
        H, W = h * s, w * s
        t_lr, halo = max(1, self.tile // s) if self.tile else 0, self.tile_halo
        if wrap and halo * s < c:
            raise UserError(f"infer.tile_halo={halo} LR pixels is smaller than the model's {c}-pixel border crop")
        lead = (len(idx), self.members) if self.members else (len(idx),)
        out = torch.empty((*lead, lr.shape[1], H - 2 * c, W - 2 * c), device=lr.device)
        for r0, r1, k0, k1 in win.tile_grid(h, t_lr, halo):
            for q0, q1, j0, j1 in (wrapped_tiles(w, t_lr, halo) if wrap else win.tile_grid(w, t_lr, halo)):
                part = self._frames(columns(lr[..., r0:r1, :], q0, q1).contiguous(), idx, times, (r0 * s, q0 * s), frame0=frame0,
                                    width=W if wrap else 0)
                # the tile's output covers HR rows [r0 s + c, r1 s - c); keep [k0 s, k1 s) within the frame's [c, H - c)
                y0, y1 = max(k0 * s, c), min(k1 * s, H - c)
                x0, x1 = max(j0 * s, c), min(j1 * s, W - c)
                out[..., y0 - c : y1 - c, x0 - c : x1 - c] = part[..., y0 - (r0 * s + c) : y1 - (r0 * s + c), x0 - (q0 * s + c) : x1 - (q0 * s + c)]
        return out

    def resolve_chunk(self, raw: torch.Tensor, *, frames: tuple, read: tuple, total: int, times: torch.Tensor | None = None,
                      degrade: bool = False, what: str = "", periodic_x: bool = False) -> tuple:
        """One chunk, as the infer command and :class:`~hpcvsr.inference.resolver.SuperResolver` compute it.

        ``raw`` (r1 - r0, C, h, w) holds frames ``read`` = [r0, r1) of a ``total``-frame sequence in
        physical units, NaN where missing; the chunk's own frames are ``frames`` = [a, b). ``degrade``:
        the frames are high resolution and are degraded first; ``periodic_x``: their x axis wraps around
        (:meth:`predict`; a degradation then reaches across the seam too). Returns (sr, x, lr, valid): the
        super-resolved own frames in normalised units, NaN where the input is missing, the normalised
        input, the low-resolution frames the networks read and the input's valid cells (None: all).
        With ``members``, sr is (b - a, M, C, H', W')."""
        (a, b), (r0, r1) = frames, read
        x, valid = fill_missing(unit(self.norms, raw), what)
        lr = self.degraded(x, periodic_x=periodic_x) if degrade else x
        idx = win.local_window_indices(np.arange(a, b), total, r0, r1, self.win_size, self.pad)
        sr = self.predict(lr, idx, times, periodic_x=periodic_x, frame0=r0)
        if valid is not None:  # missing input cells stay missing in the output
            keep = valid[a - r0 : b - r0]
            if not degrade:
                keep = keep.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1)
            keep = shave(keep, self.crop)
            sr = sr.masked_fill(~(keep[:, None] if self.members else keep), float("nan"))
        return sr, x, lr, valid

    def degraded(self, x: torch.Tensor, *, periodic_x: bool = False) -> torch.Tensor:
        """The run's degradation of high-resolution frames (..., H, W); on a periodic x axis it reaches
        across the seam (``DEGRADE_REACH`` LR columns read past either end, cut off after)."""
        if not periodic_x:
            return dg.degrade(x, self.scale, self.degrade, self.sigma)
        m, w = DEGRADE_REACH, x.shape[-1]
        return dg.degrade(columns(x, -m * self.scale, w + m * self.scale), self.scale, self.degrade, self.sigma)[..., m : m + w // self.scale]


def wrapped_tiles(length: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """Tiles (read_start, read_stop, keep_start, keep_stop) covering a periodic axis of ``length``, as
    :func:`~hpcvsr.ops.windows.tile_grid` but reading ``halo`` past both ends of the axis rather than
    clipping there (:func:`columns` reads them modulo ``length``); ``tile`` <= 0: one tile.

    >>> wrapped_tiles(10, 4, 2)
    [(-2, 6, 0, 4), (2, 10, 4, 8), (6, 12, 8, 10)]
    >>> wrapped_tiles(10, 0, 3)
    [(-3, 13, 0, 10)]
    """
    tile = length if tile <= 0 else min(tile, length)
    return [(start - halo, min(length, start + tile) + halo, start, min(length, start + tile)) for start in range(0, length, tile)]


def columns(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Columns [start, stop) of ``x`` (..., w), indices taken modulo w (a periodic x axis).

    >>> columns(torch.arange(4), -2, 6).tolist()
    [2, 3, 0, 1, 2, 3, 0, 1]
    """
    w = x.shape[-1]
    if 0 <= start and stop <= w:
        return x[..., start:stop]
    return x.index_select(-1, torch.arange(start, stop, device=x.device) % w)

