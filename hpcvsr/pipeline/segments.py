"""From the data configuration to the frames every rank holds.

* :func:`segments` turns ``cfg.data`` into training, validation and held-out
  :class:`~hpcvsr.data.blocks.Segment` lists (generating sequences or converting a video on rank 0
  when they are not there yet);
* :func:`normaliser` derives the value range (fixed, or reduced over every rank's training frames);
* :func:`load_blocks` reads this rank's block (plus halo) of each segment.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import torch

from hpcvsr.data import blocks as bl
from hpcvsr.data import sources
from hpcvsr.errors import UserError
from hpcvsr.io import sequences
from hpcvsr.io.catalog import Opening
from hpcvsr.ops import windows as win
from hpcvsr.pipeline import config as config_mod


def _ensure(path: str, make, env) -> None:
    """Rank 0 makes ``path`` with ``make()`` (a :class:`~hpcvsr.data.sources.Built`) if it is missing."""
    if env.is_root and not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        make().write(path)
    env.barrier()


def file_segment(cfg, path: str, var: str, start: int = 0, stop: int | None = None, name: str = "", extra: tuple = ()) -> bl.Segment:
    """A segment of variable ``var`` (and ``extra`` ones) of ``path`` with the configured selection and
    the crop to a size divisible by the scale; the variables must share their frames and grid."""
    d, scale = cfg.data, cfg.degrade.scale
    select, isel = tuple(sorted(d.select.items())), tuple(sorted(d.isel.items()))
    seg = bl.Segment(path, var, start, 0, name, select, isel, extra=tuple(extra), opening=opening(cfg))
    arc = seg.open_all()
    try:
        T, H, W = arc.shape
    finally:
        arc.close()
    rows, cols = frame_crop(seg.label, H, W, scale, d.crop)
    return replace(seg, stop=T if stop is None else stop, rows=rows, cols=cols)


def opening(cfg) -> Opening:
    """How the configured archives' files are read (data.allow_gaps, data.time_origin)."""
    return Opening(allow_gaps=cfg.data.allow_gaps, time_origin=cfg.data.time_origin)


def frame_crop(where: str, height: int, width: int, scale: int, mode: str) -> tuple[tuple, tuple]:
    """(rows, cols) that crop frames of height x width to the largest size divisible by ``scale``;
    () for an axis that needs no crop. Frames smaller than the scale are a UserError."""
    try:
        rows, cols = win.divisible_crop(height, scale, mode), win.divisible_crop(width, scale, mode)
    except ValueError as exc:
        raise UserError(f"{where}: frames of {height}x{width}: {exc}") from None
    return (rows if rows != (0, height) else ()), (cols if cols != (0, width) else ())


def _paired(cfg, seg: bl.Segment, lr_path: str) -> bl.Segment:
    """``seg`` reading its inputs from the coarse run ``lr_path`` (checked by :mod:`hpcvsr.pipeline.pairs`)."""
    return replace(seg, lr_path=lr_path, lr_vars=config_mod.lr_variables(cfg)) if lr_path else seg


def check_inputs(cfg) -> None:
    """Open the configured archives' headers (variables, selection, sizes, time coordinate, static
    covariates and their grid): errors before anything is created."""
    d = cfg.data
    if d.source == "archive":
        if not d.path:
            raise UserError("data.path must name the input when data.source is 'archive'")
        first, *extra = config_mod.variables(cfg)
        for path in filter(None, (d.path, *d.runs, d.test_path)):
            seg = file_segment(cfg, path, first, extra=extra)
            if cfg.condition.time_features:
                check_time(seg)
            if d.static.vars:
                static_fields(cfg, seg, load=False)


def check_time(seg: bl.Segment) -> None:
    """Time features need a CF time coordinate on the segment's variable."""
    arc = seg.open()
    try:
        if not getattr(arc, "cf_time", False):
            raise UserError(f"{seg.path}:{seg.var} has no CF time coordinate (a time variable with units 'hours since ...'), "
                            "which condition.time_features needs")
    finally:
        arc.close()


def axis_values(grid: dict, dim: str):
    """Values of the 1D coordinate along ``dim`` in a :meth:`CFArchive.grid` description, or None."""
    for c in grid["coords"].values():
        if c["dims"] == [dim]:
            return np.asarray(c["values"], np.float64)
    return None


def axis_mismatch(got, ref, rtol: float = 0.01) -> str:
    """Why the 1D coordinate ``got`` is not ``ref`` within ``rtol`` of a cell ('' when it is)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return f"{got.size} cells where the reference grid has {ref.size}"
    step = float(np.abs(np.diff(ref)).min()) if ref.size > 1 else 1.0
    worst = float(np.abs(got - ref).max()) if got.size else 0.0
    return f"differs by up to {worst:.4g}, more than {rtol:.0%} of a cell ({step:.4g})" if worst > rtol * step else ""


def same_grid(where: str, grid: dict, ref: dict) -> None:
    """Refuse ``grid`` unless its 1D y and x coordinates equal ``ref``'s (:func:`axis_mismatch`;
    axes that either lacks are not compared; their shapes are checked by the caller)."""
    for axis in ("ydim", "xdim"):
        a, b = axis_values(grid, grid[axis]), axis_values(ref, ref[axis])
        why = "" if a is None or b is None else axis_mismatch(a, b)
        if why:
            raise UserError(f"{where}: coordinate '{grid[axis]}' {why} of the data's grid; it is not on the same grid")


def static_fields(cfg, seg: bl.Segment, load: bool = True) -> torch.Tensor | None:
    """The configured static covariates on ``seg``'s high-resolution grid, cropped like the data:
    (S, H, W) float32, each normalised to zero mean and unit variance (missing cells 0)."""
    st = cfg.data.static
    data = seg.open()
    try:
        shape, ref = data.shape[1:], (data.grid(*_slices(seg)) if hasattr(data, "grid") else None)
    finally:
        data.close()
    fields = []
    for var in st.vars:
        where = f"data.static {st.path}:{var}"
        arc = sequences.open_archive(st.path, var)
        try:
            if len(arc) != 1:
                raise UserError(f"{where} has {len(arc)} frames; a static covariate has one (dimensions y, x)")
            if tuple(arc.shape[1:]) != tuple(shape):
                raise UserError(f"{where} is {arc.shape[1]}x{arc.shape[2]}, the data ({seg.path}:{seg.var}) is {shape[0]}x{shape[1]}: "
                                "static covariates must lie on the data's high-resolution grid")
            if ref is not None and hasattr(arc, "grid"):
                same_grid(where, arc.grid(*_slices(seg)), ref)
            if load:
                fields.append(arc.read(0, 1, *_slices(seg))[0])
        finally:
            arc.close()
    if not load:
        return None
    out = []
    for var, x in zip(st.vars, fields):
        valid = np.isfinite(x)
        if not valid.any():
            raise UserError(f"data.static {st.path}:{var} has no valid values")
        mean, std = float(x[valid].mean()), float(x[valid].std())
        out.append(np.where(valid, (x - mean) / (std if std > 0 else 1.0), 0.0))
    return torch.from_numpy(np.stack(out).astype(np.float32))


def grid_axes(seg: bl.Segment) -> dict:
    """{"y": values, "x": values} of ``seg``'s 1D grid coordinates after its crop (lists; {} when it has none)."""
    arc = seg.open()
    try:
        grid = arc.grid(*_slices(seg)) if hasattr(arc, "grid") else None
    finally:
        arc.close()
    return {} if grid is None else {k: v.tolist() for k, v in grid_axes_of(grid).items()}


def grid_axes_of(grid: dict) -> dict:
    """{"y": values, "x": values} of a :meth:`CFArchive.grid` description's 1D coordinates (those it has)."""
    axes = {k: axis_values(grid, grid[d]) for k, d in (("y", "ydim"), ("x", "xdim"))}
    return {k: v for k, v in axes.items() if v is not None}


def _slices(seg: bl.Segment) -> tuple:
    return (slice(*seg.rows) if seg.rows else None, slice(*seg.cols) if seg.cols else None)


def crop_text(seg: bl.Segment) -> str:
    """How a segment's frames are cropped, for logs and outputs ('' when they are not)."""
    if not seg.rows and not seg.cols:
        return ""
    return f"rows {seg.rows or 'all'}, columns {seg.cols or 'all'} (to sizes divisible by the scale)"


def _split(seg: bl.Segment, val_fraction: float) -> tuple[bl.Segment, bl.Segment]:
    try:
        (a, b), (c, e) = win.split_train_val(seg.stop, val_fraction)
    except ValueError as exc:
        raise UserError(f"{seg.label}: {exc}") from None
    return replace(seg, start=a, stop=b, name="train"), replace(seg, start=c, stop=e, name="val")


def segments(cfg, env, data_dir: str, kind) -> tuple[list, list, list]:
    """(train, val, test) lists of segments; ``kind`` is the pipeline kind (for the window length)."""
    d = cfg.data
    train_files: list[bl.Segment] = []  # whole files (or their leading part) to split into training and validation
    names = config_mod.variables(cfg)
    if d.source in sources.GENERATED:
        var, *extra = (sources.generated_var(d.source, v) for v in names)
        if d.test_seed in d.seeds:
            raise UserError(f"data.test_seed {d.test_seed} is also a training seed; the held-out sequence must be unseen")
        paths = {}
        for seed in list(d.seeds) + [d.test_seed]:
            paths[seed] = os.path.join(data_dir, f"{d.source}_seed{seed}_{d.frames}x{d.size[0]}x{d.size[1]}.h5")
            _ensure(paths[seed], lambda s=seed: sources.generate(d.source, d.frames, d.size, s), env)
        train_files = [bl.Segment(paths[s], var, 0, d.frames, extra=tuple(extra)) for s in d.seeds]
        test = [bl.Segment(paths[d.test_seed], var, 0, d.frames, f"seed {d.test_seed}", extra=tuple(extra))]
    else:
        if not d.path:
            raise UserError(f"data.path must name the input when data.source is '{d.source}'")
        path, test_path, (var, *extra) = d.path, d.test_path, names
        if d.source == "video":
            path, var = os.path.join(data_dir, "video.h5"), "y"
            _ensure(path, lambda: sources.video(d.path), env)
            if d.test_path:
                test_path = os.path.join(data_dir, "video_test.h5")
                _ensure(test_path, lambda: sources.video(d.test_path), env)
        whole = _paired(cfg, file_segment(cfg, path, var, extra=extra), d.lr_path)
        runs = [_paired(cfg, file_segment(cfg, p, var, name=f"training run {i + 2}", extra=extra), lr)
                for i, (p, lr) in enumerate(zip(d.runs, d.lr_runs or [""] * len(d.runs)))]
        if test_path:
            test = [_paired(cfg, file_segment(cfg, test_path, var, name="held-out file", extra=extra), d.lr_test_path)]
            train_files = [whole, *runs]
        else:  # hold out the trailing frames of the one file
            (_, cut), _ = win.split_train_val(whole.stop, d.val_fraction)
            test = [replace(whole, start=cut, name="held-out tail")]
            train_files = [replace(whole, stop=cut)]
    train, val = [], []
    for seg in train_files:
        t, v = _split(seg, d.val_fraction)
        train.append(t)
        val.append(v)
    need = kind.window(cfg.windows.size)
    for s in train + val + test:
        if s.n < max(need, env.world):
            raise UserError(f"{s.label} {s.name} has {s.n} frames; at least {max(need, env.world)} are needed "
                            f"(a {need}-frame window and one frame per rank)")
    return train, val, test


def normaliser(cfg, env, train: list, reads: list | None = None) -> list:
    """One :class:`~hpcvsr.data.blocks.Normaliser` per variable: fixed, or the range of its training
    frames reduced over every rank (all variables in one collective each for min and max)."""
    d = cfg.data
    names = train[0].variables
    arcs = train[0].open_all()
    units = [str(a.units or "") for a in arcs.parts]
    arcs.close()
    if d.normalise == "none":
        return [bl.Normaliser(0.0, 1.0, u) for u in units]
    if d.normalise == "fixed":
        return [bl.Normaliser(float(d.norm_range[0]), float(d.norm_range[1]), u) for u in units]
    lo, hi = np.full(len(names), np.inf), np.full(len(names), -np.inf)
    for s in train:
        a, b = bl.local_range(s, env.world, env.rank, reads)
        lo, hi = np.minimum(lo, a), np.maximum(hi, b)
    lo = env.all_reduce_min(torch.tensor(lo, dtype=torch.float64, device=env.device)).tolist()
    hi = env.all_reduce_max(torch.tensor(hi, dtype=torch.float64, device=env.device)).tolist()
    for v, a, b in zip(names, lo, hi):
        if not b > a:
            raise UserError(f"training data of {train[0].path}:{v} is constant ({a}); nothing to normalise")
    return [bl.Normaliser(float(a), float(b), u) for a, b, u in zip(lo, hi, units)]


def load_blocks(segs: list, cfg, env, norms: list, halo: int, reads: list | None = None) -> list:
    g = cfg.degrade
    return [bl.read_block(s, env.world, env.rank, halo, norms, g.scale, g.method, sigma=g.blur_sigma, pad=cfg.windows.pad,
                          device=env.device, reads=reads, times=cfg.condition.time_features) for s in segs]
