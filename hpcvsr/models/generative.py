"""The generative stage: ensemble members = the deterministic output + a sampled residual.

A coarse frame is consistent with many fine frames; the deterministic stages return something near
their conditional mean, smooth and without a statement of uncertainty. :class:`ResidualGenerator`
maps (the deterministic output, the low-resolution input, Gaussian noise) to a residual in one
forward pass, so that member k is ``det + g(det, bicubic(lr), z_k)``, then bounded and, with
``constrain``, projected so that it degrades back to the input exactly
(:func:`hpcvsr.ops.degrade.project` / :func:`~hpcvsr.ops.degrade.project_bounded`), every member.

It is trained on the fair CRPS of a few members per sample (:func:`fair_crps`), the score ensembles
are judged by (Leutbecher 2019; the ensemble training of ECMWF's AIFS-CRPS and of Alet et al. 2025):
a proper score, so its minimum is the calibrated distribution, spread and all. A CRPS per pixel scores
each pixel's distribution alone, which white noise of the right variance meets; :func:`spatial_crps`
adds the CRPS of the members' finite differences, so that their fine-scale structure (their spectrum)
is scored too. Why not a diffusion
model (EDM, as CorrDiff): a member costs one forward pass here instead of the tens of network
evaluations of a sampler, and a pass has a finite receptive field, so tiles with halos reproduce
whole frames exactly; a sampler's receptive field grows with every step.

The noise ``z`` comes from :func:`hpcvsr.ops.noise.normal` (its value at a pixel depends only on the
seed, member and the pixel's global frame, row and column), so members do not depend on ranks or tiles.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from hpcvsr.models.base import Network
from hpcvsr.models.bounds import limits, through
from hpcvsr.models.conditioning import N_BASIS, Conditioned, Where, place_time
from hpcvsr.ops import degrade as dg


class ResidualGenerator(Network):
    """Residual generator of ``channels`` variables at ``scale``: ``depth`` 3x3 convolutions of ``width``
    features over [det, bicubic(lr), ``noise`` channels of z]; its output times ``amplitude`` (per
    channel, the training residual's standard deviation, in normalised units) is the residual.
    ``method``/``sigma``: the degradation of the data, for the ``constrain`` projection; ``lo``/``hi``
    per-channel bounds (normalised; None: unbounded side).

    ``intensity`` (every channel bounded below, as rain): a second output per channel, times the
    deterministic output's height above the lower bound, is added to the residual, so that the
    residual's spread can grow with the intensity (the error of rain grows with the rain) instead of
    being learnt as a product by the layers.

    Conditioning (as the deterministic stages', :mod:`hpcvsr.models.conditioning`): ``grid`` the
    high-resolution (H, W) the place maps cover, ``static`` covariate maps (set by :meth:`set_static`),
    ``location`` learned maps of the grid, ``time`` the time features of the frame; the generator then
    also reads them, and their products, at each sample's place (:class:`~hpcvsr.models.conditioning.Where`)."""

    def __init__(self, *, scale: int, channels: int = 1, noise: int = 8, width: int = 48, depth: int = 6, method: str = "bicubic",
                 sigma: float = 1.6, constrain: bool = False, lo: list | None = None, hi: list | None = None,
                 amplitude: list | None = None, grid: list | None = None, static: int = 0,
                 location: int = 0, time: bool = False, intensity: bool = False):
        super().__init__()
        if depth < 2 or width < 1 or noise < 1:
            raise ValueError(f"depth >= 2, width >= 1 and noise >= 1 are required, got {depth}, {width}, {noise}")
        self.scale, self.channels, self.noise, self.method, self.sigma = int(scale), int(channels), int(noise), method, float(sigma)
        self.constrain = bool(constrain)
        self.radius = depth  # fine pixels a member reads each side (3x3 layers), besides the bicubic upscale's reach
        if (static or location) and not grid:
            raise ValueError("place conditioning (static or location maps) needs the grid it covers")
        height, width_px = (int(grid[0]), int(grid[1])) if grid else (0, 0)
        self.grid = (height, width_px)
        self.register_buffer("static", torch.zeros(static, height, width_px))
        self.location = nn.Parameter(0.01 * torch.randn(location, height, width_px)) if location else None
        self.n_time = N_BASIS if time else 0
        places = static + location
        self.takes_where = self.takes_static = bool(places or self.n_time)
        conditioning = places + self.n_time + places * self.n_time
        layers = [nn.Conv2d(2 * channels + noise + conditioning, width, 3, padding=1)]
        layers += [nn.Conv2d(width, width, 3, padding=1) for _ in range(depth - 2)]
        self.body = nn.ModuleList(layers)
        self.intensity = bool(intensity)
        self.head = nn.Conv2d(width, channels * (2 if self.intensity else 1), 3, padding=1)
        nn.init.zeros_(self.head.bias)  # members start around the deterministic output, spread by the noise alone
        self.register_buffer("amplitude", torch.tensor(amplitude or [1.0] * channels, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.bounded = lo is not None and hi is not None and any(v is not None for v in (*lo, *hi))
        lo, hi = lo or [None] * channels, hi or [None] * channels
        if self.bounded and constrain and method not in dg.BOUNDED:
            raise ValueError(f"no bounded projection for degradation '{method}'")
        self.register_buffer("low", limits(lo, -math.inf), persistent=False)
        self.register_buffer("high", limits(hi, math.inf), persistent=False)
        if self.intensity and not bool(torch.isfinite(self.low).all()):
            raise ValueError("intensity needs a lower bound on every channel")

    # the covariates and learned maps kept as a conditioned network keeps them (buffer static, parameter location)
    set_static = Conditioned.set_static
    places = Conditioned.places

    def residual(self, det: torch.Tensor, lr: torch.Tensor, z: torch.Tensor, where: Where | None = None) -> torch.Tensor:
        """The sampled residual (N, C, H, W) for noise ``z`` (N, noise, H, W) at ``where``."""
        parts = [det, dg.upscale(lr, self.scale), z]
        if self.takes_where:
            if where is None:
                raise RuntimeError("a conditioned generator was called without its Where")  # programming error
            parts += place_time(self.places(), self.n_time, where, *det.shape[-2:], dtype=det.dtype)
        h = torch.cat(parts, 1)
        for conv in self.body:
            h = F.silu(conv(h))
        out = self.head(h)
        if not self.intensity:
            return out * self.amplitude
        c = self.channels
        return out[:, :c] * self.amplitude + out[:, c:] * (det - self.low.to(det)).clamp_min(0)

    def finish(self, out: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """A member bounded and, with ``constrain``, consistent with ``lr``."""
        if self.constrain:
            if not self.bounded:
                return dg.project(out, lr, self.scale, self.method, self.sigma)
            low, high = self.low.to(out.device), self.high.to(out.device)
            exact = dg.project_bounded(out, lr, self.scale, self.method, low, high)
            return through(out, exact, dg.project(out, lr, self.scale, self.method, self.sigma) if out.requires_grad else None)
        if self.bounded:
            return through(out, torch.clamp(out.detach(), self.low.to(out), self.high.to(out)))
        return out

    def forward(self, det: torch.Tensor, lr: torch.Tensor, z: torch.Tensor, where: Where | None = None) -> torch.Tensor:
        """Members of the deterministic output ``det`` (N, C, H, W) of low-resolution frames ``lr``
        (N, C, h, w) at ``where`` (read when conditioned): ``z`` (N, noise, H, W) gives (N, C, H, W),
        ``z`` (N, M, noise, H, W) gives M members (N, M, C, H, W)."""
        if z.dim() == 4:
            return self.finish(det + self.residual(det, lr, z, where), lr)
        n, m = z.shape[:2]

        def rep(t):  # every sample once per member
            return t[:, None].expand(n, m, *t.shape[1:]).reshape(n * m, *t.shape[1:])

        if where is not None:
            where = Where(where.rows.repeat_interleave(m), where.cols.repeat_interleave(m),
                          None if where.times is None else where.times.repeat_interleave(m, 0))
        out = self.forward(rep(det), rep(lr), z.reshape(n * m, *z.shape[2:]), where)
        return out.reshape(n, m, *out.shape[1:])


def fair_crps(members: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The fair CRPS of ensembles ``members`` (N, M, ...) against ``y`` (N, ...), averaged over the
    cells where ``y`` is not NaN: mean_m |x_m - y| - sum_{m, m'} |x_m - x_m'| / (2 M (M - 1)), the
    CRPS an infinite ensemble of the same distribution would score (Ferro 2014), so that training
    on M members does not favour a spread tuned to M. Differentiable; M >= 2.

    >>> round(fair_crps(torch.tensor([[0.0, 2.0]]), torch.tensor([0.5])).item(), 4)  # (0.5 + 1.5) / 2 - 2 * 2 / 4
    0.0
    """
    m = members.shape[1]
    valid = ~torch.isnan(y)
    yy = torch.nan_to_num(y)[:, None]
    skill = (members - yy).abs().mean(1)
    spread = (members[:, :, None] - members[:, None, :]).abs().sum((1, 2)) / (2 * m * (m - 1))
    score = torch.where(valid, skill - spread, torch.zeros_like(skill))
    return score.sum() / valid.sum().clamp_min(1)


def difference_lags(scale: int) -> tuple:
    """The lags of :func:`spatial_crps` for a scale: 1, 2, 4, ... below ``scale``, so that every band
    above the coarse Nyquist wavenumber is scored (a lag-L difference responds most at 1/(2L) cycles per
    pixel: lag 1 at the fine Nyquist, lag 2 at half of it, the coarse cell's scale at x4).

    >>> difference_lags(2), difference_lags(3), difference_lags(4), difference_lags(8)
    ((1,), (1, 2), (1, 2), (1, 2, 4))
    """
    return tuple(2**i for i in range(max(1, math.ceil(math.log2(scale)))))


def spatial_crps(members: torch.Tensor, y: torch.Tensor, lags: tuple = (1,)) -> torch.Tensor:
    """The fair CRPS of the field plus those of its differences along x and along y at each of ``lags``
    (:func:`fair_crps`): members whose pixels are calibrated one by one but spatially too rough or too
    smooth (too much or too little power at high wavenumbers) score worse on the differences.
    ``members`` (N, M, ..., H, W), ``y`` (N, ..., H, W).

    >>> y = torch.zeros(1, 8, 8)  # two members, each pixel 1 away from the truth: rough (+1, -1, ...) or smooth (all +1)
    >>> rough, smooth = torch.tensor([[1.0, -1.0] * 4] * 8).expand(1, 2, 8, 8), torch.ones(1, 2, 8, 8)
    >>> bool(fair_crps(rough, y) == fair_crps(smooth, y)), bool(spatial_crps(rough, y) > spatial_crps(smooth, y))
    (True, True)
    """
    def dx(t, k):
        return t[..., :, k:] - t[..., :, :-k]

    def dy(t, k):
        return t[..., k:, :] - t[..., :-k, :]

    score = fair_crps(members, y)
    for k in lags:
        score = score + fair_crps(dx(members, k), dx(y, k)) + fair_crps(dy(members, k), dy(y, k))
    return score
