import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from hpcvsr.data import images
from hpcvsr.ops import degrade as dg
from hpcvsr.ops import metrics


def _pairs():
    """Real images (scikit-image's bundled ones) and their bicubic x2 reconstructions."""
    out = []
    for name, y in images.load_luma(None)[:4]:
        hr = torch.from_numpy(dg.modcrop(y, 2)) / 255.0
        sr = dg.upscale(dg.degrade(hr, 2), 2).clamp(0, 1)
        out.append((name, hr, sr))
    return out


@pytest.mark.parametrize("idx", range(4))
def test_psnr_ssim_match_scikit_image(idx):
    name, hr, sr = _pairs()[idx]
    ours_p = float(metrics.psnr(sr[None], hr[None], 1.0)[0])
    ours_s = float(metrics.ssim(sr[None], hr[None], 1.0)[0])
    ref_p = peak_signal_noise_ratio(hr.numpy(), sr.numpy(), data_range=1.0)
    ref_s = structural_similarity(hr.numpy(), sr.numpy(), data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert abs(ours_p - ref_p) < 1e-4, name
    assert abs(ours_s - ref_s) < 1e-4, name


def test_sums_reduce_exactly_and_global_psnr_from_global_mse():
    a = torch.rand(6, 32, 32, dtype=torch.float64)
    b = a + 0.05 * torch.randn_like(a)
    whole = metrics.MetricSums()
    whole.update(a, b)
    parts = [metrics.MetricSums(), metrics.MetricSums()]
    parts[0].update(a[:2], b[:2])
    parts[1].update(a[2:], b[2:])
    parts[0].merge(parts[1])
    s1, s2 = whole.summary(), parts[0].summary()
    for k in s1:
        assert s1[k] == pytest.approx(s2[k], rel=1e-12), k
    mse_all = float(((a - b) ** 2).mean())
    assert s1["mse"] == pytest.approx(mse_all, rel=1e-12)
    assert s1["psnr"] == pytest.approx(10 * np.log10(1 / mse_all), rel=1e-12)
    assert s1["psnr_mean"] == pytest.approx(float(metrics.psnr(a, b).mean()), rel=1e-12)


def test_physical_metrics():
    hr = torch.rand(4, 64, 64, dtype=torch.float64)
    acc = metrics.MetricSums(unit_scale=20.0, spectrum_cutoff=0.5)
    acc.update(hr, hr)
    s = acc.summary()
    assert s["hf_energy_ratio"] == pytest.approx(1.0)
    assert s["mass_rel_err"] == 0.0
    smooth = dg.upscale(dg.degrade(hr, 2), 2)
    acc = metrics.MetricSums(unit_scale=20.0, spectrum_cutoff=0.5)
    acc.update(smooth, hr)
    s = acc.summary()
    assert s["hf_energy_ratio"] < 0.5  # interpolation cannot create the band above the LR Nyquist
    assert s["rmse_phys"] == pytest.approx(20.0 * np.sqrt(s["mse"]))


def test_rgb_to_y_matches_matlab_formula():
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], np.uint8)
    assert images.rgb_to_y(rgb).tolist() == [[235.0, 16.0, 81.0]]
