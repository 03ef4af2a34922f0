"""Failures users met: an output in a missing folder, stop signals outside the step loop, a jumping ETA."""

import contextlib
import doctest
import os
import signal
import subprocess
import sys
import time

import h5py
import pytest
import torch

from hpcvsr import dist
from hpcvsr.errors import UserError
from hpcvsr.io import lock
from hpcvsr.io.atomic import atomic_path
from hpcvsr.training import trainer

from .conftest import ROOT, TINY, assert_user_error, run_cli, swe_file


def _popen(*args, stderr=subprocess.PIPE):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def _wait_for(path, text: str, proc, limit: float = 300.0) -> None:
    """Until the file ``path`` holds ``text``; fails if ``proc`` ends first."""
    deadline = time.time() + limit
    while not (os.path.exists(path) and text in open(path).read()):
        if proc.poll() is not None:
            pytest.fail(f"ended before '{text}' appeared: {proc.communicate()}")
        assert time.time() < deadline, f"'{text}' did not appear in {path}"
        time.sleep(0.05)


def _stop(proc, limit: float = 30.0) -> tuple[str, str, float]:
    """SIGTERM ``proc``; (stdout, stderr, seconds until it ended), which must be under ``limit``."""
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running {limit} s after SIGTERM: {proc.communicate()}")
    return out, err, time.time() - t0


# --- 1. an output whose folder is missing ------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(small_run):
    return small_run


def test_infer_into_a_missing_folder_is_one_clear_error_before_any_file(run_dir, tmp_path):
    src = swe_file(tmp_path / "in.h5", frames=20, size=(64, 64), seed=3)
    missing = tmp_path / "missing_folder"
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(src), "--output", str(missing / "out.h5"), "--set", "threads=1")
    assert_user_error(proc, str(missing), "does not exist")
    assert not missing.exists()


def test_a_lock_in_a_missing_folder_or_under_a_file_is_a_user_error(tmp_path):
    (tmp_path / "a_file").write_text("")
    for folder in (tmp_path / "missing", tmp_path / "a_file"):
        with pytest.raises(UserError, match=f"the folder {folder} does not exist"):
            lock.acquire(str(folder / "out.h5.lock"), "out.h5")


def test_train_with_a_run_dir_under_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "a_file").write_text("")
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "a_file" / "run"), *TINY)
    assert_user_error(proc, "cannot create the run directory", "a_file")


# --- 2. stop signals in every phase ------------------------------------------------------------

@contextlib.contextmanager
def _flag():
    """A StopFlag installed for the block; the handlers from before are back after it."""
    before = signal.getsignal(signal.SIGTERM)
    stop = dist.StopFlag().install()
    try:
        yield stop
    finally:
        stop.restore()
        assert signal.getsignal(signal.SIGTERM) == before


def test_a_signal_raises_at_once_outside_the_step_loop_and_only_flags_inside(tmp_path):
    with _flag() as stop:
        with pytest.raises(dist.Stopped) as got:  # as in data generation or writing: the temporary file goes
            with atomic_path(str(tmp_path / "out.h5")) as tmp:
                with h5py.File(tmp, "w") as f:
                    f["x"] = [1.0]
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # not reached: the handler raises at once
        assert got.value.name == "SIGTERM" and os.listdir(tmp_path) == []
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal, as during the clean-up, only sets the flag
        assert stop.raised
    with _flag() as stop, pytest.raises(trainer.Preempted):  # the step loop reads the flag and ends its own way
        with stop.polled():
            os.kill(os.getpid(), signal.SIGUSR1)
            assert stop.raised
            raise trainer.Preempted("2d")
    with _flag() as stop, pytest.raises(dist.Stopped):  # a signal after the loop's last read ends it when the loop ends
        with stop.polled():
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_while_train_generates_its_data_ends_it_within_seconds(tmp_path):
    run_dir = tmp_path / "run"
    # one 400-frame 256x256 sequence takes about a minute here
    proc = _popen("hpcvsr.train", "--run-dir", str(run_dir), *TINY, "--set", "data.frames=400", "--set", "data.size=[256,256]")
    _wait_for(run_dir / "logs" / "rank0.log", "pipeline", proc)  # generation starts right after this line
    time.sleep(3)
    out, err, seconds = _stop(proc)
    print(f"ended {seconds:.1f} s after SIGTERM, exit {proc.returncode}")
    assert "Traceback" not in err, err
    assert proc.returncode == 128 + signal.SIGTERM, (out, err)
    assert "stopped by signal SIGTERM" in out and "starts again" in out, out
    data = run_dir / "data"
    assert not data.exists() or os.listdir(data) == []  # nothing published, no temporary file left
    assert not (run_dir / "hpcvsr.lock").exists()


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_sigterm_while_hpcvsr_data_generates_ends_it_without_a_file(tmp_path):
    out_path = tmp_path / "swe.h5"
    with open(tmp_path / "stderr.txt", "w") as err_file:
        proc = _popen("hpcvsr.data", "swe", "--frames", "400", "--size", "256", "256", "--out", str(out_path), stderr=err_file)
        _wait_for(tmp_path / "stderr.txt", "swe", proc)  # its progress bar: the solver runs
        time.sleep(2)
        _, _, seconds = _stop(proc)
    err = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in err, err
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by signal SIGTERM" in err
    assert sorted(os.listdir(tmp_path)) == ["stderr.txt"]


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_sigterm_in_the_step_loop_still_checkpoints_and_exits_0(tmp_path):
    run_dir = tmp_path / "run"
    small = ["--set", "data.frames=30", "--set", "data.size=[64,64]", "--set", "train2d.epochs=3", "--set", "train2d.patches_per_epoch=2048",
             "--set", "train2d.patch=32", "--set", "threads=1"]
    proc = _popen("hpcvsr.train", "--run-dir", str(run_dir), *small)
    _wait_for(run_dir / "logs" / "rank0.log", "2d epoch 1:", proc)
    time.sleep(0.5)  # inside epoch 2's steps
    out, err, seconds = _stop(proc)
    assert "Traceback" not in err, err
    assert proc.returncode == 0, (out, err)
    state = torch.load(run_dir / "ckpt_2d.pt", weights_only=False)
    assert not state["done"] and state["epoch"] == 1 and state["step"] > 0, (state["epoch"], state["step"])
    assert "resume" in out and not (run_dir / "metrics.json").exists()


# --- 3. the progress bar's estimate of the time left -------------------------------------------

def test_eta_counts_validation_and_stays_within_a_factor_two():
    """A run as users saw it: each epoch 200 fast steps and a validation pass as long as all of them
    together; the estimate after every step (kept as the trainer keeps it) against the truth."""
    assert doctest.testmod(trainer).failed == 0
    epochs, steps, step_s, eval_s = 5, 200, 0.05, 10.0
    timeline = [step_s * (1.5 if i % 7 == 0 else 1.0) for i in range(epochs * steps)]  # uneven steps
    total = eval_s + sum(timeline) + epochs * eval_s  # the pass before the first epoch, then one per epoch
    clock, spent, estimates = eval_s, 0.0, []
    for e in range(epochs):
        for s in range(steps):
            i = e * steps + s
            clock, spent = clock + timeline[i], spent + timeline[i]
            left = trainer.eta_seconds((epochs - e) * steps - s - 1, epochs - e, spent / (i + 1), eval_s)
            estimates.append((clock, left, total - clock))
        clock += eval_s
    for clock, left, true in estimates:
        assert true / 2 <= left <= 2 * true, (clock, left, true)
    predicted = [clock + left for clock, left, _ in estimates]  # the finishing time it announces
    assert max(predicted) < 2 * min(predicted)
    firsts = [estimates[e * steps][1] for e in range(epochs)]
    assert all(a > b for a, b in zip(firsts, firsts[1:]))  # it goes down from epoch to epoch, never back up
