"""Typed, strict configuration.

YAML files load into the dataclasses below. An unknown key or a value of the wrong type is a
:class:`~hpcvsr.errors.UserError` naming the key and the file. ``--set section.key=value``
overrides are applied to the parsed YAML before type checking, so they obey the same rules.
The resolved configuration is written next to every output with :func:`dump`.

The configuration is read-only during a run: nothing writes into it after it is loaded.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field

import yaml

from hpcvsr.errors import UserError
from hpcvsr.io.atomic import write_text
from hpcvsr.models.lowering import PRECISIONS
from hpcvsr.pipeline.kinds import KINDS


@dataclass(frozen=True)
class StaticConfig:
    path: str = ""  # NetCDF file of static high-resolution covariates on the data's grid (e.g. orography)
    vars: list[str] = field(default_factory=list)  # its variables to condition on


@dataclass(frozen=True)
class DataConfig:
    source: str = "swe"  # swe | phantom | archive | video
    path: str = ""  # archive or video file; unused for generated sources
    var: str = "h"  # variable to super-resolve
    vars: list[str] = field(default_factory=list)  # several variables super-resolved together by one model (replaces var), e.g. [u10, v10]
    frames: int = 120  # frames per generated sequence
    size: list[int] = field(default_factory=lambda: [128, 128])  # generated (H, W)
    seeds: list[int] = field(default_factory=lambda: [1])  # training sequences
    test_seed: int = 1001  # held-out sequence, never used in training
    val_fraction: float = 0.2  # trailing fraction of each training sequence
    normalise: str = "range"  # none | fixed | range (min/max of the training data)
    norm_range: list[float] = field(default_factory=lambda: [-10.0, 10.0])  # for 'fixed'
    test_path: str = ""  # held-out archive when source=archive/video
    lr_path: str = ""  # paired training: the coarse run of the flow in data.path, whose frames are the inputs (no degradation)
    lr_var: str = ""  # its variable ('' : data.var)
    lr_vars: list[str] = field(default_factory=list)  # its variables, in the order of data.vars ([] : data.vars)
    lr_test_path: str = ""  # the coarse run of the held-out data.test_path
    runs: list[str] = field(default_factory=list)  # further training runs of the flow in data.path's grid, each its own sequence (like data.seeds)
    lr_runs: list[str] = field(default_factory=list)  # their coarse runs, in the same order (paired training)
    bounds: dict = field(default_factory=dict)  # physical bounds of variables, e.g. {precipitation: [0, null]} (default: valid_min/valid_max/valid_range)
    time_origin: str = ""  # origin of time units without one (e.g. units 'days'): 'days since <time_origin>'
    allow_gaps: bool = False  # many files as one archive: accept a gap in a regular time series
    select: dict = field(default_factory=dict)  # NetCDF extra dimensions by coordinate value, e.g. {level: 500}
    isel: dict = field(default_factory=dict)  # ... or by index, e.g. {member: 0}
    crop: str = "centre"  # frames not divisible by the scale are cropped to the largest divisible size: centre | origin
    static: StaticConfig = field(default_factory=StaticConfig)  # conditioning covariates, cropped like the data


@dataclass(frozen=True)
class DegradeConfig:
    method: str = "bicubic"  # bicubic | blur | block_mean | point; paired | paired_point (set from data.lr_path: the inputs are a coarse run)
    scale: int = 2
    blur_sigma: float = 1.6
    constrain: bool = False  # a final layer makes every output degrade back to its input exactly (block_mean: mass conserved)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "climate_fsrcnn"
    kwargs: dict = field(default_factory=dict)
    init: str = ""  # '' (scratch) | 'bundled' | path to authors' .mat or our checkpoint .pt
    freeze: list[str] = field(default_factory=list)  # layer names not trained
    lr_mult: dict[str, float] = field(default_factory=dict)  # layer name -> LR multiplier
    shared_variables: bool = True  # several variables (data.vars): one network for all (True) or one copy per variable


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 16  # global batch (all ranks)
    lr: float = 1e-3
    patience: int = 5  # early stopping on validation loss; 0 disables
    patch: int = 48  # high-resolution patch side
    patches_per_epoch: int = 2048  # random patches drawn per epoch (global; a multiple of batch_size)
    schedule: str = "cosine"  # none | cosine | step
    seed: int = 0
    max_minutes: float = 0.0  # stop after this wall time (0: no limit)
    warmup: float = 0.0  # epochs of linear learning-rate warm-up at the start (fractions allowed; 0: none)
    grad_weight: float = 0.0  # weight of a loss term on the fields' finite differences (sharper, more high-wavenumber energy)
    precision: str = "fp32"  # fp32 | bf16: forward and backward under bf16 autocast, fp32 master weights
    centres: int = 1  # 3D stage: consecutive centre frames per training clip, whose windows share per-frame work
    members: int = 4  # generative stage (traingen): ensemble members per training sample, scored by their fair CRPS (>= 2)


@dataclass(frozen=True)
class ConditionConfig:
    """Inputs tied to the place and the hour (hpcvsr.models.conditioning), for both stages."""

    location_channels: int = 0  # learned high-resolution maps (usable only on the training grid)
    time_features: bool = False  # sin/cos of hour of day and day of year from the CF time coordinate
    width: int = 32  # width of the conditioning head


@dataclass(frozen=True)
class WindowConfig:
    size: int = 5
    pad: str = "replicate"  # replicate | reflect


@dataclass(frozen=True)
class InferConfig:
    block_frames: int = 32  # frames streamed per block
    batch: int = 8  # windows per forward pass
    tile: int = 0  # spatial tile side in HR pixels (0: whole frames)
    tile_halo: int = 16  # tile overlap each side, in LR pixels (must cover the model's receptive field)
    precision: str = "fp32"  # fp32 | bf16: the 3D bodies' weights and activations (hpcvsr.models.lowering)
    compile: bool = False  # torch.compile the networks (fuses the pointwise layers; needs a C++ compiler on CPU)
    compression: str = ""  # '' | gzip | lzf


@dataclass(frozen=True)
class Config:
    pipeline: str = "2d_3d"  # one of hpcvsr.pipeline.kinds.KINDS
    data: DataConfig = field(default_factory=DataConfig)
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    model2d: ModelConfig = field(default_factory=lambda: ModelConfig(name="climate_fsrcnn", init="bundled"))
    # per-frame features: overlapping windows share work, ~3x fewer operations, the same accuracy (README "Performance")
    model3d: ModelConfig = field(default_factory=lambda: ModelConfig(name="vsr3d", kwargs={"residual": True, "same_padding": True, "frame_features": True},
                                                                  shared_variables=False))
    train2d: TrainConfig = field(default_factory=TrainConfig)
    # the 3D stage starts as its zero-initialised residual (the 2D output): a one-epoch warm-up keeps the first
    # full-size Adam steps from knocking that start off (measured: README "The 3D training recipe")
    train3d: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, batch_size=8, patch=40, patches_per_epoch=512, warmup=1.0))
    # pipeline 2d_3d_gen: the generative model of the 2D->3D residual (hpcvsr.models.generative) and its training
    modelgen: ModelConfig = field(default_factory=lambda: ModelConfig(name="residual_gen", init=""))
    traingen: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, batch_size=8, patch=48, patches_per_epoch=1024, lr=5e-4))
    windows: WindowConfig = field(default_factory=WindowConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads per rank (0: the node's cores / ranks on the node)


CHOICES = {
    "pipeline": tuple(KINDS),
    "data.source": ("swe", "phantom", "archive", "video"),
    "data.normalise": ("none", "fixed", "range"),
    "data.crop": ("centre", "origin"),
    "degrade.method": ("bicubic", "blur", "block_mean", "point", "paired", "paired_point"),
    "degrade.scale": (2, 3, 4, 8),
    "train2d.schedule": ("none", "cosine", "step"),
    "train3d.schedule": ("none", "cosine", "step"),
    "windows.pad": ("replicate", "reflect"),
    "infer.precision": PRECISIONS,
    "train2d.precision": PRECISIONS,
    "train3d.precision": PRECISIONS,
    "traingen.schedule": ("none", "cosine", "step"),
    "traingen.precision": PRECISIONS,
    "infer.compression": ("", "gzip", "lzf"),
    "device": ("auto", "cpu", "cuda"),
}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp, value, key: str, where: str):
    """Check ``value`` against the annotation ``tp``; return the converted value."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key, where)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise UserError(f"{where}: '{key}' must be a list of {_type_name(item)}, got {value!r}")
        return [_convert(item, v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: '{key}' must be a mapping, got {value!r}")
        args = typing.get_args(tp)
        if args:
            return {str(k): _convert(args[1], v, f"{key}.{k}", where) for k, v in value.items()}
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise UserError(f"{where}: '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp}")  # programming error


def _build(cls, data: dict, prefix: str, where: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise UserError(f"{where}: unknown key '{full}' (known: {', '.join(sorted(names))})")
        if dataclasses.is_dataclass(hints[key]):
            # nested sections start from their own defaults, so a partial section keeps the rest
            default = getattr(cls(), key)
            merged = dataclasses.asdict(default)
            if not isinstance(value, dict):
                raise UserError(f"{where}: '{full}' must be a mapping, got {value!r}")
            merged.update(value)
            value = merged
        converted = _convert(hints[key], value, full, where)
        allowed = CHOICES.get(full)
        if allowed is not None and converted not in allowed:
            raise UserError(f"{where}: '{full}' must be one of {list(allowed)}, got {converted!r}")
        kwargs[key] = converted
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], object]:
    """``'train2d.lr=1e-4'`` -> (['train2d', 'lr'], 0.0001); values are parsed as YAML."""
    if "=" not in text:
        raise UserError(f"--set expects section.key=value, got '{text}'")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"--set expects section.key=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def parse_pairs(items, flag: str) -> dict:
    """``['level=500']`` -> ``{'level': 500}``: DIM=VALUE options, values parsed as YAML (numbers stay numbers)."""
    out = {}
    for text in items:
        key, sep, _ = text.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} expects DIM=VALUE, got '{text}'")
        out[key.strip()] = parse_override(text)[1]
    return out


def read_yaml(path: str, what: str = "config file") -> dict:
    """The top-level mapping of a YAML file; a missing file, invalid YAML or another top level is a UserError."""
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping")
    return data


def typed(cls, data: dict, where: str):
    """``data`` as the dataclass ``cls``, as strictly as a config: an unknown key, a wrong type or a
    missing required key is a UserError naming it (e.g. the machine files of :mod:`hpcvsr.perf.perfmodel`)."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: the top level must be a mapping")
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserError(f"{where}: missing key(s) {', '.join(missing)}")
    return _build(cls, data, "", where)


PRESETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")  # shipped in the package


def presets() -> dict:
    """{name: path} of the configurations shipped inside the package (``--config NAME``)."""
    return {f[: -len(".yaml")]: os.path.join(PRESETS, f) for f in sorted(os.listdir(PRESETS)) if f.endswith(".yaml")}


def resolve(path: str) -> str:
    """``path`` itself when it is a file; a packaged preset's file when ``path`` is its name; else a
    UserError naming the presets."""
    if os.path.isfile(path):
        return path
    known = presets()
    if path in known and os.sep not in path:
        return known[path]
    hint = "" if os.sep in path or path.endswith((".yaml", ".yml")) else f"; packaged presets: {', '.join(known)}"
    raise UserError(f"config file not found: {path}{hint}")


def load(path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (a path, or the name of a packaged preset; the embedded defaults when
    ``path`` is None) plus overrides."""
    data: dict = {}
    where = "embedded defaults"
    if path:
        where = path = resolve(path)
        data = read_yaml(path)
    cfg = _build(Config, data, "", where)
    for text in overrides:
        keys, value = parse_override(text)
        tree = dataclasses.asdict(cfg)
        node = tree
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                raise UserError(f"--set {text}: unknown key '{'.'.join(keys)}'")
            node = node[k]
        if keys[-1] not in node:
            raise UserError(f"--set {text}: unknown key '{'.'.join(keys)}'")
        node[keys[-1]] = value
        cfg = _build(Config, tree, "", f"--set {text}")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks a type system cannot express (those that need the networks are
    :func:`hpcvsr.pipeline.build.check`): all before any data are generated or any output is created."""
    if len(cfg.data.size) != 2 or min(cfg.data.size) < 8:
        raise UserError(f"data.size must be [H, W] with both >= 8, got {cfg.data.size}")
    kind = KINDS[cfg.pipeline]
    for name, used in (("train2d", kind.trains_2d), ("train3d", kind.has_3d), ("traingen", kind.generative)):
        t = getattr(cfg, name)
        if t.batch_size < 1 or t.epochs < 0 or t.patch < 8 or t.lr <= 0 or t.warmup < 0 or t.grad_weight < 0 or t.centres < 1:
            raise UserError(f"{name}: batch_size >= 1, epochs >= 0, patch >= 8, lr > 0, warmup >= 0, grad_weight >= 0 and centres >= 1 "
                            "are required")
        if name != "train3d" and t.centres != 1:
            raise UserError(f"{name}.centres applies to the 3D stage only (train3d.centres)")
        if name == "traingen" and t.members < 2:
            raise UserError(f"traingen.members={t.members}: the fair CRPS needs at least 2 members per sample")
        if t.patch % cfg.degrade.scale:
            raise UserError(f"{name}.patch={t.patch} is not divisible by degrade.scale={cfg.degrade.scale}")
        if not used:  # the stage does not train in this pipeline
            continue
        if t.patches_per_epoch < t.batch_size or t.patches_per_epoch % t.batch_size:
            lower = max(t.batch_size, t.patches_per_epoch // t.batch_size * t.batch_size)
            raise UserError(f"{name}.patches_per_epoch={t.patches_per_epoch} is not a multiple of {name}.batch_size={t.batch_size} "
                            f"(e.g. {lower} or {lower + t.batch_size})")
        if cfg.data.source in ("swe", "phantom") and t.patch > min(cfg.data.size):
            raise UserError(f"{name}.patch={t.patch} is larger than the generated frames of {cfg.data.size[0]}x{cfg.data.size[1]} (data.size)")
    if cfg.data.source in ("swe", "phantom") and any(n % cfg.degrade.scale for n in cfg.data.size):
        raise UserError(f"data.size {cfg.data.size} is not divisible by degrade.scale={cfg.degrade.scale}")
    if cfg.infer.tile_halo < 0 or cfg.infer.batch < 1 or cfg.infer.block_frames < 1 or cfg.infer.tile < 0:
        raise UserError("infer: block_frames >= 1, batch >= 1, tile >= 0 and tile_halo >= 0 are required")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise UserError(f"data.val_fraction must be in (0, 1), got {cfg.data.val_fraction}")
    if cfg.windows.size < 3 or cfg.windows.size % 2 == 0:
        raise UserError(f"windows.size must be odd and >= 3, got {cfg.windows.size}")
    if cfg.data.normalise == "fixed" and (len(cfg.data.norm_range) != 2 or cfg.data.norm_range[0] >= cfg.data.norm_range[1]):
        raise UserError(f"data.norm_range must be [low, high] with low < high, got {cfg.data.norm_range}")
    _check_pairs(cfg)
    names = variables(cfg)
    if len(set(names)) != len(names) or not all(names):
        raise UserError(f"data.vars must name distinct variables, got {list(cfg.data.vars)}")
    if len(names) > 1 and cfg.data.source in ("phantom", "video"):
        raise UserError(f"data.vars: a {cfg.data.source} source has one variable; several need an archive or swe data")
    c, st = cfg.condition, cfg.data.static
    if c.location_channels < 0 or c.width < 1:
        raise UserError(f"condition: location_channels >= 0 and width >= 1 are required, got {c.location_channels}, {c.width}")
    if bool(st.path) != bool(st.vars):
        raise UserError("data.static needs both a path and its vars (e.g. {path: static.nc, vars: [orography]})")
    if c.time_features and cfg.data.source != "archive":
        raise UserError(f"condition.time_features needs a time coordinate; data.source '{cfg.data.source}' has none "
                        "(write the data as CF NetCDF, e.g. python -m hpcvsr.data swe --out F.nc, and use data.source: archive)")
    if (st.path or c.location_channels) and cfg.data.source not in ("archive", "swe", "phantom"):
        raise UserError(f"place conditioning (data.static, condition.location_channels) needs a fixed grid; data.source '{cfg.data.source}' is not one")
    _check_bounds(cfg)


def _check_bounds(cfg: Config) -> None:
    """data.bounds: variables that are super-resolved, lo < hi, and a degradation whose constraint can keep them."""
    from hpcvsr.pipeline import bounds  # it reads the CF readers' ranges too, which loading a configuration needs nowhere else

    bounds.check(cfg.data.bounds, variables(cfg), cfg.degrade.method, cfg.degrade.constrain)


def _check_runs(cfg: Config) -> None:
    d = cfg.data
    if not d.runs:
        if d.lr_runs:
            raise UserError("data.lr_runs names the coarse runs of data.runs, which is empty")
        return
    if d.source != "archive":
        raise UserError(f"data.runs (further training runs) needs data.source: archive, got '{d.source}'")
    if not d.test_path:
        raise UserError("data.runs: with several training runs, name the held-out run in data.test_path (the trailing frames "
                        "of one run are not held out from the others' flow)")
    if bool(d.lr_path) != bool(d.lr_runs) or (d.lr_runs and len(d.lr_runs) != len(d.runs)):
        raise UserError(f"paired training with data.runs: data.lr_runs must name one coarse run per training run, in the same order "
                        f"({len(d.runs)} in data.runs, {len(d.lr_runs)} in data.lr_runs{'' if d.lr_path else ', and data.lr_path is empty'})")
    paths = [d.path, *d.runs, d.test_path]
    if len(set(paths)) != len(paths):
        raise UserError(f"data.path, data.runs and data.test_path must be distinct files, got {paths}")


def _check_pairs(cfg: Config) -> None:
    d, g = cfg.data, cfg.degrade
    _check_runs(cfg)
    if not d.lr_path:
        if g.method.startswith("paired") or d.lr_test_path or d.lr_var or d.lr_vars:
            raise UserError("degrade.method: paired or paired_point, data.lr_test_path, data.lr_var and data.lr_vars need data.lr_path "
                            "(the coarse run)")
        return
    if d.source != "archive":
        raise UserError(f"data.lr_path (paired training) needs data.source: archive, got '{d.source}'")
    if bool(d.test_path) != bool(d.lr_test_path):
        raise UserError("data.test_path and data.lr_test_path name the held-out pair together (give both, or neither to hold out "
                        "the trailing frames of both runs)")
    if d.lr_var and d.lr_vars:
        raise UserError("give data.lr_var (one variable) or data.lr_vars (several), not both")
    if len(lr_variables(cfg)) != len(variables(cfg)):
        raise UserError(f"data.lr_vars {list(d.lr_vars)} must name as many variables as data.vars {list(variables(cfg))}")
    if g.constrain:
        raise UserError("degrade.constrain with paired training (data.lr_path) is refused: a coarse run is not a degradation of the fine "
                        "one (its cells drift away from the block means of the fine run), so making every output degrade back to its input "
                        "would impose a relation the two runs do not have")


def paired(cfg: Config) -> bool:
    """Whether the inputs are a coarse run (data.lr_path) rather than degraded frames."""
    return bool(cfg.data.lr_path)


def lr_variables(cfg: Config) -> tuple:
    """The coarse run's variables, one per variable of :func:`variables`."""
    d = cfg.data
    return tuple(d.lr_vars) or ((d.lr_var,) if d.lr_var else variables(cfg))


def variables(cfg: Config) -> tuple:
    """The variables to super-resolve: ``data.vars`` when given, else ``data.var``."""
    return tuple(cfg.data.vars) or (cfg.data.var,)


def conditioned(cfg: Config) -> bool:
    """Whether the networks are conditioned on place or time."""
    return bool(cfg.data.static.vars or cfg.condition.location_channels or cfg.condition.time_features)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump(cfg: Config, path: str) -> None:
    """Write the resolved configuration (atomically) as YAML."""
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def add_arguments(parser) -> None:
    """The --config / --set pair every entry point takes."""
    parser.add_argument("--config", help="YAML configuration: a file, or the name of a packaged preset (hpcvsr configs lists them); "
                        "default: the embedded defaults")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train2d.epochs=3 (repeatable)",
    )
