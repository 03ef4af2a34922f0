"""User-facing errors: one clear line and a non-zero exit, no traceback.

Anything the user can fix (a bad path, a wrong shape, an unknown config key) raises
:class:`UserError`. Entry points wrap ``main`` with :func:`cli`, which prints
``hpcvsr: error: <message>`` to stderr and exits with status 2. Programming errors keep
their traceback.
"""

from __future__ import annotations

import functools
import sys


class UserError(Exception):
    """A mistake in the user's input, configuration or files."""


def cli(main):
    """Decorate an entry point so that a :class:`UserError` ends it with one line."""

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except UserError as exc:
            _close_progress_bars()  # the error starts its own line
            print(f"hpcvsr: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return wrapper


def run_child(cmd: list, what: str, tail: int = 1, **kwargs):
    """Run ``cmd`` (an hpcvsr command a benchmark or sweep starts) with its output captured; if it fails,
    raise a UserError with the child's own ``hpcvsr: error:`` line, or else its last ``tail`` lines."""
    import subprocess

    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        why = next((line for line in lines if line.startswith("hpcvsr: error:")), "\n".join(lines[-tail:]) or f"exit {proc.returncode}")
        raise UserError(f"{what} failed: {why}")
    return proc


def _close_progress_bars() -> None:
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def check_finite(array, what: str) -> None:
    """Raise a UserError when ``array`` (numpy or torch) holds NaN or inf."""
    import numpy as np

    try:
        import torch

        if isinstance(array, torch.Tensor):
            ok = bool(torch.isfinite(array).all())
        else:
            ok = bool(np.isfinite(array).all())
    except ImportError:  # pragma: no cover - torch is a core dependency
        ok = bool(np.isfinite(array).all())
    if not ok:
        raise UserError(f"{what} contains NaN or inf values")


def require(module: str, extra: str):
    """Import an optional module or raise a UserError that says what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"this needs the Python package '{module}': pip install 'hpcvsr[{extra}]'"
        ) from None
