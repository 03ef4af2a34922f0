"""Paired training: the inputs are a coarse run's frames (data.lr_path), the targets the fine run's.

The pairs here are written with xarray: a fine SWE run, and a coarse file on the nested grid whose
frames are the fine run's block means plus a drift that grows with time (what a coarse solver's own
run looks like next to the fine one), so that they differ from any degradation of the fine frames.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from .conftest import ROOT, TINY, assert_user_error, mpi_env, mpirun_cmd, run_cli, sets, swe_file

xr = pytest.importorskip("xarray")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def coarse_of(fine: str, out: str, *, scale: int = 2, frames: int | None = None, shift_hours: float = 0.0, shift_x: float = 0.0,
              size: tuple | None = None) -> str:
    """A coarse run of the flow in ``fine``: block means plus a drift that grows with the frame index, on the nested grid."""
    with xr.open_dataset(fine) as ds:
        ds = ds[["h", "u"]].load()
    c = ds.coarsen(y=scale, x=scale).mean()
    t = np.arange(c.sizes["time"], dtype=np.float32)[:, None, None]
    yy, xx = np.meshgrid(np.linspace(0, 2 * np.pi, c.sizes["y"]), np.linspace(0, 2 * np.pi, c.sizes["x"]), indexing="ij")
    for k, amp in (("h", 0.002), ("u", 0.01)):
        c[k] = c[k] + amp * t * np.sin(yy + 0.3 * t) * np.cos(xx)  # the coarse solver drifts from the fine run
        c[k].attrs = ds[k].attrs
    for d in ("x", "y"):
        c[d].attrs = ds[d].attrs
    if shift_x:
        c = c.assign_coords(x=c.x + shift_x)
        c["x"].attrs = ds["x"].attrs
    if shift_hours:
        c = c.assign_coords(time=c.time + np.timedelta64(int(shift_hours * 3600), "s"))
    if frames is not None:
        c = c.isel(time=slice(0, frames))
    if size is not None:
        c = c.isel(y=slice(0, size[0]), x=slice(0, size[1]))
    c.attrs = dict(ds.attrs, coarse_scale=scale)
    c.to_netcdf(out)
    return out


def _fine_step(path) -> float:
    with xr.open_dataset(path) as ds:
        return float(ds.x[1] - ds.x[0])


def on_points(fine: str, coarse: str, out_fine: str, out_coarse: str, scale: int = 2) -> None:
    """The pair (``fine``, ``coarse``) as a solver of grid points writes it: the fine grid's points from 0, the coarse
    grid's points every ``scale``-th of them (the frames as they are)."""
    with xr.open_dataset(fine) as f, xr.open_dataset(coarse) as c:
        f, c = f.load(), c.load()
    for d in ("x", "y"):
        attrs = f[d].attrs
        f = f.assign_coords({d: f[d] - f[d][0]})
        c = c.assign_coords({d: f[d].values[::scale]})
        f[d].attrs = c[d].attrs = attrs
    f.to_netcdf(out_fine)
    c.to_netcdf(out_coarse)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    for seed, name in ((3, "fine"), (4, "fine_test")):
        swe_file(d / f"{name}.nc", frames=30, size=(32, 32), seed=seed)
        coarse_of(str(d / f"{name}.nc"), str(d / f"{name.replace('fine', 'coarse')}.nc"))
    return d


PAIRED = sets(data__source="archive", data__path="fine.nc", data__lr_path="coarse.nc", data__test_path="fine_test.nc",
              data__lr_test_path="coarse_test.nc")


def _train(cwd, run_dir, *extra):
    return run_cli("hpcvsr.train", "--run-dir", run_dir, *PAIRED, *TINY, *extra, cwd=cwd)


@pytest.fixture(scope="module")
def paired_run(pair):
    proc = _train(pair, "P")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pair / "P"


def test_paired_training_reads_the_coarse_run_and_applies_no_degradation(pair, paired_run):
    m = json.load(open(paired_run / "metrics.json"))
    assert m["degrade"] == "paired" and m["scale"] == 2
    reads = json.load(open(paired_run / "logs" / "reads_rank0.json"))
    assert {os.path.basename(r["file"]) for r in reads} >= {"fine.nc", "coarse.nc", "fine_test.nc", "coarse_test.nc"}
    assert "no degradation: the inputs are the coarse run coarse.nc" in open(paired_run / "table.md").read()
    # the statistical baseline: the coarse run quantile-mapped (xsdba) onto the fine run's statistics, then bicubic
    qm, bicubic = m["metrics"]["test"]["qm_bicubic"], m["metrics"]["test"]["bicubic"]
    assert np.isfinite(qm["psnr"]) and qm["psnr"] != bicubic["psnr"] and len(qm["lead_time"]) == 3
    # the bicubic row is the coarse run's own upscale, which differs from bicubic of the degraded fine run
    deg = run_cli("hpcvsr.train", "--run-dir", "D", *sets(data__source="archive", data__path="fine.nc", data__test_path="fine_test.nc",
                                                         degrade__method="block_mean"), *TINY, cwd=pair)
    assert deg.returncode == 0, deg.stderr[-3000:]
    m_deg = json.load(open(pair / "D" / "metrics.json"))
    assert abs(m["metrics"]["test"]["bicubic"]["psnr"] - m_deg["metrics"]["test"]["bicubic"]["psnr"]) > 0.1  # measured: 0.42 dB


def test_mismatched_pairs_are_refused_before_any_output(pair):
    cases = {
        "non-integer ratio": (dict(size=(12, 12)), "not one grid refined by an integer ratio"),
        "frame counts": (dict(frames=29), "30 and 29 frames"),
        "times": (dict(shift_hours=1.0), "output times differ"),
        "coordinates": (dict(shift_x=20000.0), "x coordinates do not nest"),
        # x moved half a fine cell: coarse x on fine points, coarse y still cell means
        "cells and points": (dict(shift_x=-_fine_step(pair / "fine.nc") / 2), "nest as cells along one axis and as points along the other"),
    }
    for name, (kwargs, message) in cases.items():
        bad = coarse_of(str(pair / "fine.nc"), str(pair / f"bad_{name.replace(' ', '_')}.nc"), **kwargs)
        run_dir = pair / f"refused_{name.replace(' ', '_')}"
        proc = run_cli("hpcvsr.train", "--run-dir", str(run_dir), *PAIRED, "--set", f"data.lr_path={bad}", *TINY, cwd=pair)
        assert_user_error(proc, message, "fine.nc", os.path.basename(bad))
        assert not run_dir.exists(), name
    proc = run_cli("hpcvsr.train", "--run-dir", "C", *PAIRED, "--set", "degrade.constrain=true", *TINY, cwd=pair)
    assert_user_error(proc, "degrade.constrain with paired training", "is refused")
    proc = run_cli("hpcvsr.train", "--run-dir", "C", *sets(data__source="archive", data__path="fine.nc", data__lr_path="coarse.nc",
                                                          data__test_path="fine_test.nc"), *TINY, cwd=pair)
    assert_user_error(proc, "data.test_path and data.lr_test_path name the held-out pair together")
    assert not (pair / "C").exists()


def test_paired_inference_with_a_reference_and_tiles(pair, paired_run):
    base = ["hpcvsr.infer", "--run-dir", "P", "--input", "coarse_test.nc", "--var", "h", "--reference", "fine_test.nc", "--set", "threads=1"]
    whole = run_cli(*base, "--output", "sr.nc", "--stats", "stats.json", cwd=pair)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "global metrics: " in whole.stdout
    # the Python API on the same pair: the same frames and the same metrics against the fine run as it is
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import json, torch, hpcvsr, numpy as np, xarray as xr
        torch.set_num_threads(1)
        sr = hpcvsr.load("P")
        out = sr(xr.open_dataset("coarse_test.nc")["h"])
        assert np.array_equal(out.values, xr.open_dataset("sr.nc")["h"].values)
        print("JSON", json.dumps(hpcvsr.metrics(out, xr.open_dataset("fine_test.nc")["h"])))
        try:
            sr.degrade(xr.open_dataset("fine_test.nc")["h"])
        except hpcvsr.UserError as exc:
            print("DEGRADE", exc)
    """)], cwd=pair, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    api, cmd = json.loads(proc.stdout.split("JSON ", 1)[1].splitlines()[0]), json.load(open(pair / "stats.json"))["metrics"]
    for k, v in cmd.items():
        assert api[k] == pytest.approx(v, rel=1e-4, abs=1e-7), k
    assert "DEGRADE " in proc.stdout and "trained on pairs" in proc.stdout
    tiled = run_cli(*base, "--output", "sr_tiled.nc", "--set", "infer.tile=32", "--set", "infer.tile_halo=8", cwd=pair)
    assert tiled.returncode == 0, tiled.stderr[-3000:]
    with xr.open_dataset(pair / "sr.nc") as a, xr.open_dataset(pair / "sr_tiled.nc") as b, xr.open_dataset(pair / "fine_test.nc") as f:
        assert a["h"].shape == f["h"].shape
        span = float(np.ptp(a["h"].values))
        assert np.abs(a["h"].values - b["h"].values).max() <= 1e-5 * span
        assert np.allclose(a["x"].values, f["x"].values) and np.allclose(a["y"].values, f["y"].values)  # the fine run's grid
    proc = run_cli("hpcvsr.infer", "--run-dir", "P", "--input", "fine_test.nc", "--var", "h", "--output", "x.h5", "--degrade", cwd=pair)
    assert_user_error(proc, "was trained on pairs", "--reference")
    assert not (pair / "x.h5").exists()


def test_a_pair_on_grid_points_writes_the_fine_runs_points(pair):
    """A solver of grid points (the coarse points every second fine point) is a pair too: its output lies on the fine
    run's points, and bicubic places each coarse value on its point."""
    for a in ("", "_test"):
        on_points(str(pair / f"fine{a}.nc"), str(pair / f"coarse{a}.nc"), str(pair / f"pfine{a}.nc"), str(pair / f"pcoarse{a}.nc"))
    proc = run_cli("hpcvsr.train", "--run-dir", "PP", *sets(data__source="archive", data__path="pfine.nc", data__lr_path="pcoarse.nc",
                                                           data__test_path="pfine_test.nc", data__lr_test_path="pcoarse_test.nc"),
                   *TINY, "--set", "pipeline=2d", cwd=pair)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.load(open(pair / "PP" / "metrics.json"))
    assert m["degrade"] == "paired_point" and m["scale"] == 2
    proc = run_cli("hpcvsr.infer", "--run-dir", "PP", "--input", "pcoarse_test.nc", "--var", "h", "--reference", "pfine_test.nc",
                   "--output", "psr.nc", "--set", "threads=1", cwd=pair)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with xr.open_dataset(pair / "psr.nc") as out, xr.open_dataset(pair / "pfine_test.nc") as f, xr.open_dataset(pair / "pcoarse_test.nc") as c:
        assert np.allclose(out["x"].values, f["x"].values) and np.allclose(out["y"].values, f["y"].values)
        # the bicubic row places each coarse value on its own point (centred bicubic would move it half a fine cell)
        import torch

        from hpcvsr.ops import degrade as dg
        lr = torch.from_numpy(c["h"].values.astype(np.float64))
        up = dg.upscale(lr, 2, centred=False).numpy()
        assert np.allclose(up[:, ::2, ::2], lr.numpy())
        assert m["metrics"]["test"]["bicubic"]["rmse_phys"] == pytest.approx(np.sqrt(np.mean((up - f["h"].values) ** 2)), rel=1e-5)


def test_paired_run_starts_from_a_degradation_trained_run(pair, paired_run):
    deg_dir = pair / "D"
    if not (deg_dir / "model.pt").exists():
        pytest.skip("the degradation-trained run of the first test is needed")
    proc = _train(pair, "T", "--set", "model2d.init=D", "--set", "model3d.init=D")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = open(pair / "T" / "logs" / "rank0.log").read()
    line = next(x for x in log.splitlines() if "model2d climate_fsrcnn initialised from D:" in x)
    assert "copied" in line and "fresh" not in line  # every layer of the degradation-trained 2D network


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_several_training_pairs(pair):
    swe_file(pair / "fine2.nc", frames=30, size=(32, 32), seed=5)
    coarse_of(str(pair / "fine2.nc"), str(pair / "coarse2.nc"))
    runs = sets(data__runs="[fine2.nc]", data__lr_runs="[coarse2.nc]")
    proc = _train(pair, "R2", *runs, "--set", "pipeline=2d")
    assert proc.returncode == 0, proc.stderr[-3000:]
    reads = json.load(open(pair / "R2" / "logs" / "reads_rank0.json"))
    assert {os.path.basename(r["file"]) for r in reads} >= {"fine.nc", "coarse.nc", "fine2.nc", "coarse2.nc"}
    refused = {
        "one coarse run per training run": sets(data__runs="[fine2.nc]", data__lr_runs="[]"),
        "must be distinct files": sets(data__runs="[fine.nc]", data__lr_runs="[coarse.nc]"),
    }
    for message, extra in refused.items():
        proc = _train(pair, "R_bad", *extra)
        assert_user_error(proc, message)
        assert not (pair / "R_bad").exists()
    coarse_of(str(pair / "fine2.nc"), str(pair / "bad_run2.nc"), frames=29)
    proc = _train(pair, "R_bad", *sets(data__runs="[fine2.nc]", data__lr_runs="[bad_run2.nc]"))
    assert_user_error(proc, "30 and 29 frames", "fine2.nc", "bad_run2.nc")
    assert not (pair / "R_bad").exists()


@pytest.mark.mpi
def test_one_and_two_rank_paired_training_agree(pair, paired_run):
    proc = subprocess.run(mpirun_cmd(2, "-m", "hpcvsr.train", "--run-dir", str(pair / "P2"), *PAIRED, *TINY), cwd=pair, env=mpi_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    one, two = (json.load(open(pair / d / "metrics.json"))["metrics"]["test"] for d in ("P", "P2"))
    for method in ("bicubic", "2d", "2d_3d"):
        assert abs(one[method]["psnr"] - two[method]["psnr"]) < 0.05, (method, one[method]["psnr"], two[method]["psnr"])


def test_paired_several_variables_with_place_and_time(pair):
    """Two variables (the coarse run's named by data.lr_vars), learned location channels and time features."""
    with xr.open_dataset(pair / "coarse.nc") as c:
        c.rename(h="h_coarse", u="u_coarse").to_netcdf(pair / "coarse_renamed.nc")
    with xr.open_dataset(pair / "coarse_test.nc") as c:
        c.rename(h="h_coarse", u="u_coarse").to_netcdf(pair / "coarse_test_renamed.nc")
    proc = run_cli("hpcvsr.train", "--config", "fixed_domain", "--run-dir", "V", *PAIRED, "--set", "data.vars=[h, u]",
                   "--set", "data.lr_vars=[h_coarse, u_coarse]", "--set", "data.lr_path=coarse_renamed.nc",
                   "--set", "data.lr_test_path=coarse_test_renamed.nc", *TINY, cwd=pair)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.load(open(pair / "V" / "metrics.json"))
    assert m["degrade"] == "paired" and set(m["metrics"]["test"]) == {"h", "u"}
    for v in ("h", "u"):
        assert {"bicubic", "qm_bicubic", "2d", "2d_3d"} <= set(m["metrics"]["test"][v])
    proc = run_cli("hpcvsr.infer", "--run-dir", "V", "--input", "coarse_test_renamed.nc", "--var", "h_coarse,u_coarse",
                   "--reference", "fine_test.nc", "--ref-var", "h,u", "--output", "v.nc", cwd=pair)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "psnr_h" in proc.stdout and "psnr_u" in proc.stdout
