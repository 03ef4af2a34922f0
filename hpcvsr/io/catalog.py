"""What a user's input path names: one NetCDF file, a Zarr store, or many files read as one archive.

``data.path``, ``data.test_path``, ``data.lr_path`` and ``infer --input`` take a file, a ``.zarr``
store, a glob (``'frames/*.nc'``), a folder (its NetCDF files) or a list of those. Many files are
one archive: opened lazily (dask), ordered by their CF time, including files of one frame whose time
is a scalar coordinate or a scalar variable with ``standard_name: time``. Before anything is read
every file is checked against the first: the same variables on the same grid; a duplicate time, or
a gap in a regular series (unless allowed), is one error naming the file.

The combined dataset keeps the first file's time units and calendar, so it reads like one file.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re

import numpy as np

from hpcvsr.errors import UserError

NETCDF_EXTENSIONS = (".nc", ".nc4", ".cdf", ".netcdf")
_TIME_UNITS = re.compile(r"^\s*[a-zA-Z]+\s+since\s+\S")
_TIME_NAMES = ("time", "valid_time", "t")
GAP_FACTOR = 1.5  # a step longer than this many times the typical one is a gap (monthly steps of 28-31 days are not)
_TIME_WORDS = ("days", "day", "d", "hours", "hour", "hr", "h", "minutes", "minute", "min", "seconds", "second", "sec", "s")
_ORIGIN_ATTRS = ("origin", "time_origin", "reference_date", "reference_time", "base_date", "epoch")


@dataclasses.dataclass(frozen=True)
class Opening:
    """How the files of an input are read: ``data.allow_gaps`` / ``data.time_origin`` (``infer --allow-gaps`` / ``--time-origin``)."""

    allow_gaps: bool = False  # many files as one archive: accept a gap in a regular time series
    time_origin: str = ""  # the origin of time units that have none: '<units> since <time_origin>'


PLAIN = Opening()  # no gaps allowed, time units as they are


def is_time_units(units) -> bool:
    """True for CF time units "<unit> since <date>".

    >>> is_time_units("hours since 1900-01-01 00:00:00.0"), is_time_units("K")
    (True, False)
    """
    return isinstance(units, str) and bool(_TIME_UNITS.match(units))


def is_zarr(path: str) -> bool:
    """A Zarr store: a folder named ``*.zarr`` or holding Zarr metadata."""
    return os.path.isdir(path) and (path.rstrip("/").endswith(".zarr")
                                    or any(os.path.exists(os.path.join(path, m)) for m in (".zgroup", ".zattrs", "zarr.json")))


def split(path) -> list[str]:
    """The entries of ``path``: each item of a list, or the one string."""
    return [str(p) for p in path] if isinstance(path, (list, tuple)) else [str(path)]


def expand(path) -> list[str]:
    """The files (or one store) that ``path`` names, in name order; a UserError when it names none."""
    out: list[str] = []
    for entry in split(path):
        if any(c in entry for c in "*?["):
            found = sorted(p for p in glob.glob(entry) if os.path.isfile(p) or is_zarr(p))
            if not found:
                raise UserError(f"no file matches {entry}")
            out += found
        elif is_zarr(entry) or os.path.isfile(entry):
            out.append(entry)
        elif os.path.isdir(entry):
            found = sorted(os.path.join(entry, f) for f in os.listdir(entry) if f.lower().endswith(NETCDF_EXTENSIONS))
            if not found:
                raise UserError(f"{entry}: a folder without NetCDF files ({', '.join(NETCDF_EXTENSIONS)})")
            out += found
        else:
            raise UserError(f"file not found: {entry}")
    if len(set(out)) != len(out):
        raise UserError(f"{path}: names a file twice")
    return out


def label(path) -> str:
    """How messages name ``path``."""
    entries = split(path)
    return entries[0] if len(entries) == 1 else f"{entries[0]} (+{len(entries) - 1} more)"


def open_dataset(path, raw: bool = False, *, opening: Opening = PLAIN):
    """``path`` as one lazy ``xarray.Dataset`` without time decoding (CF decoding of values unless ``raw``)."""
    files = expand(path)
    if len(files) == 1:
        return _open_one(files[0], raw, opening)
    return _combined(tuple(files), raw, opening)


def _open_one(path: str, raw: bool, opening: Opening, chunks=None):
    import xarray as xr
    kw = dict(decode_times=False, decode_timedelta=False, mask_and_scale=not raw)
    try:
        if is_zarr(path):
            ds = xr.open_zarr(path, consolidated=None, chunks={} if chunks is None else chunks, **kw)
        else:
            ds = xr.open_dataset(path, engine="netcdf4", cache=False, chunks=chunks, **kw)
    except Exception as exc:  # any failure to open a user's file is the user's to fix
        raise UserError(f"cannot open {path} as {'Zarr' if is_zarr(path) else 'NetCDF'}: {exc}") from None
    return _with_origin(ds, path, opening.time_origin)


def _looks_like_time(name: str, attrs: dict) -> bool:
    return name.lower() in _TIME_NAMES or attrs.get("standard_name") == "time" or str(attrs.get("axis", "")).upper() == "T"


def _with_origin(ds, path: str, origin: str):
    """Time units without an origin ('days') completed with ``origin``; without one, a UserError (never a silent frame index)."""
    for name, v in ds.variables.items():
        units = v.attrs.get("units")
        if v.ndim > 1 or not isinstance(units, str) or is_time_units(units) or units.strip().lower() not in _TIME_WORDS:
            continue
        if not _looks_like_time(str(name), v.attrs):
            continue
        if not origin:
            hint = next((f"; its attribute '{a}' says {v.attrs[a]!r}" for a in _ORIGIN_ATTRS if a in v.attrs), "")
            raise UserError(f"{path}: time '{name}' has units '{units}' without an origin ('{units} since <date>'){hint}; give the "
                            "origin with data.time_origin (hpcvsr infer --time-origin), e.g. data.time_origin: '2000-01-01'")
        v.attrs["units"] = f"{units.strip()} since {origin}"
    return ds


def _time_name(ds) -> str | None:
    """The time variable of one file: a coordinate or scalar variable with CF time units, by standard name or name."""
    cands = [str(n) for n, v in ds.variables.items() if is_time_units(v.attrs.get("units")) and v.ndim <= 1]
    for n in cands:
        if ds[n].attrs.get("standard_name") == "time" or n in _TIME_NAMES:
            return n
    return cands[0] if cands else None


def _dates(ds, name: str, where: str):
    import cftime
    v = ds[name]
    calendar = str(v.attrs.get("calendar", "standard"))
    try:
        return np.atleast_1d(cftime.num2date(np.asarray(v.values), str(v.attrs["units"]), calendar=calendar,
                                             only_use_cftime_datetimes=True))
    except Exception as exc:
        raise UserError(f"{where}: cannot decode its time '{name}' ({v.attrs.get('units')}, calendar {calendar}): {exc}") from None


def _layout(ds, tname: str) -> dict:
    """What must agree between files: the variables with their non-time dims and sizes, and the other 1-D coordinates."""
    tdims = set(ds[tname].dims)
    layout = {}
    for n, v in ds.data_vars.items():
        if v.ndim == 0:
            continue
        layout[str(n)] = tuple((str(d), int(v.sizes[d])) for d in v.dims if d not in tdims)
    return layout


def _coords(ds, tname: str) -> dict:
    return {str(n): np.asarray(c.values) for n, c in ds.coords.items()
            if c.ndim >= 1 and n != tname and tname not in c.dims and not set(c.dims) & set(ds[tname].dims)}


def _frames(ds, tname: str):
    """``ds`` with a time dimension named after its time variable (a file of one frame with a scalar time gets one)."""
    v = ds[tname]
    if v.ndim == 1:
        return ds if v.dims == (tname,) else ds.swap_dims({v.dims[0]: tname})
    ds = ds.set_coords(tname) if tname in ds.data_vars else ds
    frames = [str(n) for n, x in ds.data_vars.items() if x.ndim >= 2]
    return ds.assign({n: ds[n].expand_dims(tname) for n in frames}).assign_coords({tname: ds[tname].expand_dims(tname)})


def _differs(a: dict, b: dict) -> str:
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            return f"variable '{k}' is only in {'the first' if k in a else 'this'} file"
        if a[k] != b[k]:
            return f"variable '{k}' has dims {dict(b[k])}, the first file {dict(a[k])}"
    return ""


def _combined(files: tuple, raw: bool, opening: Opening):
    """The files as one dataset along their time, each checked against the first."""
    import cftime
    import xarray as xr
    parts, keys = [], []
    ref = None
    for f in files:
        ds = _open_one(f, raw, opening, chunks={})
        tname = _time_name(ds)
        if tname is None:
            raise UserError(f"{f}: no CF time (a coordinate or scalar variable with units '<unit> since <date>'); the files of one "
                            "archive are ordered by their time")
        dates = _dates(ds, tname, f)
        ds = _frames(ds, tname)
        layout, coords = _layout(ds, tname), _coords(ds, tname)
        if ref is None:
            ref = dict(file=f, tname=tname, layout=layout, coords=coords, units=str(ds[tname].attrs["units"]),
                       calendar=str(ds[tname].attrs.get("calendar", "standard")), attrs=dict(ds[tname].attrs), dtype=ds[tname].dtype)
        else:
            why = (f"its time is '{tname}', the first file's '{ref['tname']}'" if tname != ref["tname"]
                   else _differs(ref["layout"], layout) or _coord_mismatch(ref["coords"], coords))
            if why:
                raise UserError(f"{f}: not the same archive as {ref['file']}: {why}")
        keys += [(d, f) for d in dates]
        parts.append((dates, ds))
    _check_series(keys, opening.allow_gaps)
    order = sorted(range(len(parts)), key=lambda i: parts[i][0][0])
    units, calendar = ref["units"], ref["calendar"]
    out = []
    for i in order:
        dates, ds = parts[i]
        values = np.asarray(cftime.date2num(list(dates), units, calendar=calendar)).astype(ref["dtype"])  # the first file's type
        out.append(ds.assign_coords({ref["tname"]: (ref["tname"], values, ref["attrs"])}))
    combined = xr.concat(out, dim=ref["tname"], data_vars="minimal", coords="minimal", compat="override", join="override",
                         combine_attrs="override")
    return combined.sortby(ref["tname"]) if any(np.diff(combined[ref["tname"]].values) < 0) else combined


def _coord_mismatch(a: dict, b: dict) -> str:
    for k in sorted(set(a) | set(b)):
        if k not in a or k not in b:
            return f"coordinate '{k}' is only in {'the first' if k in a else 'this'} file"
        x, y = a[k], b[k]
        if x.shape != y.shape:
            return f"coordinate '{k}' has {y.shape} values, the first file {x.shape}: another grid"
        same = np.array_equal(x, y) if not np.issubdtype(x.dtype, np.number) else np.allclose(x, y, rtol=1e-6, atol=0, equal_nan=True)
        if not same:
            return f"coordinate '{k}' differs from the first file's: another grid"
    return ""


def _check_series(keys: list, allow_gaps: bool) -> None:
    """No time twice; no gap in a regular series (a step over GAP_FACTOR x the median step) unless allowed."""
    keys = sorted(keys, key=lambda k: k[0])
    for (a, fa), (b, fb) in zip(keys, keys[1:]):
        if a == b:
            raise UserError(f"{fb}: time {b} is also in {fa}; every frame of an archive must have its own time")
    if len(keys) < 3:
        return
    steps = np.array([(b[0] - a[0]).total_seconds() for a, b in zip(keys, keys[1:])])
    typical = float(np.median(steps))
    worst = int(np.argmax(steps))
    if steps[worst] > GAP_FACTOR * typical and not allow_gaps:
        raise UserError(f"{keys[worst + 1][1]}: a gap in the time series before it ({keys[worst][0]} to {keys[worst + 1][0]}, where the "
                        f"step is {typical / 3600:g} h); add the missing frames, or allow gaps (data.allow_gaps: true, infer "
                        "--allow-gaps)")


def open_archive(path, *, allow_gaps: bool = False, time_origin: str = ""):
    """``path`` (a file, a Zarr store, a glob, a folder or a list) as one lazy, CF-decoded ``xarray.Dataset``
    in time order, checked as the commands check it: what ``sr(...)`` of the Python API takes."""
    import xarray as xr
    ds = open_dataset(path, opening=Opening(allow_gaps=allow_gaps, time_origin=time_origin))
    return xr.decode_cf(ds, mask_and_scale=False, decode_timedelta=False)
