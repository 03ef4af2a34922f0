"""The one HDF5 layout every data source writes, and lazy readers for it and other archives.

Layout: one dataset per variable, shape (T, H, W) float32, chunked one frame per chunk; file
attributes describe the source, grid spacing, time step, generator parameters and seed; each
dataset carries ``units``. Files are written under a temporary name and renamed when complete,
and an existing file is never replaced unless asked.

Readers take a frame range and read only those frames: :func:`open_archive` gives NetCDF files
(NetCDF-3 and -4, CF conventions: packing, fill values, coordinates, extra dimensions) to
:class:`hpcvsr.io.cf.CFArchive` (xarray), HDF5 and MATLAB v7.3 to :class:`Archive` (h5py
slicing, chunked reads), MATLAB v5 through scipy (whole variable: v5 has no partial reads, so very
large archives should be converted to HDF5 once). Both readers take ``read(start, stop, rows,
cols)`` and say whether values can be missing (``missing_possible``: only CF files can; NaN
elsewhere is an error).
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from hpcvsr.errors import UserError, check_finite
from hpcvsr.io import catalog
from hpcvsr.io.atomic import atomic_path, check_space
from hpcvsr.io.cf import plain, plain_attrs


def _attr(value):
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    return value


def write_sequence(path: str, variables: dict, attrs: dict | None = None, units: dict | None = None, overwrite: bool = False, min_frames: int = 1) -> None:
    """Write {name: (T, H, W) array} as float32 datasets, chunked per frame, atomically."""
    if not variables:
        raise UserError("nothing to write: no variables")
    shapes = set()
    for name, arr in variables.items():
        arr = np.asarray(arr)
        if arr.ndim != 3:
            raise UserError(f"variable '{name}' must have shape (T, H, W), got {arr.shape}")
        check_finite(arr, f"variable '{name}'")
        shapes.add(arr.shape)
    if len(shapes) != 1:
        raise UserError(f"variables have different shapes: {sorted(shapes)}")
    (shape,) = shapes
    if shape[0] < min_frames:
        raise UserError(f"sequence has {shape[0]} frames; at least {min_frames} are needed")
    check_space(path, sum(np.asarray(a).size for a in variables.values()) * 4)
    with atomic_path(path, overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            for k, v in (attrs or {}).items():
                f.attrs[k] = _attr(v)
            for name, arr in variables.items():
                d = f.create_dataset(name, data=np.asarray(arr, np.float32), chunks=(1, *shape[1:]))
                d.attrs["units"] = (units or {}).get(name, "1")


def _mat_version(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(128)
    return "7.3" if b"MATLAB 7.3" in head or head[:8] == b"\x89HDF\r\n\x1a\n" else "5"


class Archive:
    """Lazy frame access to one variable of an HDF5 / NetCDF4 / .mat archive.

    ``len(archive)`` is the number of frames; ``archive.read(a, b)`` reads frames a..b-1 only.
    The file is opened on first read (after a DataLoader fork), never in ``__init__`` beyond
    reading the shape.
    """

    def __init__(self, path: str, var: str, log: list | None = None):
        if not os.path.isfile(path):
            raise UserError(f"file not found: {path}")
        self.path, self.var, self._file, self._whole, self.log = path, var, None, None, log
        ext = os.path.splitext(path)[1].lower()
        self.kind = "mat5" if ext == ".mat" and _mat_version(path) == "5" else "h5"
        if self.kind == "mat5":
            import scipy.io

            names = [n for n, *_ in scipy.io.whosmat(path)]
            if var not in names:
                raise UserError(f"{path}: no variable '{var}' (has: {', '.join(names) or 'none'})")
            self._whole = np.asarray(scipy.io.loadmat(path, variable_names=[var])[var])
            shape = self._whole.shape
        else:
            try:
                with h5py.File(path, "r") as f:
                    if var not in f or not isinstance(f[var], h5py.Dataset):
                        have = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
                        raise UserError(f"{path}: no variable '{var}' (has: {', '.join(have) or 'none'})")
                    shape = f[var].shape
                    self.attrs = plain_attrs(f.attrs)
                    self.units = str(plain(f[var].attrs.get("units", "")))
            except OSError as exc:
                raise UserError(f"cannot open {path} as HDF5/NetCDF4/MATLAB 7.3: {exc}") from None
        if ext == ".mat" and self.kind == "h5":
            shape = shape[::-1]  # MATLAB v7.3 stores column-major: reverse to MATLAB's order
        if len(shape) != 3:
            raise UserError(f"{path}:{var} must be 3-D (frames, H, W), got shape {tuple(shape)}")
        self.mat73 = ext == ".mat" and self.kind == "h5"
        self.shape = tuple(int(s) for s in shape)
        if not hasattr(self, "attrs"):
            self.attrs, self.units = {}, ""
        self.missing_possible, self.time, self.notes = False, None, []

    def __len__(self) -> int:
        return self.shape[0]

    def _dataset(self):
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file[self.var]

    def read(self, start: int, stop: int, rows: slice | None = None, cols: slice | None = None) -> np.ndarray:
        """Frames [start, stop) as float32 (T, H, W), optionally only ``rows`` x ``cols`` of each."""
        rows, cols = rows or slice(None), cols or slice(None)
        if not 0 <= start <= stop <= len(self):
            raise UserError(f"{self.path}:{self.var}: frames {start}:{stop} outside 0:{len(self)}")
        if self.log is not None:
            self.log.append({"file": self.path, "var": self.var, "start": start, "stop": stop})
        if self.kind == "mat5":
            out = self._whole[start:stop, rows, cols]
        elif self.mat73:
            out = self._dataset()[cols, rows, start:stop].transpose(2, 1, 0)
        else:
            out = self._dataset()[start:stop, rows, cols]
        out = np.asarray(out, dtype=np.float32)
        check_finite(out, f"{self.path}:{self.var} frames {start}:{stop}")
        return out

    def describe(self, rows: slice | None = None, cols: slice | None = None) -> dict:
        """What a writer needs to describe an output like this input (as
        :meth:`hpcvsr.io.cf.CFArchive.describe`): here no time and no coordinates to carry."""
        return {"var": self.var, "dims": ["time", "y", "x"], "attrs": {"units": str(self.units)} if self.units else {}, "global_attrs": {},
                "time": None, "grid": {"ydim": "y", "xdim": "x", "coords": {}}, "fill_value": None, "missing_possible": False}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self):  # picklable for DataLoader workers: reopen lazily there
        state = dict(self.__dict__)
        state["_file"] = None
        return state


NETCDF_EXTENSIONS = (".nc", ".nc4", ".cdf", ".netcdf")


def is_netcdf(path: str) -> bool:
    """NetCDF by extension, by the NetCDF-3 signature, or an HDF5 file written by the netCDF library."""
    if os.path.splitext(path)[1].lower() in NETCDF_EXTENSIONS:
        return True
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:3] == b"CDF":
        return True
    if head != b"\x89HDF\r\n\x1a\n":
        return False
    try:
        with h5py.File(path, "r") as f:
            return "_NCProperties" in f.attrs
    except OSError:
        return False


def open_archive(path: str, var: str, *, select: dict | None = None, isel: dict | None = None, log: list | None = None,
                 opening: catalog.Opening = catalog.PLAIN):
    """The reader for ``path``: :class:`~hpcvsr.io.cf.CFArchive` for NetCDF, :class:`Archive` otherwise."""
    files = catalog.expand(path)
    if len(files) > 1 or catalog.is_zarr(files[0]) or is_netcdf(files[0]):
        from hpcvsr.io.cf import CFArchive

        return CFArchive(path, var, select=select, isel=isel, log=log, opening=opening)
    if select or isel:
        raise UserError(f"{path}: selecting dimensions (select/isel) needs a NetCDF file; this is HDF5/MATLAB with 3-D variables")
    return Archive(path, var, log=log)


class MultiArchive:
    """Several variables of one file read together: ``read(a, b, rows, cols)`` gives (b - a, C, h, w).

    The variables must share their frames and grid (the same shape; the first variable's time and
    grid coordinates describe them all). Everything else (time features, grid, units, attributes)
    is asked of ``first`` or of ``parts``.
    """

    def __init__(self, path: str, variables, *, select: dict | None = None, isel: dict | None = None, log: list | None = None,
                 opening: catalog.Opening = catalog.PLAIN):
        self.parts = []
        try:
            for v in variables:
                self.parts.append(open_archive(path, v, select=select, isel=isel, log=log, opening=opening))
        except BaseException:
            self.close()
            raise
        self.first = self.parts[0]
        shapes = {a.var: tuple(a.shape) for a in self.parts}
        if len(set(shapes.values())) > 1:
            self.close()
            raise UserError(f"{path}: the variables to super-resolve together must have the same frames and grid, but their shapes are "
                            + ", ".join(f"{k} {v}" for k, v in shapes.items()))

    @property
    def shape(self) -> tuple:
        return tuple(self.first.shape)

    def __len__(self) -> int:
        return len(self.first)

    def read(self, start: int, stop: int, rows=None, cols=None) -> np.ndarray:
        return np.stack([a.read(start, stop, rows, cols) for a in self.parts], axis=1)

    def close(self) -> None:
        for a in self.parts:
            a.close()


def read_frames(path: str, var: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    arc = open_archive(path, var)
    try:
        return arc.read(start, len(arc) if stop is None else stop)
    finally:
        arc.close()
