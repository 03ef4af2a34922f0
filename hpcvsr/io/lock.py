"""One job per run directory or output: a lock file with the owner's host, pid and batch job id.

``<target>.lock`` (or ``<run_dir>/hpcvsr.lock``) is created with ``O_CREAT | O_EXCL``, so of two
jobs started at once exactly one gets it. A second job is refused with a message that names the
owner. A lock whose owner is gone is stale and is taken over with a warning: on the same host a
dead pid shows it; a lock from another host cannot be checked from here and is refused, with the
command that removes it. The lock is removed when its owner finishes, also on errors; a killed
job leaves it behind, and the next job on the same host takes it over. Creating the lock is the
first write of every output, so a missing or unwritable folder is a UserError here, before any work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time

from hpcvsr.errors import UserError

log = logging.getLogger("hpcvsr")
JOB_VARIABLES = ("SLURM_JOB_ID", "LSB_JOBID", "PBS_JOBID", "FLUX_JOB_ID")


def owner() -> dict:
    """This process: host, pid, batch job id ('' outside a batch job), start time."""
    job = next((os.environ[v] for v in JOB_VARIABLES if os.environ.get(v)), "")
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": job, "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def _describe(info: dict) -> str:
    job = f", batch job {info['job']}" if info.get("job") else ""
    return f"pid {info.get('pid')} on {info.get('host')}{job}, since {info.get('since')}"


def _create(path: str, info: dict, what: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as exc:  # the first touch of the disk for every output: its folder must exist and take files
        folder = os.path.dirname(os.path.abspath(path))
        why = "does not exist" if isinstance(exc, (FileNotFoundError, NotADirectoryError)) else f"is not writable ({exc.strerror})"
        raise UserError(f"cannot write {what}: the folder {folder} {why}") from None
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    return True


def _read(path: str) -> dict:
    """The owner record in a lock file ({} when it is gone or unreadable)."""
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def acquire(path: str, what: str) -> dict:
    """Take the lock file ``path`` for ``what`` (a run directory, an output); returns the owner record.

    A live owner (or one on another host) is a UserError; a dead owner on this host is taken over
    with a warning.
    """
    me = owner()
    for _ in range(3):  # a stale lock removed by two jobs at once: retry the exclusive create
        if _create(path, me, what):
            return me
        info = _read(path)
        if not info:
            raise UserError(f"{what} is locked by {path}, which cannot be read; if no job uses {what}, remove it: rm {path}")
        if info.get("host") != me["host"]:
            raise UserError(f"{what} is in use by {_describe(info)} ({path}); if that job is gone, remove the lock: rm {path}")
        if _alive(int(info.get("pid", -1))) and info.get("pid") != me["pid"]:
            raise UserError(f"{what} is in use by {_describe(info)} ({path}); wait for it or use another one")
        log.warning("taking over the stale lock %s of %s: its owner (%s) is gone", path, what, _describe(info))
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    raise UserError(f"could not take the lock {path} for {what}")


def release(path: str, me: dict) -> None:
    """Remove the lock file if it is still ours."""
    info = _read(path)
    if info.get("host") == me["host"] and info.get("pid") == me["pid"]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def held_by_root(env, path: str, what: str):
    """:func:`held` for a job of several ranks: rank 0 takes the lock and every rank meets the same
    error when it cannot (``env``: a :class:`hpcvsr.dist.DistEnv`)."""
    me, problem = None, ""
    if env.is_root:
        try:
            me = acquire(path, what)
        except UserError as exc:
            problem = str(exc)
    problem = env.broadcast_object(problem)
    if problem:
        raise UserError(problem)
    try:
        yield
    finally:
        if me is not None:
            release(path, me)


@contextlib.contextmanager
def held(path: str, what: str):
    """Hold the lock file ``path`` for the duration of the block."""
    me = acquire(path, what)
    try:
        yield me
    finally:
        release(path, me)
