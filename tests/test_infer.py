"""Batch inference: rank-count independence, stored metrics, crash/rerun, tiling, bad input."""

import json
import os
import subprocess

import h5py
import numpy as np
import pytest
import torch

from hpcvsr.ops import degrade as dg
from hpcvsr.ops import metrics

from .conftest import assert_user_error, crash_after_chunks, kill_one_rank, mpi_env, mpirun_cmd, run_cli, run_mpi, swe_file

ONE_THREAD = ["--set", "threads=1"]  # bitwise comparisons across rank counts need equal threads per rank


@pytest.fixture(scope="module")
def run_dir(small_run):
    return small_run


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return swe_file(tmp_path_factory.mktemp("arch") / "swe300.h5", frames=300, size=(128, 128), seed=5)


@pytest.fixture(scope="module")
def one_rank(run_dir, archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "sr.h5"
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(archive), "--var", "h", "--output", str(out), "--degrade", *ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _recompute(out_path, archive):
    """Metrics from the stored data, independently of the writer."""
    with h5py.File(out_path) as f, h5py.File(archive) as g:
        sr = torch.from_numpy(f["sr"][:]).double()
        hr = torch.from_numpy(g["h"][:]).double()
        norm = json.loads(f.attrs["normalisation"])
        c = int(f.attrs["crop"])
        stored = dict(f["metrics"].attrs)
    if c:
        hr = hr[..., c:-c, c:-c]
    lo, span = norm["lo"], norm["hi"] - norm["lo"]
    srn, hrn = (sr - lo) / span, (hr - lo) / span
    mse = float(((srn - hrn) ** 2).mean())
    mean_sr, mean_hr = sr.mean(dim=(1, 2)), hr.mean(dim=(1, 2))
    return stored, {
        "mse": mse, "psnr": 10 * np.log10(1 / mse), "mae": float((srn - hrn).abs().mean()),
        "psnr_mean": float(metrics.psnr(srn, hrn).mean()), "ssim": float(metrics.ssim(srn, hrn).mean()),
        "mass_rel_err": float((mean_sr - mean_hr).abs().sum() / hr.abs().mean(dim=(1, 2)).sum()),
    }


def test_one_rank_output_layout_and_metrics(one_rank, archive):
    with h5py.File(one_rank) as f:
        assert f["sr"].shape == (300, 128, 128) and f["sr"].dtype == np.float32
        for key in ("scale", "pipeline", "checkpoint_hash", "source_file", "source_var", "normalisation", "units", "crop"):
            assert key in f.attrs, key
        assert not np.isnan(f["sr"][:]).any()
    stored, again = _recompute(one_rank, archive)
    for k, v in again.items():
        assert stored[k] == pytest.approx(v, rel=1e-6), k
    # and the model did better than bicubic on this unseen archive
    with h5py.File(archive) as g:
        hr = torch.from_numpy(g["h"][:]).double()
    span = json.loads(h5py.File(one_rank).attrs["normalisation"])
    n = (hr - span["lo"]) / (span["hi"] - span["lo"])
    bic = float(((dg.upscale(dg.degrade(n, 2), 2) - n) ** 2).mean())
    assert stored["mse"] < bic


@pytest.mark.mpi
def test_two_ranks_identical_to_one_rank_and_one_dataset(run_dir, archive, one_rank, tmp_path):
    out = tmp_path / "sr2.h5"
    proc = run_mpi(2, "-m", "hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(archive), "--var", "h", "--output", str(out), "--degrade", *ONE_THREAD)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with h5py.File(out) as f, h5py.File(one_rank) as g:
        assert f["sr"].shape == (300, 128, 128)  # one dataset, whatever the writer
        assert np.array_equal(f["sr"][:], g["sr"][:])
        for k in g["metrics"]:
            assert np.array_equal(f["metrics"][k][:], g["metrics"][k][:]), k
    stored, again = _recompute(out, archive)
    for k, v in again.items():
        assert stored[k] == pytest.approx(v, rel=1e-6), k


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
@pytest.mark.mpi
def test_killed_job_resumes_without_redoing_finished_chunks(run_dir, archive, one_rank, tmp_path):
    out = tmp_path / "sr.h5"
    args = ["-m", "hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(archive), "--var", "h", "--output", str(out), "--degrade",
            "--set", "infer.block_frames=16", *ONE_THREAD]
    crash_after_chunks(args, 4)
    assert not out.exists()  # nothing looks complete
    again = run_mpi(2, *args)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    skipped = sum(int(l.split(";")[1].split()[0]) for l in again.stdout.splitlines() if "already written" in l)
    assert skipped >= 4
    redone = sum(1 for l in again.stdout.splitlines() if " done" in l and "chunk" in l)
    assert redone == 19 - skipped  # 300 frames in chunks of 16
    with h5py.File(out) as f, h5py.File(one_rank) as g:
        assert np.array_equal(f["sr"][:], g["sr"][:])


def test_tiled_equals_untiled(run_dir, archive, tmp_path):
    small = tmp_path / "small.h5"
    with h5py.File(archive) as g, h5py.File(small, "w") as f:
        f["h"] = g["h"][:12]
    outs = []
    for tile in (0, 48):
        out = tmp_path / f"t{tile}.h5"
        proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(small), "--var", "h", "--output", str(out), "--degrade",
                       "--set", f"infer.tile={tile}", "--consolidate")
        assert proc.returncode == 0, proc.stderr[-2000:]
        with h5py.File(out) as f:
            assert not f["sr"].is_virtual  # consolidated into one plain file
            outs.append(f["sr"][:])
    assert np.abs(outs[0] - outs[1]).max() <= 1e-5 * max(1.0, np.abs(outs[0]).max())


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
@pytest.mark.mpi
def test_bf16_path_two_ranks_equal_one_rank_and_tiles_match(run_dir, archive, tmp_path):
    """The fast path (bf16 3D body, shared windows, exact rewrites): 2 ranks write the same bits as 1
    at equal threads per rank, tiles agree with whole frames to 1e-5, and the field stays within
    bf16 rounding of the correction of the fp32 result."""
    small = tmp_path / "small.h5"
    with h5py.File(archive) as g, h5py.File(small, "w") as f:
        f["h"] = g["h"][:40]
    outs = {}
    for name, ranks, extra in (("one", 1, []), ("two", 2, []), ("tiled", 1, ["--set", "infer.tile=48"]),
                               ("fp32", 1, ["--set", "infer.precision=fp32"])):
        out = tmp_path / f"{name}.h5"
        args = ["-m", "hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(small), "--var", "h", "--output", str(out), "--degrade",
                "--consolidate", "--set", "infer.precision=bf16", "--set", "infer.block_frames=8", *ONE_THREAD, *extra]
        proc = run_mpi(ranks, *args) if ranks > 1 else run_cli(*args[1:])
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        with h5py.File(out) as f:
            outs[name] = f["sr"][:]
            if name == "one":
                assert f.attrs["precision"] == "bf16"
    scale = max(1.0, float(np.abs(outs["one"]).max()))
    assert np.array_equal(outs["one"], outs["two"])
    assert np.abs(outs["one"] - outs["tiled"]).max() <= 1e-5 * scale
    assert 0 < np.abs(outs["one"] - outs["fp32"]).max() <= 1e-2 * scale


def test_infer_refuses_to_overwrite_and_checks_reference(run_dir, archive, one_rank, tmp_path):
    before = os.path.getmtime(one_rank)
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(archive), "--var", "h", "--output", str(one_rank), "--degrade")
    assert_user_error(proc, "exists; refusing to overwrite")
    assert os.path.getmtime(one_rank) == before
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(archive), "--var", "h", "--output", str(tmp_path / "x.h5"),
                   "--reference", str(archive))
    assert_user_error(proc, "does not match the super-resolved")
    proc = run_cli("hpcvsr.infer", "--run-dir", str(tmp_path), "--input", str(archive), "--output", str(tmp_path / "y.h5"))
    assert_user_error(proc, "no model.pt")


@pytest.mark.mpi
def test_mpi_io_path_when_parallel_h5py_is_present(run_dir, archive, one_rank, tmp_path):
    if not h5py.get_config().mpi:
        pytest.skip("h5py is serial here (h5py.get_config().mpi is False): the MPI-IO writer needs h5py built against parallel HDF5")
    out = tmp_path / "mpio.h5"
    proc = run_mpi(2, "-m", "hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(archive), "--var", "h", "--output", str(out), "--degrade", *ONE_THREAD)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "(mpio)" in proc.stdout
    with h5py.File(out) as f, h5py.File(one_rank) as g:
        assert not f["sr"].is_virtual
        assert np.array_equal(f["sr"][:], g["sr"][:])


def test_netcdf_output_with_cf_attributes(run_dir, archive, tmp_path):
    import netCDF4  # a core dependency
    small = tmp_path / "small.h5"
    with h5py.File(archive) as g, h5py.File(small, "w") as f:
        f["h"] = g["h"][:6]
        f["h"].attrs["units"] = "m"
    out = tmp_path / "sr.nc"
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(small), "--var", "h", "--output", str(out), "--degrade", "--netcdf")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with netCDF4.Dataset(out) as nc:
        assert nc.Conventions == "CF-1.8"
        assert nc["h"].dimensions == ("time", "y", "x") and nc["h"].shape == (6, 128, 128)
        assert nc["h"].units == "m"
        assert "metric_frame_psnr" in nc.variables
    assert sorted(os.listdir(tmp_path)) == ["small.h5", "sr.nc"]


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
@pytest.mark.mpi
def test_benchmark_command_prints_and_saves_json(run_dir, tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli("hpcvsr.bench", "--run-dir", str(run_dir), "--frames", "64", "--size", "64", "64", "--ranks", "1", "2", "--precisions", "fp32", "bf16",
                   "--seconds", "0.05", "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["end_to_end"]) == {"1 rank(s), fp32", "2 rank(s), fp32", "1 rank(s), bf16"}
    assert all(r["frames_per_s"] > 0 for r in res["end_to_end"].values()) and res["sequential_write_MB_per_s"] > 0
    fp32 = res["end_to_end"]["1 rank(s), fp32"]
    assert res["end_to_end"]["2 rank(s), fp32"]["psnr"] == pytest.approx(fp32["psnr"], abs=1e-4)  # threads per rank differ: not bitwise
    assert abs(res["end_to_end"]["1 rank(s), bf16"]["psnr"] - fp32["psnr"]) < 0.05
    assert all(res["peak"][k] > 0 for k in ("fp32", "bf16", "conv3d_fp32", "conv3d_bf16"))
    per_px = res["macs_per_output_pixel"]
    assert per_px["fused"] == pytest.approx(per_px["2D"] + per_px["3D"]) and 0 < per_px["3D"] < 179072  # shared windows: fewer than per window
    assert {(r["part"], r["precision"]) for r in res["inference"]} == {(p, q) for p in ("2D", "3D", "fused") for q in ("fp32", "bf16")}
    assert {(r["stage"], r["precision"]) for r in res["training"]} == {(p, q) for p in ("2D", "3D") for q in ("fp32", "bf16")}
    assert all(r["fraction_of_peak"] > 0 for r in res["inference"] + res["training"])
    assert "% of peak" in proc.stdout and "plain sequential h5py write" in proc.stdout
    assert run_cli("hpcvsr.bench", "--run-dir", str(run_dir), "--json", str(out)).returncode != 0  # an existing result is kept


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_one_rank_killed_mid_inference_ends_the_job_and_the_rerun_completes_identically(run_dir, archive, one_rank, tmp_path):
    """SIGKILL to one of two ranks: the job ends within 120 s, non-zero; the rerun keeps the finished chunks."""
    out = tmp_path / "sr.h5"
    args = ["-m", "hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(archive), "--var", "h", "--output", str(out), "--degrade",
            "--set", "infer.block_frames=16", *ONE_THREAD]
    proc = subprocess.Popen(mpirun_cmd(2, *args), env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if " done" in line and "chunk" in line:
            break
    kill_one_rank(proc)
    assert not out.exists()
    again = run_mpi(2, *args)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert sum(int(l.split(";")[1].split()[0]) for l in again.stdout.splitlines() if "already written" in l) >= 1
    with h5py.File(out) as f, h5py.File(one_rank) as g:
        assert np.array_equal(f["sr"][:], g["sr"][:])
