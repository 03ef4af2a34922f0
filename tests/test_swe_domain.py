"""Place-locked (bottom topography) and daily (periodic forcing) structure of the shallow-water data, and its CF NetCDF output."""

import math

import h5py
import numpy as np
import pytest
import xarray as xr

from hpcvsr.cli.data import main
from hpcvsr.data import sources, swe
from hpcvsr.io.cf import CFArchive
from hpcvsr.io.sequences import open_archive

SMALL = {"frames": 4, "size": (16, 16)}


def corr(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_defaults_are_unchanged():
    """New options at their defaults, or without effect (flat, unforced), change nothing."""
    base = swe.generate(3, (16, 16), 1)
    same = swe.generate(3, (16, 16), 1, topography=0.0, forcing=0.0, domain_seed=0, forcing_period_frames=24.0)
    other_place = swe.generate(3, (16, 16), 1, topography=0.0, forcing=0.0, domain_seed=5, interval_hours=3.0, start_date="2010-06-01 12:00:00")
    for seq in (same, other_place):
        for name in ("h", "u", "v", "vort"):
            assert np.array_equal(getattr(base, name), getattr(seq, name))
        assert seq.steps == base.steps and seq.bottom is None


def test_bottom_is_fixed_by_the_domain_seed():
    a = swe.generate(seed=1, domain_seed=4, topography=0.3, **SMALL)
    b = swe.generate(2, (16, 16), seed=2, domain_seed=4, topography=0.3)
    c = swe.generate(seed=1, domain_seed=5, topography=0.3, **SMALL)
    assert a.bottom.dtype == np.float32 and a.bottom.shape == (16, 16)
    assert np.array_equal(a.bottom, b.bottom) and not np.allclose(a.bottom, c.bottom)
    assert not np.allclose(a.h[:2], b.h)  # the flow still follows the sequence seed
    b64 = swe.bottom(a.params)
    assert np.array_equal(a.bottom, b64.astype(np.float32))
    assert np.abs(b64).max() == pytest.approx(0.3 * a.params.depth) and abs(b64.mean()) < 1e-12
    assert np.std(b64 - np.roll(b64, 1, axis=1)) > 0.2 * np.std(b64)  # detail near the grid scale
    assert not swe.bottom(swe.make_params((16, 16), 0)).any()


def test_mass_is_conserved_with_topography_and_forcing():
    seq = swe.generate(40, (32, 32), seed=3, domain_seed=2, topography=0.3, forcing=0.2)
    p = seq.params
    assert seq.mass_drift < 1e-10
    total = (p.depth + seq.h.astype(np.float64)).sum(axis=(1, 2))
    assert np.max(np.abs(total - total[0]) / total[0]) < 1e-6  # float32 snapshots
    for topo in (0.3, 0.0):
        q = swe.forcing_pattern(swe.make_params((32, 32), 0, topography=topo, domain_seed=2))
        assert abs(q.sum()) < 1e-12 * q.size and np.abs(q).max() == pytest.approx(1.0)
    solver = swe.ShallowWater(p)
    h, u, v = np.zeros((3, 32, 32))
    dh, _, _ = solver.rhs(h, u, v, t=p.forcing_period / 4)  # the source at its peak, nothing else
    assert np.abs(dh).max() > 0 and abs(dh.sum()) < 1e-12 * np.abs(dh).sum()


def test_forcing_phase_follows_the_calendar_hour():
    p = swe.make_params((16, 16), 0, forcing=0.2, start_date="2000-01-01 06:00:00")
    assert p.forcing_phase(0.0) == pytest.approx(math.pi / 2)
    assert p.forcing_phase(24 * p.output_interval) == pytest.approx(math.pi / 2 + 2 * math.pi)
    p3 = swe.make_params((16, 16), 0, forcing=0.2, interval_hours=3.0, forcing_period_frames=8.0, start_date="2000-01-01 06:00:00")
    assert p3.forcing_phase(0.0) == pytest.approx(math.pi / 2)


def test_forcing_leaves_a_daily_place_locked_signal():
    """Hourly frames over three days: h at hour 12 (phase pi, where the accumulated source peaks) minus hour 0 looks like Q."""
    hours = np.arange(72) % 24
    for forcing, lo, hi in ((0.2, 0.5, 1.0), (0.0, -0.3, 0.3)):
        seq = swe.generate(72, (32, 32), seed=1, domain_seed=7, topography=0.3, forcing=forcing)
        swing = seq.h[hours == 12].mean(axis=0) - seq.h[hours == 0].mean(axis=0)
        assert lo < corr(swing, swe.forcing_pattern(seq.params)) < hi


def test_cli_writes_cf_netcdf_and_a_static_orography(tmp_path):
    out, static = tmp_path / "s.nc", tmp_path / "static.nc"
    rc = main(["swe", "--out", str(out), "--frames", "6", "--size", "32", "32", "--seed", "1", "--domain-seed", "3", "--topography", "0.3",
               "--forcing", "0.2", "--static-out", str(static), "--quiet"])
    assert rc == 0
    seq = swe.generate(6, (32, 32), seed=1, domain_seed=3, topography=0.3, forcing=0.2)
    with xr.open_dataset(out, decode_times=False) as ds:
        assert dict(ds.sizes) == {"time": 6, "y": 32, "x": 32}
        assert ds["time"].attrs["units"] == "hours since 2000-01-01 00:00:00" and ds["time"].attrs["calendar"] == "standard"
        assert ds["time"].dtype == np.float64 and ds["time"].values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        assert {k: ds[k].attrs["units"] for k in ("h", "u", "v", "vort")} == swe.UNITS
        assert all(ds[k].dtype == np.float32 and ds[k].dims == ("time", "y", "x") for k in ("h", "u", "v", "vort"))
        assert ds["x"].attrs["standard_name"] == "projection_x_coordinate" and ds["y"].attrs["units"] == "m"
        assert ds["x"].values[0] == pytest.approx(0.5 * seq.params.dx)
        assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["param_topography"] == 0.3 and ds.attrs["param_domain_seed"] == 3
        assert "python -m hpcvsr.data swe --out" in ds.attrs["history"]
        assert np.array_equal(ds["h"].values, seq.h)
        assert np.array_equal(ds["u"].values, 0.5 * (seq.u + np.roll(seq.u, -1, axis=2)))
        assert np.array_equal(ds["v"].values, 0.5 * (seq.v + np.roll(seq.v, -1, axis=1)))
    with xr.open_dataset(static) as st:
        oro = st["orography"]
        assert oro.dims == ("y", "x") and oro.attrs["units"] == "m" and oro.attrs["standard_name"] == "surface_altitude"
        assert np.array_equal(st["x"].values, (np.arange(32) + 0.5) * seq.params.dx)
        assert np.array_equal(oro.values, swe.bottom(seq.params).astype(np.float32))
    arc = open_archive(str(out), "h")
    assert isinstance(arc, CFArchive) and arc.shape == (6, 32, 32) and arc.cf_time
    hour = 2 * np.pi * np.arange(6) / 24
    np.testing.assert_allclose(arc.time_features(0, 6)[:, :2], np.stack([np.sin(hour), np.cos(hour)], axis=1), atol=1e-6)
    np.testing.assert_array_equal(arc.read(0, 6), seq.h)
    arc.close()
    oro_arc = open_archive(str(static), "orography")  # a static field: read as one frame
    assert np.array_equal(oro_arc.read(0, 1)[0], swe.bottom(seq.params).astype(np.float32))


def test_cli_h5_output_keeps_its_layout_with_the_new_options(tmp_path):
    out, static = tmp_path / "s.h5", tmp_path / "st.nc"
    assert main(["swe", "--out", str(out), "--frames", "3", "--size", "16", "16", "--topography", "0.2", "--forcing", "0.1",
                 "--start-date", "2001-02-03 04:00:00", "--static-out", str(static), "--quiet"]) == 0
    with h5py.File(out) as f:
        assert set(f.keys()) == {"h", "u", "v", "vort"} and f["h"].shape == (3, 16, 16) and f["h"].chunks == (1, 16, 16)
        assert f.attrs["param_topography"] == 0.2 and f.attrs["param_start_date"] == "2001-02-03 04:00:00"
    assert static.exists()


def test_training_call_is_unchanged():
    built = sources.generate("swe", 2, [16, 16], 4)
    assert built.variables["h"].shape == (2, 16, 16) and built.attrs["param_topography"] == 0.0 and built.dataset is not None
    with pytest.raises(sources.UserError, match="only shallow-water"):
        sources.generate("phantom", 2, [16, 16], 0, topography=0.3)


def test_a_run_that_runs_dry_is_a_user_error():
    with pytest.raises(sources.UserError, match="total depth reached zero in the initial state"):
        sources.generate("swe", 2, [32, 32], 1, topography=0.95, domain_seed=1)


def _fails(args, capsys, match: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hpcvsr: error:") and match in err[0], err


def test_cli_errors_before_any_work(tmp_path, capsys, monkeypatch):
    def no_run(*a, **k):
        raise AssertionError("generated although the arguments were wrong")

    monkeypatch.setattr(swe, "run", no_run)
    base = ["swe", "--frames", "3", "--size", "16", "16", "--quiet"]
    nc = str(tmp_path / "s.nc")
    _fails([*base, "--out", nc, "--static-out", str(tmp_path / "st.nc")], capsys, "needs --topography > 0")
    existing = tmp_path / "old.nc"
    existing.write_text("keep me")
    _fails([*base, "--out", str(existing)], capsys, "refusing to overwrite")
    _fails([*base, "--out", nc, "--topography", "0.3", "--static-out", str(existing)], capsys, "refusing to overwrite")
    _fails([*base, "--out", nc, "--topography", "0.3", "--static-out", nc], capsys, "same file")
    _fails([*base, "--out", nc, "--topography", "0.3", "--static-out", str(tmp_path / "st.h5")], capsys, "give a .nc path")
    _fails([*base, "--out", nc, "--topography", "1.5"], capsys, "topography must be in [0, 1)")
    _fails([*base, "--out", nc, "--forcing-period", "0"], capsys, "forcing period must be positive")
    _fails([*base, "--out", nc, "--start-date", "yesterday"], capsys, "start date must look like")
    _fails(["phantom", "--out", nc, "--topography", "0.3"], capsys, "only 'swe' takes")
    assert existing.read_text() == "keep me" and not (tmp_path / "s.nc").exists()
