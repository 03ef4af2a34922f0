"""``hpcvsr scaling`` (``python -m hpcvsr.scaling``): parse the arguments, call :mod:`hpcvsr.perf.scaling`."""

from __future__ import annotations

import argparse
import os
import sys

from hpcvsr import dist
from hpcvsr.errors import UserError, cli, run_child
from hpcvsr.perf import perfmodel as pm
from hpcvsr.perf import scaling as lib
from hpcvsr.perf.scaling import DEFAULT_MACHINES, LR_RULES, THIS_MACHINE, measure
from hpcvsr.perf.scaling_report import report
from hpcvsr.pipeline import build
from hpcvsr.pipeline import config as config_mod


def child_args(args) -> list:
    """The measurement options of ``args`` as a command line (for the sweep's runs)."""
    out = ["--out", args.out, "--batch", str(args.batch), "--strong-batch", str(args.strong_batch), "--steps", str(args.steps),
           "--warmup-steps", str(args.warmup_steps), "--accuracy-epochs", str(args.accuracy_epochs), "--lr-rule", args.lr_rule,
           "--lr-warmup", str(args.lr_warmup), "--base-batch", str(args.base_batch), "--loaded" if args.loaded else "--no-loaded"]
    out += ["--frames", str(args.frames)] if args.frames is not None else []
    out += ["--strong-frames", str(args.strong_frames)] if args.strong_frames is not None else []
    out += ["--config", args.config] if args.config else []
    out += ["--run-dir", args.run_dir] if args.run_dir else []
    out += ["--force"] if args.force else []
    for o in args.overrides:
        out += ["--set", o]
    return out


def sweep(args) -> None:
    env = dist.launch_env()

    for n in args.sweep:
        cmd = [sys.executable, "-m", "hpcvsr.scaling", *child_args(args)]
        if n > 1:
            cmd = dist.mpirun_command(n) + cmd
        print(f"--- {n} rank(s): {' '.join(cmd)}", flush=True)
        run_child(cmd, f"the {n}-rank run", tail=15, env=env)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.scaling", description=lib.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    config_mod.add_arguments(p)
    p.add_argument("--out", default="runs/scaling", help="study folder: ranks<N>.json, data/, scaling.json, scaling.png")
    p.add_argument("--sweep", type=int, nargs="+", help="rank counts to run on this node (mpirun), then the report")
    p.add_argument("--report", action="store_true", help="only collect DIR/ranks*.json into scaling.json and scaling.png")
    p.add_argument("--batch", type=int, default=4, help="weak scaling: samples per rank per step (default 4)")
    p.add_argument("--strong-batch", type=int, default=8, help="strong scaling: global samples per step (default 8)")
    p.add_argument("--frames", type=int, help="weak inference: frames per rank (default: --steps chunks of infer.block_frames)")
    p.add_argument("--strong-frames", type=int, help="strong inference: frames in all (default: twice the weak default)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per training study (default 10)")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--run-dir", help="a finished training run to time inference with (default: fresh networks of the configured shapes)")
    p.add_argument("--accuracy-epochs", type=int, default=2, help="epochs of the time-to-accuracy study (0: skip)")
    p.add_argument("--lr-rule", choices=LR_RULES, default="linear", help="lr = train2d.lr * f(global batch / --base-batch)")
    p.add_argument("--lr-warmup", type=float, default=1.0, help="epochs of linear warm-up to the scaled rate (default 1)")
    p.add_argument("--base-batch", type=int, default=4, help="the global batch train2d.lr was chosen for (default 4)")
    p.add_argument("--this-machine", default=THIS_MACHINE, help="machine file of the measured machine (the model check)")
    p.add_argument("--machines", nargs="*", default=DEFAULT_MACHINES, help="machine files to predict")
    p.add_argument("--predict-global-batch", type=int, default=4096, help="global batch of the predicted strong scaling")
    p.add_argument("--force", action="store_true", help="replace existing ranks<N>.json / scaling.json")
    p.add_argument("--loaded", action=argparse.BooleanOptionalAction, default=True,
                   help="with more than one rank: pair every timed step with a loaded step, the same work without the barrier "
                        "and the all-reduce, whose compute calibrates the model for ranks that share a node (default: on)")
    return p


@cli
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    for f in [args.this_machine, *args.machines]:
        pm.load_machine(f)  # a bad machine file fails before any work
    if args.report or args.sweep:
        if args.sweep:
            if not os.path.isdir(args.out):
                os.makedirs(args.out)
            target = os.path.join(args.out, "scaling.json")
            if not args.force:
                for f in [target] + [os.path.join(args.out, f"ranks{n}.json") for n in args.sweep]:
                    if os.path.exists(f):
                        raise UserError(f"{f} exists; refusing to overwrite it (pass --force, or use another --out)")
            if 1 not in args.sweep:
                raise UserError("--sweep needs 1 among the rank counts (the reference of the efficiencies)")
            sweep(args)
        return report(args.out, args.this_machine, args.machines, args.force, args.predict_global_batch)
    if not os.path.isdir(args.out) and dist.detect()[1] == 0:
        os.makedirs(args.out, exist_ok=True)
    cfg = build.load_config(args.config, ["threads=1", *args.overrides])
    return dist.launch(cfg, lambda env: measure(cfg, env, args))


if __name__ == "__main__":
    sys.exit(main())
