"""Fine and coarse pairs of the shallow-water data: the same flow simulated on two nested grids."""

import dataclasses

import h5py
import numpy as np
import pytest
import xarray as xr

from hpcvsr.data import swe
from hpcvsr.errors import UserError

from .conftest import assert_user_error, run_cli

PLACE = {"domain_seed": 2, "topography": 0.3, "forcing": 0.2}
PAIR_ATTRS = ("coarse_scale", "pair", "pair_of", "pair_comment")


def rel_rms(a, b) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


@pytest.fixture(scope="module")
def pair():
    p = swe.make_params((32, 32), 3, **PLACE)
    return swe.run_pair(p, 6, 2)


def swe_cli(out, *extra, size=(32, 48), frames=4, seed=3):
    return run_cli("hpcvsr.data", "swe", "--frames", str(frames), "--size", *map(str, size), "--seed", str(seed), "--out", str(out),
                   "--quiet", *map(str, extra))


def test_restriction_by_hand():
    """Staggering: u[j, i] on the west face of cell i, v[j, i] on the south face of cell j."""
    a = np.arange(16.0).reshape(4, 4)
    np.testing.assert_array_equal(swe.restrict_centres(a, 2), [[2.5, 4.5], [10.5, 12.5]])
    # coarse west face I = fine face 2I, mean over fine rows 2J, 2J + 1
    np.testing.assert_array_equal(swe.restrict_u(a, 2), [[(0 + 4) / 2, (2 + 6) / 2], [(8 + 12) / 2, (10 + 14) / 2]])
    # coarse south face J = fine face 2J, mean over fine columns 2I, 2I + 1
    np.testing.assert_array_equal(swe.restrict_v(a, 2), [[(0 + 1) / 2, (2 + 3) / 2], [(8 + 9) / 2, (10 + 11) / 2]])
    h, u, v = swe.restrict((a, a, a), 2)
    assert h.shape == u.shape == v.shape == (2, 2)
    rng = np.random.default_rng(0)
    fine = rng.normal(size=(12, 18))
    assert swe.restrict_centres(fine, 3).sum() * 9 == pytest.approx(fine.sum(), abs=1e-12)  # mass: cell area 9x
    # the volume flux through coarse face (J, I) is the sum over the fine faces on it
    u = rng.normal(size=(12, 18))
    assert swe.restrict_u(u, 3)[1, 2] * 3 == pytest.approx(u[3:6, 6].sum())


def test_coarse_run_starts_from_the_restricted_first_frame(pair):
    fine, coarse = pair
    p, cp = fine.params, coarse.params
    assert (cp.ny, cp.nx) == (16, 16) and cp.dx == 2 * p.dx
    assert dataclass_without_grid(cp) == dataclass_without_grid(p)
    f0 = [a[0].astype(np.float64) for a in (fine.h, fine.u, fine.v)]
    for name, want in zip(("h", "u", "v"), swe.restrict(f0, 2)):
        got = getattr(coarse, name)[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=4e-7 * np.abs(want).max(), err_msg=name)  # float32 round-off
    # the place is the fine one restricted, not one drawn at the coarse size
    np.testing.assert_allclose(coarse.bottom, swe.restrict_centres(swe.bottom(p), 2), atol=1e-6)
    assert not np.allclose(coarse.bottom, swe.bottom(cp), atol=1e-2)


def mass(seq: swe.SWESequence) -> np.ndarray:
    """Water volume per frame: sum of (H + h) times the cell area."""
    return (seq.params.depth + seq.h.astype(np.float64)).sum(axis=(1, 2)) * seq.params.dx**2


def dataclass_without_grid(p: swe.SWEParams) -> dict:
    return {k: v for k, v in dataclasses.asdict(p).items() if k not in ("nx", "ny")}


def test_coarse_run_conserves_the_fine_mass(pair):
    fine, coarse = pair
    assert coarse.mass_drift < 1e-12 and fine.mass_drift < 1e-12
    fine_mass, coarse_mass = mass(fine), mass(coarse)
    assert np.max(np.abs(coarse_mass - coarse_mass[0]) / coarse_mass[0]) < 1e-6  # float32 snapshots
    assert abs(coarse_mass[0] - fine_mass[0]) / fine_mass[0] < 1e-7


def test_coarse_run_drifts_from_the_degraded_fine_run(pair):
    """Measured at 32x32 -> 16x16, seed 3: 3e-8 at frame 0, about 0.25 at frame 5 (0.23 to 0.29 over seeds 0-2)."""
    fine, coarse = pair
    degraded = swe.restrict_centres(fine.h.astype(np.float64), 2)
    first, last = rel_rms(coarse.h[0], degraded[0]), rel_rms(coarse.h[-1], degraded[-1])
    assert first < 1e-6
    assert last > 1e-2, last
    assert np.array_equal(coarse.times, fine.times) and coarse.steps > 0


def test_fine_run_of_a_pair_is_the_plain_run(pair):
    fine, _ = pair
    plain = swe.run(fine.params, 6)
    for name in ("h", "u", "v", "vort", "times"):
        assert np.array_equal(getattr(fine, name), getattr(plain, name)), name
    assert fine.steps == plain.steps and fine.mass_drift == plain.mass_drift


def test_two_seeds_give_different_pairs():
    a = swe.run_pair(swe.make_params((32, 32), 1), 3, 2)
    b = swe.run_pair(swe.make_params((32, 32), 2), 3, 2)
    for x, y in zip(a, b):
        assert x.h.shape == y.h.shape and not np.allclose(x.h, y.h, atol=1e-3)


def test_cli_writes_a_nested_netcdf_pair(tmp_path):
    fine_path, plain_path = tmp_path / "fine.nc", tmp_path / "plain.nc"
    flags = ["--domain-seed", 2, "--topography", 0.3, "--forcing", 0.2]
    proc = swe_cli(fine_path, *flags, "--coarse-scale", 2)
    assert proc.returncode == 0, proc.stderr
    coarse_path = tmp_path / "fine_coarse2.nc"
    assert proc.stdout.count("wrote ") == 2 and str(coarse_path) in proc.stdout
    assert swe_cli(plain_path, *flags).returncode == 0
    with xr.open_dataset(fine_path, decode_times=False) as f, xr.open_dataset(coarse_path, decode_times=False) as c, \
            xr.open_dataset(plain_path, decode_times=False) as plain:
        assert dict(f.sizes) == {"time": 4, "y": 32, "x": 48} and dict(c.sizes) == {"time": 4, "y": 16, "x": 24}
        assert np.array_equal(f["time"].values, c["time"].values) and f["time"].attrs == c["time"].attrs
        np.testing.assert_allclose(c["x"].values, f["x"].values.reshape(-1, 2).mean(axis=1), rtol=1e-12)
        np.testing.assert_allclose(c["y"].values, f["y"].values.reshape(-1, 2).mean(axis=1), rtol=1e-12)
        assert c["x"].attrs["units"] == "m" == f["x"].attrs["units"]
        assert c.attrs["coarse_scale"] == 2 and c.attrs["pair_of"] == "fine.nc" and c.attrs["seed"] == f.attrs["seed"] == 3
        assert f.attrs["coarse_scale"] == 2 and f.attrs["pair"] == "fine_coarse2.nc"
        assert c.attrs["param_topography"] == 0.3 and c.attrs["dx"] == 2 * f.attrs["dx"]
        # the fine file is the plain one: every variable bitwise, every attribute but the pair's and the command
        for name in plain.variables:
            assert np.array_equal(f[name].values, plain[name].values) and f[name].attrs == plain[name].attrs, name
        same = {k: v for k, v in f.attrs.items() if k not in (*PAIR_ATTRS, "history")}
        assert same.keys() == {k for k in plain.attrs if k != "history"}
        assert all(np.array_equal(v, plain.attrs[k]) for k, v in same.items())


def test_cli_writes_an_hdf5_pair(tmp_path):
    fine_path, coarse_path, plain_path = tmp_path / "f.h5", tmp_path / "c.h5", tmp_path / "plain.h5"
    proc = swe_cli(fine_path, "--coarse-scale", 2, "--coarse-out", coarse_path)
    assert proc.returncode == 0, proc.stderr
    assert swe_cli(plain_path).returncode == 0
    with h5py.File(fine_path) as f, h5py.File(coarse_path) as c, h5py.File(plain_path) as plain:
        assert c["h"].shape == (4, 16, 24) and c.attrs["pair_of"] == "f.h5" and c.attrs["coarse_scale"] == 2
        assert f.attrs["pair"] == "c.h5" and c.attrs["seed"] == 3 and c.attrs["dx"] == 2 * f.attrs["dx"]
        for name in plain:
            assert f[name][:].tobytes() == plain[name][:].tobytes(), name
        assert {k: str(v) for k, v in f.attrs.items() if k not in PAIR_ATTRS} == {k: str(v) for k, v in plain.attrs.items()}


@pytest.mark.parametrize("case", ["indivisible", "existing coarse", "coarse-out alone"])
def test_cli_refuses_a_bad_pair_before_any_work(tmp_path, case):
    out = tmp_path / "fine.nc"
    existing = tmp_path / "old.nc"
    existing.write_text("keep me")
    args, fragments = {
        "indivisible": (["--coarse-scale", 5], ("must divide both grid sizes", "32 x 48")),
        "existing coarse": (["--coarse-scale", 2, "--coarse-out", existing], ("refusing to overwrite",)),
        "coarse-out alone": (["--coarse-out", tmp_path / "c.nc"], ("needs --coarse-scale",)),
    }[case]
    assert_user_error(swe_cli(out, *args), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.nc"] and existing.read_text() == "keep me"


def test_coarse_params_names_the_sizes():
    p = swe.make_params((32, 48), 0)
    with pytest.raises(UserError, match="32 x 48"):
        swe.coarse_params(p, 3)
    with pytest.raises(UserError, match=">= 2"):
        swe.coarse_params(p, 1)
    assert swe.coarse_params(p, 4).nx == 12
