"""Bounded fields (rain >= 0, sea ice in [0, 1]): outputs never leave their bounds, and with the
constraint they are the nearest bounded fields that degrade back to their inputs."""

import json

import h5py
import numpy as np
import pytest
import torch
import xarray as xr

from hpcvsr.data.blocks import Normaliser
from hpcvsr.errors import UserError
from hpcvsr.io import checkpoint
from hpcvsr.models import build, from_entry
from hpcvsr.models.bounds import Bounded
from hpcvsr.models.constraint import Constrained
from hpcvsr.ops import degrade as dg
from hpcvsr.pipeline import bounds as bd
from hpcvsr.pipeline.build import wrap

from .conftest import TINY, assert_user_error, run_cli, sets

INF = float("inf")


# --- test data: 10-minute radar-like rain ---------------------------------------------------------------

def smooth_field(rng, frames: int, ny: int, nx: int, modes: int = 12, drift=(0.35, 0.6)) -> np.ndarray:
    """(frames, ny, nx) zero-mean, unit-variance random field of large-scale Fourier modes moving with ``drift`` cells per frame."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(ny), np.arange(nx), indexing="ij")
    out = np.zeros((frames, ny, nx))
    for _ in range(modes):
        ky, kx = rng.uniform(-1, 1, 2) * 2 * np.pi / 8
        phase = rng.uniform(0, 2 * np.pi)
        out += np.cos(ky * (y - drift[0] * t) + kx * (x - drift[1] * t) + phase) * rng.uniform(0.5, 1.0)
    return (out - out.mean()) / out.std()


def rain(frames: int, ny: int, nx: int, seed: int) -> np.ndarray:
    """Intermittent, heavy-tailed rain in kg m-2 per 10 minutes: 80 % of cells dry (a moving mask),
    gamma-distributed intensities (shape 0.5) modulated by a moving lognormal envelope."""
    rng = np.random.default_rng(seed)
    where = smooth_field(rng, frames, ny, nx)
    mask = where > np.quantile(where, 0.8)
    envelope = np.exp(0.8 * smooth_field(rng, frames, ny, nx, drift=(0.5, 0.4)))
    return (mask * envelope * rng.gamma(0.5, 0.6, size=where.shape)).astype(np.float32)


def rain_dataset(values: np.ndarray, *, valid_min: bool, step_deg: float = 0.05, lat0: float = 50.0, lon0: float = 5.0,
                 minutes0: int = 0) -> xr.Dataset:
    frames, ny, nx = values.shape
    attrs = {"units": "kg m-2", "long_name": "precipitation amount in 10 minutes", "standard_name": "precipitation_amount"}
    if valid_min:
        attrs["valid_min"] = np.float32(0.0)
    coords = {
        "time": ("time", minutes0 + 10 * np.arange(frames, dtype=np.int32),
                 {"units": "minutes since 2021-07-14 00:00:00", "calendar": "standard", "standard_name": "time", "axis": "T"}),
        "lat": ("lat", (lat0 + step_deg * np.arange(ny)).astype(np.float32), {"units": "degrees_north", "standard_name": "latitude", "axis": "Y"}),
        "lon": ("lon", (lon0 + step_deg * np.arange(nx)).astype(np.float32), {"units": "degrees_east", "standard_name": "longitude", "axis": "X"}),
    }
    return xr.Dataset({"precipitation": (("time", "lat", "lon"), values, attrs)}, coords=coords, attrs={"Conventions": "CF-1.8"})


def write(ds: xr.Dataset, path) -> str:
    ds.to_netcdf(path, engine="netcdf4", encoding={"precipitation": {"_FillValue": None}})
    return str(path)


SCALE = 4


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Training and held-out rain (valid_min = 0 in the training file), the held-out frames' x4 block
    means as a coarse input on the coarse grid (a few cells slightly negative, as regridded files are),
    and the training rain without metadata."""
    d = tmp_path_factory.mktemp("rain")
    train, test = rain(48, 32, 32, seed=1), rain(24, 32, 32, seed=2)
    assert 0.75 < float((train == 0).mean()) < 0.85 and train.max() > 10 * train[train > 0].mean()
    coarse = dg.block_mean(torch.from_numpy(test).double(), SCALE).numpy().astype(np.float32)
    coarse[3, 1, 1] = -2e-3  # interpolation noise below zero
    coarse[7, 0, 1] = -1e-4
    lr = rain_dataset(coarse, valid_min=False, step_deg=0.05 * SCALE, lat0=50.0 + 0.075, lon0=5.0 + 0.075, minutes0=480)
    return {"train": write(rain_dataset(train, valid_min=True), d / "rain_train.nc"),
            "test": write(rain_dataset(test, valid_min=True, minutes0=480), d / "rain_test.nc"),
            "bare": write(rain_dataset(train, valid_min=False), d / "rain_bare.nc"),
            "lr": write(lr, d / "rain_lr.nc"), "coarse": coarse}


# --- the bounded projection ---------------------------------------------------------------------------

def blocks(x: torch.Tensor, s: int) -> torch.Tensor:
    *lead, H, W = x.shape
    return x.reshape(*lead, H // s, s, W // s, s).transpose(-3, -2).reshape(*lead, H // s, W // s, s * s)


def reference_bisection(y, lr, s, lo, hi, steps=200):
    """An independent solver: bisection on the continuous lambda of every block (float64, 200 halvings)."""
    cells, ref = blocks(y.double(), s), torch.clamp(lr.double(), lo, hi)[..., None]
    lo, hi = lo[..., None], hi[..., None]
    a, b = ref - cells.amax(-1, keepdim=True), ref - cells.amin(-1, keepdim=True)
    for _ in range(steps):
        mid = 0.5 * (a + b)
        up = torch.clamp(cells + mid, lo, hi).mean(-1, keepdim=True) > ref
        a, b = torch.where(up, a, mid), torch.where(up, mid, b)
    return torch.clamp(cells + 0.5 * (a + b), lo, hi)


def per_channel(*pairs):
    lo, hi = zip(*pairs)
    return torch.tensor(lo, dtype=torch.float64).reshape(-1, 1, 1), torch.tensor(hi, dtype=torch.float64).reshape(-1, 1, 1)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_block_mean_bounded_projection_is_in_bounds_consistent_and_nearest(scale):
    """Rain [0, inf), sea ice [0, 1] and an unbounded channel: bounds exact, block means matched, the
    KKT form of the nearest field (free cells moved by one lambda per block, the others on a bound past
    which that lambda would push them), equal to an independent bisection and nearer than other
    bounded consistent fields."""
    torch.manual_seed(scale)
    lo, hi = per_channel((0.0, INF), (0.0, 1.0), (-INF, INF))
    truth = torch.rand(4, 3, 8 * scale, 6 * scale, dtype=torch.float64)
    truth[:, 0] = torch.where(truth[:, 0] < 0.8, 0.0, 5 * truth[:, 0] ** 4)  # 80 % dry, heavy tail
    truth[:, 1] = torch.where(truth[:, 1] < 0.3, 0.0, torch.where(truth[:, 1] > 0.7, 1.0, truth[:, 1]))  # sea ice: open water, pack
    lr = dg.block_mean(truth, scale)
    y = truth + 0.3 * torch.randn_like(truth)  # a network's guess: out of bounds in places
    p = dg.project_bounded(y, lr, scale, "block_mean", lo, hi)
    assert p.dtype == torch.float64
    assert bool((p >= lo).all() and (p <= hi).all())
    assert float((dg.block_mean(p, scale) - lr).abs().max()) <= 1e-12
    # KKT: one lambda per block for the free cells; a cell on a bound would be pushed past it by that lambda
    cells, ycells = blocks(p, scale), blocks(y, scale)
    l, u = lo[..., None], hi[..., None]
    free, at_lo, at_hi = (cells > l) & (cells < u), cells == l.expand_as(cells), cells == u.expand_as(cells)
    assert bool((free | at_lo | at_hi).all())
    # the lambdas the clamped cells allow: at most lo - y for those on lo, at least hi - y for those on hi
    most = torch.where(at_lo, l - ycells, INF).amin(-1, keepdim=True)
    least = torch.where(at_hi, u - ycells, -INF).amax(-1, keepdim=True)
    n = free.sum(-1, keepdim=True)
    lam = torch.where(free, cells - ycells, 0.0).sum(-1, keepdim=True) / n.clamp_min(1)
    assert float(torch.where(free, (cells - ycells - lam).abs(), 0.0).max()) <= 1e-12
    lam = torch.where(n > 0, lam, least.clamp_min(-1e300))  # a block with no free cell (a dry one): any allowed lambda
    assert bool((lam <= most + 1e-12).all() and (lam >= least - 1e-12).all())
    assert bool((n == 0).any() and (n > 0).any())  # both kinds of block occur
    assert torch.allclose(cells, reference_bisection(y, lr, scale, lo, hi), atol=1e-12, rtol=0)
    # nearest: for a convex set, <y - p, z - p> <= 0 for every z in it (z: other bounded consistent fields)
    for k in range(8):
        z = dg.project_bounded(truth + 0.5 * torch.randn_like(truth) * k, lr, scale, "block_mean", lo, hi)
        assert float(((y - p) * (z - p)).sum()) <= 1e-9
        assert (y - p).norm() <= (y - z).norm() + 1e-12
    # the unbounded channel is the least-squares projection
    assert torch.allclose(p[:, 2], dg.project(y[:, 2], lr[:, 2], scale, "block_mean"), atol=1e-12)


def slsqp(y: np.ndarray, lr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A general solver's nearest field to ``y`` (4, 4) within [lo, hi] whose 2x2 block means are ``lr`` (2, 2)."""
    scipy_opt = pytest.importorskip("scipy.optimize")
    M = np.kron(np.eye(2), np.full((1, 2), 0.5))
    res = scipy_opt.minimize(lambda v: 0.5 * np.sum((v - y.ravel()) ** 2), np.clip(y.ravel(), lo, min(hi, 5.0)), jac=lambda v: v - y.ravel(),
                             bounds=[(lo, None if np.isinf(hi) else hi)] * 16, method="SLSQP", options={"ftol": 1e-14, "maxiter": 500},
                             constraints=[{"type": "eq", "fun": lambda v: (M @ v.reshape(4, 4) @ M.T - lr).ravel()}])
    assert res.success, res.message
    return res.x.reshape(4, 4)


def test_bounded_projection_matches_a_general_solver_on_tiny_cases():
    rng = np.random.default_rng(0)
    for case in range(12):
        lo, hi = (0.0, 1.0) if case % 2 else (0.0, np.inf)
        y = rng.normal(0.3, 0.8, size=(4, 4))
        lr = np.clip(rng.uniform(0, 1.2, size=(2, 2)), lo, hi)
        if case == 2:
            lr[0, 0] = 0.0  # a dry block: every cell exactly zero
        p = dg.project_bounded(torch.from_numpy(y), torch.from_numpy(lr), 2, "block_mean", torch.tensor(lo), torch.tensor(hi)).numpy()
        assert np.abs(p - slsqp(y, lr, lo, hi)).max() <= 1e-6, case
        if case == 2:
            assert (p[:2, :2] == 0).all()


def test_float32_outputs_are_in_bounds_exactly_and_consistent_within_1e6_of_the_range():
    torch.manual_seed(0)
    lo, hi = per_channel((0.0, INF), (0.0, 1.0))
    truth = torch.rand(2, 2, 64, 64)
    truth[:, 0] = torch.where(truth[:, 0] < 0.8, 0.0, truth[:, 0] * 30)
    lr = dg.block_mean(truth, 4)
    p = dg.project_bounded(truth + torch.randn_like(truth), lr, 4, "block_mean", lo, hi)
    assert p.dtype == torch.float32 and float(p.min()) >= 0.0 and float(p[:, 1].max()) <= 1.0
    err = (dg.block_mean(p.double(), 4) - lr.double()).abs().amax(dim=(0, 2, 3))
    assert float(err[0]) <= 1e-6 * float(truth[:, 0].max()) and float(err[1]) <= 1e-6
    assert float((p[:, 0][dg.upscale(lr[:, 0], 4, "nearest") == 0]).abs().max()) == 0.0  # dry blocks stay exactly dry


def test_inputs_out_of_bounds_are_clipped_first():
    lr = torch.tensor([[[-0.01, 0.5], [1.2, 0.25]]], dtype=torch.float64)
    lo, hi = torch.tensor(0.0), torch.tensor(1.0)
    y = torch.randn(1, 4, 4, dtype=torch.float64)
    p = dg.project_bounded(y, lr, 2, "block_mean", lo, hi)
    assert torch.allclose(dg.block_mean(p, 2), lr.clamp(0, 1), atol=1e-15)
    assert (p[0, :2, :2] == 0).all() and (p[0, 2:, :2] == 1).all()


def test_point_sampling_keeps_the_clipped_inputs_and_clips_the_rest():
    torch.manual_seed(0)
    y, lr = torch.randn(2, 1, 12, 12), torch.randn(2, 1, 4, 4)
    lo, hi = torch.zeros(1, 1, 1), torch.ones(1, 1, 1)
    p = dg.project_bounded(y, lr, 3, "point", lo, hi)
    assert torch.equal(p[..., ::3, ::3], lr.clamp(0, 1))
    rest = torch.ones_like(p, dtype=torch.bool)
    rest[..., ::3, ::3] = False
    assert torch.equal(p[rest], y.clamp(0, 1)[rest])


@pytest.mark.parametrize("method", ["bicubic", "blur"])
def test_no_bounded_projection_for_bicubic_or_blur(method):
    with pytest.raises(UserError, match="no bounded projection"):
        dg.project_bounded(torch.zeros(1, 8, 8), torch.zeros(1, 4, 4), 2, method, torch.tensor(0.0), torch.tensor(INF))
    with pytest.raises(ValueError):
        Constrained(build("climate_fsrcnn", 2), method=method, scale=2, lo=[0.0], hi=[None])


# --- the layers ------------------------------------------------------------------------------------------

def test_bounded_layer_clips_passes_gradients_through_and_rebuilds_from_its_spec():
    torch.manual_seed(0)
    net = build("climate_fsrcnn", 2)
    model, prefixes = wrap(net, bounds={"lo": [0.0], "hi": [None]})
    assert isinstance(model, Bounded) and prefixes == ["net."]
    x = torch.rand(3, 1, 10, 12) - 0.5
    raw = net(x)
    assert float(raw.detach().min()) < 0
    out = model(x)
    assert torch.equal(out, raw.clamp_min(0.0))
    # training: the forward is the clipped field, the backward the identity (a clipped cell still learns)
    target = torch.full_like(raw, 0.5)
    ((model(x) - target) ** 2).sum().backward()
    g_bounded = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    out_d = raw.detach().clamp_min(0.0)
    (2 * (out_d - target) * net(x)).sum().backward()  # d/dw of sum((clip - t)^2) with d clip / d raw := 1
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g_bounded, (p.grad for p in net.parameters())))
    rebuilt = from_entry(dict(model.spec, state_dict=model.state_dict()))
    assert torch.equal(rebuilt(x), out) and set(model.state_dict()) == {"net." + k for k in net.state_dict()}


def test_bounded_3d_network_keeps_shared_frame_features():
    torch.manual_seed(0)
    net = build("vsr3d", 2, residual=True, same_padding=True, frame_features=True, frames=5)
    torch.nn.init.normal_(net.recon.weight, std=0.2)
    model, _ = wrap(net, bounds={"lo": [0.0], "hi": [1.0]})
    assert model.frame_features
    frames, windows = torch.rand(9, 16, 16), torch.stack([torch.arange(i, i + 5) for i in range(5)])
    shared = model(frames, windows)
    assert torch.allclose(shared, model(frames[windows]), atol=1e-5)
    assert float(shared.detach().min()) >= 0 and float(shared.detach().max()) <= 1


@pytest.mark.parametrize("frames, reference", [(0, "lr"), (5, "hr")])
def test_constrained_layer_with_bounds_is_bounded_consistent_and_trains_like_the_linear_projection(frames, reference):
    torch.manual_seed(1)
    name, kwargs = ("vsr3d", {"residual": True, "same_padding": True, "frames": 5}) if frames else ("climate_fsrcnn", {})
    net = build(name, 2, **kwargs)
    torch.nn.init.normal_(net.recon.weight, std=0.1)
    spec = {"method": "block_mean", "scale": 2, "sigma": 1.6, "reference": reference, "frames": frames}
    model, _ = wrap(net, constrain=spec, bounds={"lo": [0.0], "hi": [1.0]})
    assert isinstance(model, Constrained) and model.bounded
    if frames:
        lr = torch.rand(2, 5, 8, 8)
        x = dg.upscale(lr, 2, "nearest")  # consistent HR frames
        centre = lr[:, 2:3]
    else:
        x = centre = torch.rand(2, 1, 8, 8) * 1.2 - 0.1  # some input cells out of [0, 1]
    with torch.no_grad():
        out = model(x)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert float((dg.block_mean(out.double(), 2) - centre.double().clamp(0, 1)).abs().max()) <= 1e-6
    # the gradient is that of the linear (unbounded) projection
    target = torch.rand_like(out)
    ((model(x) - target) ** 2).sum().backward()
    g = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    raw = net(x)
    (2 * (out - target) * dg.project(raw, model.low_res(x), 2, "block_mean")).sum().backward()
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(g, (p.grad for p in net.parameters())))
    rebuilt = from_entry(dict(model.spec, state_dict=model.state_dict()))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), out)


# --- resolving the bounds -------------------------------------------------------------------------------

def test_config_bounds_win_over_metadata_and_null_drops_a_side():
    names = ("precipitation", "sic", "t2m")
    valid = {"precipitation": (0.0, np.inf), "sic": (0.0, 1.0), "t2m": (150.0, 350.0)}
    got = bd.resolve({"sic": [0, None], "t2m": [None, None]}, names, valid, method="block_mean", constrain=True)
    assert got == [(0.0, None), (0.0, None), (None, None)]
    assert bd.resolve({}, ("precipitation",), {}, method="bicubic", constrain=True) == [(None, None)]
    assert bd.resolve({"precipitation": ["1e-9", INF]}, ("precipitation",), {}, method="bicubic", constrain=False) == [(1e-9, None)]


@pytest.mark.parametrize("configured, fragment", [
    ({"rain": [0, None]}, "data.bounds names 'rain', which is not super-resolved"),
    ({"precipitation": [1, 0]}, "lower bound 1 must be below the upper bound 0"),
    ({"precipitation": [0, 0]}, "lower bound 0 must be below"),
    ({"precipitation": 0}, "must be [lo, hi]"),
    ({"precipitation": [0, "a"]}, "a bound must be a number or null"),
])
def test_bad_bounds_are_refused(configured, fragment):
    with pytest.raises(UserError, match=None) as exc:
        bd.check(configured, ("precipitation",), "block_mean", False)
    assert fragment in str(exc.value)


def test_metadata_bounds_with_a_constraint_that_cannot_keep_them_are_refused():
    with pytest.raises(UserError, match="bicubic and bounded variables .*valid_min"):
        bd.resolve({}, ("sic",), {"sic": (0.0, 1.0)}, method="bicubic", constrain=True)
    with pytest.raises(UserError, match="lower bound 2 must be below"):
        bd.resolve({}, ("sic",), {"sic": (2.0, 1.0)}, method="block_mean", constrain=False)


@pytest.mark.parametrize("norm", [Normaliser(0.0, 31.7), Normaliser(-0.3, 7.1), Normaliser(1e-8, 50.0), Normaliser(-10.0, 10.0),
                                  Normaliser(0.05, 0.97)])
def test_normalised_bounds_denormalise_within_the_physical_bounds(norm):
    """The in-model bounds are float32 numbers whose denormalisation, in float32 and in float64 as the
    outputs are denormalised, is never out of the physical bounds (0 stays >= 0, 1 stays <= 1)."""
    nb = bd.normalised([(0.0, 1.0)], [norm])
    lo, hi = nb["lo"][0], nb["hi"][0]
    assert np.float32(lo) == lo and np.float32(hi) == hi
    for dt in (torch.float32, torch.float64):
        assert float(norm.phys(torch.tensor([lo], dtype=dt))[0]) >= 0.0
        assert float(norm.phys(torch.tensor([hi], dtype=dt))[0]) <= 1.0
    assert abs(lo - norm.unit(0.0)) <= 1e-6 and abs(hi - norm.unit(1.0)) <= 1e-6
    assert bd.normalised([(None, None)], [norm]) is None


# --- runs: training, hpcvsr infer and the Python API ---------------------------------------------------

def train(tmp_path_factory, name: str, data: str, test: str, *extra) -> str:
    run = tmp_path_factory.mktemp(name) / "run"
    proc = run_cli("hpcvsr.train", "--run-dir", str(run), *sets(data__source="archive", data__path=data, data__test_path=test,
                                                                data__var="precipitation", degrade__method="block_mean", degrade__scale=SCALE,
                                                                pipeline="2d_3d"), *TINY, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bounded outputs" in proc.stdout and "precipitation [0, inf]" in proc.stdout, proc.stdout[-2000:]
    return str(run)


@pytest.fixture(scope="module")
def clipped(files, tmp_path_factory):
    """Bounds from valid_min of the training file, no constraint; clips of two centre frames (per-frame features shared)."""
    return train(tmp_path_factory, "clipped", files["train"], files["test"], "--set", "train3d.centres=2")


@pytest.fixture(scope="module")
def projected(files, tmp_path_factory):
    """Bounds from data.bounds (the file has no metadata), with the constraint."""
    return train(tmp_path_factory, "projected", files["bare"], files["test"], "--set", "degrade.constrain=true",
                 "--set", "data.bounds={precipitation: [0, null]}")


def infer(run: str, out, *extra) -> str:
    proc = run_cli("hpcvsr.infer", "--run-dir", run, "--output", str(out), "--set", "threads=1", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def consistency(sr: np.ndarray, coarse: np.ndarray) -> float:
    """Largest |block mean of the output - the input clipped to >= 0|, relative to the output's range."""
    bm = dg.block_mean(torch.from_numpy(np.asarray(sr, np.float64)), SCALE).numpy()
    return float(np.abs(bm - np.clip(coarse.astype(np.float64), 0, None)).max() / (np.nanmax(sr) - np.nanmin(sr)))


@pytest.mark.parametrize("which", ["clipped", "projected"])
def test_the_model_file_holds_the_bounds(which, request):
    run = request.getfixturevalue(which)
    mf = checkpoint.load_model(f"{run}/model.pt")
    assert mf.variables[0]["bounds"] == [0.0, None]
    outer = "constrained" if which == "projected" else "bounded"
    for entry in (mf.net2d, mf.model):
        assert entry["name"] == outer and entry["kwargs"]["lo"] == [0.0] and entry["kwargs"]["hi"] == [None]
    m = json.loads(open(f"{run}/metrics.json").read())
    assert m["bounds"] == {"precipitation": [0.0, None]}
    if which == "projected":  # every network row is consistent with its input and conserves the rain
        for method in ("2d", "2d_3d"):
            row = m["metrics"]["test"][method]
            assert row["mass_rel_err"] <= 1e-6 and row["consistency_rmse_phys"] <= 1e-6 * m["normalisation"]["hi"], (method, row)


@pytest.mark.parametrize("which", ["clipped", "projected"])
def test_infer_outputs_are_never_negative_and_consistent_with_the_constraint(which, request, files, tmp_path):
    run = request.getfixturevalue(which)
    infer(run, tmp_path / "sr.nc", "--input", files["lr"])
    infer(run, tmp_path / "sr.h5", "--input", files["lr"])
    stdout = infer(run, tmp_path / "deg.h5", "--input", files["test"], "--degrade")
    nc = xr.open_dataset(tmp_path / "sr.nc")["precipitation"]
    with h5py.File(tmp_path / "sr.h5") as f, h5py.File(tmp_path / "deg.h5") as g:
        h5, deg = f["sr"][:], g["sr"][:]
    assert nc.shape == h5.shape == (24, 32, 32) and np.array_equal(nc.values, h5)
    for sr in (h5, deg):
        assert float(np.nanmin(sr)) >= 0.0
    err = consistency(h5, files["coarse"])
    print(f"{which}: min {float(h5.min()):.3g}, max {float(h5.max()):.3g} kg m-2, consistency error {err:.3g} of the range")
    if which == "projected":
        assert err <= 1e-6
        gm = dict(kv.split(" ") for kv in stdout.split("global metrics: ")[1].strip().split(", "))
        assert float(gm["consistency_rmse_phys"]) <= 1e-6 * float(deg.max()) and float(gm["mass_rel_err"]) <= 1e-6
    else:
        assert err > 1e-3  # clipping alone adds rain where the network undershot


def test_python_api_gives_bounded_outputs_equal_to_infer(projected, clipped, files, tmp_path):
    import hpcvsr

    lr = xr.open_dataset(files["lr"])["precipitation"]
    torch.set_num_threads(1)  # the infer command's threads: outputs equal bitwise
    for name, run in (("projected", projected), ("clipped", clipped)):
        out = hpcvsr.load(run, device="cpu")(lr)
        assert out.dims == lr.dims and out.shape == (24, 32, 32) and out.attrs["units"] == "kg m-2"
        assert float(out.min()) >= 0.0
        tensor = hpcvsr.load(run, device="cpu")(torch.from_numpy(lr.values))
        assert float(tensor.min()) >= 0.0
        infer(run, tmp_path / f"{name}.nc", "--input", files["lr"])
        assert np.array_equal(xr.open_dataset(tmp_path / f"{name}.nc")["precipitation"].values, out.values)
        if name == "projected":
            assert consistency(out.values, files["coarse"]) <= 1e-6


@pytest.mark.parametrize("extra, fragment", [
    (["--set", "data.bounds={rain: [0, null]}"], "data.bounds names 'rain', which is not super-resolved"),
    (["--set", "data.bounds={precipitation: [1, 0]}"], "the lower bound 1 must be below the upper bound 0"),
    (["--set", "data.bounds={precipitation: [0, 0]}"], "the lower bound 0 must be below"),
    (["--set", "degrade.method=bicubic", "--set", "degrade.constrain=true"], "valid_min/valid_max/valid_range of data.path"),
    (["--set", "degrade.method=blur", "--set", "degrade.constrain=true", "--set", "data.bounds={precipitation: [0, null]}"],
     "no exact projection onto the bounded fields"),
])
def test_bad_bounds_are_refused_before_any_output(files, tmp_path, extra, fragment):
    run = tmp_path / "r"
    proc = run_cli("hpcvsr.train", "--run-dir", str(run), *sets(data__source="archive", data__path=files["train"], data__var="precipitation",
                                                                degrade__scale=SCALE), *extra)
    assert_user_error(proc, fragment)
    assert not run.exists()
