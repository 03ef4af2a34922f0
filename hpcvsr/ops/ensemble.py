"""Probabilistic scores of an ensemble of super-resolved fields against the truth, as sums.

:class:`EnsembleSums` keeps float64 sums and counts in one torch vector (layout: :data:`LAYOUT`),
so a distributed run reduces them with a single all-reduce (sum) and divides afterwards, like
:class:`hpcvsr.ops.metrics.MetricSums`. The scores come from libraries:

* CRPS per cell: ``properscoring.crps_ensemble`` (the ensemble's empirical distribution, not the
  "fair" CRPS: with few members it slightly favours an under-dispersed ensemble, so read it
  together with ``spread_skill`` and the rank histogram);
* rank histogram: ``scores.probability.rank_histogram`` (ties share their ranks equally);
* fractions skill score: ``scores.spatial.fss_2d_single_field`` per field;
* high-wavenumber energy: :func:`hpcvsr.ops.metrics.radial_band_power`.

A deterministic field is a one-member ensemble: its CRPS is its MAE (:func:`mae_as_crps`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import properscoring
import torch
import xarray as xr
from scores.probability import rank_histogram
from scores.spatial import fss_2d_single_field

from hpcvsr.ops.metrics import radial_band_power

# Layout of the sums vector, in order: (name, length). M = members, T = len(thresholds),
# B = spectrum bins. Reductions rely on it.
#   crps, ae, se, var, cells: over valid cells (truth not NaN): CRPS, |mean - truth|,
#       (mean - truth)^2, unbiased member variance, and their number;
#   hi_members, hi_mean, hi_truth, full_frames: over frames with no missing cell: power above
#       the cutoff (members averaged over members), and their number;
#   rank: rank histogram counts (fractional with ties);
#   fss_sum, fss_count: per threshold, sum and number of per-field FSS values;
#   spec_members, spec_mean, spec_truth, spec_modes: per radial ring, power summed over the
#       modes of the ring and the full frames (members averaged over members), and the number of
#       modes summed over the full frames.
LAYOUT = (("crps", 1), ("ae", 1), ("se", 1), ("var", 1), ("cells", 1), ("hi_members", 1), ("hi_mean", 1), ("hi_truth", 1), ("full_frames", 1),
          ("rank", "M+1"), ("fss_sum", "T"), ("fss_count", "T"), ("spec_members", "B"), ("spec_mean", "B"), ("spec_truth", "B"), ("spec_modes", "B"))


def radial_spectrum(x: torch.Tensor, bins: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially binned power of (N, H, W) fields: ((N, bins) power summed per ring, (bins,) modes per ring).

    Power is ``|rfft2|^2 / (H W)`` of each mean-removed field; ring ``i`` holds the radial
    wavenumbers ``i/bins < k <= (i+1)/bins`` (fraction of Nyquist, as in :func:`radial_band_power`).
    The ring average is the first divided by the second.
    """
    h, w = x.shape[-2:]
    spec = torch.fft.rfft2(x.double() - x.double().mean(dim=(-2, -1), keepdim=True))
    power = (spec.real**2 + spec.imag**2).flatten(1) / (h * w)
    ky = torch.fft.fftfreq(h, device=x.device).abs() * 2
    kx = torch.fft.rfftfreq(w, device=x.device) * 2
    k = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2).flatten().double()
    keep = (k > 0) & (k <= 1.0)
    ring = (torch.ceil(k[keep] * bins).long() - 1).clamp(0, bins - 1)
    out = torch.zeros(power.shape[0], bins, dtype=torch.float64, device=x.device).index_add_(1, ring, power[:, keep])
    return out, torch.bincount(ring, minlength=bins).double()


def mae_as_crps(field: torch.Tensor, truth: torch.Tensor) -> float:
    """CRPS of a deterministic field (a one-member ensemble), which is its mean absolute error
    over the cells where ``truth`` is not NaN (NaN without one)."""
    valid = ~torch.isnan(truth)
    return float((field.double() - truth.double())[valid].abs().mean()) if bool(valid.any()) else math.nan


class EnsembleSums:
    """Running sums of ensemble scores (CRPS, ensemble-mean MAE/RMSE, spread, rank histogram,
    FSS, spectral energy), reducible in one collective.

    ``members`` is the ensemble size M; ``unit_scale`` converts the values given to
    :meth:`update` to physical units (CRPS, MAE, RMSE and spread are reported times
    ``unit_scale``, spectra times its square); ``spectrum_cutoff`` (fraction of Nyquist, e.g.
    1/scale) enables the high-wavenumber energy ratios; ``thresholds`` are FSS event thresholds
    (event: value > threshold) in the units of the values given to :meth:`update`;
    ``fss_window`` the FSS window side; ``spectrum_bins`` the rings of the radial spectrum.
    ``sums`` stays on ``device``; the libraries are fed CPU numpy copies.
    """

    def __init__(self, members: int, *, unit_scale: float = 1.0, spectrum_cutoff: float | None = None, thresholds: tuple = (), fss_window: int = 5,
                 device=None, spectrum_bins: int = 32):
        if members < 1:
            raise ValueError(f"an ensemble needs at least one member, not {members}")
        self.members, self.unit_scale, self.cutoff = int(members), unit_scale, spectrum_cutoff
        self.thresholds, self.fss_window, self.bins = tuple(thresholds), int(fss_window), int(spectrum_bins)
        sizes = {1: 1, "M+1": self.members + 1, "T": len(self.thresholds), "B": self.bins}
        self.slices, start = {}, 0
        for name, size in LAYOUT:
            self.slices[name] = slice(start, start + sizes[size])
            start += sizes[size]
        self.sums = torch.zeros(start, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, ens: torch.Tensor, truth: torch.Tensor, offset: float = 0.0) -> None:
        """Add (k, M, H, W) ensembles of (k, H, W) truths; NaN in ``truth`` marks missing cells.

        ``offset`` is accepted for symmetry with :meth:`MetricSums.update`: every score here is
        unchanged by a common shift, and thresholds are in the units of ``ens``. A member that
        is NaN at a valid cell makes the cell-wise sums NaN (it is not hidden).
        """
        ens = torch.as_tensor(ens).detach().double()
        truth = torch.as_tensor(truth).detach().double().to(ens.device)
        if ens.dim() != 4 or ens.shape[1] != self.members or truth.shape != (ens.shape[0], *ens.shape[2:]):
            raise ValueError(f"expected ensembles (k, {self.members}, H, W) and truths (k, H, W), got {tuple(ens.shape)} and {tuple(truth.shape)}")
        m = self.members
        add = torch.zeros_like(self.sums, device="cpu")
        valid = ~torch.isnan(truth)
        e = ens.permute(0, 2, 3, 1)[valid]  # (cells, M)
        y = truth[valid]
        n = y.numel()
        if n:
            mean = e.mean(1)
            var = e.var(1, correction=1) if m > 1 else torch.zeros_like(mean)
            e_np, y_np = e.cpu().numpy(), y.cpu().numpy()
            crps = properscoring.crps_ensemble(y_np, e_np, axis=-1)
            add[self.slices["crps"]] = float(np.sum(crps))
            add[self.slices["ae"]] = float((mean - y).abs().sum())
            add[self.slices["se"]] = float(((mean - y) ** 2).sum())
            add[self.slices["var"]] = float(var.sum())
            add[self.slices["cells"]] = n
            used = int(np.isfinite(e_np).all(1).sum())  # cells the rank histogram counts
            if used:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # NaN members: those cells are left out
                    freq = rank_histogram(xr.DataArray(e_np, dims=("cell", "member")), xr.DataArray(y_np, dims=("cell",)), "member")
                add[self.slices["rank"]] = torch.from_numpy(np.asarray(freq.values, dtype=np.float64) * used)
        full = valid.flatten(1).all(1)
        if bool(full.any()):
            self._add_full(ens[full], truth[full], add)
        self.sums += add.to(self.sums.device)

    def _add_full(self, ens: torch.Tensor, truth: torch.Tensor, add: torch.Tensor) -> None:
        """Spectra, high-wavenumber power and FSS of frames with no missing cell."""
        k, m, h, w = ens.shape
        mean = ens.mean(1)
        flat = ens.reshape(k * m, h, w)
        add[self.slices["full_frames"]] = k
        if self.cutoff is not None:
            add[self.slices["hi_members"]] = float(radial_band_power(flat, self.cutoff).sum()) / m
            add[self.slices["hi_mean"]] = float(radial_band_power(mean, self.cutoff).sum())
            add[self.slices["hi_truth"]] = float(radial_band_power(truth, self.cutoff).sum())
        spec_members, modes = radial_spectrum(flat, self.bins)
        add[self.slices["spec_members"]] = spec_members.sum(0).cpu() / m
        add[self.slices["spec_mean"]] = radial_spectrum(mean, self.bins)[0].sum(0).cpu()
        add[self.slices["spec_truth"]] = radial_spectrum(truth, self.bins)[0].sum(0).cpu()
        add[self.slices["spec_modes"]] = modes.cpu() * k
        if not self.thresholds or self.fss_window > min(h, w):
            return
        e_np, y_np = ens.cpu().numpy(), truth.cpu().numpy()
        fss_sum, fss_count = np.zeros(len(self.thresholds)), np.zeros(len(self.thresholds))
        for j, t in enumerate(self.thresholds):
            for i in range(k):
                obs_event = bool((y_np[i] > t).any())
                for f in e_np[i]:
                    if not obs_event and not bool((f > t).any()):
                        continue  # no event in either field: FSS is 0/0, left out
                    fss_sum[j] += float(fss_2d_single_field(f, y_np[i], event_threshold=t, window_size=(self.fss_window, self.fss_window)))
                    fss_count[j] += 1
        add[self.slices["fss_sum"]] = torch.from_numpy(fss_sum)
        add[self.slices["fss_count"]] = torch.from_numpy(fss_count)

    def merge(self, other: EnsembleSums) -> None:
        self.sums += other.sums.to(self.sums)

    def summary(self, sums: torch.Tensor | None = None) -> dict:
        """Scores from (possibly globally reduced) sums, as plain floats (NaN where nothing was
        counted). Reads the device once.

        * ``crps``, ``mae`` and ``rmse`` of the ensemble mean, ``spread`` (square root of the mean
          unbiased member variance), in physical units;
        * ``spread_skill`` = sqrt((M+1)/M) * spread / rmse, with the finite-ensemble correction
          of Fortin et al. 2014: 1 for a calibrated ensemble, below 1 for an under-dispersed one;
        * ``rank_histogram`` (M+1 relative frequencies) and ``rank_flatness``, its total-variation
          distance from flat, 0.5 * sum |f_i - 1/(M+1)| (0 for flat);
        * ``hf_energy_ratio`` (members' power above the cutoff / the truth's, members averaged)
          and ``hf_energy_ratio_mean`` (the ensemble mean's / the truth's);
        * ``fss``: {f"{threshold:g}": mean of per-field FSS over frames and members}, fields where
          neither forecast nor truth has an event left out;
        * ``spectrum``: {"k": ring centres (fraction of Nyquist), "members", "mean", "truth":
          ring-averaged power in physical units squared};
        * ``cells``: the number of valid cells.
        """
        s = (self.sums if sums is None else sums).detach().double().cpu()
        v = {name: s[sl].tolist() for name, sl in self.slices.items()}
        one = {name: v[name][0] for name, size in LAYOUT if size == 1}
        m, n, nan = self.members, one["cells"], math.nan

        def div(a, b):
            return a / b if b else nan

        rmse = math.sqrt(div(one["se"], n)) * self.unit_scale if n else nan
        spread = math.sqrt(div(one["var"], n)) * self.unit_scale if n and m > 1 else nan
        ranks = sum(v["rank"])
        hist = [c / ranks if ranks else nan for c in v["rank"]]
        modes = v["spec_modes"]
        u2 = self.unit_scale**2
        return {
            "crps": div(one["crps"], n) * self.unit_scale,
            "mae": div(one["ae"], n) * self.unit_scale,
            "rmse": rmse,
            "spread": spread,
            "spread_skill": math.sqrt((m + 1) / m) * spread / rmse if rmse > 0 else nan,
            "rank_histogram": hist,
            "rank_flatness": 0.5 * sum(abs(f - 1 / (m + 1)) for f in hist) if ranks else nan,
            "hf_energy_ratio": div(one["hi_members"], one["hi_truth"]) if self.cutoff is not None else nan,
            "hf_energy_ratio_mean": div(one["hi_mean"], one["hi_truth"]) if self.cutoff is not None else nan,
            "fss": {f"{t:g}": div(a, c) for t, a, c in zip(self.thresholds, v["fss_sum"], v["fss_count"])},
            "spectrum": {"k": [(i + 0.5) / self.bins for i in range(self.bins)],
                         **{key: [div(p, q) * u2 for p, q in zip(v[f"spec_{key}"], modes)] for key in ("members", "mean", "truth")}},
            "cells": int(n),
        }
