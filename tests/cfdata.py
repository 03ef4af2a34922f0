"""Builders of small CF NetCDF archives that look like what reanalysis and model portals deliver.

Written with xarray (netCDF4 engine), no downloads. Each builder returns the in-memory
``xarray.Dataset`` it wrote, with the original (unpacked, unmasked-by-encoding) values, so tests
can compare what a reader decodes with what went in.

The fields carry fine-scale structure a super-resolution network can learn: rotating
shallow-water turbulence (:func:`hpcvsr.data.swe.generate`) scaled to temperatures, a fixed
orography-like pattern, and a daily cycle.
"""

from __future__ import annotations

import datetime
import os

import numpy as np
import xarray as xr

from hpcvsr.data import swe

HOURS_1900_TO_2020 = (datetime.datetime(2020, 1, 1) - datetime.datetime(1900, 1, 1)).days * 24
NO_FILL = {"_FillValue": None}
ERA5_GLOBALS = {"Conventions": "CF-1.7", "institution": "European Centre for Medium-Range Weather Forecasts",
                "history": "2024-03-01 12:00:00 GMT by grib_to_netcdf-2.28.1: /opt/ecmwf/mars-client/bin/grib_to_netcdf.bin "
                           "-S param -o /cache/data.nc /cache/tmp/data.grib"}


def orography(ny: int, nx: int, seed: int) -> np.ndarray:
    """A fixed per-cell pattern in [-1, 1]: a few hills, a ridge and cell-scale roughness."""
    rng = np.random.default_rng(seed + 1000)
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    out = np.zeros((ny, nx))
    for _ in range(4):
        cy, cx, w = rng.uniform(0, ny), rng.uniform(0, nx), rng.uniform(2, 6)
        out += rng.uniform(0.5, 1.0) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * w * w))
    angle, offset = rng.uniform(0, np.pi), rng.uniform(-0.2, 0.2) * nx
    dist = (x - nx / 2) * np.sin(angle) - (y - ny / 2) * np.cos(angle) - offset
    out += 1.2 * np.exp(-dist**2 / (2 * 1.5**2))
    out += 0.15 * rng.standard_normal((ny, nx))
    out -= out.min()
    return 2 * out / out.max() - 1


def temperature(frames: int, ny: int, nx: int, seed: int, hours: np.ndarray) -> np.ndarray:
    """(frames, ny, nx) float32 2 m temperature in K, about 266..292."""
    h = swe.generate(frames, size=(ny, nx), seed=seed).h.astype(np.float64)
    h /= max(float(np.abs(h).max()), 1e-6)
    oro = orography(ny, nx, seed)
    daily = np.cos(2 * np.pi * (np.asarray(hours, np.float64) - 14) / 24)[:, None, None]
    return (279 + 7 * h - 3.5 * oro + 2 * daily * (1 + 0.3 * oro)).astype(np.float32)


def era5_coords(frames: int, ny: int, nx: int, start_hour: int = 0, step_hours: int = 1) -> dict:
    """time (int32 hours since 1900), latitude (descending 60 -> at 0.25), longitude (0 -> at 0.25)."""
    hours = HOURS_1900_TO_2020 + start_hour + step_hours * np.arange(frames)
    return {
        "time": ("time", hours.astype(np.int32), {"units": "hours since 1900-01-01 00:00:00.0", "long_name": "time",
                                                  "calendar": "gregorian", "standard_name": "time", "axis": "T"}),
        "latitude": ("latitude", (60 - 0.25 * np.arange(ny)).astype(np.float32),
                     {"units": "degrees_north", "long_name": "latitude", "standard_name": "latitude", "axis": "Y"}),
        "longitude": ("longitude", (0.25 * np.arange(nx)).astype(np.float32),
                      {"units": "degrees_east", "long_name": "longitude", "standard_name": "longitude", "axis": "X"}),
    }


def era5_packing(data: np.ndarray) -> tuple[float, float]:
    """(scale_factor, add_offset) as grib_to_netcdf packs: data in -32766..32767, -32767 marks missing."""
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    scale = (hi - lo) / 65533 if hi > lo else 1.0
    return scale, hi - 32767 * scale


def _write(ds: xr.Dataset, path: str, fmt: str, encoding: dict) -> xr.Dataset:
    enc = {name: dict(NO_FILL) for name in ds.coords}
    enc.update(encoding)
    ds.to_netcdf(path, format=fmt, engine="netcdf4", encoding=enc)
    return ds


def write_t2m(path: str, *, frames: int, ny: int = 33, nx: int = 49, seed: int = 0, packed: bool = False, start_hour: int = 0,
              format: str = "NETCDF4", valid_range: tuple | None = None) -> xr.Dataset:
    """ERA5-like hourly 2 m temperature ``t2m`` (time, latitude, longitude) on an odd 33 x 49 grid.

    ``packed``: int16 with scale_factor / add_offset / _FillValue / missing_value as ERA5 ships it.
    ``valid_range`` (K) is stored in the storage type (packed integers when packed).
    """
    coords = era5_coords(frames, ny, nx, start_hour)
    t2m = temperature(frames, ny, nx, seed, start_hour + np.arange(frames))
    attrs = {"units": "K", "long_name": "2 metre temperature", "standard_name": "air_temperature"}
    ds = xr.Dataset({"t2m": (("time", "latitude", "longitude"), t2m, attrs)}, coords=coords, attrs=dict(ERA5_GLOBALS))
    enc = {"t2m": {"dtype": "float32", "_FillValue": None}}
    if packed:
        scale, offset = era5_packing(t2m)
        enc["t2m"] = {"dtype": "int16", "scale_factor": scale, "add_offset": offset, "_FillValue": np.int16(-32767),
                      "missing_value": np.int16(-32767)}
    out = ds.copy()
    if valid_range is not None:
        lo, hi = valid_range
        codes = np.clip(np.round((np.array([lo, hi]) - offset) / scale), -32766, 32767).astype(np.int16) if packed else None
        out["t2m"].attrs["valid_range"] = codes if packed else np.array([lo, hi], np.float32)
    _write(out, path, format, enc)
    return ds


def write_levels(path: str, *, frames: int = 8, ny: int = 33, nx: int = 49, seed: int = 0, members: int = 0) -> xr.Dataset:
    """ERA5-like temperature ``t`` (time, level, latitude, longitude) on 1000, 850 and 500 hPa.

    ``members`` > 0 adds an ensemble dimension ``number`` before ``level``.
    """
    coords = era5_coords(frames, ny, nx)
    coords["level"] = ("level", np.array([1000, 850, 500], np.int32),
                       {"units": "hPa", "long_name": "pressure_level", "standard_name": "air_pressure", "positive": "down", "axis": "Z"})
    hours = np.arange(frames)
    levels = [temperature(frames, ny, nx, seed + k, hours) - d for k, d in enumerate((-6.0, 4.0, 30.0))]
    data, dims = np.stack(levels, axis=1), ("time", "level", "latitude", "longitude")
    if members:
        coords["number"] = ("number", np.arange(members, dtype=np.int32), {"long_name": "ensemble_member", "standard_name": "realization"})
        data = np.stack([data + 0.5 * m for m in range(members)], axis=1)
        dims = ("time", "number", "level", "latitude", "longitude")
    attrs = {"units": "K", "long_name": "Temperature", "standard_name": "air_temperature"}
    ds = xr.Dataset({"t": (dims, data.astype(np.float32), attrs)}, coords=coords, attrs=dict(ERA5_GLOBALS))
    return _write(ds, path, "NETCDF4", {"t": {"dtype": "float32", "_FillValue": None}})


def land_mask(ny: int, nx: int) -> np.ndarray:
    """A fixed coastline: land (True) north of a wavy line, plus a small island; about 20 % land."""
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    coast = 0.15 * ny + 0.08 * ny * np.sin(2 * np.pi * x / nx * 1.5) + 0.04 * ny * np.sin(2 * np.pi * x / nx * 5)
    island = ((y - 0.65 * ny) / (0.08 * ny)) ** 2 + ((x - 0.6 * nx) / (0.07 * nx)) ** 2 <= 1
    return (y < coast) | island


def write_masked(path: str, *, frames: int = 12, ny: int = 33, nx: int = 49, seed: int = 0, missing_frame: int = 5) -> xr.Dataset:
    """ERA5-like sea surface temperature ``sst``: float32, land stored as _FillValue, one frame all missing."""
    coords = era5_coords(frames, ny, nx)
    h = swe.generate(frames, size=(ny, nx), seed=seed).h.astype(np.float64)
    h /= max(float(np.abs(h).max()), 1e-6)
    gradient = np.linspace(-4, 4, ny)[::-1][:, None]  # warmer to the south (latitude descends)
    sst = (285 + 3 * h + gradient).astype(np.float32)
    sst[:, land_mask(ny, nx)] = np.nan
    if 0 <= missing_frame < frames:
        sst[missing_frame] = np.nan
    attrs = {"units": "K", "long_name": "Sea surface temperature", "standard_name": "sea_surface_temperature"}
    ds = xr.Dataset({"sst": (("time", "latitude", "longitude"), sst, attrs)}, coords=coords, attrs=dict(ERA5_GLOBALS))
    return _write(ds, path, "NETCDF4", {"sst": {"dtype": "float32", "_FillValue": np.float32(-32767.0)}})


def rotated_to_geographic(rlat: np.ndarray, rlon: np.ndarray, pole_lat: float, pole_lon: float) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) in degrees of rotated-pole coordinates (CF rotated_latitude_longitude), lon in [-180, 180)."""
    rl, ro = np.deg2rad(rlat), np.deg2rad(rlon)
    x, y, z = np.cos(rl) * np.cos(ro), np.cos(rl) * np.sin(ro), np.sin(rl)
    theta, phi = np.deg2rad(90 - pole_lat), np.deg2rad(pole_lon + 180)
    x2, z2 = np.cos(theta) * x - np.sin(theta) * z, np.sin(theta) * x + np.cos(theta) * z
    x3, y3 = np.cos(phi) * x2 - np.sin(phi) * y, np.sin(phi) * x2 + np.cos(phi) * y
    lon = np.rad2deg(np.arctan2(y3, x3))
    return np.rad2deg(np.arcsin(np.clip(z2, -1, 1))), np.mod(lon + 180, 360) - 180


def write_rotated(path: str, *, frames: int = 10, ny: int = 33, nx: int = 49, seed: int = 0) -> xr.Dataset:
    """CORDEX-like ``tas`` (valid_time, rlat, rlon) on a rotated-pole grid with 2-D lat / lon.

    Time is float64 "days since 1950-01-01" in the ``noleap`` calendar, 6-hourly across a new year.
    """
    pole_lat, pole_lon = 39.25, -162.0
    rlat, rlon = -4 + 0.25 * np.arange(ny), -6 + 0.25 * np.arange(nx)
    lat, lon = rotated_to_geographic(rlat[:, None], rlon[None, :], pole_lat, pole_lon)
    days = 365 * 100 + 364 + 0.25 * np.arange(frames)  # 2050-12-31 00:00 in noleap, 6-hourly
    tas = temperature(frames, ny, nx, seed, 6 * np.arange(frames))
    coords = {
        "valid_time": ("valid_time", days, {"units": "days since 1950-01-01 00:00:00", "calendar": "noleap", "standard_name": "time",
                                            "long_name": "time", "axis": "T"}),
        "rlat": ("rlat", rlat, {"standard_name": "grid_latitude", "long_name": "latitude in rotated pole grid", "units": "degrees",
                                "axis": "Y"}),
        "rlon": ("rlon", rlon, {"standard_name": "grid_longitude", "long_name": "longitude in rotated pole grid", "units": "degrees",
                                "axis": "X"}),
        "lat": (("rlat", "rlon"), lat, {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north"}),
        "lon": (("rlat", "rlon"), lon, {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east"}),
    }
    pole = xr.DataArray(np.int32(0), attrs={"grid_mapping_name": "rotated_latitude_longitude", "grid_north_pole_latitude": pole_lat,
                                             "grid_north_pole_longitude": pole_lon})
    attrs = {"units": "K", "long_name": "Near-Surface Air Temperature", "standard_name": "air_temperature", "grid_mapping": "rotated_pole",
             "cell_methods": "valid_time: point"}
    ds = xr.Dataset({"tas": (("valid_time", "rlat", "rlon"), tas, attrs), "rotated_pole": pole}, coords=coords,
                    attrs={"Conventions": "CF-1.7", "project_id": "CORDEX", "institution": "Test Climate Service",
                           "history": "2023-05-02T10:00:00Z: created by the test builder"})
    return _write(ds, path, "NETCDF4", {"tas": {"dtype": "float32", "_FillValue": np.float32(1e20)}, "rotated_pole": {"_FillValue": None}})


def write_transposed(path: str, *, frames: int = 6, ny: int = 33, nx: int = 49, seed: int = 0) -> xr.Dataset:
    """NetCDF-3 (64-bit offset) ``t2m`` stored as (latitude, longitude, time), time in float seconds since 1970."""
    coords = era5_coords(frames, ny, nx)
    seconds = (datetime.datetime(2020, 1, 1) - datetime.datetime(1970, 1, 1)).total_seconds() + 3600.0 * np.arange(frames)
    coords["time"] = ("time", seconds, {"units": "seconds since 1970-01-01 00:00:00", "calendar": "standard", "standard_name": "time"})
    t2m = temperature(frames, ny, nx, seed, np.arange(frames)).transpose(1, 2, 0)
    attrs = {"units": "K", "long_name": "2 metre temperature", "standard_name": "air_temperature"}
    ds = xr.Dataset({"t2m": (("latitude", "longitude", "time"), t2m, attrs)}, coords=coords, attrs=dict(ERA5_GLOBALS))
    return _write(ds, path, "NETCDF3_64BIT", {"t2m": {"dtype": "float32", "_FillValue": None}})


def write_timeless(path: str, *, frames: int = 5, ny: int = 16, nx: int = 20, seed: int = 0) -> xr.Dataset:
    """A bare (sample, row, col) height field ``h`` with no coordinates at all."""
    h = swe.generate(frames, size=(ny, nx), seed=seed).h
    ds = xr.Dataset({"h": (("sample", "row", "col"), h, {"units": "m", "long_name": "height anomaly"})}, attrs={"title": "bare test field"})
    return _write(ds, path, "NETCDF4", {"h": {"dtype": "float32", "_FillValue": None}})


def write_orography(path: str, *, ny: int = 33, nx: int = 49, seed: int = 0, shift_lat: float = 0.0) -> xr.Dataset:
    """ERA5-like static surface height ``z`` (latitude, longitude) in m on the grid of :func:`write_t2m`
    (the same place pattern the temperature carries); ``shift_lat`` moves its latitudes."""
    coords = {k: v for k, v in era5_coords(1, ny, nx).items() if k != "time"}
    lat = coords["latitude"]
    coords["latitude"] = (lat[0], lat[1] + np.float32(shift_lat), lat[2])
    z = (800 * orography(ny, nx, seed)).astype(np.float32)
    attrs = {"units": "m", "long_name": "surface height", "standard_name": "surface_altitude"}
    ds = xr.Dataset({"z": (("latitude", "longitude"), z, attrs)}, coords=coords, attrs=dict(ERA5_GLOBALS))
    return _write(ds, path, "NETCDF4", {"z": {"dtype": "float32", "_FillValue": None}})


RADAR_NY, RADAR_NX = 32, 48


def radar_frame(k: int, *, shift_x: float = 0.0, var: str = "rain", minutes: float | None = None) -> xr.Dataset:
    """Frame ``k`` of a 10-minute radar-like product on a Lambert conformal grid: time as a scalar variable."""
    y, x = np.arange(RADAR_NY) * 2000.0, np.arange(RADAR_NX) * 2000.0 + shift_x
    yy, xx = np.meshgrid(y, x, indexing="ij")
    rng = np.random.default_rng(k)
    cells = np.maximum(0.0, np.sin(xx / 9000 + 0.3 * k) * np.cos(yy / 7000 - 0.1 * k) - 0.3)  # moving showers, zero elsewhere
    data = (20.0 * cells**2 * rng.gamma(2.0, 0.5, (RADAR_NY, RADAR_NX))).astype(np.float32)
    return xr.Dataset(
        {var: (("y", "x"), data, {"units": "kg m-2", "standard_name": "precipitation_amount", "grid_mapping": "crs",
                        "valid_min": np.int16(0)}),
         "crs": ((), np.int32(0), {"grid_mapping_name": "lambert_conformal_conic", "standard_parallel": [30.0, 60.0],
                                    "longitude_of_central_meridian": 10.0, "latitude_of_projection_origin": 50.0}),
         "time": ((), np.float64(10 * k if minutes is None else minutes), {"units": "minutes since 2024-06-01 00:00:00",
                                                                          "standard_name": "time", "calendar": "standard"})},
        coords={"y": ("y", y, {"units": "m", "standard_name": "projection_y_coordinate", "axis": "Y"}),
                "x": ("x", x, {"units": "m", "standard_name": "projection_x_coordinate", "axis": "X"})},
        attrs={"Conventions": "CF-1.8", "title": "radar rain, one file per frame"})


ENCODING_RAIN = {"rain": {"dtype": "int16", "scale_factor": 0.002, "add_offset": 0.0, "_FillValue": np.int16(-32768)}}


def write_radar_frames(folder, n: int = 40) -> None:
    """``n`` files of one radar frame each in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    for k in range(n):  # names in reverse time order: the archive is ordered by time, not by name
        radar_frame(k).to_netcdf(os.path.join(folder, f"radar_{n - 1 - k:03d}.nc"), encoding=ENCODING_RAIN)
