"""Atomic writes and the overwrite refusal: the one place every output goes through.

A file appears under its final name only when it is complete: it is written under a temporary
name in the same folder (``<path>.tmp<pid>``) and renamed with ``os.replace``. An existing
result is never replaced unless the caller passes ``overwrite=True``, and a missing output
folder is an error before any work is done. A write that fails for want of space, quota or
permission (ENOSPC, EDQUOT, EROFS, EACCES, EIO) removes its temporary file and ends as one
UserError naming the path and the cause; what was finished before stays.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil

from hpcvsr.errors import UserError


def check_writable(path: str, overwrite: bool = False) -> None:
    """Raise a UserError if ``path`` exists (and may not be replaced) or its folder is missing."""
    if os.path.exists(path) and not overwrite:
        raise UserError(f"{path} exists; refusing to overwrite it (pass --overwrite to replace it)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UserError(f"output folder does not exist: {parent}")


def temporary_name(path: str) -> str:
    return f"{path}.tmp{os.getpid()}"


@contextlib.contextmanager
def atomic_path(path: str, overwrite: bool = True):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    With ``overwrite=False`` an existing ``path`` is refused before anything is written.
    """
    check_writable(path, overwrite)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        code = storage_errno(exc)
        if code is not None:
            raise UserError(f"cannot write {path}: {os.strerror(code)} (errno {errno.errorcode[code]}); "
                            "what was finished before is kept: free space and run the same command again") from None
        raise


STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)


def storage_errno(exc: BaseException) -> int | None:
    """The storage errno behind a failed write: an OSError's, or the ``errno = N`` HDF5 puts in the
    message of the RuntimeError h5py raises; None for anything else."""
    if isinstance(exc, OSError):
        code = exc.errno
    elif isinstance(exc, RuntimeError) and (m := re.search(r"errno = (\d+)", str(exc))):
        code = int(m.group(1))
    else:
        return None
    return code if code in STORAGE_ERRORS else None


def check_space(path: str, nbytes: int) -> None:
    """A UserError before writing ``nbytes`` into ``path``'s folder when the file system has less free."""
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if free < nbytes:
        raise UserError(f"cannot write {path}: it needs {nbytes / 1e6:.2f} MB and its file system has {free / 1e6:.2f} MB free; "
                        "free space and run the same command again")


def write_bytes(path: str, data: bytes, overwrite: bool = True) -> None:
    """``data`` under ``path`` atomically, after a free-space check, flushed to the disk before the rename."""
    check_space(path, len(data))
    with atomic_path(path, overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str, text: str, overwrite: bool = True) -> None:
    with atomic_path(path, overwrite) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def write_json(path: str, obj, overwrite: bool = True) -> None:
    write_text(path, json.dumps(obj, indent=2, default=float), overwrite)
