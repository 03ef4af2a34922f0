"""The training recipe: learning-rate warm-up, the gradient loss term, and the plain note when a stage adds nothing."""

import math

import torch

from hpcvsr.pipeline import config
from hpcvsr.report import tables as report
from hpcvsr.training.trainer import gradient_mse, masked_mse, warm_up


def test_warm_up_ramps_every_group_linearly_then_holds():
    params = [torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)]
    opt = torch.optim.Adam([{"params": [params[0]], "lr": 1e-3}, {"params": [params[1]], "lr": 1e-4}])
    seen = []
    for step in range(6):
        warm_up(opt, [1e-3, 1e-4], step, 4.0)
        seen.append([g["lr"] for g in opt.param_groups])
    assert [round(a / 1e-3, 6) for a, _ in seen] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert all(math.isclose(a / b, 10.0) for a, b in seen)


def test_the_3d_stage_warms_up_by_default_and_the_2d_stage_does_not():
    cfg = config.load(None, [])
    assert cfg.train3d.warmup == 1.0 and cfg.train2d.warmup == 0.0


def test_gradient_loss_is_zero_only_for_equal_gradients_and_ignores_missing_targets():
    y = torch.rand(2, 1, 16, 16)
    assert float(gradient_mse(y, y)) == 0.0
    assert float(gradient_mse(y + 3.0, y)) < 1e-12  # an offset has the same gradients
    noisy = y + 0.1 * torch.randn_like(y)
    assert float(gradient_mse(noisy, y)) > 0.0
    holes = y.clone()
    holes[:, :, 4:8, 4:8] = float("nan")
    g = gradient_mse(noisy, holes)
    assert torch.isfinite(g) and float(g) > 0.0
    assert float(masked_mse(noisy, holes)) > 0.0


def _history(*psnrs):
    return [{"epoch": i, "val": {"psnr": p}} for i, p in enumerate(psnrs)]


def test_a_stage_that_adds_nothing_is_reported_plainly():
    assert report.stage_note("2d_3d", _history(40.0, 40.3, 40.5)) == ""
    never = report.stage_note("2d_3d", _history(40.0, 39.8, 39.9))
    assert "never improved" in never and "equals the stage before it" in never
    small = report.stage_note("2d_3d", _history(40.0, 40.02, 40.01))
    assert "+0.020 dB" in small and "adds almost nothing" in small
