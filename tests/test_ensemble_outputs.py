"""Ensemble outputs (``hpcvsr infer --members N``) without a trained generative run: the HDF5 writer's
extra datasets and metric rows (chunk files, virtual datasets, consolidation, resume), CF NetCDF
with a ``realization`` coordinate and the members' mean and standard deviation, the Zarr store
built from the same skeleton, per-frame ensemble sums, and the command's refusals."""

import json
import os
import re
import types

import h5py
import numpy as np
import pytest

from hpcvsr import dist
from hpcvsr.data.blocks import Normaliser
from hpcvsr.errors import UserError
from hpcvsr.inference import archive
from hpcvsr.io import h5out, zarrout
from hpcvsr.io.cf import CFArchive, fine_grid, fine_positions
from hpcvsr.io.ncout import member_stats, packing_step, write_cf
from hpcvsr.io.sequences import MultiArchive
from hpcvsr.ops.metrics import FRAME_FIELDS

from . import cfdata
from .test_cf import cf_failures

xr = pytest.importorskip("xarray")
netCDF4 = pytest.importorskip("netCDF4")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::RuntimeWarning")

M = 3  # members
FRAMES = 6
CHUNKS = [(0, 4), (4, 6)]
STD_ATTRS = {"dims": "time y x", "statistic": "standard deviation over realization, ddof=1"}


def mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference: numpy over the members axis in float64 (NaN stays NaN), then float32."""
    x = x.astype(np.float64)
    return x.mean(axis=1).astype(np.float32), x.std(axis=1, ddof=1).astype(np.float32)


def members_of(frames: np.ndarray) -> np.ndarray:
    """(k, H, W) -> (k, M, H, W): M distinct members around the frames (NaN kept)."""
    rng = np.random.default_rng(len(frames))
    return (frames[:, None] + 0.3 * rng.standard_normal((len(frames), M, *frames.shape[1:]))).astype(np.float32)


@pytest.fixture(scope="module")
def sst(tmp_path_factory):
    """A small masked CF archive (land and one whole frame missing) and its x2 members."""
    path = str(tmp_path_factory.mktemp("ens") / "sst.nc")
    cfdata.write_masked(path, frames=FRAMES, missing_frame=3)
    a = CFArchive(path, "sst")
    frames = np.repeat(np.repeat(a.read(0, FRAMES), 2, axis=1), 2, axis=2)
    return path, members_of(frames)


def rows_of(a: int, b: int, length: int) -> dict:
    """Made-up per-frame metric rows of frames a..b: the usual fields and a vector of ``length`` ensemble sums."""
    frames = np.arange(a, b, dtype=np.float64)
    rows = {k: frames + i for i, k in enumerate(FRAME_FIELDS)}
    rows["ens"] = frames[:, None] * 100 + np.arange(length)
    return rows


# -- HDF5 ------------------------------------------------------------------------------------------------


def ensemble_output(path, shape, *, seed=3, length=7):
    return h5out.SROutput(str(path), shape, CHUNKS, {"checkpoint_hash": "abc", "members": shape[1], "seed": seed}, dist.DistEnv(),
                          metrics=True, **archive._ensemble_datasets(shape, {"ens": (length,)}, {"members": shape[1], "seed": seed}))


def test_hdf5_chunk_files_hold_members_mean_std_and_ensemble_rows(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((FRAMES, M, 8, 10)).astype(np.float32)
    data[2, :, 1, 1] = np.nan  # a missing cell
    path = tmp_path / "sr.h5"
    out = ensemble_output(path, data.shape)
    assert out.mode == "parts" and out.done() == set()
    a, b = CHUNKS[0]
    with pytest.raises(ValueError, match="extra datasets"):
        out.write(0, data[a:b], rows_of(a, b, 7))
    out.write(0, data[a:b], rows_of(a, b, 7), extra=dict(zip(archive.ENSEMBLE_STATS, member_stats(data[a:b]))))
    with pytest.raises(UserError, match="seed differs"):  # a rerun with other noise must not mix its members in
        ensemble_output(path, data.shape, seed=4)
    again = ensemble_output(path, data.shape)
    assert again.done() == {0}
    a, b = CHUNKS[1]
    again.write(1, data[a:b], rows_of(a, b, 7), extra=dict(zip(archive.ENSEMBLE_STATS, member_stats(data[a:b]))))
    stored = again.read_metrics(range(2))
    np.testing.assert_array_equal(stored["ens"], rows_of(0, FRAMES, 7)["ens"])
    assert stored["psnr"].shape == (FRAMES,)
    again.finish({"mse": 0.5, "ens_crps": 0.25})
    mean, std = mean_std(data)

    def check(f, virtual: bool):
        assert f.attrs["members"] == M and f.attrs["seed"] == 3
        assert f["sr"].shape == (FRAMES, M, 8, 10) and f["sr"].dtype == np.float32 and f["sr"].is_virtual == virtual
        np.testing.assert_array_equal(f["sr"][:], data)
        for name, ref in (("sr_mean", mean), ("sr_std", std)):
            assert f[name].shape == (FRAMES, 8, 10) and f[name].dtype == np.float32 and f[name].is_virtual == virtual
            np.testing.assert_allclose(f[name][:], ref, rtol=1e-6, atol=1e-7)
            assert np.isnan(f[name][2, 1, 1]) and np.isfinite(np.delete(f[name][:].ravel(), 2 * 80 + 11)).all()
        assert f["sr"].attrs["dims"] == "time realization y x" and f["sr_mean"].attrs["statistic"] == "mean over realization"
        assert {k: f["sr_std"].attrs[k] for k in STD_ATTRS} == STD_ATTRS
        np.testing.assert_array_equal(f["metrics/frame_ens"][:], rows_of(0, FRAMES, 7)["ens"])
        assert f["metrics"].attrs["ens_crps"] == 0.25
        assert json.loads(f.attrs["layout"])["extra"] == {"sr_mean": [8, 10], "sr_std": [8, 10]}

    with h5py.File(path) as f:
        check(f, virtual=True)
    h5out.consolidate(str(path))
    assert not os.path.exists(str(path) + ".parts")
    with h5py.File(path) as f:
        check(f, virtual=False)
        assert "parts" not in f.attrs


def test_hdf5_deterministic_layout_is_unchanged(tmp_path):
    data = np.random.default_rng(1).standard_normal((FRAMES, 8, 10)).astype(np.float32)
    path = tmp_path / "sr.h5"
    out = h5out.SROutput(str(path), data.shape, CHUNKS, {"checkpoint_hash": "abc"}, dist.DistEnv(), metrics=True)
    for cid, (a, b) in enumerate(CHUNKS):
        rows = rows_of(a, b, 1)
        rows.pop("ens")
        out.write(cid, data[a:b], rows)
    out.finish({"mse": 0.5})
    with h5py.File(path) as f:
        assert set(f) == {"sr", "metrics"} and set(f["metrics"]) == {f"frame_{k}" for k in FRAME_FIELDS}
        assert set(json.loads(f.attrs["layout"])) == {"frames", "shape", "chunks", "checkpoint_hash", "metrics", "mode"}
        assert dict(f["sr"].attrs) == {} and "members" not in f.attrs
        np.testing.assert_array_equal(f["sr"][:], data)


# -- CF NetCDF -------------------------------------------------------------------------------------------


def cf_inputs(src: str):
    a = CFArchive(src, "sst")
    meta = a.describe()
    grid = fine_grid(meta["grid"], fine_positions(a.shape[1], 2), fine_positions(a.shape[2], 2))
    return meta, grid


def write_members(src, dst, members, **kw):
    meta, grid = cf_inputs(src)
    write_cf(dst, frames=lambda a, b: members[a:b], n_frames=FRAMES, meta=meta, grid=grid, var="sst", history="hpcvsr infer --members 3",
             fill_value=meta["fill_value"], members=M, chunk=4, **kw)
    return meta


def test_write_cf_members_realization_mean_and_std(sst, tmp_path):
    src, members = sst
    dst = str(tmp_path / "ens.nc")
    write_members(src, dst, members, frame_metrics={"metric_frame_psnr": np.arange(float(FRAMES))})
    mean, std = mean_std(members)
    with xr.open_dataset(dst) as out, xr.open_dataset(src) as inp:
        r = out["realization"]
        assert r.dims == ("realization",) and r.dtype == np.int32 and r.values.tolist() == list(range(M))
        assert r.attrs == {"standard_name": "realization", "long_name": "ensemble member", "units": "1"}
        # the members first, left of T, Y, X (CF 2.4)
        assert out["sst"].dims == ("realization", "time", "latitude", "longitude") and out["sst"].shape == (M, FRAMES, 66, 98)
        np.testing.assert_array_equal(out["sst"].transpose("time", ...).values, members)  # NaN exactly where missing
        for name, ref, stat in (("sst_mean", mean, "mean"), ("sst_std", std, "standard_deviation")):
            v = out[name]
            assert v.dims == ("time", "latitude", "longitude") and v.dtype == np.float32
            np.testing.assert_array_equal(np.isnan(v.values), np.isnan(ref))
            np.testing.assert_allclose(v.values, ref, rtol=1e-6, atol=1e-6)
            for key in ("units", "standard_name"):
                assert v.attrs[key] == inp["sst"].attrs[key]
            assert v.attrs["cell_methods"] == f"realization: {stat}"
            assert "Sea surface temperature" in v.attrs["long_name"] and v.attrs["long_name"].startswith("ensemble ")
        assert out["sst"].attrs["long_name"] == inp["sst"].attrs["long_name"] and "cell_methods" not in out["sst"].attrs
        assert out["metric_frame_psnr"].dims == ("time",)
        np.testing.assert_array_equal(out["time"].values, inp["time"].values)
    with netCDF4.Dataset(dst) as nc:
        assert nc["sst"].chunking() == [1, 1, 66, 98] and nc["sst_mean"].chunking() == [1, 66, 98] and nc["sst_std"].chunking() == [1, 66, 98]
        assert nc["sst"]._FillValue == nc["sst_std"]._FillValue == np.float32(-32767.0)


def test_write_cf_members_packed_in_int16(sst, tmp_path):
    src, members = sst
    lo, hi = float(np.nanmin(members)), float(np.nanmax(members))
    dst = str(tmp_path / "packed.nc")
    write_members(src, dst, members, pack={"dtype": "int16", "lo": lo, "hi": hi})
    mean, std = mean_std(members)
    step, spread_step = packing_step(lo, hi), packing_step(0.0, hi - lo)
    with xr.open_dataset(dst) as out:
        for name, ref, s in (("sst", members, step), ("sst_mean", mean, step), ("sst_std", std, spread_step)):
            assert out[name].encoding["dtype"] == np.int16 and out[name].encoding["scale_factor"] == pytest.approx(s)
            got = out[name].transpose("time", ...).values
            np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
            assert np.nanmax(np.abs(got - ref)) <= s / 2 * (1 + 1e-6)


def test_write_cf_refuses_a_realization_coordinate_in_the_input(sst, tmp_path):
    src, members = sst
    meta, grid = cf_inputs(src)
    meta["scalar_coords"] = {"realization": {"value": np.int32(0), "attrs": {}}}
    dst = str(tmp_path / "clash.nc")
    with pytest.raises(ValueError, match="realization"):
        write_cf(dst, frames=lambda a, b: members[a:b], n_frames=FRAMES, meta=meta, grid=grid, var="sst", history="h",
                 fill_value=meta["fill_value"], members=M)
    assert os.listdir(tmp_path) == []


def test_write_cf_without_members_has_no_realization(sst, tmp_path):
    src, members = sst
    meta, grid = cf_inputs(src)
    dst = str(tmp_path / "det.nc")
    write_cf(dst, frames=lambda a, b: members[a:b, 0], n_frames=FRAMES, meta=meta, grid=grid, var="sst", history="h", fill_value=meta["fill_value"])
    with xr.open_dataset(dst) as out:
        assert "realization" not in out.dims and "realization" not in out.variables
        assert not {"sst_mean", "sst_std"} & set(out.variables)
        assert out["sst"].dims == ("time", "latitude", "longitude")
        np.testing.assert_array_equal(out["sst"].values, members[:, 0])
    with netCDF4.Dataset(dst) as nc:
        assert nc["sst"].chunking() == [1, 66, 98]


def test_members_output_no_less_cf_compliant_than_input(sst, tmp_path):
    pytest.importorskip("compliance_checker", reason="compliance-checker not installed (pip install compliance-checker)")
    src, members = sst
    dst = str(tmp_path / "ens.nc")
    write_members(src, dst, members)
    # CF 7.3 lets a cell_methods name be "a valid standard name" ("realization: mean" of the members'
    # mean, whose realization dim is gone); compliance-checker 6.1 only matches dims and coordinates
    standard_name = re.compile(r"cell_methods name component realization does not match")
    assert cf_failures(dst, tmp_path, ignore=standard_name) <= cf_failures(src, tmp_path)
    assert cf_failures(dst, tmp_path) <= cf_failures(src, tmp_path) + 2  # what was ignored: those two (mean and std)


# -- Zarr ------------------------------------------------------------------------------------------------


def same_attrs(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def test_zarr_members_store_has_the_netcdf_layout(sst, tmp_path):
    pytest.importorskip("zarr")
    src, members = sst
    job = archive.Job(run_dir="R", input=src, output=str(tmp_path / "ens.zarr"), members=M)
    arcs = MultiArchive(src, ["sst"])
    stand_in = types.SimpleNamespace(crop=0, norms=[Normaliser(280.0, 290.0, "K")],  # what the layout asks of a model
                                     output_positions=lambda h, w: (fine_positions(h, 2), fine_positions(w, 2)))
    kw = {"names": ["sst"], "pred": stand_in, "rows": None, "cols": None}
    attrs = {"scale": 2, "members": M, "seed": 0}
    out_shape = (FRAMES, M, 66, 98)
    out = zarrout.ZarrOutput(job.output, lambda: archive._zarr_template(job, arcs, attrs=attrs, out_shape=out_shape, chunk=4, members=M, **kw),
                             frame_vars=["sst"], chunk_list=CHUNKS, env=dist.DistEnv(), metrics=True,
                             layout={"shape": list(out_shape), "members": M, "seed": 0},
                             extra_vars={"sr_mean": "sst_mean", "sr_std": "sst_std"}, extra_rows={"ens": (7,)})
    for cid, (a, b) in enumerate(CHUNKS):
        out.write(cid, members[a:b], rows_of(a, b, 7), extra=dict(zip(archive.ENSEMBLE_STATS, member_stats(members[a:b]))))
    np.testing.assert_array_equal(out.read_metrics(range(2))["ens"], rows_of(0, FRAMES, 7)["ens"])
    out.finish({"mse": 0.5, "ens_crps": 0.25}, frame_metrics=lambda rows: archive._frame_metric_vars(rows, ["sst"]))
    assert sorted(os.listdir(tmp_path)) == ["ens.zarr"]
    nc = str(tmp_path / "ens.nc")
    write_cf(nc, frames=lambda a, b: members[a:b], n_frames=FRAMES, global_attrs=attrs, members=M,
             **archive._cf_layout(job, arcs, **kw))
    mean, std = mean_std(members)
    with xr.open_zarr(job.output) as z, xr.open_dataset(nc) as n:
        assert set(z.variables) - {"metric_frame_psnr", "metric_frame_ssim"} == set(n.variables)
        for v in n.variables:
            assert z[v].dims == n[v].dims and same_attrs(z[v].attrs, n[v].attrs), v
        assert z["sst"].dims == ("realization", "time", "latitude", "longitude")
        assert z["sst"].encoding["chunks"] == (1, 4, 66, 98) and z["sst_mean"].encoding["chunks"] == (4, 66, 98)
        assert z["realization"].attrs["standard_name"] == "realization" and z["realization"].values.tolist() == list(range(M))
        for v in ("sst", "sst_mean", "sst_std"):
            assert np.array_equal(z[v].values, n[v].values, equal_nan=True), v
        np.testing.assert_array_equal(z["sst"].transpose("time", ...).values, members)
        np.testing.assert_allclose(z["sst_std"].values, std, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(z["sst_mean"].values, mean, rtol=1e-6, atol=1e-6)
        differ = {k for k in set(n.attrs) | set(z.attrs) if not np.array_equal(np.asarray(n.attrs.get(k)), np.asarray(z.attrs.get(k)))}
        assert differ - {"history"} == {"hpcvsr_metric_mse", "hpcvsr_metric_ens_crps"}  # global attributes kept beside the metrics (history: when)
        assert z.attrs["hpcvsr_members"] == M and z.attrs["hpcvsr_metric_ens_crps"] == 0.25
    arcs.close()


# -- scores and the command ------------------------------------------------------------------------------


def test_per_frame_ensemble_rows_sum_to_the_sums_of_all_frames():
    torch = pytest.importorskip("torch")
    pytest.importorskip("hpcvsr.ops.ensemble", reason="hpcvsr.ops.ensemble (the ensemble scores) not importable")
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(4, 16, 16, generator=g, dtype=torch.float64)
    ens = truth[:, None] + 0.1 * torch.randn(4, M, 16, 16, generator=g, dtype=torch.float64)
    truth[1, 2, 3] = float("nan")  # a frame with a missing cell
    new = lambda: archive._ensemble_sums(M, unit_scale=10.0, spectrum_cutoff=0.5, thresholds=(0.5,))  # noqa: E731
    rows = archive._ensemble_rows(new, ens, truth, offset=28.0)
    whole = new()
    whole.update(ens, truth)
    assert rows.shape == (4, whole.sums.numel())
    np.testing.assert_allclose(rows.sum(0), whole.sums.numpy(), rtol=1e-12, atol=1e-12)
    scores = archive._ensemble_scores(new().summary(torch.from_numpy(rows.sum(0))), (285.0,), (0.5,))
    assert list(scores["fss"]) == ["285"] and scores["cells"] == 4 * 256 - 1
    assert archive._plain({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}


@pytest.mark.parametrize("argv, message", [
    (["--members", "-1"], "--members -1"),
    (["--seed", "3"], "--seed 3 chooses"),
    (["--fss-threshold", "1.5"], "--fss-threshold scores ensemble members"),
    (["--members", "2", "--fss-threshold", "1.5"], "give --degrade or --reference"),
])
def test_command_refuses_ensemble_settings_that_do_not_go_together(argv, message, tmp_path, capsys):
    from hpcvsr.cli.infer import main

    with pytest.raises(SystemExit) as exc:
        main(["--run-dir", str(tmp_path / "R"), "--input", str(tmp_path / "in.nc"), "--output", str(tmp_path / "out.h5"), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
