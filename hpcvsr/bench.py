"""Inference benchmark: frames/s at several rank counts and HDF5 write speed, in one run.

    python -m hpcvsr.bench --run-dir RUN [--frames 300] [--size 128 128] [--ranks 1 2] [--json bench.json]

Makes a shallow-water archive, super-resolves it with ``python -m hpcvsr.infer --degrade`` at
each rank count (``mpirun`` for more than one), and writes the same number of bytes with a plain
sequential h5py loop, so the output's MB/s can be read next to what this file system gives one
writer. Timings are only comparable within one run (shared machines are noisy): compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

from .errors import UserError, cli
from .io.atomic import write_json


def sequential_write(path: str, shape: tuple, repeat: int = 1) -> float:
    """MB/s of writing float32 frames of ``shape`` one by one into a chunked dataset."""
    frame = np.random.default_rng(0).random(shape[1:], dtype=np.float32)
    best = 0.0
    for _ in range(repeat):
        t0 = time.time()
        with h5py.File(path, "w") as f:
            d = f.create_dataset("sr", shape=shape, dtype="f4", chunks=(1, *shape[1:]))
            for t in range(shape[0]):
                d[t] = frame
        best = max(best, np.prod(shape) * 4 / 1e6 / (time.time() - t0))
        os.remove(path)
    return best


def _mpirun(n: int) -> list:
    exe = os.path.join(os.path.dirname(sys.executable), "mpirun")
    exe = exe if os.path.exists(exe) else shutil.which("mpirun")
    if not exe:
        raise UserError("more than one rank needs mpirun (pip install 'hpcvsr[mpi]')")
    return [exe, "-n", str(n), "--oversubscribe"]


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="finished training run")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--size", type=int, nargs=2, default=[128, 128])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", default="bench.json")
    p.add_argument("--autocast", nargs="+", default=["none", "bf16"], choices=("none", "bf16"),
                   help="precisions to time on the first rank count (bf16: CPU AMX / GPU autocast)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="passed to infer, e.g. infer.block_frames=64")
    args = p.parse_args(argv)
    if not os.path.exists(os.path.join(args.run_dir, "model.pt")):
        raise UserError(f"{args.run_dir}: no model.pt")
    env = dict(os.environ)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    work = tempfile.mkdtemp(prefix="hpcvsr-bench-", dir=os.path.dirname(os.path.abspath(args.json)) or ".")
    try:
        archive = os.path.join(work, "input.h5")
        subprocess.run([sys.executable, "-m", "hpcvsr.data", "swe", "--frames", str(args.frames), "--size", *map(str, args.size),
                        "--seed", "99", "--out", archive, "--quiet"], check=True, env=env)
        results = {}
        cases = [(n, args.autocast[0]) for n in args.ranks] + [(args.ranks[0], a) for a in args.autocast[1:]]
        for n, autocast in cases:
            key = f"{n} rank(s), {autocast}"
            out, stats = os.path.join(work, f"sr{n}{autocast}.h5"), os.path.join(work, f"stats{n}{autocast}.json")
            cmd = [sys.executable, "-m", "hpcvsr.infer", "--run-dir", args.run_dir, "--input", archive, "--output", out, "--degrade", "--stats", stats,
                   "--set", f"infer.autocast={autocast}"]
            for o in args.overrides:
                cmd += ["--set", o]
            if n > 1:
                cmd = _mpirun(n) + cmd
            t0 = time.time()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode:
                lines = proc.stderr.strip().splitlines()
                why = next((l for l in lines if l.startswith("hpcvsr: error:")), lines[-1] if lines else f"exit {proc.returncode}")
                raise UserError(f"infer with {n} rank(s) failed: {why}")
            s = json.load(open(stats))
            results[key] = {"ranks": n, "autocast": autocast, "frames_per_s": s["frames_per_s"], "seconds": s["seconds"],
                            "wall_with_startup_s": time.time() - t0, "write_MB_per_s": s["write_MB_per_s"], "write_mode": s["write_mode"],
                            "psnr": (s["metrics"] or {}).get("psnr"), "ssim": (s["metrics"] or {}).get("ssim")}
        with h5py.File(os.path.join(work, f"sr{args.ranks[0]}{args.autocast[0]}.h5")) as f:
            shape = f["sr"].shape
        seq = sequential_write(os.path.join(work, "plain.h5"), shape)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = next(iter(results.values()))["frames_per_s"]
    print(f"{args.frames} frames {args.size[0]}x{args.size[1]}, output {shape}, {os.cpu_count()} cores")
    print("| ranks | precision | frames/s | speed-up | PSNR (dB) | SSIM | output writes MB/s | writer |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results.values():
        print(f"| {r['ranks']} | {r['autocast']} | {r['frames_per_s']:.1f} | {r['frames_per_s'] / base:.2f} | {r['psnr']:.3f} | {r['ssim']:.5f} | "
              f"{r['write_MB_per_s']:.0f} | {r['write_mode']} |")
    print(f"plain sequential h5py write of the same bytes: {seq:.0f} MB/s")
    write_json(args.json, {"frames": args.frames, "size": args.size, "output_shape": list(shape), "cores": os.cpu_count(),
                           "ranks": results, "sequential_write_MB_per_s": seq})
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
