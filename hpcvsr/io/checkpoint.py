"""hpcvsr's files of trained state: one writer and one reader for each, with a format and version.

Three kinds of file, each a dict saved with ``torch.save`` and loaded with ``weights_only=True``
(tensors plus plain Python data: a file from someone else can at worst fail to load)::

    training checkpoint   {"format": "hpcvsr-checkpoint", "version": 2, "stage": STAGE,
                           "model": ENTRY, "optimizer": {...}, "scheduler": {...}, "epoch", "step",
                           "world", "history": [...], "best", "bad_epochs", "best_state": {name: tensor},
                           "rng": {"torch": uint8 tensor, "numpy": [...], "python": [...]},
                           "config": {...}, "done": bool}
    model file (model.pt) {"format": "hpcvsr-model", "version": 2, "pipeline", "scale", "degrade",
                           "blur_sigma", "window", "pad", "crop", "var",
                           "normaliser": {"lo", "hi", "units"}, "net2d": ENTRY, "model": ENTRY, "config": {...},
                           "condition": {...}, "variables": [{"var", "lo", "hi", "units"}, ...], "gen": ENTRY or {},
                           "weights_sha256": hash of the two networks' tensors}
    weights               {"format": "hpcvsr-weights", "version": 2, "model": ENTRY, "made_by", "data", "history"}

    ENTRY = {"name", "scale", "kwargs", "state_dict", ["parts": {"net2d": ENTRY, "net3d": ENTRY}]}

A model entry holds the *unwrapped* module's state dict (never DDP's ``module.`` keys). Files
are written atomically by rank 0 and loaded by every rank. A training checkpoint is
crash-consistent: ``CKPT.sha256`` records its size and hash, the last verified one is kept as
``CKPT.prev`` until the new one is complete, and a newest checkpoint that is missing, truncated
or altered is replaced by the previous one with a warning. Files of the first format
(``hpcvsr-1``) are refused with the command that converts them::

    python -m hpcvsr.checkpoint upgrade OLD.pt [--out NEW.pt]
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import random
import zipfile
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from hpcvsr.errors import UserError
from hpcvsr.io.atomic import write_bytes, write_text

VERSION = 2
CHECKPOINT, MODEL, WEIGHTS = "hpcvsr-checkpoint", "hpcvsr-model", "hpcvsr-weights"
OLD_FORMAT = "hpcvsr-1"
log = logging.getLogger("hpcvsr")


def cpu_state(model: torch.nn.Module) -> dict:
    """The module's state dict, detached, on the CPU."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def model_entry(model: torch.nn.Module) -> dict:
    """The network's description (``model.spec``, :func:`hpcvsr.models.entry`) with its weights."""
    return dict(model.spec, state_dict=cpu_state(model))


def _plain_rng(torch_state: torch.Tensor, numpy_state: tuple, python_state: tuple) -> dict:
    name, keys, pos, has_gauss, cached = numpy_state
    return {"torch": torch_state, "numpy": [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
            "python": list(python_state)}


def rng_state() -> dict:
    """The global RNG states as a tensor and plain data."""
    return _plain_rng(torch.get_rng_state(), np.random.get_state(), random.getstate())


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _serialise(kind: str, state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(dict(state, format=kind, version=VERSION), buf)
    return buf.getvalue()


def _save(path: str, kind: str, state: dict) -> None:
    """Serialise in memory, then one checked, flushed, atomic write (a full disk is one clear error,
    and the previous file under ``path`` stays until the new one is complete)."""
    write_bytes(path, _serialise(kind, state))


def _load(path: str, kinds: tuple[str, ...]) -> dict:
    """Load a file of one of ``kinds`` safely, or raise a UserError naming the file and the problem."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a readable checkpoint (corrupt or truncated: not a torch.save archive)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        why = next((line for line in str(exc).splitlines() if "Unsupported global" in line or "GLOBAL" in line), "")
        if not why:
            raise UserError(f"{path}: not a readable checkpoint (corrupt or truncated: {str(exc).splitlines()[0][:120]})") from None
        raise UserError(f"{path}: refused: it holds objects other than tensors and plain data, which loading could execute "
                        f"({why.strip()[:120]}); if you wrote it with an earlier hpcvsr and trust it, convert it with "
                        f"python -m hpcvsr.checkpoint upgrade {path}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UserError(f"{path}: not a readable checkpoint (corrupt or truncated: {str(exc).splitlines()[0][:120]})") from None
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt == OLD_FORMAT:
        raise UserError(f"{path}: written by an earlier hpcvsr (format {OLD_FORMAT}); convert it with python -m hpcvsr.checkpoint upgrade {path}")
    if fmt not in kinds or "model" not in state:
        raise UserError(f"{path}: not an hpcvsr {' or '.join(k.split('-')[1] for k in kinds)} file")
    if state.get("version") != VERSION:
        raise UserError(f"{path}: {fmt} version {state.get('version')}; this hpcvsr reads version {VERSION}")
    return state


# --- training checkpoints -------------------------------------------------------------------------

PREVIOUS = ".prev"  # the last verified training checkpoint, kept until the next one is complete


def _record(path: str) -> str:
    return path + ".sha256"


def _verify(path: str) -> None:
    """A UserError unless ``path`` has the size and sha256 its record states. Without a record (a
    crash between the two writes, which leaves a complete file) the archive's own checks apply."""
    if not os.path.exists(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        with open(_record(path)) as f:
            digest, size = f.read().split()
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        raise UserError(f"{path}: its size and hash record {_record(path)} is unreadable") from None
    with open(path, "rb") as f:
        data = f.read()
    if len(data) != int(size) or hashlib.sha256(data).hexdigest() != digest:
        raise UserError(f"{path}: {len(data)} bytes whose hash differs from the {size} bytes recorded when it was written "
                        "(truncated or altered)")


def save_training(path: str, state: dict) -> None:
    """Write a training checkpoint (keys as in the module docstring) with its size and hash record,
    keeping the last verified one as ``path + PREVIOUS`` until this one is complete."""
    data = _serialise(CHECKPOINT, state)
    if os.path.exists(path):
        try:
            _verify(path)
        except UserError:
            pass  # not a good one: the previous stays as it is
        else:
            os.replace(path, path + PREVIOUS)
            if os.path.exists(_record(path)):
                os.replace(_record(path), _record(path + PREVIOUS))
            elif os.path.exists(_record(path + PREVIOUS)):
                os.remove(_record(path + PREVIOUS))  # a stale record must not condemn the file now under that name
    write_bytes(path, data)
    write_text(_record(path), f"{hashlib.sha256(data).hexdigest()} {len(data)}\n")


def training_exists(path: str) -> bool:
    """Whether a training checkpoint (or the previous one) is there to resume from."""
    return os.path.exists(path) or os.path.exists(path + PREVIOUS)


def load_training(path: str) -> dict:
    """The newest verified training checkpoint; the previous one, with a warning, when the newest is
    missing, truncated or altered; else a UserError naming the problem."""
    try:
        _verify(path)
        return _load(path, (CHECKPOINT,))
    except UserError as exc:
        prev = path + PREVIOUS
        if not os.path.exists(prev):
            raise
        try:
            _verify(prev)
            state = _load(prev, (CHECKPOINT,))
        except UserError:
            raise exc from None
        log.warning("%s; resuming from the previous checkpoint %s instead", exc, prev)
        return state


# --- the model file of a finished run -------------------------------------------------------------

@dataclass(frozen=True)
class ModelFile:
    """Everything inference needs from a training run (``model.pt``)."""

    pipeline: str
    scale: int
    degrade: str
    blur_sigma: float
    window: int
    pad: str
    crop: int
    var: str
    normaliser: dict  # {"lo", "hi", "units"}
    net2d: dict  # model entry of the 2D network
    model: dict  # model entry of the final network
    config: dict = field(default_factory=dict)
    condition: dict = field(default_factory=dict)  # the grid a conditioned model is tied to (train.conditioning_spec); {} if none
    variables: list = field(default_factory=list)  # [{"var", "lo", "hi", "units"}] per channel; [] in files that predate it (one: var)
    gen: dict = field(default_factory=dict)  # model entry of the generative stage (pipeline 2d_3d_gen); {} if none


def _weights_hash(mf: ModelFile) -> str:
    """sha256 over the networks' tensors: torch.load does not check the archive's CRCs, so a flipped
    bit in a tensor would otherwise load as a silently different model."""
    return hashlib.sha256("".join(state_hash(e["state_dict"]) for e in (mf.net2d, mf.model, mf.gen) if e).encode()).hexdigest()


def save_model(path: str, mf: ModelFile) -> None:
    _save(path, MODEL, dict(asdict(mf), weights_sha256=_weights_hash(mf)))


def load_model(path: str) -> ModelFile:
    state = _load(path, (MODEL,))
    try:
        mf = ModelFile(**{k: v for k, v in state.items() if k not in ("format", "version", "weights_sha256")})
    except TypeError as exc:
        raise UserError(f"{path}: model file does not match version {VERSION} ({exc})") from None
    if "weights_sha256" in state and state["weights_sha256"] != _weights_hash(mf):
        raise UserError(f"{path}: its weights differ from those recorded when it was written (corrupt or altered); "
                        "use the run's checkpoints or train again")
    return mf


# --- weights (pretrained networks) ----------------------------------------------------------------

def save_weights(path: str, entry: dict, **info) -> None:
    """Write a network's entry (with weights) and plain-data ``info`` (made_by, data, history)."""
    _save(path, WEIGHTS, dict(info, model=entry))


def load_entry(path: str, part: str = "model") -> dict:
    """The final network's entry of any hpcvsr file (weights, model file or training checkpoint);
    ``part="net2d"``: a model file's 2D network (what the 2D stage of another run starts from)."""
    state = _load(path, (WEIGHTS, MODEL, CHECKPOINT))
    return state[part] if part in state else state["model"]


# --- hashes ---------------------------------------------------------------------------------------

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


# --- conversion of the first format ----------------------------------------------------------------

# the first format named the end-to-end composition after its pipeline kind
_RENAMED = {"joint": "joint2d3d", "3d_2d": "reverse3d2d"}  # frozen: the names the first format used


def _upgrade_entry(e: dict) -> dict:
    e = dict(e, name=_RENAMED.get(e["name"], e["name"]))
    if "parts" in e:
        e["parts"] = {k: _upgrade_entry(v) for k, v in e["parts"].items()}
    return e


def upgrade(src: str, dst: str) -> str:
    """Convert a first-format file to the current format; returns its kind. Unpickles ``src``: trusted files only."""
    state = torch.load(src, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or state.get("format") != OLD_FORMAT:
        raise UserError(f"{src}: not a first-format ({OLD_FORMAT}) hpcvsr file")
    state.pop("format")
    state["model"] = _upgrade_entry(state["model"])
    if "rng" in state:
        state["rng"] = _plain_rng(state["rng"]["torch"], state["rng"]["numpy"], state["rng"]["python"])
    if "optimizer" in state:
        _save(dst, CHECKPOINT, state)
        return CHECKPOINT
    if "pipeline" in state:
        state["net2d"] = _upgrade_entry(state["net2d"])
        save_model(dst, ModelFile(**state))
        return MODEL
    _save(dst, WEIGHTS, state)
    return WEIGHTS
