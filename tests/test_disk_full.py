"""A full disk: one clear error, nothing under a final name, finished work kept, and a rerun after
space is freed completes. A real size-limited file system (tmpfs) where this process may mount one;
the OSError path of the atomic writer is also checked with a simulated ENOSPC."""

import errno
import os
import subprocess
import uuid

import h5py
import numpy as np
import pytest

from hpcvsr.errors import UserError
from hpcvsr.io import atomic

from .conftest import assert_user_error, run_cli

TINY = ["--set", "pipeline=2d", "--set", "data.frames=16", "--set", "data.size=[64,64]", "--set", "train2d.epochs=1",
        "--set", "train2d.patches_per_epoch=32", "--set", "train2d.patch=16", "--set", "threads=1"]


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MB tmpfs mounted at a fresh folder (skipped where mounting is not permitted)."""
    mnt = tmp_path / f"fs{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a size-limited tmpfs here (needs root); the simulated ENOSPC test covers the writer")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt, leave: int):
    """A filler file that leaves ``leave`` bytes free; deleting it is "freeing space"."""
    filler = mnt / "filler"
    free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
    filler.write_bytes(b"\0" * max(0, free - leave))
    return filler


def _grow(mnt, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_infer_on_a_full_disk_fails_cleanly_and_the_rerun_completes(small_fs, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("hpcvsr.train", "--run-dir", str(run_dir), *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = run_dir / "data" / sorted(os.listdir(run_dir / "data"))[0]
    args = ["hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(data), "--var", "h", "--degrade", "--set", "infer.block_frames=4",
            "--set", "threads=1"]
    ref = tmp_path / "ref.h5"
    assert run_cli(*args, "--output", str(ref), "--consolidate").returncode == 0
    out = small_fs / "sr.h5"  # 16 frames of 64x64 in chunks of 4 (66 kB each) where 150 kB are free
    filler = _fill(small_fs, 150_000)
    proc = run_cli(*args, "--output", str(out))
    assert_user_error(proc, "cannot write", str(small_fs), "free space and run the same command again")
    assert "Segmentation" not in proc.stderr and proc.returncode == 2
    assert not out.exists() and not list(small_fs.glob("**/*.tmp*")) and not list(small_fs.glob("*.lock"))
    kept = sorted(p.name for p in (small_fs / "sr.h5.parts").glob("chunk*.h5"))
    assert kept, "the chunks finished before the disk filled are kept"
    filler.unlink()
    again = run_cli(*args, "--output", str(out), "--consolidate")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{len(kept)} already written" in again.stdout
    with h5py.File(out) as f, h5py.File(ref) as g:
        assert np.array_equal(f["sr"][:], g["sr"][:])


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_training_checkpoint_on_a_full_disk_fails_cleanly_and_the_rerun_completes(small_fs, tmp_path):
    data = tmp_path / "swe.h5"  # the data elsewhere; the run directory on the small file system
    assert run_cli("hpcvsr.data", "swe", "--out", str(data), "--frames", "16", "--size", "64", "64", "--quiet").returncode == 0
    run_dir = small_fs / "run"
    cmd = ["hpcvsr.train", "--run-dir", str(run_dir), *TINY, "--set", "data.source=archive", "--set", f"data.path={data}"]
    filler = _fill(small_fs, 60_000)  # room for the config and logs, not for a 150 kB checkpoint
    proc = run_cli(*cmd)
    assert_user_error(proc, "cannot write", "ckpt_2d.pt")
    assert "Segmentation" not in proc.stderr and not (run_dir / "model.pt").exists() and not (run_dir / "ckpt_2d.pt").exists()
    assert not list(small_fs.glob("**/*.tmp*")) and not (run_dir / "hpcvsr.lock").exists()
    filler.unlink()
    again = run_cli(*cmd)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (run_dir / "model.pt").exists()


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_data_tool_on_a_full_disk_fails_cleanly_and_the_rerun_completes(small_fs):
    out = small_fs / "swe.nc"
    cmd = ["hpcvsr.data", "swe", "--out", str(out), "--frames", "40", "--size", "64", "64", "--quiet"]
    proc = run_cli(*cmd)  # 40 frames of h, u, v, vort at 64x64: 2.6 MB on a 1 MB file system
    assert_user_error(proc, "cannot write", str(out))
    assert not out.exists() and not list(small_fs.glob("*.tmp*"))
    _grow(small_fs, "16m")
    assert run_cli(*cmd).returncode == 0 and out.exists()


def test_atomic_writer_turns_enospc_into_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "x.bin"

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match=r"cannot write .*x.bin: No space left on device \(errno ENOSPC\)"):
        atomic.write_bytes(str(path), b"abc")
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: type("U", (), {"free": 10})())
    with pytest.raises(UserError, match="needs 0.00 MB"):  # the cheap check before writing
        atomic.write_bytes(str(path), b"a" * 100)
