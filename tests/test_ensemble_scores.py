import math

import numpy as np
import pytest
import torch
from scores.spatial import fss_2d_single_field

from hpcvsr.ops.ensemble import EnsembleSums, mae_as_crps


def _cells(members: list, obs: list) -> tuple[torch.Tensor, torch.Tensor]:
    """One (1, M, 1, n) ensemble and (1, 1, n) truth from per-cell member lists and observations."""
    ens = torch.tensor(members, dtype=torch.float64).T[None, :, None, :]
    return ens, torch.tensor(obs, dtype=torch.float64)[None, None, :]


def _same(a, b, rel=1e-12):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k], rel)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y, rel)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == pytest.approx(b, rel=rel, abs=1e-14)


def test_crps_hand_computed():
    # CRPS = mean|x - y| - 0.5 mean|x - x'| (over all 9 ordered member pairs)
    # [0, 1, 2] vs 0.5:  (0.5 + 0.5 + 1.5)/3 - 0.5 * 8/9 = 7/18
    # [0, 0, 0] vs 1:    1 - 0 = 1
    # [1, 2, 3] vs 4:    (3 + 2 + 1)/3 - 0.5 * 8/9 = 14/9
    # [-1, 0, 1] vs 0:   (1 + 0 + 1)/3 - 0.5 * 8/9 = 2/9
    # mean = (7/18 + 18/18 + 28/18 + 4/18) / 4 = 57/72
    ens, truth = _cells([[0, 1, 2], [0, 0, 0], [1, 2, 3], [-1, 0, 1]], [0.5, 1, 4, 0])
    acc = EnsembleSums(3)
    acc.update(ens, truth)
    s = acc.summary()
    assert s["crps"] == pytest.approx(57 / 72, rel=1e-12)
    assert s["cells"] == 4
    # ensemble means 1, 0, 2, 0 -> errors 0.5, -1, -2, 0
    assert s["mae"] == pytest.approx(3.5 / 4, rel=1e-12)
    assert s["rmse"] == pytest.approx(math.sqrt(5.25 / 4), rel=1e-12)
    # unbiased variances 1, 0, 1, 1
    assert s["spread"] == pytest.approx(math.sqrt(3 / 4), rel=1e-12)
    acc10 = EnsembleSums(3, unit_scale=10.0)
    acc10.update(ens, truth, offset=3.0)
    s10 = acc10.summary()
    for key in ("crps", "mae", "rmse", "spread"):
        assert s10[key] == pytest.approx(10 * s[key], rel=1e-12), key
    assert s10["spread_skill"] == pytest.approx(s["spread_skill"], rel=1e-12)


def test_rank_histogram_hand_computed_with_tie():
    # members [1, 2, 3] in every cell; ranks 1..4
    # obs 0 (below all) -> rank 1; obs 2.5 (between 2nd and 3rd) -> rank 3; obs 5 (above all) -> rank 4;
    # obs 2 (equal to the 2nd member) -> ranks 2 and 3, half each
    # counts [1, 0.5, 1.5, 1] / 4 cells
    ens, truth = _cells([[1, 2, 3]] * 4, [0, 2.5, 5, 2])
    acc = EnsembleSums(3)
    acc.update(ens, truth)
    s = acc.summary()
    assert s["rank_histogram"] == pytest.approx([0.25, 0.125, 0.375, 0.25], abs=1e-12)
    # 0.5 * (|0.25-0.25| + |0.125-0.25| + |0.375-0.25| + |0.25-0.25|)
    assert s["rank_flatness"] == pytest.approx(0.125, abs=1e-12)
    assert sum(acc.sums[acc.slices["rank"]].tolist()) == pytest.approx(4.0)


def test_spread_skill_calibrated_and_under_dispersed():
    g = torch.Generator().manual_seed(0)
    k, m, h, w = 4, 4, 32, 32  # few members: the finite-ensemble correction (x1.12) matters
    mu = 3.0 * torch.randn(k, 1, h, w, generator=g, dtype=torch.float64)
    truth = (mu + torch.randn(k, 1, h, w, generator=g, dtype=torch.float64))[:, 0]
    calibrated = mu + torch.randn(k, m, h, w, generator=g, dtype=torch.float64)
    narrow = mu + 0.5 * torch.randn(k, m, h, w, generator=g, dtype=torch.float64)
    good, bad = EnsembleSums(m), EnsembleSums(m)
    good.update(calibrated, truth)
    bad.update(narrow, truth)
    sg, sb = good.summary(), bad.summary()
    assert sg["spread_skill"] == pytest.approx(1.0, abs=0.04)
    assert sb["spread_skill"] < 0.7
    assert sb["rank_flatness"] > 2 * sg["rank_flatness"]  # U-shaped histogram
    assert sg["rank_flatness"] < 0.05


def test_one_member_crps_is_mae():
    g = torch.Generator().manual_seed(1)
    truth = torch.randn(3, 16, 16, generator=g, dtype=torch.float64)
    field = truth + 0.3 * torch.randn(3, 16, 16, generator=g, dtype=torch.float64)
    truth[0, :4, :4] = float("nan")
    acc = EnsembleSums(1, unit_scale=2.0)
    acc.update(field[:, None], truth)
    s = acc.summary()
    assert s["crps"] == pytest.approx(s["mae"], rel=1e-12)
    assert s["crps"] == pytest.approx(2.0 * mae_as_crps(field, truth), rel=1e-12)
    assert math.isnan(s["spread"]) and math.isnan(s["spread_skill"])


def test_missing_cells_count_nowhere():
    g = torch.Generator().manual_seed(2)
    ens = torch.randn(2, 4, 12, 12, generator=g, dtype=torch.float64)
    truth = torch.randn(2, 12, 12, generator=g, dtype=torch.float64)
    holed = truth.clone()
    holed[:, :, 9:] = float("nan")
    ens_holed = ens.clone()
    ens_holed[0, :, :, 9:] = float("nan")  # members missing there too is fine
    ens_holed[1, :, :, 9:] = 1e6  # values under missing truth do not count
    a, b = EnsembleSums(4, spectrum_cutoff=0.5), EnsembleSums(4, spectrum_cutoff=0.5)
    a.update(ens_holed, holed)
    b.update(ens[..., :9], truth[..., :9])
    sa, sb = a.summary(), b.summary()
    for key in ("crps", "mae", "rmse", "spread", "spread_skill", "rank_histogram", "rank_flatness", "cells"):
        _same(sa[key], sb[key])
    assert sa["cells"] == 2 * 12 * 9
    # frames with a missing cell are left out of spectra and FSS
    assert math.isnan(sa["hf_energy_ratio"]) and all(math.isnan(p) for p in sa["spectrum"]["truth"])
    part = holed.clone()
    part[1] = truth[1]
    ens_part = ens_holed.clone()
    ens_part[1] = ens[1]
    c, d = EnsembleSums(4, spectrum_cutoff=0.5), EnsembleSums(4, spectrum_cutoff=0.5)
    c.update(ens_part, part)
    d.update(ens[1:], truth[1:])
    _same(c.summary()["spectrum"], d.summary()["spectrum"])
    _same(c.summary()["hf_energy_ratio"], d.summary()["hf_energy_ratio"])


def test_sums_of_halves_add_up():
    g = torch.Generator().manual_seed(3)
    ens = torch.randn(6, 5, 16, 16, generator=g, dtype=torch.float64)
    truth = torch.randn(6, 16, 16, generator=g, dtype=torch.float64)
    truth[4, 2:5, 3:7] = float("nan")
    opts = {"spectrum_cutoff": 0.5, "thresholds": (0.0, 1.0), "fss_window": 3}
    whole, first, second = EnsembleSums(5, **opts), EnsembleSums(5, **opts), EnsembleSums(5, **opts)
    whole.update(ens, truth)
    first.update(ens[:2], truth[:2])
    second.update(ens[2:], truth[2:])
    reduced = first.sums + second.sums  # what the all_reduce computes
    first.merge(second)
    s = whole.summary()
    _same(s, first.summary())
    _same(s, whole.summary(reduced))
    assert not any(math.isnan(s[key]) for key in ("crps", "spread_skill", "rank_flatness", "hf_energy_ratio", "hf_energy_ratio_mean"))
    assert set(s["fss"]) == {"0", "1"} and not any(math.isnan(v) for v in s["fss"].values())


def test_fss_identical_and_shifted_blob():
    truth = np.zeros((2, 16, 16))
    truth[0, 4:8, 4:8] = 1.0
    shifted = np.zeros((16, 16))
    shifted[5:9, 6:10] = 1.0
    ens = np.stack([np.stack([truth[0], shifted]), np.zeros((2, 16, 16))])  # frame 1: no event anywhere, left out
    same = EnsembleSums(2, thresholds=(0.5,), fss_window=3)
    same.update(torch.from_numpy(truth)[:, None].expand(2, 2, 16, 16), torch.from_numpy(truth))
    assert same.summary()["fss"] == {"0.5": pytest.approx(1.0)}
    acc = EnsembleSums(2, thresholds=(0.5,), fss_window=3)
    acc.update(torch.from_numpy(ens), torch.from_numpy(truth))
    direct = float(fss_2d_single_field(shifted, truth[0], event_threshold=0.5, window_size=(3, 3)))
    assert 0.0 < direct < 1.0
    assert acc.summary()["fss"]["0.5"] == pytest.approx((1.0 + direct) / 2, rel=1e-12)


def test_hf_energy_ratio_and_spectrum():
    g = torch.Generator().manual_seed(4)
    x = torch.arange(32, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * 4 * x / 32)[None, :].expand(32, 32)  # k = 4/16 of Nyquist
    truth = wave[None] + 0.01 * torch.randn(2, 32, 32, generator=g, dtype=torch.float64)
    acc = EnsembleSums(3, spectrum_cutoff=0.5, unit_scale=2.0)
    acc.update(truth[:, None].expand(2, 3, 32, 32), truth)
    s = acc.summary()
    assert s["hf_energy_ratio"] == pytest.approx(1.0, rel=1e-12)
    assert s["hf_energy_ratio_mean"] == pytest.approx(1.0, rel=1e-12)
    spec = s["spectrum"]
    assert math.isnan(spec["truth"][0])  # no mode of a 32 x 32 grid has 0 < k <= 1/32
    assert spec["members"] == pytest.approx(spec["truth"], rel=1e-12, nan_ok=True)
    assert spec["mean"] == pytest.approx(spec["truth"], rel=1e-12, nan_ok=True)
    peak = int(np.nanargmax(spec["truth"]))
    assert peak / 32 < 0.25 <= (peak + 1) / 32  # the ring that holds k = 0.25
    assert spec["k"][peak] == pytest.approx((peak + 0.5) / 32)


def test_empty_is_nan_not_an_error():
    s = EnsembleSums(4, spectrum_cutoff=0.5, thresholds=(1.0,)).summary()
    assert s["cells"] == 0
    assert all(math.isnan(s[k]) for k in ("crps", "mae", "rmse", "spread", "spread_skill", "rank_flatness", "hf_energy_ratio"))
    assert math.isnan(s["fss"]["1"]) and len(s["rank_histogram"]) == 5
    acc = EnsembleSums(2)
    acc.update(torch.zeros(1, 2, 4, 4), torch.full((1, 4, 4), float("nan")))
    assert acc.summary()["cells"] == 0 and math.isnan(acc.summary()["crps"])
