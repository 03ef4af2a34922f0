"""Scaling studies: weak and strong scaling of 2D training, 3D training and archive inference.

    python -m hpcvsr.scaling --out DIR --sweep 1 2          one node: runs itself under mpirun at each rank count
    mpirun -n N python -m hpcvsr.scaling --out DIR          one rank count (srun / jsrun alike): DIR/ranks<N>.json
    python -m hpcvsr.scaling --out DIR --report             DIR/ranks*.json -> DIR/scaling.json, scaling.png, a table

Each rank count runs, with the project's networks (built from ``--config`` / ``--set`` as training
builds them), shallow-water data generated into ``DIR/data`` and the training patch assembly
(:class:`~hpcvsr.training.patches.PatchTask`):

* **weak** scaling (a fixed per-rank batch ``--batch``, a fixed number of frames per rank
  ``--frames``) and **strong** scaling (a fixed global batch ``--strong-batch``, a fixed archive
  of ``--strong-frames`` frames) of
* **train2d** and **train3d** steps, and **infer**: chunks of an archive read, super-resolved with
  :class:`~hpcvsr.inference.engine.Predictor` and written with :class:`~hpcvsr.io.h5out.SROutput`. Without
  ``--run-dir`` the predictor holds freshly initialised networks of the configured shapes: the
  time of a forward pass does not depend on the weights.

Every step (inference: every round of one chunk per rank) records on every rank the seconds in

* ``data``: batch assembly (inference: reading, normalising and degrading the chunk);
* ``compute``: forward and backward pass and the optimizer update (inference: the forward passes);
* ``wait``: a barrier after the backward pass (inference: after the chunk), the time this rank
  waits for the slowest one (load imbalance and noise);
* ``allreduce``: packing the gradients into one buffer, one all-reduce of it and unpacking; its
  size in bytes is recorded;
* ``write``: writing the chunk's output (training steps write nothing);
* ``step``: the whole step; ``other`` = step minus the parts;
* ``compute_cpu``: the CPU time of the rank's thread during ``compute`` (not a part of the step):
  ``compute_cpu / compute`` is the share of a core the rank had while computing (below 100 % when
  ranks and other processes outnumber the cores).

To separate compute from communication honestly the training steps do **not** use
DistributedDataParallel, whose bucketed all-reduces overlap the backward pass: the plain
network's backward runs to the end, then one explicit all-reduce of the flattened gradients
(the sum, divided by the number of ranks) is timed. A production run with DDP overlaps part of
the all-reduce with the backward pass, so its steps are at most as long as these.

Per-step values are gathered across ranks in one collective per study (each rank fills its own
row of a zero tensor, then one all-reduce sum) and summarised as min/mean/max over ranks of the
per-rank mean over the timed steps. Efficiency: weak ``t(1) / t(N)``, strong ``t(1) / (N t(N))``,
with ``t`` the mean step time (training) or the time to process the rank's frames (inference).

**Time to accuracy.** Each rank count also trains the 2D network from the same start for
``--accuracy-epochs`` epochs of ``train2d.patches_per_epoch`` patches at the weak global batch
``N * --batch``, with the learning rate scaled by ``--lr-rule`` (:func:`lr_factor`):
``lr = train2d.lr * f(global batch / --base-batch)`` (linear: f(k) = k, sqrt: f(k) = sqrt(k),
none: f(k) = 1), reached by a linear warm-up over ``--lr-warmup`` epochs, and reports the
validation PSNR reached.

**Loaded steps** (``--loaded``, the default, with more than one rank): every timed step (inference:
round) is paired with a loaded step just before it, the same work on every rank at the same moments
with neither the barrier nor the all-reduce, followed by an untimed barrier. Its times are what a
rank computes while the node's other cores compute too; taken in the same run, a step apart from
the measured ones, they see the same state of a shared machine. They are recorded apart
(``loaded`` in each study) and are not part of the measured steps.

The report calibrates :mod:`hpcvsr.perf.perfmodel` from the one-rank run (compute and data time per
sample, gradient bytes, FLOPs per sample) and, for ranks that share a node, from the loaded steps
(compute and data time; the waiting a barrier at their end would have caused), and the network
(all-reduce and barrier) from the run's own benchmark. It checks the model against the measured
rank counts with the machine file ``--this-machine`` (the communication and the waiting are
predicted, not measured) and predicts the machines ``--machines`` (configs/machines/).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F

from hpcvsr import dist
from hpcvsr.data import blocks as bl
from hpcvsr.data import sources
from hpcvsr.data.blocks import phys, unit
from hpcvsr.errors import UserError
from hpcvsr.inference.engine import Predictor
from hpcvsr.io import checkpoint, h5out
from hpcvsr.io.atomic import write_json
from hpcvsr.io.sequences import MultiArchive
from hpcvsr.models.conditioning import run as run_net
from hpcvsr.ops import degrade as dg
from hpcvsr.ops import windows as win
from hpcvsr.perf import perfmodel as pm
from hpcvsr.pipeline import build, kinds
from hpcvsr.pipeline import config as config_mod
from hpcvsr.pipeline import segments as sg
from hpcvsr.training.patches import PatchTask, prepare_inputs
from hpcvsr.training.trainer import evaluate, per_rank_batch, warm_up

QUANTITIES = ("compute", "allreduce", "data", "write", "wait", "step", "compute_cpu")
PARTS = QUANTITIES[:5]  # the parts of "step"; "compute_cpu" is the CPU time of this rank's thread during "compute"
WORKLOADS = ("train2d", "train3d", "infer")
MODES = ("weak", "strong")
LR_RULES = ("linear", "sqrt", "none")
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the machine files ship in the package
DEFAULT_MACHINES = [os.path.join(PACKAGE, "configs", "machines", f) for f in ("summit.yaml", "perlmutter.yaml")]
THIS_MACHINE = os.path.join(PACKAGE, "configs", "machines", "this_machine.yaml")
PREDICT_RANKS = (6, 96, 1024, 27648)


def lr_factor(rule: str, k: float) -> float:
    """The learning-rate multiplier for a global batch ``k`` times the base batch.

    >>> lr_factor("linear", 4), lr_factor("sqrt", 4), lr_factor("none", 4)
    (4.0, 2.0, 1.0)
    """
    if rule == "linear":
        return float(k)
    if rule == "sqrt":
        return math.sqrt(k)
    if rule == "none":
        return 1.0
    raise UserError(f"--lr-rule must be one of {', '.join(LR_RULES)}, got '{rule}'")


def summarise(rows: torch.Tensor) -> dict:
    """{quantity: {min, mean, max}} over ranks of the per-rank mean over steps of ``rows`` (ranks, steps, quantities).

    >>> s = summarise(torch.tensor([[[1.0, 0, 0, 0, 0, 2.0, 1.0]], [[3.0, 0, 0, 0, 0, 4.0, 2.0]]]))
    >>> s["compute"], s["step"]["mean"]
    ({'min': 1.0, 'mean': 2.0, 'max': 3.0}, 3.0)
    """
    per_rank = rows.double().mean(1)
    return {q: {"min": float(per_rank[:, i].min()), "mean": float(per_rank[:, i].mean()), "max": float(per_rank[:, i].max())}
            for i, q in enumerate(QUANTITIES)}


def own_time(rows: torch.Tensor) -> torch.Tensor:
    """(ranks, steps): each rank's own time in each step of ``rows`` (ranks, steps, quantities), the host and
    compute parts before the step's collective."""
    return rows[:, :, [QUANTITIES.index(q) for q in ("compute", "data", "write")]].double().sum(-1)


def jitter(rows: torch.Tensor) -> float:
    """The per-step spread (std / mean over steps, averaged over ranks) of each rank's own time, the
    host and compute parts before the step's collective (``rows``: (ranks, steps, quantities)).

    >>> round(jitter(torch.tensor([[[1.0, 0, 0, 0, 0, 1, 1]], [[1.0, 0, 0, 0, 0, 1, 1]]]).repeat(1, 2, 1)), 3)
    0.0
    """
    own = own_time(rows)
    if own.shape[1] < 2:
        return 0.0
    return float((own.std(1) / own.mean(1).clamp_min(1e-12)).mean())


def would_wait(rows: torch.Tensor, barrier_s: float = 0.0) -> float:
    """The waiting, beyond the barrier's own cost, that steps of ``rows`` (ranks, steps, quantities),
    started together, would have had with a barrier at their end, as a fraction of a rank's time.

    A rank leaves a barrier of cost ``barrier_s`` (the time it takes when every rank arrives at once)
    once the last of the *other* ranks has arrived plus that cost: it waits ``max(0, max_{r' != r}
    t_r' + barrier_s - t_r)`` for the host and compute time ``t`` of the step (a late rank finds the
    others' messages there). The mean of that over ranks and steps, minus ``barrier_s``, over the mean
    ``t``; steps where some rank had no work (inference) are left out.

    >>> rows = torch.zeros(2, 2, len(QUANTITIES))
    >>> rows[:, :, 0] = torch.tensor([[1.0, 3.0], [3.0, 1.0]])  # compute: each step one rank 1 s, the other 3 s
    >>> would_wait(rows)  # the early rank waits 2 s, the late one 0: 1 s on average, over a mean of 2 s
    0.5
    >>> would_wait(rows, barrier_s=0.5)  # 2.5 s and 0 s: 1.25 s, 0.75 s more than the barrier alone
    0.375
    """
    own = own_time(rows)
    own = own[:, (rows[:, :, QUANTITIES.index("compute")] > 0).all(0)]  # steps where every rank had work
    if own.shape[0] < 2 or own.shape[1] == 0:
        return 0.0
    top2 = own.topk(2, dim=0).values  # (2, steps): the latest and second latest arrival of each step
    others = torch.where(own == top2[0], top2[1], top2[0])  # the latest arrival among the other ranks
    waits = (others + barrier_s - own).clamp_min(0.0)
    return float((waits.mean() - barrier_s).clamp_min(0.0) / own.mean().clamp_min(1e-12))


def gather_rows(env: dist.DistEnv, rows: list) -> torch.Tensor:
    """Every rank's (steps, quantities) rows as (ranks, steps, quantities), in one collective."""
    mine = torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(QUANTITIES))
    box = torch.zeros((env.world, *mine.shape), dtype=torch.float64)
    box[env.rank] = mine
    return env.all_reduce_sum(box.to(env.device)).cpu()


# --- measurement -------------------------------------------------------------------------------

def timer(device: torch.device):
    """``time.perf_counter`` that first waits for the device's queued work (CUDA runs asynchronously)."""
    if device.type != "cuda":
        return time.perf_counter

    def clock() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return clock


def _ensure_swe(path: str, frames: int, size, seed: int, env) -> None:
    if env.is_root and not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sources.generate("swe", frames, size, seed).write(path)
    env.barrier()


def flops_per_sample(net, x: torch.Tensor, where) -> float:
    """Floating-point operations of one training sample (forward and backward pass), counted by torch
    (the sample ``x`` is a batch of one; ``where``: its places, for a conditioned network)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        run_net(net, x, where).sum().backward()
    net.zero_grad(set_to_none=True)
    return float(fc.get_total_flops())


def average_gradients(params: list, env: dist.DistEnv) -> None:
    """The gradients of ``params`` averaged over ranks: packed into one buffer, one all-reduce, unpacked."""
    flat = env.all_reduce_sum(torch.cat([p.grad.reshape(-1) for p in params])) / env.world
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


def train_steps(task: PatchTask, net, env, b_local: int, steps: int, warmup: int, lr: float, seed: int,
                loaded: bool = False) -> tuple[list, list, int]:
    """Timed training steps (see the module docstring); (rows of QUANTITIES per timed step, rows of the
    loaded steps, gradient bytes). With ``loaded`` every timed step is preceded by a loaded step: the
    same work with neither the barrier nor the all-reduce, followed by an untimed barrier so that the
    measured step starts together on every rank."""
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    nbytes = sum(p.numel() * p.element_size() for p in params)
    n = warmup + steps * (2 if loaded else 1)  # batches: the warm-up, the timed steps and their loaded twins
    origins = iter(np.array_split(task.sample(np.random.default_rng([seed, env.rank]), n * b_local), n))
    clock = timer(env.device)

    def step(communicate: bool) -> list:
        t0 = clock()
        x, y, where = task.batch(next(origins))
        t1, c1 = clock(), time.thread_time()
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(run_net(net, x, where), y)
        loss.backward()
        t2, c2 = clock(), time.thread_time()
        if communicate:
            env.barrier()
        t3 = clock()
        if communicate:
            average_gradients(params, env)
        t4, c4 = clock(), time.thread_time()
        opt.step()
        t5, c5 = clock(), time.thread_time()
        return [(t2 - t1) + (t5 - t4), t4 - t3, t1 - t0, 0.0, t3 - t2, t5 - t0, (c2 - c1) + (c5 - c4)]

    rows, busy = [], []
    env.barrier()  # every rank starts the study together
    for i in range(warmup + steps):
        if loaded and i >= warmup:
            busy.append(step(communicate=False))
            env.barrier()  # untimed: the measured step starts together
        row = step(communicate=True)
        if i >= warmup:
            rows.append(row)
    return rows, busy, nbytes


def infer_rounds(pred: Predictor, path: str, var: str, frames: int, out_path: str, env, block: int, loaded: bool = False) -> tuple[list, list, dict]:
    """Timed inference of the first ``frames`` frames of ``path`` in chunks of ``block`` (every rank its
    block of chunks, one chunk per round, ranks with fewer chunks waiting); (rows, rows of the loaded
    rounds, byte counts). With ``loaded`` every round is preceded by a loaded round: the same chunk
    read, super-resolved and written without the barrier, then an untimed barrier."""
    chunk_list = win.chunks(frames, block)
    if len(chunk_list) < env.world:
        raise UserError(f"{frames} frames in chunks of {block} give {len(chunk_list)} chunks for {env.world} ranks")
    mine = list(range(*win.block_range(len(chunk_list), env.world, env.rank)))
    rounds = math.ceil(len(chunk_list) / env.world)
    arcs = MultiArchive(path, [var])
    _, H, W = arcs.shape
    s, c = pred.scale, pred.crop
    h, w = H // s, W // s
    rows_, cols_ = (slice(0, h * s) if H % s else None), (slice(0, w * s) if W % s else None)
    shape = (frames, h * s - 2 * c, w * s - 2 * c)
    out = h5out.SROutput(out_path, shape, chunk_list, {"scale": s}, env, overwrite=True)
    clock = timer(env.device)
    count = {"read_bytes": 0, "written_bytes": 0}

    def chunk_inputs(cid: int):
        a, b = chunk_list[cid]
        r0, r1 = win.halo_range(a, b, frames, pred.halo)
        raw = arcs.read(r0, r1, rows_, cols_)
        lr = dg.degrade(unit(pred.norms, torch.from_numpy(raw).to(env.device)), s, pred.degrade, pred.sigma)
        return raw, lr, win.local_window_indices(np.arange(a, b), frames, r0, r1, pred.win_size, pred.pad)

    def one_round(r: int, communicate: bool, counted: bool) -> list:
        t0 = t1 = t2 = t3 = clock()
        c1 = c2 = 0.0
        if r < len(mine):
            raw, lr, idx = chunk_inputs(mine[r])
            t1, c1 = clock(), time.thread_time()
            data = phys(pred.norms, pred.predict(lr, idx)).float().cpu().numpy()[:, 0]
            t2, c2 = clock(), time.thread_time()
            out.write(mine[r], data)
            t3 = clock()
            if counted:
                count["read_bytes"] += raw.nbytes
                count["written_bytes"] += data.nbytes
        if communicate:
            env.barrier()
        t4 = clock()
        return [t2 - t1, 0.0, t1 - t0, t3 - t2, t4 - t3, t4 - t0, c2 - c1]

    rows, busy = [], []
    try:
        # the first chunk once, untimed and not written: first-call costs of the networks, and the FLOPs per frame
        from torch.utils.flop_counter import FlopCounterMode

        _, lr, idx = chunk_inputs(mine[0])
        with FlopCounterMode(display=False) as fc:
            pred.predict(lr, idx)
        flops = fc.get_total_flops() / (chunk_list[mine[0]][1] - chunk_list[mine[0]][0])
        env.barrier()
        for r in range(rounds):
            if loaded:
                busy.append(one_round(r, communicate=False, counted=False))
                env.barrier()  # untimed: the measured round starts together
            rows.append(one_round(r, communicate=True, counted=True))
        out.finish(None)
    finally:
        arcs.close()
    env.barrier()
    if env.is_root:
        for p in (out_path, out_path + ".parts", out_path + ".partial"):
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.exists(p):
                os.remove(p)
    return rows, busy, {**count, "chunks": len(mine), "rounds": rounds, "flops_per_frame": flops}


def inference_frames(args, block: int) -> tuple[int, int]:
    """(weak frames per rank, strong frames in all): ``--frames`` and ``--strong-frames``, by default
    ``--steps`` chunks of ``block`` frames per rank (weak) and twice that in all (strong).

    >>> inference_frames(argparse.Namespace(frames=None, strong_frames=None, steps=10), 4)
    (40, 80)
    """
    per_rank = args.frames if args.frames is not None else args.steps * block
    return per_rank, (args.strong_frames if args.strong_frames is not None else 2 * args.steps * block)


def loaded_record(env, busy: list, barrier_s: float, chunks: int | None = None) -> dict:
    """The loaded steps of one study, gathered from every rank: ``time_s`` as :func:`summarise`,
    ``jitter_fraction`` the step-to-step spread within a rank (:func:`jitter`), ``wait_fraction`` the
    waiting a barrier of cost ``barrier_s`` at their end would have added (:func:`would_wait`);
    ``chunks``: the rounds a rank has work in (inference)."""
    everyone = gather_rows(env, busy)
    own = everyone if chunks is None else everyone[:, :chunks]
    return {"ranks": env.world, "time_s": summarise(everyone), "jitter_fraction": jitter(own),
            "wait_fraction": would_wait(everyone, barrier_s), "barrier_s": barrier_s}


def network_benchmark(env, sizes=(4096, 4 << 20), reps: int = 40, busy_s: float = 0.005) -> dict | None:
    """Latency and bandwidth of this process group, fitted to the ring formula from all-reduces of two
    sizes. Each timed all-reduce follows ``busy_s`` of computation and a barrier, as in a training step
    (an all-reduce right after another is faster than one after compute: the peer's threads are awake),
    and the mean over ``reps`` is used, not the median: the model predicts mean step times. The barrier
    is timed the same way, right after the burst (as in a step, where it follows the computation)."""
    if not env.distributed:
        return None
    times, clock = [], timer(env.device)
    a = torch.randn(128, 128)

    def burst() -> None:
        t_busy = time.perf_counter()
        while time.perf_counter() - t_busy < busy_s:
            a @ a

    env.barrier()
    bars = []
    for _ in range(reps):
        burst()
        t0 = clock()
        env.barrier()
        bars.append(clock() - t0)
    for n in sizes:
        buf = torch.ones(n // 4, dtype=torch.float32, device=env.device)
        env.all_reduce_sum(buf)
        got = []
        for _ in range(reps):
            burst()
            env.barrier()
            t0 = clock()
            env.all_reduce_sum(buf)
            got.append(clock() - t0)
        times.append(float(np.mean(got)))
    times = env.all_reduce_max(torch.tensor(times, dtype=torch.float64, device=env.device)).tolist()
    barrier_s = float(env.all_reduce_sum(torch.tensor([float(np.mean(bars))], dtype=torch.float64, device=env.device))[0]) / env.world
    p = env.world
    f = 2 * (p - 1) / p
    bw = f * (sizes[1] - sizes[0]) / max(1e-12, times[1] - times[0])
    lat = max(0.0, (times[0] - f * sizes[0] / bw) / (2 * (p - 1)))
    return {"sizes_bytes": list(sizes), "seconds": times, "latency_s": lat, "bandwidth_Bps": bw, "barrier_s": barrier_s,
            "fit": "ring: 2(p-1)/p bytes/bw + 2(p-1) latency; mean of all-reduces after a burst of compute and a barrier"}


def accuracy(cfg, task: PatchTask, env, args) -> dict:
    """Train the 2D network from its configured start for ``--accuracy-epochs`` at the weak global batch;
    the validation PSNR reached (see the module docstring)."""
    t = cfg.train2d
    b_local = args.batch
    G = b_local * env.world
    if t.patches_per_epoch % G:
        raise UserError(f"train2d.patches_per_epoch={t.patches_per_epoch} is not a multiple of the global batch {G} ({env.world} x --batch)")
    steps = t.patches_per_epoch // G
    lr = t.lr * lr_factor(args.lr_rule, G / args.base_batch)
    net = build.stage_2d(cfg).net  # seeded by train2d.seed
    net.to(env.device)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    history = [evaluate(task, net, env, "val")["psnr"]]
    t0 = time.time()
    for epoch in range(args.accuracy_epochs):
        origins = task.sample(np.random.default_rng([t.seed, epoch, env.rank]), steps * b_local)
        for step in range(steps):
            if args.lr_warmup:
                warm_up(opt, [lr], epoch * steps + step, args.lr_warmup * steps)
            x, y, where = task.batch(origins[step * b_local : (step + 1) * b_local])
            opt.zero_grad(set_to_none=True)
            F.mse_loss(run_net(net, x, where), y).backward()
            average_gradients(params, env)
            opt.step()
        history.append(evaluate(task, net, env, "val")["psnr"])
    return {"epochs": args.accuracy_epochs, "global_batch": G, "steps_per_epoch": steps, "base_lr": t.lr, "base_batch": args.base_batch,
            "lr_rule": args.lr_rule, "lr": lr, "warmup_epochs": args.lr_warmup, "val_psnr_initial": history[0],
            "val_psnr": history[-1], "val_psnr_per_epoch": history[1:], "train_seconds": time.time() - t0}


def measure(cfg, env, args) -> int:
    """One rank count: every study, then ``DIR/ranks<N>.json`` (rank 0). With more than one rank and
    ``--loaded`` each timed step is paired with a loaded step (see :func:`train_steps`)."""
    loaded = args.loaded and env.world > 1
    tag = str(env.world)  # this run's own file names under DIR/work
    out_json = os.path.join(args.out, f"ranks{env.world}.json")
    if env.broadcast_object(os.path.exists(out_json)) and not args.force:  # every rank decides alike
        raise UserError(f"{out_json} exists; refusing to overwrite it (pass --force, or use another --out)")
    if cfg.data.source != "swe" or len(config_mod.variables(cfg)) > 1 or config_mod.conditioned(cfg):
        raise UserError("the scaling study generates one shallow-water variable: data.source must be swe, with one data.var and no conditioning")
    for name in ("batch", "strong_batch", "frames", "strong_frames", "steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    s, var, k = cfg.degrade.scale, cfg.data.var, kinds.kind(cfg.pipeline)
    size, frames = cfg.data.size, cfg.data.frames
    data_dir = os.path.join(args.out, "data")
    if env.is_root:
        os.makedirs(os.path.join(args.out, "work"), exist_ok=True)
    train_path = os.path.join(data_dir, f"swe_seed{cfg.data.seeds[0]}_{frames}x{size[0]}x{size[1]}.h5")
    _ensure_swe(train_path, frames, size, cfg.data.seeds[0], env)
    (_, t1), (v0, _) = win.split_train_val(frames, cfg.data.val_fraction)
    seg = bl.Segment(train_path, var, 0, frames)
    train_seg, val_seg = dataclasses.replace(seg, stop=t1, name="train"), dataclasses.replace(seg, start=v0, name="val")
    for sgm in (train_seg, val_seg):
        if sgm.n < max(env.world, k.window(cfg.windows.size)):
            raise UserError(f"{sgm.name} frames ({sgm.n}) fewer than the ranks or a window; raise data.frames")
    norms = sg.normaliser(cfg, env, [train_seg])
    halo = k.halo(cfg.windows.size)
    train_b, val_b = sg.load_blocks([train_seg], cfg, env, norms, halo), sg.load_blocks([val_seg], cfg, env, norms, halo)
    H, W = train_b[0].hr.shape[-2:]
    flips = cfg.degrade.method in ("bicubic", "block_mean")
    try:
        p2 = win.fit_patch(cfg.train2d.patch, H, W, s, 8)
    except ValueError as exc:
        raise UserError(f"train2d.patch: {exc}") from None
    first = build.stage_2d(cfg)
    model2d = first.net.to(env.device)
    task2d = PatchTask(train=train_b, val=val_b, source="lr", window=1, crop=0, scale=s, patch=p2, flips=flips)
    last = build.stage_final(cfg, first)
    final, task3d = last.net.to(env.device), None
    if k.has_3d:
        source, crop = last.source, last.crop
        prepare_inputs(train_b + val_b, s, model2d if source == "sr2d" else None)
        try:
            p3 = win.fit_patch(cfg.train3d.patch, H, W, s, max(8, 2 * crop + s))
        except ValueError as exc:
            raise UserError(f"train3d.patch: {exc}") from None
        task3d = PatchTask(train=train_b, val=val_b, source=source, window=cfg.windows.size, crop=crop, scale=s, patch=p3, flips=flips)

    result = {"ranks": env.world, "launcher": env.launcher, "device": str(env.device), "threads_per_rank": torch.get_num_threads(),
              "cores": os.cpu_count(), "load_average": os.getloadavg()[0], "pipeline": cfg.pipeline, "config": config_mod.to_dict(cfg),
              "studies": {}, "time": time.time()}
    result["network"] = network_benchmark(env)  # first: the loaded steps' would-be waiting needs the barrier's cost
    barrier_s = result["network"]["barrier_s"] if result["network"] else 0.0
    sample_bytes = {}
    for name, task, net, tcfg in (("train2d", task2d, model2d, cfg.train2d), ("train3d", task3d, final, cfg.train3d)):
        if task is None:
            continue
        x, y, where = task.batch(task.sample(np.random.default_rng(0), 1))
        fl = flops_per_sample(net, x, where)
        sample_bytes[name] = (x.numel() + y.numel()) * 4
        for mode, global_batch in (("weak", args.batch * env.world), ("strong", args.strong_batch)):
            b = per_rank_batch(global_batch, env.world)
            rows, busy, nbytes = train_steps(task, net, env, b, args.steps, args.warmup_steps, tcfg.lr, tcfg.seed, loaded=loaded)
            everyone = gather_rows(env, rows)
            r = summarise(everyone)
            result["studies"][f"{name}/{mode}"] = {
                "workload": name, "mode": mode, "ranks": env.world, "per_rank": b, "global": global_batch, "unit": "sample",
                "steps": args.steps, "time_s": r, "step_s": r["step"]["mean"], "t_s": r["step"]["mean"],
                "other_s": r["step"]["mean"] - sum(r[q]["mean"] for q in PARTS), "allreduce_bytes": nbytes,
                "flops_per_sample": fl, "sample_bytes": sample_bytes[name], "io_bytes_per_sample": 0.0, "patch": task.patch,
                "jitter_fraction": jitter(everyone), "loaded": loaded_record(env, busy, barrier_s) if loaded else None}
    # inference: a run's networks, or fresh ones of the configured shapes written as a model file
    run_dir = args.run_dir
    if not run_dir:
        run_dir = os.path.join(args.out, "work", f"fresh{tag}")
        if env.is_root:
            os.makedirs(run_dir, exist_ok=True)
            checkpoint.save_model(os.path.join(run_dir, "model.pt"), checkpoint.ModelFile(
                pipeline=cfg.pipeline, scale=s, degrade=cfg.degrade.method, blur_sigma=cfg.degrade.blur_sigma, window=cfg.windows.size,
                pad=cfg.windows.pad, crop=final.crop, var=var, normaliser={"lo": norms[0].lo, "hi": norms[0].hi, "units": norms[0].units},
                net2d=checkpoint.model_entry(model2d), model=checkpoint.model_entry(final), config=config_mod.to_dict(cfg)))
        env.barrier()
    ic = cfg.infer
    pred = Predictor(run_dir, env.device, batch=ic.batch, tile=ic.tile, tile_halo=ic.tile_halo, precision=ic.precision, compile=ic.compile)
    per_rank_frames, strong_frames = inference_frames(args, ic.block_frames)
    n_frames = max(per_rank_frames * env.world, strong_frames)
    infer_path = os.path.join(data_dir, f"swe_seed{cfg.data.test_seed}_{n_frames}x{size[0]}x{size[1]}.h5")
    _ensure_swe(infer_path, n_frames, size, cfg.data.test_seed, env)
    for mode, total in (("weak", per_rank_frames * env.world), ("strong", strong_frames)):
        out_path = os.path.join(args.out, "work", f"sr_{mode}_{tag}.h5")
        rows, busy, nb = infer_rounds(pred, infer_path, var, total, out_path, env, ic.block_frames, loaded=loaded)
        everyone = gather_rows(env, rows)
        r = summarise(everyone)
        io = env.all_reduce_sum(torch.tensor([nb["read_bytes"], nb["written_bytes"]], dtype=torch.float64, device=env.device)).tolist()
        result["studies"][f"infer/{mode}"] = {
            "workload": "infer", "mode": mode, "ranks": env.world, "per_rank": total / env.world, "global": total, "unit": "frame",
            "steps": nb["rounds"], "chunk_frames": ic.block_frames, "time_s": r, "step_s": r["step"]["mean"],
            "t_s": r["step"]["mean"] * nb["rounds"], "other_s": r["step"]["mean"] - sum(r[q]["mean"] for q in PARTS), "allreduce_bytes": 0,
            "flops_per_sample": nb["flops_per_frame"], "io_bytes_per_sample": (io[0] + io[1]) / total, "read_bytes": io[0], "written_bytes": io[1],
            "weights": "trained: " + os.path.abspath(args.run_dir) if args.run_dir else "freshly initialised (timing only)",
            "jitter_fraction": jitter(everyone[:, : nb["chunks"]]),
            "loaded": loaded_record(env, busy, barrier_s, nb["chunks"]) if loaded else None}
    result["loaded_steps"] = loaded
    if args.accuracy_epochs:
        result["accuracy"] = accuracy(cfg, task2d, env, args)
    if env.is_root:
        write_json(out_json, result, overwrite=args.force)
        print(f"{env.world} rank(s): wrote {out_json}", flush=True)
    return 0


# --- report ----------------------------------------------------------------------------------

def _per_sample(rec: dict, cpu: bool = False) -> tuple[float, float]:
    """(compute, host) seconds per sample (per frame) of one rank in a study record (or its ``loaded`` part,
    which has the study's sizes)."""
    t, b = rec["time_s"], rec["per_rank"] if rec["unit"] == "sample" else rec["global"] / rec["ranks"] / rec["steps"]
    return t["compute_cpu" if cpu else "compute"]["mean"] / b, (t["data"]["mean"] + t["write"]["mean"]) / b


def workload_from(rec: dict, cpu: bool = False, loaded: dict | None = None) -> pm.Workload:
    """The model's :class:`~hpcvsr.perf.perfmodel.Workload` from a one-rank study record (``cpu``: the compute
    term from the CPU time of the computing thread instead of the wall time, i.e. a whole core);
    ``loaded``: a multi-rank study record with loaded steps (their compute and host time per sample,
    and the waiting a barrier would have added, with every rank of the node busy)."""
    compute, host = _per_sample(rec, cpu)
    lo = (loaded or {}).get("loaded")
    busy = _per_sample({**loaded, "time_s": lo["time_s"]}, cpu) if lo else (0.0, 0.0)
    # the spread about the step's mean that makes expected_max(ranks) * spread the loaded steps' would-be waiting
    spread = lo["wait_fraction"] / pm.expected_max(lo["ranks"]) if lo and lo["ranks"] > 1 else 0.0
    return pm.Workload(compute_s_per_sample=compute, data_s_per_sample=host, grad_bytes=rec["allreduce_bytes"],
                       io_bytes_per_sample=rec.get("io_bytes_per_sample", 0.0), flops_per_sample=rec.get("flops_per_sample", 0.0),
                       jitter_fraction=rec.get("jitter_fraction", 0.0),
                       loaded_compute_s_per_sample=busy[0], loaded_data_s_per_sample=busy[1], loaded_jitter_fraction=spread)


def predicted_t(rec1: dict, rec: dict, m: pm.Machine, cpu: bool = False, barrier_s: float | None = None) -> dict:
    """The model's breakdown of study ``rec`` (the same workload and mode as ``rec1``, at ``rec['ranks']``),
    calibrated on ``rec1`` and on ``rec``'s own loaded steps when it has them; ``barrier_s``: the
    measured cost of the study's barrier (None: :func:`~hpcvsr.perf.perfmodel.barrier_time`)."""
    w = workload_from(rec1, cpu, rec)
    bar = pm.barrier_time(rec["ranks"], m) if barrier_s is None else barrier_s
    if rec["unit"] == "sample":
        return pm.step_time(w, rec["per_rank"], rec["ranks"], m, barrier_s=bar)
    per_round = rec["global"] / rec["ranks"] / rec["steps"]
    bd = pm.step_time(w, per_round, rec["ranks"], m, barrier_s=bar)
    return {k: v * rec["steps"] for k, v in bd.items()}


def efficiency(mode: str, t1: float, tn: float, n: int) -> float:
    """Weak ``t1 / tn``; strong ``t1 / (n tn)``.

    >>> efficiency("weak", 1.0, 1.25, 2), efficiency("strong", 2.0, 1.25, 2)
    (0.8, 0.8)
    """
    return t1 / tn if mode == "weak" else t1 / (n * tn)


def _finite(v: float) -> float | None:
    return None if math.isnan(v) else v


def predictions(rec1: dict, machines: list, ranks=PREDICT_RANKS, global_batch: int = 4096) -> dict:
    """Per machine and workload: weak efficiency at ``ranks`` and along the node ladder, strong efficiency at
    ``global_batch`` (training; inference: frames per round in all), and for training the per-rank batch for
    >= 90 % weak efficiency at 1,024 ranks (an inference chunk's efficiency does not depend on its size here)."""
    out = {}
    for m in machines:
        per = {}
        for key, rec in rec1.items():
            name, mode = key.split("/")
            if mode != "weak":
                continue
            w = workload_from(rec)
            b = rec["per_rank"] if rec["unit"] == "sample" else rec["global"] / rec["steps"]
            top = m.max_nodes * m.ranks_per_node
            ladder = [n * m.ranks_per_node for n in pm.node_ladder(m.max_nodes)]

            per[name] = {
                "per_rank": b,
                "weak_efficiency": {str(p): (pm.weak_efficiency(w, b, p, m) if p <= top else None) for p in ranks},
                "strong_efficiency": {str(p): (_finite(pm.strong_efficiency(w, global_batch, p, m)) if p <= top else None) for p in ranks},
                "weak_curve": {str(p): pm.weak_efficiency(w, b, p, m) for p in ladder},
                "strong_global": global_batch,
                "strong_curve": {str(p): _finite(pm.strong_efficiency(w, global_batch, p, m)) for p in ladder},
                "breakdown": {str(p): pm.step_time(w, b, p, m) for p in ranks if p <= top},
                "batch_for_90_at_1024": pm.batch_for_efficiency(w, 1024, m) if 1024 <= top and w.grad_bytes else None,
                "allreduce_s_at_max": {a: pm.allreduce_time(w.grad_bytes, top, m, a) for a in ("ring", "tree")} if w.grad_bytes else None,
            }
        out[m.name] = {"machine": dataclasses.asdict(m), "workloads": per}
    return out


def report(out_dir: str, this_machine: str, machines: list, force: bool, global_batch: int) -> int:
    path = os.path.join(out_dir, "scaling.json")
    if os.path.exists(path) and not force:
        raise UserError(f"{path} exists; refusing to overwrite it (pass --force, or use another --out)")
    files = sorted(glob.glob(os.path.join(out_dir, "ranks*.json")), key=lambda f: int(re.findall(r"\d+", os.path.basename(f))[0]))
    runs = [json.load(open(f)) for f in files]
    if not runs or runs[0]["ranks"] != 1:
        raise UserError(f"{out_dir}: no ranks1.json; the study needs a one-rank run to compare with (and to calibrate the model)")
    here = pm.load_machine(this_machine)
    others = [pm.load_machine(f) for f in machines]
    base = runs[0]["studies"]
    rows, model_check = [], []
    for run in runs:
        n = run["ranks"]
        m = here
        if here.calibrate_network and run.get("network"):
            m = pm.with_network(here, run["network"]["latency_s"], run["network"]["bandwidth_Bps"])
        for key, rec in run["studies"].items():
            rec1 = base[key]
            ckey = f"{rec['workload']}/weak" if rec["unit"] == "sample" else key  # per-sample costs of training from the weak run
            calib = base[ckey]
            bar = (run.get("network") or {}).get("barrier_s")
            eff = efficiency(rec["mode"], rec1["t_s"], rec["t_s"], n)
            pred = predicted_t(calib, rec, m, barrier_s=bar)
            t_meas, t_model = rec["t_s"], pred["total"]
            rec["core_share"] = rec["time_s"]["compute_cpu"]["mean"] / max(1e-12, rec["time_s"]["compute"]["mean"])
            rec.update(efficiency=eff, model={"breakdown": pred, "t_s": t_model, "error": t_model / t_meas - 1,
                                              "efficiency": efficiency(rec["mode"], predicted_t(calib, rec1, m)["total"], t_model, n)})
            rows.append(rec)
            if n > 1:
                # the same comparison with a whole core per rank while computing: compute CPU time in place of wall time on both sides
                tc = rec["time_s"]
                full = t_meas + (tc["compute_cpu"]["mean"] - tc["compute"]["mean"]) * (rec["steps"] if rec["unit"] == "frame" else 1)
                model_full = predicted_t(calib, rec, m, cpu=True, barrier_s=bar)["total"]
                alone = predicted_t(calib, {**rec, "loaded": None}, m, barrier_s=bar)["total"]  # compute as one rank alone, for comparison
                model_check.append({"study": key, "ranks": n, "measured_s": t_meas, "model_s": t_model, "error": t_model / t_meas - 1,
                                    "loaded": bool(rec.get("loaded")), "model_alone_s": alone, "error_alone": alone / t_meas - 1,
                                    "core_share": rec["core_share"], "measured_full_core_s": full, "model_full_core_s": model_full,
                                    "error_full_core": model_full / full - 1})
    acc = {str(r["ranks"]): r["accuracy"] for r in runs if r.get("accuracy")}
    result = {"ranks": [r["ranks"] for r in runs], "cores": runs[0]["cores"], "threads_per_rank": runs[0]["threads_per_rank"],
              "loaded_steps": {str(r["ranks"]): r.get("loaded_steps", False) for r in runs},
              "load_average": {str(r["ranks"]): r.get("load_average") for r in runs},
              "studies": rows, "model_check": model_check, "accuracy": acc, "this_machine": dataclasses.asdict(here),
              "networks": {str(r["ranks"]): r.get("network") for r in runs},
              "predictions": predictions(base, others, global_batch=global_batch),
              "definitions": {"weak": "t(1)/t(N), fixed per-rank batch or frames", "strong": "t(1)/(N t(N)), fixed global batch or frames",
                              "t": "mean step time (training) or the time to process a rank's frames (inference)",
                              "time_s": "min/mean/max over ranks of the per-rank mean over timed steps"}}
    print_table(result)
    figure(result, os.path.join(out_dir, "scaling.png"))
    write_json(path, result, overwrite=force)
    print(f"saved {path} and {os.path.join(out_dir, 'scaling.png')}")
    return 0


def print_table(res: dict) -> None:
    load = ", ".join(f"{n} rank(s) {v:.2f}" for n, v in res["load_average"].items() if v is not None)
    print(f"measured on {res['cores']} cores, {res['threads_per_rank']} thread(s) per rank (1-minute load average at the start: {load}); "
          "times in ms (mean over ranks)")
    print("| study | ranks | per rank | global | step | compute | all-reduce | data | write | wait | other | all-reduce MB | CPU/compute | "
          "loaded steps: compute (min-max) | efficiency | model |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in res["studies"]:
        t, lt = r["time_s"], (r.get("loaded") or {}).get("time_s")
        busy = f"{1e3 * lt['compute']['mean']:.1f} ({1e3 * lt['compute']['min']:.1f}-{1e3 * lt['compute']['max']:.1f})" if lt else "-"
        print(f"| {r['workload']} {r['mode']} | {r['ranks']} | {r['per_rank']:g} | {r['global']:g} | {1e3 * r['step_s']:.1f} | "
              + " | ".join(f"{1e3 * t[q]['mean']:.1f}" for q in PARTS) + f" | {1e3 * r['other_s']:.2f} | {r['allreduce_bytes'] / 1e6:.3f} | "
              f"{r['core_share']:.0%} | {busy} | {r['efficiency']:.1%} | {r['model']['efficiency']:.1%} |")
    if res["model_check"]:
        print("\nmodel vs measured: compute and host time from the loaded steps (or the one-rank run), all-reduce and barrier from "
              "the network benchmark, waiting from the spread; 'compute alone': the model with the one-rank run's compute; "
              "right: both with a whole core per rank while computing (compute CPU time in place of its wall time):")
        print("| study | ranks | measured t (ms) | model t (ms) | error | model, compute alone (ms) | error | core share | "
              "measured, whole core | model, whole core | error |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for c in res["model_check"]:
            print(f"| {c['study']} | {c['ranks']} | {1e3 * c['measured_s']:.1f} | {1e3 * c['model_s']:.1f} | {c['error']:+.1%} | "
                  f"{1e3 * c['model_alone_s']:.1f} | {c['error_alone']:+.1%} | "
                  f"{c['core_share']:.0%} | {1e3 * c['measured_full_core_s']:.1f} | {1e3 * c['model_full_core_s']:.1f} | {c['error_full_core']:+.1%} |")
    if res["accuracy"]:
        print("\ntime to accuracy (2D network, same epochs):")
        print("| ranks | global batch | lr rule | lr | warm-up epochs | val PSNR start | val PSNR end | train s |")
        print("|---|---|---|---|---|---|---|---|")
        for n, a in res["accuracy"].items():
            print(f"| {n} | {a['global_batch']} | {a['lr_rule']} | {a['lr']:.3g} | {a['warmup_epochs']:g} | {a['val_psnr_initial']:.2f} | "
                  f"{a['val_psnr']:.2f} | {a['train_seconds']:.1f} |")
    for name, p in res["predictions"].items():
        first = next(iter(p["workloads"].values()))
        ranks = list(first["weak_efficiency"])
        print(f"\nmodel prediction for {name}: weak efficiency at the measured per-rank batch (infer: frames per chunk), "
              f"strong at a global batch of {first['strong_global']}:")
        print("| workload | per rank | " + " | ".join(f"weak {r}" for r in ranks) + " | " + " | ".join(f"strong {r}" for r in ranks)
              + " | per-rank batch for 90 % weak at 1,024 |")
        print("|---|---|" + "---|" * (2 * len(ranks)) + "---|")
        for wname, w in p["workloads"].items():
            effs = " | ".join("-" if v is None else f"{v:.1%}" for v in [*w["weak_efficiency"].values(), *w["strong_efficiency"].values()])
            need = w["batch_for_90_at_1024"]
            print(f"| {wname} | {w['per_rank']:g} | {effs} | {'-' if need is None else need} |")


def figure(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [w for w in WORKLOADS if any(r["workload"] == w for r in res["studies"])]
    fig, axes = plt.subplots(2, len(names) + 1, figsize=(4.2 * (len(names) + 1), 7.5), squeeze=False)
    colors = {"compute": "tab:blue", "allreduce": "tab:red", "data": "tab:green", "write": "tab:purple", "wait": "tab:gray"}
    for j, name in enumerate(names):
        ax, bx = axes[0, j], axes[1, j]
        for mode, mk in (("weak", "o"), ("strong", "s")):
            recs = [r for r in res["studies"] if r["workload"] == name and r["mode"] == mode]
            n = [r["ranks"] for r in recs]
            line = ax.plot(n, [r["model"]["efficiency"] for r in recs], "--" if mode == "weak" else ":", label=f"{mode}, model")[0]
            ax.plot(n, [r["efficiency"] for r in recs], mk, color=line.get_color(), label=f"{mode}, measured")
            off = -0.2 if mode == "weak" else 0.2
            bottom = np.zeros(len(recs))
            for q in PARTS:
                v = np.array([1e3 * r["time_s"][q]["mean"] for r in recs])
                bx.bar(np.array(n) + off, v, width=0.38, bottom=bottom, color=colors[q], hatch="" if mode == "weak" else "//",
                       label=q if mode == "weak" else None)
                bottom += v
            bx.plot(np.array(n) + off, [1e3 * r["model"]["breakdown"]["total"] / (r["steps"] if r["unit"] == "frame" else 1) for r in recs],
                    "k_", markersize=14, label="model" if mode == "weak" else None)
        ax.axhline(0.9, color="k", lw=0.5, ls=":")
        ax.set_xticks(res["ranks"])
        bx.set_xticks(res["ranks"])
        ax.set(title=f"{name}: efficiency", xlabel="ranks", ylabel="efficiency", ylim=(0, 1.1))
        ax.legend(fontsize=7)
        bx.set(title=f"{name}: time per step (weak | strong //)", xlabel="ranks", ylabel="ms")
        bx.legend(fontsize=7)
    ax, bx = axes[0, -1], axes[1, -1]
    for mname, p in res["predictions"].items():
        for wname, w in p["workloads"].items():
            c = w["weak_curve"]
            ax.semilogx([int(k) for k in c], list(c.values()), "-", label=f"{mname} {wname}")
    ax.axhline(0.9, color="k", lw=0.5, ls=":")
    ax.set(title="model: weak efficiency", xlabel="ranks (GPUs)", ylabel="efficiency", ylim=(0, 1.1))
    ax.legend(fontsize=6)
    if res["predictions"]:
        mname, p = next(iter(res["predictions"].items()))
        wname = "train3d" if "train3d" in p["workloads"] else next(iter(p["workloads"]))
        bd = p["workloads"][wname]["breakdown"]
        xs = np.arange(len(bd))
        bottom = np.zeros(len(bd))
        for q, col in (("compute", "tab:blue"), ("data", "tab:green"), ("allreduce", "tab:red"), ("io", "tab:purple"), ("wait", "tab:gray")):
            v = np.array([1e3 * b[q] for b in bd.values()])
            bx.bar(xs, v, bottom=bottom, color=col, label=q)
            bottom += v
        bx.set_xticks(xs, list(bd))
        bx.set(title=f"model: {mname} {wname} step", xlabel="ranks (GPUs)", ylabel="ms")
        bx.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + f".tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# --- the sweep on one node -----------------------------------------------------------------------
