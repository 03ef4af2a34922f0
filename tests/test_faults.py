"""Fault injection: SIGKILL at random points of training (2D stage, 3D stage) and of 2-rank inference,
and truncated or bit-flipped checkpoints, model files and inputs.

After every fault: a clear exit (one ``hpcvsr: error:`` line and no traceback where the fault is a bad
file), nothing incomplete under a final name, and a rerun of the same command whose result is
identical to the uninterrupted one. The default suite draws a few kill points;
``pytest -m slow tests/test_faults.py`` draws 36 (12 per phase). Kill times are random with a
fixed seed, so a failure reproduces.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from hpcvsr.io import checkpoint

from .conftest import ROOT, assert_user_error, mpi_env, mpirun_cmd, run_cli, run_mpi

TRAIN = ["--set", "pipeline=2d_3d", "--set", "data.frames=24", "--set", "data.size=[48,48]", "--set", "train2d.epochs=4",
         "--set", "train2d.patches_per_epoch=256", "--set", "train2d.patch=24", "--set", "train3d.epochs=3",
         "--set", "train3d.patches_per_epoch=64", "--set", "train3d.patch=24", "--set", "train3d.batch_size=8", "--set", "threads=1"]
INFER = ["--degrade", "--set", "infer.block_frames=8", "--set", "threads=1"]
POINTS = {"short": 1, "long": 12}  # kill points per phase


def _env():
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return e


def _train_cmd(run_dir) -> list:
    return [sys.executable, "-m", "hpcvsr.train", "--run-dir", str(run_dir), *TRAIN]


def _params(run_dir) -> str:
    return (run_dir / "logs" / "params_rank0.txt").read_text().strip()


def _no_incomplete_files(run_dir) -> None:
    """Every file under a final name in a run directory is complete."""
    for p in run_dir.glob("ckpt_*.pt"):
        checkpoint.load_training(str(p))
    if (run_dir / "model.pt").exists():
        checkpoint.load_model(str(run_dir / "model.pt"))
    if (run_dir / "metrics.json").exists():
        json.loads((run_dir / "metrics.json").read_text())
    for p in (run_dir / "data").glob("*.h5") if (run_dir / "data").exists() else []:
        with h5py.File(p) as f:
            assert f["h"].shape[0] == 24


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted training: its run directory, final parameters and when its 3D stage had its first
    checkpoint (the end of its first epoch: a kill after it finds ckpt_2d_3d.pt)."""
    run_dir = tmp_path_factory.mktemp("faults") / "reference"
    t0 = time.time()
    proc = subprocess.Popen(_train_cmd(run_dir), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t3d = None
    for line in proc.stdout:  # not the first line naming 2d_3d: that is the run's header, before any training
        if t3d is None and "2d_3d epoch 1:" in line:
            t3d = time.time() - t0
    assert proc.wait() == 0
    return {"dir": run_dir, "params": _params(run_dir), "t3d": t3d, "total": time.time() - t0}


@pytest.fixture(scope="module")
def infer_reference(reference, tmp_path_factory):
    d = tmp_path_factory.mktemp("infer_ref")
    archive = d / "in.h5"
    assert run_cli("hpcvsr.data", "swe", "--frames", "96", "--size", "64", "64", "--seed", "9", "--out", str(archive), "--quiet").returncode == 0
    out = d / "ref.h5"
    t0 = time.time()
    proc = run_mpi(2, "-m", "hpcvsr.infer", "--run-dir", str(reference["dir"]), "--input", str(archive), "--var", "h", "--output", str(out),
                   "--consolidate", *INFER)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with h5py.File(out) as f:
        sr = f["sr"][:]
    return {"archive": archive, "sr": sr, "total": time.time() - t0}


def _kill_training_at(reference, run_dir, delay: float) -> str:
    """Start training, SIGKILL it after ``delay`` s, check the leftovers, rerun; returns where it was killed."""
    proc = subprocess.Popen(_train_cmd(run_dir), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    where = "3d" if (run_dir / "ckpt_2d_3d.pt").exists() else "2d"
    _no_incomplete_files(run_dir)
    again = subprocess.run(_train_cmd(run_dir), env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _params(run_dir) == reference["params"], f"killed at {delay:.2f} s"
    return where


def _training_points(reference, tmp_path, n: int, seed: int) -> dict:
    rng = random.Random(seed)
    t3d, total = reference["t3d"], reference["total"]
    delays = [rng.uniform(0.3, t3d) for _ in range(n)] + [rng.uniform(t3d, total) for _ in range(n)]
    seen = {"2d": 0, "3d": 0}
    for i, delay in enumerate(delays):
        seen[_kill_training_at(reference, tmp_path / f"k{i}", delay)] += 1
    return seen


def _inference_points(reference, infer_reference, tmp_path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(n):
        out = tmp_path / f"sr{i}.h5"
        args = ["-m", "hpcvsr.infer", "--run-dir", str(reference["dir"]), "--input", str(infer_reference["archive"]), "--var", "h",
                "--output", str(out), *INFER]
        proc = subprocess.Popen(mpirun_cmd(2, *args), env=mpi_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(0.5, infer_reference["total"])
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            for pid in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split():
                os.kill(int(pid), signal.SIGKILL)
            proc.wait(timeout=120)
        if out.exists():  # finished before the kill: then it is complete
            with h5py.File(out) as f:
                assert np.array_equal(f["sr"][:], infer_reference["sr"])
            continue
        again = run_mpi(2, *args, "--consolidate")
        assert again.returncode == 0, again.stderr[-2000:]
        with h5py.File(out) as f:
            assert np.array_equal(f["sr"][:], infer_reference["sr"]), f"killed at {delay:.2f} s"


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_kills_at_random_points_short(reference, infer_reference, tmp_path):
    seen = _training_points(reference, tmp_path, POINTS["short"], seed=1)
    assert seen == {"2d": 1, "3d": 1}
    _inference_points(reference, infer_reference, tmp_path, POINTS["short"], seed=1)


@pytest.mark.slow
def test_kills_at_random_points_long(reference, infer_reference, tmp_path):
    seen = _training_points(reference, tmp_path, POINTS["long"], seed=2)
    print(f"training kill points: {seen}")
    assert seen["2d"] >= POINTS["long"] // 2 and seen["3d"] >= POINTS["long"] // 2
    _inference_points(reference, infer_reference, tmp_path, POINTS["long"], seed=2)


def _flip(path, where: float) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    path.write_bytes(bytes(data))


def _truncate(path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoint_falls_back_to_the_previous_one(reference, tmp_path, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(reference["dir"], run_dir)
    for name in ("model.pt", "metrics.json"):
        (run_dir / name).unlink()
    ckpt = run_dir / "ckpt_2d_3d.pt"
    assert (run_dir / "ckpt_2d_3d.pt.prev").exists()
    _truncate(ckpt, 0.6) if damage == "truncate" else _flip(ckpt, 0.5)
    again = subprocess.run(_train_cmd(run_dir), env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from the previous checkpoint" in again.stdout + again.stderr
    assert _params(run_dir) == reference["params"]


def test_both_checkpoints_damaged_is_one_clear_error(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference["dir"], run_dir)
    (run_dir / "model.pt").unlink()
    _flip(run_dir / "ckpt_2d_3d.pt", 0.5)
    _truncate(run_dir / "ckpt_2d_3d.pt.prev", 0.5)
    proc = subprocess.run(_train_cmd(run_dir), env=_env(), capture_output=True, text=True, timeout=600)
    assert_user_error(proc, "ckpt_2d_3d.pt", "truncated or altered")
    assert not (run_dir / "model.pt").exists()


@pytest.mark.parametrize("damage, message", [("flip", "corrupt or altered"), ("truncate", "corrupt or truncated")])
def test_damaged_model_file_is_refused_before_any_output(reference, infer_reference, tmp_path, damage, message):
    run_dir = tmp_path / "run"
    shutil.copytree(reference["dir"], run_dir)
    _truncate(run_dir / "model.pt", 0.7) if damage == "truncate" else _flip(run_dir / "model.pt", 0.5)
    out = tmp_path / "sr.h5"
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(infer_reference["archive"]), "--var", "h",
                   "--output", str(out), *INFER)
    assert_user_error(proc, "model.pt", message)
    assert not list(tmp_path.glob("sr.h5*"))


@pytest.mark.parametrize("damage", ["truncate", "flip_header"])
def test_damaged_input_is_refused_before_any_output(reference, infer_reference, tmp_path, damage):
    bad = tmp_path / "in.h5"
    shutil.copy(infer_reference["archive"], bad)
    _truncate(bad, 0.5) if damage == "truncate" else _flip(bad, 0.0)
    out = tmp_path / "sr.h5"
    proc = run_cli("hpcvsr.infer", "--run-dir", str(reference["dir"]), "--input", str(bad), "--var", "h", "--output", str(out), *INFER)
    assert_user_error(proc, str(bad))
    assert not list(tmp_path.glob("sr.h5*"))


@pytest.mark.parametrize("frame, leaves_parts", [(2, False), (90, True)])
def test_bad_values_found_mid_run_leave_no_empty_output(reference, infer_reference, tmp_path, frame, leaves_parts):
    """An infinite value found only when its chunk is read: one clear error; the chunk folder stays only
    if it holds finished chunks (kept for the rerun), and nothing is under the final name."""
    bad = tmp_path / "in.h5"
    shutil.copy(infer_reference["archive"], bad)
    with h5py.File(bad, "a") as f:
        f["h"][frame, 5, 5] = np.inf
    out = tmp_path / "sr.h5"
    proc = run_cli("hpcvsr.infer", "--run-dir", str(reference["dir"]), "--input", str(bad), "--var", "h", "--output", str(out), *INFER)
    assert_user_error(proc, "inf values")
    assert not out.exists() and not (tmp_path / "sr.h5.lock").exists()
    assert (tmp_path / "sr.h5.parts").exists() == leaves_parts


@pytest.mark.parametrize("mangle", ["shape", "type", "nan"])
def test_malformed_authors_weights_are_one_clear_error(tmp_path, mangle):
    """The authors' .mat weights are validated (shapes, types, values) before a model is built from them."""
    import scipy.io

    from hpcvsr.errors import UserError
    from hpcvsr.io import weights

    rng = np.random.default_rng(0)
    m = {"weights_conv1": rng.random((81, 64)), "biases_conv1": rng.random((64, 1)), "weights_conv2": rng.random((64, 1, 32)),
         "biases_conv2": rng.random((32, 1)), "weights_conv3": rng.random((32, 25)), "biases_conv3": rng.random((1, 1))}
    weights.srcnn_from_mat(m, "ok")  # the well-formed layout converts
    if mangle == "shape":
        m["weights_conv1"] = rng.random((80, 64))
    elif mangle == "type":
        m["weights_conv2"] = "not an array"
    else:
        m["weights_conv3"][0, 0] = np.nan
    path = tmp_path / "x2.mat"
    scipy.io.savemat(path, m)
    with pytest.raises(UserError, match="x2.mat"):
        weights.load_source(str(path), 2)
