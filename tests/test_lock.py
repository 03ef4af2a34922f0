"""One job per run directory or output: lock files with live, dead and foreign owners."""

import json
import os
import socket
import subprocess
import sys

import pytest

from hpcvsr.errors import UserError
from hpcvsr.io import lock

from .conftest import ROOT, assert_user_error, run_cli, run_mpi


def _write(path, **info):
    base = {"host": socket.gethostname(), "pid": os.getpid(), "job": "", "since": "2026-01-01 00:00:00"}
    path.write_text(json.dumps(dict(base, **info)))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def sleeper():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield p.pid
    p.kill()
    p.wait()


def test_held_creates_and_removes_its_lock(tmp_path):
    path = tmp_path / "out.lock"
    with lock.held(str(path), "out") as me:
        assert json.loads(path.read_text())["pid"] == os.getpid() == me["pid"]
    assert not path.exists()
    with pytest.raises(RuntimeError), lock.held(str(path), "out"):
        raise RuntimeError("boom")
    assert not path.exists()  # released on errors too


def test_live_owner_refused_with_its_pid_and_job(tmp_path, sleeper):
    path = tmp_path / "out.lock"
    _write(path, pid=sleeper, job="4242")
    with pytest.raises(UserError, match=rf"in use by pid {sleeper} on .*batch job 4242"):
        lock.acquire(str(path), "out")
    assert json.loads(path.read_text())["pid"] == sleeper  # the owner's lock is untouched


def test_dead_owner_taken_over_with_a_warning(tmp_path, caplog):
    path = tmp_path / "out.lock"
    dead = _dead_pid()
    _write(path, pid=dead)
    with caplog.at_level("WARNING", logger="hpcvsr"):
        me = lock.acquire(str(path), "out")
    assert me["pid"] == os.getpid() and json.loads(path.read_text())["pid"] == os.getpid()
    assert f"pid {dead}" in caplog.text and "stale" in caplog.text


def test_foreign_host_and_unreadable_locks_refused_with_the_remove_command(tmp_path):
    path = tmp_path / "out.lock"
    _write(path, host="another-node-17", pid=1)
    with pytest.raises(UserError, match=f"another-node-17.*rm {path}"):
        lock.acquire(str(path), "out")
    path.write_text("{garbled")
    with pytest.raises(UserError, match=f"cannot be read.*rm {path}"):
        lock.acquire(str(path), "out")


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_second_job_on_a_locked_run_dir_and_output_refused_stale_taken_over(tmp_path, sleeper):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _write(run_dir / "hpcvsr.lock", pid=sleeper)
    proc = run_cli("hpcvsr.train", "--run-dir", str(run_dir), "--set", "pipeline=2d", "--set", "train2d.epochs=0",
                   "--set", "data.frames=16", "--set", "data.size=[32,32]", "--set", "train2d.patch=16", "--set", "train3d.patch=16")
    assert_user_error(proc, "in use by pid", str(sleeper))
    assert sorted(os.listdir(run_dir)) == ["hpcvsr.lock"]  # nothing created
    _write(run_dir / "hpcvsr.lock", pid=_dead_pid())
    proc = run_cli("hpcvsr.train", "--run-dir", str(run_dir), "--set", "pipeline=2d", "--set", "train2d.epochs=0",
                   "--set", "data.frames=16", "--set", "data.size=[32,32]", "--set", "train2d.patch=16", "--set", "train3d.patch=16",
                   "--set", "threads=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stale lock" in proc.stdout + proc.stderr
    assert not (run_dir / "hpcvsr.lock").exists() and (run_dir / "model.pt").exists()
    out = tmp_path / "sr.h5"
    _write(tmp_path / "sr.h5.lock", pid=sleeper)
    data = run_dir / "data" / os.listdir(run_dir / "data")[0]
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(data), "--output", str(out), "--degrade")
    assert_user_error(proc, "in use by pid", str(out))
    assert not out.exists() and not (tmp_path / "sr.h5.parts").exists()
    proc = run_mpi(2, "-m", "hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(data), "--output", str(out), "--degrade",
                   "--set", "threads=1", "--set", "infer.block_frames=4", timeout=120)  # every rank meets the same error: no rank waits in a collective
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.count("hpcvsr: error:") == 2 and "in use by pid" in proc.stderr, proc.stderr
    assert not out.exists() and not (tmp_path / "sr.h5.parts").exists()


def test_lock_module_is_the_only_owner_of_lock_files():
    hits = []
    for dirpath, _, names in os.walk(os.path.join(ROOT, "hpcvsr")):
        for n in names:
            if n.endswith(".py") and n != "lock.py" and "O_EXCL" in open(os.path.join(dirpath, n)).read():
                hits.append(n)
    assert hits == []
