"""Several variables super-resolved by one model (data.vars): per-variable normalisation, metrics and outputs."""

import json

import h5py
import numpy as np
import pytest
import torch
import xarray as xr

from hpcvsr.io import checkpoint
from hpcvsr.models import build, from_entry
from hpcvsr.models.variables import Variables
from hpcvsr.ops.windows import split_train_val
from hpcvsr.pipeline.build import wrap

from .conftest import TINY, assert_user_error, run_cli, run_mpi, sets, swe_file

VARS = ["h", "u", "v"]


@pytest.fixture(scope="module")
def swe_nc(tmp_path_factory):
    """A CF NetCDF shallow-water sequence with h, u, v (and vort) on one grid, hourly frames."""
    return swe_file(tmp_path_factory.mktemp("swe") / "swe.nc", frames=48, size=(32, 48), seed=3)


@pytest.fixture(scope="module")
def run_dir(swe_nc, tmp_path_factory):
    d = tmp_path_factory.mktemp("multi") / "run"
    proc = run_cli("hpcvsr.train", "--run-dir", str(d), *sets(data__source="archive", data__path=swe_nc, data__vars="[h, u, v]"), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d


@pytest.mark.parametrize("shared", [True, False])
def test_start_is_the_network_on_each_variable_and_round_trips(shared):
    """At initialisation each variable's output is the wrapped network's output for it alone (2D and 3D,
    shared weights or one copy per variable)."""
    torch.manual_seed(0)
    for name, x, one in (("climate_fsrcnn", torch.rand(2, 3, 8, 10), lambda x, c: x[:, c : c + 1]),
                         ("vsr3d", torch.rand(2, 5, 3, 12, 12), lambda x, c: x[:, :, c])):
        net = build(name, 2)
        torch.nn.init.normal_(net.recon.weight, std=0.05)  # a network whose output depends on its input
        wrapped = Variables(net, channels=3, shared=shared)
        y = wrapped(x)
        assert y.shape[:2] == (2, 3)
        for c in range(3):
            assert torch.allclose(y[:, c : c + 1], net(one(x, c)), atol=1e-6)
        if not shared:  # copies train apart: changing one changes only its variable
            with torch.no_grad():
                wrapped.nets[1].recon.bias.add_(1.0)
            z = wrapped(x)
            assert torch.equal(z[:, 0], y[:, 0]) and torch.equal(z[:, 2], y[:, 2]) and not torch.allclose(z[:, 1], y[:, 1])
        torch.nn.init.normal_(wrapped.head[-1].weight, std=0.1)
        mixed = wrapped(x)
        assert not torch.allclose(mixed[:, 0], wrapped(torch.cat([x[..., :1, :, :], 0 * x[..., 1:, :, :]], -3))[:, 0])  # the head mixes
        model, prefixes = wrap(build(name, 2), channels=3, shared=shared)
        assert prefixes == (["net."] if shared else ["nets.0.", "nets.1.", "nets.2."])
        rebuilt = from_entry(dict(model.spec, state_dict=wrapped.state_dict()))
        assert torch.equal(rebuilt(x), mixed)


def test_each_variable_has_its_own_normalisation_and_metric_rows(run_dir, swe_nc):
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["variables"] == VARS
    with xr.open_dataset(swe_nc) as ds:
        (_, cut), _ = split_train_val(48, 0.2)  # the trailing frames are held out, and the last of the rest validate
        (_, stop), _ = split_train_val(cut, 0.2)
        for v in VARS:  # the range of each variable's own training frames
            n = m["normalisation"][v]
            train = ds[v].values[:stop]
            assert n["lo"] == pytest.approx(float(train.min()), rel=1e-6) and n["hi"] == pytest.approx(float(train.max()), rel=1e-6)
            assert n["units"] == ds[v].attrs["units"]
    for v in VARS:
        rows = m["metrics"]["test"][v]
        assert set(rows) == {"bicubic", "2d", "2d_3d"}
        assert all(np.isfinite(rows[k]["psnr"]) and rows[k]["frames"] > 0 for k in rows)
        assert len(m["per_frame_psnr"][v]["2d"]) == len(m["per_frame_psnr"][v]["bicubic"])
    assert len({m["metrics"]["test"][v]["bicubic"]["psnr"] for v in VARS}) == 3  # really three different fields
    table = (run_dir / "table.md").read_text()
    assert all(f"## variable {v}" in table for v in VARS)
    mf = checkpoint.load_model(str(run_dir / "model.pt"))
    assert [c["var"] for c in mf.variables] == VARS and mf.model["name"] == "variables"


def test_inference_writes_every_variable_with_its_metrics(run_dir, swe_nc, tmp_path):
    out = tmp_path / "sr.nc"
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(swe_nc), "--output", str(out), "--degrade", "--set", "threads=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "psnr_u" in proc.stdout
    with xr.open_dataset(out) as sr, xr.open_dataset(swe_nc) as src:
        for v in VARS:
            assert sr[v].dims == src[v].dims and sr[v].attrs["units"] == src[v].attrs["units"]
            assert sr[f"metric_frame_psnr_{v}"].shape == (48,)
            assert sr.sizes == src[v].sizes  # 2d_3d with the default 3D layout keeps the whole frame

            rmse = {w: float(np.sqrt(np.mean((sr[v].values - src[w].values) ** 2))) for w in VARS}
            assert rmse[v] < min(rmse[w] for w in VARS if w != v)  # each variable comes back as itself, in its own units
            assert float(sr.attrs[f"hpcvsr_metric_rmse_phys_{v}"]) == pytest.approx(rmse[v], rel=1e-4)
    # the HDF5 output holds (T, C, H, W) and (T, C) metric rows
    h5 = tmp_path / "sr.h5"
    assert run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(swe_nc), "--output", str(h5), "--degrade",
                   "--set", "threads=1", "--set", "infer.tile=16", "--set", "infer.tile_halo=8").returncode == 0
    with h5py.File(h5) as f, xr.open_dataset(out) as sr:
        assert f["sr"].shape[:2] == (48, 3) and f["metrics/frame_psnr"].shape == (48, 3)
        for i, v in enumerate(VARS):  # tiled (h5) vs untiled (nc)
            assert np.abs(f["sr"][:, i] - sr[v].values).max() <= 1e-5 * max(1.0, np.abs(sr[v].values).max())


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_two_ranks_equal_one_rank(run_dir, swe_nc, tmp_path):
    outs = {}
    for n in (1, 2):
        outs[n] = tmp_path / f"sr{n}.h5"
        args = ["-m", "hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(swe_nc), "--output", str(outs[n]), "--set", "threads=1",
                "--set", "infer.block_frames=8", "--consolidate"]
        proc = run_mpi(n, *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    with h5py.File(outs[1]) as a, h5py.File(outs[2]) as b:
        assert a["sr"].shape == b["sr"].shape and np.array_equal(a["sr"][:], b["sr"][:])


def test_variable_mistakes_are_refused(run_dir, swe_nc, tmp_path):
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run_dir), "--input", str(swe_nc), "--var", "h,u", "--output", str(tmp_path / "x.h5"))
    assert_user_error(proc, "--var h,u", "3 variable(s)")
    assert not (tmp_path / "x.h5").exists()
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "r"), *sets(data__source="archive", data__path=swe_nc, data__vars="[h, h]"))
    assert_user_error(proc, "data.vars must name distinct variables")
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "r"), *sets(data__vars="[h, u]", pipeline="joint"))
    assert_user_error(proc, "pipeline joint takes one variable")
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "r"), *sets(data__source="archive", data__path=swe_nc, data__vars="[h, nope]"))
    assert_user_error(proc, "nope")
    assert not (tmp_path / "r").exists()
