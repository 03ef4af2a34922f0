"""Pretrained weights on disk: the authors' released MATLAB files, hpcvsr's weights files and the bundled ones.

The SRCNN / FSRCNN authors store conv layers as [in, k*k, out] (SRCNN's first layer [k*k, out],
its last [in, k*k]) with column-major k x k kernels, applied as correlation with replicate
padding; FSRCNN's PReLU has one slope per layer and its deconvolution is [1, 81, in]. See
``../shared/data/PROVENANCE.md``. :func:`load_source` gives a state dict; applying it to a network
is :func:`hpcvsr.models.weights.init_layerwise`.
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch

from hpcvsr.errors import UserError
from hpcvsr.io import checkpoint

BUNDLED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")



def _kernel(flat: np.ndarray, k: int) -> np.ndarray:
    return np.asarray(flat).reshape(k, k, order="F")



def _conv_from_mat(w: np.ndarray) -> np.ndarray:
    """[in, k*k, out] -> torch (out, in, k, k)."""
    cin, kk, cout = w.shape
    k = int(round(kk**0.5))
    out = np.empty((cout, cin, k, k))
    for o in range(cout):
        for i in range(cin):
            out[o, i] = _kernel(w[i, :, o], k)
    return out



def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))



def _loadmat(path: str) -> dict:
    import scipy.io

    if not os.path.isfile(path):
        raise UserError(f"weights file not found: {path}")
    try:
        return scipy.io.loadmat(path)
    except (ValueError, OSError, TypeError) as exc:
        raise UserError(f"{path}: not a MATLAB weights file ({exc})") from None



def srcnn_from_mat(m: dict, path: str) -> tuple[dict, dict]:
    try:
        w1, b1 = m["weights_conv1"], m["biases_conv1"]
        w2, b2 = m["weights_conv2"], m["biases_conv2"]
        w3, b3 = m["weights_conv3"], m["biases_conv3"]
    except KeyError as exc:
        raise UserError(f"{path}: not SRCNN weights (missing {exc})") from None
    if w2.ndim == 2:
        w2 = w2[:, None, :]
    f1, f2, f3 = int(round(w1.shape[0] ** 0.5)), int(round(w2.shape[1] ** 0.5)), int(round(w3.shape[1] ** 0.5))
    kwargs = dict(f1=f1, f2=f2, f3=f3, n1=w1.shape[1], n2=w2.shape[2])
    sd = {
        "conv1.weight": _t(_conv_from_mat(w1[None])),
        "conv1.bias": _t(b1.ravel()),
        "conv2.weight": _t(_conv_from_mat(w2)),
        "conv2.bias": _t(b2.ravel()),
        "conv3.weight": _t(_conv_from_mat(w3[:, :, None])),
        "conv3.bias": _t(b3.ravel()),
    }
    return kwargs, sd



def fsrcnn_from_mat(m: dict, path: str) -> tuple[dict, dict]:
    try:
        ws = [np.asarray(w) for w in m["weights_conv"][:, 0]]
        bs = [np.asarray(b).ravel() for b in m["biases_conv"][:, 0]]
        ps = [np.asarray(p).ravel() for p in m["prelu_conv"][:, 0]]
    except (KeyError, IndexError, TypeError) as exc:
        raise UserError(f"{path}: not FSRCNN weights ({exc})") from None
    if len(ws) < 5:
        raise UserError(f"{path}: FSRCNN weights need at least 5 layers, found {len(ws)}")
    d, s, m_ = ws[0].shape[2], ws[1].shape[2], len(ws) - 4
    names = ["feature", "shrink"] + [f"map.{i}" for i in range(m_)] + ["expand"]
    acts = ["feature_act", "shrink_act"] + [f"map_act.{i}" for i in range(m_)] + ["expand_act"]
    sd = {}
    for name, act, w, b, p in zip(names, acts, ws[:-1], bs[:-1], ps[:-1]):
        sd[f"{name}.weight"] = _t(_conv_from_mat(w))
        sd[f"{name}.bias"] = _t(b)
        sd[f"{act}.weight"] = _t(p[:1])
    wd = ws[-1]  # [1, 81, in]
    k = int(round(wd.shape[1] ** 0.5))
    sd["deconv.weight"] = _t(np.stack([_kernel(wd[0, :, j], k) for j in range(wd.shape[2])])[:, None])
    sd["deconv.bias"] = _t(bs[-1][:1])
    return dict(d=d, s=s, m=m_), sd



def scale_from_filename(path: str) -> int | None:
    found = re.search(r"x(\d)(?:\D*)$", os.path.splitext(os.path.basename(path))[0])
    return int(found.group(1)) if found else None



def run_model(path: str) -> str:
    """``path``, or the model file of ``path`` when it is a run directory."""
    return os.path.join(path, "model.pt") if os.path.isdir(path) else path


# wrappers around one configured network, and where it lies inside them (its state dict's prefix)
_WRAPPED = {"conditioned": "net", "constrained": "net", "bounded": "net", "variables": "net", "joint2d3d": "net3d", "reverse3d2d": "net3d"}


def bare(entry: dict) -> dict:
    """The configured network inside an entry's wrappers (conditioning, constraint, several variables
    sharing one network, the compositions' 3D part), with its own part of the state dict."""
    while entry["name"] in _WRAPPED and _WRAPPED[entry["name"]] in entry.get("parts", {}):
        if entry["name"] == "variables" and not entry["kwargs"].get("shared", True):
            raise UserError(f"{entry['name']}: one network per variable; start from a run whose variables share their network")
        key = _WRAPPED[entry["name"]]
        prefix = key + "."
        inner = dict(entry["parts"][key])
        if "state_dict" in entry:
            inner["state_dict"] = {k[len(prefix):]: v for k, v in entry["state_dict"].items() if k.startswith(prefix)}
        entry = inner
    return entry


def load_source(path: str, scale: int, part: str = "model") -> tuple[str, dict, dict]:
    """(model name, kwargs, state_dict) from an authors' .mat, an hpcvsr checkpoint / weights .pt, or
    a finished run (its directory or model.pt: ``part`` 'net2d' for its 2D network, 'model' for its
    final one), unwrapped to the configured network (:func:`bare`).

    The file's scale must equal ``scale``.
    """
    path = run_model(path)
    if path.endswith(".mat"):
        m = _loadmat(path)
        file_scale = scale_from_filename(path)
        if file_scale is not None and file_scale != scale:
            raise UserError(f"{path}: weights are for scale x{file_scale}, but scale x{scale} was asked for")
        if "weights_conv1" in m:
            name, convert = "srcnn", srcnn_from_mat
        elif "weights_conv" in m:
            name, convert = "fsrcnn", fsrcnn_from_mat
        else:
            raise UserError(f"{path}: neither SRCNN nor FSRCNN weights (no weights_conv1 / weights_conv)")
        try:
            kwargs, sd = convert(m, path)
        except (ValueError, IndexError, TypeError, AttributeError) as exc:
            raise UserError(f"{path}: {name.upper()} weights of unexpected shapes or types ({str(exc)[:120]})") from None
        bad = [k for k, v in sd.items() if not torch.isfinite(v).all()]
        if bad:
            raise UserError(f"{path}: weights {', '.join(bad)} hold NaN or inf values")
        return name, kwargs, sd
    entry = bare(checkpoint.load_entry(path, part))
    if entry["scale"] != scale:
        raise UserError(f"{path}: weights are for scale x{entry['scale']}, but scale x{scale} was asked for")
    return entry["name"], entry["kwargs"], entry["state_dict"]



def bundled_path(name: str, scale: int) -> str:
    return os.path.join(BUNDLED_DIR, f"{name}_x{scale}.pt")



def resolve_init(init: str, name: str, scale: int) -> str:
    if init == "bundled":
        path = bundled_path(name, scale)
        if not os.path.isfile(path):
            raise UserError(f"no bundled pretrained weights for {name} x{scale} (expected {path}); run python -m hpcvsr.pretrain")
        return path
    return init
