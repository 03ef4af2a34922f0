"""Lazy frame access to one variable of a CF NetCDF file (NetCDF-3 or NetCDF-4), through xarray.

:class:`CFArchive` mirrors :class:`hpcvsr.io.sequences.Archive`: ``len(archive)`` frames,
``archive.read(a, b)`` reads frames a..b-1 only (xarray's lazy indexing, ``cache=False``). xarray
does all CF decoding (scale_factor / add_offset, _FillValue / missing_value -> NaN); the only
thing added here is masking values outside valid_min / valid_max / valid_range, which xarray
leaves alone, compared against the stored values as the netCDF library does.

The time, y and x dimensions are found from CF metadata (``axis``, ``standard_name``, time
``units`` "<unit> since <date>", lat/lon ``units``), then from common names, then by position.
Other dimensions (a pressure level, an ensemble member) are chosen with ``select`` (by
coordinate value) or ``isel`` (by index); one of size 1 is dropped and noted in ``notes``.

:func:`fine_coordinate` / :func:`fine_grid` give the horizontal coordinates of the
super-resolved grid and its cell bounds, so the writer (:mod:`hpcvsr.io.ncout`) can describe it;
:func:`periodic_x` tells a global longitude, which inference wraps around (docs/grids.md).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from hpcvsr.errors import UserError
from hpcvsr.io import catalog
from hpcvsr.io.catalog import is_time_units  # one owner of what CF time units are

# Attributes that describe storage, not meaning: xarray applies them when decoding, writers set their own.
ENCODING_ATTRS = ("_FillValue", "missing_value", "scale_factor", "add_offset", "_Unsigned", "valid_range", "valid_min",
                  "valid_max", "coordinates", "dtype", "_ChunkSizes")
_STANDARD_NAMES = {"time": "T", "latitude": "Y", "projection_y_coordinate": "Y", "grid_latitude": "Y",
                   "longitude": "X", "projection_x_coordinate": "X", "grid_longitude": "X"}
_NAMES = {"T": ("time", "t", "valid_time"), "Y": ("lat", "latitude", "y", "rlat", "nlat", "j"),
          "X": ("lon", "longitude", "x", "rlon", "nlon", "i")}
_LAT_UNITS = ("degrees_north", "degree_north", "degree_n", "degrees_n", "degreen", "degreesn")
_LON_UNITS = ("degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese")


def plain(value):
    """An attribute value as plain Python: str (never bytes), int, float or a list of them.

    >>> plain(b"K"), plain(np.float32(0.5)), plain(np.array([1, 2], np.int16))
    ('K', 0.5, [1, 2])
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return plain(value.item()) if value.ndim == 0 else [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def plain_attrs(attrs: dict, drop: tuple = ()) -> dict:
    """Attributes as plain Python values, without the keys in ``drop``."""
    return {str(k): plain(v) for k, v in attrs.items() if k not in drop}


def axis_evidence(name: str, attrs: dict) -> tuple[str, int] | None:
    """(axis, strength) a coordinate's metadata gives, strength 0 (``axis``) .. 3 (its name only).

    Axis is "T", "Y", "X" or "Z" (a vertical coordinate, never taken for time, y or x).

    >>> axis_evidence("rlat", {"standard_name": "grid_latitude"}), axis_evidence("lev", {"positive": "down"})
    (('Y', 1), ('Z', 0))
    >>> axis_evidence("valid_time", {}), axis_evidence("level", {})
    (('T', 3), None)
    """
    axis = str(plain(attrs.get("axis", ""))).upper()
    if axis in ("T", "Y", "X", "Z"):
        return axis, 0
    if "positive" in attrs:
        return "Z", 0
    standard = _STANDARD_NAMES.get(str(plain(attrs.get("standard_name", ""))))
    if standard:
        return standard, 1
    units = plain(attrs.get("units", ""))
    if is_time_units(units):
        return "T", 2
    if isinstance(units, str) and units.lower() in _LAT_UNITS:
        return "Y", 2
    if isinstance(units, str) and units.lower() in _LON_UNITS:
        return "X", 2
    for ax, names in _NAMES.items():
        if name.lower() in names:
            return ax, 3
    return None


def coordinate_kind(name: str, attrs: dict) -> str | None:
    """'lat', 'lon' or None for a coordinate, from its standard_name, units or name.

    >>> coordinate_kind("nav_lat", {}), coordinate_kind("x", {"units": "degrees_east"}), coordinate_kind("level", {})
    ('lat', 'lon', None)
    """
    std, units = str(plain(attrs.get("standard_name", ""))).lower(), str(plain(attrs.get("units", ""))).lower()
    if std in ("latitude", "grid_latitude") or units in _LAT_UNITS or name.lower() in ("lat", "latitude", "nav_lat"):
        return "lat"
    if std in ("longitude", "grid_longitude") or units in _LON_UNITS or name.lower() in ("lon", "longitude", "nav_lon"):
        return "lon"
    return None


def periodic_longitude(name: str, values, attrs: dict) -> bool:
    """Whether a 1-D coordinate is a longitude going once around the globe: evenly spaced in degrees
    (east, or plain degrees of a longitude standard_name), its spacing times its length 360 within
    1e-3 of a cell, wherever its seam lies (0..360, -180..180, 90..450, or wrapped within the file).

    >>> east = {"units": "degrees_east"}
    >>> periodic_longitude("lon", np.arange(64) * 5.625, east), periodic_longitude("lon", np.arange(-180, 180, 5.625), east)
    (True, True)
    >>> periodic_longitude("lon", np.arange(40) * 0.25 - 10, east), periodic_longitude("x", np.arange(64) * 5.625, {"units": "km"})
    (False, False)
    """
    v = np.asarray(values, np.float64)
    if v.ndim != 1 or v.size < 3 or not np.all(np.isfinite(v)) or coordinate_kind(name, attrs) != "lon":
        return False
    units, std = (str(plain(attrs.get(k, ""))).lower() for k in ("units", "standard_name"))
    if units not in _LON_UNITS and not (units in ("degree", "degrees") and std in ("longitude", "grid_longitude")):
        return False
    d = np.diff(np.unwrap(v, period=360.0))
    step = float(d.mean())
    # evenness to 1e-2 of a cell: float32 coordinates of fine grids are rounded by more than 1e-3 of a cell
    return bool(step != 0 and np.all(np.abs(d - step) <= 1e-2 * abs(step)) and abs(abs(step) * v.size - 360.0) <= 1e-3 * abs(step))


def periodic_x(grid: dict) -> bool:
    """Whether a grid description (:meth:`CFArchive.grid`, or the same dict of a DataArray's coordinates)
    wraps around in x: its 1-D coordinate along the x dimension is a :func:`periodic_longitude`."""
    return any(c["dims"] == [grid["xdim"]] and periodic_longitude(name, c["values"], c["attrs"]) for name, c in grid["coords"].items())


def _open(path, raw: bool = False, opening: catalog.Opening = catalog.PLAIN):
    """A file, a Zarr store or many files as one lazy dataset (:mod:`hpcvsr.io.catalog`)."""
    return catalog.open_dataset(path, raw, opening=opening)


def _values_text(values, limit: int = 6) -> str:
    values = [plain(v) for v in np.asarray(values).ravel()[: limit + 1]]
    text = ", ".join(str(v) for v in values[:limit])
    return text + (", ..." if len(values) > limit else "")


STATIC_DIM = "hpcvsr_static_frame"  # the one frame a static (y, x) field is read as


class CFArchive:
    """Lazy frame access to one variable of a CF NetCDF file: frames (T, H, W) in (time, y, x) order.

    ``select`` picks extra dimensions by coordinate value (``{"level": 500}``), ``isel`` by index
    (``{"member": 0}``). The file is opened in ``__init__`` to read the metadata, closed, and opened
    again on first read (after a DataLoader fork); an archive pickles without its open file.
    """

    def __init__(self, path: str, var: str, *, select: dict | None = None, isel: dict | None = None, log: list | None = None,
                 opening: catalog.Opening = catalog.PLAIN):
        catalog.expand(path)  # a UserError naming what is missing
        self.path, self.var, self.log, self.notes, self.opening = path, var, log, [], opening
        self._ds = self._raw = None
        ds = _open(path, opening=opening)
        try:
            if var not in ds.data_vars:
                have = ", ".join(sorted(str(k) for k in ds.data_vars)) or "none"
                raise UserError(f"{path}: no variable '{var}' (has: {have})")
            da = ds[var]
            self._index = self._selection(da, select or {}, isel or {})
            da = da.isel(self._index)
            # a field without frames (orography, land-sea mask) is read as one frame; a selection that took away
            # the time axis of a sequence is not one
            took_time = any((axis_evidence(str(d), ds[d].attrs if d in ds.coords else {}) or ("",))[0] == "T" for d in self._index)
            self.static = da.ndim == 2 and not took_time
            if self.static:
                da = da.expand_dims(STATIC_DIM)
            tdim, ydim, xdim = self._find_dims(da)
            self.dims = (tdim, ydim, xdim)
            self.shape = tuple(int(da.sizes[d]) for d in self.dims)
            self.time, self.cf_time = self._find_time(da, tdim)
            self.attrs = plain_attrs(da.attrs, ENCODING_ATTRS)
            self.global_attrs = plain_attrs(ds.attrs)
            units = self.attrs.get("units", "")
            self.units = units if isinstance(units, str) else str(units)
            enc, raw_attrs = dict(da.encoding), dict(ds.variables[var].attrs)
            self.dtype = str(np.dtype(enc.get("dtype", da.dtype)))
            self._valid = self._valid_bounds(raw_attrs)
            scaled = "scale_factor" in enc or "add_offset" in enc
            self.packed = bool(scaled and np.issubdtype(np.dtype(self.dtype), np.integer))
            self.packing_step = float(abs(plain(enc.get("scale_factor", 0.0)))) if self.packed else 0.0
            self.valid_bounds = self._valid  # the valid range in physical units: decoded like the values of a packed variable
            if self._valid is not None and scaled:
                k, b = float(plain(enc.get("scale_factor", 1.0))), float(plain(enc.get("add_offset", 0.0)))
                self.valid_bounds = tuple(sorted(v * k + b for v in self._valid))
            self._raw_needed = self._valid is not None and scaled
            fill = enc.get("_FillValue", enc.get("missing_value"))
            self.missing_possible = fill is not None or self._valid is not None
            self.fill_value = self._decoded_fill(fill)
            mapping = self.attrs.get("grid_mapping")
            self.grid_mapping = ({"name": mapping, "attrs": plain_attrs(ds[mapping].attrs)}
                                 if isinstance(mapping, str) and mapping in ds.variables else None)
        finally:
            ds.close()

    # -- metadata -------------------------------------------------------------------------------------

    def _selection(self, da, select: dict, isel: dict) -> dict:
        """{dim: integer index} for the user's selections, each checked against the variable."""
        index = {}
        for how, chosen in (("isel", isel), ("select", select)):
            for dim, value in chosen.items():
                if dim not in da.dims:
                    have = ", ".join(map(str, da.dims))
                    raise UserError(f"{self.path}:{self.var}: cannot {how} '{dim}': the variable's dimensions are {have}")
                if how == "isel":
                    n = int(da.sizes[dim])
                    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                        value = int(value)
                    if not isinstance(value, (int, np.integer)) or not -n <= int(value) < n:
                        raise UserError(f"{self.path}:{self.var}: isel {dim}={value!r} is not an index in 0..{n - 1}")
                    index[dim] = int(value) % n
                else:
                    index[dim] = self._locate(da, dim, value)
        return index

    def _locate(self, da, dim: str, value) -> int:
        """Index of the exact coordinate ``value`` along ``dim`` (a numeric string is taken as a number)."""
        if dim not in da.coords:
            raise UserError(f"{self.path}:{self.var}: dimension '{dim}' has no coordinate values to select from; "
                            f"select it by index instead (--isel {dim}=0)")
        values = np.asarray(da[dim].values)
        if isinstance(value, str) and np.issubdtype(values.dtype, np.number):
            with contextlib.suppress(ValueError):  # a number given as text
                value = float(value)
        hits = np.flatnonzero(values == value)
        if len(hits) != 1:
            raise UserError(f"{self.path}:{self.var}: {dim}={value!r} is not one of the {len(values)} values of '{dim}' "
                            f"({_values_text(values, 10)})")
        return int(hits[0])

    def _find_dims(self, da) -> tuple[str, str, str]:
        """(time-or-frames dim, y dim, x dim) of the selected variable; drops extra dims of size 1."""
        if da.ndim < 3:
            raise UserError(f"{self.path}:{self.var} has dimensions ({', '.join(map(str, da.dims))}) after selection; "
                            "frames need three: time (or frames), y and x; a static field two: y and x")
        evidence = {}
        for dim in map(str, da.dims):
            if dim == STATIC_DIM:
                evidence[dim] = ("T", 0)
                continue
            found = [axis_evidence(str(n), c.attrs) for n, c in da.coords.items() if c.dims == (dim,)]
            found = [e for e in found + [axis_evidence(dim, {})] if e is not None]
            evidence[dim] = min(found, key=lambda e: e[1]) if found else None
        axes = {}
        for ax in ("T", "Y", "X"):
            cands = [(e[1], d) for d, e in evidence.items() if e is not None and e[0] == ax]
            if cands:
                best = min(cands)[0]
                tied = [d for s, d in cands if s == best]
                if len(tied) > 1:
                    raise UserError(f"{self.path}:{self.var}: dimensions {', '.join(tied)} all look like axis {ax}; "
                                    "give the file CF 'axis' attributes or select all but one")
                axes[ax] = tied[0]
        rest = [d for d in map(str, da.dims) if d not in axes.values()]
        missing = [ax for ax in ("T", "Y", "X") if ax not in axes]
        while len(rest) > len(missing) and any(da.sizes[d] == 1 for d in rest):
            drop = next(d for d in rest if da.sizes[d] == 1)
            rest.remove(drop)
        if missing and len(rest) == len(missing):
            for ax, dim in zip(missing, rest):
                axes[ax] = dim
                self.notes.append(f"{self.path}:{self.var}: dimension '{dim}' taken as {'frames' if ax == 'T' else ax} by position")
        elif missing:
            raise UserError(f"{self.path}:{self.var}: cannot tell the time, y and x dimensions apart among "
                            f"{', '.join(f'{d} ({da.sizes[d]})' for d in map(str, da.dims))}; "
                            "give the coordinates CF 'axis' attributes, or select the extra dimensions")
        extra = [d for d in map(str, da.dims) if d not in axes.values()]
        big = [d for d in extra if da.sizes[d] > 1]
        if big:
            raise UserError(self._extra_dims_message(da, big))
        for dim in extra:
            value = f" = {_values_text(da[dim].values)}" if dim in da.coords else ""
            self.notes.append(f"{self.path}:{self.var}: dropped dimension '{dim}' of size 1{value}")
            self._index[dim] = 0
        return axes["T"], axes["Y"], axes["X"]

    def _extra_dims_message(self, da, dims: list) -> str:
        parts, sel, isel = [], [], []
        for dim in dims:
            if dim in da.coords:
                vals = np.asarray(da[dim].values)
                parts.append(f"'{dim}' (size {vals.size}: {_values_text(vals)})")
                sel.append(f"{dim}={plain(vals[0])}")
            else:
                parts.append(f"'{dim}' (size {da.sizes[dim]}, no coordinate values)")
            isel.append(f"{dim}=0")
        example = ", ".join(s.replace("=", ": ") for s in sel)
        how = (f"choose one with data.select: {{{example}}} in the config or --select {' '.join(sel)} / --isel {' '.join(isel)} "
               f"on the command line" if sel else f"choose one with --isel {' '.join(isel)} on the command line (data.isel in the config)")
        noun = "dimension" if len(dims) == 1 else "dimensions"
        return f"{self.path}:{self.var} has the extra {noun} {', '.join(parts)} besides time, y and x; {how}"

    @staticmethod
    def _find_time(da, tdim: str) -> tuple[str | None, bool]:
        """(name of the frames dim's coordinate, whether it is a CF time) — a CF time preferred."""
        cands = [str(n) for n, c in da.coords.items() if c.dims == (tdim,)]
        for name in cands:
            if is_time_units(plain(da[name].attrs.get("units"))):
                return name, True
        return (tdim, False) if tdim in cands else (None, False)

    @staticmethod
    def _valid_bounds(attrs: dict) -> tuple[float, float] | None:
        """(lo, hi) from valid_range / valid_min / valid_max in stored units, or None."""
        lo, hi = -np.inf, np.inf
        if "valid_range" in attrs:
            lo, hi = (float(v) for v in np.asarray(attrs["valid_range"]).ravel()[:2])
        lo = float(np.asarray(attrs["valid_min"]).ravel()[0]) if "valid_min" in attrs else lo
        hi = float(np.asarray(attrs["valid_max"]).ravel()[0]) if "valid_max" in attrs else hi
        return None if (lo, hi) == (-np.inf, np.inf) else (lo, hi)

    def _decoded_fill(self, fill) -> float | None:
        """The fill value meaning "missing" in decoded (float) data; None when nothing can be missing.

        A float variable's own _FillValue (or missing_value); for integer storage, whose fill is a
        stored code with no decoded value, the netCDF default float32 fill (9.96921e36).
        """
        if not self.missing_possible:
            return None
        if fill is not None and np.issubdtype(np.dtype(self.dtype), np.floating):
            return float(np.asarray(fill).ravel()[0])
        return 9.969209968386869e36

    # -- data -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.shape[0]

    def _array(self, raw: bool = False):
        """The selected variable, lazily indexed (the file opened on first use)."""
        if raw:
            if self._raw is None:
                self._raw = _open(self.path, raw=True, opening=self.opening)
            da = self._raw[self.var].isel(self._index)
        else:
            if self._ds is None:
                self._ds = _open(self.path, opening=self.opening)
            da = self._ds[self.var].isel(self._index)
        return da.expand_dims(STATIC_DIM) if self.static else da

    def _crop(self, start: int, stop: int, rows: slice | None, cols: slice | None) -> dict:
        if not 0 <= start <= stop <= len(self):
            raise UserError(f"{self.path}:{self.var}: frames {start}:{stop} outside 0:{len(self)}")
        t, y, x = self.dims
        return {t: slice(start, stop), y: rows if rows is not None else slice(None), x: cols if cols is not None else slice(None)}

    def read(self, start: int, stop: int, rows: slice | None = None, cols: slice | None = None) -> np.ndarray:
        """Frames [start, stop) as float32 (T, H, W), NaN where missing; only those frames are read."""
        crop = self._crop(start, stop, rows, cols)
        if self.log is not None:
            self.log.append({"file": self.path, "var": self.var, "start": start, "stop": stop})
        out = np.asarray(self._array().isel(crop).transpose(*self.dims).values, dtype=np.float32)
        if self._valid is not None:
            lo, hi = self._valid
            stored = self._array(raw=True).isel(crop).transpose(*self.dims).values if self._raw_needed else out
            with np.errstate(invalid="ignore"):
                out[(stored < lo) | (stored > hi)] = np.nan
        return out

    # -- time -------------------------------------------------------------------------------------------

    def time_values(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The time coordinate's values for frames [start, stop) exactly as stored (dtype kept)."""
        if self.time is None:
            raise UserError(f"{self.path}:{self.var} has no time coordinate")
        stop = len(self) if stop is None else stop
        self._crop(start, stop, None, None)
        return np.asarray(self._array(raw=True)[self.time].isel({self.dims[0]: slice(start, stop)}).values)

    @property
    def time_attrs(self) -> dict:
        """All attributes of the time coordinate (units, calendar, ...) except fill values and bounds."""
        if self.time is None:
            return {}
        return plain_attrs(self._array(raw=True)[self.time].attrs, ("_FillValue", "missing_value", "bounds"))

    def dates(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """cftime datetimes of frames [start, stop) in the file's calendar."""
        import cftime
        if not self.cf_time:
            raise UserError(f"{self.path}:{self.var} has no CF time coordinate; time features need one")
        stop = len(self) if stop is None else stop
        self._crop(start, stop, None, None)
        coord = self._array()[self.time]
        values = np.asarray(coord.isel({self.dims[0]: slice(start, stop)}).values)
        calendar = str(plain(coord.attrs.get("calendar", "standard")))
        units = str(plain(coord.attrs["units"]))
        return np.asarray(cftime.num2date(values, units, calendar=calendar, only_use_cftime_datetimes=True)).ravel()

    def time_features(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """(n, 4) float32: sin, cos of the hour of day and of the fraction of the year, in any CF calendar."""
        return time_features(self.dates(start, stop))

    # -- grid -------------------------------------------------------------------------------------------

    def grid(self, rows: slice | None = None, cols: slice | None = None) -> dict:
        """The horizontal coordinates after cropping, as plain data (see the module doc of ncout)."""
        _, ydim, xdim = self.dims
        crop = {ydim: rows if rows is not None else slice(None), xdim: cols if cols is not None else slice(None)}
        coords = {}
        for name, c in self._array().coords.items():
            if not c.dims or not set(c.dims) <= {ydim, xdim} or not np.issubdtype(c.dtype, np.number):
                continue
            bounds = self._bounds(c, crop) if c.dims in ((ydim,), (xdim,)) else None
            c = c.isel({d: s for d, s in crop.items() if d in c.dims})
            coords[str(name)] = {"dims": [str(d) for d in c.dims], "values": np.asarray(c.values, np.float64),
                                 "attrs": plain_attrs(c.attrs, ENCODING_ATTRS + ("bounds",))}
            if bounds is not None:
                coords[str(name)]["bounds"] = bounds
        return {"ydim": ydim, "xdim": xdim, "coords": coords}

    def _bounds(self, c, crop: dict) -> dict | None:
        """The cell bounds of a 1-D coordinate ``c`` after ``crop``: {"name", "dims", "values" (n, 2)}, or None
        when its ``bounds`` attribute names no (n, 2) variable of the file."""
        name = c.attrs.get("bounds", c.encoding.get("bounds"))
        ds, (dim,) = self._ds, c.dims
        if not isinstance(name, str) or ds is None or name not in ds.variables or dim not in ds[name].dims or ds[name].ndim < 2:
            return None
        b = ds[name]
        vertex = b.dims[-1]  # CF: the vertex dimension is the last; another (time, when many files are read as one) is not the cells'
        b = b.isel({d: 0 for d in b.dims if d not in (dim, vertex)}).isel({dim: crop[dim]}).transpose(dim, vertex)
        if b.shape[1] != 2 or not np.issubdtype(b.dtype, np.number):
            return None
        return {"name": str(name), "dims": [str(dim), str(vertex)], "values": np.asarray(b.values, np.float64)}

    @property
    def periodic_x(self) -> bool:
        """Whether the whole grid wraps around in x (a global longitude: :func:`periodic_x`); a crop of
        its columns does not: ask ``periodic_x(archive.grid(rows, cols))``."""
        return periodic_x(self.grid())

    def scalar_coords(self) -> dict:
        """Scalar coordinates left by the selection (the chosen level, member ...): {name: {"value", "attrs"}}."""
        out = {}
        for name, c in self._array().coords.items():
            if not c.dims and np.issubdtype(c.dtype, np.number):
                out[str(name)] = {"value": np.asarray(c.values)[()], "attrs": plain_attrs(c.attrs, ENCODING_ATTRS + ("bounds",))}
        return out

    def describe(self, rows: slice | None = None, cols: slice | None = None, start: int = 0, stop: int | None = None) -> dict:
        """Everything a writer needs to describe an output like this input, as plain data."""
        stop = len(self) if stop is None else stop
        self._crop(start, stop, rows, cols)
        time = None
        if self.time is not None:
            time = {"name": self.time, "values": self.time_values(start, stop), "attrs": self.time_attrs, "cf": self.cf_time}
        grid = self.grid(rows, cols)
        return {"path": self.path, "var": self.var, "dims": list(self.dims), "units": self.units, "attrs": dict(self.attrs),
                "global_attrs": dict(self.global_attrs), "time": time, "grid": grid, "grid_mapping": self.grid_mapping, "periodic_x": periodic_x(grid),
                "scalar_coords": self.scalar_coords(),
                "fill_value": self.fill_value, "missing_possible": self.missing_possible, "packed": self.packed,
                "packing_step": self.packing_step, "dtype": self.dtype, "notes": list(self.notes)}

    # -- life cycle -------------------------------------------------------------------------------------

    def close(self) -> None:
        for ds in (self._ds, self._raw):
            if ds is not None:
                ds.close()
        self._ds = self._raw = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):  # picklable for DataLoader workers: reopen lazily there
        state = dict(self.__dict__)
        state["_ds"] = state["_raw"] = None
        return state


def time_features(dates) -> np.ndarray:
    """(n, 4) float32 [sin, cos](2 pi hour / 24), [sin, cos](2 pi (day_of_year - 1 + hour / 24) / days_in_year).

    ``dates`` are cftime datetimes; the year's length comes from their calendar (360, 365, 366).

    >>> import cftime
    >>> time_features([cftime.datetime(2021, 1, 1, 6, calendar="noleap")]).astype(float).round(4).tolist()
    [[1.0, 0.0, 0.0043, 1.0]]
    """
    import cftime
    out = np.empty((len(dates), 4), np.float64)
    year_length = {}
    for k, d in enumerate(dates):
        key = (d.year, d.calendar)
        if key not in year_length:
            first, next_first = (cftime.datetime(y, 1, 1, calendar=d.calendar) for y in (d.year, d.year + 1))
            year_length[key] = (next_first - first).days
        hour = d.hour + d.minute / 60 + (d.second + d.microsecond / 1e6) / 3600
        day = (d.dayofyr - 1 + hour / 24) / year_length[key]
        a, b = 2 * math.pi * hour / 24, 2 * math.pi * day
        out[k] = (math.sin(a), math.cos(a), math.sin(b), math.cos(b))
    return out.astype(np.float32)


# -- coordinates of the super-resolved grid ------------------------------------------------------------------


def fine_positions(n_coarse: int, scale: int, *, centred: bool = True) -> np.ndarray:
    """Positions of the ``n_coarse * scale`` fine pixels in coarse index units.

    ``centred``: a coarse pixel sits at the centre of its ``scale`` fine cells (``degrade.CENTRED``:
    bicubic, block_mean), so fine pixel j sits at (j + 0.5) / scale - 0.5; otherwise (point sampling,
    blur-then-decimate) the coarse pixel is the first fine cell and fine pixel j sits at j / scale.

    >>> fine_positions(2, 2).tolist(), fine_positions(2, 2, centred=False).tolist()
    ([-0.25, 0.25, 0.75, 1.25], [0.0, 0.5, 1.0, 1.5])
    """
    j = np.arange(n_coarse * scale, dtype=np.float64)
    return (j + 0.5) / scale - 0.5 if centred else j / scale


def _interp_axis(values: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation along ``axis`` at fractional indices, extrapolating linearly past the ends."""
    n = values.shape[axis]
    if n == 1:  # no spacing to extrapolate with: the single value everywhere
        return np.repeat(values, len(positions), axis=axis)
    i0 = np.clip(np.floor(positions), 0, n - 2).astype(np.int64)
    shape = [1] * values.ndim
    shape[axis] = len(positions)
    w = (positions - i0).reshape(shape)
    return np.take(values, i0, axis=axis) * (1 - w) + np.take(values, i0 + 1, axis=axis) * w


def _wrap_longitude(values: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Back to the source's convention: [0, 360) if all source values are >= 0, else [-180, 180).

    Values inside the source's own range are kept, so a source reaching 360 or 180 keeps it. A
    strictly monotonic 1-D source (a dimension coordinate, which CF requires to be monotonic) is
    not wrapped at all: its extrapolated ends may step just past the convention (-0.0625 for a
    source starting at 0) but the coordinate stays monotonic.
    """
    if source.ndim == 1 and source.size > 1 and (np.all(np.diff(source) > 0) or np.all(np.diff(source) < 0)):
        return values
    lo, hi = np.nanmin(source), np.nanmax(source)
    wrapped = np.mod(values, 360.0) if lo >= 0 else np.mod(values + 180.0, 360.0) - 180.0
    return np.where((values >= lo) & (values <= hi), values, wrapped)


def fine_coordinate(values: np.ndarray, positions_y: np.ndarray | None, positions_x: np.ndarray | None, dims: tuple[str, ...],
                    ydim: str, xdim: str, is_longitude: bool, *, is_latitude: bool = False) -> np.ndarray:
    """A coordinate's values at fractional (coarse) index positions along its y and/or x dims.

    Linear in index space, separable (so bilinear for 2-D curvilinear coordinates), with linear
    extrapolation past the ends; non-uniform spacing (Gaussian latitudes) is followed cell by cell.
    Longitudes are unwrapped (period 360) first and wrapped back to the source's convention after
    (except a monotonic 1-D source, which stays monotonic: see ``_wrap_longitude``).
    Latitudes (``is_latitude``) are clipped to [-90, 90]: extrapolating a grid that reaches a pole
    would otherwise step past it. A dim of ``dims`` that is neither ``ydim`` nor ``xdim``, or whose
    positions are None, is left as it is.

    >>> p = np.array([-0.25, 0.25, 0.75, 1.25, 1.75, 2.25])
    >>> fine_coordinate(np.array([10.0, 20, 30]), None, p, ("lon",), "lat", "lon", False).tolist()
    [7.5, 12.5, 17.5, 22.5, 27.5, 32.5]
    >>> fine_coordinate(np.array([350.0, 0, 10]), None, p, ("lon",), "lat", "lon", True).tolist()
    [347.5, 352.5, 357.5, 2.5, 7.5, 12.5]
    >>> fine_coordinate(np.array([90.0, 89, 88]), p[:2], None, ("lat",), "lat", "lon", False, is_latitude=True).tolist()
    [90.0, 89.75]
    """
    source = np.asarray(values, dtype=np.float64)
    out = source
    if is_longitude:
        for axis in range(out.ndim):
            out = np.unwrap(out, period=360.0, axis=axis)
    for axis, dim in enumerate(dims):
        pos = positions_y if dim == ydim else positions_x if dim == xdim else None
        if pos is not None:
            out = _interp_axis(out, np.asarray(pos, dtype=np.float64), axis)
    if is_longitude:
        out = _wrap_longitude(out, source)
    if is_latitude:
        out = np.clip(out, -90.0, 90.0)
    return out


def fine_grid(grid: dict, positions_y: np.ndarray | None, positions_x: np.ndarray | None) -> dict:
    """:func:`fine_coordinate` applied to every coordinate of a grid dict (as :meth:`CFArchive.grid` gives).

    Range attributes (actual_range, valid_*) are dropped: they described the coarse values. Cell
    bounds of a 1-D coordinate become those of the fine cells (:func:`fine_bounds`), or are dropped
    when the coarse cells do not touch.
    """
    ydim, xdim = grid["ydim"], grid["xdim"]
    coords = {}
    for name, c in grid["coords"].items():
        attrs = {k: v for k, v in c["attrs"].items() if k not in ("actual_range", "valid_min", "valid_max", "valid_range")}
        lon, lat = (coordinate_kind(name, c["attrs"]) == k for k in ("lon", "lat"))
        values = fine_coordinate(c["values"], positions_y, positions_x, tuple(c["dims"]), ydim, xdim, lon, is_latitude=lat)
        coords[name] = {"dims": list(c["dims"]), "values": values, "attrs": attrs}
        if c.get("bounds") is not None:
            pos = positions_y if c["dims"] == [ydim] else positions_x if c["dims"] == [xdim] else None
            b = c["bounds"]["values"] if pos is None else fine_bounds(c["bounds"]["values"], pos, is_longitude=lon, is_latitude=lat)
            if b is not None:
                coords[name]["bounds"] = dict(c["bounds"], values=b)
    return {"ydim": ydim, "xdim": xdim, "coords": coords}


def fine_bounds(bounds: np.ndarray, positions: np.ndarray, *, is_longitude: bool = False, is_latitude: bool = False) -> np.ndarray | None:
    """Bounds (m, 2) of cells centred at fractional (coarse) index ``positions``, each as wide as their
    spacing, from the coarse cells' bounds (n, 2); None unless the coarse cells touch (bounds[i, 1] ==
    bounds[i + 1, 0]). The coarse cell edges are interpolated linearly in index space, so fine cells
    split each coarse cell evenly and the outer edges of an uncropped grid (a pole, 360 degrees) stay.

    >>> fine_bounds(np.array([[0.0, 10], [10, 20]]), np.array([-0.25, 0.25, 0.75, 1.25])).tolist()
    [[0.0, 5.0], [5.0, 10.0], [10.0, 15.0], [15.0, 20.0]]
    """
    b, pos = np.asarray(bounds, np.float64), np.asarray(positions, np.float64)
    if b.ndim != 2 or b.shape[1] != 2 or not len(b) or not len(pos):
        return None
    edges = np.append(b[:, 0], b[-1, 1])  # edge k of cell k-1 and k lies at coarse index k - 0.5
    width = np.abs(np.diff(edges)).max()
    if not np.allclose(b[1:, 0], b[:-1, 1], rtol=0, atol=1e-6 * width):
        return None
    half = abs(pos[1] - pos[0]) / 2 if len(pos) > 1 else 0.5
    at = np.stack([pos - half, pos + half], 1) + 0.5
    out = fine_coordinate(edges, None, at.ravel(), ("x",), "y", "x", is_longitude, is_latitude=is_latitude)
    return out.reshape(at.shape)
