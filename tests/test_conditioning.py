"""Conditioning on place and time: static covariates, learned location channels, time features.

Archives are ERA5-like CF files from tests/cfdata.py: hourly 2 m temperature whose fine detail is
tied to a fixed orography and to the hour of day, and that orography as a static (lat, lon) file.
"""

import numpy as np
import pytest
import torch
import xarray as xr

from hpcvsr.io.sequences import open_archive
from hpcvsr.models import build, from_entry
from hpcvsr.models.conditioning import Conditioned, Where, cut, run

from .cfdata import write_orography, write_t2m
from .conftest import TINY, assert_user_error, run_cli, run_mpi, sets


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    d = tmp_path_factory.mktemp("fixed")
    write_t2m(str(d / "t2m.nc"), frames=120, seed=3)
    write_orography(str(d / "z.nc"), seed=3)
    write_orography(str(d / "z_shifted.nc"), seed=3, shift_lat=0.1)
    write_t2m(str(d / "other_grid.nc"), frames=12, ny=29, nx=49, seed=3)
    xr.Dataset({"t2m": (("frame", "row", "col"), np.random.default_rng(0).random((12, 32, 48)).astype("float32"))}).to_netcdf(d / "no_time.nc")
    return d


def _conditioned(arch, **extra) -> list:
    values = dict(data__source="archive", data__path=arch / "t2m.nc", data__var="t2m", data__static__path=arch / "z.nc",
                  data__static__vars="[z]", condition__location_channels=2, condition__time_features="true")
    return sets(**dict(values, **extra))


@pytest.fixture(scope="module")
def run_dir(arch, tmp_path_factory):
    """A tiny 2D->3D run conditioned on orography, learned location channels and time."""
    d = tmp_path_factory.mktemp("cond_run")
    proc = run_cli("hpcvsr.train", "--run-dir", str(d), *_conditioned(arch), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d


def test_start_equals_the_wrapped_network_and_entry_round_trips():
    torch.manual_seed(0)
    net = build("climate_fsrcnn", 2)
    torch.nn.init.normal_(net.recon.weight, std=0.05)
    wrapped = Conditioned(net, grid=[16, 20], static=1, location=3, time=True)
    wrapped.set_static(torch.randn(1, 16, 20))
    x = torch.rand(2, 1, 8, 10)
    where = Where.at(2, times=torch.rand(2, 1, 4))
    assert torch.equal(wrapped(x, where), net(x))  # the head starts at zero: the pretrained start is unchanged
    torch.nn.init.normal_(wrapped.head[-1].weight, std=0.1)
    from hpcvsr.pipeline.build import wrap
    model, prefixes = wrap(net,
                                spec={"grid": [16, 20], "static": 1, "location": 3, "time": True, "width": 32})
    assert prefixes == ["net."]
    model.load_state_dict(wrapped.state_dict())
    rebuilt = from_entry(dict(model.spec, state_dict=wrapped.state_dict()))
    assert torch.equal(rebuilt(x, where), wrapped(x, where))


def test_cut_takes_each_samples_own_window():
    maps = torch.arange(2 * 6 * 7, dtype=torch.float32).reshape(2, 6, 7)
    rows, cols = torch.tensor([0, 2, 3]), torch.tensor([1, 0, 4])
    got = cut(maps, rows, cols, 3, 3)
    for i in range(3):
        assert torch.equal(got[i], maps[:, rows[i] : rows[i] + 3, cols[i] : cols[i] + 3])


def test_static_file_read_as_one_frame_on_the_data_grid(arch):
    arc = open_archive(str(arch / "z.nc"), "z")
    assert arc.shape == (1, 33, 49) and arc.units == "m"
    with xr.open_dataset(arch / "z.nc") as ds:
        assert np.array_equal(arc.read(0, 1)[0], ds["z"].values)


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_conditioned_run_infers_tiled_like_untiled_and_refuses_another_grid(arch, run_dir, tmp_path):
    whole, tiled = tmp_path / "whole.nc", tmp_path / "tiled.nc"
    for out, extra in ((whole, []), (tiled, ["--set", "infer.tile=16", "--set", "infer.tile_halo=6"])):
        proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(arch / "t2m.nc"), "--output", str(out), "--degrade", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
    with xr.open_dataset(whole) as a, xr.open_dataset(tiled) as b:
        diff = float(np.abs(a["t2m"].values - b["t2m"].values).max())
        assert a["t2m"].shape == (120, 32, 48)
    assert diff <= 1e-5 * 300, diff  # 1e-5 of the normalised range (K values near 280)
    bad = tmp_path / "bad.nc"
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(arch / "other_grid.nc"), "--output", str(bad), "--degrade")
    assert_user_error(proc, "training grid of 32x48", "static covariates z")
    assert not bad.exists() and not list(tmp_path.glob("bad*"))
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(arch / "no_time.nc"), "--var", "t2m", "--output", str(bad), "--degrade")
    assert_user_error(proc, "no CF time coordinate", "time features")


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_learned_location_channels_alone_refuse_another_grid(arch, tmp_path):
    run_dir = tmp_path / "loc"
    proc = run_cli("hpcvsr.train", "--run-dir", str(run_dir), *sets(pipeline="2d", data__source="archive", data__path=arch / "t2m.nc",
                   data__var="t2m", condition__location_channels=2), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(arch / "other_grid.nc"), "--output", str(tmp_path / "o.nc"), "--degrade")
    assert_user_error(proc, "learned location channels", "training grid")


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_conditioned_inference_two_ranks_equals_one_rank(arch, run_dir, tmp_path):
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"r{n}.h5"
        proc = run_mpi(n, "-m", "hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(arch / "t2m.nc"), "--output", str(out),
                       "--degrade", "--consolidate", "--set", "infer.block_frames=16", "--set", "threads=1")
        assert proc.returncode == 0, proc.stderr[-3000:]
        import h5py
        with h5py.File(out) as f:
            outs[n] = f["sr"][:]
    assert np.array_equal(outs[1], outs[2])


@pytest.mark.parametrize("extra, fragments", [
    ({"data__static__path": "{d}/z_shifted.nc"}, ("z_shifted.nc:z", "coordinate 'latitude' differs")),
    ({"data__static__path": "{d}/other_grid.nc", "data__static__vars": "[t2m]"}, ("a static covariate has one",)),
    ({"data__path": "{d}/no_time.nc"}, ("no CF time coordinate",)),
])
def test_bad_conditioning_inputs_refused_before_the_run_dir_exists(arch, tmp_path, extra, fragments):
    extra = {k: v.format(d=arch) for k, v in extra.items()}
    run_dir = tmp_path / "run"
    proc = run_cli("hpcvsr.train", "--run-dir", str(run_dir), *_conditioned(arch, **extra), *TINY)
    assert_user_error(proc, *fragments)
    assert not run_dir.exists()


def test_time_features_need_a_time_coordinate_in_the_config(tmp_path):
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "r"), "--set", "condition.time_features=true")
    assert_user_error(proc, "condition.time_features needs a time coordinate", "'swe'")
    assert not (tmp_path / "r").exists()


def test_run_passes_where_only_to_models_that_read_it():
    net = build("climate_fsrcnn", 2)
    x = torch.rand(1, 1, 8, 8)
    assert torch.equal(run(net, x, None), net(x))
    with pytest.raises(RuntimeError):
        run(Conditioned(net, grid=[16, 16], location=1), x, None)


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_orography_covariate_beats_the_plain_model_on_held_out_hours(arch, tmp_path):
    """Same data, same budget: the model that sees the orography recovers the place-locked detail."""
    import json
    psnr = {}
    for name, extra in (("plain", {}), ("covariate", {"data__static__path": arch / "z.nc", "data__static__vars": "[z]"})):
        run_dir = tmp_path / name
        proc = run_cli("hpcvsr.train", "--run-dir", str(run_dir), *sets(pipeline="2d", data__source="archive", data__path=arch / "t2m.nc",
                       data__var="t2m", train2d__epochs=4, train2d__patches_per_epoch=256, train2d__patch=24, threads=1, **extra))
        assert proc.returncode == 0, proc.stderr[-3000:]
        psnr[name] = json.load(open(run_dir / "metrics.json"))["metrics"]["test"]["2d"]["psnr"]
    assert psnr["covariate"] > psnr["plain"] + 0.5, psnr
