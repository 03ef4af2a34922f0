"""Real-looking CF archives end to end: train on an odd packed grid, super-resolve into CF NetCDF with the
right time and fine-grid coordinates (x2 and x3, 1 and 2 ranks), masks, and extra dimensions.

The archives are written by tests/cfdata.py with xarray (ERA5-like: int16 packing, _FillValue, an odd
33x49 grid with descending latitudes, hours since 1900); nothing is downloaded.
"""

import json

import h5py
import numpy as np
import pytest
import xarray as xr

from hpcvsr.io.cf import CFArchive
from hpcvsr.io.sequences import open_archive

from .cfdata import write_levels, write_masked, write_t2m
from .conftest import ROOT, TINY, assert_user_error, run_cli, run_mpi, sets


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    d = tmp_path_factory.mktemp("cf")
    write_t2m(str(d / "train.nc"), frames=240, seed=3, packed=True)
    write_t2m(str(d / "test.nc"), frames=36, seed=4, packed=True, start_hour=240)
    write_masked(str(d / "sst.nc"), frames=30, missing_frame=27)
    write_levels(str(d / "levels.nc"), frames=12)
    return d


@pytest.fixture(scope="module")
def runs(arch, tmp_path_factory):
    """Tiny trained runs at x2 and x3 on the packed odd-grid archive."""
    out = {}
    for scale in (2, 3):
        d = tmp_path_factory.mktemp(f"run{scale}")
        proc = run_cli("hpcvsr.train", "--run-dir", str(d), *sets(data__source="archive", data__path=arch / "train.nc",
                       data__test_path=arch / "test.nc", data__var="t2m", degrade__scale=scale), *TINY)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[scale] = d
    return out


def test_reader_dispatch_decodes_packed_values_like_xarray(arch):
    arc = open_archive(str(arch / "test.nc"), "t2m")
    assert isinstance(arc, CFArchive) and arc.units == "K" and arc.packed
    with xr.open_dataset(arch / "test.nc") as ds:
        ref = ds["t2m"].values[3:7]
        step = float(ds["t2m"].encoding["scale_factor"])
    got = arc.read(3, 7)
    assert np.array_equal(got, ref.astype(np.float32))
    assert 266 < float(got.min()) and float(got.max()) < 295  # kelvin, not packed integers
    assert step > 0 and np.abs(got - ref).max() <= step / 2


@pytest.mark.slow
def test_quickstart_config_trains_on_an_odd_packed_grid_and_beats_bicubic(arch, tmp_path):
    """Only data.source/path/test_path/var set: no crop, patch or size overrides (slow: the whole default training)."""
    proc = run_cli("hpcvsr.train", "--config", "configs/quickstart.yaml", "--run-dir", str(tmp_path / "run"),
                   *sets(data__source="archive", data__path=arch / "train.nc", data__test_path=arch / "test.nc", data__var="t2m"), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "frames cropped to rows (0, 32), columns (0, 48)" in proc.stdout
    assert "training with 32 px patches" in proc.stdout
    rows = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in proc.stdout.splitlines() if line.startswith("| ")
            and line.split("|")[1].strip() in ("bicubic", "2d", "2d_3d")}
    assert rows["2d"] > rows["bicubic"] + 0.5, rows
    assert "RMSE (K)" in proc.stdout
    m = json.load(open(tmp_path / "run" / "metrics.json"))
    assert m["patches"] == {"train2d": 32, "train3d": 32}


@pytest.mark.parametrize("scale", [2, pytest.param(3, marks=pytest.mark.slow)])  # x3: CI's second pass
def test_netcdf_output_has_input_time_and_fine_grid(arch, runs, tmp_path, scale):
    nc, h5 = tmp_path / "sr.nc", tmp_path / "sr.h5"
    for out in (nc, h5):
        proc = run_cli("hpcvsr.infer", "--run-dir", str(runs[scale]), "--input", str(arch / "test.nc"), "--output", str(out), "--set", "threads=1")
        assert proc.returncode == 0, proc.stderr[-3000:]
    with xr.open_dataset(nc) as sr, xr.open_dataset(arch / "test.nc") as src, xr.open_dataset(nc, decode_times=False) as raw:
        assert list(sr.data_vars)[0] == "t2m" and sr["t2m"].dims == ("time", "latitude", "longitude")
        assert sr["t2m"].shape == (36, 33 * scale, 49 * scale)
        assert sr["t2m"].attrs["units"] == "K" and sr["t2m"].attrs["standard_name"] == "air_temperature"
        assert np.array_equal(sr["time"].values, src["time"].values)
        with xr.open_dataset(arch / "test.nc", decode_times=False) as src_raw:
            assert np.array_equal(raw["time"].values, src_raw["time"].values)
            assert raw["time"].attrs["units"] == "hours since 1900-01-01 00:00:00.0" and raw["time"].attrs["calendar"] == "gregorian"
        # hand-computed: coarse latitude 60 - 0.25 i, longitude 0.25 i; fine pixel j at coarse index (j + 0.5) / s - 0.5
        j = np.arange(33 * scale)
        assert np.allclose(sr["latitude"].values, 60 - 0.25 * ((j + 0.5) / scale - 0.5), atol=1e-9)
        assert sr["latitude"].values[0] == pytest.approx({2: 60.0625, 3: 60.0 + 0.25 / 3}[scale])
        k = np.arange(49 * scale)
        assert np.allclose(sr["longitude"].values, 0.25 * ((k + 0.5) / scale - 0.5), atol=1e-9)
        assert sr.history.splitlines()[0].endswith(f"python -m hpcvsr.infer --run-dir {runs[scale]} --input {arch / 'test.nc'} "
                                                   f"--output {nc} --set threads=1")
        assert "grib_to_netcdf" in sr.history.splitlines()[1]
        values = sr["t2m"].values
    with h5py.File(h5) as f:
        assert np.array_equal(values, f["sr"][:])


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_netcdf_output_two_ranks_equals_one_rank(arch, runs, tmp_path):
    one, two = tmp_path / "one.nc", tmp_path / "two.nc"
    args = ["--run-dir", str(runs[2]), "--input", str(arch / "test.nc"), "--set", "threads=1", "--set", "infer.block_frames=8"]
    proc = run_cli("hpcvsr.infer", *args, "--output", str(one))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_mpi(2, "-m", "hpcvsr.infer", *args, "--output", str(two), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with xr.open_dataset(one) as a, xr.open_dataset(two) as b:
        assert np.array_equal(a["t2m"].values, b["t2m"].values)
        for c in ("time", "latitude", "longitude"):
            assert np.array_equal(a[c].values, b[c].values)
    assert not list(tmp_path.glob("*.parts")) and not list(tmp_path.glob("*.h5"))


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_masked_archive_metrics_ignore_the_mask_and_output_keeps_it(arch, tmp_path):
    run = tmp_path / "run"
    proc = run_cli("hpcvsr.train", "--run-dir", str(run), *sets(data__source="archive", data__path=arch / "sst.nc", data__var="sst"), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    h5, nc = tmp_path / "sr.h5", tmp_path / "sr.nc"
    for out in (h5, nc):
        proc = run_cli("hpcvsr.infer", "--run-dir", str(run), "--input", str(arch / "sst.nc"), "--output", str(out), "--degrade", "--set", "threads=1")
        assert proc.returncode == 0, proc.stderr[-3000:]
    with xr.open_dataset(arch / "sst.nc") as ds:
        hr = ds["sst"].values[:, 0:32, 0:48].astype(np.float64)  # centred crop of 33x49 at x2
    missing = np.isnan(hr)
    assert missing[27].all() and 0.1 < missing[0].mean() < 0.35
    with h5py.File(h5) as f:
        sr = f["sr"][:].astype(np.float64)
        norm = json.loads(f.attrs["normalisation"])
        stored = dict(f["metrics"].attrs)
        assert json.loads(f.attrs["input_crop"]) == {"rows": [0, 32], "cols": [0, 48]}
    assert np.array_equal(np.isnan(sr), missing)  # missing exactly on the mask
    span = norm["hi"] - norm["lo"]
    d = ((sr - hr) / span)[~missing]
    mse = float(np.mean(d**2))
    assert stored["mse"] == pytest.approx(mse, rel=1e-6)
    assert stored["mae"] == pytest.approx(float(np.mean(np.abs(d))), rel=1e-6)
    assert stored["psnr"] == pytest.approx(10 * np.log10(1 / mse), rel=1e-6)
    per_frame = [10 * np.log10(1 / np.mean((((sr[t] - hr[t]) / span)[~missing[t]]) ** 2)) for t in range(len(hr)) if t != 27]
    assert stored["psnr_mean"] == pytest.approx(np.mean(per_frame), rel=1e-6)
    assert stored["frames"] == len(hr) - 1  # the all-missing frame has no score
    with xr.open_dataset(nc) as out, xr.open_dataset(nc, mask_and_scale=False) as raw:
        assert np.array_equal(np.isnan(out["sst"].values), missing)
        assert "_FillValue" in raw["sst"].attrs
    # the map figure of the NetCDF output (LR | SR | HR on latitude / longitude)
    fig = tmp_path / "map.png"
    proc = run_cli("hpcvsr.mapfig", "--sr", str(nc), "--hr", str(arch / "sst.nc"), "--var", "sst", "--frame", "3", "--out", str(fig))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 20000
    proc = run_cli("hpcvsr.mapfig", "--sr", str(nc), "--hr", str(arch / "sst.nc"), "--var", "nope", "--out", str(tmp_path / "m2.png"))
    assert_user_error(proc, "no variable 'nope'")
    assert not (tmp_path / "m2.png").exists()


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_extra_dimension_needs_a_selection(arch, runs, tmp_path):
    args = ["--run-dir", str(runs[2]), "--input", str(arch / "levels.nc"), "--var", "t", "--set", "threads=1"]
    proc = run_cli("hpcvsr.infer", *args, "--output", str(tmp_path / "a.nc"))
    assert_user_error(proc, "'level'", "--select level=", "data.select")
    assert not list(tmp_path.iterdir())
    proc = run_cli("hpcvsr.infer", *args, "--output", str(tmp_path / "b.nc"), "--select", "level=500")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with xr.open_dataset(tmp_path / "b.nc") as out:
        assert out["t"].shape == (12, 66, 98) and float(out["level"]) == 500
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "run"), *sets(data__source="archive", data__path=arch / "levels.nc",
                   data__var="t"))
    assert_user_error(proc, "'level'", "data.select")
    assert not (tmp_path / "run").exists()
