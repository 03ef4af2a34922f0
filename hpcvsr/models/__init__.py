"""Networks. Every model is a plain ``nn.Module`` built from keyword arguments.

2D models map a low-resolution frame batch (N, 1, h, w) to (N, 1, s*h, s*w). 3D models map a
window batch (N, T, H, W) of consecutive frames to the centre frame (N, 1, H', W'); several
variables at once are :class:`Variables` of one of them (channels C instead of 1); their
``input_space`` says whether the frames are high-resolution ('hr': 2D outputs or bicubic) or
low-resolution ('lr').

Every network built here knows what it is: ``net.spec`` is the description it was built from
(:func:`entry`: name, scale, keyword arguments and the specs of its parts), which checkpoints store
next to its weights and :func:`from_entry` rebuilds it from.
"""

from hpcvsr.models.bounds import Bounded
from hpcvsr.models.composite import Joint2D3D, Reverse3D2D
from hpcvsr.models.conditioning import Conditioned
from hpcvsr.models.constraint import Constrained
from hpcvsr.models.fsrcnn import FSRCNN, ClimateFSRCNN
from hpcvsr.models.generative import ResidualGenerator
from hpcvsr.models.srcnn import SRCNN
from hpcvsr.models.variables import Variables
from hpcvsr.models.vsr3d import VSR3D, SRNet3D

MODELS = {
    "srcnn": SRCNN,
    "fsrcnn": FSRCNN,
    "climate_fsrcnn": ClimateFSRCNN,
    "vsr3d": VSR3D,
    "srnet3d": SRNet3D,
    "joint2d3d": Joint2D3D,  # compositions: built from their parts (net2d, net3d), not from a scale
    "reverse3d2d": Reverse3D2D,
    "conditioned": Conditioned,  # a network plus place/time conditioning: built from its part (net) and kwargs
    "variables": Variables,  # a network shared by several variables plus a mixing head: from its part (net) and kwargs
    "constrained": Constrained,  # a network plus the exact consistency projection onto its input: from its part (net) and kwargs
    "bounded": Bounded,  # a network plus a clip of its output to each variable's bounds: from its part (net) and kwargs
    "residual_gen": ResidualGenerator,  # the generative stage: ensemble members of a deterministic output (pipeline 2d_3d_gen)
}

MODELS_2D = ("srcnn", "fsrcnn", "climate_fsrcnn")
MODELS_3D = ("vsr3d", "srnet3d")
MODELS_GEN = ("residual_gen",)


def build(name: str, scale: int, **kwargs):
    """Instantiate ``MODELS[name]`` with ``scale`` and the given keyword arguments."""
    from hpcvsr.errors import UserError

    if name not in MODELS:
        raise UserError(f"unknown model '{name}' (choose from {', '.join(MODELS)})")
    try:
        model = MODELS[name](scale=scale, **kwargs)
    except TypeError as exc:
        raise UserError(f"model '{name}': {exc}") from None
    model.spec = entry(name, scale, kwargs)
    return model


def around(name: str, parts: dict, **kwargs):
    """``MODELS[name]`` (a composition or wrapper) of built ``parts`` {argument: network}, with its spec."""
    model = MODELS[name](**parts, **kwargs)
    model.spec = entry(name, next(iter(parts.values())).spec["scale"], kwargs, {k: p.spec for k, p in parts.items()})
    return model


def entry(name: str, scale: int, kwargs: dict, parts: dict | None = None) -> dict:
    """A JSON-like description of a model (what checkpoints store besides the weights)."""
    e = {"name": name, "scale": scale, "kwargs": dict(kwargs)}
    if parts:
        e["parts"] = parts
    return e


def from_entry(e: dict):
    """Rebuild a model (and load its weights if the entry has them) from :func:`entry`."""
    if "parts" in e:
        model = around(e["name"], {k: from_entry(v) for k, v in e["parts"].items()}, **e["kwargs"])
    else:
        model = build(e["name"], e["scale"], **e["kwargs"])
    if "state_dict" in e:
        model.load_state_dict(e["state_dict"])
    return model
