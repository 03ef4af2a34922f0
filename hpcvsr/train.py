"""Train a pipeline: the 2D network per frame, then the 3D network over frame windows.

    python -m hpcvsr.train [--config FILE] [--set section.key=value ...] [--run-dir DIR]
    mpirun -n 4 python -m hpcvsr.train ...   |   srun ...   |   jsrun ...   |   torchrun ...

Each rank reads only its block of every sequence (plus the halo frames its windows need),
gradients are synchronised by DistributedDataParallel, and metrics are reduced across ranks.
A run directory with checkpoints resumes; SIGTERM / SIGUSR1 checkpoint and exit 0.
The run directory receives config.yaml, ckpt_*.pt, model.pt, metrics.json, table.md and figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import torch

from . import checkpoint, dist, pipeline, report, trainer
from . import config as config_mod
from .data import degrade as dg
from .errors import UserError, cli
from .models import MODELS_2D, MODELS_3D, build, entry
from .models import weights as weights_mod
from .models.pipelines import Joint2D3D, Reverse3D2D

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


def build_2d(cfg):
    m = cfg.model2d
    if m.name not in MODELS_2D:
        raise UserError(f"model2d.name must be one of {', '.join(MODELS_2D)}, got '{m.name}'")
    model = build(m.name, cfg.degrade.scale, **m.kwargs)
    if m.init:
        path = weights_mod.resolve_init(m.init, m.name, cfg.degrade.scale)
        _, _, sd = weights_mod.load_source(path, cfg.degrade.scale)
        init = weights_mod.init_layerwise(model, sd)
        log.info("model2d %s initialised from %s: %s", m.name, path, ", ".join(f"{k} {v}" for k, v in init.items()))
    return model, entry(m.name, cfg.degrade.scale, m.kwargs)


def build_3d(cfg, lr_space: bool = False):
    m = cfg.model3d
    if m.name not in MODELS_3D:
        raise UserError(f"model3d.name must be one of {', '.join(MODELS_3D)}, got '{m.name}'")
    kwargs = dict(m.kwargs, frames=cfg.windows.size)
    if lr_space:  # 3d_2d: the 3D network refines LR frames, keeping their size
        if m.name != "vsr3d":
            raise UserError("pipeline 3d_2d needs model3d.name: vsr3d")
        kwargs.update(residual=True, same_padding=True)
    model = build(m.name, cfg.degrade.scale, **kwargs)
    if m.init:
        _, _, sd = weights_mod.load_source(m.init, cfg.degrade.scale)
        weights_mod.init_layerwise(model, sd)
    return model, entry(m.name, cfg.degrade.scale, kwargs)


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    config_mod.add_arguments(p)
    p.add_argument("--run-dir", default="runs/quickstart", help="output and checkpoint folder (default runs/quickstart)")
    args = p.parse_args(argv)
    cfg = config_mod.load(args.config, args.overrides)
    env = dist.init(cfg.device, cfg.threads)
    with dist.fail_fast(env):
        try:
            return run(cfg, env, args.run_dir)
        except trainer.Preempted:
            log.info("stopped by signal; checkpoints are in %s: run the same command again to resume", args.run_dir)
            return 0


def run(cfg, env: dist.DistEnv, run_dir: str) -> int:
    t0 = time.time()
    if env.is_root:
        os.makedirs(run_dir, exist_ok=True)
    env.barrier()
    setup_logging(run_dir, env)
    stop = dist.StopFlag().install()
    cfg_path = os.path.join(run_dir, "config.yaml")
    if env.is_root:
        if os.path.exists(cfg_path) and config_mod.load(cfg_path) != cfg:
            raise UserError(f"{run_dir} holds a run with a different configuration ({cfg_path}); use another --run-dir")
        config_mod.dump(cfg, cfg_path)
    env.barrier()
    cfg_dict = config_mod.to_dict(cfg)
    scale, pipe = cfg.degrade.scale, cfg.pipeline
    log.info("hpcvsr %s pipeline, x%d %s, %d rank(s) on %s, run dir %s", pipe, scale, cfg.degrade.method, env.world, env.device, run_dir)

    # --- data: every rank reads its own block (+ halo) of every segment -------------------------
    train_segs, val_segs, test_segs = pipeline.segments(cfg, env, os.path.join(run_dir, "data"))
    reads: list = []  # every frame range this rank reads from disk (logs/reads_rank*.json)
    norm = pipeline.normaliser(cfg, env, train_segs, reads)
    halo = 0 if pipe == "2d" else cfg.windows.size // 2
    train_b = pipeline.load_blocks(train_segs, cfg, env, norm, halo, reads)
    val_b = pipeline.load_blocks(val_segs, cfg, env, norm, halo, reads)
    test_b = pipeline.load_blocks(test_segs, cfg, env, norm, halo, reads)
    report.write_json(os.path.join(run_dir, "logs", f"reads_rank{env.rank}.json"), reads)
    log.info("normalisation [%g, %g] %s; rank %d owns %s", norm.lo, norm.hi, norm.units, env.rank, [b.own for b in train_b])
    flips = cfg.degrade.method in ("bicubic", "block_mean")

    # --- stage 1: the 2D network ----------------------------------------------------------------
    torch.manual_seed(cfg.train2d.seed)  # model initialisation is reproducible (and so is a resumed run)
    model2d, entry2d = build_2d(cfg)
    model2d.to(env.device)
    histories = {}
    if pipe != "3d":
        t2 = cfg.train2d
        task = pipeline.PatchTask(train_b, val_b, "lr", 1, 0, scale, t2.patch, flips)
        histories["2d"] = trainer.fit(task, model2d, t2, env, os.path.join(run_dir, "ckpt_2d.pt"), stop, "2d", entry2d, cfg_dict,
                                      cfg.model2d.freeze, cfg.model2d.lr_mult, what="model2d")

    # --- stage 2: the 3D network (or the end-to-end composition) --------------------------------
    net = None
    entry_final = entry2d
    window = cfg.windows.size
    if pipe != "2d":
        t3 = cfg.train3d
        torch.manual_seed(t3.seed + 1)
        all_blocks = train_b + val_b + test_b
        if pipe == "2d_3d":
            net, entry_final = build_3d(cfg)
            if net.input_space != "hr":
                raise UserError("pipeline 2d_3d needs a 3D model on high-resolution frames (model3d.name: vsr3d)")
            pipeline.add_inputs(all_blocks, scale, model2d)
            source = "sr2d"
        elif pipe == "3d":
            net, entry_final = build_3d(cfg)
            pipeline.add_inputs(all_blocks, scale)
            source = "bicubic" if net.input_space == "hr" else "lr"
        elif pipe == "joint":
            net3d, e3 = build_3d(cfg)
            net = Joint2D3D(model2d, net3d)
            entry_final = entry("joint", scale, {}, {"net2d": entry2d, "net3d": e3})
            pipeline.add_inputs(all_blocks, scale)
            source = "lr"
        else:  # 3d_2d
            net3d, e3 = build_3d(cfg, lr_space=True)
            net = Reverse3D2D(net3d, model2d)
            entry_final = entry("reverse3d2d", scale, {}, {"net2d": entry2d, "net3d": e3})
            pipeline.add_inputs(all_blocks, scale)
            source = "lr"
        net.to(env.device)
        crop = getattr(net, "crop", 0)
        task = pipeline.PatchTask(train_b, val_b, source, window, crop, scale, t3.patch, flips)
        prefix = "" if pipe in ("2d_3d", "3d") else "net3d."
        freeze = [prefix + n for n in cfg.model3d.freeze]
        lr_mult = {prefix + k: v for k, v in cfg.model3d.lr_mult.items()}
        histories[pipe] = trainer.fit(task, net, t3, env, os.path.join(run_dir, f"ckpt_{pipe}.pt"), stop, pipe, entry_final, cfg_dict,
                                      freeze, lr_mult, what="model3d")
    crop = getattr(net, "crop", 0) if net is not None else 0

    # --- held-out evaluation: every method on the same crop ---------------------------------------
    if pipe == "2d":
        pipeline.add_inputs(test_b, scale)
    model2d.eval()
    methods = {
        "bicubic": (lambda x: x, 1, "bicubic", 0),
        "2d": (lambda x: model2d(x), 1, "lr", 0),
    }
    if net is not None:
        net.eval()
        methods[pipe] = (lambda x: net(x), window, source, crop)
    test, per_frame = pipeline.evaluate_methods(methods, test_b, crop, norm, scale, env)
    final_net = net if net is not None else model2d
    fingerprint = checkpoint.state_hash(final_net.state_dict())
    log.info("rank %d final parameters sha256 %s", env.rank, fingerprint)
    report.write_text(os.path.join(run_dir, "logs", f"params_rank{env.rank}.txt"), fingerprint + "\n")

    if env.is_root:
        final = {
            "pipeline": pipe, "scale": scale, "degrade": cfg.degrade.method, "blur_sigma": cfg.degrade.blur_sigma,
            "window": window, "pad": cfg.windows.pad, "crop": crop, "var": train_segs[0].var,
            "normaliser": {"lo": norm.lo, "hi": norm.hi, "units": norm.units},
            "net2d": dict(entry2d, state_dict={k: v.cpu() for k, v in model2d.state_dict().items()}),
            "model": dict(entry_final, state_dict={k: v.cpu() for k, v in final_net.state_dict().items()}),
            "config": cfg_dict, "format": "hpcvsr-1",
        }
        checkpoint.save(os.path.join(run_dir, "model.pt"), final)
        out = {
            "pipeline": pipe, "scale": scale, "degrade": cfg.degrade.method, "ranks": env.world, "crop": crop,
            "normalisation": {"lo": norm.lo, "hi": norm.hi, "units": norm.units},
            "metrics": {"test": test}, "per_frame_psnr": per_frame,
            "history": histories, "seconds": time.time() - t0,
        }
        report.write_json(os.path.join(run_dir, "metrics.json"), out)
        text = [f"# hpcvsr run: {pipe}, x{scale} {cfg.degrade.method}, {env.world} rank(s)\n",
                f"Held-out test ({', '.join(s.name for s in test_segs)}), all methods on the same crop ({crop} px border removed); "
                f"PSNR/SSIM on data normalised to [{norm.lo:.4g}, {norm.hi:.4g}] {norm.units}, RMSE in {norm.units or 'physical units'}.\n",
                report.test_table(test, norm.units)]
        for stage, hist in histories.items():
            text += [f"\n## stage {stage}: initial vs final (validation = trailing {cfg.data.val_fraction:.0%} of each training sequence)\n", report.stage_table(hist)]
        text.append(f"\nwall time {time.time() - t0:.0f} s\n")
        report.write_text(os.path.join(run_dir, "table.md"), "".join(text))
        # figures: middle frame of the held-out sequence (crop applied to every panel)
        b = test_b[0]
        t = b.own[0] + b.n_own // 2
        task1 = pipeline.PatchTask([], [], "lr", 1, 0, scale, 8, False)
        lr_x, hr_y = task1.frames(b, [t])
        with torch.no_grad():
            panels = {"LR": lr_x[0, 0].cpu().numpy(), "bicubic": pipeline.crop_to(dg.upscale(lr_x, scale)[0, 0], 0, crop).cpu().numpy(),
                      "2D": pipeline.crop_to(model2d(lr_x)[0, 0], 0, crop).cpu().numpy()}
            if net is not None:
                xin, _ = pipeline.PatchTask([], [], source, window, crop, scale, 8, False).frames(b, [t])
                panels[pipe] = pipeline.crop_to(net(xin)[0, 0], crop, crop).cpu().numpy()
        hr_c = pipeline.crop_to(hr_y[0], 0, crop).cpu().numpy()
        panels["HR"] = hr_c
        best = list(panels)[-2]
        panels[f"|error| {best}"] = abs(panels[best] - hr_c)
        report.figures(run_dir, panels, per_frame, histories)
        print(report.test_table(test, norm.units), end="")
        log.info("done in %.0f s: %s", time.time() - t0, os.path.join(run_dir, "table.md"))
    env.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
