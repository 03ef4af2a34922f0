"""Which variables are bounded, and by what: ``data.bounds``, else the training archive's metadata.

A variable's bounds are ``data.bounds: {var: [lo, hi]}`` (null: that side unbounded; ``[null, null]``
drops the file's range), else ``valid_min`` / ``valid_max`` / ``valid_range`` of the variable in
``data.path``. The networks see them in their normalised units (:func:`normalised`), as the
outermost layer of every stage (:class:`~hpcvsr.models.bounds.Bounded`, or the bounded projection
of :class:`~hpcvsr.models.constraint.Constrained`), so that ``model.pt`` applies them wherever it is
used, without the training configuration.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hpcvsr.errors import UserError
from hpcvsr.io.cf import CFArchive
from hpcvsr.ops.degrade import BOUNDED


def _number(value, where: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise UserError(f"{where}: a bound must be a number or null, got {value!r}")
    return None if math.isinf(value) else float(value)


def parse(value, where: str) -> tuple[float | None, float | None]:
    """``[lo, hi]`` (numbers or null) -> (lo, hi), None for an unbounded side; lo < hi."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise UserError(f"{where} must be [lo, hi] (null for an unbounded side, e.g. [0, null]), got {value!r}")
    lo, hi = (_number(v, where) for v in value)
    if lo is not None and hi is not None and not lo < hi:
        raise UserError(f"{where}: the lower bound {lo:g} must be below the upper bound {hi:g}")
    return lo, hi


def text(lo: float | None, hi: float | None) -> str:
    return f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"


def _refuse_unprojectable(names, bounds: list, method: str, constrain: bool, source: str) -> None:
    bounded = [f"{v} {text(*b)}" for v, b in zip(names, bounds) if b != (None, None)]
    if constrain and bounded and method not in BOUNDED:
        raise UserError(f"degrade.constrain with degrade.method {method} and bounded variables ({', '.join(bounded)}, {source}) is refused: "
                        f"there is no exact projection onto the bounded fields that degrade back to the input for {method} (there is for "
                        f"{' and '.join(BOUNDED)}); use one of those, or drop degrade.constrain (outputs are then clipped to the bounds)")


def check(configured: dict, names, method: str, constrain: bool) -> None:
    """The checks of ``data.bounds`` that need no file (:func:`hpcvsr.pipeline.config.validate`)."""
    unknown = [k for k in configured if k not in names]
    if unknown:
        raise UserError(f"data.bounds names {', '.join(map(repr, unknown))}, which is not super-resolved (the variables: {', '.join(names)})")
    bounds = [parse(configured[v], f"data.bounds.{v}") if v in configured else (None, None) for v in names]
    _refuse_unprojectable(names, bounds, method, constrain, "data.bounds")


def valid_ranges(parts) -> dict:
    """{variable: (lo, hi)} from valid_min / valid_max / valid_range of opened archive readers
    (``MultiArchive.parts``); variables without them are left out."""
    out = {}
    for a in parts:
        valid = a.valid_bounds if isinstance(a, CFArchive) else None  # in physical units (decoded when packed)
        if valid is not None:
            out[a.var] = valid
    return out


def resolve(configured: dict, names, valid: dict, *, method: str, constrain: bool, where: str = "data.path") -> list:
    """(lo, hi) physical bounds of each of ``names`` (None: unbounded side): ``configured``
    (data.bounds) wins, else ``valid`` (:func:`valid_ranges` of ``where``)."""
    check(configured, names, method, constrain)
    bounds = []
    for v in names:
        if v in configured:
            bounds.append(parse(configured[v], f"data.bounds.{v}"))
        elif v in valid:
            bounds.append(parse(list(valid[v]), f"{where}: valid range of '{v}'"))
        else:
            bounds.append((None, None))
    _refuse_unprojectable(names, bounds, method, constrain, f"valid_min/valid_max/valid_range of {where}; data.bounds: {{var: [null, null]}} drops them")
    return bounds


def _safe(norm, bound: float, upper: bool) -> float:
    """The float32 number nearest ``norm.unit(bound)`` on the inner side, such that ``norm.phys`` of
    it (in float32 and in float64, as the outputs are denormalised) is within ``bound``: an output
    clipped to it is never out of bounds in physical units by a rounding."""
    v = np.float32(norm.unit(bound))
    step = abs(float(np.spacing(v)))
    for _ in range(200):
        if all((float(norm.phys(torch.tensor([v], dtype=dt))[0]) <= bound) if upper else
               (float(norm.phys(torch.tensor([v], dtype=dt))[0]) >= bound) for dt in (torch.float32, torch.float64)):
            return float(v)
        v = np.float32(float(v) - step if upper else float(v) + step)
        step *= 2
    raise RuntimeError(f"no float32 bound within {bound!r} for {norm}")  # cannot happen for finite, positive spans


def normalised(bounds: list, norms: list) -> dict | None:
    """The :class:`~hpcvsr.models.bounds.Bounded` / bounded :class:`~hpcvsr.models.constraint.Constrained`
    keyword arguments {"lo": [...], "hi": [...]} of physical ``bounds`` (one (lo, hi) per variable) in
    the units of ``norms``; None when no variable is bounded."""
    if all(b == (None, None) for b in bounds):
        return None
    lo = [None if a is None else _safe(n, a, upper=False) for (a, _), n in zip(bounds, norms)]
    hi = [None if b is None else _safe(n, b, upper=True) for (_, b), n in zip(bounds, norms)]
    for a, b, phys in zip(lo, hi, bounds):
        if a is not None and b is not None and not a < b:
            raise UserError(f"bounds {text(*phys)} are closer than float32 resolves in the data's normalised units")
    return {"lo": lo, "hi": hi}
