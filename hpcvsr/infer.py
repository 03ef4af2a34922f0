"""Super-resolve a simulation archive with a trained run, across ranks, into one HDF5 file.

    srun python -m hpcvsr.infer --run-dir RUN --input ARCHIVE --var h --output OUT.h5 \\
        [--degrade] [--reference HR_ARCHIVE] [--set infer.tile=256 ...]

``--degrade``: the input is high resolution; it is degraded as in training, super-resolved and
compared with itself. ``--reference``: a high-resolution archive to compare with. Frames are
streamed in chunks (``infer.block_frames``) and the chunks are shared by the ranks; each reads
only its chunks plus the halo frames its windows need. The output's ``sr`` dataset (T, sH, sW),
or (T, C, sH, sW) for a model of C variables, is in physical units; with a reference, per-frame
and global metrics (reduced across ranks; per variable) are stored in its ``metrics`` group and
printed. A rerun after a crash skips finished chunks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time

import numpy as np
import torch

from . import config as config_mod
from . import dist, metrics
from .data import degrade as dg
from .data import segments as sg
from .data import windows as win
from .data.blocks import fill_missing, phys, unit
from .data.sequences import NETCDF_EXTENSIONS, MultiArchive
from .engine import Predictor
from .errors import UserError, cli
from .io import h5out, lock
from .io.atomic import check_space, check_writable, write_json
from .io.ncout import write_cf


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.infer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="finished training run (holds model.pt)")
    p.add_argument("--input", required=True, help="archive (NetCDF-3/-4 with CF conventions, HDF5, .mat)")
    p.add_argument("--var", default="", help="variable to super-resolve (default: the one the run was trained on); "
                   "a model of several variables takes as many, comma-separated, e.g. --var u10,v10")
    p.add_argument("--output", required=True, help="output file: HDF5, or CF NetCDF-4 if it ends in .nc (or with --netcdf)")
    p.add_argument("--select", action="append", default=[], metavar="DIM=VALUE",
                   help="choose an extra dimension of a NetCDF variable by coordinate value, e.g. --select level=500 (repeatable)")
    p.add_argument("--isel", action="append", default=[], metavar="DIM=INDEX", help="... or by index, e.g. --isel member=0")
    p.add_argument("--degrade", action="store_true", help="input is high resolution: degrade, super-resolve, compare")
    p.add_argument("--reference", help="high-resolution archive to compare with")
    p.add_argument("--ref-var", default="", help="variable(s) in --reference (default: --var)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--consolidate", action="store_true", help="copy a virtual-dataset output into one plain file")
    p.add_argument("--netcdf", action="store_true", help="write --output as CF NetCDF-4 whatever its name")
    p.add_argument("--stats", help="write timings (frames/s, MB/s) as JSON here")
    config_mod.add_arguments(p)
    args = p.parse_args(argv)
    cfg = config_mod.load(args.config, args.overrides)
    return dist.launch(cfg, lambda env: run(args, cfg, env))


def run(args, cfg, env) -> int:
    with contextlib.ExitStack() as held:
        return _run(args, cfg, env, held)


def _run(args, cfg, env, held: contextlib.ExitStack) -> int:
    ic = cfg.infer
    pred = Predictor(args.run_dir, env.device, batch=ic.batch, tile=ic.tile, tile_halo=ic.tile_halo, precision=ic.precision,
                     compile=ic.compile)
    names = _variables(args.var, pred.vars, "--var")
    var = ",".join(names)  # for messages and attributes
    select, isel = config_mod.parse_pairs(args.select, "--select"), config_mod.parse_pairs(args.isel, "--isel")
    arcs = MultiArchive(args.input, names, select=select, isel=isel)
    held.callback(arcs.close)
    arc = arcs.first  # time, grid and attributes (the variables share them)
    T, H, W = arc.shape
    s, c, norms = pred.scale, pred.crop, pred.norms
    one = len(names) == 1
    netcdf = args.netcdf or args.output.lower().endswith(NETCDF_EXTENSIONS)
    if T < env.world:
        raise UserError(f"{args.input}:{var} has {T} frames, fewer than the {env.world} ranks")
    if args.degrade and args.reference:
        raise UserError("use either --degrade (compare with the input) or --reference, not both")
    rows = cols = None
    h, w = H, W
    if args.degrade:  # crop as in training, to the largest size divisible by the scale
        mode = pred.config.get("data", {}).get("crop", "centre")
        y, x = sg.frame_crop(f"{args.input}:{var}", H, W, s, mode)
        (y0, y1), (x0, x1) = y or (0, H), x or (0, W)
        if y or x:
            rows, cols = slice(y0, y1), slice(x0, x1)
            if env.is_root:
                print(f"{args.input}:{var}: frames of {H}x{W} cropped to rows {y0}:{y1}, columns {x0}:{x1} ({mode}) to be divisible by {s}")
        h, w = (y1 - y0) // s, (x1 - x0) // s
    out_shape = (T, h * s - 2 * c, w * s - 2 * c) if one else (T, len(names), h * s - 2 * c, w * s - 2 * c)
    pred.check_grid(f"{args.input}:{var}", (h * s, w * s), _hr_axes(arc, rows, cols, degraded=bool(args.degrade), pred=pred))
    if pred.needs_time and not getattr(arc, "cf_time", False):
        raise UserError(f"{args.input}:{var} has no CF time coordinate, but the model {args.run_dir} was trained with time features")
    ref = None
    if args.reference:
        ref = MultiArchive(args.reference, _variables(args.ref_var, names, "--ref-var"), select=select, isel=isel)
        held.callback(ref.close)
        if ref.shape != (T, h * s, w * s):
            raise UserError(f"{args.reference}: shape {ref.shape} does not match the super-resolved {(T, h * s, w * s)}")
    chunk_list = win.chunks(T, ic.block_frames)
    if len(chunk_list) < env.world:
        raise UserError(f"{T} frames in chunks of {ic.block_frames} give {len(chunk_list)} chunks for {env.world} ranks; lower infer.block_frames")
    mine = range(*win.block_range(len(chunk_list), env.world, env.rank))
    attrs = {"scale": s, "pipeline": pred.pipeline, "checkpoint_hash": pred.hash, "run_dir": os.path.abspath(args.run_dir),
             "source_file": os.path.abspath(args.input), "source_var": var, "degraded_input": bool(args.degrade),
             "degradation": pred.degrade,
             "normalisation": json.dumps({"lo": norms[0].lo, "hi": norms[0].hi} if one else {v: {"lo": n.lo, "hi": n.hi} for v, n in zip(names, norms)}),
             "units": str(arc.units or norms[0].units) if one else json.dumps([str(a.units or n.units) for a, n in zip(arcs.parts, norms)]),
             "crop": c, "window": pred.win_size, "padding": pred.pad, "tile": ic.tile, "precision": ic.precision,
             "input_crop": json.dumps({"rows": [rows.start, rows.stop] if rows else None, "cols": [cols.start, cols.stop] if cols else None}),
             "selection": json.dumps({"select": select, "isel": isel}), "missing_values": "NaN" if any(a.missing_possible for a in arcs.parts) else "none"}
    if netcdf:
        check_writable(args.output, args.overwrite)
    held.enter_context(lock.held_by_root(env, args.output + ".lock", args.output))  # one job per output, after every input check
    h5_path = args.output + ".h5" if netcdf else args.output
    accs = [metrics.MetricSums(data_range=1.0, unit_scale=n.span, spectrum_cutoff=1.0 / s, device=env.device,
                               degradation=None if c else (pred.degrade, s, pred.sigma)) for n in norms]
    out = h5out.SROutput(h5_path, out_shape, chunk_list, attrs, env, compression=ic.compression, metrics=bool(args.degrade or ref),
                         overwrite=args.overwrite)
    held.push(lambda kind, exc, tb: kind is not None and out.discard_if_unused())  # a failed run leaves no empty output folder
    finished = out.done()
    todo = [i for i in mine if i not in finished]
    skipped = len(mine) - len(todo)
    print(f"rank {env.rank}: chunks {mine.start}..{mine.stop - 1} of {len(chunk_list)}; {skipped} already written, {len(todo)} to do", flush=True)
    bar = None
    if env.is_root:
        from tqdm import tqdm

        bar = tqdm(total=sum(chunk_list[i][1] - chunk_list[i][0] for i in todo), desc="infer (rank 0)", unit="frame", dynamic_ncols=True)
    t0 = time.time()
    write_s, write_bytes, frames_done = 0.0, 0, 0
    for cid in todo:
        a, b = chunk_list[cid]
        r0, r1 = win.halo_range(a, b, T, pred.halo)
        x, valid = fill_missing(unit(norms, dist.to_device(arcs.read(r0, r1, rows, cols), env.device)), f"{args.input}:{var}")
        lr = dg.degrade(x, s, pred.degrade, pred.sigma) if args.degrade else x
        idx = win.local_window_indices(np.arange(a, b), T, r0, r1, pred.win_size, pred.pad)
        times = torch.from_numpy(arc.time_features(r0, r1)).to(env.device) if pred.needs_time else None
        sr = pred.predict(lr, idx, times)
        if valid is not None:  # missing input cells stay missing in the output
            keep = valid[a - r0 : b - r0]
            if not args.degrade:
                keep = keep.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)
            sr = sr.masked_fill(~metrics.shave(keep, c), float("nan"))
        frame_rows = None
        if args.degrade or ref is not None:
            if args.degrade:
                hr = x[a - r0 : b - r0] if valid is None else x[a - r0 : b - r0].masked_fill(~valid[a - r0 : b - r0], float("nan"))
            else:
                hr = unit(norms, torch.from_numpy(ref.read(a, b)).to(env.device))
            hr = metrics.shave(hr, c)
            low = lr[a - r0 : b - r0]  # the inputs the outputs should degrade back to
            per_var = [acc.rows(sr[:, i], hr[:, i], offset=n.lo / n.span, lr=low[:, i]) for i, (acc, n) in enumerate(zip(accs, norms))]
            frame_rows = {k: torch.stack([r[k] for r in per_var], -1).cpu().numpy() for k in per_var[0]}  # (k, C)
            frame_rows = {k: v[:, 0] for k, v in frame_rows.items()} if one else frame_rows
        data = phys(norms, sr).float().cpu().numpy()
        data = data[:, 0] if one else data
        tw = time.time()
        out.write(cid, data, frame_rows)
        write_s += time.time() - tw
        write_bytes += data.nbytes
        frames_done += b - a
        print(f"rank {env.rank}: chunk {cid} (frames {a}..{b - 1}) done", flush=True)
        if bar is not None:
            bar.update(b - a)
            bar.set_postfix_str(f"{frames_done * env.world / max(1e-9, time.time() - t0):.1f} frames/s (all ranks, est.)", refresh=False)
    if bar is not None:
        bar.close()
    elapsed = time.time() - t0
    timing = env.all_reduce_sum(torch.tensor([frames_done, write_bytes, write_s], dtype=torch.float64, device=env.device)).tolist()
    slowest = env.all_reduce_max(torch.tensor([elapsed], dtype=torch.float64, device=env.device)).item()
    gm = None
    if out.metrics:  # from the stored rows of this rank's chunks, written by this run or an earlier one
        stored = out.read_metrics(mine)
        for i, acc in enumerate(accs):
            acc.add_rows(stored if one else {k: v[:, i] for k, v in stored.items()})
        sums = env.all_reduce_sum(torch.stack([acc.sums for acc in accs]))  # every variable in one collective
        per = {v: acc.summary(sums[i]) for i, (v, acc) in enumerate(zip(names, accs))}
        gm = per[names[0]] if one else {f"{k}_{v}": x for v, m in per.items() for k, x in m.items()}
    out.finish(gm)
    if env.is_root:
        if netcdf:
            _publish_netcdf(args, arcs, h5_path, names=names, pred=pred, rows=rows, cols=cols, attrs=attrs)
        elif args.consolidate:
            h5out.consolidate(args.output)
        stats = {"ranks": env.world, "frames": T, "frames_computed": int(timing[0]), "seconds": slowest,
                 "frames_per_s": timing[0] / slowest if slowest > 0 else 0.0,
                 "write_MB_per_s": timing[1] / 1e6 / timing[2] if timing[2] > 0 else 0.0, "write_mode": out.mode, "metrics": gm}
        print(f"wrote {args.output}: sr {out_shape} float32 ({out.mode}); {stats['frames_per_s']:.1f} frames/s on {env.world} rank(s), "
              f"HDF5 writes {stats['write_MB_per_s']:.1f} MB/s", flush=True)
        if gm:
            print("global metrics: " + ", ".join(f"{k} {v:.6g}" for k, v in gm.items()), flush=True)
        if args.stats:
            write_json(args.stats, stats)
    return 0


def _hr_axes(arc, rows, cols, *, degraded: bool, pred) -> dict:
    """{"y", "x"}: 1D coordinates of the high-resolution grid the output lies on ({} when the input has none)."""
    from .data.cf import fine_grid, fine_positions
    from .data.segments import grid_axes_of

    if not hasattr(arc, "grid"):
        return {}
    grid = arc.grid(rows, cols)
    if not degraded:
        centred = dg.CENTRED[pred.degrade]
        h, w = (len(range(*sl.indices(n))) if sl else n for sl, n in ((rows, arc.shape[1]), (cols, arc.shape[2])))
        grid = fine_grid(grid, fine_positions(h, pred.scale, centred=centred), fine_positions(w, pred.scale, centred=centred))
    return grid_axes_of(grid)


def _variables(text: str, default: list, option: str) -> list:
    """The comma-separated variable names of ``option`` (``default`` when empty); as many as the model has."""
    names = [v.strip() for v in text.split(",")] if text else list(default)
    if len(names) != len(default) or not all(names):
        raise UserError(f"{option} {text}: the model super-resolves {len(default)} variable(s) together ({', '.join(default)}); "
                        f"name as many, comma-separated")
    return names


def _publish_netcdf(args, arcs, h5_path: str, *, names: list, pred, rows, cols, attrs: dict) -> None:
    """Rank 0: the finished HDF5 output as a CF NetCDF file on the input's grid or its finer grid, then removed."""
    import shlex

    import h5py

    from .data.cf import fine_grid, fine_positions

    arc = arcs.first
    T, s, c = len(arc), pred.scale, pred.crop
    meta = arc.describe(rows, cols)
    metas = [meta] + [a.describe(rows, cols) for a in arcs.parts[1:]]
    for m, n in zip(metas, pred.norms):
        if not m["attrs"].get("units"):
            m["attrs"]["units"] = n.units
    grid = meta["grid"]
    one = len(names) == 1
    with h5py.File(h5_path, "r") as f:
        ny, nx = f["sr"].shape[-2:]
        if args.degrade:  # the input's own grid (cropped as the data were), less the model's border
            pos_y, pos_x = np.arange(c, c + ny, dtype=np.float64), np.arange(c, c + nx, dtype=np.float64)
        else:  # the finer grid, with low-resolution pixels placed as the degradation places them
            centred = dg.CENTRED[pred.degrade]
            pos_y = fine_positions(arc.shape[1], s, centred=centred)[c : c + ny]
            pos_x = fine_positions(arc.shape[2], s, centred=centred)[c : c + nx]
        fills = [m.get("fill_value") if m.get("missing_possible") else None for m in metas]
        frame_metrics = {}
        for n in ("psnr", "ssim"):
            if f"metrics/frame_{n}" in f:
                values = f[f"metrics/frame_{n}"][:]
                frame_metrics.update({f"metric_frame_{n}": values} if one else {f"metric_frame_{n}_{v}": values[:, i] for i, v in enumerate(names)})
        global_attrs = dict(attrs, **{f"metric_{k}": float(v) for k, v in (f["metrics"].attrs.items() if "metrics" in f else [])})
        check_space(args.output, int(np.prod(f["sr"].shape)) * 4)  # netCDF4 reports a full disk only as "HDF error"
        write_cf(args.output, frames=lambda a, b: f["sr"][a:b], n_frames=T, meta=meta, grid=fine_grid(grid, pos_y, pos_x),
                 var=names[0] if one else names, var_attrs=[m["attrs"] for m in metas],
                 history=f"python -m hpcvsr.infer {shlex.join(sys.argv[1:])}", fill_value=fills[0] if one else fills,
                 frame_metrics=frame_metrics, global_attrs=global_attrs)
        parts = f.attrs.get("parts")
    os.remove(h5_path)
    if parts:
        shutil.rmtree(os.path.join(os.path.dirname(os.path.abspath(h5_path)), parts), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
