"""Write a super-resolved sequence as a CF-1.8 NetCDF-4 file that describes itself like its input.

:func:`write_cf` takes the frames as a callable (read chunk by chunk, the whole array is never in
memory), the input's :meth:`hpcvsr.io.cf.CFArchive.describe` and the output's horizontal
coordinates (:func:`hpcvsr.io.cf.fine_grid`, with the fine cells' bounds where the input has
bounds). The output keeps the input's variable, dimension and coordinate names, its grid_mapping,
its attributes (units, long_name, standard_name, cell_methods ...), its global attributes, the
scalar coordinates a selection left (the chosen level), and its time coordinate exactly (raw
values and units / calendar), with the new step prepended to ``history`` (CF: newest first).
Missing values (NaN) are stored as ``_FillValue``. The file is written under a temporary name
(:mod:`hpcvsr.io.atomic`) and renamed onto ``DST`` when complete, so ``DST`` is never
half-written; a failure removes the partial file.

Packing (``pack={"dtype": "int16", "lo": lo, "hi": hi}``): codes -32766..32767 cover [lo, hi]
(scale_factor = (hi - lo) / 65533, add_offset = hi - 32767 scale_factor, so lo -> -32766 and
hi -> 32767) and -32767 is the ``_FillValue``, the scheme of ERA5's grib_to_netcdf. netCDF4
rounds to the nearest code, so a decoded value is within half a step (:func:`packing_step`) of
what was written. A value outside [lo, hi] raises ValueError: nothing is ever clipped silently.

An ensemble (``members`` M): the variable gets a ``realization`` dimension (CF's for members)
first, left of time as CF 2.4 recommends, and its mean and standard deviation over the members are written beside it as
``<var>_mean`` and ``<var>_std``, described by ``cell_methods`` ("realization: mean", ...).
"""

from __future__ import annotations

import datetime
import json

import numpy as np

from hpcvsr.io.atomic import atomic_path
from hpcvsr.io.cf import ENCODING_ATTRS

PACK_LOW, PACK_HIGH, PACK_FILL = -32766, 32767, -32767
REALIZATION = "realization"  # the members dimension and coordinate of an ensemble (CF standard_name realization)
# Attributes of the input variable that do not describe the output: storage, and references to variables not carried.
DROP_VAR_ATTRS = ENCODING_ATTRS + ("actual_range", "ancillary_variables", "cell_measures", "bounds", "grid_mapping")


def packing(lo: float, hi: float) -> tuple[float, float]:
    """(scale_factor, add_offset) mapping [lo, hi] onto int16 codes -32766..32767.

    >>> scale, offset = packing(0.0, 65533.0)
    >>> scale, offset, (0.0 - offset) / scale, (65533.0 - offset) / scale
    (1.0, 32766.0, -32766.0, 32767.0)
    """
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi) and hi >= lo):
        raise ValueError(f"packing range [{lo}, {hi}] must be finite with lo <= hi")
    scale = (hi - lo) / (PACK_HIGH - PACK_LOW) if hi > lo else 1.0
    return scale, hi - PACK_HIGH * scale


def packing_step(lo: float, hi: float) -> float:
    """The int16 packing step of [lo, hi]: decoded values are within half of it.

    >>> packing_step(0.0, 65533.0)
    1.0
    """
    return packing(lo, hi)[0]


def history_line(text: str, now: datetime.datetime | None = None) -> str:
    """One history entry "<ISO time UTC>: <text>".

    >>> history_line("hpcvsr infer x2", datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.timezone.utc))
    '2024-05-01T12:00:00Z: hpcvsr infer x2'
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return f"{now.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}: {text}"


def netcdf_attr(value):
    """A value a NetCDF attribute can hold: bools as ints, dicts (and lists of text) as JSON, ints as int32 when they fit.

    >>> netcdf_attr(True), netcdf_attr({"a": 1}), netcdf_attr([1, 2]).dtype.name
    (1, '{"a": 1}', 'int32')
    """
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value)
        if arr.dtype.kind in "biuf" and arr.size:
            return netcdf_attr(arr.astype(np.int64).tolist()) if arr.dtype.kind == "b" else _narrow(arr)
        return json.dumps([str(v) if not isinstance(v, (int, float)) else v for v in arr.tolist()])
    if isinstance(value, (int, np.integer)):
        return _narrow(np.asarray(value))[()]
    return value


def _narrow(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind in "iu" and arr.size and np.iinfo(np.int32).min <= arr.min() and arr.max() <= np.iinfo(np.int32).max:
        return arr.astype(np.int32)
    return arr


def _set_attrs(var, attrs: dict, drop: tuple = ()) -> None:
    for key, value in attrs.items():
        if key in drop or key.startswith("_") or value is None:
            continue
        var.setncattr(key, netcdf_attr(value))


def _write_globals(f, meta: dict, history: str, extra: dict | None) -> None:
    source = meta.get("global_attrs", {})
    _set_attrs(f, source, ("history", "Conventions"))
    f.setncattr("Conventions", "CF-1.8")
    old = str(source.get("history", "")).strip()
    f.setncattr("history", history_line(history) + (f"\n{old}" if old else ""))
    for key, value in (extra or {}).items():
        if value is not None:
            f.setncattr(key if key.startswith("hpcvsr_") else f"hpcvsr_{key}", netcdf_attr(value))


def _write_time(f, tdim: str, time: dict | None, n_frames: int) -> list[str]:
    """The frames coordinate: the input's time with raw values and attributes, or a frame index."""
    if time is None:
        tv = f.createVariable(tdim, "i4", (tdim,))
        tv.setncattr("long_name", "frame index")
        tv[:] = np.arange(n_frames, dtype=np.int32)
        return []
    values = np.asarray(time["values"])
    values = values.astype(values.dtype.newbyteorder("="))  # native order (a Zarr store may hold big-endian times)
    if values.shape != (n_frames,):
        raise ValueError(f"time has {values.size} values for {n_frames} frames")
    tv = f.createVariable(time["name"], values.dtype, (tdim,))
    tv.set_auto_maskandscale(False)  # raw values, attributes copied: equal to the input's bit for bit
    _set_attrs(tv, time.get("attrs", {}), ("_FillValue", "missing_value", "bounds"))
    tv[:] = values
    return [] if time["name"] == tdim else [time["name"]]


def _grid_sizes(grid: dict) -> dict:
    sizes = {}
    for name, c in grid["coords"].items():
        shape = np.shape(c["values"])
        if len(shape) != len(c["dims"]):
            raise ValueError(f"coordinate '{name}' has dims {c['dims']} but values of shape {shape}")
        for dim, n in zip(c["dims"], shape):
            if sizes.setdefault(dim, n) != n:
                raise ValueError(f"coordinate '{name}' gives '{dim}' size {n}, another coordinate {sizes[dim]}")
    return sizes


def _write_grid(f, grid: dict) -> list[str]:
    """Horizontal coordinates: 1-D ones named like their dim as dimension coordinates, the rest auxiliary;
    cell bounds (``bounds``: {"name", "dims", "values"}) as the variable the coordinate's ``bounds`` names."""
    aux = []
    for name, c in grid["coords"].items():
        dims = tuple(c["dims"])
        cv = f.createVariable(name, "f8", dims)
        _set_attrs(cv, c.get("attrs", {}), ENCODING_ATTRS + ("bounds",))
        cv[:] = np.asarray(c["values"], np.float64)
        b = c.get("bounds")
        if b is not None:
            vertex = b["dims"][-1]
            if vertex not in f.dimensions:
                f.createDimension(vertex, 2)
            f.createVariable(b["name"], "f8", (*dims, vertex))[:] = np.asarray(b["values"], np.float64)  # CF: no attributes of its own
            cv.setncattr("bounds", b["name"])
        if dims != (name,):
            aux.append(name)
    return aux


def _write_scalars(f, scalars: dict) -> list[str]:
    """Scalar coordinates (the selected level, member ...) so the output still says where it lies."""
    for name, s in scalars.items():
        value = np.asarray(s["value"])
        sv = f.createVariable(name, value.dtype, ())
        _set_attrs(sv, s.get("attrs", {}), ENCODING_ATTRS + ("bounds",))
        sv.assignValue(value)
    return list(scalars)


def _write_metrics(f, tdim: str, metrics: dict, n_frames: int) -> None:
    for name, values in metrics.items():
        values = np.asarray(values, np.float64)
        if values.shape != (n_frames,):
            raise ValueError(f"frame metric '{name}' has shape {values.shape}, expected ({n_frames},)")
        if name in f.variables:
            raise ValueError(f"frame metric '{name}' has the name of another variable")
        mv = f.createVariable(name, "f8", (tdim,))
        mv.setncattr("long_name", f"per-frame {name.replace('_', ' ')}")
        mv[:] = values


def _checked(x, a: int, b: int, shape: tuple, pack: dict | None, fill: bool) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.shape != (b - a, *shape):
        raise ValueError(f"frames({a}, {b}) gave shape {x.shape}, expected {(b - a, *shape)}")
    missing = np.isnan(x)
    if pack is not None:
        with np.errstate(invalid="ignore"):
            bad = int(np.count_nonzero((x < pack["lo"]) | (x > pack["hi"])))
        if bad:
            raise ValueError(f"{bad} values of frames {a}:{b} lie outside the packing range [{pack['lo']}, {pack['hi']}]; "
                             "widen the range (values are never clipped)")
        return np.ma.masked_array(np.where(missing, np.float32(pack["lo"]), x), mask=missing)
    if missing.any():
        if not fill:
            raise ValueError(f"frames {a}:{b} hold {int(missing.sum())} NaN values but no fill_value was given")
        return np.ma.masked_array(np.where(missing, np.float32(0), x), mask=missing)
    return x


def member_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (ddof=1) over the members of (k, M, H, W) frames, as (k, H, W)
    float32 each, summed in float64 one frame at a time; NaN where a member is NaN, and a
    standard deviation of NaN everywhere for one member.

    >>> mean, std = member_stats(np.array([[[[1.0]], [[2.0]], [[6.0]]]], np.float32))
    >>> mean.tolist(), std.tolist()
    ([[[3.0]]], [[[2.6457512378692627]]])
    """
    x = np.asarray(x, np.float32)
    mean = np.empty((x.shape[0], *x.shape[2:]), np.float32)
    std = np.full_like(mean, np.nan)
    for i, frame in enumerate(x):
        mean[i] = frame.mean(axis=0, dtype=np.float64)
        if len(frame) > 1:
            std[i] = frame.std(axis=0, ddof=1, dtype=np.float64)
    return mean, std


def member_stat_attrs(attrs: dict, stat: str) -> dict:
    """A variable's attributes for its ensemble ``stat`` ("mean" or "standard_deviation"): ``cell_methods``
    gets "realization: <stat>" and ``long_name`` says what it is.

    >>> member_stat_attrs({"units": "K", "long_name": "2 m temperature", "cell_methods": "time: point"}, "standard_deviation")
    {'units': 'K', 'long_name': 'ensemble standard deviation (ddof=1) of 2 m temperature', 'cell_methods': 'time: point realization: standard_deviation'}
    """
    base = attrs.get("long_name") or attrs.get("standard_name") or "the field"
    what = "ensemble mean" if stat == "mean" else "ensemble standard deviation (ddof=1)"
    old = str(attrs.get("cell_methods") or "").strip()
    return dict(attrs, long_name=f"{what} of {base}", cell_methods=f"{old} {REALIZATION}: {stat}".strip())


def write_cf(dst: str, *, frames, n_frames: int, meta: dict, grid: dict, var: str | list, history: str, fill_value=None,
             pack: dict | None = None, compression: bool = True, frame_metrics: dict | None = None, global_attrs: dict | None = None,
             var_attrs: list | None = None, chunk: int = 16, members: int = 0) -> None:
    """Write ``n_frames`` frames, ``frames(a, b) -> (b - a, H, W)`` float32 (NaN = missing), as a CF NetCDF-4 file.

    ``meta`` is the input's ``CFArchive.describe()`` (its time values must cover exactly these
    frames); ``grid`` the output's horizontal coordinates (``fine_grid``), whose lengths give H
    and W. The variable ``var`` gets the dims (input frames dim, ydim, xdim), chunks of one frame,
    zlib when ``compression``; ``_FillValue = fill_value`` when not None (NaN needs one).
    Several variables: ``var`` is a list of C names, ``frames(a, b)`` gives (b - a, C, H, W),
    ``fill_value`` one value or a list, and ``var_attrs`` each variable's attributes (default:
    ``meta``'s). ``frame_metrics`` {name: (n_frames,) values} become variables on the time dim;
    ``global_attrs`` are added as ``hpcvsr_<name>``. Existing ``dst`` is replaced (the caller
    checks overwriting).

    An ensemble of ``members`` M > 0 (one variable): ``frames(a, b)`` gives (b - a, M, H, W); the
    variable gets the dims (``realization``, frames dim, ydim, xdim) (CF 2.4: members left of T),
    chunks of one frame and one member, and a coordinate ``realization`` (0..M-1, standard_name
    realization, units 1); the variables
    ``<var>_mean`` and ``<var>_std`` (frames dim, ydim, xdim) hold the mean and the standard
    deviation (ddof=1) over the members (:func:`member_stats`), with the variable's attributes and
    :func:`member_stat_attrs`. Packing applies to the three, the standard deviation's on
    [0, hi - lo]; its ``_FillValue`` is the variable's, or the netCDF default (it is missing
    everywhere for one member).
    """
    import netCDF4 as nc
    if n_frames < 1:
        raise ValueError("nothing to write: n_frames < 1")
    names = [var] if isinstance(var, str) else list(var)
    fills = list(fill_value) if isinstance(fill_value, (list, tuple)) else [fill_value] * len(names)
    attrs = list(var_attrs) if var_attrs is not None else [meta.get("attrs", {})] * len(names)
    if not len(names) == len(fills) == len(attrs):
        raise ValueError(f"{len(names)} variables, {len(fills)} fill values and {len(attrs)} attribute sets")
    members = int(members)
    if members < 0 or (members and len(names) > 1):
        raise ValueError(f"members={members}: an ensemble has at least one member and one variable")
    if pack is not None:
        if str(pack.get("dtype", "int16")) != "int16":
            raise ValueError(f"only int16 packing is supported, not {pack['dtype']}")
        if len(names) > 1:
            raise ValueError("packing takes one variable")
        pack = {"lo": float(pack["lo"]), "hi": float(pack["hi"])}
        packing(pack["lo"], pack["hi"])  # a bad range is refused before any frame is read

    def read(a: int, b: int) -> np.ndarray:  # (b - a, C, H, W), or (b - a, M, H, W) for an ensemble
        x = np.asarray(frames(a, b), dtype=np.float32)
        return x if isinstance(var, list) or members else x[:, None]

    tdim, ydim, xdim = meta["dims"][0] or "time", grid["ydim"], grid["xdim"]
    first = read(0, min(chunk, n_frames))
    sizes = _grid_sizes(grid)
    shape = (sizes.get(ydim, first.shape[-2] if first.ndim == 4 else -1), sizes.get(xdim, first.shape[-1] if first.ndim == 4 else -1))
    with atomic_path(dst) as partial:
        with nc.Dataset(partial, "w", format="NETCDF4") as f:
            _write_globals(f, meta, history, global_attrs)
            f.createDimension(tdim, n_frames)
            if members:
                f.createDimension(REALIZATION, members)
            f.createDimension(ydim, shape[0])
            f.createDimension(xdim, shape[1])
            aux = _write_time(f, tdim, meta.get("time"), n_frames) + _write_grid(f, grid) + _write_scalars(f, meta.get("scalar_coords", {}))
            mapping = meta.get("grid_mapping")
            if mapping:
                _set_attrs(f.createVariable(mapping["name"], "i4", ()), mapping["attrs"])

            def frame_var(name: str, dims: tuple, fill, var_meta: dict, rng: dict | None):
                if name in f.variables:
                    raise ValueError(f"variable '{name}' has the name of a coordinate of the output")
                chunks = (1,) * (len(dims) - 2) + shape
                if rng is not None:
                    v = f.createVariable(name, "i2", dims, fill_value=np.int16(PACK_FILL), zlib=compression, complevel=4,
                                         shuffle=compression, chunksizes=chunks)
                else:
                    v = f.createVariable(name, "f4", dims, fill_value=np.float32(fill) if fill is not None else None,
                                         zlib=compression, complevel=4, shuffle=compression, chunksizes=chunks)
                _set_attrs(v, var_meta, DROP_VAR_ATTRS)
                if mapping:
                    v.setncattr("grid_mapping", mapping["name"])
                if aux:
                    v.setncattr("coordinates", " ".join(aux))
                if rng is not None:
                    scale, offset = packing(rng["lo"], rng["hi"])
                    v.setncattr("scale_factor", np.float64(scale))
                    v.setncattr("add_offset", np.float64(offset))
                return v, rng is not None or fill is not None, rng

            if members:
                if REALIZATION in f.variables:
                    raise ValueError(f"the output's members dimension '{REALIZATION}' has the name of a coordinate of the input")
                rv = f.createVariable(REALIZATION, "i4", (REALIZATION,))
                rv.setncattr("standard_name", "realization")
                rv.setncattr("long_name", "ensemble member")
                rv.setncattr("units", "1")  # the canonical units of standard_name realization
                rv[:] = np.arange(members, dtype=np.int32)
                name, fill, var_meta = names[0], fills[0], attrs[0]
                spread = None if pack is None else {"lo": 0.0, "hi": pack["hi"] - pack["lo"]}
                # members lead: CF 2.4 puts dims other than T, Z, Y, X to their left
                out = [frame_var(name, (REALIZATION, tdim, ydim, xdim), fill, var_meta, pack),
                       frame_var(f"{name}_mean", (tdim, ydim, xdim), fill, member_stat_attrs(var_meta, "mean"), pack),
                       frame_var(f"{name}_std", (tdim, ydim, xdim), fill if fill is not None else nc.default_fillvals["f4"],
                                 member_stat_attrs(var_meta, "standard_deviation"), spread)]
            else:
                out = [frame_var(name, (tdim, ydim, xdim), fill, var_meta, pack) for name, fill, var_meta in zip(names, fills, attrs)]
            _write_metrics(f, tdim, frame_metrics or {}, n_frames)
            for a in range(0, n_frames, chunk):
                b = min(n_frames, a + chunk)
                x = first if a == 0 else read(a, b)
                if members:
                    if x.shape[1:2] != (members,):
                        raise ValueError(f"frames({a}, {b}) gave {x.shape[1] if x.ndim > 1 else 0} members, expected {members}")
                    parts = [(x, (members, *shape)), *((m, shape) for m in member_stats(x))]
                else:
                    if x.shape[1] != len(names):
                        raise ValueError(f"frames({a}, {b}) gave {x.shape[1]} variables, expected {len(names)}")
                    parts = [(x[:, c], shape) for c in range(len(names))]
                for (v, has_fill, rng), (values, frame) in zip(out, parts):
                    values = _checked(values, a, b, frame, rng, has_fill)
                    if v.dimensions[0] == REALIZATION:
                        v[:, a:b] = values.swapaxes(0, 1)
                    else:
                        v[a:b] = values
