"""The pipeline kinds: one table that says how each pipeline is built, trained and applied.

=========  =========  ========  ==========================  ==========================================
kind       trains 2D  3D stage  the final network reads     the final network
=========  =========  ========  ==========================  ==========================================
``2d``     yes        no        LR frames                   the 2D network
``3d``     no         yes       windows of bicubic (HR) or  the 3D network
                                LR frames (its input space)
``2d_3d``  yes        yes       windows of 2D outputs       the 3D network (on HR frames)
``joint``  yes        yes       windows of LR frames        2D on every frame, then 3D, trained end to end
``3d_2d``  yes        yes       windows of LR frames        3D refines the LR centre frame, then 2D
=========  =========  ========  ==========================  ==========================================

Training (``train``), inference (``engine``), the data segments (halo frames) and the reports
consult this table; nothing else compares pipeline names. :func:`check` runs every cross-field
check of a configuration that needs the models (names, keyword arguments, scale support, input
space, border crop against the patch size, initial weights) when the configuration is loaded,
before any data are generated or any output is created.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from .errors import UserError
from .models import MODELS, MODELS_2D, MODELS_3D, build, entry
from .models import weights as weights_mod

log = logging.getLogger("hpcvsr")


@dataclass(frozen=True)
class Kind:
    name: str
    trains_2d: bool  # a 2D stage is trained first
    has_3d: bool  # a 3D network over frame windows follows
    feeds: str  # what the 3D stage reads: 'sr2d' (2D outputs), 'lr' (LR windows) or 'input' (by the 3D model's input space)
    needs_space: str = ""  # the 3D model's required input space ('' any, 'hr', or 'lr_refiner' for a same-size LR refiner)
    composite: str = ""  # models.MODELS name of the composition ('' : the 3D network is the final network)

    def window(self, size: int) -> int:
        """Frames per sample of the final network."""
        return size if self.has_3d else 1

    def halo(self, size: int) -> int:
        """Frames each side a rank must hold beyond its own for its windows."""
        return self.window(size) // 2

    def source(self, input_space: str = "hr") -> str:
        """The buffer the final network reads: 'lr', 'bicubic' or 'sr2d'."""
        if not self.has_3d:
            return "lr"
        if self.feeds == "input":
            return "bicubic" if input_space == "hr" else "lr"
        return self.feeds

    @property
    def param_prefix(self) -> str:
        """Prefix of the 3D network's layer names inside the final network (for freeze / lr_mult)."""
        return "net3d." if self.composite else ""


STAGE_2D = "2d"  # the 2D stage's name in histories, checkpoints and tables: the network of the 2d pipeline

KINDS = {
    STAGE_2D: Kind(STAGE_2D, trains_2d=True, has_3d=False, feeds="lr"),
    "3d": Kind("3d", trains_2d=False, has_3d=True, feeds="input"),
    "2d_3d": Kind("2d_3d", trains_2d=True, has_3d=True, feeds="sr2d", needs_space="hr"),
    "joint": Kind("joint", trains_2d=True, has_3d=True, feeds="lr", needs_space="hr", composite="joint2d3d"),
    "3d_2d": Kind("3d_2d", trains_2d=True, has_3d=True, feeds="lr", needs_space="lr_refiner", composite="reverse3d2d"),
}


def kind(name: str) -> Kind:
    if name not in KINDS:
        raise UserError(f"unknown pipeline '{name}' (choose from {', '.join(KINDS)})")
    return KINDS[name]


def build_2d(cfg, init: bool = True):
    """(model, entry) of the configured 2D network, initialised from ``model2d.init`` if ``init``."""
    m, scale = cfg.model2d, cfg.degrade.scale
    if m.name not in MODELS_2D:
        raise UserError(f"model2d.name must be one of {', '.join(MODELS_2D)}, got '{m.name}'")
    model = build(m.name, scale, **m.kwargs)
    if init and m.init:
        path = weights_mod.resolve_init(m.init, m.name, scale)
        _, _, sd = weights_mod.load_source(path, scale)
        report = weights_mod.init_layerwise(model, sd)
        log.info("model2d %s initialised from %s: %s", m.name, path, ", ".join(f"{k} {v}" for k, v in report.items()))
    return model, entry(m.name, scale, m.kwargs)


def build_3d(cfg, init: bool = True):
    """(model, entry) of the configured 3D network, shaped for the pipeline kind."""
    m, scale, k = cfg.model3d, cfg.degrade.scale, kind(cfg.pipeline)
    if m.name not in MODELS_3D:
        raise UserError(f"model3d.name must be one of {', '.join(MODELS_3D)}, got '{m.name}'")
    if k.needs_space == "hr" and MODELS[m.name].input_space != "hr":
        raise UserError(f"pipeline {k.name} needs a 3D model on high-resolution frames (model3d.name: vsr3d), got '{m.name}'")
    kwargs = dict(m.kwargs, frames=cfg.windows.size)
    if k.needs_space == "lr_refiner":  # the 3D network refines LR frames, keeping their size
        if m.name != "vsr3d":
            raise UserError(f"pipeline {k.name} needs model3d.name: vsr3d (a same-size refiner of LR frames), got '{m.name}'")
        kwargs.update(residual=True, same_padding=True)
    model = build(m.name, scale, **kwargs)
    if init and m.init:
        _, _, sd = weights_mod.load_source(m.init, scale)
        weights_mod.init_layerwise(model, sd)
    return model, entry(m.name, scale, kwargs)


def compose(k: Kind, net2d, entry2d: dict, net3d, entry3d: dict, constrain: dict | None = None):
    """(final network, its entry) for kind ``k`` from its trained parts; ``constrain``: the
    consistency constraint of a composition whose last part does not read the original frames
    (3d_2d: the 2D part reads the refined centre frame)."""
    if not k.has_3d:
        return net2d, entry2d
    if not k.composite:
        return net3d, entry3d
    parts = {"net2d": net2d, "net3d": net3d}
    net, net_entry = MODELS[k.composite](**parts), entry(k.composite, entry3d["scale"], {}, {"net2d": entry2d, "net3d": entry3d})
    if constrain and k.needs_space == "lr_refiner":
        net, net_entry, _ = wrap(net, net_entry, constrain=constrain)
    return net, net_entry


def constraint(cfg, *, frames: int = 0, reads_hr: bool = False) -> dict | None:
    """The :class:`~hpcvsr.models.constraint.Constrained` keyword arguments of a stage network that
    reads ``frames``-frame windows (0: single frames), of high-resolution frames when ``reads_hr``;
    None unless ``degrade.constrain``."""
    g = cfg.degrade
    if not g.constrain:
        return None
    return {"method": g.method, "scale": g.scale, "sigma": g.blur_sigma, "reference": "hr" if reads_hr else "lr", "frames": frames}


def wrap(net, net_entry: dict, *, channels: int = 1, shared: bool = True, spec: dict | None = None,
         constrain: dict | None = None) -> tuple:
    """(network, entry, prefixes) of one stage: ``net`` for ``channels`` variables
    (:class:`~hpcvsr.models.variables.Variables`, when more than one: weights ``shared`` by the
    variables or one copy each), then wrapped in :class:`~hpcvsr.models.conditioning.Conditioned`
    when ``spec`` ({grid, static, location, time, width}) asks for conditioning, and last in
    :class:`~hpcvsr.models.constraint.Constrained` with ``constrain`` (:func:`constraint`). ``prefixes`` are
    those of the configured network's layer names inside the result (for freeze / lr_mult). One
    variable and no conditioning: ``net`` unchanged, prefixes [""]."""
    prefixes = [""]
    if channels > 1:
        net = MODELS["variables"](net, channels=channels, shared=shared)
        net_entry = entry("variables", net_entry["scale"], {"channels": channels, "shared": shared}, {"net": net_entry})
        prefixes = net.prefixes()
    if spec:
        spec = dict(spec, channels=channels) if channels > 1 else spec
        net, net_entry = MODELS["conditioned"](net, **spec), entry("conditioned", net_entry["scale"], spec, {"net": net_entry})
        prefixes = ["net." + p for p in prefixes]
    if constrain:
        net, net_entry = MODELS["constrained"](net, **constrain), entry("constrained", net_entry["scale"], constrain, {"net": net_entry})
        prefixes = ["net." + p for p in prefixes]
    return net, net_entry, prefixes


def check(cfg) -> None:
    """Cross-field checks that need the models; raises a UserError naming the keys."""
    k = kind(cfg.pipeline)
    if len(cfg.data.vars) > 1 and k.composite:
        raise UserError(f"pipeline {k.name} takes one variable; data.vars {list(cfg.data.vars)} needs pipeline 2d, 3d or 2d_3d")
    with torch.random.fork_rng(devices=[]):  # building the models must not move the global RNG
        net2d, _ = build_2d(cfg, init=False)
        net3d = build_3d(cfg, init=False)[0] if k.has_3d else None
    if cfg.model2d.init:
        weights_mod.resolve_init(cfg.model2d.init, cfg.model2d.name, cfg.degrade.scale)
    for section, path in (("model2d", cfg.model2d.init), ("model3d", cfg.model3d.init if k.has_3d else "")):
        if path and path != "bundled" and not os.path.isfile(path):
            raise UserError(f"{section}.init: file not found: {path}")
    for section, net in (("model2d", net2d), ("model3d", net3d)):
        if net is not None:
            weights_mod.check_layers(net, getattr(cfg, section).freeze, f"{section}.freeze")
            weights_mod.check_layers(net, getattr(cfg, section).lr_mult, f"{section}.lr_mult")
    crop = getattr(net3d, "crop", 0) if net3d is not None else 0
    if cfg.degrade.constrain:
        if crop:
            raise UserError(f"degrade.constrain needs whole output frames, but model3d {cfg.model3d.name} crops a {crop}-pixel border "
                            "(set model3d.kwargs.same_padding: true)")
        if k.name == "3d" and getattr(net3d, "input_space", "hr") == "hr":
            raise UserError("degrade.constrain with pipeline 3d needs a 3D model that reads the low-resolution frames (model3d.name: srnet3d); "
                            "vsr3d reads their bicubic upscale, which does not degrade back to them (or use pipeline 2d_3d)")
    if k.has_3d and cfg.train3d.patch <= 2 * crop:
        raise UserError(f"train3d.patch={cfg.train3d.patch} leaves nothing after the 3D model's {crop}-pixel border crop")
    if cfg.infer.tile and cfg.infer.tile_halo * cfg.degrade.scale < crop:
        raise UserError(f"infer.tile_halo={cfg.infer.tile_halo} LR pixels is smaller than the model's {crop}-pixel border crop")
