"""Paired training: a fine run (``data.path``) and a coarse run of the same flow (``data.lr_path``).

The coarse run's frames are the networks' inputs, as they are; nothing is degraded. The scale is
the ratio of the two grids, and :func:`resolve` checks every pair before anything is created: the
sizes must be an integer ratio, the frame counts and time values equal, and 1-D coordinates must
nest (each coarse coordinate the mean of the fine ones it covers, within a hundredth of a fine cell).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from hpcvsr.errors import UserError
from hpcvsr.io.sequences import MultiArchive
from hpcvsr.pipeline import config as config_mod
from hpcvsr.pipeline.segments import grid_axes_of, opening

NEST_TOLERANCE = 0.01  # of a fine cell


def resolve(cfg: config_mod.Config) -> config_mod.Config:
    """``cfg`` itself without a coarse run; with one, every pair checked and the configuration's
    degradation set to what it is: ``paired``, at the scale of the two grids."""
    d = cfg.data
    if not config_mod.paired(cfg):
        return cfg
    pairs = [(d.path, d.lr_path), *zip(d.runs, d.lr_runs)] + ([(d.test_path, d.lr_test_path)] if d.test_path else [])
    scales = {check(cfg, fine, coarse): (fine, coarse) for fine, coarse in pairs}
    if len(scales) > 1:
        raise UserError("the training and held-out pairs have different scales: "
                        + "; ".join(f"{f} / {c} x{s}" for s, (f, c) in scales.items()))
    scale = next(iter(scales))
    if scale not in config_mod.CHOICES["degrade.scale"]:
        raise UserError(f"{d.path} and {d.lr_path}: a scale of x{scale}; hpcvsr's networks take "
                        f"x{', x'.join(map(str, config_mod.CHOICES['degrade.scale']))}")
    return replace(cfg, degrade=replace(cfg.degrade, method="paired", scale=scale))


def check(cfg, fine: str, coarse: str) -> int:
    """The scale of the pair (``fine``, ``coarse``), or one UserError naming both files and the problem."""
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
        _nested(where, hr.first, lr.first, scale)
    finally:
        hr.close()
        lr.close()
    return scale


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


def _nested(where: str, fine, coarse, scale: int) -> None:
    """Each 1-D coordinate of the coarse grid is the mean of the fine coordinates its cells cover."""
    if not (hasattr(fine, "grid") and hasattr(coarse, "grid")):
        return
    f_axes, c_axes = grid_axes_of(fine.grid()), grid_axes_of(coarse.grid())
    for axis in sorted(set(f_axes) & set(c_axes)):
        f, c = np.asarray(f_axes[axis], np.float64), np.asarray(c_axes[axis], np.float64)
        if f.size != c.size * scale or f.size < 2:
            continue
        step = float(np.abs(np.diff(f)).min())
        expect = f.reshape(-1, scale).mean(1)
        worst = float(np.abs(expect - c).max())
        if worst > NEST_TOLERANCE * step:
            raise UserError(f"{where}: the {axis} coordinates do not nest: a coarse cell lies up to {worst:.4g} from the mean of the fine "
                            f"cells it covers ({NEST_TOLERANCE:.0%} of a fine cell, {step:.4g}, allowed)")
