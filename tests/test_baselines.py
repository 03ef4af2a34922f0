"""Quantile-mapping baseline: it undoes a known distortion, keeps NaN, and is xsdba's EQM, nothing hand-written."""

import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from hpcvsr.errors import UserError
from hpcvsr.training.baselines import QuantileMapping

# any warning the module does not silence on purpose fails the test
pytestmark = pytest.mark.filterwarnings("error")

Q = [0.05, 0.5, 0.95]


def distorted(seed: int, shape=(60, 16, 16)):
    """fine_coarsened ~ N(0, 1); the coarse run a monotone distortion of it plus small noise."""
    rng = np.random.default_rng(seed)
    fine = rng.standard_normal(shape).astype(np.float32)
    coarse = (0.5 * fine + 0.3 + 0.05 * rng.standard_normal(shape)).astype(np.float32)
    return coarse, fine


@pytest.fixture(scope="module")
def fitted():
    pytest.importorskip("xsdba")
    coarse, fine = distorted(0)
    return QuantileMapping.fit(coarse, fine, units="m"), coarse, fine


def test_mapped_distribution_matches_fine(fitted):
    # measured (fit seed 0): largest quantile gap mapped 0.0027, raw 1.109; over five seeds mapped <= 0.0027, raw >= 1.109
    qm, coarse, fine = fitted
    mapped = qm.apply(coarse)
    gap_mapped = np.abs(np.quantile(mapped, Q) - np.quantile(fine, Q))
    gap_raw = np.abs(np.quantile(coarse, Q) - np.quantile(fine, Q))
    assert gap_mapped.max() < 0.01, gap_mapped
    assert gap_raw.max() > 1.0 and gap_mapped.max() < 0.05 * gap_raw.max()


def test_held_out_closer_to_truth(fitted):
    # measured (fit seed 0, held-out seed 1): quantile gap 0.0136, RMSE raw 0.586, mapped 0.103;
    # over five seed pairs: gap <= 0.026, RMSE raw 0.583-0.588, mapped 0.103-0.104
    qm, _, _ = fitted
    coarse, fine = distorted(1)
    mapped = qm.apply(coarse)
    assert np.abs(np.quantile(mapped, Q) - np.quantile(fine, Q)).max() < 0.05
    rmse_raw = np.sqrt(np.mean((coarse - fine) ** 2))
    rmse_mapped = np.sqrt(np.mean((mapped - fine) ** 2))
    assert rmse_raw > 0.5 and rmse_mapped < 0.15 and rmse_mapped < 0.3 * rmse_raw, (rmse_raw, rmse_mapped)


def test_nan_shape_dtype_and_chunks(fitted):
    qm, _, _ = fitted
    coarse, _ = distorted(2, shape=(7, 16, 16))
    coarse = coarse.astype(np.float64)
    coarse[0, 0, 0] = coarse[3, 5, :] = np.nan
    coarse[6] = np.nan  # a frame with nothing to map
    out = qm.apply(coarse)
    assert out.shape == coarse.shape and out.dtype == np.float32
    assert np.array_equal(np.isnan(out), np.isnan(coarse))
    # one frame per call to xsdba gives the same answer as all frames at once
    np.testing.assert_array_equal(qm.apply(coarse, chunk_cells=1), out)


def test_fit_ignores_nan_cells():
    pytest.importorskip("xsdba")
    coarse, fine = distorted(3, shape=(10, 8, 8))
    coarse[0], fine[1, :4] = np.nan, np.nan
    qm = QuantileMapping.fit(coarse, fine)
    assert qm.samples == 640 - 64 - 32 and qm.units == "1"
    # the NaN cells of the fit did not leak into the mapping
    assert np.isfinite(qm.adjustment.ds.af).all() and np.isfinite(qm.adjustment.ds.hist_q).all()


def test_subsample_reproducible_and_bounded():
    pytest.importorskip("xsdba")
    coarse, fine = distorted(4)
    coarse[:5] = np.nan
    a = QuantileMapping.fit(coarse, fine, max_samples=5000, seed=3)
    b = QuantileMapping.fit(coarse, fine, max_samples=5000, seed=3)
    c = QuantileMapping.fit(coarse, fine, max_samples=5000, seed=4)
    assert a.samples == b.samples == c.samples == 5000
    np.testing.assert_array_equal(a.adjustment.ds.hist_q, b.adjustment.ds.hist_q)
    np.testing.assert_array_equal(a.adjustment.ds.af, b.adjustment.ds.af)
    assert not np.array_equal(a.adjustment.ds.hist_q, c.adjustment.ds.hist_q)
    held, _ = distorted(5, shape=(3, 16, 16))
    np.testing.assert_array_equal(a.apply(held), b.apply(held))
    # below the bound every valid cell is used
    assert QuantileMapping.fit(coarse, fine).samples == 55 * 16 * 16


@pytest.mark.parametrize("kind", ["+", "*"])
def test_equals_xsdba_eqm(kind):
    xsdba = pytest.importorskip("xsdba")
    rng = np.random.default_rng(6)
    fine = rng.gamma(2.0, 1.5, 400)
    coarse = 0.7 * fine**1.2 + 0.2 + 0.1 * rng.random(400)
    # held-out values inside and beyond the training range (the constant extrapolation)
    sim = np.concatenate([0.7 * rng.gamma(2.0, 1.5, 50) ** 1.2 + 0.2, [0.05, coarse.max() * 1.5]])
    qm = QuantileMapping.fit(coarse[:, None, None], fine[:, None, None], units="mm/d", quantiles=20, kind=kind)
    got = qm.apply(sim[:, None, None])[:, 0, 0]

    def da(values):
        time = pd.date_range("1990-01-01", periods=len(values), freq="D")
        return xr.DataArray(values, dims="time", coords={"time": time}, attrs={"units": "mm/d"})

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="keys will default to True in jsonpickle", category=DeprecationWarning)  # the one the module silences
        eqm = xsdba.EmpiricalQuantileMapping.train(da(fine), da(coarse), nquantiles=20, kind=kind, group="time")
        want = eqm.adjust(da(sim), interp="linear", extrapolation="constant").values
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6, atol=1e-6)
    assert np.abs(want - sim).max() > 0.1  # the mapping is not the identity


def test_user_errors():
    pytest.importorskip("xsdba")
    coarse, fine = distorted(7, shape=(4, 8, 8))
    with pytest.raises(UserError, match="same shape"):
        QuantileMapping.fit(coarse, fine[:, :4])
    with pytest.raises(UserError, match="no cell is valid"):
        QuantileMapping.fit(np.full_like(coarse, np.nan), fine)
    left, right = coarse.copy(), fine.copy()
    left[..., :4], right[..., 4:] = np.nan, np.nan  # each run valid only where the other is missing
    with pytest.raises(UserError, match="no cell is valid"):
        QuantileMapping.fit(left, right)
    with pytest.raises(UserError, match="kind"):
        QuantileMapping.fit(coarse, fine, kind="x")
    with pytest.raises(UserError, match="units"):
        QuantileMapping.fit(coarse, fine, units="not_a_unit")


def test_missing_xsdba(monkeypatch):
    monkeypatch.setitem(sys.modules, "xsdba", None)  # makes `import xsdba` raise ImportError
    coarse, fine = distorted(8, shape=(2, 4, 4))
    with pytest.raises(UserError, match=r"pip install 'hpcvsr\[baselines\]'"):
        QuantileMapping.fit(coarse, fine)
