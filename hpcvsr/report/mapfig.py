"""A map figure of one frame: LR | SR | HR on longitude / latitude, from hpcvsr's NetCDF output.

    python -m hpcvsr.mapfig --sr SR.nc --hr HR.nc --var t2m [--frame 10] --out map.png [--overwrite]

SR.nc is written by ``python -m hpcvsr.infer ... --degrade --output SR.nc``; HR.nc is its input.
The LR panel is the HR frame cropped as infer cropped it (``hpcvsr_input_crop``) and degraded as
training does (``hpcvsr_scale``, ``hpcvsr_degradation``), drawn on the coarse grid: LR pixel i sits
at fine position i*s + (s-1)/2 (bicubic, block_mean) or i*s (blur, point). SR and HR are drawn on
their own coordinates (HR cropped like SR), all three with the same colour limits.
"""

from __future__ import annotations

import json
import os

import numpy as np

from hpcvsr.errors import UserError
from hpcvsr.io.cf import coordinate_kind


def _open(path: str, what: str):
    import xarray as xr

    if not os.path.isfile(path):
        raise UserError(f"{what} file not found: {path}")
    try:
        return xr.open_dataset(path, cache=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} as NetCDF: {exc}") from None


def _variable(ds, path: str, var: str):
    if var not in ds.data_vars:
        names = ", ".join(str(n) for n, v in ds.data_vars.items() if v.ndim >= 2) or "none"
        raise UserError(f"{path} has no variable '{var}' (variables with 2 or more dims: {names})")
    return ds[var]


def _attr(ds, path: str, name: str):
    if name not in ds.attrs:
        raise UserError(f"{path} has no global attribute '{name}': is it the output of python -m hpcvsr.infer --degrade?")
    return ds.attrs[name]


def _horizontal(da, ydim: str, xdim: str) -> dict:
    """{"x": (name, values, dims), "y": ...}: longitude / latitude when the variable has them, else the dims' own coords or indices."""
    found = {}
    for name, c in da.coords.items():
        if c.ndim and set(c.dims) <= {ydim, xdim}:
            kind = coordinate_kind(str(name), c.attrs)
            if kind and kind not in found:
                found[kind] = (str(name), np.asarray(c.values, np.float64), tuple(c.dims))
    out = {}
    for axis, kind, dim in (("x", "lon", xdim), ("y", "lat", ydim)):
        if kind in found:
            out[axis] = found[kind]
        elif dim in da.coords:
            out[axis] = (dim, np.asarray(da[dim].values, np.float64), (dim,))
        else:
            out[axis] = (dim, np.arange(da.sizes[dim], dtype=np.float64), (dim,))
    out["geographic"] = "lat" in found and "lon" in found
    return out


def _mesh(coords: dict, ydim: str, xdim: str) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y) arrays for pcolormesh: 1-D coordinates as they are, 2-D ones as (y, x) arrays."""
    xs, ys = coords["x"], coords["y"]
    if len(xs[2]) == 1 and len(ys[2]) == 1 and xs[2] == (xdim,) and ys[2] == (ydim,):
        return xs[1], ys[1]
    ny = ys[1].shape[ys[2].index(ydim)] if ydim in ys[2] else xs[1].shape[xs[2].index(ydim)]
    nx = xs[1].shape[xs[2].index(xdim)] if xdim in xs[2] else ys[1].shape[ys[2].index(xdim)]

    def full(name_values_dims):
        _, v, dims = name_values_dims
        if dims == (ydim, xdim):
            return v
        if dims == (xdim, ydim):
            return v.T
        if dims == (xdim,):
            return np.broadcast_to(v[None, :], (ny, nx))
        return np.broadcast_to(v[:, None], (ny, nx))

    return full(xs), full(ys)


def _coarse(coords: dict, ydim: str, xdim: str, pos_y: np.ndarray, pos_x: np.ndarray) -> dict:
    """The coordinates at fractional fine-grid index positions (linear, as hpcvsr places grids)."""
    from hpcvsr.io.cf import fine_coordinate

    out = {"geographic": coords["geographic"]}
    for axis in ("x", "y"):
        name, values, dims = coords[axis]
        is_lon = coords["geographic"] and axis == "x"
        is_lat = coords["geographic"] and axis == "y"
        out[axis] = (name, fine_coordinate(values, pos_y, pos_x, dims, ydim, xdim, is_lon, is_latitude=is_lat), dims)
    return out


def _stamp(value) -> str:
    if isinstance(value, np.datetime64):
        return np.datetime_as_string(value, unit="m").replace("T", " ")
    if hasattr(value, "strftime"):  # cftime dates of non-standard calendars
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def _selection(ds, path: str) -> tuple[dict, dict]:
    text = ds.attrs.get("hpcvsr_selection")
    if not text:
        return {}, {}
    try:
        sel = json.loads(text)
    except ValueError:
        raise UserError(f"{path}: global attribute hpcvsr_selection is not JSON: {text!r}") from None
    return dict(sel.get("select") or {}), dict(sel.get("isel") or {})


def _hr_frame(hr, hr_path: str, var: str, dims: tuple[str, str, str], frame: int, select: dict, isel: dict):
    """The HR variable at ``frame`` with the selection infer used, as a (y, x) DataArray."""
    tdim, ydim, xdim = dims
    da = _variable(hr, hr_path, var)
    missing = [d for d in dims if d not in da.dims]
    if missing:
        raise UserError(f"{hr_path}:{var} has dimensions ({', '.join(map(str, da.dims))}), not the output's ({', '.join(dims)})")
    try:
        if isel:
            da = da.isel({k: v for k, v in isel.items() if k in da.dims})
        if select:
            da = da.sel({k: v for k, v in select.items() if k in da.dims})
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(f"{hr_path}:{var}: cannot apply the selection {select or isel} stored in the SR file: {exc}") from None
    extra = [d for d in da.dims if d not in dims]
    if any(da.sizes[d] != 1 for d in extra):
        raise UserError(f"{hr_path}:{var} has extra dimensions {extra} that the SR file's selection does not choose")
    da = da.isel({d: 0 for d in extra})
    if not 0 <= frame < da.sizes[tdim]:
        raise UserError(f"--frame {frame} is out of range: {hr_path}:{var} has frames 0..{da.sizes[tdim] - 1}")
    return da.isel({tdim: frame}).transpose(ydim, xdim)


def _crop_slices(text: str, sr_path: str) -> tuple[slice, slice]:
    try:
        crop = json.loads(text)
        rows, cols = crop.get("rows"), crop.get("cols")
        return (slice(*rows) if rows else slice(None)), (slice(*cols) if cols else slice(None))
    except (ValueError, TypeError, AttributeError):
        raise UserError(f"{sr_path}: global attribute hpcvsr_input_crop is not what hpcvsr writes: {text!r}") from None


def figure(sr_path: str, hr_path: str, var: str, frame: int):
    """The matplotlib Figure (LR | SR | HR) of one frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from hpcvsr.ops import degrade as dg

    if frame < 0:
        raise UserError(f"--frame must be >= 0, got {frame}")
    sr_ds, hr_ds = _open(sr_path, "SR"), _open(hr_path, "HR")
    try:
        sr_var = _variable(sr_ds, sr_path, var)
        if sr_var.ndim != 3:
            raise UserError(f"{sr_path}:{var} has dimensions {sr_var.dims}; expected (time, y, x)")
        tdim, ydim, xdim = (str(d) for d in sr_var.dims)
        if not int(sr_ds.attrs.get("hpcvsr_degraded_input", 1)):
            raise UserError(f"{sr_path} was written without --degrade: its input was low resolution, so there is no HR to show; "
                            "make it with python -m hpcvsr.infer ... --degrade")
        scale = int(_attr(sr_ds, sr_path, "hpcvsr_scale"))
        method = str(_attr(sr_ds, sr_path, "hpcvsr_degradation"))
        if method not in dg.CENTRED:
            raise UserError(f"{sr_path}: unknown degradation '{method}' (hpcvsr knows {', '.join(dg.DEGRADATIONS)})")
        rows, cols = _crop_slices(str(_attr(sr_ds, sr_path, "hpcvsr_input_crop")), sr_path)
        border = int(sr_ds.attrs.get("hpcvsr_crop", 0))
        pipeline = str(sr_ds.attrs.get("hpcvsr_pipeline", "?"))
        n_frames = sr_var.sizes[tdim]
        if frame >= n_frames:
            raise UserError(f"--frame {frame} is out of range: {sr_path}:{var} has frames 0..{n_frames - 1}")
        select, isel = _selection(sr_ds, sr_path)
        hr = _hr_frame(hr_ds, hr_path, var, (tdim, ydim, xdim), frame, select, isel)
        sr = sr_var.isel({tdim: frame}).transpose(ydim, xdim)
        if tdim in sr.coords and tdim in hr.coords and sr[tdim].values != hr[tdim].values:
            raise UserError(f"frame {frame}: {sr_path} is at {_stamp(sr[tdim].values[()])} but {hr_path} at "
                            f"{_stamp(hr[tdim].values[()])}; is HR.nc the file SR.nc was made from?")
        when = _stamp(sr[tdim].values[()]) if tdim in sr.coords else f"frame {frame}"
        attrs = dict(hr.attrs)
        units = str(attrs.get("units", sr_var.attrs.get("units", "")))
        label = str(attrs.get("long_name", attrs.get("standard_name", var))) + (f" ({units})" if units else "")

        # LR: the HR frame cropped as infer cropped it, missing cells filled with the frame's mean (as the networks see it), degraded
        hr_crop = hr.isel({ydim: rows, xdim: cols})
        x = np.asarray(hr_crop.values, np.float64)
        valid = np.isfinite(x)
        if not valid.any():
            raise UserError(f"{hr_path}:{var} frame {frame} has no valid values")
        filled = torch.from_numpy(np.where(valid, x, x[valid].mean()))
        lr = dg.degrade(filled[None], scale, method)[0].numpy()
        lr_valid = dg.degrade(torch.from_numpy(valid.astype(np.float64))[None], scale, method)[0].numpy() >= 0.5
        lr = np.where(lr_valid, lr, np.nan)
        h, w = lr.shape
        offset = (scale - 1) / 2 if dg.CENTRED[method] else 0.0
        crop_coords = _horizontal(hr_crop, ydim, xdim)
        lr_coords = _coarse(crop_coords, ydim, xdim, np.arange(h) * scale + offset, np.arange(w) * scale + offset)

        # HR as the metrics see it: cropped like the input, less the model's border; SR on its own coordinates
        hr_view = hr_crop.isel({ydim: slice(border, hr_crop.sizes[ydim] - border), xdim: slice(border, hr_crop.sizes[xdim] - border)})
        sr_coords, hr_coords = _horizontal(sr, ydim, xdim), _horizontal(hr_view, ydim, xdim)
        panels = [(f"LR (x{scale} {method})", lr, lr_coords), (f"SR (hpcvsr {pipeline})", np.asarray(sr.values, np.float64), sr_coords),
                  ("HR (held out)", np.asarray(hr_view.values, np.float64), hr_coords)]
        values = np.concatenate([p[1][np.isfinite(p[1])] for p in panels])
        vmin, vmax = float(values.min()), float(values.max())

        geographic = all(p[2]["geographic"] for p in panels)
        fig, axes = plt.subplots(1, 3, figsize=(12.5, 5.2), sharex=True, sharey=True, constrained_layout=True)
        mesh = None
        for ax, (title, data, coords) in zip(axes, panels):
            X, Y = _mesh(coords, ydim, xdim)
            mesh = ax.pcolormesh(X, Y, np.ma.masked_invalid(data), vmin=vmin, vmax=vmax, cmap="RdYlBu_r", shading="nearest")
            ax.set_title(title)
            ax.set_xlabel("longitude (°E)" if geographic else coords["x"][0])
            if geographic:  # degrees of longitude shrink with cos(latitude): keep the map's local proportions
                ax.set_aspect(1.0 / max(np.cos(np.deg2rad(np.nanmean(np.abs(Y)))), 0.1))
        axes[0].set_ylabel("latitude (°N)" if geographic else panels[0][2]["y"][0])
        fig.colorbar(mesh, ax=list(axes), label=label, shrink=0.9)
        fig.suptitle(f"{var}, frame {frame}: {when}")
        return fig
    finally:
        sr_ds.close()
        hr_ds.close()
