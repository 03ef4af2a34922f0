"""Multi-rank tests: real MPI ranks (mpirun -n 2) on CPU with gloo."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from hpcvsr.io import checkpoint

from .conftest import ROOT, kill_one_rank, mpi_env, mpirun_cmd, run_mpi

pytestmark = pytest.mark.mpi

SMALL = ["--set", "data.frames=30", "--set", "data.size=[64,64]", "--set", "train2d.epochs=3", "--set", "train2d.patches_per_epoch=512",
         "--set", "train2d.patch=32", "--set", "train3d.epochs=2", "--set", "train3d.patches_per_epoch=64", "--set", "train3d.patch=24",
         "--set", "train3d.batch_size=4"]


def test_one_two_rank_step_equals_one_one_rank_step():
    proc = run_mpi(2, os.path.join(ROOT, "tests", "mpi_step_check.py"), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    res = json.loads(line[0][len("RESULT "):])
    for opt in ("sgd", "adam"):
        assert res[opt]["params_moved"]
        assert res[opt]["ranks_bitwise_equal"]
        assert res[opt]["max_rel_diff_of_update"] < 1e-6, res


def _train(run_dir, *extra, wait=True):
    cmd = mpirun_cmd(2, "-m", "hpcvsr.train", "--config", os.path.join(ROOT, "configs", "quickstart.yaml"), "--run-dir", str(run_dir), *SMALL, *extra)
    if wait:
        return subprocess.run(cmd, env=mpi_env(), capture_output=True, text=True, timeout=900)
    return subprocess.Popen(cmd, env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full")
    proc = _train(run_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir


def _hashes(run_dir):
    return [open(os.path.join(run_dir, "logs", f"params_rank{r}.txt")).read().strip() for r in (0, 1)]


def test_two_ranks_train_2d_then_3d_with_identical_parameters(uninterrupted):
    h0, h1 = _hashes(uninterrupted)
    assert h0 == h1  # bitwise identical on both ranks
    m = json.load(open(os.path.join(uninterrupted, "metrics.json")))
    assert m["ranks"] == 2 and set(m["history"]) == {"2d", "2d_3d"}
    assert {"bicubic", "2d", "2d_3d"} <= set(m["metrics"]["test"])
    # the stored final model reproduces the fingerprint
    final = checkpoint.load_model(os.path.join(uninterrupted, "model.pt"))
    assert checkpoint.state_hash(final.model["state_dict"]) == h0


def test_each_rank_reads_exactly_its_block_plus_halo(uninterrupted):
    from hpcvsr.ops import windows as win

    frames = 30
    (t0, t1), (v0, v1) = win.split_train_val(frames, 0.2)
    for rank in (0, 1):
        reads = json.load(open(os.path.join(uninterrupted, "logs", f"reads_rank{rank}.json")))
        expect = []
        # normalisation: only the rank's own training frames
        a, b = win.block_range(t1 - t0, 2, rank)
        expect.append(("seed1", t0 + a, t0 + b))
        # blocks with a 2-frame halo: train, val and the held-out sequence
        for seg0, n, tag in ((t0, t1 - t0, "seed1"), (v0, v1 - v0, "seed1"), (0, frames, "seed1001")):
            r0, r1 = win.halo_range(*win.block_range(n, 2, rank), n, 2)
            expect.append((tag, seg0 + r0, seg0 + r1))
        got = [(("seed1001" if "seed1001" in r["file"] else "seed1"), r["start"], r["stop"]) for r in reads]
        assert got == expect, (rank, got, expect)
    # hand-computed for rank 1: train 0..24 -> owns 12..24, reads 10..24; val 24..30 -> owns 27..30, reads 25..30
    reads1 = json.load(open(os.path.join(uninterrupted, "logs", "reads_rank1.json")))
    assert [(r["start"], r["stop"]) for r in reads1] == [(12, 24), (10, 24), (25, 30), (13, 30)]


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_sigterm_mid_epoch_then_resume_gives_identical_weights(uninterrupted, tmp_path):
    run_dir = tmp_path / "interrupted"
    proc = _train(run_dir, wait=False)
    log0 = run_dir / "logs" / "rank0.log"
    deadline = time.time() + 600
    while time.time() < deadline:
        if log0.exists() and "2d epoch 1:" in log0.read_text():
            break
        if proc.poll() is not None:
            pytest.fail("run ended before it could be interrupted: " + proc.stdout.read()[-2000:])
        time.sleep(0.05)
    time.sleep(0.3)  # well inside epoch 2
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(ranks) == 2
    for pid in ranks:  # as Slurm signals every task of a step
        os.kill(int(pid), signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    state = torch.load(run_dir / "ckpt_2d.pt", weights_only=False)
    assert not state["done"] and state["epoch"] == 1 and state["step"] > 0, (state["epoch"], state["step"])
    assert not (run_dir / "metrics.json").exists()
    assert "stop signal" in log0.read_text()
    again = _train(run_dir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resumed from" in log0.read_text()
    assert _hashes(run_dir) == _hashes(uninterrupted)


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_more_ranks_than_frames_and_indivisible_batch_are_clear_errors(tmp_path):
    proc = _train(tmp_path / "a", "--set", "train2d.batch_size=15", "--set", "train2d.patches_per_epoch=510")
    assert proc.returncode != 0 and "not divisible by 2 ranks" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_mpi(2, "-m", "hpcvsr.train", "--run-dir", str(tmp_path / "b"), "--set", "pipeline=2d", "--set", "data.frames=6",
                   "--set", "data.val_fraction=0.2", "--set", "data.size=[32,32]", "--set", "train2d.patch=16", timeout=300)
    assert proc.returncode != 0 and "one frame per rank" in proc.stderr and "Traceback" not in proc.stderr


def test_a_failing_rank_fails_the_job_instead_of_hanging(tmp_path):
    """NaN only in frames that rank 1 owns: rank 1 stops with the error, the job exits non-zero."""
    import h5py
    import numpy as np

    data = np.random.default_rng(0).random((40, 32, 32)).astype(np.float32)
    data[25, 3, 3] = np.nan  # training frames 0..31: rank 1 owns 16..31
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f["h"] = data
    t0 = time.time()
    proc = run_mpi(2, "-m", "hpcvsr.train", "--run-dir", str(tmp_path / "run"), "--set", "data.source=archive", "--set", f"data.path={path}",
                   "--set", "model2d.init=", "--set", "train2d.patch=16", "--set", "train3d.patch=16", timeout=300)
    assert proc.returncode != 0
    assert "NaN or inf" in proc.stderr
    assert time.time() - t0 < 120


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_one_rank_killed_mid_training_ends_the_job_then_the_rerun_resumes_identically(uninterrupted, tmp_path):
    """SIGKILL to one rank only (a dead node): the job ends within 120 s with a non-zero exit, the
    last checkpoint survives, and the same command finishes with the uninterrupted weights."""
    run_dir = tmp_path / "killed"
    proc = _train(run_dir, wait=False)
    log0 = run_dir / "logs" / "rank0.log"
    deadline = time.time() + 600
    while time.time() < deadline and not (log0.exists() and "2d epoch 2:" in log0.read_text()):
        if proc.poll() is not None:
            pytest.fail("run ended before it could be interrupted: " + proc.stdout.read()[-2000:])
        time.sleep(0.05)
    kill_one_rank(proc)
    assert not (run_dir / "model.pt").exists()
    again = _train(run_dir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resumed from" in log0.read_text()
    assert _hashes(run_dir) == _hashes(uninterrupted)
