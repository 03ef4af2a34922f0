"""The one builder of pipelines: configuration -> networks, wrappers and initial weights.

Training, inference, the bench and the scaling studies build their networks here and nowhere else.
:func:`load_config` is the configuration as every command reads it: values parsed and checked by
:mod:`hpcvsr.pipeline.config`, then :func:`check`, which builds the networks (without weights) to
check what needs them (names, keyword arguments, scale support, input space, border crop against
the patch size, initial weights), before any data are generated or any output is created.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from hpcvsr.errors import UserError
from hpcvsr.io import weights as weight_files
from hpcvsr.models import MODELS, MODELS_2D, MODELS_3D, MODELS_GEN, around, build
from hpcvsr.models import weights as weights_mod
from hpcvsr.models.conditioning import set_static
from hpcvsr.pipeline import config as config_mod
from hpcvsr.pipeline import pairs
from hpcvsr.pipeline.kinds import Kind, kind

log = logging.getLogger("hpcvsr")


def load_config(path: str | None = None, overrides=()) -> config_mod.Config:
    """The configuration at ``path`` (a YAML file or a packaged preset's name; None: the embedded
    defaults) with ``--set`` ``overrides``, every check done, networks included."""
    return checked(config_mod.load(path, overrides))


def checked(cfg: config_mod.Config) -> config_mod.Config:
    """``cfg`` resolved (a paired configuration takes its scale from its two grids:
    :func:`hpcvsr.pipeline.pairs.resolve`) and checked with its networks built (:func:`check`)."""
    cfg = pairs.resolve(cfg)
    check(cfg)
    return cfg


def build_2d(cfg, init: bool = True):
    """The configured 2D network, initialised from ``model2d.init`` if ``init``."""
    m, scale = cfg.model2d, cfg.degrade.scale
    if m.name not in MODELS_2D:
        raise UserError(f"model2d.name must be one of {', '.join(MODELS_2D)}, got '{m.name}'")
    model = build(m.name, scale, **m.kwargs)
    if init and m.init:
        path = weight_files.resolve_init(m.init, m.name, scale)
        _, _, sd = weight_files.load_source(path, scale, part="net2d")
        report = weights_mod.init_layerwise(model, sd)
        log.info("model2d %s initialised from %s: %s", m.name, path, ", ".join(f"{k} {v}" for k, v in report.items()))
    return model


def build_3d(cfg, init: bool = True):
    """The configured 3D network, shaped for the pipeline kind."""
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
        _, _, sd = weight_files.load_source(m.init, scale)
        weights_mod.init_layerwise(model, sd)
    return model


def compose(k: Kind, net2d, net3d, constrain: dict | None = None, bounds: dict | None = None):
    """The final network of kind ``k`` from its trained parts; ``constrain``: the consistency
    constraint of a composition whose last part does not read the original frames (3d_2d: the 2D
    part reads the refined centre frame), within ``bounds`` (:func:`wrap`). Without a constraint the
    last part's own bounds bound the composition."""
    if not k.has_3d:
        return net2d
    if not k.composite:
        return net3d
    net = around(k.composite, {"net2d": net2d, "net3d": net3d})
    if constrain and k.needs_space == "lr_refiner":
        net, _ = wrap(net, constrain=constrain, bounds=bounds)
    return net


def constraint(cfg, *, frames: int = 0, reads_hr: bool = False) -> dict | None:
    """The :class:`~hpcvsr.models.constraint.Constrained` keyword arguments of a stage network that
    reads ``frames``-frame windows (0: single frames), of high-resolution frames when ``reads_hr``;
    None unless ``degrade.constrain``."""
    g = cfg.degrade
    if not g.constrain:
        return None
    return {"method": g.method, "scale": g.scale, "sigma": g.blur_sigma, "reference": "hr" if reads_hr else "lr", "frames": frames}


def wrap(net, *, channels: int = 1, shared: bool = True, spec: dict | None = None, constrain: dict | None = None,
         bounds: dict | None = None) -> tuple:
    """(network, prefixes) of one stage: ``net`` for ``channels`` variables
    (:class:`~hpcvsr.models.variables.Variables`, when more than one: weights ``shared`` by the
    variables or one copy each), then wrapped in :class:`~hpcvsr.models.conditioning.Conditioned`
    when ``spec`` ({grid, static, location, time, width}) asks for conditioning, and last in
    :class:`~hpcvsr.models.constraint.Constrained` with ``constrain`` (:func:`constraint`), projecting
    within ``bounds`` ({"lo", "hi"}: each channel's bounds in normalised units,
    :func:`hpcvsr.pipeline.bounds.normalised`), or, without a constraint, in
    :class:`~hpcvsr.models.bounds.Bounded` with them. ``prefixes`` are
    those of the configured network's layer names inside the result (for freeze / lr_mult). One
    variable and no conditioning: ``net`` unchanged, prefixes [""]."""
    prefixes = [""]
    if channels > 1:
        net = around("variables", {"net": net}, channels=channels, shared=shared)
        prefixes = net.prefixes()
    if spec:
        spec = dict(spec, channels=channels) if channels > 1 else spec
        net = around("conditioned", {"net": net}, **spec)
        prefixes = ["net." + p for p in prefixes]
    if constrain:
        net = around("constrained", {"net": net}, **constrain, **(bounds or {}))
        prefixes = ["net." + p for p in prefixes]
    elif bounds:
        net = around("bounded", {"net": net}, **bounds)
        prefixes = ["net." + p for p in prefixes]
    return net, prefixes


@dataclass
class Stage:
    """One trained network of a pipeline and what training and evaluation need to know of it."""

    net: torch.nn.Module  # its spec (``net.spec``) is what checkpoints store
    prefixes: list  # where the configured network's layer names lie inside ``net`` (freeze / lr_mult)
    section: str  # its configuration section: model2d or model3d
    source: str = "lr"  # the buffer it reads: 'lr', 'bicubic' or 'sr2d'
    window: int = 1  # frames per sample
    crop: int = 0  # the border its output lacks

    def freeze(self, cfg) -> list:
        return [p + n for p in self.prefixes for n in getattr(cfg, self.section).freeze]

    def lr_mult(self, cfg) -> dict:
        return {p + k: v for p in self.prefixes for k, v in getattr(cfg, self.section).lr_mult.items()}


def stage_2d(cfg, *, channels: int = 1, spec: dict | None = None, static=None, bounds: dict | None = None) -> Stage:
    """The 2D stage, from ``train2d.seed`` (so that a resumed run rebuilds the same network):
    for ``channels`` variables, conditioned by ``spec`` with ``static`` covariates, constrained by
    ``degrade.constrain``, within ``bounds`` (:func:`wrap`)."""
    torch.manual_seed(cfg.train2d.seed)
    net, prefixes = wrap(build_2d(cfg), channels=channels, shared=cfg.model2d.shared_variables, spec=spec, constrain=constraint(cfg),
                         bounds=bounds)
    if static is not None:
        set_static(net, static)
    return Stage(net, prefixes, "model2d")


def stage_final(cfg, first: Stage, *, channels: int = 1, spec: dict | None = None, static=None, bounds: dict | None = None) -> Stage:
    """The final network of a pipeline with a 3D stage (the 3D network, or its composition with the
    2D network of ``first``), from ``train3d.seed``, within ``bounds`` (:func:`wrap`); the 2D stage
    itself when there is none."""
    k = kind(cfg.pipeline)
    if not k.has_3d:
        return first
    torch.manual_seed(cfg.train3d.seed + 1)
    window = cfg.windows.size
    net3d, prefixes = build_3d(cfg), [""]
    reads = net3d.input_space
    if k.needs_space != "lr_refiner":  # a 3D stage on the coarse grid has no place maps to meet
        net3d, prefixes = wrap(net3d, channels=channels, shared=cfg.model3d.shared_variables, spec=spec,
                               constrain=constraint(cfg, frames=window, reads_hr=reads == "hr"), bounds=bounds)
        if static is not None:
            set_static(net3d, static)
    net = compose(k, first.net, net3d, constrain=constraint(cfg, frames=window), bounds=bounds)
    return Stage(net, [k.param_prefix + p for p in prefixes], "model3d", source=k.source(reads), window=window, crop=net.crop)


def build_gen(cfg, *, channels: int = 1, amplitude: list | None = None, bounds: dict | None = None, spec: dict | None = None,
              static=None):
    """The generative stage (``modelgen``) of a pipeline with one (:mod:`hpcvsr.models.generative`), from
    ``traingen.seed``: for ``channels`` variables, its residual scaled by ``amplitude`` (per channel,
    normalised units), its members bounded by ``bounds`` ({} unbounded; None: not known yet, as in
    :func:`check`) and, with ``degrade.constrain``, consistent; conditioned like the deterministic
    stages by ``spec`` with ``static`` covariates."""
    m, g = cfg.modelgen, cfg.degrade
    if m.name not in MODELS_GEN:
        raise UserError(f"modelgen.name must be one of {', '.join(MODELS_GEN)}, got '{m.name}'")
    if m.init:
        raise UserError("modelgen.init: the generative stage trains from scratch on the residual of this run's own 2D->3D output")
    torch.manual_seed(cfg.traingen.seed + 2)
    b = bounds or {}
    where = {k: spec[k] for k in ("grid", "static", "location", "time")} if spec else {}
    kwargs = dict(m.kwargs, intensity=gen_intensity(cfg, bounds))
    gen = build(m.name, g.scale, **dict(kwargs, channels=channels, method=g.method, sigma=g.blur_sigma, constrain=g.constrain,
                                        lo=b.get("lo"), hi=b.get("hi"), amplitude=amplitude, **where))
    if static is not None:
        set_static(gen, static)
    return gen


def gen_intensity(cfg, bounds: dict | None) -> bool:
    """Whether the generative stage's residual also grows with the intensity (``modelgen.kwargs.intensity``;
    by default, for a field bounded below, as rain). ``bounds`` as :func:`build_gen`'s: a forced
    intensity without a lower bound is refused once the bounds are known."""
    lo = (bounds or {}).get("lo")
    below = bool(lo) and all(v is not None for v in lo)
    intensity = bool(cfg.modelgen.kwargs.get("intensity", below))
    if intensity and not below:
        if bounds is not None:
            raise UserError("modelgen.kwargs.intensity: true needs a lower bound on every variable (data.bounds, or the archive's "
                            "valid_min / valid_range)")
        return False  # the configuration checks, before the bounds are known; the run checks again with them
    return intensity


def check(cfg) -> None:
    """Cross-field checks that need the models; raises a UserError naming the keys."""
    k = kind(cfg.pipeline)
    if len(cfg.data.vars) > 1 and k.composite:
        raise UserError(f"pipeline {k.name} takes one variable; data.vars {list(cfg.data.vars)} needs pipeline 2d, 3d or 2d_3d")
    with torch.random.fork_rng(devices=[]):  # building the models must not move the global RNG
        net2d = build_2d(cfg, init=False)
        net3d = build_3d(cfg, init=False) if k.has_3d else None
    if cfg.model2d.init:
        weight_files.resolve_init(cfg.model2d.init, cfg.model2d.name, cfg.degrade.scale)
    for section, path in (("model2d", cfg.model2d.init), ("model3d", cfg.model3d.init if k.has_3d else "")):
        if path and path != "bundled" and not os.path.isfile(weight_files.run_model(path)):
            raise UserError(f"{section}.init: file not found: {path}" + (" (a run directory needs its model.pt)" if os.path.isdir(path) else ""))
    for section, net in (("model2d", net2d), ("model3d", net3d)):
        if net is not None:
            weights_mod.check_layers(net, getattr(cfg, section).freeze, f"{section}.freeze")
            weights_mod.check_layers(net, getattr(cfg, section).lr_mult, f"{section}.lr_mult")
    crop = net3d.crop if net3d is not None else 0
    if cfg.degrade.constrain:
        if crop:
            raise UserError(f"degrade.constrain needs whole output frames, but model3d {cfg.model3d.name} crops a {crop}-pixel border "
                            "(set model3d.kwargs.same_padding: true)")
        if k.feeds == "input" and net3d.input_space == "hr":  # pipeline 3d on bicubic upscales
            raise UserError("degrade.constrain with pipeline 3d needs a 3D model that reads the low-resolution frames (model3d.name: srnet3d); "
                            "vsr3d reads their bicubic upscale, which does not degrade back to them (or use pipeline 2d_3d)")
    if k.has_3d and cfg.train3d.patch <= 2 * crop:
        raise UserError(f"train3d.patch={cfg.train3d.patch} leaves nothing after the 3D model's {crop}-pixel border crop")
    if k.generative:
        if len(cfg.data.vars) > 1:
            raise UserError(f"pipeline {k.name} takes one variable; data.vars {list(cfg.data.vars)} needs pipeline 2d, 3d or 2d_3d")
        if crop:
            raise UserError(f"pipeline {k.name} needs whole output frames, but model3d {cfg.model3d.name} crops a {crop}-pixel border "
                            "(set model3d.kwargs.same_padding: true)")
        with torch.random.fork_rng(devices=[]):
            gen = build_gen(cfg)
        weights_mod.check_layers(gen, cfg.modelgen.freeze, "modelgen.freeze")
        weights_mod.check_layers(gen, cfg.modelgen.lr_mult, "modelgen.lr_mult")
        if cfg.infer.tile and cfg.infer.tile_halo * cfg.degrade.scale < gen.radius + 2 * cfg.degrade.scale:
            raise UserError(f"infer.tile_halo={cfg.infer.tile_halo} LR pixels is smaller than the generative stage's reach of "
                            f"{gen.radius} fine pixels plus its bicubic input's")
    if cfg.infer.tile and cfg.infer.tile_halo * cfg.degrade.scale < crop:
        raise UserError(f"infer.tile_halo={cfg.infer.tile_halo} LR pixels is smaller than the model's {crop}-pixel border crop")


def load_for_eval(name: str, weights: str | None, scale: int) -> torch.nn.Module:
    """A model of family ``name`` with exactly the weights in ``weights`` (or the bundled ones)."""
    if name not in MODELS:
        raise UserError(f"unknown model '{name}' (choose from {', '.join(MODELS)})")
    path = weight_files.resolve_init(weights or "bundled", name, scale)
    src_name, kwargs, sd = weight_files.load_source(path, scale)
    if src_name != name:
        raise UserError(f"{path}: holds {src_name} weights, not {name}")
    model = build(name, scale, **kwargs)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or [k for k in missing if not k.startswith("up.")]:
        raise UserError(f"{path}: layers do not match {name} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model
