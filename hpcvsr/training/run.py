"""Train a pipeline: the 2D network per frame, then the 3D network over frame windows.

    python -m hpcvsr.train [--config FILE] [--set section.key=value ...] [--run-dir DIR]
    mpirun -n 4 python -m hpcvsr.train ...   |   srun ...   |   jsrun ...   |   torchrun ...

Each rank reads only its block of every sequence (plus the halo frames its windows need),
gradients are synchronised by DistributedDataParallel, and metrics are reduced across ranks.
A run directory with checkpoints resumes; SIGTERM / SIGUSR1 in a training loop checkpoint the step and exit 0,
in any other phase they end the job at once with 128 + the signal number (:func:`run_or_stop`).
The run directory receives config.yaml, ckpt_*.pt, model.pt, metrics.json, table.md and figures.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time

import torch

from hpcvsr import dist
from hpcvsr.errors import UserError
from hpcvsr.io import checkpoint, lock
from hpcvsr.io.atomic import write_json, write_text
from hpcvsr.models import conditioning as cond
from hpcvsr.models.bounds import limits
from hpcvsr.ops import degrade as dg
from hpcvsr.ops import windows as win
from hpcvsr.ops.metrics import shave
from hpcvsr.pipeline import bounds as bounds_mod
from hpcvsr.pipeline import build, kinds
from hpcvsr.pipeline import config as config_mod
from hpcvsr.pipeline import segments as sg
from hpcvsr.report import tables as report
from hpcvsr.training import baselines, generative, trainer
from hpcvsr.training.compare import Method, evaluate_methods
from hpcvsr.training.patches import PatchTask, prepare_inputs, window_frames

log = logging.getLogger("hpcvsr")


def setup_logging(run_dir: str, env: dist.DistEnv) -> None:
    os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
    log.setLevel(logging.INFO)
    log.handlers.clear()
    fh = logging.FileHandler(os.path.join(run_dir, "logs", f"rank{env.rank}.log"))
    fh.setFormatter(logging.Formatter(f"%(asctime)s rank{env.rank} %(message)s"))
    log.addHandler(fh)
    if env.is_root:
        sh = logging.StreamHandler(sys.stdout)
        sh.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(sh)
    log.propagate = False


LOCK = "hpcvsr.lock"  # in the run directory while a job uses it (hpcvsr.io.lock)


def train(config=None, run_dir: str = "runs/quickstart", *, overrides=None) -> int:
    """What ``hpcvsr train`` does, from Python: train the pipeline of ``config`` (a
    :class:`~hpcvsr.pipeline.config.Config`, a YAML file, a packaged preset's name, or None for the
    embedded defaults; ``overrides`` as ``--set``) in ``run_dir``, which resumes when it holds a run.

    On one rank it returns 0 when done; inside an MPI job every rank calls it, and the process ends
    with the run (as the command does: a process that used DDP over gloo cannot finalise safely)."""
    if isinstance(config, config_mod.Config):
        if overrides:
            raise UserError("overrides apply to a configuration file or preset; change a Config with dataclasses.replace")
        cfg = build.checked(config)
    else:
        cfg = build.load_config(config, overrides or ())
    physical_bounds(cfg)  # refusals from the archive's metadata (a header read) before the run directory is created
    return dist.launch(cfg, lambda env: run_or_stop(cfg, env, run_dir))


def run_or_stop(cfg, env: dist.DistEnv, run_dir: str) -> int:
    """:func:`run`, ending soon after a stop signal (SIGTERM, SIGUSR1). In a training loop it writes
    a checkpoint of the step and returns 0 (the same command resumes there); in any other phase it
    ends at once, keeps the checkpoints of finished epochs and no half-written file, and returns
    128 + the signal number (143 for SIGTERM, what a shell reports for a job the signal ended), so
    that ``afterok`` dependencies and ``set -e`` scripts do not go on with an unfinished run."""
    stop = dist.StopFlag().install()  # until run() installs the flag its trainer reads
    try:
        sg.check_inputs(cfg)  # before the run directory is created
        problem = ""
        if env.is_root:
            try:
                os.makedirs(run_dir, exist_ok=True)
            except OSError as exc:  # a parent that is a file, not writable, or on a read-only file system
                problem = f"cannot create the run directory {run_dir}: {exc.strerror}"
        problem = env.broadcast_object(problem)  # every rank meets the same error
        if problem:
            raise UserError(problem)
        with lock.held_by_root(env, os.path.join(run_dir, LOCK), f"run directory {run_dir}"):
            return run(cfg, env, run_dir)
    except trainer.Preempted:
        log.info("stopped by signal; checkpoints are in %s: run the same command again to resume", run_dir)
        return 0
    except dist.Stopped as exc:
        kept = os.path.isdir(run_dir) and any(n.startswith("ckpt_") and n.endswith(".pt") for n in os.listdir(run_dir))
        # a warning: before run() sets up the log, only Python's last-resort handler prints, and only warnings
        log.warning("stopped by signal %s; no file was left half-written; %s", exc.name,
                    f"the checkpoints in {run_dir} (of the last finished epoch) are kept: the same command resumes from them" if kept else
                    "there was no checkpoint yet: the same command starts again (data files finished before are reused)")
        if env.distributed:  # now, without the closing barrier: the other ranks may be anywhere
            dist.exit_process(128 + exc.signum)
        return 128 + exc.signum
    finally:
        stop.restore()


def conditioning_spec(cfg, train_segs: list, blocks: list) -> tuple[dict | None, torch.Tensor | None, dict]:
    """(the Conditioned networks' keyword arguments or None, the static covariates or None, what
    model.pt records of the grid for inference: its size, 1D coordinates and covariate names)."""
    if not config_mod.conditioned(cfg):
        return None, None, {}
    c, st = cfg.condition, cfg.data.static
    shapes = {tuple(b.hr.shape[-2:]) for b in blocks}
    if (st.vars or c.location_channels) and len(shapes) > 1:
        raise UserError(f"place conditioning needs one grid, but the training and held-out frames have sizes {sorted(shapes)}")
    grid = list(max(shapes))
    static = sg.static_fields(cfg, train_segs[0]) if st.vars else None
    spec = {"grid": grid, "static": len(st.vars), "location": c.location_channels, "time": c.time_features, "width": c.width}
    info = {"grid": grid, "axes": sg.grid_axes(train_segs[0]), "static_path": st.path, "static_vars": list(st.vars),
            "location_channels": c.location_channels, "time_features": c.time_features}
    return spec, static, info


def inputs_text(cfg) -> str:
    """What the networks read, for logs and tables: the degradation, or the coarse run of a pair."""
    if config_mod.paired(cfg):
        return f"paired (no degradation: the inputs are the coarse run {cfg.data.lr_path})"
    return cfg.degrade.method


def physical_bounds(cfg) -> list:
    """(lo, hi) of every variable in physical units (None: unbounded side): ``data.bounds``, else the
    valid range of the variable in the training archive ``data.path`` (its header only)."""
    d, names = cfg.data, config_mod.variables(cfg)
    valid = {}
    if d.source == "archive" and d.path:  # without one, sg.check_inputs says what is missing
        arcs = sg.file_segment(cfg, d.path, names[0], extra=names[1:]).open_all()
        try:
            valid = bounds_mod.valid_ranges(arcs.parts)
        finally:
            arcs.close()
    bounds = bounds_mod.resolve(d.bounds, names, valid, method=cfg.degrade.method, constrain=cfg.degrade.constrain)
    if kinds.kind(cfg.pipeline).generative:  # the generator's settings against the bounds, known only now
        build.gen_intensity(cfg, {"lo": [lo for lo, _ in bounds], "hi": [hi for _, hi in bounds]})
    return bounds


def baseline_clip(bounds: dict | None, device):
    """The interpolation baselines' outputs clipped to the bounds (normalised, :func:`hpcvsr.pipeline.bounds.normalised`)
    like the networks' outputs: a field with negative rain is no output, even as a baseline."""
    if not bounds:
        return lambda x: x
    low, high = (limits(bounds[k], m).to(device, torch.float32) for k, m in (("lo", -math.inf), ("hi", math.inf)))
    return lambda x: torch.clamp(x, low, high)


def clip_centres(t3, net, env: dist.DistEnv) -> int:
    """Centre frames per training clip: ``train3d.centres`` for a bare 3D network with per-frame
    features (one variable, no conditioning or constraint around it; a clip to bounds passes them on),
    reduced to a divisor of the per-rank batch (a clip lies within one rank's batch, so with many ranks and a small global batch
    the clips are shorter, and the log says so); 1 (independent windows) otherwise."""
    if t3.centres == 1:
        return 1
    if not net.frame_features:
        log.info("train3d.centres=%d needs a bare vsr3d with frame_features; training independent windows", t3.centres)
        return 1
    k = math.gcd(t3.centres, trainer.per_rank_batch(t3.batch_size, env.world))
    if k != t3.centres:
        log.info("train3d.centres=%d reduced to %d, a divisor of the per-rank batch", t3.centres, k)
    return k


def run(cfg, env: dist.DistEnv, run_dir: str) -> int:
    t0 = time.time()
    phys_bounds = physical_bounds(cfg)  # refusals from the archive's metadata, before anything is written
    setup_logging(run_dir, env)
    stop = dist.StopFlag().install()
    cfg_path = os.path.join(run_dir, "config.yaml")
    if env.is_root:
        if os.path.exists(cfg_path) and config_mod.load(cfg_path) != cfg:
            raise UserError(f"{run_dir} holds a run with a different configuration ({cfg_path}); use another --run-dir")
        config_mod.dump(cfg, cfg_path)
    env.barrier()
    cfg_dict = config_mod.to_dict(cfg)
    scale, pipe, kind = cfg.degrade.scale, cfg.pipeline, kinds.kind(cfg.pipeline)
    log.info("hpcvsr %s pipeline, x%d %s, %d rank(s) on %s, run dir %s", pipe, scale, inputs_text(cfg), env.world, env.device, run_dir)

    # --- data: every rank reads its own block (+ halo) of every segment -------------------------
    train_segs, val_segs, test_segs = sg.segments(cfg, env, os.path.join(run_dir, "data"), kind)
    reads: list = []  # every frame range this rank reads from disk (logs/reads_rank*.json)
    norms = sg.normaliser(cfg, env, train_segs, reads)  # one per variable
    names = train_segs[0].variables
    halo = kind.halo(cfg.windows.size)
    train_b = sg.load_blocks(train_segs, cfg, env, norms, halo, reads)
    val_b = sg.load_blocks(val_segs, cfg, env, norms, halo, reads)
    test_b = sg.load_blocks(test_segs, cfg, env, norms, halo, reads)
    write_json(os.path.join(run_dir, "logs", f"reads_rank{env.rank}.json"), reads)
    log.info("normalisation %s; rank %d owns %s", ", ".join(f"{v} [{n.lo:g}, {n.hi:g}] {n.units}" for v, n in zip(names, norms)),
             env.rank, [b.own for b in train_b])
    bounds = bounds_mod.normalised(phys_bounds, norms)  # in every stage's outermost layer: model.pt applies them
    if bounds:
        log.info("bounded outputs (data.bounds, else the valid range of %s): %s%s", cfg.data.path or "the data",
                 ", ".join(f"{v} {bounds_mod.text(*b)}" for v, b in zip(names, phys_bounds) if b != (None, None)),
                 "; inputs out of bounds are clipped to them first" if cfg.degrade.constrain else "")
    crops = {s.label: text for s in train_segs + test_segs if (text := sg.crop_text(s))}
    for where, text in crops.items():
        log.info("%s: frames cropped to %s (data.crop: %s)", where, text, cfg.data.crop)
    frame_h, frame_w = (min(b.hr.shape[d] for b in train_b + val_b) for d in (-2, -1))
    # mirrored patches only for degradations that commute with flips, and for one variable: a mirror
    # reverses the sign of a velocity component but not of a scalar, so it breaks relations between variables
    flips = cfg.degrade.method in ("bicubic", "block_mean") and len(names) == 1  # not 'paired': a solver's coarse run need not mirror
    patches = {}

    def fitted(stage: str, requested: int, minimum: int = 8) -> int:
        try:
            side = win.fit_patch(requested, frame_h, frame_w, scale, minimum)
        except ValueError as exc:
            raise UserError(f"{train_segs[0].label}: {exc}") from None
        if side != requested:
            log.info("%s patches of %d px do not fit frames of %dx%d: training with %d px patches", stage, requested, frame_h, frame_w, side)
        patches[stage] = side
        return side

    # --- stage 1: the 2D network ----------------------------------------------------------------
    spec, static, grid_info = conditioning_spec(cfg, train_segs, train_b + val_b + test_b)
    if spec and spec["static"] + spec["location"]:
        flips = False  # a mirrored patch would meet its place maps unmirrored
    first = build.stage_2d(cfg, channels=len(names), spec=spec, static=static, bounds=bounds)
    model2d = first.net.to(env.device)
    histories = {}
    if kind.trains_2d:
        t2 = cfg.train2d
        task = PatchTask(train=train_b, val=val_b, source="lr", window=1, crop=0, scale=scale, patch=fitted("train2d", t2.patch), flips=flips)
        histories[kinds.STAGE_2D] = trainer.fit(task, model2d, t2, env, ckpt_path=os.path.join(run_dir, f"ckpt_{kinds.STAGE_2D}.pt"), stop=stop,
                                                stage=kinds.STAGE_2D, config=cfg_dict, freeze=first.freeze(cfg), lr_mult=first.lr_mult(cfg),
                                                what=first.section)

    # --- stage 2: the 3D network (or the end-to-end composition) --------------------------------
    final = build.stage_final(cfg, first, channels=len(names), spec=spec, static=static, bounds=bounds)
    net, source, crop, window = (final.net, final.source, final.crop, cfg.windows.size) if kind.has_3d else (None, "lr", 0, cfg.windows.size)
    if kind.has_3d:
        t3 = cfg.train3d
        prepare_inputs(train_b + val_b + test_b, scale, model2d if source == "sr2d" else None)
        net.to(env.device)
        task = PatchTask(train=train_b, val=val_b, source=source, window=window, crop=crop, scale=scale,
                         patch=fitted("train3d", t3.patch, max(8, 2 * crop + scale)), flips=flips, centres=clip_centres(t3, net, env))
        histories[pipe] = trainer.fit(task, net, t3, env, ckpt_path=os.path.join(run_dir, f"ckpt_{pipe}.pt"), stop=stop, stage=pipe,
                                      config=cfg_dict, freeze=final.freeze(cfg), lr_mult=final.lr_mult(cfg), what=final.section)
    else:
        prepare_inputs(test_b, scale)

    # --- stage 3: the generative model of the 2D->3D residual -----------------------------------
    gen = None
    if kind.generative:
        tg = cfg.traingen
        generative.prepare_det(train_b + val_b + test_b, net, source=source, window=window)
        amplitude = generative.residual_std(train_b, env)
        log.info("generative stage: residual of the 2D->3D output, standard deviation %s (normalised)", ", ".join(f"{a:.4g}" for a in amplitude))
        gen = build.build_gen(cfg, channels=len(names), amplitude=amplitude,
                              bounds=bounds or {}, spec=spec, static=static).to(env.device)  # {}: known to be unbounded
        task = generative.GenTask(train=train_b, val=val_b, scale=scale, patch=fitted("traingen", tg.patch), flips=flips, members=tg.members,
                                  noise=gen.noise)
        histories[kinds.STAGE_GEN] = trainer.fit(task, gen, tg, env, ckpt_path=os.path.join(run_dir, f"ckpt_{kinds.STAGE_GEN}.pt"), stop=stop,
                                                 stage=kinds.STAGE_GEN, config=cfg_dict, freeze=list(cfg.modelgen.freeze),
                                                 lr_mult=dict(cfg.modelgen.lr_mult), what="modelgen")

    # --- held-out evaluation: every method on the same crop ---------------------------------------
    model2d.eval()
    clip = baseline_clip(bounds, env.device)
    centred = dg.CENTRED[cfg.degrade.method]  # where the baselines place a coarse pixel: a coarse run of grid points has it on a fine point
    bicubic = Method(lambda x, where: clip(x), source="bicubic") if centred else Method(lambda x, where: clip(dg.upscale(x, scale, centred=False)))
    methods = {"bicubic": bicubic, kinds.STAGE_2D: Method(lambda x, where: cond.run(model2d, x, where))}
    det_row = generative.DET_ROW if gen is not None else pipe  # the deterministic row of a generative pipeline is its 2D->3D output
    if net is not None:
        net.eval()
        methods[det_row] = Method(lambda x, where: cond.run(net, x, where), window=window, source=source, crop=crop)
    ensemble = None
    if gen is not None:  # the held-out members: their mean is a method like the others, their scores are added to its row
        gen.eval()
        ensemble = generative.held_out(gen, test_b, env, norms=norms, scale=scale)
        methods[pipe] = Method(lambda x, where: x, source="ensmean")
    if config_mod.paired(cfg):  # the statistical baseline climate users know: quantile mapping of the coarse run, then bicubic
        if baselines.quantile_mapped(train_segs, test_b, norms, scale=scale):
            methods = {"bicubic": methods["bicubic"], baselines.QM_METHOD: Method(lambda x, where: clip(dg.upscale(x, scale, centred=centred)), source="qm"),
                       **{k: v for k, v in methods.items() if k != "bicubic"}}
        else:
            log.warning("the quantile-mapping baseline needs xsdba (pip install 'hpcvsr[baselines]'): its row is left out")
    test, per_frame = evaluate_methods(methods, test_b, crop=crop, norms=norms, scale=scale, env=env,  # {variable: {method: ...}}
                                       degradation=None if config_mod.paired(cfg) else (cfg.degrade.method, scale, cfg.degrade.blur_sigma))
    if ensemble is not None:
        generative.add_scores(test, ensemble, det_row=det_row, row=pipe, norms=norms)
    final_net = net if net is not None else model2d
    fingerprint = checkpoint.state_hash(final_net.state_dict())
    log.info("rank %d final parameters sha256 %s", env.rank, fingerprint)
    write_text(os.path.join(run_dir, "logs", f"params_rank{env.rank}.txt"), fingerprint + "\n")

    notes = {stage: note for stage, hist in histories.items()
             if stage not in (kinds.STAGE_2D, kinds.STAGE_GEN) and (note := report.stage_note(stage, hist))}
    for note in notes.values():
        log.warning("note: %s", note)
    if env.is_root:
        checkpoint.save_model(os.path.join(run_dir, "model.pt"), checkpoint.ModelFile(
            pipeline=pipe, scale=scale, degrade=cfg.degrade.method, blur_sigma=cfg.degrade.blur_sigma, window=window,
            pad=cfg.windows.pad, crop=crop, var=names[0], normaliser={"lo": norms[0].lo, "hi": norms[0].hi, "units": norms[0].units},
            net2d=checkpoint.model_entry(model2d), model=checkpoint.model_entry(final_net), config=cfg_dict,
            condition=grid_info, variables=[{"var": v, "lo": n.lo, "hi": n.hi, "units": n.units, "bounds": list(b)}
                                            for v, n, b in zip(names, norms, phys_bounds)],
            gen=checkpoint.model_entry(gen) if gen is not None else {}))
        one = len(names) == 1  # one variable: metrics keyed by method, as always; several: by variable, then method
        out = {
            "pipeline": pipe, "scale": scale, "degrade": cfg.degrade.method, "ranks": env.world, "crop": crop,
            "patches": patches, "frame_crops": crops, "notes": train_segs[0].open().notes,
            "variables": list(names), "bounds": {v: list(b) for v, b in zip(names, phys_bounds) if b != (None, None)},
            "normalisation": ({"lo": norms[0].lo, "hi": norms[0].hi, "units": norms[0].units} if one else
                              {v: {"lo": n.lo, "hi": n.hi, "units": n.units} for v, n in zip(names, norms)}),
            "metrics": {"test": test[names[0]] if one else test}, "per_frame_psnr": per_frame[names[0]] if one else per_frame,
            "history": histories, "stage_notes": notes, "seconds": time.time() - t0,
        }
        write_json(os.path.join(run_dir, "metrics.json"), out)
        write_table(os.path.join(run_dir, "table.md"), cfg, ranks=env.world, names=names, norms=norms, test=test, test_segs=test_segs, crop=crop,
                    histories=histories, notes=notes, seconds=time.time() - t0)
        panels = comparison_panels(test_b[0], scale=scale, crop=crop, model2d=model2d, net=net, name=pipe, source=source, window=window,
                                   centred=centred)
        report.figures(run_dir, panels, per_frame[names[0]], histories)
        for v, n in zip(names, norms):
            print(("" if one else f"{v}:\n") + report.test_table(test[v], n.units), end="")
        log.info("done in %.0f s: %s", time.time() - t0, os.path.join(run_dir, "table.md"))
    env.barrier()
    return 0


def write_table(path: str, cfg, *, ranks: int, names, norms, test: dict, test_segs: list, crop: int, histories: dict, notes: dict,
                seconds: float) -> None:
    """``table.md``: the held-out comparison of every variable (also by lead time), then each stage's initial vs final."""
    pipe, scale, one = cfg.pipeline, cfg.degrade.scale, len(names) == 1
    text = [f"# hpcvsr run: {pipe}, x{scale} {inputs_text(cfg)}, {ranks} rank(s)\n"]
    for v, n in zip(names, norms):
        text += [("" if one else f"\n## variable {v}\n"),
                 f"Held-out test ({', '.join(s.name for s in test_segs)}), all methods on the same crop ({crop} px border removed); "
                 f"PSNR/SSIM on {'data' if one else v} normalised to [{n.lo:.4g}, {n.hi:.4g}] {n.units}, RMSE in {n.units or 'physical units'}.\n",
                 report.test_table(test[v], n.units),
                 "\nBy lead time (a coarse run drifts from the fine one as time goes on):\n\n", report.lead_time_table(test[v], n.units)]
        if any("spread_skill" in m for m in test[v].values()):
            text += ["\nEnsemble scores (a deterministic output's CRPS is its MAE):\n\n", report.ensemble_table(test[v], n.units)]
    for stage, hist in histories.items():
        text += [f"\n## stage {stage}: initial vs final (validation = trailing {cfg.data.val_fraction:.0%} of each training sequence)\n",
                 report.stage_table(hist)] + ([f"\n**Note:** {notes[stage]}.\n"] if notes.get(stage) else [])
    text.append(f"\nwall time {seconds:.0f} s\n")
    write_text(path, "".join(text))


def comparison_panels(b, *, scale: int, crop: int, model2d, net, name: str, source: str, window: int, centred: bool = True) -> dict:
    """The comparison figure's panels: the middle frame of held-out block ``b`` (crop applied to every panel; ``centred``:
    where bicubic places a coarse pixel, :data:`hpcvsr.ops.degrade.CENTRED`)."""
    t = b.own[0] + b.n_own // 2
    lr_x, hr_y, where = window_frames(b, [t])
    with torch.no_grad():
        panels = {"LR": lr_x[0, 0].cpu().numpy(), "bicubic": shave(dg.upscale(lr_x, scale, centred=centred)[0, 0], crop).cpu().numpy(),
                  "2D": shave(cond.run(model2d, lr_x, where)[0, 0], crop).cpu().numpy()}
        if net is not None:
            xin, _, where = window_frames(b, [t], source=source, window=window)
            panels[name] = cond.run(net, xin, where)[0, 0].cpu().numpy()
    hr_c = shave(hr_y[0, 0], crop).cpu().numpy()
    panels["HR"] = hr_c
    best = list(panels)[-2]
    panels[f"|error| {best}"] = abs(panels[best] - hr_c)
    return panels
