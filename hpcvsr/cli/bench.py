"""``hpcvsr bench`` (``python -m hpcvsr.bench``): parse the arguments, call :mod:`hpcvsr.perf.bench`."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile

import h5py
import torch

from hpcvsr import dist
from hpcvsr.errors import UserError, cli, run_child
from hpcvsr.io.atomic import write_json
from hpcvsr.perf import bench as lib
from hpcvsr.perf.bench import (
    PRECISIONS,
    _lr_frames,
    _print_tables,
    compare_revisions,
    conv_peak,
    gemm_peak,
    infer_cli,
    inference_parts,
    sequential_write,
    training_steps,
)


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.bench", description=lib.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="finished training run with a 2D and a 3D stage (e.g. the quickstart's)")
    p.add_argument("--frames", type=int, default=300, help="frames of the generated archive for the end-to-end inference")
    p.add_argument("--size", type=int, nargs=2, default=[128, 128])
    p.add_argument("--json", default="bench.json")
    p.add_argument("--batch", type=int, default=8, help="windows per forward pass (infer.batch)")
    p.add_argument("--seconds", type=float, default=2.0, help="minimum seconds each in-process timing runs")
    p.add_argument("--ranks", type=int, nargs="+", default=[1], help="rank counts of the end-to-end fp32 inference (mpirun beyond 1)")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                   help="inference precisions to time (bf16+compile: torch.compile, which needs a C++ compiler on CPU)")
    p.add_argument("--compare-to", metavar="REV", help="also train and infer with this git revision's code (e.g. 4b8462c) and print both")
    p.add_argument("--train-set", action="append", default=[], help="override for the current code's training in --compare-to")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="override for the current code's end-to-end inference in --compare-to, e.g. infer.precision=bf16")
    args = p.parse_args(argv)
    if not os.path.exists(os.path.join(args.run_dir, "model.pt")):
        raise UserError(f"{args.run_dir}: no model.pt")
    if os.path.exists(args.json):
        raise UserError(f"{args.json} exists; remove it or choose another --json")
    env = dist.launch_env()
    work = tempfile.mkdtemp(prefix="hpcvsr-bench-", dir=os.path.dirname(os.path.abspath(args.json)))
    try:
        archive = os.path.join(work, "input.h5")
        run_child([sys.executable, "-m", "hpcvsr.data", "swe", "--frames", str(args.frames), "--size", *map(str, args.size),
                  "--seed", "99", "--out", archive, "--quiet"], "generating the archive", env=env)
        gemm = {"fp32": gemm_peak(torch.float32, min_seconds=args.seconds), "bf16": gemm_peak(torch.bfloat16, min_seconds=args.seconds)}
        conv = {"fp32": conv_peak(torch.float32, args.seconds), "bf16": conv_peak(torch.bfloat16, args.seconds)}
        peaks = {k: max(gemm[k], conv[k]) for k in gemm} | {f"gemm_{k}": v for k, v in gemm.items()} | {f"conv3d_{k}": v for k, v in conv.items()}
        lr, pred = _lr_frames(archive, args.run_dir, 2 * args.batch + 4)
        parts = inference_parts(args.run_dir, lr, batch=args.batch, peaks=peaks, min_seconds=args.seconds, precisions=args.precisions)
        pixels = lr.shape[-2] * lr.shape[-1] * pred.scale**2
        per_px = {r["part"]: r["macs_per_frame"] / pixels for r in parts if r["precision"] == args.precisions[0]}
        res = {"cores": os.cpu_count(), "threads": torch.get_num_threads(), "frames": args.frames, "size": args.size, "peak": peaks,
               "macs_per_output_pixel": per_px, "inference": parts,
               "training": training_steps(args.run_dir, peaks=peaks, min_seconds=args.seconds), "end_to_end": {}}
        cases = [(n, args.precisions[0]) for n in args.ranks] + [(args.ranks[0], p) for p in args.precisions[1:]]
        for n, precision in cases:
            sets = [f"infer.batch={args.batch}", f"infer.precision={precision.split('+')[0]}", f"infer.compile={'compile' in precision}"]
            res["end_to_end"][f"{n} rank(s), {precision}"] = infer_cli(args.run_dir, archive, os.path.join(work, f"sr{n}{precision}.h5"),
                                                                       ranks=n, sets=sets, env=env)
        with h5py.File(os.path.join(work, f"sr{args.ranks[0]}{args.precisions[0]}.h5")) as f:
            res["output_shape"] = list(f["sr"].shape)
        res["sequential_write_MB_per_s"] = sequential_write(os.path.join(work, "plain.h5"), tuple(res["output_shape"]))
        if args.compare_to:
            res["compare"] = compare_revisions(args.compare_to, archive, work, train_sets=args.train_set, infer_sets=args.overrides, env=env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print_tables(res)
    write_json(args.json, res)
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
