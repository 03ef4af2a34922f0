"""Exact consistency constraints (degrade.constrain): outputs degrade back to their inputs."""

import json

import numpy as np
import pytest
import torch

from hpcvsr.models import build, from_entry
from hpcvsr.models.constraint import Constrained
from hpcvsr.ops import degrade as dg
from hpcvsr.pipeline.build import wrap

from .conftest import TINY, assert_user_error, run_cli, sets


@pytest.mark.parametrize("method", dg.DEGRADATIONS)
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_axis_matrices_are_the_operators_and_projection_is_exact(method, scale):
    torch.manual_seed(scale)
    x = torch.rand(3, 8 * scale, 10 * scale, dtype=torch.float64)
    mh, mw = (torch.from_numpy(dg.axis_matrix(method, n, scale)) for n in x.shape[-2:])
    lr = dg.degrade(x, scale, method)
    assert torch.allclose(mh @ x @ mw.T, lr, atol=1e-14, rtol=0)
    y = torch.rand_like(x)
    p = dg.project(y, lr, scale, method)
    assert (dg.degrade(p, scale, method) - lr).abs().max() < 1e-12
    assert torch.allclose(dg.project(p, lr, scale, method), p, atol=1e-12)  # a projection: consistent fields stay
    # the least change: any other consistent field (x) is farther from y
    assert (p - y).norm() <= (x - y).norm()


def test_block_mean_projection_conserves_mass_and_float32_stays_within_round_off():
    torch.manual_seed(0)
    hr = torch.rand(2, 64, 96) * 300.0
    lr = dg.block_mean(hr, 4)
    y = hr + torch.randn_like(hr)
    p = dg.project(y, lr, 4, "block_mean")
    mass, ref = p.double().sum(), hr.double().sum()
    assert abs(float(mass - ref)) / float(ref) <= 1e-6
    assert (dg.block_mean(p, 4) - lr).abs().max() <= 1e-6 * lr.abs().max()


@pytest.mark.parametrize("name, frames, reference", [("climate_fsrcnn", 0, "lr"), ("vsr3d", 5, "hr")])
def test_constrained_network_reproduces_its_input_and_round_trips(name, frames, reference):
    torch.manual_seed(1)
    kwargs = {"residual": True, "same_padding": True} if name == "vsr3d" else {}
    net = build(name, 2, **kwargs)
    torch.nn.init.normal_(net.recon.weight, std=0.05)
    spec = {"method": "bicubic", "scale": 2, "sigma": 1.6, "reference": reference, "frames": frames}
    model, prefixes = wrap(net, constrain=spec)
    assert isinstance(model, Constrained) and prefixes == ["net."]
    if frames:
        lr = torch.rand(2, 5, 12, 16)
        x = dg.project(dg.upscale(lr, 2) + 0.01 * torch.randn(2, 5, 24, 32), lr, 2, "bicubic")  # consistent HR frames, as a constrained 2D stage gives
        centre = lr[:, 2:3]
    else:
        x = centre = torch.rand(2, 1, 12, 16)
    out = model(x)
    assert (dg.degrade(out, 2, "bicubic") - centre).abs().max() < 1e-5
    assert not torch.allclose(out, net(x))  # the layer did change the network's output
    rebuilt = from_entry(dict(model.spec, state_dict=model.state_dict()))
    assert torch.equal(rebuilt(x), out)


def test_constrained_runs_are_consistent_and_mass_conserving(tmp_path):
    """2d_3d at x4 block mean with the constraint: relative mass error <= 1e-6 for every method that
    the constraint applies to, and the consistency error at float32 round-off."""
    run = tmp_path / "run"
    proc = run_cli("hpcvsr.train", "--run-dir", str(run), *sets(degrade__method="block_mean", degrade__scale=4, degrade__constrain="true",
                                                              data__frames=24, data__size="[64, 64]"), *TINY,
                   "--set", "train2d.patch=32", "--set", "train3d.patch=32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    test = json.loads((run / "metrics.json").read_text())["metrics"]["test"]
    for method in ("2d", "2d_3d"):
        assert test[method]["mass_rel_err"] <= 1e-6, (method, test[method])
        assert test[method]["consistency_rmse_phys"] <= 1e-6 * test[method]["rmse_phys"] * 1e3
    assert test["bicubic"]["consistency_rmse_phys"] > 100 * test["2d"]["consistency_rmse_phys"]  # plain bicubic is not consistent
    assert "consistency RMSE" in (run / "table.md").read_text()


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_bicubic_constraint_reproduces_the_input_within_the_stated_tolerance(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("hpcvsr.train", "--run-dir", str(run), *sets(degrade__constrain="true", data__frames=24, data__size="[48, 48]", pipeline="2d"),
                   *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    span = m["normalisation"]["hi"] - m["normalisation"]["lo"]
    assert m["metrics"]["test"]["2d"]["consistency_rmse_phys"] <= 1e-6 * span  # float32 round-off of the data's range
    out = tmp_path / "sr.h5"
    data = next((run / "data").glob("swe_seed1001_*.h5"))
    proc = run_cli("hpcvsr.infer", "--run-dir", str(run), "--input", str(data), "--output", str(out), "--degrade", "--set", "threads=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    gm = dict(kv.split(" ") for kv in proc.stdout.split("global metrics: ")[1].strip().split(", "))
    assert float(gm["consistency_rmse_phys"]) <= 1e-6 * span


@pytest.mark.parametrize("extra, fragment", [
    ({"model3d__kwargs": "{residual: false, same_padding: false}"}, "crops a 2-pixel border"),
    ({"pipeline": "3d"}, "needs a 3D model that reads the low-resolution frames"),
])
def test_constraint_without_whole_frames_or_lr_reference_is_refused(tmp_path, extra, fragment):
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "r"), *sets(degrade__constrain="true", **extra))
    assert_user_error(proc, fragment)
    assert not (tmp_path / "r").exists()


def test_projection_leaves_consistent_fields_alone_in_float32():
    """A float32 field whose exact degradation is the input is not changed beyond float32 round-off
    (the residual is formed in float64: the inverse Gram matrix amplifies it by its condition number,
    265 for blur x2)."""
    hr = torch.rand(4, 32, 48)
    for method in dg.DEGRADATIONS:
        lr = dg.degrade(hr.double(), 2, method)
        assert np.abs((dg.project(hr, lr, 2, method) - hr).numpy()).max() <= 1e-6
