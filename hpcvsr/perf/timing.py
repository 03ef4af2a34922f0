"""What the scaling studies time: training steps and inference rounds on every rank, split into compute,
all-reduce, data, write and wait, the loaded steps beside them, and the network benchmark (the barrier's and the
all-reduce's costs). Every rank's rows are gathered; :func:`summarise` and :func:`would_wait` reduce them.
"""

from __future__ import annotations

import math
import os
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F

from hpcvsr import dist
from hpcvsr.data.blocks import phys, unit
from hpcvsr.errors import UserError
from hpcvsr.inference.engine import Predictor
from hpcvsr.io import h5out
from hpcvsr.io.sequences import MultiArchive
from hpcvsr.models.conditioning import run as run_net
from hpcvsr.ops import degrade as dg
from hpcvsr.ops import windows as win
from hpcvsr.training.patches import PatchTask

QUANTITIES = ("compute", "allreduce", "data", "write", "wait", "step", "compute_cpu")


PARTS = QUANTITIES[:5]  # the parts of "step"; "compute_cpu" is the CPU time of this rank's thread during "compute"


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


def timer(device: torch.device):
    """``time.perf_counter`` that first waits for the device's queued work (CUDA runs asynchronously)."""
    if device.type != "cuda":
        return time.perf_counter

    def clock() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return clock


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
