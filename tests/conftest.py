import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")


# a training budget that only checks the plumbing (seconds on 2 cores)
TINY = ["--set", "train2d.epochs=1", "--set", "train2d.patches_per_epoch=64", "--set", "train2d.patch=24", "--set", "train3d.epochs=1",
        "--set", "train3d.patches_per_epoch=16", "--set", "train3d.patch=24", "--set", "train3d.batch_size=4", "--set", "threads=1"]


def sets(**values) -> list:
    """``--set`` options from keywords: ``data__var="t2m"`` -> ``--set data.var=t2m``."""
    return sum((["--set", f"{k.replace('__', '.')}={v}"] for k, v in values.items()), [])


def shared_path(*parts) -> str:
    """Path under ../shared/data, or skip the test with a reason when it is absent."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        pytest.skip(f"reference data not available: {path} (../shared/data is absent outside development/CI)")
    return path


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run ``python -m <args>`` in a subprocess; returns CompletedProcess with text output."""
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)


def swe_file(path, *, frames: int, size: tuple, seed: int):
    """Generate a shallow-water sequence at ``path`` (.h5 layout, or CF NetCDF for .nc) with the CLI; returns ``path``."""
    proc = run_cli("hpcvsr.data", "swe", "--frames", str(frames), "--size", str(size[0]), str(size[1]), "--seed", str(seed), "--out", str(path),
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    return path


def assert_user_error(proc, *fragments):
    """One clear error line, non-zero exit, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("hpcvsr: error:")]
    assert len(lines) == 1, proc.stderr
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def mpirun_cmd(n: int, *args) -> list:
    """``mpirun -n N python -m ...`` with the MPI of this environment, or skip with a reason."""
    pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install 'hpcvsr[mpi]')")
    import shutil

    exe = os.path.join(os.path.dirname(sys.executable), "mpirun")
    exe = exe if os.path.exists(exe) else shutil.which("mpirun")
    if not exe:
        pytest.skip("no mpirun found (pip install 'hpcvsr[mpi]' provides Open MPI)")
    return [exe, "-n", str(n), "--oversubscribe", sys.executable, *args]


def mpi_env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", HPCVSR_TIMEOUT="120")
    return e


def run_mpi(n: int, *args, timeout=900):
    return subprocess.run(mpirun_cmd(n, *args), env=mpi_env(), capture_output=True, text=True, timeout=timeout)


def kill_one_rank(proc, limit: float = 120.0) -> float:
    """SIGKILL one rank of the ``mpirun`` job ``proc`` (a dead node); the job must end, non-zero, within
    ``limit`` seconds. Returns how long it took."""
    import signal
    import time

    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(ranks) == 2, ranks
    t0 = time.time()
    os.kill(int(ranks[-1]), signal.SIGKILL)
    proc.communicate(timeout=300)
    ended = time.time() - t0
    print(f"job ended {ended:.1f} s after the kill, exit {proc.returncode}")
    assert proc.returncode != 0 and ended < limit, (proc.returncode, ended)
    return ended


def crash_after_chunks(args: list, chunks: int, timeout: float = 300.0) -> None:
    """Start ``hpcvsr.infer`` (``args``) on 2 ranks and SIGKILL every rank once ``chunks`` chunks are written
    (a crash: no chance to clean up); the job must end non-zero."""
    import signal
    import time

    proc = subprocess.Popen(mpirun_cmd(2, *args), env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done, deadline = 0, time.time() + timeout
    for line in proc.stdout:
        done += " done" in line and "chunk" in line
        if done >= chunks or time.time() > deadline:
            break
    for pid in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode != 0


SMALL_RUN = ["--set", "data.frames=25", "--set", "data.size=[32,32]", "--set", "train2d.epochs=1", "--set", "train2d.patches_per_epoch=64",
             "--set", "train2d.patch=16", "--set", "train3d.epochs=1", "--set", "train3d.patches_per_epoch=16", "--set", "train3d.patch=16",
             "--set", "train3d.batch_size=4"]


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A finished 2d_3d run on 25 generated frames of 32x32 (seconds of training), shared by the tests that only apply one."""
    d = tmp_path_factory.mktemp("trained")
    proc = run_cli("hpcvsr.train", "--run-dir", str(d), *SMALL_RUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d
