"""Atomic writes and the overwrite refusal: the one place every output goes through.

A file appears under its final name only when it is complete: it is written under a temporary
name in the same folder (``<path>.tmp<pid>``) and renamed with ``os.replace``. An existing
result is never replaced unless the caller passes ``overwrite=True``, and a missing output
folder is an error before any work is done.
"""

from __future__ import annotations

import contextlib
import json
import os

from ..errors import UserError


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
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def write_text(path: str, text: str, overwrite: bool = True) -> None:
    with atomic_path(path, overwrite) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def write_json(path: str, obj, overwrite: bool = True) -> None:
    write_text(path, json.dumps(obj, indent=2, default=float), overwrite)
