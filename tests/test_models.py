"""Shape tests for every model, published Set5 numbers of the authors' weights, transfer learning."""

import json
import os

import pytest
import torch

from hpcvsr.errors import UserError
from hpcvsr.io import checkpoint
from hpcvsr.models import MODELS, build, entry, from_entry
from hpcvsr.models import weights as W
from hpcvsr.models.composite import Joint2D3D, Reverse3D2D
from hpcvsr.pipeline.build import load_for_eval
from hpcvsr.training.trainer import param_groups

from .conftest import assert_user_error, run_cli, shared_path

CASES_2D = [("srcnn", {}), ("srcnn", {"f2": 5, "act": "prelu"}), ("fsrcnn", {}), ("fsrcnn", {"d": 32, "s": 5, "m": 1}),
            ("climate_fsrcnn", {}), ("climate_fsrcnn", {"residual": False}), ("climate_fsrcnn", {"mass_conserving": True})]


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name,kwargs", CASES_2D)
def test_2d_shapes(name, kwargs, scale):
    m = build(name, scale, **kwargs)
    assert m(torch.rand(2, 1, 12, 10)).shape == (2, 1, 12 * scale, 10 * scale)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_3d_shapes(scale):
    x = torch.rand(2, 5, 24, 20)
    assert build("vsr3d", scale)(x).shape == (2, 1, 20, 16)  # the study's 'valid' layers: 4 px smaller
    assert build("vsr3d", scale, same_padding=True, residual=True)(x).shape == (2, 1, 24, 20)
    assert build("srnet3d", scale)(torch.rand(2, 5, 6, 5)).shape == (2, 1, 6 * scale, 5 * scale)
    j = Joint2D3D(build("climate_fsrcnn", scale), build("vsr3d", scale))
    assert j(torch.rand(2, 5, 8, 8)).shape == (2, 1, 8 * scale - 4, 8 * scale - 4)
    r = Reverse3D2D(build("vsr3d", scale, same_padding=True, residual=True), build("climate_fsrcnn", scale))
    assert r(torch.rand(2, 5, 8, 8)).shape == (2, 1, 8 * scale, 8 * scale)


def test_every_model_is_listed_and_documented():
    for name, cls in MODELS.items():
        assert cls.__doc__, name


def test_mass_conserving_output_averages_back_to_input():
    from hpcvsr.ops.degrade import block_mean

    m = build("climate_fsrcnn", 4, mass_conserving=True)
    torch.nn.init.normal_(m.recon.weight, std=0.1)
    lr = torch.rand(3, 1, 8, 8, dtype=torch.float32)
    assert torch.allclose(block_mean(m(lr), 4), lr, atol=1e-6)


def test_checkpoint_round_trip_identical_outputs(tmp_path):
    torch.manual_seed(0)
    m = build("climate_fsrcnn", 2)
    torch.nn.init.normal_(m.recon.weight, std=0.05)
    assert m.spec == entry("climate_fsrcnn", 2, {})  # a built network knows what it is
    path = str(tmp_path / "c.pt")
    checkpoint.save_weights(path, checkpoint.model_entry(m))
    again = from_entry(checkpoint.load_entry(path))
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(m(x), again(x))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="bad.pt: not a readable checkpoint"):
        checkpoint.load_entry(str(bad))
    m = build("climate_fsrcnn", 2)
    good = tmp_path / "good.pt"
    checkpoint.save_weights(str(good), checkpoint.model_entry(m))
    good.write_bytes(good.read_bytes()[:200])  # truncated
    with pytest.raises(UserError, match="good.pt: not a readable checkpoint"):
        checkpoint.load_entry(str(good))


class _Payload:
    """Unpickling this would run code (it calls os.system)."""

    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_crafted_pickle_is_refused_without_running_it(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"format": checkpoint.MODEL, "version": checkpoint.VERSION, "model": _Payload()}, path)
    with pytest.raises(UserError, match="refused"):
        checkpoint.load_model(str(path))
    assert not (tmp_path / "PWNED").exists() and not os.path.exists("PWNED")


def test_first_format_file_is_refused_then_upgraded(tmp_path):
    m = build("climate_fsrcnn", 2)
    old = tmp_path / "w.pt"
    torch.save({"format": "hpcvsr-1", "model": checkpoint.model_entry(m), "history": []}, old)
    with pytest.raises(UserError, match="python -m hpcvsr.checkpoint upgrade"):
        checkpoint.load_entry(str(old))
    from hpcvsr.cli.checkpoint import main

    assert main(["upgrade", str(old), "--out", str(tmp_path / "new.pt")]) == 0
    again = from_entry(checkpoint.load_entry(str(tmp_path / "new.pt")))
    assert checkpoint.state_hash(again.state_dict()) == checkpoint.state_hash(m.state_dict())


def test_layerwise_init_copies_and_slices():
    src = build("fsrcnn", 2, d=32, s=5, m=1)
    for p in src.parameters():
        torch.nn.init.normal_(p)
    dst = build("climate_fsrcnn", 2)
    report = W.init_layerwise(dst, src.state_dict())
    assert report["feature"] == "copied" and report["shrink"] == "sliced" and report["map.0"] == "sliced"
    assert report["deconv"] == "fresh" and report["recon"] == "fresh"
    assert torch.equal(dst.feature.weight, src.feature.weight)
    assert torch.equal(dst.shrink.weight[:5], src.shrink.weight)
    assert torch.equal(dst.map[0].weight[:5, :5], src.map[0].weight)


def test_freeze_and_lr_mult_name_layers():
    m = build("climate_fsrcnn", 2)
    groups = param_groups(m, 1e-3, freeze=["feature"], lr_mult={"recon": 10.0})
    assert not m.feature.weight.requires_grad
    assert sorted(g["lr"] for g in groups) == [1e-3, 1e-2]
    with pytest.raises(UserError, match="model has no layer 'conv9'"):
        param_groups(build("climate_fsrcnn", 2), 1e-3, freeze=["conv9"], what="model2d")


def test_bundled_weights_exist_and_load():
    for s in (2, 3, 4):
        m = load_for_eval("climate_fsrcnn", None, s)
        assert m(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8 * s, 8 * s)


# --- the authors' weights reproduce the published Set5 numbers (PSNR, Y channel, shave = scale) ---

PUBLISHED = [
    ("srcnn", "srcnn/9-5-5_imagenet/x2.mat", 2, 36.66),
    ("srcnn", "srcnn/9-1-5_91images/x3.mat", 3, 32.39),
    ("fsrcnn", "fsrcnn/fsrcnn/x2.mat", 2, 37.00),
    ("fsrcnn", "fsrcnn/fsrcnn/x3.mat", 3, 33.16),
]


@pytest.mark.parametrize("model,rel,scale,published", PUBLISHED)
def test_authors_weights_reproduce_published_set5(tmp_path, model, rel, scale, published):
    weights = shared_path("pretrained", rel)
    set5 = shared_path("set5")
    out = tmp_path / "out.json"
    proc = run_cli("hpcvsr.evaluate", "--model", model, "--weights", weights, "--scale", str(scale), "--images", set5, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())["mean"]["psnr"]
    assert abs(got - published) <= 0.1, (got, published)


@pytest.mark.parametrize("scale,published", [(2, 33.66), (3, 30.39)])
def test_bicubic_set5(tmp_path, scale, published):
    set5 = shared_path("set5")
    out = tmp_path / "out.json"
    proc = run_cli("hpcvsr.evaluate", "--method", "bicubic", "--scale", str(scale), "--images", set5, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert abs(res["mean"]["psnr"] - published) <= 0.03
    assert len(res["per_item"]) == 5 and {"psnr", "ssim", "mse", "mae"} <= set(res["mean"])


def test_wrong_model_or_scale_weights_are_clear_errors():
    w = shared_path("pretrained", "srcnn", "9-5-5_imagenet", "x2.mat")
    proc = run_cli("hpcvsr.evaluate", "--model", "srcnn", "--weights", w, "--scale", "3", "--images", shared_path("set5"))
    assert_user_error(proc, "x2.mat", "scale x2", "x3")
    proc = run_cli("hpcvsr.evaluate", "--model", "fsrcnn", "--weights", w, "--scale", "2", "--images", shared_path("set5"))
    assert_user_error(proc, "x2.mat", "holds srcnn weights, not fsrcnn")
