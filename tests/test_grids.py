"""Global and projected grids: a longitude that wraps around has no seam, a projected grid keeps its map.

The archives are written here with xarray: a global monthly SST-like field on 5.625 degree cells with
land masked out (NaN), and a Lambert conformal conic grid in km across the antimeridian with its
grid_mapping, x/y bounds and 2-D latitude/longitude. Nothing is downloaded.
"""

import numpy as np
import pytest
import torch
import xarray as xr

from hpcvsr.io import cf
from hpcvsr.io.cf import CFArchive

from .conftest import TINY, run_cli, sets

STEP = 5.625  # degrees: 64 columns around the globe
EAST = {"units": "degrees_east", "standard_name": "longitude"}


def global_field(frames: int = 24, ny: int = 32, nx: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sst (frames, ny, nx) float32 K with NaN over land, lat, lon): periodic in longitude by construction."""
    rng = np.random.default_rng(seed)
    lat = -90 + STEP / 2 + STEP * np.arange(ny)
    lon = STEP * np.arange(nx)
    la, lo = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
    month = np.arange(frames)[:, None, None]
    field = 300 - 28 * np.sin(la) ** 2 + 3 * np.sin(la) * np.cos(2 * np.pi * month / 12)
    for k in range(1, 13):  # waves of whole wavenumbers drifting east: structure at every scale, no seam
        amp, phase, speed = rng.uniform(0.3, 1.2) / k**0.5, rng.uniform(0, 2 * np.pi), rng.uniform(-0.3, 0.3)
        field = field + amp * np.cos(k * lo + phase + speed * month) * np.cos(la) * np.cos(rng.integers(1, 5) * la + phase)
    land = np.zeros((ny, nx), bool)
    for clat, clon, rlat, rlon in ((45, 100, 25, 40), (10, 20, 30, 25), (-25, 135, 12, 20), (60, 355, 15, 30), (-80, 180, 10, 400)):
        dlon = (lon[None, :] - clon + 180) % 360 - 180  # one continent straddles the seam
        land |= ((lat[:, None] - clat) / rlat) ** 2 + (dlon / rlon) ** 2 < 1
    field = np.where(land, np.nan, field)
    return field.astype(np.float32), lat, lon


def write_global(path, sst: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> str:
    """The field as a CF NetCDF file with cell bounds, NaN stored as _FillValue."""
    cells = lambda v: np.stack([v - STEP / 2, v + STEP / 2], 1)  # noqa: E731
    ds = xr.Dataset(
        {"sst": (("time", "lat", "lon"), sst, {"units": "K", "standard_name": "sea_surface_temperature", "long_name": "sea surface temperature"}),
         "lat_bnds": (("lat", "nv"), cells(lat)), "lon_bnds": (("lon", "nv"), cells(lon))},
        coords={"time": ("time", 15.0 + 30.0 * np.arange(len(sst)), {"units": "days since 2000-01-01", "calendar": "360_day",
                                                                   "standard_name": "time", "axis": "T"}),
                "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude", "axis": "Y", "bounds": "lat_bnds"}),
                "lon": ("lon", lon, dict(EAST, axis="X", bounds="lon_bnds"))},
        attrs={"Conventions": "CF-1.8", "title": "global test field", "history": "written by the hpcvsr tests"})
    enc = {k: {"_FillValue": None} for k in ("time", "lat", "lon", "lat_bnds", "lon_bnds")}
    enc["sst"] = {"_FillValue": np.float32(-9999.0), "dtype": "float32"}
    ds.to_netcdf(path, engine="netcdf4", encoding=enc)
    return str(path)


def rolled(sst: np.ndarray, lon: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """The field seen from a file whose first column is ``shift`` columns east, its longitude kept
    increasing (a half turn gives the -180..180 convention)."""
    lon = np.roll(lon, -shift)
    lon = np.where(np.arange(len(lon)) >= len(lon) - shift, lon + 360, lon)
    if lon[0] >= 180:
        lon = lon - 360
    return np.roll(sst, -shift, axis=-1), lon


LCC = {"grid_mapping_name": "lambert_conformal_conic", "standard_parallel": [50.0, 60.0], "longitude_of_central_meridian": 180.0,
       "latitude_of_projection_origin": 55.0, "false_easting": 0.0, "false_northing": 0.0, "earth_radius": 6371229.0}


def lcc_lat_lon(x_km: np.ndarray, y_km: np.ndarray, p: dict = LCC) -> tuple[np.ndarray, np.ndarray]:
    """2-D (lat, lon) in degrees, lon in [-180, 180), of a spherical Lambert conformal conic grid (Snyder 1987, eqs. 15-1..15-5, 14-4)."""
    r = p["earth_radius"] / 1000.0
    p1, p2 = np.deg2rad(p["standard_parallel"])
    p0, l0 = np.deg2rad(p["latitude_of_projection_origin"]), np.deg2rad(p["longitude_of_central_meridian"])
    t = lambda phi: np.tan(np.pi / 4 + phi / 2)  # noqa: E731
    n = np.log(np.cos(p1) / np.cos(p2)) / np.log(t(p2) / t(p1))
    f = np.cos(p1) * t(p1) ** n / n
    rho0 = r * f / t(p0) ** n
    x, y = np.meshgrid(x_km, y_km)
    rho = np.sign(n) * np.hypot(x, rho0 - y)
    lat = 2 * np.arctan((r * f / rho) ** (1 / n)) - np.pi / 2
    lon = l0 + np.arctan2(x, rho0 - y) / n
    return np.rad2deg(lat), (np.rad2deg(lon) + 180) % 360 - 180


def write_projected(path, frames: int = 6, ny: int = 16, nx: int = 24, dx: float = 50.0) -> xr.Dataset:
    """A regional model's output on a Lambert conformal grid across the antimeridian, as CORDEX-like files lay it out."""
    x, y = dx * (np.arange(nx) - (nx - 1) / 2), dx * (np.arange(ny) - (ny - 1) / 2)
    lat, lon = lcc_lat_lon(x, y)
    t = np.arange(frames)[:, None, None]
    tas = 280 - 0.6 * (lat - 55) + 2 * np.sin(np.deg2rad(3 * lon) + 0.4 * t) + np.cos(x[None, None, :] / 150.0 + 0.3 * t) * np.sin(y[None, :, None] / 110.0)
    bnds = lambda v: np.stack([v - dx / 2, v + dx / 2], 1)  # noqa: E731
    ds = xr.Dataset(
        {"tas": (("time", "y", "x"), tas.astype(np.float32), {"units": "K", "standard_name": "air_temperature", "long_name": "near-surface air temperature",
                                                            "grid_mapping": "lambert_conformal", "coordinates": "lat lon"}),
         "lambert_conformal": ((), np.int32(0), dict(LCC)),
         "x_bnds": (("x", "bnds"), bnds(x)), "y_bnds": (("y", "bnds"), bnds(y))},
        coords={"time": ("time", np.arange(frames) * 6.0, {"units": "hours since 2020-01-01", "calendar": "standard", "standard_name": "time", "axis": "T"}),
                "x": ("x", x, {"units": "km", "standard_name": "projection_x_coordinate", "long_name": "x coordinate of projection", "axis": "X",
                               "bounds": "x_bnds"}),
                "y": ("y", y, {"units": "km", "standard_name": "projection_y_coordinate", "long_name": "y coordinate of projection", "axis": "Y",
                               "bounds": "y_bnds"}),
                "lat": (("y", "x"), lat, {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude"}),
                "lon": (("y", "x"), lon, {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"})},
        attrs={"Conventions": "CF-1.8", "title": "projected test field", "history": "written by the hpcvsr tests"})
    enc = {k: {"_FillValue": None} for k in ("time", "x", "y", "lat", "lon", "x_bnds", "y_bnds")}
    ds.to_netcdf(path, engine="netcdf4", encoding=enc)
    return ds


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("grids")
    sst, lat, lon = global_field()
    out = {"global": write_global(d / "global.nc", sst, lat, lon), "sst": sst}
    for shift in (16, 32):  # a quarter turn (longitudes 90..444.375) and a half turn (-180..174.375)
        shifted, shifted_lon = rolled(sst, lon, shift)
        out[shift] = write_global(d / f"roll{shift}.nc", shifted, lat, shifted_lon)
    write_projected(d / "lcc.nc")
    out["lcc"] = str(d / "lcc.nc")
    return out


@pytest.fixture(scope="module")
def run_dir(files, tmp_path_factory):
    """A tiny 2d_3d run trained on the global field (not tied to its grid)."""
    d = tmp_path_factory.mktemp("run")
    proc = run_cli("hpcvsr.train", "--run-dir", str(d), *sets(data__source="archive", data__path=files["global"], data__var="sst",
                                                              data__val_fraction=0.3), *TINY)  # 5-frame windows in 24 frames
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d


def test_periodic_detection():
    deg = np.arange(64) * STEP
    assert cf.periodic_longitude("lon", deg, EAST) and cf.periodic_longitude("lon", deg - 180, EAST)  # 0..360 and -180..180
    assert cf.periodic_longitude("lon", np.roll(deg, 16), EAST)  # the seam inside the file
    assert cf.periodic_longitude("lon", deg[::-1] + 90, EAST)  # decreasing, 90..444
    assert cf.periodic_longitude("rlon", deg, {"units": "degrees", "standard_name": "grid_longitude"})
    assert cf.periodic_longitude("longitude", (np.arange(1440) * 0.25).astype(np.float32), {"units": "degrees_east"})  # ERA5, float32
    assert not cf.periodic_longitude("lon", np.arange(40) * 0.25 - 10, EAST)  # regional
    assert not cf.periodic_longitude("lon", deg[:-1], EAST)  # one cell short of the globe
    assert not cf.periodic_longitude("lon", np.arange(64) * 5.6, EAST)  # 358.4 degrees
    assert not cf.periodic_longitude("lon", np.sort(np.r_[deg[:32], deg[32:] + 1.0]), EAST)  # uneven
    assert not cf.periodic_longitude("x", deg, {"units": "km"}) and not cf.periodic_longitude("lon", deg, {})  # no degrees
    assert not cf.periodic_longitude("lon", np.tile(deg, (2, 1)), EAST)  # 2-D
    grid = {"ydim": "lat", "xdim": "lon", "coords": {"lon": {"dims": ["lon"], "values": deg, "attrs": EAST},
                                                     "lat": {"dims": ["lat"], "values": np.arange(32.0), "attrs": {}}}}
    assert cf.periodic_x(grid) and not cf.periodic_x(dict(grid, xdim="lat"))
    da = xr.DataArray(np.zeros((2, 32, 64)), dims=("time", "lat", "lon"), coords={"lon": ("lon", deg, EAST)})
    assert cf.periodic_x({"ydim": "lat", "xdim": "lon", "coords": {"lon": {"dims": ["lon"], "values": da.lon.values, "attrs": dict(da.lon.attrs)}}})


def test_archive_periodic_x(files):
    for key in ("global", 16, 32):
        arc = CFArchive(files[key], "sst")
        assert arc.periodic_x and arc.describe()["periodic_x"]
        assert not cf.periodic_x(arc.grid(cols=slice(0, 62)))  # a crop of the columns is regional
    assert not CFArchive(files["lcc"], "tas").periodic_x


def test_wrapped_tiles_and_columns():
    from hpcvsr.inference.engine import columns, wrapped_tiles

    assert wrapped_tiles(8, 4, 2) == [(-2, 6, 0, 4), (2, 10, 4, 8)]
    assert wrapped_tiles(10, 4, 3) == [(-3, 7, 0, 4), (1, 11, 4, 8), (5, 13, 8, 10)]
    assert wrapped_tiles(6, 0, 8) == wrapped_tiles(6, 9, 8) == [(-8, 14, 0, 6)]  # a halo wider than the frame wraps more than once
    x = torch.arange(12).reshape(2, 6)
    assert columns(x, -2, 3).tolist() == [[4, 5, 0, 1, 2], [10, 11, 6, 7, 8]]
    assert columns(x, 1, 3).data_ptr() == x[:, 1:3].data_ptr()  # inside the frame: a view
    assert columns(x, -8, 14)[0].tolist() == [4, 5, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 1]


def _infer(run_dir, src, out, *extra):
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(src), "--output", str(out), "--set", "threads=1", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return xr.open_dataset(out)


@pytest.fixture(scope="module")
def outputs(files, run_dir, tmp_path_factory):
    """The infer command's NetCDF outputs of the global and the projected file."""
    d = tmp_path_factory.mktemp("out")
    _infer(run_dir, files["global"], d / "global_sr.nc").close()
    _infer(run_dir, files["lcc"], d / "lcc_sr.nc", "--var", "tas").close()
    return {"global": d / "global_sr.nc", "lcc": d / "lcc_sr.nc"}


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_global_field_has_no_seam(files, run_dir, outputs, tmp_path):
    """Shifting the seam does not change the output (first and last columns included), with or without tiles;
    land stays missing exactly, in the original and the shifted file alike."""
    mask = np.isnan(files["sst"]).repeat(2, -2).repeat(2, -1)
    with xr.open_dataset(outputs["global"]) as ref:
        base = ref["sst"].values
        lon, lon_bnds = ref["lon"].values, ref["lon_bnds"].values
        assert np.array_equal(np.isnan(base), mask)
        assert np.array_equal(ref["lat_bnds"].values[[0, -1], [0, 1]], [-90, 90])  # fine cells split the coarse ones
        assert np.allclose(lon_bnds[:, 1] - lon_bnds[:, 0], STEP / 2) and lon_bnds[0, 0] == -STEP / 2
    span = float(np.nanmax(base) - np.nanmin(base))
    worst = {}
    for key, tile in ((16, 0), (32, 0), (0, 64), (16, 64)):  # tiles of 32 LR columns: the seam at and inside one
        src = files["global"] if key == 0 else files[key]
        with _infer(run_dir, src, tmp_path / f"sr_{key}_{tile}.nc", "--set", f"infer.tile={tile}") as out:
            got = np.roll(out["sst"].values, 2 * key, axis=-1)
            assert np.allclose(np.roll(out["lon"].values, 2 * key) % 360, lon % 360)
        assert np.array_equal(np.isnan(got), mask), (key, tile)
        worst[key, tile] = float(np.nanmax(np.abs(got - base))) / span
        print(f"shift {key} columns, tile {tile}: max |difference| / range {worst[key, tile]:.3g}")
    assert max(worst.values()) <= 1e-5, worst


def test_a_place_conditioned_model_wraps_its_maps_across_the_seam(files, tmp_path):
    """A model with learned location maps on a global grid: moving the seam by 16 columns, and its maps with it,
    moves the output with it, tiled and untiled (the input degraded across the seam too); without the wrap the
    edge columns differ."""
    from hpcvsr.inference.engine import Predictor
    from hpcvsr.models.conditioning import Conditioned

    run = tmp_path / "loc"
    proc = run_cli("hpcvsr.train", "--run-dir", str(run), *sets(data__source="archive", data__path=files["global"], data__var="sst",
                                                                data__val_fraction=0.3, condition__location_channels=2), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    n = 6

    def sr(pred, path, periodic=True):
        arc = CFArchive(path, "sst")
        raw = torch.from_numpy(arc.read(0, n))[:, None]
        return pred.resolve_chunk(raw, frames=(0, n), read=(0, n), total=n, degrade=True,  # the file is on the training grid
                                  periodic_x=periodic and arc.periodic_x)[0][:, 0].numpy()

    for tile in (0, 32):
        pred = Predictor(str(run), torch.device("cpu"), tile=tile)
        base = sr(pred, files["global"])
        span = float(np.nanmax(base) - np.nanmin(base))
        unwrapped = sr(pred, files["global"], periodic=False)
        assert np.nanmax(np.abs(unwrapped - base)) > 1e-3 * span  # the wrap reaches the edge columns
        parts = [m for net in (pred.net2d, pred.net) if net is not None for m in net.modules() if isinstance(m, Conditioned)]
        assert parts
        with torch.no_grad():
            for m in parts:  # the maps move with the seam, 16 columns of the grid
                m.location.copy_(torch.roll(m.location, -16, dims=-1))
        got = np.roll(sr(pred, files[16]), 16, axis=-1)
        assert np.array_equal(np.isnan(got), np.isnan(base))
        assert np.nanmax(np.abs(got - base)) <= 1e-5 * span, tile


@pytest.mark.parametrize("degrade", [False, True])
def test_predictor_wraps_across_the_seam(files, run_dir, degrade):
    """The library path: :meth:`Predictor.resolve_chunk` with ``periodic_x`` on frames read from a shifted file,
    a high-resolution input degraded across the seam too; without it the seam shows."""
    from hpcvsr.inference.engine import Predictor

    pred = Predictor(str(run_dir), torch.device("cpu"))
    s, n = (1 if degrade else pred.scale), 6  # the first six months: one chunk

    def sr(path, periodic):
        arc = CFArchive(path, "sst")
        raw = torch.from_numpy(arc.read(0, n))[:, None]
        out = pred.resolve_chunk(raw, frames=(0, n), read=(0, n), total=n, degrade=degrade, periodic_x=periodic and arc.periodic_x)
        return out[0][:, 0].numpy()

    base = sr(files["global"], True)
    span = float(np.nanmax(base) - np.nanmin(base))
    got = np.roll(sr(files[16], True), 16 * s, axis=-1)
    assert np.array_equal(np.isnan(got), np.isnan(base))
    assert np.nanmax(np.abs(got - base)) <= 1e-5 * span
    seam = np.roll(sr(files[16], False), 16 * s, axis=-1)
    assert np.nanmax(np.abs(seam - base)) > 1e-3 * span


def test_projected_grid_keeps_its_map(files, outputs):
    """A Lambert conformal grid in km across the antimeridian: fine x/y and their bounds, the grid_mapping, and 2-D
    latitude/longitude interpolated to the fine grid (longitudes kept in -180..180 across the date line)."""
    with xr.open_dataset(files["lcc"]) as src, xr.open_dataset(outputs["lcc"]) as out:
        assert out["tas"].shape == (6, 32, 48)
        for d, n in (("x", 24), ("y", 16)):
            coarse, fine = src[d].values, out[d].values
            assert np.allclose(fine, np.repeat(coarse, 2) + np.tile([-12.5, 12.5], n))  # 50 km cells split in two, centred
            assert out[d].attrs["units"] == "km" and out[d].attrs["standard_name"] == f"projection_{d}_coordinate"
            b = out[f"{d}_bnds"].values
            assert np.allclose(b, np.stack([fine - 12.5, fine + 12.5], 1)) and out[d].attrs["bounds"] == f"{d}_bnds"
        assert out["tas"].attrs["grid_mapping"] == "lambert_conformal"
        assert set(out["tas"].encoding["coordinates"].split()) == {"lat", "lon"}
        gm = out["lambert_conformal"].attrs
        assert {k: gm[k] for k in LCC if k != "standard_parallel"} == {k: v for k, v in LCC.items() if k != "standard_parallel"}
        assert list(gm["standard_parallel"]) == LCC["standard_parallel"]
        lat, lon = lcc_lat_lon(out["x"].values, out["y"].values)
        assert np.abs(out["lat"].values - lat).max() < 0.01
        assert np.abs((out["lon"].values - lon + 180) % 360 - 180).max() < 0.01  # no cell interpolated the long way round
        assert out["lon"].values.min() >= -180 and out["lon"].values.max() < 180


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # compliance-checker's own deprecated plugins
@pytest.mark.parametrize("name", ["global", "lcc"])
def test_outputs_no_less_cf_compliant_than_inputs(files, outputs, name, tmp_path):
    pytest.importorskip("compliance_checker", reason="compliance-checker not installed (pip install compliance-checker)")
    from .test_cf import cf_failures

    assert cf_failures(str(outputs[name]), tmp_path) <= cf_failures(files[name], tmp_path)
