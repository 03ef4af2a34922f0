"""Quality metrics in torch, batched, on any device, accumulated as sums and counts.

Per-item functions take (N, H, W) tensors and return (N,) tensors:

* :func:`mse`, :func:`mae`, :func:`psnr` (from each item's MSE),
* :func:`ssim` — Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
  K2 = 0.03, averaged over the 'valid' region, which equals scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.

:class:`MetricSums` keeps sums (squared error, absolute error, pixels, per-item PSNR and SSIM,
items, and the physical sums for fields) in one float64 vector, so a distributed run reduces them
with a single all-reduce and divides afterwards: the global PSNR is computed from the global MSE,
and the mean of per-item PSNR is reported too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hpcvsr.ops.degrade import degrade, gaussian_1d


def shave(x: torch.Tensor, border: int) -> torch.Tensor:
    """Drop ``border`` pixels on each side of the last two dimensions."""
    if border <= 0:
        return x
    return x[..., border:-border, border:-border]


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).flatten(1).mean(1)


def mae(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().flatten(1).mean(1)


def psnr_from_mse(m: torch.Tensor | float, data_range: float) -> torch.Tensor:
    m = torch.as_tensor(m, dtype=torch.float64)
    return 10.0 * torch.log10(data_range**2 / m.clamp_min(1e-30))


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    return psnr_from_mse(mse(a.double(), b.double()), data_range)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, size: int = 11, sigma: float = 1.5,
         valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item SSIM of (N, H, W) tensors (H, W >= ``size``).

    With a ``valid`` mask (N, H, W), the SSIM map is averaged over the windows whose cells are all
    valid (NaN for an item without one).
    """
    x = a.double().unsqueeze(1)
    y = b.double().unsqueeze(1)
    g = gaussian_1d(sigma, size).to(a.device)
    gh, gw = g.view(1, 1, size, 1), g.view(1, 1, 1, size)

    def filt(t):
        return F.conv2d(F.conv2d(t, gh), gw)

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    if valid is None:
        return s.flatten(1).mean(1)
    box = torch.ones(1, 1, size, size, dtype=torch.float64, device=a.device)
    whole = (F.conv2d(valid.double().unsqueeze(1), box) > size * size - 0.5).flatten(1)
    return torch.where(whole, s.flatten(1), torch.zeros_like(s.flatten(1))).sum(1) / whole.sum(1).double().where(whole.any(1), float("nan"))


def radial_band_power(x: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Per-item spectral power at radial wavenumbers above ``cutoff`` (fraction of Nyquist).

    Used for the SR/HR energy ratio at high wavenumbers: with ``cutoff = 1/scale`` it measures the
    band the low-resolution grid cannot hold, which a super-resolution method must create.
    """
    h, w = x.shape[-2:]
    spec = torch.fft.rfft2(x.double() - x.double().mean(dim=(-2, -1), keepdim=True))
    power = spec.real**2 + spec.imag**2
    ky = torch.fft.fftfreq(h, device=x.device).abs() * 2  # fraction of Nyquist
    kx = torch.fft.rfftfreq(w, device=x.device) * 2
    k = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    mask = (k > cutoff) & (k <= 1.0)
    return (power * mask).flatten(1).sum(1)


# Per-frame rows: what inference stores for every frame and what the sums below are made of.
FRAME_FIELDS = ("se", "ae", "pixels", "psnr", "ssim", "mean_sr", "mean_hr", "abs_hr", "hi_sr", "hi_hr", "cse", "lr_pixels")
# Layout of the sums vector. Keep in one place: reductions rely on it.
FIELDS = ("se", "ae", "pixels", "psnr", "ssim", "items", "mass_abs", "mass_ref", "hi_sr", "hi_hr", "ssim_items", "cse", "lr_pixels")


def consistency_rows(sr: torch.Tensor, lr: torch.Tensor | None, degradation: tuple | None) -> dict:
    """{"cse", "lr_pixels"}: per frame, the squared error of the prediction degraded by
    ``degradation`` (method, scale, sigma) against its low-resolution input ``lr``, and the number
    of low-resolution pixels (zeros without ``lr``: not measured)."""
    if lr is None or degradation is None:
        zero = torch.zeros(sr.shape[0], dtype=torch.float64, device=sr.device)
        return {"cse": zero, "lr_pixels": zero}
    method, scale, sigma = degradation
    lr = lr.detach().double().reshape(-1, *lr.shape[-2:]).to(sr.device)
    d = degrade(sr, scale, method, sigma) - lr
    return {"cse": (d * d).flatten(1).sum(1), "lr_pixels": torch.full((sr.shape[0],), float(lr.shape[-1] * lr.shape[-2]), dtype=torch.float64,
                                                                      device=sr.device)}


@torch.no_grad()
def frame_rows(sr: torch.Tensor, hr: torch.Tensor, data_range: float = 1.0, offset: float = 0.0, cutoff: float | None = None,
               lr: torch.Tensor | None = None, degradation: tuple | None = None) -> dict:
    """Per-frame metric rows {field: (N,) float64 tensor} of (N, H, W) predictions and references.

    ``offset`` is added to both before the mean-based mass check (e.g. to turn normalised values
    back into physical ones up to a factor); ``cutoff`` (fraction of Nyquist) enables the
    high-wavenumber spectral energies (zero otherwise); ``lr`` (N, h, w) and ``degradation``
    (method, scale, sigma) the consistency error (:func:`consistency_rows`). SSIM is NaN for
    frames under 11x11.
    """
    sr = sr.detach().double().reshape(-1, *sr.shape[-2:])
    hr = hr.detach().double().reshape(-1, *hr.shape[-2:]).to(sr.device)
    valid = ~torch.isnan(hr)
    if not bool(valid.all()):  # consistency with a filled-in input is not measured
        return dict(_masked_rows(sr, hr, valid, data_range, offset, cutoff), **consistency_rows(sr, None, None))
    m, a = mse(sr, hr), mae(sr, hr)
    npix = sr.shape[-1] * sr.shape[-2]
    zero = torch.zeros_like(m)
    return {
        **consistency_rows(sr, lr, degradation),
        "se": m * npix,
        "ae": a * npix,
        "pixels": torch.full_like(m, float(npix)),
        "psnr": psnr_from_mse(m, data_range).to(m),
        "ssim": ssim(sr, hr, data_range) if min(sr.shape[-2:]) >= 11 else torch.full_like(m, float("nan")),
        "mean_sr": sr.mean(dim=(-2, -1)) + offset,
        "mean_hr": hr.mean(dim=(-2, -1)) + offset,
        "abs_hr": (hr + offset).abs().mean(dim=(-2, -1)),
        "hi_sr": radial_band_power(sr, cutoff) if cutoff is not None else zero,
        "hi_hr": radial_band_power(hr, cutoff) if cutoff is not None else zero,
    }


def _masked_rows(sr, hr, valid, data_range: float, offset: float, cutoff: float | None) -> dict:
    """:func:`frame_rows` where the reference is NaN on missing cells: those cells count nowhere.

    Error sums, means and the mass check use the valid cells; SSIM the windows of valid cells;
    the spectra fields whose missing cells hold the frame's valid mean of the reference. A frame
    with no valid cell has no PSNR or SSIM (NaN) and adds nothing to the sums.
    """
    n = valid.flatten(1).sum(1).double()
    zero = torch.zeros_like(hr)
    d = torch.where(valid, sr - hr, zero)
    se, ae = (d * d).flatten(1).sum(1), d.abs().flatten(1).sum(1)
    per = n.clamp_min(1)
    has = n > 0
    hr_mean = torch.where(valid, hr, zero).flatten(1).sum(1) / per
    hf = torch.where(valid, hr, hr_mean[:, None, None])
    sf = torch.where(valid, sr, hr_mean[:, None, None])
    nan = torch.full_like(n, float("nan"))
    ok_ssim = min(sr.shape[-2:]) >= 11
    return {
        "se": se, "ae": ae, "pixels": n,
        "psnr": torch.where(has, psnr_from_mse(se / per, data_range).to(n), nan),
        "ssim": ssim(sf, hf, data_range, valid=valid) if ok_ssim else nan,
        "mean_sr": torch.where(valid, sr, zero).flatten(1).sum(1) / per + offset * has,
        "mean_hr": hr_mean + offset * has,
        "abs_hr": torch.where(valid, (hr + offset).abs(), zero).flatten(1).sum(1) / per,
        "hi_sr": radial_band_power(sf, cutoff) if cutoff is not None else torch.zeros_like(n),
        "hi_hr": radial_band_power(hf, cutoff) if cutoff is not None else torch.zeros_like(n),
    }


class MetricSums:
    """Running sums for MSE, MAE, PSNR, SSIM (+ physical metrics), reducible in one collective.

    ``data_range`` is the PSNR / SSIM range of the values given to :meth:`update`;
    ``unit_scale`` converts those values to physical units (RMSE in physical units is
    ``sqrt(mse) * unit_scale``); ``spectrum_cutoff`` (fraction of Nyquist, e.g. 1/scale) enables
    the high-wavenumber energy ratio. Sums are built from :func:`frame_rows`, directly
    (:meth:`update`) or from rows stored earlier (:meth:`add_rows`).
    """

    def __init__(self, data_range: float = 1.0, unit_scale: float = 1.0, spectrum_cutoff: float | None = None, keep_items: bool = False, device=None,
                 degradation: tuple | None = None):
        self.data_range, self.degradation = data_range, degradation
        self.unit_scale = unit_scale
        self.cutoff = spectrum_cutoff
        self.sums = torch.zeros(len(FIELDS), dtype=torch.float64, device=device)
        self.items: list[dict] = [] if keep_items else None

    def rows(self, sr: torch.Tensor, hr: torch.Tensor, offset: float = 0.0, lr: torch.Tensor | None = None) -> dict:
        """This accumulator's :func:`frame_rows` of a batch (without adding them)."""
        return frame_rows(sr, hr, self.data_range, offset, self.cutoff, lr=lr, degradation=self.degradation)

    def add_rows(self, rows: dict) -> None:
        """Add per-frame rows (tensors or arrays, as from :func:`frame_rows`) to the sums."""
        r = {k: torch.as_tensor(rows[k], dtype=torch.float64, device=self.sums.device) for k in FRAME_FIELDS}
        scored = torch.isfinite(r["psnr"])  # frames with at least one valid cell
        total = [r["se"].sum(), r["ae"].sum(), r["pixels"].sum(), r["psnr"].nansum(), r["ssim"].nansum(), scored.sum(),
                 (r["mean_sr"] - r["mean_hr"]).abs().sum(), r["abs_hr"].sum(), r["hi_sr"].sum(), r["hi_hr"].sum(),
                 torch.isfinite(r["ssim"]).sum(), r["cse"].sum(), r["lr_pixels"].sum()]
        self.sums += torch.stack([t.to(self.sums) for t in total])
        if self.items is not None:
            npix = r["pixels"].clamp_min(1)
            for i in range(len(npix)):
                self.items.append({"mse": float(r["se"][i] / npix[i]), "mae": float(r["ae"][i] / npix[i]), "psnr": float(r["psnr"][i]),
                                   "ssim": float(r["ssim"][i])})

    @torch.no_grad()
    def update(self, sr: torch.Tensor, hr: torch.Tensor, offset: float = 0.0, lr: torch.Tensor | None = None) -> torch.Tensor:
        """Add a batch of (N, H, W) predictions and references (and their low-resolution inputs
        ``lr`` for the consistency error); returns their per-item PSNR."""
        if self.sums.device != sr.device:
            self.sums = self.sums.to(sr.device)
        rows = self.rows(sr, hr, offset, lr)
        self.add_rows(rows)
        return rows["psnr"]

    def merge(self, other: MetricSums) -> None:
        self.sums += other.sums.to(self.sums)

    def summary(self, sums: torch.Tensor | None = None) -> dict:
        """Metrics from (possibly globally reduced) sums. Reads the device once."""
        v = dict(zip(FIELDS, (self.sums if sums is None else sums).tolist()))
        if v["pixels"] == 0 or v["items"] == 0:
            return {}
        m = v["se"] / v["pixels"]
        out = {
            "mse": m,
            "mae": v["ae"] / v["pixels"],
            "psnr": float(psnr_from_mse(m, self.data_range)),
            "psnr_mean": v["psnr"] / v["items"],
            "ssim": v["ssim"] / v["ssim_items"] if v["ssim_items"] else float("nan"),
            "rmse_phys": math.sqrt(m) * self.unit_scale,
            "frames": int(v["items"]),
        }
        if v["mass_ref"] > 0:
            out["mass_rel_err"] = v["mass_abs"] / v["mass_ref"]
        if self.cutoff is not None and v["hi_hr"] > 0:
            out["hf_energy_ratio"] = v["hi_sr"] / v["hi_hr"]
        if v["lr_pixels"] > 0:  # RMS of (degraded prediction - input), physical units
            out["consistency_rmse_phys"] = math.sqrt(v["cse"] / v["lr_pixels"]) * self.unit_scale
        return out
