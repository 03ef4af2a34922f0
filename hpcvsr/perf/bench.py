"""Benchmark: how close hpcvsr runs to this machine's own peak, and against an earlier revision.

    python -m hpcvsr.bench --run-dir RUN [--compare-to REV] [--frames 300] [--size 128 128] [--json bench.json]

In one run it measures and prints:

* **peak**: this machine's matrix-multiply rate (a large GEMM) in fp32 and bf16, and the rate of
  the 3D network's dominant convolution shape (32 -> 32 channels, 3x3x3) on its own;
* **cost**: multiply-adds per output pixel of the run's 2D network, 3D network and both fused
  (:func:`hpcvsr.models.cost.macs`);
* **inference** of RUN's model in-process (2D only, 3D only, fused; fp32, bf16, bf16 compiled):
  frames/s, achieved GFLOP/s and the fraction of peak of its precision;
* **training** steps of each stage at the run's batch and patch sizes (fp32 and bf16 autocast):
  windows/s, GFLOP/s (forward + backward counted as 3 x the forward pass) and fraction of peak;
* **end to end**: ``python -m hpcvsr.infer --degrade`` on a generated shallow-water archive at
  each precision, with its PSNR and the HDF5 write rate;
* ``--compare-to REV``: REV's code (a git worktree) and the current code each train their default
  model (the quickstart) and super-resolve the same archive with their own ``hpcvsr.infer``; both
  rows are printed with the 3D stage's windows/s, held-out PSNR, inference frames/s and PSNR.

Timings are only comparable within one run (shared machines are noisy): compare ratios.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from functools import partial

import h5py
import numpy as np
import torch
import yaml

from hpcvsr import dist
from hpcvsr.errors import UserError, run_child
from hpcvsr.io import checkpoint
from hpcvsr.models import from_entry
from hpcvsr.models.cost import macs
from hpcvsr.pipeline import kinds
from hpcvsr.training.trainer import train_step

PRECISIONS = ("fp32", "bf16", "bf16+compile")


def seconds_per_call(f, min_seconds: float = 1.0, warm: int = 1) -> float:
    """Mean wall seconds of ``f()`` over as many calls as fill ``min_seconds`` (after ``warm`` calls)."""
    for _ in range(warm):
        f()
    n, t0 = 0, time.perf_counter()
    while True:
        f()
        n += 1
        if time.perf_counter() - t0 >= min_seconds:
            return (time.perf_counter() - t0) / n


def gemm_peak(dtype: torch.dtype, n: int = 2048, min_seconds: float = 1.0) -> float:
    """GFLOP/s of an n x n x n matrix multiply in ``dtype``: the machine's attainable peak."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / seconds_per_call(lambda: a @ b, min_seconds) / 1e9


@torch.no_grad()
def conv_peak(dtype: torch.dtype, min_seconds: float = 1.0) -> float:
    """GFLOP/s of the 3D network's dominant layer shape (32 -> 32 channels, 3x3x3, channels-last)
    alone, with no padding: the rate the convolution kernels reach on this shape."""
    conv = torch.nn.Conv3d(32, 32, 3).to(dtype).to(memory_format=torch.channels_last_3d)
    x = torch.randn(4, 32, 5, 66, 66).to(dtype).contiguous(memory_format=torch.channels_last_3d)
    flop = 2 * macs(conv, x)
    return flop / seconds_per_call(lambda: conv(x), min_seconds) / 1e9


def sequential_write(path: str, shape: tuple) -> float:
    """MB/s of writing float32 frames of ``shape`` one by one into a chunked dataset with plain h5py:
    what this file system gives one writer, to read the output's write rate against."""
    frame = np.random.default_rng(0).random(shape[1:], dtype=np.float32)
    t0 = time.time()
    with h5py.File(path, "w") as f:
        d = f.create_dataset("sr", shape=shape, dtype="f4", chunks=(1, *shape[1:]))
        for t in range(shape[0]):
            d[t] = frame
    rate = np.prod(shape) * 4 / 1e6 / (time.time() - t0)
    os.remove(path)
    return rate


def infer_cli(run_dir: str, archive: str, out: str, *, ranks: int = 1, sets=(), cwd=None, env=None) -> dict:
    """``python -m hpcvsr.infer --degrade`` of ``run_dir`` on ``archive`` (from ``cwd``'s code): its stats."""
    stats = out + ".stats.json"
    cmd = [sys.executable, "-m", "hpcvsr.infer", "--run-dir", run_dir, "--input", archive, "--output", out, "--degrade", "--stats", stats]
    for s in sets:
        cmd += ["--set", s]
    if ranks > 1:
        cmd = dist.mpirun_command(ranks) + cmd
    t0 = time.time()
    run_child(cmd, f"infer ({' '.join(sets) or 'defaults'}, {ranks} rank(s))", cwd=cwd, env=env)
    s = json.load(open(stats))
    m = s["metrics"] or {}
    return {"frames_per_s": s["frames_per_s"], "seconds": s["seconds"], "wall_with_startup_s": time.time() - t0,
            "write_MB_per_s": s["write_MB_per_s"], "write_mode": s["write_mode"], "psnr": m.get("psnr"), "ssim": m.get("ssim")}


def _lr_frames(archive: str, run_dir: str, frames: int) -> tuple[torch.Tensor, object]:
    """The first ``frames`` frames of ``archive``, normalised and degraded as ``run_dir``'s model expects."""
    from hpcvsr.data.blocks import unit
    from hpcvsr.inference.engine import Predictor
    from hpcvsr.ops import degrade as dg

    pred = Predictor(run_dir, torch.device("cpu"))
    with h5py.File(archive) as f:
        key = next(k for k in ("h", "data") if k in f)
        hr = torch.from_numpy(f[key][:frames].astype(np.float32))[:, None]
    method = "block_mean" if pred.degrade in dg.PAIRED else pred.degrade  # a paired model's inputs: frames of a coarse grid alike
    return dg.degrade(unit(pred.norms, hr), pred.scale, method, pred.sigma), pred


def _each(net, inputs: list) -> None:
    for x in inputs:
        net(x)


def inference_parts(run_dir: str, lr: torch.Tensor, *, batch: int, peaks: dict, min_seconds: float, precisions=PRECISIONS) -> list[dict]:
    """In-process frames/s, GFLOP/s and fraction of peak of the 2D stage, the 3D stage and both
    fused (Predictor.predict) at each precision, on the LR frames ``lr`` (T, C, h, w). The
    multiply-adds are counted on the very calls timed (shared windows included)."""
    from hpcvsr.inference.engine import Predictor
    from hpcvsr.ops import windows as win

    rows = []
    T = len(lr)
    for precision in precisions:
        pred = Predictor(run_dir, torch.device("cpu"), batch=batch, precision=precision.split("+")[0], compile="compile" in precision)
        if pred.net is None:
            raise UserError(f"{run_dir}: the bench times a model with a 3D stage (pipeline {pred.pipeline})")
        idx = win.window_indices(np.arange(T), T, pred.win_size)
        with torch.no_grad():
            sr2d = torch.cat([pred.net2d(lr[i : i + batch]) for i in range(0, T, batch)])
            parts = {"2D": partial(_each, pred.net2d, [lr[i : i + batch] for i in range(0, T, batch)]),
                     "3D": partial(pred.windows_3d, sr2d, idx), "fused": partial(pred.predict, lr, idx)}
            for part, f in parts.items():
                count = macs(torch.nn.ModuleList([pred.net2d, pred.shared or pred.net]), call=f) if "compile" not in precision else None
                s = seconds_per_call(f, min_seconds)
                row = {"part": part, "precision": precision, "frames_per_s": T / s, "macs_per_frame": count / T if count else None}
                rows.append(row)
        if pred.gen is not None:  # a generative stage: members/s beside the deterministic frames/s, one network pass per member
            rows.append(_members_row(run_dir, lr, idx, batch=batch, precision=precision, min_seconds=min_seconds, deterministic=s))
    for row in rows:  # compiled networks hide their layers from the hooks: the same arithmetic as uncompiled
        if row["macs_per_frame"] is None:
            row["macs_per_frame"] = next(r["macs_per_frame"] for r in rows if r["part"] == row["part"] and r["macs_per_frame"])
        pk = peaks["bf16" if row["precision"].startswith("bf16") else "fp32"]
        row["GFLOP_per_s"] = 2 * row["macs_per_frame"] * row["frames_per_s"] / 1e9
        row["fraction_of_peak"] = row["GFLOP_per_s"] / pk
    return rows


GEN_MEMBERS = 4  # members per frame in the bench's ensemble row


def _members_row(run_dir: str, lr: torch.Tensor, idx, *, batch: int, precision: str, min_seconds: float, deterministic: float) -> dict:
    """The fused pipeline with :data:`GEN_MEMBERS` members per frame: frames/s, members/s, what a member
    costs beside the deterministic output (``deterministic``: its seconds per call) and the sampler's steps."""
    from hpcvsr.inference.engine import Predictor

    T = len(lr)
    pred = Predictor(run_dir, torch.device("cpu"), batch=batch, precision=precision.split("+")[0], members=GEN_MEMBERS)
    f = partial(pred.predict, lr, idx)
    count = macs(torch.nn.ModuleList([pred.net2d, pred.shared or pred.net, pred.gen]), call=f)
    with torch.no_grad():
        s = seconds_per_call(f, min_seconds)
    return {"part": f"fused + {GEN_MEMBERS} members", "precision": precision, "frames_per_s": T / s, "members_per_s": T * GEN_MEMBERS / s,
            "member_cost_vs_deterministic": (s - deterministic) / GEN_MEMBERS / deterministic, "sampler_steps": 1,
            "macs_per_frame": count / T}


def training_steps(run_dir: str, *, peaks: dict, min_seconds: float) -> list[dict]:
    """Windows/s, GFLOP/s and fraction of peak of one optimisation step of each stage of the
    run's pipeline, at its configured per-rank batch and patch, on random data (the step's cost
    does not depend on the values), fp32 and bf16 autocast."""
    mf = checkpoint.load_model(os.path.join(run_dir, "model.pt"))
    cfg, s = mf.config, mf.scale
    kind = kinds.kind(mf.pipeline)
    stages = [("2D", from_entry(mf.net2d), "train2d", 1)] if kind.trains_2d else []
    if kind.has_3d:
        stages.append(("3D", from_entry(mf.model), "train3d", mf.window))
    rows = []
    g = torch.Generator().manual_seed(0)
    for stage, net, key, window in stages:
        t = cfg.get(key, {})
        b, p = int(t.get("batch_size", 16)), int(t.get("patch", 48))
        c = len(mf.variables or [None])
        lr_in = net.input_space == "lr" or stage == "2D"
        side = p // s if lr_in else p
        x = torch.rand((b, window, c, side, side), generator=g)
        x = x[:, 0] if window == 1 else (x[:, :, 0] if c == 1 else x)
        y = torch.rand((b, c, p - 2 * mf.crop, p - 2 * mf.crop), generator=g) if stage == "3D" else torch.rand((b, c, p, p), generator=g)
        flop = 3 * 2 * macs(net, x)
        for precision in ("fp32", "bf16"):
            net.train()
            opt = torch.optim.Adam(net.parameters(), lr=1e-6)
            sec = seconds_per_call(partial(train_step, net, opt, x, y, precision=precision), min_seconds)
            gflops = flop / sec / 1e9
            rows.append({"stage": stage, "precision": precision, "batch": b, "patch": p, "windows_per_s": b / sec,
                         "GFLOP_per_s": gflops, "fraction_of_peak": gflops / peaks[precision]})
    return rows


def _repo_root() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(["git", "-C", here, "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if proc.returncode:
        raise UserError("--compare-to needs hpcvsr run from a git checkout (pip install -e . or the repository itself)")
    return proc.stdout.strip()


def _train_summary(run_dir: str) -> dict:
    """Held-out PSNR and each stage's epochs, seconds (training and per-epoch evaluation) and windows/s of a run."""
    m = json.load(open(os.path.join(run_dir, "metrics.json")))
    cfg = yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))
    test = m["metrics"]["test"]
    out = {"seconds": m.get("seconds"), "psnr_2d": test[kinds.STAGE_2D]["psnr"], "psnr_final": test[m["pipeline"]]["psnr"]}
    for label, stage, key in (("2D", kinds.STAGE_2D, "train2d"), ("3D", m["pipeline"], "train3d")):
        h = m["history"].get(stage)
        if h:
            epochs = h[-1]["epoch"]
            windows = epochs * int(cfg[key]["patches_per_epoch"])
            out[label] = {"epochs": epochs, "stage_seconds": h[-1]["seconds"], "windows_per_s": windows / max(1e-9, h[-1]["seconds"])}
    return out


def compare_revisions(rev: str, archive: str, work: str, *, train_sets=(), infer_sets=(), env=None) -> dict:
    """REV's code and the current code each train their default model (the current code also with
    ``train_sets``, when given) and super-resolve ``archive`` with their own ``hpcvsr.infer``
    (the current models also with ``infer_sets``). {label: {"train": ..., "infer": {label: stats}}}."""
    root = _repo_root()
    wt = os.path.join(work, "rev")
    run_child(["git", "-C", root, "worktree", "add", "--detach", wt, rev], f"git worktree add {rev}")
    try:
        sha = run_child(["git", "-C", wt, "rev-parse", "--short", "HEAD"], "git rev-parse").stdout.strip()
        variants = [(f"{rev} ({sha})", wt, ())]
        variants += [("current", root, ())] + ([("current, " + " ".join(train_sets), root, tuple(train_sets))] if train_sets else [])
        out = {}
        for i, (label, code, tsets) in enumerate(variants):
            run = os.path.join(work, f"run{i}")
            cmd = [sys.executable, "-m", "hpcvsr.train", "--run-dir", run]
            for s in tsets:
                cmd += ["--set", s]
            code_env = dict(env or os.environ, PYTHONPATH=code)
            t0 = time.time()
            run_child(cmd, f"training with {label}", cwd=code, env=code_env)
            row = {"train": _train_summary(run), "train_wall_s": time.time() - t0, "infer": {}}
            for isets in [()] + ([tuple(infer_sets)] if infer_sets and code == root else []):
                name = " ".join(isets) or "defaults"
                row["infer"][name] = infer_cli(run, archive, os.path.join(work, f"sr{i}_{len(row['infer'])}.h5"), sets=isets, cwd=code, env=code_env)
            out[label] = row
        return out
    finally:
        subprocess.run(["git", "-C", root, "worktree", "remove", "--force", wt], capture_output=True)


def _print_tables(res: dict) -> None:
    pk = res["peak"]
    print(f"{res['cores']} cores, {res['threads']} threads; measured GFLOP/s: GEMM fp32 {pk['gemm_fp32']:.0f}, bf16 {pk['gemm_bf16']:.0f}; "
          f"conv3d 32->32 fp32 {pk['conv3d_fp32']:.0f}, bf16 {pk['conv3d_bf16']:.0f}; peak (the larger) fp32 {pk['fp32']:.0f}, bf16 {pk['bf16']:.0f}")
    c = res["macs_per_output_pixel"]
    print("multiply-adds per output pixel: " + ", ".join(f"{k} {v:.0f}" for k, v in c.items()))
    print("\n| inference (in-process) | precision | frames/s | members/s | GFLOP/s | % of peak |\n|---|---|---|---|---|---|")
    for r in res["inference"]:
        members = "-"
        if "members_per_s" in r:
            members = f"{r['members_per_s']:.1f} ({r['sampler_steps']} pass each, {r['member_cost_vs_deterministic']:.2f}x a frame)"
        print(f"| {r['part']} | {r['precision']} | {r['frames_per_s']:.1f} | {members} | {r['GFLOP_per_s']:.0f} | {100 * r['fraction_of_peak']:.0f} |")
    print("\n| training step | precision | batch x patch | windows/s | GFLOP/s | % of peak |\n|---|---|---|---|---|---|")
    for r in res["training"]:
        print(f"| {r['stage']} | {r['precision']} | {r['batch']} x {r['patch']} | {r['windows_per_s']:.0f} | {r['GFLOP_per_s']:.0f} | "
              f"{100 * r['fraction_of_peak']:.0f} |")
    print("\n| hpcvsr.infer --degrade | frames/s | PSNR (dB) | SSIM | writes MB/s |\n|---|---|---|---|---|")
    for k, r in res["end_to_end"].items():
        print(f"| {k} | {r['frames_per_s']:.1f} | {r['psnr']:.3f} | {r['ssim']:.5f} | {r['write_MB_per_s']:.0f} |")
    print(f"plain sequential h5py write of the same bytes: {res['sequential_write_MB_per_s']:.0f} MB/s")
    if res.get("compare"):
        rows = list(res["compare"].items())
        base_train, base_infer = rows[0][1]["train"]["3D"], next(iter(rows[0][1]["infer"].values()))
        print("\n| code | 3D stage windows/s (incl. evaluation) | 3D stage s (epochs) | held-out PSNR 2D / 2D->3D | inference | frames/s | PSNR |")
        print("|---|---|---|---|---|---|---|")
        for label, r in rows:
            t, t3 = r["train"], r["train"]["3D"]
            for i, (name, inf) in enumerate(r["infer"].items()):
                head = (f"| {label} | {t3['windows_per_s']:.0f} ({t3['windows_per_s'] / base_train['windows_per_s']:.2f}x) | "
                        f"{t3['stage_seconds']:.0f} ({t3['epochs']}) | {t['psnr_2d']:.2f} / {t['psnr_final']:.2f}") if i == 0 else "| | | |"
                print(f"{head} | {name} | {inf['frames_per_s']:.1f} ({inf['frames_per_s'] / base_infer['frames_per_s']:.2f}x) | {inf['psnr']:.3f} |")

