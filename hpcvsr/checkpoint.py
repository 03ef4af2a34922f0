"""Checkpoints: the whole training state, written atomically, loaded with clear errors.

A checkpoint is a dict saved with ``torch.save``::

    {"format": "hpcvsr-1", "model": {"name", "scale", "kwargs", "state_dict"},
     "optimizer", "scheduler", "epoch", "step", "best", "bad_epochs", "history",
     "rng": {"torch", "numpy", "python"}, "config": {...}, "stage": "2d", ...}

The model entry holds the *unwrapped* module's state dict (never DDP's ``module.`` keys). Only
rank 0 writes (temporary file + ``os.replace``); every rank loads.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import zipfile

import numpy as np
import torch

from .errors import UserError

FORMAT = "hpcvsr-1"


def model_entry(model: torch.nn.Module, name: str, scale: int, kwargs: dict) -> dict:
    return {"name": name, "scale": scale, "kwargs": dict(kwargs), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save(path: str, state: dict) -> None:
    """Atomically write ``state`` to ``path``."""
    state = dict(state, format=FORMAT)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path: str) -> dict:
    """Load a checkpoint, or raise a UserError naming the file and what is wrong with it."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UserError(f"{path}: not a readable checkpoint (corrupt or truncated: {str(exc).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "model" not in state:
        raise UserError(f"{path}: not an hpcvsr checkpoint")
    return state


def file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def state_hash(state_dict: dict) -> str:
    """sha256 of a state dict's tensors (names, dtypes, shapes and bytes): equal iff bitwise equal."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()
