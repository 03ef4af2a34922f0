"""Paired training: a fine run (``data.path``) and a coarse run of the same flow (``data.lr_path``).

The coarse run's frames are the networks' inputs, as they are; nothing is degraded. The scale is
the ratio of the two grids, and :func:`resolve` checks every pair before anything is created: the
sizes must be an integer ratio, the frame counts and time values equal, and 1-D coordinates must
nest within a hundredth of a fine cell, in one of the two ways grids nest: finite-volume cells (each
coarse coordinate the mean of the fine ones its cell covers: ``paired``) or grid points (each coarse
point one of the fine grid's, every s-th from the first: ``paired_point``). Which one sets where the
output's fine grid lies.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from hpcvsr.errors import UserError
from hpcvsr.io.sequences import MultiArchive
from hpcvsr.pipeline import config as config_mod
from hpcvsr.pipeline.segments import grid_axes_of, opening

NEST_TOLERANCE = 0.01  # of a fine cell
CELLS, POINTS = "cells", "grid points"  # how two grids nest


def resolve(cfg: config_mod.Config) -> config_mod.Config:
    """``cfg`` itself without a coarse run; with one, every pair checked and the configuration's
    degradation set to what it is: ``paired`` (grids of cells) or ``paired_point`` (grids of points), at the
    scale of the two grids."""
    d = cfg.data
    if not config_mod.paired(cfg):
        return cfg
    pairs = [(d.path, d.lr_path), *zip(d.runs, d.lr_runs)] + ([(d.test_path, d.lr_test_path)] if d.test_path else [])
    found = {check(cfg, fine, coarse): (fine, coarse) for fine, coarse in pairs}
    scales = {s for s, _ in found}
    if len(scales) > 1:
        raise UserError("the training and held-out pairs have different scales: "
                        + "; ".join(f"{f} / {c} x{s}" for (s, _), (f, c) in found.items()))
    scale = next(iter(scales))
    if scale not in config_mod.CHOICES["degrade.scale"]:
        raise UserError(f"{d.path} and {d.lr_path}: a scale of x{scale}; hpcvsr's networks take "
                        f"x{', x'.join(map(str, config_mod.CHOICES['degrade.scale']))}")
    nesting = {n for _, n in found if n}
    if len(nesting) > 1:
        raise UserError("the pairs' grids nest in different ways (cells in some, grid points in others): "
                        + "; ".join(f"{f} / {c}: {n}" for (_, n), (f, c) in found.items() if n))
    method = "paired_point" if nesting == {POINTS} else "paired"
    return replace(cfg, degrade=replace(cfg.degrade, method=method, scale=scale))


def check(cfg, fine: str, coarse: str) -> tuple[int, str | None]:
    """The scale of the pair (``fine``, ``coarse``) and how its grids nest (:data:`CELLS`, :data:`POINTS`, or None
    without 1-D coordinates to tell), or one UserError naming both files and the problem."""
    d = cfg.data
    select, isel = dict(d.select), dict(d.isel)
    hr = MultiArchive(fine, config_mod.variables(cfg), select=select, isel=isel, opening=opening(cfg))
    try:
        lr = MultiArchive(coarse, config_mod.lr_variables(cfg), select=select, isel=isel, opening=opening(cfg))
    except UserError:
        hr.close()
        raise
    where = f"{fine} and {coarse}"
    try:
        (T, H, W), (t, h, w) = hr.shape, lr.shape
        if T != t:
            raise UserError(f"{where}: {T} and {t} frames; the fine and the coarse run of a pair must hold the same output times")
        if H % h or W % w or H // h != W // w or H == h:
            raise UserError(f"{where}: frames of {H}x{W} and {h}x{w} are not one grid {'' if H == h else 'refined '}by an integer "
                            "ratio in both directions")
        scale = H // h
        _same_times(where, hr.first, lr.first)
        nesting = _nested(where, hr.first, lr.first, scale)
    finally:
        hr.close()
        lr.close()
    return scale, nesting


def _same_times(where: str, fine, coarse) -> None:
    both = [getattr(a, "cf_time", False) for a in (fine, coarse)]
    if not any(both):
        return  # frames by index in both
    if not all(both):
        raise UserError(f"{where}: only {'the first' if both[0] else 'the second'} has a CF time coordinate; a pair's output times must "
                        "be checkable")
    a, b = fine.dates(), coarse.dates()
    diff = np.abs(_seconds(a) - _seconds(b))
    worst = int(np.argmax(diff)) if diff.size else 0
    if diff.size and diff[worst] > 1.0:
        raise UserError(f"{where}: output times differ (frame {worst}: {a[worst]} and {b[worst]}); the runs of a pair must be saved at the "
                        "same times")


def _seconds(dates) -> np.ndarray:
    """Seconds since 1970 of cftime dates in their own calendar (standard and proleptic Gregorian agree since 1582)."""
    import cftime

    if not len(dates):
        return np.zeros(0)
    return np.asarray(cftime.date2num(list(dates), "seconds since 1970-01-01 00:00:00", calendar=dates[0].calendar), np.float64)


def _nested(where: str, fine, coarse, scale: int) -> str | None:
    """How the 1-D coordinates of the two grids nest: :data:`CELLS` (each coarse coordinate the mean of the fine
    coordinates its cell covers) or :data:`POINTS` (the fine points taken every ``scale`` from the first), the same
    on both axes; None without 1-D coordinates on both grids."""
    if not (hasattr(fine, "grid") and hasattr(coarse, "grid")):
        return None
    f_axes, c_axes = grid_axes_of(fine.grid()), grid_axes_of(coarse.grid())
    found = {}
    for axis in sorted(set(f_axes) & set(c_axes)):
        f, c = np.asarray(f_axes[axis], np.float64), np.asarray(c_axes[axis], np.float64)
        if f.size != c.size * scale or f.size < 2:
            continue
        step = float(np.abs(np.diff(f)).min())
        offsets = {CELLS: float(np.abs(f.reshape(-1, scale).mean(1) - c).max()), POINTS: float(np.abs(f[::scale] - c).max())}
        kind = min(offsets, key=offsets.get)
        if offsets[kind] > NEST_TOLERANCE * step:
            raise UserError(f"{where}: the {axis} coordinates do not nest: a coarse cell lies up to {offsets[CELLS]:.4g} from the mean "
                            f"of the fine cells it covers, and a coarse point up to {offsets[POINTS]:.4g} from the fine points taken every {scale} "
                            f"({NEST_TOLERANCE:.0%} of a fine cell, {step:.4g}, allowed)")
        found[axis] = kind
    if len(set(found.values())) > 1:
        raise UserError(f"{where}: the grids nest as cells along one axis and as points along the other "
                        f"({', '.join(f'{a}: {k}' for a, k in found.items())}); hpcvsr places a coarse pixel the same way on both")
    return next(iter(found.values()), None)
