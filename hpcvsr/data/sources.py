"""Every data source, built one way: ``python -m hpcvsr.data`` and training both ask this module.

Each builder returns a :class:`Built` (variables, attributes, units) that
:func:`hpcvsr.io.sequences.write_sequence` writes in hpcvsr's HDF5 layout. A shallow-water
sequence can also be written as a CF-1.8 NetCDF-4 file (``.nc``, :func:`write_netcdf`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hpcvsr.data import images as images_mod
from hpcvsr.data import phantom, swe
from hpcvsr.data import video as video_mod
from hpcvsr.errors import UserError
from hpcvsr.io import sequences
from hpcvsr.io.atomic import atomic_path, check_space

GENERATED = ("swe", "phantom")


@dataclass(frozen=True)
class Built:
    variables: dict  # name -> (T, H, W) array
    attrs: dict
    units: dict  # name -> units
    dataset: Callable | None = None  # dataset(history=...) -> CF xarray.Dataset, for sources that have one

    def write(self, path: str, overwrite: bool = False, history: str | None = None) -> None:
        """HDF5 layout, or CF NetCDF-4 for a ``.nc`` path when the source has a dataset."""
        if is_netcdf_out(path) and self.dataset is not None:
            write_netcdf(self.dataset(history=history), path, overwrite=overwrite)
        else:
            sequences.write_sequence(path, self.variables, self.attrs, self.units, overwrite=overwrite)


def is_netcdf_out(path: str) -> bool:
    """Whether an output path asks for NetCDF (``.nc``)."""
    return str(path).lower().endswith(".nc")


def write_netcdf(ds, path: str, overwrite: bool = False) -> None:
    """Write an ``xarray.Dataset`` as NetCDF-4 atomically: no fill values, a chunk per frame for (time, ...) variables."""
    encoding = {}
    for name, var in ds.variables.items():
        encoding[name] = {"_FillValue": None}
        if var.ndim == 3 and var.dims[0] == "time":
            encoding[name]["chunksizes"] = (1, *var.shape[1:])
    check_space(path, ds.nbytes)  # netCDF4 reports a full disk only as "HDF error": check first
    with atomic_path(path, overwrite) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)


def generated_var(source: str, var: str) -> str:
    """The variable a generated source provides for ``data.var`` (phantoms have one)."""
    if source == "phantom":
        return "phantom"
    if var not in swe.UNITS:
        raise UserError(f"data.var: shallow-water sequences hold {', '.join(swe.UNITS)}, not '{var}'")
    return var


def swe_params(size, seed: int, **swe_options) -> swe.SWEParams:
    """Checked shallow-water parameters; a bad option value is a UserError (before any work)."""
    try:
        return swe.make_params(tuple(size), seed, **swe_options)
    except ValueError as exc:
        raise UserError(f"swe: {exc}") from None


def generate(source: str, frames: int, size, seed: int, progress: bool = False, **swe_options) -> Built:
    """A generated sequence: shallow-water turbulence (h, u, v, vort) or moving phantoms.

    ``swe_options`` are :class:`hpcvsr.data.swe.SWEParams` fields (topography, domain_seed, forcing,
    forcing_period_frames, interval_hours, start_date ...); the phantoms take none.
    """
    if source == "swe":
        try:
            seq = swe.run(swe_params(size, seed, **swe_options), frames, progress=progress)
        except FloatingPointError as exc:  # the options asked for more than the solver can take
            raise UserError(f"swe: {exc}") from None
        return Built({"h": seq.h, "u": seq.u, "v": seq.v, "vort": seq.vort}, swe.attributes(seq), swe.UNITS,
                     dataset=lambda history=None: swe.to_dataset(seq, history=history))
    if source == "phantom":
        if swe_options:
            raise UserError(f"{', '.join(sorted(swe_options))}: only shallow-water (swe) sequences take these options")
        data = phantom.generate(frames, tuple(size), seed)
        return Built({"phantom": data}, {"source": "phantom", "seed": seed, "dx": 1.0, "dt": 1.0}, {"phantom": "1"})
    raise UserError(f"unknown generated source '{source}' (choose from {', '.join(GENERATED)})")


def _center_crop(img: np.ndarray, size) -> np.ndarray:
    h, w = size
    H, W = img.shape
    if H < h or W < w:
        raise UserError(f"image of {H}x{W} is smaller than the requested {h}x{w}")
    y, x = (H - h) // 2, (W - w) // 2
    return img[y : y + h, x : x + w]


def still_images(folder: str | None, size=None) -> Built:
    """Luma of a folder of images (default: scikit-image's), centre-cropped to one size."""
    pairs = images_mod.load_luma(folder)
    if not pairs:
        raise UserError("no images found")
    size = size or [min(y.shape[0] for _, y in pairs), min(y.shape[1] for _, y in pairs)]
    stack = np.stack([_center_crop(y, size) for _, y in pairs]).astype(np.float32)
    attrs = {"source": "images", "folder": folder or "skimage.data", "names": ",".join(n for n, _ in pairs), "dx": 1.0, "dt": 0.0}
    return Built({"y": stack}, attrs, {"y": "8-bit luma"})


def video(path: str, size=None, start: int = 0, stop: int | None = None) -> Built:
    """Luma frames of a .y4m / .yuv clip or a folder of frames."""
    frames = video_mod.read_video(path, size, start, stop)
    return Built({"y": frames}, {"source": "video", "input": path, "dx": 1.0, "dt": 1.0}, {"y": "8-bit luma"})


def archive(path: str, var: str, start: int = 0, stop: int | None = None, select: dict | None = None, isel: dict | None = None) -> Built:
    """Frames [start, stop) of one variable of an archive (NetCDF: decoded, extra dimensions selected), with its attributes."""
    arc = sequences.open_archive(path, var, select=select, isel=isel)
    try:
        data = arc.read(start, len(arc) if stop is None else stop)
    finally:
        arc.close()
    if arc.missing_possible and np.isnan(data).any():
        raise UserError(f"{path}:{var} has missing values (fill values or gaps), which hpcvsr's HDF5 layout cannot hold; "
                        "train and infer on the NetCDF file itself")
    attrs = {"source": "archive", "input": path, "var": var, "start": start}
    attrs.update({k: v for k, v in arc.attrs.items() if isinstance(v, (int, float, str, np.number))})
    return Built({var: data}, attrs, {var: str(arc.units or "1")})
