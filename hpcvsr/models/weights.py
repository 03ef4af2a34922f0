"""Layer-wise transfer between networks (no files: :mod:`hpcvsr.io.weights` reads them).

:func:`init_layerwise` initialises any model from another model's state dict: layers of the same
shape are copied, layers whose width changed get the overlapping slice (kernel sizes must agree),
everything else keeps its fresh initialisation.
"""

from __future__ import annotations

import torch

from hpcvsr.errors import UserError


def layer_names(model: torch.nn.Module) -> list[str]:
    """Names of the modules that own parameters directly (what freeze / lr_mult refer to)."""
    return [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]



def init_layerwise(model: torch.nn.Module, source: dict) -> dict[str, str]:
    """Initialise ``model`` from ``source`` (a state dict) layer by layer.

    Returns {layer: 'copied' | 'sliced' | 'fresh'}.
    """
    report = {}
    own = model.state_dict()
    with torch.no_grad():
        for layer in layer_names(model):
            wkey = f"{layer}.weight"
            keys = [k for k in own if k.rsplit(".", 1)[0] == layer]
            src_w = source.get(wkey)
            if src_w is None or src_w.ndim != own[wkey].ndim or src_w.shape[2:] != own[wkey].shape[2:]:
                report[layer] = "fresh"
                continue
            exact = all(k in source and source[k].shape == own[k].shape for k in keys)
            for k in keys:
                if k not in source:
                    continue
                dst, src = own[k], source[k].to(own[k].dtype)
                sl = tuple(slice(0, min(a, b)) for a, b in zip(dst.shape, src.shape))
                dst[sl] = src[sl]
            report[layer] = "copied" if exact else "sliced"
    model.load_state_dict(own)
    return report



def check_layers(model: torch.nn.Module, names, what: str) -> None:
    known = layer_names(model)
    for n in names:
        if n not in known:
            raise UserError(f"{what}: model has no layer '{n}' (layers: {', '.join(known)})")
