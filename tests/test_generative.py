"""The generative stage (pipeline 2d_3d_gen): counter-based noise, the fair CRPS, and ensembles of a
small trained run: reproducible, independent of tiles, every member consistent with its input."""

import json

import numpy as np
import pytest
import torch

from hpcvsr.errors import UserError
from hpcvsr.models.generative import fair_crps
from hpcvsr.ops import degrade as dg
from hpcvsr.ops import noise

from .conftest import run_cli

GEN_TINY = ["--set", "pipeline=2d_3d_gen", "--set", "data.frames=24", "--set", "data.size=[64,64]", "--set", "degrade.method=block_mean",
            "--set", "degrade.constrain=true", "--set", "train2d.epochs=1", "--set", "train2d.patches_per_epoch=64", "--set", "train2d.patch=24",
            "--set", "train3d.epochs=1", "--set", "train3d.patches_per_epoch=16", "--set", "train3d.patch=24", "--set", "train3d.batch_size=4",
            "--set", "traingen.epochs=2", "--set", "traingen.patches_per_epoch=64", "--set", "traingen.patch=24", "--set", "threads=1",
            "--set", "condition.location_channels=1"]  # every stage conditioned on place, the generator too


def _splitmix_reference(seed, member, channel, frame, row, col):
    """The noise key of one pixel in numpy uint64, written from the SplitMix64 definition."""
    def mix(z):
        z = np.uint64(z)
        with np.errstate(over="ignore"):
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    key = np.uint64(0)
    for v in (seed, member, channel, frame, row, col):
        with np.errstate(over="ignore"):
            key = mix(key + np.uint64(v + 1) * np.uint64(0x9E3779B97F4A7C15))
    return int(key >> np.uint64(40))


def test_noise_is_splitmix64_of_the_global_pixel_and_independent_of_grouping():
    z = noise.normal(7, 3, 2, [10, 11], range(4, 9), range(20, 26))
    from scipy.special import ndtri

    for f, c, r, q in ((0, 0, 0, 0), (1, 1, 4, 5), (0, 1, 2, 3)):
        u = (_splitmix_reference(7, 3, c, 10 + f, 4 + r, 20 + q) + 0.5) / 2**24
        assert z[f, c, r, q].item() == pytest.approx(float(ndtri(u)), abs=1e-6)
    part = noise.normal(7, 3, 2, [11], [6, 7], [25, 20])  # another grouping, another order
    assert torch.equal(part[0, :, :, 0], z[1, :, 2:4, 5]) and torch.equal(part[0, :, :, 1], z[1, :, 2:4, 0])
    assert not torch.equal(noise.normal(8, 3, 2, [10], range(4), range(4)), noise.normal(7, 3, 2, [10], range(4), range(4)))
    assert not torch.equal(noise.normal(7, 4, 2, [10], range(4), range(4)), noise.normal(7, 3, 2, [10], range(4), range(4)))
    big = noise.normal(0, 0, 1, range(4), range(128), range(128)).double()
    assert abs(big.mean().item()) < 0.01 and abs(big.std().item() - 1) < 0.01


def test_fair_crps_hand_computed_and_minimal_at_the_true_spread():
    # members [0, 1, 2] against 0.5: mean |x - y| = 2.5 / 3; pairs sum |x - x'| = 8 over 2 M (M - 1) = 12
    assert fair_crps(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([0.5])).item() == pytest.approx(2.5 / 3 - 8 / 12)
    assert fair_crps(torch.tensor([[0.0, 1.0], [5.0, 5.0]]), torch.tensor([0.0, float("nan")])).item() == pytest.approx(0.5 - 2 / 4)
    g = torch.Generator().manual_seed(0)
    y = torch.randn(20000, generator=g)
    scores = {s: fair_crps(s * torch.randn(20000, 4, generator=g), y).item() for s in (0.7, 1.0, 1.4)}
    assert scores[1.0] < scores[0.7] and scores[1.0] < scores[1.4]


def test_conditioned_generator_reads_its_place_and_hour_and_tiles_exactly():
    from hpcvsr.io.checkpoint import model_entry
    from hpcvsr.models import build, from_entry
    from hpcvsr.models.conditioning import Where, set_static

    torch.manual_seed(0)
    s, H, W = 2, 32, 40
    gen = build("residual_gen", s, grid=[H, W], static=1, location=2, time=True, method="block_mean", constrain=True,
                lo=[-10.0], hi=[None], intensity=True)  # bounded below: the residual also grows with the intensity
    assert gen.takes_where and gen.takes_static
    for p in gen.head.parameters():  # a head away from zero, so that every input reaches the members
        torch.nn.init.normal_(p, std=0.1)
    set_static(gen, torch.linspace(-1, 1, H * W).reshape(1, H, W))
    lr = torch.randn(2, 1, H // s, W // s)
    det = dg.upscale(lr, s)
    times = torch.tensor([[[0.0, 1.0, 0.5, 0.5]], [[1.0, 0.0, -0.5, 0.5]]])
    z = noise.fields(3, 2, gen.noise, [0, 1], range(H), range(W))
    with torch.no_grad():
        whole = gen(det, lr, z, Where.at(2, times=times))
        assert whole.shape == (2, 2, 1, H, W)
        # a tile at (8, 12) with the noise of its own global pixels gives the frame's values away from its border
        r0, c0, th, tw = 8, 12, 16, 20
        tile = gen(det[..., r0:r0 + th, c0:c0 + tw], lr[..., r0 // s:(r0 + th) // s, c0 // s:(c0 + tw) // s],
                   noise.fields(3, 2, gen.noise, [0, 1], range(r0, r0 + th), range(c0, c0 + tw)), Where.at(2, r0, c0, times=times))
        m = gen.radius + 2 * s
        np.testing.assert_allclose(tile[..., m:-m, m:-m], whole[..., r0 + m:r0 + th - m, c0 + m:c0 + tw - m], atol=1e-5)
        # the same tile read at another place or another hour gives other members
        assert not torch.allclose(gen(det[..., :th, :tw], lr[..., :th // s, :tw // s], z[..., :th, :tw], Where.at(2, r0, c0, times=times)),
                                  gen(det[..., :th, :tw], lr[..., :th // s, :tw // s], z[..., :th, :tw], Where.at(2, 0, 0, times=times)))
        assert not torch.allclose(gen(det, lr, z, Where.at(2, times=times.flip(0))), whole)
        # rebuilt from its file entry: the same members, the covariates with it
        again = from_entry(model_entry(gen))
        assert torch.equal(again(det, lr, z, Where.at(2, times=times)), whole)
        with pytest.raises(RuntimeError, match="Where"):
            gen(det, lr, z)


def test_generator_of_a_field_bounded_below_scales_its_residual_with_the_intensity():
    from hpcvsr.pipeline import build, config

    cfg = config.load(None, ["pipeline=2d_3d_gen", "degrade.method=block_mean", "degrade.constrain=true"])
    assert build.build_gen(cfg, bounds={"lo": [0.0], "hi": [None]}).intensity  # rain: bounded at 0
    assert not build.build_gen(cfg, bounds={"lo": [None], "hi": [None]}).intensity  # water height: unbounded
    assert not build.build_gen(cfg).intensity
    off = config.load(None, ["pipeline=2d_3d_gen", "degrade.method=block_mean", "modelgen.kwargs={intensity: false}"])
    assert not build.build_gen(off, bounds={"lo": [0.0], "hi": [None]}).intensity  # the user's choice wins
    on = config.load(None, ["pipeline=2d_3d_gen", "modelgen.kwargs={intensity: true}"])
    with pytest.raises(UserError, match="lower bound"):
        build.build_gen(on, bounds={"lo": [None], "hi": [None]})


def test_doctests_and_the_lag_2_differences_score_the_coarse_cells_scale():
    import doctest

    from hpcvsr.models import generative
    from hpcvsr.models.generative import spatial_crps

    assert doctest.testmod(generative).failed == 0
    # members of a period-4 pattern (the scale of a coarse cell at x4) and smooth members, each pixel 1 away
    # from the truth: the same per-pixel score; lag 1 sees the pattern's edges, lag 2 adds its every pixel
    y = torch.zeros(1, 8, 8)
    period4 = torch.tensor([[1.0, 1.0, -1.0, -1.0] * 2] * 8).expand(1, 2, 8, 8)
    smooth = torch.ones(1, 2, 8, 8)
    lag1, lag12 = (spatial_crps(period4, y, lags) - spatial_crps(smooth, y, lags) for lags in ((1,), (1, 2)))
    assert 0 < lag1 < lag12


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    proc = run_cli("hpcvsr.train", "--run-dir", str(d / "R"), *GEN_TINY, cwd=str(d))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return d


def test_run_holds_the_generative_stage_and_scores_its_members(gen_run):
    R = gen_run / "R"
    assert (R / "ckpt_gen.pt").exists()
    m = json.load(open(R / "metrics.json"))
    row = m["metrics"]["test"]["2d_3d_gen"]
    for key in ("crps", "spread_skill", "hf_energy_ratio", "hf_energy_ratio_mean", "fss", "rank_histogram", "psnr", "rmse_phys"):
        assert key in row, key
    assert row["members"] == 16 and len(row["rank_histogram"]) == 17 and sum(row["rank_histogram"]) == pytest.approx(1.0)
    assert m["metrics"]["test"]["2d_3d"]["crps"] == pytest.approx(m["metrics"]["test"]["2d_3d"]["mae"] * (m["normalisation"]["hi"] - m["normalisation"]["lo"]))
    assert "gen" in m["history"]
    assert "Ensemble scores" in open(R / "table.md").read()


def _frames(d, n=6):
    import xarray as xr

    from .conftest import swe_file

    path = d / "hr.nc"
    if not path.exists():
        swe_file(path, frames=n, size=(64, 64), seed=5)
    return xr.open_dataset(path)["h"].load()


def test_members_reproducible_by_seed_tiled_equal_untiled_and_consistent(gen_run):
    import hpcvsr

    hr = _frames(gen_run)
    sr = hpcvsr.load(str(gen_run / "R"), device="cpu", members=4, seed=1, block_frames=4)
    lr = sr.degrade(hr)
    a = sr(lr)
    assert a.dims == ("realization", "time", "y", "x") and a.sizes["realization"] == 4
    assert a.coords["realization"].attrs["standard_name"] == "realization"
    assert np.array_equal(a.values, sr(lr).values)  # the same seed: the same members, bitwise
    other = hpcvsr.load(str(gen_run / "R"), device="cpu", members=4, seed=2, block_frames=4)(lr)
    assert not np.allclose(other.values, a.values)  # another seed: other members
    assert np.abs(a.values[0] - a.values[1]).max() > 0  # members differ from one another
    tiled = hpcvsr.load(str(gen_run / "R"), device="cpu", members=4, seed=1, block_frames=4, tile=32, tile_halo=8)(lr)
    rng = float(hr.max() - hr.min())
    assert np.abs(tiled.values - a.values).max() / rng < 1e-5
    two = hpcvsr.load(str(gen_run / "R"), device="cpu", members=2, seed=1, block_frames=3)(lr)  # members are members, whatever M or chunks
    assert np.array_equal(two.values, a.values[:2])
    # every member degrades back to its input (block mean: the coarse cells' means, i.e. the mass)
    back = dg.degrade(torch.from_numpy(a.values.reshape(-1, 1, *a.shape[-2:])), 2, "block_mean").reshape(*a.shape[:2], *lr.shape[-2:])
    err = (back.numpy() - lr.values[None]).__abs__().max() / rng
    assert err < 1e-6, err
    dask_out = hpcvsr.load(str(gen_run / "R"), device="cpu", members=4, seed=1, block_frames=4)(lr.chunk({"time": 2}))
    assert np.array_equal(dask_out.values, a.values)


def test_members_of_a_run_without_a_generative_stage_are_refused(small_run):
    import hpcvsr

    with pytest.raises(UserError, match="generative stage"):
        hpcvsr.load(str(small_run), device="cpu", members=4)


@pytest.mark.mpi
def test_ensembles_on_two_ranks_equal_one_rank_bitwise_and_the_python_api(gen_run, tmp_path):
    import h5py
    import xarray as xr

    import hpcvsr

    from .conftest import run_mpi

    _frames(gen_run)
    args = ["--run-dir", str(gen_run / "R"), "--input", str(gen_run / "hr.nc"), "--var", "h", "--degrade", "--members", "4", "--seed", "3",
            "--set", "infer.block_frames=2", "--set", "threads=1"]
    one = run_cli("hpcvsr.infer", *args, "--output", str(tmp_path / "one.h5"))
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-2000:]
    assert "ens_crps" in one.stdout and "ens_spread_skill" in one.stdout
    two = run_mpi(2, "-m", "hpcvsr.infer", *args, "--output", str(tmp_path / "two.h5"))
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    with h5py.File(tmp_path / "one.h5") as a, h5py.File(tmp_path / "two.h5") as b:
        assert a["sr"].shape == (6, 4, 64, 64) and a.attrs["members"] == 4 and a.attrs["seed"] == 3
        for name in ("sr", "sr_mean", "sr_std"):
            assert np.array_equal(a[name][:], b[name][:]), name
        members = a["sr"][:]
    hr = xr.open_dataset(gen_run / "hr.nc")["h"].load()
    sr = hpcvsr.load(str(gen_run / "R"), device="cpu", members=4, seed=3, block_frames=2)
    api = sr(sr.degrade(hr)).transpose("time", ...).values  # HDF5 keeps (time, member, y, x)
    assert np.abs(api - members).max() <= 1e-6 * float(hr.max() - hr.min())
    scores = json.load(open(str(tmp_path / "one.h5") + ".scores.json"))
    assert len(scores["rank_histogram"]) == 5 and scores["members"] == 4


def test_infer_members_with_a_deterministic_run_is_one_clear_error(small_run, tmp_path):
    from .conftest import assert_user_error, swe_file

    src = swe_file(tmp_path / "hr.nc", frames=4, size=(32, 32), seed=3)
    out = tmp_path / "sr.nc"
    proc = run_cli("hpcvsr.infer", "--run-dir", str(small_run), "--input", str(src), "--var", "h", "--degrade", "--members", "4", "--output", str(out))
    assert_user_error(proc, "--members needs a run with a generative stage", "2d_3d_gen")
    assert not out.exists() and not (tmp_path / "sr.nc.lock").exists()
