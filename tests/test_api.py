"""The Python API: hpcvsr.load(run)(dataarray), degrade, metrics, train and load_config.

A fixed-domain run (learned location channels and time features) is trained with the console
command on a CF NetCDF file whose variable is called t2m, so that the example of docs/python.md
runs exactly as written; the API's outputs are compared with the infer command's files.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from .conftest import ROOT, TINY, run_cli, sets, swe_file

xr = pytest.importorskip("xarray")
pytest.importorskip("dask")

ONE = ["--set", "threads=1"]  # bitwise comparisons need equal threads on both sides
PRELUDE = "import torch; torch.set_num_threads(1)\n"


def python(code: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder holding F.nc (t2m, 40 hourly frames of 32x32 on a fixed grid) and R, a fixed-domain run trained on it."""
    d = tmp_path_factory.mktemp("api")
    swe_file(d / "swe.nc", frames=40, size=(32, 32), seed=3)
    with xr.open_dataset(d / "swe.nc") as ds:
        ds[["h"]].rename(h="t2m").load().to_netcdf(d / "F.nc")
    proc = run_cli("hpcvsr", "train", "--config", "fixed_domain", "--set", "data.path=F.nc", "--set", "data.var=t2m", "--run-dir", "R", *TINY,
                   cwd=d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = python("""
        import hpcvsr, xarray as xr
        sr = hpcvsr.load("R")
        sr.degrade(xr.open_dataset("F.nc")["t2m"]).to_netcdf("LR.nc")  # the coarse frames whose fine grid is the model's
    """, cwd=d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d


def test_console_lists_subcommands_and_presets():
    proc = run_cli("hpcvsr", "--help")
    assert proc.returncode == 0
    for name in ("train", "infer", "data", "evaluate", "bench", "scaling", "mapfig", "summarize", "configs"):
        assert f"  {name} " in proc.stdout
    proc = run_cli("hpcvsr", "configs")
    assert proc.returncode == 0 and "fixed_domain" in proc.stdout and "quickstart" in proc.stdout
    proc = run_cli("hpcvsr", "train", "--config", "no_such_preset", "--run-dir", "x")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "packaged presets: " in proc.stderr


def test_docs_example_runs_as_written_and_matches_infer_degrade(work):
    example = open(os.path.join(ROOT, "docs", "python.md")).read().split("```python\n")[1].split("```")[0]
    assert 'hpcvsr.load("R")' in example and "sr(sr.degrade(hr))" in example  # the page's first example, run as written
    proc = python(example + "\nimport json; print('JSON', json.dumps(hpcvsr.metrics(out, hr)))\nprint('LAZY', hasattr(out.data, 'dask'))\n",
                  cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    api = json.loads(proc.stdout.split("JSON ", 1)[1].splitlines()[0])
    assert "LAZY True" in proc.stdout
    stats = work / "stats.json"
    proc = run_cli("hpcvsr.infer", "--run-dir", "R", "--input", "F.nc", "--var", "t2m", "--output", "deg.h5", "--degrade", "--stats", str(stats),
                   *ONE, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmd = json.load(open(stats))["metrics"]
    assert set(api) == set(cmd)
    for k, v in cmd.items():  # the API degrades in physical units and the command in normalised ones: float rounding apart
        assert api[k] == pytest.approx(v, rel=1e-4, abs=1e-7), k


def test_dataarray_equals_infer_output_bitwise_with_its_coordinates(work):
    proc = run_cli("hpcvsr.infer", "--run-dir", "R", "--input", "LR.nc", "--var", "t2m", "--output", "sr.nc", *ONE, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = python("""
        import hpcvsr, xarray as xr
        sr = hpcvsr.load("R")
        da = xr.open_dataset("LR.nc")["t2m"]
        out = sr(da)
        lazy = sr(xr.open_dataset("LR.nc", chunks={"time": 24})["t2m"])
        assert hasattr(lazy.data, "dask") and lazy.chunks[0] == (32, 8)  # work chunks are infer.block_frames
        assert (lazy.values == out.values).all(), "lazy != eager"
        out.to_netcdf("api.nc")
        hpcvsr.load("R", tile=16, tile_halo=8)(da).to_netcdf("api_tiled.nc")
    """, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with xr.open_dataset(work / "sr.nc") as cmd, xr.open_dataset(work / "api.nc") as api, xr.open_dataset(work / "LR.nc") as src, \
            xr.open_dataset(work / "F.nc") as fine:
        a, c = api["t2m"], cmd["t2m"]
        assert a.dims == c.dims == src["t2m"].dims and a.shape == c.shape == (40, 32, 32)
        assert np.array_equal(a.values, c.values)  # bitwise
        for name in ("time", "y", "x"):
            assert np.array_equal(a[name].values, c[name].values), name
            assert np.allclose(a[name].values.astype(float), fine[name].values.astype(float), rtol=1e-9), name  # back on the fine grid
        assert {k: v for k, v in a.attrs.items() if k != "history"} == {k: v for k, v in src["t2m"].attrs.items() if k != "history"}
        assert a.attrs["history"].splitlines()[0].endswith(a.attrs["history"].splitlines()[0].split(": ", 1)[1])
        assert "hpcvsr run " in a.attrs["history"].splitlines()[0]
    proc = run_cli("hpcvsr.infer", "--run-dir", "R", "--input", "LR.nc", "--var", "t2m", "--output", "sr_tiled.nc", "--set", "infer.tile=16",
                   "--set", "infer.tile_halo=8", *ONE, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with xr.open_dataset(work / "sr_tiled.nc") as cmd, xr.open_dataset(work / "api_tiled.nc") as api, xr.open_dataset(work / "sr.nc") as whole:
        assert np.array_equal(api["t2m"].values, cmd["t2m"].values)  # on the same tiles and halos, bitwise
        assert np.abs(api["t2m"].values - whole["t2m"].values).max() < 1e-5 * float(np.ptp(whole["t2m"].values))


def test_missing_cells_stay_missing(work):
    proc = python("""
        import hpcvsr, numpy as np, xarray as xr
        sr = hpcvsr.load("R")
        da = xr.open_dataset("LR.nc")["t2m"].load()
        da[3, 5, 7] = np.nan
        da[10, 0:2, 0:16] = np.nan
        out = sr(da)
        missing = np.isnan(out.values)
        print("MISSING", int(missing.sum()), bool(missing[3, 10:12, 14:16].all()), bool(missing[10, 0:4, :].all()), int(np.isnan(out.values[4]).sum()))
    """, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, cell, rows, other = proc.stdout.split("MISSING ", 1)[1].split()
    assert int(count) == 2 * 2 * (1 + 2 * 16)  # each missing coarse cell: its 2x2 fine cells, nothing else
    assert cell == rows == "True" and int(other) == 0


def test_tensor_and_dataset_forms_and_a_refused_grid(work):
    proc = python("""
        import hpcvsr, torch, xarray as xr
        sr = hpcvsr.load("R")
        ds = xr.open_dataset("LR.nc")
        try:
            sr(torch.rand(10, 16, 16))
        except hpcvsr.UserError as exc:
            print("TENSOR", exc)  # a time-conditioned model needs the frames' times
        out = sr(ds)
        assert isinstance(out, xr.Dataset) and list(out.data_vars) == ["t2m"] and out["t2m"].shape == (40, 32, 32)
        assert (out["t2m"].values == sr(ds["t2m"]).values).all()
        try:
            sr(ds["t2m"].isel(y=slice(0, 8)))
        except hpcvsr.UserError as exc:
            print("GRID", exc)
        try:
            sr(ds["t2m"].assign_coords(x=ds.x + 5000.0))
        except hpcvsr.UserError as exc:
            print("MOVED", exc)
    """, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TENSOR " in proc.stdout and "time features" in proc.stdout
    assert "GRID " in proc.stdout and "applies only to that grid" in proc.stdout
    assert "MOVED " in proc.stdout and "x coordinate" in proc.stdout


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_tensor_and_several_variables_round_trip(tmp_path):
    swe_file(tmp_path / "uv.nc", frames=40, size=(32, 32), seed=4)
    proc = run_cli("hpcvsr.train", "--run-dir", "UV", "--set", "data.source=archive", "--set", "data.path=uv.nc", "--set", "data.vars=[u, v]",
                   *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("hpcvsr.infer", "--run-dir", "UV", "--input", "uv.nc", "--var", "u,v", "--output", "uv_sr.nc", *ONE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = python("""
        import hpcvsr, torch, xarray as xr, numpy as np
        sr = hpcvsr.load("UV")
        ds = xr.open_dataset("uv.nc")
        out = sr(ds)
        cmd = xr.open_dataset("uv_sr.nc")
        for v in ("u", "v"):
            assert np.array_equal(out[v].values, cmd[v].values), v
            assert out[v].attrs["units"] == ds[v].attrs["units"]
        t = sr(torch.from_numpy(np.stack([ds.u.values, ds.v.values], 1)))
        assert t.shape == (40, 2, 64, 64) and np.array_equal(t.numpy(), np.stack([out.u.values, out.v.values], 1))
        try:
            sr(ds["u"])
        except hpcvsr.UserError as exc:
            print("ONE", exc)
    """, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ONE " in proc.stdout and "give it a Dataset" in proc.stdout


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A folder holding P, a 2d_3d run not tied to a grid, trained through hpcvsr.train from Python."""
    d = tmp_path_factory.mktemp("plain")
    overrides = ["data.frames=30", "data.size=[32, 32]", *TINY[1::2]]
    proc = python(f"""
        import hpcvsr
        cfg = hpcvsr.load_config("quickstart", overrides={overrides!r})
        assert hpcvsr.train(cfg, "P") == 0
        assert callable(hpcvsr.train) and isinstance(hpcvsr.load("P"), hpcvsr.SuperResolver)
        try:
            hpcvsr.load_config("quickstart", overrides=["model2d.name=nope"])
        except hpcvsr.UserError as exc:
            print("BAD", exc)
    """, cwd=d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "BAD model2d.name must be one of" in proc.stdout
    return d


def test_train_and_load_config_from_python(plain):
    assert (plain / "P" / "model.pt").exists() and (plain / "P" / "metrics.json").exists()
    again = run_cli("hpcvsr", "train", "--config", "quickstart", "--run-dir", "P", *sets(data__frames=30, data__size="[32,32]"), *TINY, cwd=plain)
    assert again.returncode == 0 and "Traceback" not in again.stderr  # the command finds the same run finished


@pytest.mark.slow  # minutes: 2,000 frames twice (run with -m slow)
def test_lazy_output_of_2000_frames_keeps_memory_bounded(plain):
    """2,000 frames of 32x32 made lazily (never all in memory) through a 2d_3d model (not tied to a grid):
    the mean of the 33 MB super-resolved archive is computed chunk by chunk. The arrays allocated meanwhile
    (numpy and dask, traced by tracemalloc in a second pass) peak at under an eighth of the output; a result
    held in memory would need all of it. The resident memory's growth is reported, not asserted: it is the
    allocator's and the threads' too, and moves with the machine's load (1-31 MB measured)."""
    proc = python("""
        import resource, tracemalloc, numpy as np, dask.array as dsa, xarray as xr, hpcvsr

        def frames(T):
            base = np.random.default_rng(0).random((7, 32, 32), dtype=np.float32) * 0.1 + 1.0
            data = dsa.map_blocks(lambda b, block_info=None: base[np.arange(*block_info[None]["array-location"][0]) % 7],
                                  dsa.zeros((T, 32, 32), chunks=(24, 32, 32), dtype=np.float32), dtype=np.float32)
            return xr.DataArray(data, dims=("time", "y", "x"), name="h")

        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        sr = hpcvsr.load("P", block_frames=16, batch=4)
        assert np.isfinite(float(sr(frames(500)).mean()))  # warm-up: networks, allocator, threads and dask have run
        out = sr(frames(2000))
        assert hasattr(out.data, "dask")
        before = peak()
        total = float(out.mean())
        grew = peak() - before
        tracemalloc.start()
        assert float(sr(frames(2000)).mean()) == total  # the same archive again gives the same mean
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print("RESULT", out.nbytes, traced, grew, np.isfinite(total))
    """, cwd=plain)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nbytes, traced, grew, finite = proc.stdout.split("RESULT ", 1)[1].split()
    assert finite == "True" and int(nbytes) == 2000 * 64 * 64 * 4
    assert int(traced) < int(nbytes) / 8, f"arrays peaked at {int(traced) / 1e6:.1f} MB for a {int(nbytes) / 1e6:.1f} MB output"
    print(f"arrays peaked at {int(traced) / 1e6:.1f} MB, resident memory grew by {int(grew) / 1e6:.1f} MB, for a {int(nbytes) / 1e6:.1f} MB output")
