"""Degradation operators and interpolation baselines, in torch, batched over leading dims.

* :func:`imresize` reproduces MATLAB's ``imresize`` (cubic kernel a = -0.5, antialiasing when
  shrinking, symmetric boundary). Published SRCNN / FSRCNN numbers depend on it.
* :func:`degrade` makes the low-resolution input: ``bicubic`` (MATLAB imresize), ``blur``
  (Gaussian blur, sigma 1.6 at x4, then decimation, as video benchmarks use), ``block_mean``
  (conservative cell averaging: what a coarse finite-volume grid holds; mass is preserved) and
  ``point`` (sampling every s-th pixel: aliased, so neighbouring frames carry sub-pixel detail).
* :func:`upscale` is the interpolation baseline: nearest, bilinear or bicubic (MATLAB).
* :func:`project` makes a high-resolution field consistent with its low-resolution input: the
  smallest change after which degrading it reproduces the input (exact to round-off; with block
  mean the cell averages, and so the mass, are the input's).
* :func:`project_bounded` does the same within bounds (rain >= 0, sea ice in [0, 1]): the nearest field
  in the bounds that degrades to the input (block mean and point sampling).

Images are float tensors of shape (..., H, W). Resizing is separable and linear, so each
dimension is a dense (out, in) matrix built once per size and applied with two matmuls.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from hpcvsr.errors import UserError

DEGRADATIONS = ("bicubic", "blur", "block_mean", "point")
# Where a low-resolution pixel sits on the fine grid: centred on its s x s cells (bicubic, block mean), or on
# the first of them (point sampling, and blur, which keeps every s-th pixel of the blurred field).
# A coarse run (paired training) sits as its grid does: finite-volume cells centred on the fine cells they cover
# ('paired'), or points that are every s-th point of the fine grid ('paired_point').
CENTRED = {"bicubic": True, "block_mean": True, "blur": False, "point": False, "paired": True, "paired_point": False}
PAIRED = ("paired", "paired_point")  # the inputs are a coarse run: nothing is degraded
UPSCALERS = ("nearest", "bilinear", "bicubic")


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


def _triangle(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return (1.0 - ax) * (ax <= 1)


_KERNELS = {"bicubic": (_cubic, 4.0), "bilinear": (_triangle, 2.0)}


@functools.lru_cache(maxsize=64)
def resize_matrix(in_len: int, out_len: int, kernel: str = "bicubic", antialias: bool = True, centred: bool = True) -> np.ndarray:
    """Dense (out_len, in_len) float64 matrix of MATLAB imresize along one dimension; ``centred=False``
    (upscaling only) places input sample j on output sample ``j * scale`` instead of the centre of its cells,
    as a coarse grid whose points are every s-th point of the fine one.

    >>> m = resize_matrix(4, 2)
    >>> m.shape, bool(np.allclose(m.sum(1), 1.0))
    ((2, 4), True)
    >>> resize_matrix(3, 6, centred=False)[[0, 2, 4]].round(6).tolist()  # the coarse points themselves
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    scale = out_len / in_len
    fn, width = _KERNELS[kernel]
    if scale < 1 and antialias:
        h = lambda x: scale * fn(scale * x)  # noqa: E731 - the stretched kernel
        width = width / scale
    else:
        h = fn
    x = np.arange(1, out_len + 1, dtype=np.float64)
    if not centred and scale < 1:
        raise ValueError("resize_matrix: centred=False places the samples of an upscale")
    u = x / scale + 0.5 * (1 - 1 / scale) if centred else (x - 1) / scale + 1
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based, may fall outside
    w = h(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])  # symmetric
    idx = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    mat = np.zeros((out_len, in_len))
    np.add.at(mat, (np.repeat(np.arange(out_len), taps), idx.ravel()), w.ravel())
    return mat


def _matrix(in_len, out_len, kernel, antialias, like: torch.Tensor, centred: bool = True) -> torch.Tensor:
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return torch.from_numpy(resize_matrix(in_len, out_len, kernel, antialias, centred)).to(like.device, dtype)


def imresize(x: torch.Tensor, out_hw: tuple[int, int], kernel: str = "bicubic", antialias: bool = True,
             centred: bool = True) -> torch.Tensor:
    """MATLAB-compatible resize of (..., H, W) to (..., out_h, out_w) (``centred``: see :func:`resize_matrix`)."""
    h, w = x.shape[-2:]
    mh = _matrix(h, out_hw[0], kernel, antialias, x, centred)
    mw = _matrix(w, out_hw[1], kernel, antialias, x, centred)
    return mh @ x @ mw.T


def check_divisible(shape, scale: int, what: str = "frame") -> None:
    h, w = shape[-2:]
    if h % scale or w % scale:
        raise UserError(f"{what} size {h}x{w} is not divisible by the scale {scale}; crop it first (modcrop)")


def modcrop(x, scale: int):
    """Crop (..., H, W) so both sides are multiples of ``scale`` (as the SRCNN authors do)."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def gaussian_1d(sigma: float, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian weights (float64) of ``size`` taps."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    return g / g.sum()


def gaussian_kernel(sigma: float, size: int = 13) -> torch.Tensor:
    g = gaussian_1d(sigma, size)
    return torch.outer(g, g)


def blur_decimate(x: torch.Tensor, scale: int, sigma: float = 1.6) -> torch.Tensor:
    """Gaussian blur (13x13, reflect borders) then keep every ``scale``-th pixel."""
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    k = gaussian_kernel(sigma).to(x.device, x.dtype)[None, None]
    pad = k.shape[-1] // 2
    blurred = F.conv2d(F.pad(flat, (pad, pad, pad, pad), mode="reflect"), k)
    return blurred[..., ::scale, ::scale].reshape(*lead, x.shape[-2] // scale, x.shape[-1] // scale)


def block_mean(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Mean over each scale x scale cell: the exact coarse-grid average (conserves the sum / s^2)."""
    h, w = x.shape[-2:]
    return x.reshape(*x.shape[:-2], h // scale, scale, w // scale, scale).mean(dim=(-3, -1))


def point_sample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Every ``scale``-th pixel, no prefilter (aliased)."""
    return x[..., ::scale, ::scale]


def degrade(x: torch.Tensor, scale: int, method: str = "bicubic", sigma: float = 1.6) -> torch.Tensor:
    """High resolution (..., H, W) -> low resolution (..., H/s, W/s)."""
    if method not in DEGRADATIONS:
        raise UserError(f"unknown degradation '{method}' (choose from {', '.join(DEGRADATIONS)})")
    if scale < 1:
        raise UserError(f"scale must be a positive integer, got {scale}")
    check_divisible(x.shape, scale)
    h, w = x.shape[-2:]
    if method == "bicubic":
        return imresize(x, (h // scale, w // scale))
    if method == "blur":
        return blur_decimate(x, scale, sigma)
    if method == "block_mean":
        return block_mean(x, scale)
    return point_sample(x, scale)


def upscale(x: torch.Tensor, scale: int, method: str = "bicubic", *, centred: bool = True) -> torch.Tensor:
    """Interpolation baseline: (..., h, w) -> (..., h*s, w*s); ``centred=False``: a low-resolution pixel lies on
    the first of its fine pixels (a coarse grid of points, ``CENTRED``), not at the centre of them."""
    if method not in UPSCALERS:
        raise UserError(f"unknown interpolation '{method}' (choose from {', '.join(UPSCALERS)})")
    h, w = x.shape[-2:]
    if method == "nearest":
        return x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    return imresize(x, (h * scale, w * scale), kernel=method, centred=centred)


@functools.lru_cache(maxsize=64)
def axis_matrix(method: str, n: int, scale: int, sigma: float = 1.6) -> np.ndarray:
    """Dense (n / scale, n) float64 matrix of degradation ``method`` along one axis: every
    degradation is separable, so ``degrade(x) == M_h @ x @ M_w.T``.

    >>> axis_matrix("block_mean", 4, 2)
    array([[0.5, 0.5, 0. , 0. ],
           [0. , 0. , 0.5, 0.5]])
    """
    m = n // scale
    if method == "bicubic":
        return resize_matrix(n, m)
    if method == "block_mean":
        return np.kron(np.eye(m), np.full((1, scale), 1.0 / scale))
    if method == "point":
        return np.eye(n)[::scale]
    if method == "blur":  # 13-tap Gaussian with reflected borders, then every scale-th pixel
        g = gaussian_1d(sigma, 13).numpy()
        pad = len(g) // 2
        full = np.zeros((n, n))
        for j in range(n):
            for k, gk in enumerate(g):
                i = j + k - pad
                i = -i if i < 0 else (2 * (n - 1) - i if i > n - 1 else i)  # reflect (edge not repeated), as F.pad
                full[j, i] += gk
        return full[::scale]
    raise UserError(f"unknown degradation '{method}' (choose from {', '.join(DEGRADATIONS)})")


@functools.lru_cache(maxsize=64)
def _projector(method: str, n: int, scale: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(M, M^T (M M^T)^-1) along one axis, float64."""
    m = axis_matrix(method, n, scale, sigma)
    return m, m.T @ np.linalg.inv(m @ m.T)


def project(y: torch.Tensor, lr: torch.Tensor, scale: int, method: str, sigma: float = 1.6) -> torch.Tensor:
    """The field nearest to ``y`` (..., H, W) (least squares) whose degradation is ``lr`` (..., H/s, W/s).

    With M_h, M_w the operator's axis matrices (:func:`axis_matrix`), the residual
    R = lr - M_h y M_w^T is put back as y + A_h R A_w^T with A = M^T (M M^T)^-1, so that
    degrade(result) = lr up to the round-off of y's precision. Differentiable (a linear map of y and lr).
    """
    h, w = y.shape[-2:]
    (mh, ah), (mw, aw) = _projector(method, h, scale, sigma), _projector(method, w, scale, sigma)
    mh, ah, mw, aw = (torch.from_numpy(a).to(y.device) for a in (mh, ah, mw, aw))
    # in float64: (M M^T)^-1 amplifies round-off of the residual by its condition number (265 for blur x2)
    residual = lr.double() - mh @ y.double() @ mw.T
    return y + (ah @ residual @ aw.T).to(y.dtype)


BOUNDED = ("block_mean", "point")  # degradations with an exact projection onto bounded consistent fields


def project_bounded(y: torch.Tensor, lr: torch.Tensor, scale: int, method: str, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The field nearest to ``y`` (..., H, W) (least squares) within [``lo``, ``hi``] whose degradation
    is ``lr`` (..., H/s, W/s); ``lo`` and ``hi`` broadcast against ``lr`` (e.g. (C, 1, 1) per channel,
    -inf / inf where a side is unbounded).

    ``lr`` is clipped to the bounds first: a cell out of bounds (interpolated or regridded input) has
    no consistent field in bounds, and the clipped cell is the nearest one that has. Point sampling:
    the sampled pixels are the clipped input, the rest clipped. Block mean: per block,
    x' = clip(y + lambda, lo, hi) (KKT: the cells inside the bounds move by one scalar, the others sit
    on a bound), where the block's sum g(lambda) = sum clip(y + lambda) meets s^2 lr. g grows
    piecewise linearly between the breakpoints lo - y and hi - y, so a bisection over the block's
    sorted breakpoints (log2(2 s^2) steps, for every block at once, in float64) finds the piece that
    holds the root; g is linear on it, with the number of free cells as its slope, so one Newton step
    from a point of the piece is the root, exact to round-off. Not differentiable (the caller chooses
    a gradient).
    """
    if method not in BOUNDED:
        raise UserError(f"no bounded projection for degradation '{method}' (there is one for {', '.join(BOUNDED)})")
    check_divisible(y.shape, scale)
    x = y.detach().double()
    lo, hi = lo.to(x), hi.to(x)
    ref = torch.clamp(lr.detach().double(), lo, hi)
    if method == "point":
        out = torch.clamp(x, lo, hi)
        out[..., ::scale, ::scale] = ref
        return out.to(y.dtype)
    *lead, H, W = x.shape
    h, w, s = H // scale, W // scale, scale
    cells = x.reshape(*lead, h, s, w, s).transpose(-3, -2).reshape(*lead, h, w, s * s)
    lo, hi, total = lo[..., None], hi[..., None], ref[..., None] * (s * s)
    points = torch.cat(torch.broadcast_tensors(lo - cells, hi - cells), -1).sort(-1).values  # -inf / inf for an unbounded side

    def g(lam):
        return torch.clamp(cells + lam, lo, hi).sum(-1, keepdim=True)

    below = torch.zeros(total.shape, dtype=torch.long, device=x.device)  # g(points[below]) <= total: every cell at lo (or lo = -inf)
    above = torch.full_like(below, points.shape[-1] - 1)  # g(points[above]) >= total: every cell at hi (or hi = inf)
    for _ in range(math.ceil(math.log2(points.shape[-1] - 1))):
        mid = (below + above) // 2
        low = g(points.gather(-1, mid)) <= total
        below, above = torch.where(low, mid, below), torch.where(low, above, mid)
    a, b = points.gather(-1, below), points.gather(-1, above)
    # a point inside the piece [a, b] (whose ends may be infinite): g is linear there, its slope the number of free cells
    probe = torch.where(a.isfinite() & b.isfinite(), 0.5 * (a + b), torch.where(a.isfinite(), a + 1, torch.where(b.isfinite(), b - 1, 0.0)))
    n = ((cells + probe > lo) & (cells + probe < hi)).sum(-1, keepdim=True)
    lam = torch.where(n > 0, probe + (total - g(probe)) / n.clamp_min(1), probe)  # a flat piece: g is the total all along it
    out = torch.clamp(cells + lam, lo, hi)  # a cell the rounding of lambda moves past a bound stays in bounds
    return out.reshape(*lead, h, w, s, s).transpose(-3, -2).reshape(*lead, H, W).to(y.dtype)
