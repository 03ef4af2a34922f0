"""Statistical baseline for paired runs: the coarse run bias-corrected by quantile mapping.

Next to the networks, paired data (a coarse and a fine run of the same flow on nested grids) gets the
baseline climate users know from BCSD: correct the coarse run's distribution against the training pair,
then interpolate it bicubically to the fine grid. This module is the first half. :class:`QuantileMapping`
fits xsdba's empirical quantile mapping (EQM) of the coarse training run onto the fine training run
block-averaged to the coarse grid, and applies it to any coarse run of the same variable; the caller
computes the block mean and does the bicubic step.

The mapping is pooled over space and time: every valid cell of every frame is one sample of a single
distribution. The flows it is made for are statistically homogeneous in space, and a mapping per cell
fitted on ~100 frames would mostly be noise.

EQM rather than quantile delta mapping (QDM): QDM keeps the coarse run's own change between the training
period and the period it corrects, which is for projections of a changing climate; here the held-out
frames come from the same stationary flow, so the plain mapping ``F_fine^-1(F_coarse(x))`` is the
baseline. ``kind="+"`` (additive corrections) suits signed fields such as a height anomaly;
``kind="*"`` (multiplicative) is for non-negative fields such as rain.

xsdba is optional: ``pip install 'hpcvsr[baselines]'``.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

from hpcvsr.errors import UserError

KINDS = ("+", "*")
INTERPS = ("nearest", "linear", "cubic")


def _xsdba():
    try:
        import xsdba
    except ImportError as exc:
        raise UserError("the quantile-mapping baseline needs xsdba: pip install 'hpcvsr[baselines]'") from exc
    return xsdba


@contextlib.contextmanager
def _known_warnings():
    """Silence the one xsdba warning that says nothing about the data."""
    with warnings.catch_warnings():
        # xsdba serialises its trained object into the dataset attrs with jsonpickle, whose next major
        # version changes a default of that encoding; the mapping itself does not depend on it.
        warnings.filterwarnings("ignore", message="keys will default to True in jsonpickle", category=DeprecationWarning)
        yield


def _series(values: np.ndarray, units: str):
    """The 1-D DataArray xsdba takes: ``values`` along ``time``, with a ``units`` attribute.

    xsdba works along a ``time`` dimension with a datetime coordinate (it reads its calendar). Pooled
    samples have no order in time, so they get a synthetic regular axis, one second apart from
    2000-01-01: 1e9 samples still fit in datetime64[ns]. With ``group="time"`` (one group) the dates do
    not enter the mapping.
    """
    import pandas as pd
    import xarray as xr

    values = np.asarray(values, dtype=np.float64).ravel()
    time = pd.date_range("2000-01-01", periods=values.size, freq="s")
    return xr.DataArray(values, dims="time", coords={"time": time}, attrs={"units": units})


class QuantileMapping:
    """Empirical quantile mapping (xsdba) of a coarse run onto the fine run's statistics at the coarse scale.

    Build it with :meth:`fit`; :meth:`apply` maps a coarse run. Attributes: ``adjustment`` (the trained
    ``xsdba.EmpiricalQuantileMapping``), ``units``, ``kind``, ``interp`` and ``samples`` (how many cells
    the fit used).
    """

    def __init__(self, adjustment, *, units: str, kind: str, interp: str, samples: int):
        self.adjustment = adjustment
        self.units = units
        self.kind = kind
        self.interp = interp
        self.samples = samples

    def __repr__(self) -> str:
        return f"QuantileMapping(kind={self.kind!r}, units={self.units!r}, interp={self.interp!r}, samples={self.samples})"

    @classmethod
    def fit(cls, coarse: np.ndarray, fine_coarsened: np.ndarray, *, units: str = "", quantiles: int = 50, kind: str = "+", interp: str = "linear",
            max_samples: int = 2_000_000, seed: int = 0) -> QuantileMapping:
        """Fit the mapping of ``coarse`` onto ``fine_coarsened``.

        ``coarse`` is the training coarse run (T, h, w) and ``fine_coarsened`` the training fine run
        block-averaged to the same grid, both in physical ``units`` (a udunits/pint string; "" means
        dimensionless). Cells that are NaN (or infinite) in either are left out. ``quantiles`` equally
        spaced quantile nodes; ``kind`` "+" (additive) or "*" (multiplicative); ``interp`` how
        :meth:`apply` interpolates between nodes (beyond the outer nodes the correction is held
        constant). With more than ``max_samples`` valid cells, a random subset of that size
        (``numpy.random.default_rng(seed)``, so reproducible) is used, which bounds the fit's cost.
        """
        xsdba = _xsdba()
        c, f = np.asarray(coarse), np.asarray(fine_coarsened)
        if c.shape != f.shape:
            raise UserError(f"the coarse run {c.shape} and the block-averaged fine run {f.shape} must have the same shape to fit the quantile mapping")
        if kind not in KINDS:
            raise UserError(f"quantile-mapping kind must be '+' (additive) or '*' (multiplicative), not {kind!r}")
        if interp not in INTERPS:
            raise UserError(f"quantile-mapping interp must be one of {', '.join(INTERPS)}, not {interp!r}")
        if int(quantiles) < 1 or int(max_samples) < 1:
            raise UserError(f"quantile mapping needs quantiles >= 1 and max_samples >= 1 (got {quantiles} and {max_samples})")
        units = units or "1"  # xsdba compares the units of its inputs; a bare number is dimensionless
        try:
            xsdba.units.units2str(units)
        except Exception as exc:  # pint raises its own errors, tokenize.TokenError, ... for a string it cannot read
            raise UserError(f"cannot read the units {units!r} for the quantile mapping: {exc}") from None

        # one pooled sample per cell valid in both runs, so ref and hist stay paired (EQM requires equal lengths)
        idx = np.flatnonzero(np.isfinite(c) & np.isfinite(f))
        if idx.size == 0:
            raise UserError("no cell is valid (not NaN) in both the coarse and the fine run, so there is nothing to fit the quantile mapping on")
        if idx.size > max_samples:
            idx = np.sort(np.random.default_rng(seed).choice(idx, size=int(max_samples), replace=False))
        ref, hist = _series(f.reshape(-1)[idx], units), _series(c.reshape(-1)[idx], units)
        with _known_warnings():
            adjustment = xsdba.EmpiricalQuantileMapping.train(ref, hist, nquantiles=int(quantiles), kind=kind, group="time")
        return cls(adjustment, units=units, kind=kind, interp=interp, samples=int(idx.size))

    def apply(self, coarse: np.ndarray, *, chunk_cells: int = 4_000_000) -> np.ndarray:
        """Map a coarse run (T, h, w) of the same variable and units; float32 of the same shape.

        Non-finite cells (NaN) are returned as they are. Frames go to xsdba in chunks of about
        ``chunk_cells`` cells (at least one frame), so memory stays bounded for long runs and
        memory-mapped inputs.
        """
        x = np.asarray(coarse) if not hasattr(coarse, "shape") else coarse
        if len(x.shape) == 0:
            raise UserError("the quantile mapping needs an array of frames, not a scalar")
        out = np.empty(x.shape, dtype=np.float32)
        per_frame = int(np.prod(x.shape[1:], dtype=np.int64))
        step = max(1, int(chunk_cells) // max(1, per_frame))
        for i in range(0, x.shape[0], step):
            block = np.asarray(x[i : i + step], dtype=np.float64)
            mapped = block.astype(np.float32)
            ok = np.isfinite(block)
            if ok.any():
                mapped[ok] = self._map(block[ok])
            out[i : i + step] = mapped
        return out

    def _map(self, values: np.ndarray) -> np.ndarray:
        with _known_warnings():
            scen = self.adjustment.adjust(_series(values, self.units), interp=self.interp, extrapolation="constant")
        return scen.values


QM_METHOD = "qm_bicubic"  # the statistical baseline's row: the coarse run quantile-mapped, then bicubic


def quantile_mapped(train_segs: list, blocks: list, norms: list, *, scale: int, max_samples: int = 2_000_000) -> bool:
    """Set ``b.qm`` of every held-out block of a pair: its coarse frames mapped, variable by variable,
    onto the statistics of the fine training run at the coarse scale (block means), fitted on the
    training pairs (every rank fits the same frames, read evenly spaced up to ``max_samples`` cells
    per variable, so the result does not depend on the ranks). False, with nothing set, without xsdba."""
    try:
        _xsdba()
    except UserError:
        return False
    coarse, fine = _training_samples(train_segs, norms, scale=scale, max_samples=max_samples)
    maps = [QuantileMapping.fit(coarse[:, c], fine[:, c], max_samples=max_samples) for c in range(coarse.shape[1])]
    for b in blocks:
        lr = b.lr.detach().cpu().numpy()
        b.qm = torch.from_numpy(np.stack([m.apply(lr[:, c]) for c, m in enumerate(maps)], 1)).to(b.lr)
    return True


def _training_samples(train_segs: list, norms: list, *, scale: int, max_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(coarse frames, fine frames block-averaged to the coarse grid), normalised, (n, C, h, w): evenly spaced frames
    of every training segment, as many as ``max_samples`` cells per variable need."""
    from hpcvsr.data.blocks import unit
    from hpcvsr.ops import degrade as dg

    first = train_segs[0]
    arc = first.open_lr()
    try:
        h, w = arc.shape[1:]
    finally:
        arc.close()
    total = sum(s.n for s in train_segs)
    take = max(1, min(total, -(-max_samples // (h * w))))
    coarse, fine = [], []
    for s in train_segs:
        k = max(1, round(take * s.n / total))
        frames = np.unique(np.linspace(s.start, s.stop - 1, k).round().astype(int))
        lr_arc, hr_arc = s.open_lr(), s.open_all()
        try:
            for t in frames.tolist():
                coarse.append(unit(norms, torch.from_numpy(lr_arc.read(t, t + 1))))
                hr = unit(norms, torch.from_numpy(s.read(hr_arc, t, t + 1)))
                fine.append(dg.block_mean(hr, scale))  # NaN where any fine cell is missing: left out of the fit
        finally:
            lr_arc.close()
            hr_arc.close()
    return torch.cat(coarse).numpy(), torch.cat(fine).numpy()
