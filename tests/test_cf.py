"""CF NetCDF reading (hpcvsr.io.cf) and writing (hpcvsr.io.ncout), with xarray / netCDF4 as the reference."""

import doctest
import glob
import json
import math
import os
import pickle
import re

import numpy as np
import pytest

xr = pytest.importorskip("xarray")
netCDF4 = pytest.importorskip("netCDF4")
cftime = pytest.importorskip("cftime")

from hpcvsr.errors import UserError  # noqa: E402
from hpcvsr.io import cf, ncout  # noqa: E402
from hpcvsr.io.cf import CFArchive, fine_coordinate, fine_grid, fine_positions  # noqa: E402
from hpcvsr.io.ncout import write_cf  # noqa: E402

from . import cfdata  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every kind of test archive, built once: {name: (path, in-memory dataset)}."""
    d = tmp_path_factory.mktemp("cf")
    out = {}

    def add(name, builder, **kw):
        path = str(d / f"{name}.nc")
        out[name] = (path, builder(path, **kw))

    add("t2m", cfdata.write_t2m, frames=100, seed=1)
    add("t2m_nc3", cfdata.write_t2m, frames=12, seed=2, format="NETCDF3_64BIT")
    add("t2m_packed", cfdata.write_t2m, frames=12, seed=3, packed=True)
    add("t2m_6h", cfdata.write_t2m, frames=4, seed=4, start_hour=6)
    add("valid_packed", cfdata.write_t2m, frames=6, seed=5, packed=True, valid_range=(275.0, 285.0))
    add("valid_float", cfdata.write_t2m, frames=6, seed=5, valid_range=(275.0, 285.0))
    add("levels", cfdata.write_levels, frames=6)
    add("member1", cfdata.write_levels, frames=4, members=1)
    add("member2", cfdata.write_levels, frames=4, members=2)
    add("sst", cfdata.write_masked, frames=12, missing_frame=5)
    add("rotated", cfdata.write_rotated, frames=10)
    add("transposed", cfdata.write_transposed, frames=6)
    add("timeless", cfdata.write_timeless, frames=5)
    return out


def xr_frames(path, var, *, dims=None, **sel):
    """What xarray decodes (float32), the independent reference."""
    with xr.open_dataset(path) as ds:
        da = ds[var].sel(sel) if sel else ds[var]
        return np.asarray((da.transpose(*dims) if dims else da).values, np.float32)


def test_doctests():
    for mod in (cf, ncout):
        assert doctest.testmod(mod).failed == 0


# -- reading ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t2m", "t2m_nc3", "t2m_packed"])
def test_reads_what_xarray_decodes(files, name):
    path, ref = files[name]
    a = CFArchive(path, "t2m")
    assert a.shape == (len(ref.time), 33, 49) and len(a) == len(ref.time)
    assert a.dims == ("time", "latitude", "longitude") and a.time == "time" and a.cf_time
    assert a.units == "K" and isinstance(a.units, str)
    assert a.attrs == {"units": "K", "long_name": "2 metre temperature", "standard_name": "air_temperature"}
    assert a.global_attrs["Conventions"] == "CF-1.7" and a.notes == []
    x = a.read(2, 7)
    assert x.dtype == np.float32 and x.shape == (5, 33, 49)
    np.testing.assert_array_equal(x, xr_frames(path, "t2m")[2:7])
    if name == "t2m_packed":
        assert a.packed and a.dtype == "int16" and a.missing_possible
        assert a.packing_step == pytest.approx(cfdata.era5_packing(ref.t2m.values)[0])
        # half a packing step, plus float32 rounding of values near 280 K
        assert np.abs(x - ref.t2m.values[2:7]).max() <= a.packing_step / 2 + 2e-5
    else:
        assert not a.packed and a.packing_step == 0.0 and not a.missing_possible and a.fill_value is None
        np.testing.assert_array_equal(x, ref.t2m.values[2:7])
    with netCDF4.Dataset(path) as nc:
        raw = nc["time"][:].data
    t = a.time_values()
    assert t.dtype == np.int32 and np.array_equal(t, raw) and np.array_equal(a.time_values(3, 5), raw[3:5])
    assert a.time_attrs["units"] == "hours since 1900-01-01 00:00:00.0" and a.time_attrs["calendar"] == "gregorian"
    a.close()


def test_rotated_pole_dims_found_from_axis_attributes(files):
    path, ref = files["rotated"]
    a = CFArchive(path, "tas")
    assert a.dims == ("valid_time", "rlat", "rlon") and a.time == "valid_time"
    np.testing.assert_array_equal(a.read(0, 10), xr_frames(path, "tas"))
    g = a.grid(rows=slice(2, 10), cols=slice(5, 30))
    assert set(g["coords"]) == {"rlat", "rlon", "lat", "lon"}
    assert g["coords"]["lat"]["dims"] == ["rlat", "rlon"] and g["coords"]["lat"]["values"].shape == (8, 25)
    np.testing.assert_array_equal(g["coords"]["lon"]["values"], ref.lon.values[2:10, 5:30])
    assert g["coords"]["lat"]["attrs"]["standard_name"] == "latitude"
    m = a.describe()
    assert m["grid_mapping"]["name"] == "rotated_pole"
    assert m["grid_mapping"]["attrs"]["grid_mapping_name"] == "rotated_latitude_longitude"
    assert m["time"]["attrs"]["calendar"] == "noleap" and m["time"]["values"].dtype == np.float64
    assert m["fill_value"] == pytest.approx(1e20, rel=1e-7) and m["dtype"] == "float32"


def test_dims_in_any_order_read_as_time_y_x(files):
    path, _ = files["transposed"]
    a = CFArchive(path, "t2m")
    assert a.dims == ("time", "latitude", "longitude") and a.shape == (6, 33, 49)
    np.testing.assert_array_equal(a.read(1, 4), xr_frames(path, "t2m", dims=("time", "latitude", "longitude"))[1:4])
    np.testing.assert_array_equal(a.read(1, 4, rows=slice(3, 9), cols=slice(0, 20, 2)),
                                  xr_frames(path, "t2m", dims=("time", "latitude", "longitude"))[1:4, 3:9, 0:20:2])


def test_dims_found_by_name_or_position(tmp_path):
    path = str(tmp_path / "named.nc")
    xr.Dataset({"v": (("j", "i", "t"), np.zeros((3, 4, 5), np.float32))}).to_netcdf(path)
    a = CFArchive(path, "v")
    assert a.dims == ("t", "j", "i") and a.shape == (5, 3, 4) and a.time is None
    meta_only = str(tmp_path / "meta.nc")
    xr.Dataset({"v": (("xc", "date", "yc"), np.zeros((4, 2, 3), np.float32))},
               coords={"date": ("date", [0.0, 1.0], {"units": "days since 2000-01-01"}),
                       "yc": ("yc", [0.0, 1.0, 2.0], {"standard_name": "projection_y_coordinate", "units": "m"}),
                       "xc": ("xc", np.arange(4.0), {"axis": "X"})}).to_netcdf(meta_only)
    m = CFArchive(meta_only, "v")
    assert m.dims == ("date", "yc", "xc") and m.cf_time and m.notes == []
    twice = str(tmp_path / "twice.nc")
    xr.Dataset({"v": (("time", "lat", "latitude"), np.zeros((2, 3, 4), np.float32))}).to_netcdf(twice)
    with pytest.raises(UserError, match="lat, latitude all look like axis Y"):
        CFArchive(twice, "v")
    path2 = str(tmp_path / "bare.nc")
    cfdata.write_timeless(path2, frames=3)
    b = CFArchive(path2, "h")
    assert b.dims == ("sample", "row", "col") and b.time is None and not b.cf_time
    assert any("by position" in n for n in b.notes)
    with pytest.raises(UserError, match="no CF time coordinate; time features need one"):
        b.time_features(0, 3)


def test_extra_dimension_needs_a_selection(files):
    path, _ = files["levels"]
    with pytest.raises(UserError) as exc:
        CFArchive(path, "t")
    msg = str(exc.value)
    for frag in ("'level'", "size 3", "1000, 850, 500", "data.select: {level: 1000}", "--select level=1000", "--isel level=0", path):
        assert frag in msg, (frag, msg)
    a = CFArchive(path, "t", select={"level": 500})
    assert a.dims == ("time", "latitude", "longitude") and a.shape == (6, 33, 49)
    np.testing.assert_array_equal(a.read(0, 6), xr_frames(path, "t", level=500))
    np.testing.assert_array_equal(CFArchive(path, "t", select={"level": "850"}).read(1, 3), xr_frames(path, "t", level=850)[1:3])
    np.testing.assert_array_equal(CFArchive(path, "t", isel={"level": 2}).read(0, 2), xr_frames(path, "t", level=500)[:2])
    with pytest.raises(UserError, match=r"level=700 is not one of the 3 values of 'level' \(1000, 850, 500\)"):
        CFArchive(path, "t", select={"level": 700})
    with pytest.raises(UserError, match="cannot select 'pressure'.*time, level, latitude, longitude"):
        CFArchive(path, "t", select={"pressure": 500})
    with pytest.raises(UserError, match="not an index"):
        CFArchive(path, "t", isel={"level": 3})
    np.testing.assert_array_equal(CFArchive(path, "t", isel={"level": "1"}).read(0, 1), xr_frames(path, "t", level=850)[:1])
    with pytest.raises(UserError, match=r"has dimensions \(latitude, longitude\) after selection"):
        CFArchive(path, "t", isel={"level": 0, "time": 0})


def test_size_one_dimension_dropped_and_noted_larger_ones_named_together(files):
    a = CFArchive(files["member1"][0], "t", select={"level": 850})
    assert a.shape == (4, 33, 49) and len(a.notes) == 1 and "'number' of size 1" in a.notes[0]
    np.testing.assert_array_equal(a.read(0, 4), xr_frames(files["member1"][0], "t", level=850, number=0))
    path = files["member2"][0]
    with pytest.raises(UserError) as exc:
        CFArchive(path, "t")
    assert "'number' (size 2" in str(exc.value) and "'level' (size 3" in str(exc.value)
    b = CFArchive(path, "t", select={"level": 500}, isel={"number": 1})
    np.testing.assert_array_equal(b.read(0, 4), xr_frames(path, "t", level=500, number=1))


def test_missing_values_are_nan_where_xarray_has_nan(files):
    path, ref = files["sst"]
    a = CFArchive(path, "sst")
    assert a.missing_possible and a.fill_value == -32767.0
    x, expect = a.read(0, 12), xr_frames(path, "sst")
    np.testing.assert_array_equal(np.isnan(x), np.isnan(expect))
    np.testing.assert_array_equal(x, expect)  # NaN compare equal in assert_array_equal
    assert np.isnan(x[5]).all() and not np.isnan(x[4]).all()
    land = cfdata.land_mask(33, 49)
    assert 0.15 < land.mean() < 0.3 and np.isnan(x[:, land]).all() and not np.isnan(x[4][~land]).any()


@pytest.mark.parametrize("name", ["valid_packed", "valid_float"])
def test_valid_range_masked_like_netcdf4(files, name):
    path, _ = files[name]
    a = CFArchive(path, "t2m")
    assert a.missing_possible
    x = a.read(0, 6)
    with netCDF4.Dataset(path) as nc:
        ref = nc["t2m"][:]  # netCDF4 masks values outside valid_range itself
    assert 0 < np.ma.count_masked(ref) < ref.size
    np.testing.assert_array_equal(np.isnan(x), np.ma.getmaskarray(ref))
    assert np.nanmax(np.abs(x - ref.filled(np.nan))) < 3e-5


def test_reads_only_the_frames_asked_for(files, monkeypatch):
    from xarray.backends import netCDF4_

    path, _ = files["t2m"]
    log, keys = [], []
    original = netCDF4_.NetCDF4ArrayWrapper.__getitem__

    def spy(self, key):
        keys.append((self.variable_name, key))
        return original(self, key)

    monkeypatch.setattr(netCDF4_.NetCDF4ArrayWrapper, "__getitem__", spy)
    a = CFArchive(path, "t2m", log=log)
    keys.clear()
    x = a.read(10, 12)
    assert x.shape == (2, 33, 49)
    assert log == [{"file": path, "var": "t2m", "start": 10, "stop": 12}]
    data_keys = [k for v, k in keys if v == "t2m"]
    assert len(data_keys) == 1 and data_keys[0].tuple[0] == slice(10, 12, 1)


def test_user_errors_name_the_file(files, tmp_path):
    path, _ = files["t2m_nc3"]
    with pytest.raises(UserError, match="file not found"):
        CFArchive(str(tmp_path / "nope.nc"), "t2m")
    junk = tmp_path / "junk.nc"
    junk.write_text("not a netcdf file\n")
    with pytest.raises(UserError, match=f"cannot open {re.escape(str(junk))} as NetCDF"):
        CFArchive(str(junk), "t2m")
    with pytest.raises(UserError, match=r"no variable 'tp' \(has: t2m\)"):
        CFArchive(path, "tp")
    a = CFArchive(path, "t2m")
    with pytest.raises(UserError, match="frames 10:13 outside 0:12"):
        a.read(10, 13)
    b = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(b.read(0, 2), a.read(0, 2))


def test_time_features_in_several_calendars(files):
    a = CFArchive(files["t2m_6h"][0], "t2m")  # 2020-01-01 06:00 hourly; 2020 has 366 days
    f = a.time_features(0, 3)
    assert f.shape == (3, 4) and f.dtype == np.float32
    for k, hour in enumerate((6, 7, 8)):
        day = hour / 24 / 366
        a, b = 2 * math.pi * hour / 24, 2 * math.pi * day
        expect = [math.sin(a), math.cos(a), math.sin(b), math.cos(b)]
        np.testing.assert_allclose(f[k], expect, atol=1e-6)
    r = CFArchive(files["rotated"][0], "tas").time_features()  # noleap, 6-hourly from 2050-12-31 00:00
    np.testing.assert_allclose(r[0], [0, 1, math.sin(2 * math.pi * 364 / 365), math.cos(2 * math.pi * 364 / 365)], atol=1e-6)
    np.testing.assert_allclose(r[4], [0, 1, 0, 1], atol=1e-6)  # 2051-01-01 00:00
    np.testing.assert_allclose(r[5], [1, 0, math.sin(2 * math.pi * 0.25 / 365), math.cos(2 * math.pi * 0.25 / 365)], atol=1e-6)
    f360 = cf.time_features([cftime.datetime(2000, 12, 30, 12, calendar="360_day")])[0]
    np.testing.assert_allclose(f360, [0, -1, math.sin(2 * math.pi * 359.5 / 360), math.cos(2 * math.pi * 359.5 / 360)], atol=1e-6)
    fg = cf.time_features([cftime.datetime(2021, 7, 2, 12, calendar="gregorian")])[0]  # day 183 of 365, noon: half the year
    np.testing.assert_allclose(fg, [0, -1, 0, -1], atol=1e-6)


# -- coordinates of the fine grid -------------------------------------------------------------------------


def test_fine_coordinate_hand_values():
    lat = np.array([60.0, 59.75, 59.5])  # descending, x2 centred
    np.testing.assert_allclose(fine_coordinate(lat, fine_positions(3, 2), None, ("lat",), "lat", "lon", False),
                               [60.0625, 59.9375, 59.8125, 59.6875, 59.5625, 59.4375])
    x = np.array([0.0, 3.0, 6.0])
    np.testing.assert_allclose(fine_positions(3, 3), np.arange(9) / 3 - 1 / 3)
    np.testing.assert_allclose(fine_coordinate(x, None, fine_positions(3, 3), ("x",), "y", "x", False), np.arange(-1.0, 8.0))
    sampled = fine_positions(3, 2, centred=False)
    np.testing.assert_allclose(fine_coordinate(x, None, sampled, ("x",), "y", "x", False), [0, 1.5, 3, 4.5, 6, 7.5])
    gauss = np.array([0.0, 1.0, 3.0])  # non-uniform spacing followed cell by cell
    np.testing.assert_allclose(fine_coordinate(gauss, [-0.5, 0.5, 1.5, 2.5], None, ("lat",), "lat", "lon", False), [-0.5, 0.5, 2.0, 4.0])
    pole = np.array([89.5, 90.0])
    np.testing.assert_allclose(fine_coordinate(pole, [1.5], None, ("lat",), "lat", "lon", False, is_latitude=True), [90.0])


def test_fine_coordinate_longitudes():
    p = fine_positions(3, 2)
    np.testing.assert_allclose(fine_coordinate(np.array([350.0, 0, 10]), None, p, ("lon",), "lat", "lon", True),
                               [347.5, 352.5, 357.5, 2.5, 7.5, 12.5])
    signed = np.array([170.0, 180, -170])  # a [-180, 180) source crossing the date line
    np.testing.assert_allclose(fine_coordinate(signed, None, [1.5, 2.25], ("lon",), "lat", "lon", True), [-175.0, -167.5])
    starts_at_zero = fine_coordinate(np.array([0.0, 0.25, 0.5]), None, p, ("lon",), "lat", "lon", True)
    np.testing.assert_allclose(starts_at_zero, [-0.0625, 0.0625, 0.1875, 0.3125, 0.4375, 0.5625])  # stays monotonic
    lon2 = np.array([[359.0, 1.0], [358.0, 0.0]])  # curvilinear, crossing 0 / 360: unwrapped [[359, 361], [358, 360]]
    np.testing.assert_allclose(fine_coordinate(lon2, [0.5, 0.0], [0.5, 1.0], ("y", "x"), "y", "x", True), [[359.5, 0.5], [0.0, 1.0]])


def test_fine_coordinate_bilinear_on_curvilinear():
    v = np.array([[0.0, 10.0], [100.0, 130.0]])  # f = 100 y + 10 x + 20 x y
    out = fine_coordinate(v, [0.5, -0.5], [0.5, 1.5], ("y", "x"), "y", "x", False)
    f = lambda y, x: 100 * y + 10 * x + 20 * x * y  # noqa: E731
    np.testing.assert_allclose(out, [[f(0.5, 0.5), f(0.5, 1.5)], [f(-0.5, 0.5), f(-0.5, 1.5)]])
    xt = fine_coordinate(v.T, [0.5, -0.5], [0.5, 1.5], ("x", "y"), "y", "x", False)  # stored (x, y): same values, transposed
    np.testing.assert_allclose(xt, out.T)


def test_fine_grid_of_an_archive(files):
    a = CFArchive(files["t2m"][0], "t2m")
    g = fine_grid(a.grid(), fine_positions(33, 2), fine_positions(49, 2))
    np.testing.assert_allclose(g["coords"]["latitude"]["values"], 60.0625 - 0.125 * np.arange(66))
    np.testing.assert_allclose(g["coords"]["longitude"]["values"], -0.0625 + 0.125 * np.arange(98))
    assert g["coords"]["longitude"]["attrs"]["units"] == "degrees_east" and (g["ydim"], g["xdim"]) == ("latitude", "longitude")


# -- writing ----------------------------------------------------------------------------------------------


def upsample(archive, scale=2):
    """frames(a, b) of a stand-in model: nearest-neighbour x``scale`` of the input (NaN kept)."""
    return lambda a, b: np.repeat(np.repeat(archive.read(a, b), scale, axis=1), scale, axis=2)


def write_x2(src, var, dst, *, select=None, **kw):
    a = CFArchive(src, var, select=select)
    meta = a.describe()
    grid = fine_grid(meta["grid"], fine_positions(a.shape[1], 2), fine_positions(a.shape[2], 2))
    kw = {"history": "hpcvsr infer --scale 2", "fill_value": meta["fill_value"], **kw}
    write_cf(dst, frames=kw.pop("frames", upsample(a)), n_frames=len(a), meta=meta, grid=grid, var=var, **kw)
    return a, meta, grid


def test_write_cf_round_trip(files, tmp_path):
    src, _ = files["sst"]
    dst = str(tmp_path / "sr.nc")
    calls = []
    a = CFArchive(src, "sst")
    inner = upsample(a)

    def frames(s, e):
        calls.append((s, e))
        assert not os.path.exists(dst)
        return inner(s, e)

    _, meta, grid = write_x2(src, "sst", dst, frames=frames, chunk=5, frame_metrics={"psnr": np.arange(12.0)},
                             global_attrs={"scale": 2, "tiled": True, "config": {"model": "fsrcnn"}})
    assert calls == [(0, 5), (5, 10), (10, 12)] and not glob.glob(dst + ".tmp*")
    expect = inner(0, 12)
    with xr.open_dataset(dst, decode_times=False) as out, xr.open_dataset(src, decode_times=False) as inp:
        assert out["time"].dtype == np.int32 and np.array_equal(out["time"].values, inp["time"].values)
        assert out["time"].attrs == inp["time"].attrs
        np.testing.assert_array_equal(out["latitude"].values, grid["coords"]["latitude"]["values"])
        np.testing.assert_allclose(out["longitude"].values, -0.0625 + 0.125 * np.arange(98))
        for key in ("units", "long_name", "standard_name"):
            assert out["sst"].attrs[key] == inp["sst"].attrs[key]
        assert out["sst"].dims == ("time", "latitude", "longitude") and out["sst"].encoding["_FillValue"] == -32767.0
        np.testing.assert_array_equal(out["sst"].values, expect)  # NaN exactly where missing
        assert out.attrs["Conventions"] == "CF-1.8" and out.attrs["institution"] == inp.attrs["institution"]
        lines = out.attrs["history"].split("\n")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: hpcvsr infer --scale 2", lines[0])
        assert lines[1:] == inp.attrs["history"].split("\n")
        assert out["psnr"].attrs["long_name"] == "per-frame psnr" and out["psnr"].dims == ("time",)
        assert out.attrs["hpcvsr_scale"] == 2 and out.attrs["hpcvsr_tiled"] == 1
        assert json.loads(out.attrs["hpcvsr_config"]) == {"model": "fsrcnn"}
    with xr.open_dataset(dst) as out, xr.open_dataset(src) as inp:
        np.testing.assert_array_equal(out["time"].values, inp["time"].values)  # decoded datetimes
    with netCDF4.Dataset(dst) as nc:
        v = nc["sst"]
        assert v.chunking() == [1, 66, 98] and v.filters()["zlib"] and v._FillValue == np.float32(-32767.0)
        v.set_auto_mask(False)
        assert np.array_equal(v[:] == -32767.0, np.isnan(expect))  # missing stored as the fill value
    back = CFArchive(dst, "sst")
    assert back.dims == ("time", "latitude", "longitude")
    np.testing.assert_array_equal(back.read(3, 7), expect[3:7])


def test_write_cf_packed_within_half_a_step(files, tmp_path):
    src, _ = files["sst"]
    a = CFArchive(src, "sst")
    data = upsample(a)(0, 12)
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    dst = str(tmp_path / "packed.nc")
    write_x2(src, "sst", dst, pack={"dtype": "int16", "lo": lo, "hi": hi})
    step = ncout.packing_step(lo, hi)
    with xr.open_dataset(dst) as out:
        assert out["sst"].encoding["dtype"] == np.int16 and out["sst"].encoding["_FillValue"] == -32767
        assert out["sst"].encoding["scale_factor"] == pytest.approx(step)
        got = out["sst"].values
    np.testing.assert_array_equal(np.isnan(got), np.isnan(data))
    assert np.nanmax(np.abs(got - data)) <= step / 2 * (1 + 1e-6)
    with netCDF4.Dataset(dst) as nc:
        nc["sst"].set_auto_maskandscale(False)
        raw = nc["sst"][:]
    assert raw.min() == -32767 and raw[~np.isnan(data)].min() == -32766 and raw.max() == 32767
    bad = str(tmp_path / "bad.nc")
    with pytest.raises(ValueError, match=r"\d+ values of frames 0:12 lie outside the packing range"):
        write_x2(src, "sst", bad, chunk=16, pack={"dtype": "int16", "lo": lo, "hi": hi - 1.0})
    assert not os.path.exists(bad) and not glob.glob(bad + ".tmp*")


def test_write_cf_failure_leaves_no_partial_and_keeps_old_output(files, tmp_path):
    src, _ = files["t2m_nc3"]
    dst = str(tmp_path / "sr.nc")
    write_x2(src, "t2m", dst)
    before = open(dst, "rb").read()
    a = CFArchive(src, "t2m")

    def failing(s, e):
        if s > 0:
            assert glob.glob(dst + ".tmp*")
            raise RuntimeError("model crashed")
        return upsample(a)(s, e)

    with pytest.raises(RuntimeError, match="model crashed"):
        write_x2(src, "t2m", dst, frames=failing, chunk=4)
    assert not glob.glob(dst + ".tmp*") and open(dst, "rb").read() == before
    with pytest.raises(ValueError, match="no fill_value"):
        write_x2(src, "t2m", str(tmp_path / "nan.nc"), frames=lambda s, e: np.full((e - s, 66, 98), np.nan, np.float32))
    with pytest.raises(ValueError, match="expected"):
        write_x2(src, "t2m", str(tmp_path / "shape.nc"), frames=lambda s, e: np.zeros((e - s, 33, 49), np.float32))
    assert sorted(os.listdir(tmp_path)) == ["sr.nc"]


def test_write_cf_curvilinear_grid_and_grid_mapping(files, tmp_path):
    src, ref = files["rotated"]
    dst = str(tmp_path / "rot.nc")
    _, meta, grid = write_x2(src, "tas", dst)
    with xr.open_dataset(dst) as out, xr.open_dataset(src) as inp:
        np.testing.assert_array_equal(out["valid_time"].values, inp["valid_time"].values)  # noleap cftime dates
        assert out["tas"].encoding["coordinates"].split() == ["lat", "lon"]
        assert out["tas"].attrs["grid_mapping"] == "rotated_pole" and out["tas"].attrs["cell_methods"] == "valid_time: point"
        assert out["rotated_pole"].attrs["grid_north_pole_latitude"] == 39.25
        assert out["lat"].dims == ("rlat", "rlon") and out["lat"].shape == (66, 98)
        # fine lat/lon: bilinear in (rlat, rlon) index space, close to the exact rotated-pole transform
        rlat, rlon = out["rlat"].values, out["rlon"].values
        np.testing.assert_allclose(rlat, -4.0625 + 0.125 * np.arange(66))
        lat, lon = cfdata.rotated_to_geographic(rlat[:, None], rlon[None, :], 39.25, -162.0)
        assert np.abs(out["lat"].values - lat).max() < 1e-3 and np.abs(out["lon"].values - lon).max() < 1e-3
    back = CFArchive(dst, "tas")
    assert back.dims == ("valid_time", "rlat", "rlon") and back.time_attrs["calendar"] == "noleap"


def test_write_cf_keeps_the_selected_level(files, tmp_path):
    src, _ = files["member1"]
    dst = str(tmp_path / "t500.nc")
    a, meta, _ = write_x2(src, "t", dst, select={"level": 500})
    assert set(meta["scalar_coords"]) == {"level", "number"}
    with xr.open_dataset(dst) as out:
        assert out["level"].values == 500 and out["level"].attrs["units"] == "hPa" and out["number"].values == 0
        assert set(out["t"].encoding["coordinates"].split()) == {"level", "number"}
        np.testing.assert_array_equal(out["t"].values, upsample(a)(0, 4))


def test_write_cf_without_time(files, tmp_path):
    src, _ = files["timeless"]
    dst = str(tmp_path / "bare.nc")
    write_x2(src, "h", dst)
    with xr.open_dataset(dst) as out:
        assert out["h"].dims == ("sample", "row", "col") and out["h"].shape == (5, 32, 40)
        assert out["sample"].attrs["long_name"] == "frame index" and out["sample"].values.tolist() == list(range(5))
        assert out.attrs["title"] == "bare test field"


def cf_failures(path, tmp_path, ignore=None) -> int:
    """Number of failed CF-1.8 checks compliance-checker reports for ``path`` (not counting those
    whose every message matches the regex ``ignore``)."""
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite.load_all_available_checkers()
    report = str(tmp_path / (os.path.basename(path) + ".json"))
    ComplianceChecker.run_checker(path, ["cf:1.8"], 0, "normal", output_filename=report, output_format="json_new")
    (result,) = json.load(open(report)).values()
    checks = [c for key in ("high_priorities", "medium_priorities", "low_priorities") for c in result["cf:1.8"].get(key, [])]
    failed = [c for c in checks if c["value"][0] < c["value"][1]]
    return sum(1 for c in failed if ignore is None or not c["msgs"] or not all(ignore.search(m) for m in c["msgs"]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # compliance-checker's own deprecated plugins
@pytest.mark.parametrize("name, var, pack", [("t2m_nc3", "t2m", False), ("sst", "sst", True), ("rotated", "tas", False),
                                             ("member1", "t", False), ("transposed", "t2m", False)])
def test_output_no_less_cf_compliant_than_input(files, tmp_path, name, var, pack):
    pytest.importorskip("compliance_checker", reason="compliance-checker not installed (pip install compliance-checker)")
    src, _ = files[name]
    dst = str(tmp_path / f"{name}_sr.nc")
    kw = {}
    if pack:
        data = upsample(CFArchive(src, var))(0, len(CFArchive(src, var)))
        kw["pack"] = {"dtype": "int16", "lo": float(np.nanmin(data)), "hi": float(np.nanmax(data))}
    write_x2(src, var, dst, select={"level": 500} if name == "member1" else None, **kw)
    assert cf_failures(dst, tmp_path) <= cf_failures(src, tmp_path)
