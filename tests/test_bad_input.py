"""Every user mistake: one clear error line, non-zero exit, no traceback, nothing partial left."""

import os
import time

import h5py
import numpy as np
import pytest

from .conftest import assert_user_error, run_cli


def _archive(path, data, var="h"):
    with h5py.File(path, "w") as f:
        f[var] = data


def _no_results(run_dir):
    if not os.path.isdir(run_dir):
        return
    for _root, _, files in os.walk(run_dir):
        for f in files:
            assert ".tmp" not in f, f
            assert f not in ("metrics.json", "model.pt", "table.md"), f


def _train(tmp_path, archive, *sets):
    run_dir = str(tmp_path / "run")
    proc = run_cli("hpcvsr.train", "--run-dir", run_dir, "--set", "data.source=archive", "--set", f"data.path={archive}",
                   "--set", "model2d.init=", *sum((["--set", s] for s in sets), []))
    return proc, run_dir


@pytest.fixture(scope="module")
def startup_seconds(tmp_path_factory):
    """Seconds a train command takes to start and refuse an unknown key: the baseline of the fail-fast timings."""
    t0 = time.time()
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path_factory.mktemp("base") / "run"), "--set", "foo.bar=1")
    assert_user_error(proc, "unknown key 'foo.bar'")
    return time.time() - t0


GOOD = np.random.default_rng(0).random((40, 32, 32)).astype(np.float32)


@pytest.mark.parametrize(
    "name,data,sets,fragments",
    [
        ("wrong_shape", GOOD[0], [], ["must be 3-D"]),
        ("nan", np.where(np.arange(32)[None, None, :] == 3, np.nan, GOOD).astype(np.float32), [], ["NaN or inf"]),
        ("inf", np.where(np.arange(32)[None, None, :] == 3, np.inf, GOOD).astype(np.float32), [], ["NaN or inf"]),
        ("short", GOOD[:8], ["data.val_fraction=0.5"], ["at least 5 are needed"]),
        # frames not divisible by the scale are cropped (tests/test_archives.py); one too small to train on is an error
        ("too_small", GOOD[:, :7, :30], ["degrade.scale=4", "train2d.patch=16", "train3d.patch=16"], ["too small to train on"]),
        ("missing_var", GOOD, ["data.var=zeta"], ["no variable 'zeta'"]),
    ],
)
def test_train_rejects_bad_data(tmp_path, name, data, sets, fragments):
    path = str(tmp_path / f"{name}.h5")
    _archive(path, data)
    proc, run_dir = _train(tmp_path, path, *sets)
    assert_user_error(proc, *fragments)
    _no_results(run_dir)


def test_train_missing_file(tmp_path):
    proc, run_dir = _train(tmp_path, str(tmp_path / "nope.h5"))
    assert_user_error(proc, "file not found", "nope.h5")
    _no_results(run_dir)


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train2d:\n  epoch: 3\n")
    proc = run_cli("hpcvsr.train", "--config", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert_user_error(proc, "unknown key 'train2d.epoch'", str(cfg))
    assert not (tmp_path / "run").exists()
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "run"), "--set", "foo.bar=1")
    assert_user_error(proc, "unknown key 'foo.bar'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("sets, message", [
    (["pipeline=2d_3d", "model3d.name=srnet3d"], "pipeline 2d_3d needs a 3D model on high-resolution frames"),
    (["pipeline=joint", "model3d.name=srnet3d"], "pipeline joint needs a 3D model on high-resolution frames"),
    (["pipeline=3d_2d", "model3d.name=srnet3d"], "pipeline 3d_2d needs model3d.name: vsr3d"),
    (["model2d.name=vsr3d"], "model2d.name must be one of"),
    (["model3d.kwargs={depth: 3}"], "model 'vsr3d'"),
    (["model3d.kwargs={same_padding: false}", "infer.tile=64", "infer.tile_halo=0"], "smaller than the model"),
    (["train2d.patches_per_epoch=100"], "not a multiple of train2d.batch_size=16"),
    (["train2d.patch=256"], "larger than the generated frames"),
    (["model2d.init=/no/such.mat"], "model2d.init: file not found"),
    (["pipeline=2d_3d_gen", "modelgen.kwargs={intensity: true}"], "intensity: true needs a lower bound"),  # the water height is unbounded
])
def test_incompatible_settings_fail_fast_before_any_output(tmp_path, sets, message, startup_seconds):
    t0 = time.time()
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "run"), *sum((["--set", s] for s in sets), []))
    assert_user_error(proc, message)
    # before any data are generated (the default flow takes about 10 s): within a few seconds of a command that
    # fails on its first argument, measured on the same machine under the same load
    assert time.time() - t0 < startup_seconds + 3.0
    assert not (tmp_path / "run").exists()


def test_evaluate_bad_inputs(tmp_path):
    proc = run_cli("hpcvsr.evaluate", "--images", str(tmp_path / "none"), "--json", str(tmp_path / "o.json"))
    assert_user_error(proc, "image folder not found")
    path = str(tmp_path / "odd.h5")
    _archive(path, GOOD[:, :30, :30])
    proc = run_cli("hpcvsr.evaluate", "--sequence", path, "--scale", "4", "--json", str(tmp_path / "o.json"))
    assert_user_error(proc, "not divisible by the scale 4")
    assert not os.listdir(tmp_path) == [] and not (tmp_path / "o.json").exists()


def test_data_cli_refuses_overwrite_and_leaves_nothing_partial(tmp_path):
    out = tmp_path / "p.h5"
    out.write_bytes(b"precious")
    proc = run_cli("hpcvsr.data", "phantom", "--frames", "3", "--size", "16", "16", "--out", str(out))
    assert_user_error(proc, "exists; refusing to overwrite")
    assert out.read_bytes() == b"precious"
    proc = run_cli("hpcvsr.data", "archive", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "x.h5"))
    assert_user_error(proc, "file not found")
    nan = str(tmp_path / "nan.h5")
    _archive(nan, np.full((3, 8, 8), np.nan, np.float32))
    proc = run_cli("hpcvsr.data", "archive", nan, "--out", str(tmp_path / "y.h5"))
    assert_user_error(proc, "NaN or inf")
    assert sorted(os.listdir(tmp_path)) == ["nan.h5", "p.h5"]


def test_freeze_of_a_missing_layer_names_it(tmp_path):
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "run"), "--set", "pipeline=2d", "--set", "data.frames=10",
                   "--set", "data.size=[32,32]", "--set", "train2d.patch=16", "--set", "model2d.freeze=[conv9]")
    assert_user_error(proc, "model2d.freeze", "no layer 'conv9'", "feature")
    _no_results(str(tmp_path / "run"))


def test_wrong_weights_file_for_init_names_file(tmp_path):
    bad = tmp_path / "weights_x2.pt"
    bad.write_bytes(b"garbage")
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "run"), "--set", "pipeline=2d", "--set", "data.frames=10",
                   "--set", "data.size=[32,32]", "--set", "train2d.patch=16", "--set", f"model2d.init={bad}")
    assert_user_error(proc, "weights_x2.pt", "not a readable checkpoint")
