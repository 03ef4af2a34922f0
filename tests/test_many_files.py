"""Archives as users keep them: one file per frame (time a scalar variable, int16 packing, a projected
grid), many files read as one archive in time order, Zarr stores in and out (resumed after a kill,
2-rank output equal to 1-rank), and bad collections refused before any output."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from .cfdata import ENCODING_RAIN as ENCODING
from .cfdata import radar_frame
from .cfdata import write_radar_frames as write_frames
from .conftest import ROOT, assert_user_error, crash_after_chunks, run_cli, run_mpi, sets

xr = pytest.importorskip("xarray")
pytest.importorskip("zarr")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::RuntimeWarning")

FRAMES = 40
NY, NX = 32, 48  # the radar grid of tests.cfdata
ONE_THREAD = ["--set", "threads=1"]


def stacked(folder, out) -> str:
    """The same frames stacked in one file, as a user would with xarray."""
    parts = [xr.open_dataset(os.path.join(folder, f), decode_times=False) for f in sorted(os.listdir(folder))]
    ds = xr.concat([p.set_coords("time").expand_dims("time") for p in parts], dim="time", data_vars="minimal",
                   coords="minimal", compat="override").sortby("time")
    ds["rain"] = ds["rain"].transpose("time", "y", "x")
    ds.to_netcdf(out, encoding=ENCODING)
    for p in parts:
        p.close()
    return str(out)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    write_frames(d / "frames")
    stacked(d / "frames", d / "stacked.nc")
    tiny = sets(train2d__epochs=1, train2d__patches_per_epoch=32, train2d__patch=16, train3d__epochs=1, train3d__patches_per_epoch=16,
                train3d__patch=16, train3d__batch_size=4)
    proc = run_cli("hpcvsr.train", "--run-dir", "R", *sets(data__source="archive", data__path="frames/*.nc", data__var="rain"), *tiny,
                   *ONE_THREAD, cwd=d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d


def _infer(d, inp, out, *extra):
    return run_cli("hpcvsr.infer", "--run-dir", "R", "--input", inp, "--output", out, "--set", "infer.block_frames=8", *ONE_THREAD, *extra,
                   cwd=d)


def same_attrs(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_files_of_one_frame_to_zarr_equal_the_stacked_netcdf(archive):
    d = archive
    for inp, out in (("frames/*.nc", "sr.zarr"), ("stacked.nc", "sr.nc"), ("frames", "sr_folder.zarr")):
        proc = _infer(d, inp, out)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert not any(p.endswith((".partial", ".parts")) for p in os.listdir(d))
    with xr.open_zarr(d / "sr.zarr") as z, xr.open_dataset(d / "sr.nc") as n, xr.open_zarr(d / "sr_folder.zarr") as f:
        assert z["rain"].shape == (FRAMES, 2 * NY, 2 * NX)
        assert np.array_equal(z["rain"].values, n["rain"].values, equal_nan=True)
        assert np.array_equal(f["rain"].values, n["rain"].values, equal_nan=True)
        assert np.array_equal(z["time"].values, n["time"].values)
        assert np.all(np.diff(z["time"].values) == np.timedelta64(10, "m"))  # in time order, whatever the file names
        assert np.array_equal(z["x"].values, n["x"].values) and z["x"].values[1] - z["x"].values[0] == 1000.0  # the fine grid
        assert z["rain"].attrs["grid_mapping"] == "crs" and same_attrs(z["crs"].attrs, n["crs"].attrs)
        assert set(z.variables) == set(n.variables)
        for v in n.variables:
            assert same_attrs(z[v].attrs, n[v].attrs), v
        differ = {k for k in set(n.attrs) | set(z.attrs) if not np.array_equal(np.asarray(n.attrs.get(k)), np.asarray(z.attrs.get(k)))}
        assert differ == {"history", "hpcvsr_source_file"}  # when it was written, and from which files
        assert z["rain"].encoding["chunks"][0] == 8  # chunked along time as the work is
        assert float(z["rain"].min()) >= 0.0  # bounded by the files' valid_min (packed units, decoded)
    assert json.load(open(d / "R" / "metrics.json"))["bounds"] == {"rain": [0.0, None]}
    with xr.open_dataset(d / "sr.nc", decode_times=False) as n, xr.open_dataset(d / "frames" / "radar_000.nc", decode_times=False) as f:
        assert n["time"].dtype == f["time"].dtype  # the files' own time type (float64 here), not what a re-encoding gives


def test_python_api_on_many_files_equals_the_command(archive):
    d = archive
    if not (d / "sr.zarr").exists():
        assert _infer(d, "frames/*.nc", "sr.zarr").returncode == 0
    code = (
        "import torch, hpcvsr, numpy as np, xarray as xr\n"
        "torch.set_num_threads(1)\n"
        "rain = hpcvsr.open_archive('frames/*.nc')['rain']\n"
        "assert rain.chunks is not None  # lazy\n"
        "out = hpcvsr.load('R', block_frames=8)(rain)\n"
        "out.to_dataset().to_zarr('api.zarr', mode='w')\n"
        "a, b = xr.open_zarr('api.zarr')['rain'].values, xr.open_zarr('sr.zarr')['rain'].values\n"
        "print('MAXDIFF', float(np.nanmax(np.abs(a - b))), np.array_equal(np.isnan(a), np.isnan(b)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=d, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    diff, same_mask = proc.stdout.split("MAXDIFF ", 1)[1].split()
    assert float(diff) == 0.0 and same_mask == "True"


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_zarr_store_as_input_and_reference(archive):
    d = archive
    with xr.open_dataset(d / "stacked.nc", decode_times=False) as ds:
        ds.to_zarr(d / "in.zarr", mode="w")
    proc = _infer(d, "in.zarr", "from_store.nc")
    assert proc.returncode == 0, proc.stderr[-3000:]
    if not (d / "sr.nc").exists():
        assert _infer(d, "stacked.nc", "sr.nc").returncode == 0
    with xr.open_dataset(d / "from_store.nc") as a, xr.open_dataset(d / "sr.nc") as b:
        assert np.array_equal(a["rain"].values, b["rain"].values, equal_nan=True)
    proc = _infer(d, "frames/*.nc", "metrics.zarr", "--degrade")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with xr.open_zarr(d / "metrics.zarr") as z:
        assert z["metric_frame_psnr"].shape == (FRAMES,) and np.isfinite(z["metric_frame_psnr"].values).all()
        assert "hpcvsr_metric_psnr" in z.attrs


@pytest.mark.parametrize("case", ["other grid", "other variable", "duplicate time", "gap"])
def test_bad_collections_are_refused_before_any_output(archive, tmp_path, case):
    folder = tmp_path / "frames"
    write_frames(folder, n=12)
    odd = folder / "radar_odd.nc"
    if case == "other grid":
        radar_frame(12, shift_x=500.0).to_netcdf(odd, encoding=ENCODING)
        message = "coordinate 'x' differs"
    elif case == "other variable":
        radar_frame(12, var="snow").to_netcdf(odd)
        message = "variable"
    elif case == "duplicate time":
        radar_frame(3).to_netcdf(odd, encoding=ENCODING)
        message = "is also in"
    else:
        radar_frame(12, minutes=10 * 15).to_netcdf(odd, encoding=ENCODING)
        message = "a gap in the time series"
    out = tmp_path / "out.zarr"
    proc = run_cli("hpcvsr.infer", "--run-dir", str(archive / "R"), "--input", str(folder / "*.nc"), "--output", str(out))
    assert_user_error(proc, message, "radar_")
    assert not out.exists() and not os.path.exists(str(out) + ".partial") and not os.path.exists(str(out) + ".lock")
    if case == "gap":
        proc = run_cli("hpcvsr.infer", "--run-dir", str(archive / "R"), "--input", str(folder / "*.nc"), "--output", str(out), "--allow-gaps")
        assert proc.returncode == 0, proc.stderr[-2000:]
        with xr.open_zarr(out) as z:
            assert z["rain"].shape[0] == 13


def test_an_existing_store_is_never_overwritten(archive):
    d = archive
    if not (d / "sr.zarr").exists():
        assert _infer(d, "frames/*.nc", "sr.zarr").returncode == 0
    proc = _infer(d, "frames/*.nc", "sr.zarr")
    assert_user_error(proc, "exists; refusing to overwrite")


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
@pytest.mark.mpi
def test_two_rank_zarr_equals_one_rank_and_resumes_after_a_kill(archive, tmp_path):
    d = archive
    one = tmp_path / "one.zarr"
    assert _infer(d, "frames/*.nc", str(one), "--set", "infer.block_frames=4").returncode == 0
    args = ["-m", "hpcvsr.infer", "--run-dir", str(d / "R"), "--input", str(d / "frames/*.nc"), "--output", str(tmp_path / "two.zarr"),
            "--set", "infer.block_frames=4", *ONE_THREAD]
    crash_after_chunks(args, 3)
    assert not (tmp_path / "two.zarr").exists()  # nothing looks complete
    again = run_mpi(2, *args)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    skipped = sum(int(l.split(";")[1].split()[0]) for l in again.stdout.splitlines() if "already written" in l)
    assert skipped >= 3
    with xr.open_zarr(one) as a, xr.open_zarr(tmp_path / "two.zarr") as b:
        assert np.array_equal(a["rain"].values, b["rain"].values, equal_nan=True)
        assert np.array_equal(a["time"].values, b["time"].values)


def _days_file(path, *, calendar: str = "standard", units: str = "days", start: float = 0.0, step: float = 1.0, n: int = 12):
    ds = radar_frame(0).drop_vars("time").expand_dims(time=n).copy(deep=True)
    ds["rain"].values[:] = np.stack([radar_frame(k)["rain"].values for k in range(n)])
    ds = ds.assign_coords(time=("time", start + step * np.arange(n), {"units": units, "calendar": calendar, "standard_name": "time",
                                                                        "origin": "2000-01-01"}))
    ds.to_netcdf(path)
    return str(path)


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_time_units_without_an_origin_are_refused_until_given(archive, tmp_path):
    f = _days_file(tmp_path / "days.nc")
    out = tmp_path / "sr.nc"
    proc = run_cli("hpcvsr.infer", "--run-dir", str(archive / "R"), "--input", f, "--output", str(out))
    assert_user_error(proc, "units 'days' without an origin", "attribute 'origin'", "data.time_origin", "--time-origin")
    assert not out.exists()
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "T"), *sets(data__source="archive", data__path=f, data__var="rain"))
    assert_user_error(proc, "without an origin", "data.time_origin")
    assert not (tmp_path / "T").exists()
    proc = run_cli("hpcvsr.infer", "--run-dir", str(archive / "R"), "--input", f, "--output", str(out), "--time-origin", "2000-01-01",
                   *ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with xr.open_dataset(out, decode_times=False) as ds:
        assert ds["time"].attrs["units"] == "days since 2000-01-01" and list(ds["time"].values[:2]) == [0.0, 1.0]


def test_other_calendars_across_files(archive, tmp_path):
    """Monthly files in a 360-day calendar: 30-day steps, ordered by cftime; a missing month is a gap."""
    folder = tmp_path / "monthly"
    folder.mkdir()
    for m in range(6):
        _days_file(folder / f"m{m}.nc", calendar="360_day", units="days since 1850-01-01", start=30.0 * m, n=1)
    ds = hpcvsr_open(folder)
    assert [d.month for d in ds["time"].values] == [1, 2, 3, 4, 5, 6] and ds["time"].values[0].calendar == "360_day"
    os.remove(folder / "m3.nc")
    proc = run_cli("hpcvsr.infer", "--run-dir", str(archive / "R"), "--input", str(folder), "--output", str(tmp_path / "x.zarr"))
    assert_user_error(proc, "a gap in the time series", "m4.nc", "--allow-gaps")


def hpcvsr_open(path):
    import hpcvsr
    return hpcvsr.open_archive(str(path))
