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
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from hpcvsr.data import blocks as bl
from hpcvsr.data import sources
from hpcvsr.errors import UserError
from hpcvsr.inference.engine import Predictor
from hpcvsr.io import checkpoint
from hpcvsr.io.atomic import write_json
from hpcvsr.models.conditioning import run as run_net
from hpcvsr.ops import windows as win
from hpcvsr.perf.timing import (
    PARTS,
    average_gradients,
    flops_per_sample,
    gather_rows,
    infer_rounds,
    jitter,
    loaded_record,
    network_benchmark,
    summarise,
    train_steps,
)
from hpcvsr.pipeline import build, kinds
from hpcvsr.pipeline import config as config_mod
from hpcvsr.pipeline import segments as sg
from hpcvsr.training.patches import PatchTask, prepare_inputs
from hpcvsr.training.trainer import evaluate, per_rank_batch, warm_up

WORKLOADS = ("train2d", "train3d", "infer")
MODES = ("weak", "strong")
LR_RULES = ("linear", "sqrt", "none")
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the machine files ship in the package
DEFAULT_MACHINES = [os.path.join(PACKAGE, "configs", "machines", f) for f in ("summit.yaml", "perlmutter.yaml")]
THIS_MACHINE = os.path.join(PACKAGE, "configs", "machines", "this_machine.yaml")


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


# --- measurement -------------------------------------------------------------------------------


def _ensure_swe(path: str, frames: int, size, seed: int, env) -> None:
    if env.is_root and not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sources.generate("swe", frames, size, seed).write(path)
    env.barrier()


def inference_frames(args, block: int) -> tuple[int, int]:
    """(weak frames per rank, strong frames in all): ``--frames`` and ``--strong-frames``, by default
    ``--steps`` chunks of ``block`` frames per rank (weak) and twice that in all (strong).

    >>> from types import SimpleNamespace
    >>> inference_frames(SimpleNamespace(frames=None, strong_frames=None, steps=10), 4)
    (40, 80)
    """
    per_rank = args.frames if args.frames is not None else args.steps * block
    return per_rank, (args.strong_frames if args.strong_frames is not None else 2 * args.steps * block)


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


# --- the sweep on one node -----------------------------------------------------------------------
