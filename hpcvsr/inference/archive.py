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

``--members N`` (a run with a generative stage, one variable): ``sr`` holds N members
(T, N, sH, sW) along a ``realization`` dimension, beside their mean and standard deviation
(ddof=1) ``sr_mean`` and ``sr_std`` (T, sH, sW) (``<var>_mean`` / ``<var>_std`` in CF NetCDF and
Zarr); ``--seed`` chooses their noise. With a reference the usual metrics score the ensemble
mean, the ensemble scores (CRPS, spread-skill, rank histogram, FSS, spectra;
:class:`hpcvsr.ops.ensemble.EnsembleSums`) join the global metrics as ``ens_<name>``, and the
rank histogram and spectra are saved as ``OUT.scores.json``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
import torch

from hpcvsr import dist
from hpcvsr.data.blocks import phys, unit
from hpcvsr.errors import UserError
from hpcvsr.inference.engine import Predictor
from hpcvsr.io import catalog, cf, h5out, lock, zarrout
from hpcvsr.io.atomic import check_space, check_writable, write_json
from hpcvsr.io.ncout import REALIZATION, member_stats, write_cf
from hpcvsr.io.sequences import NETCDF_EXTENSIONS, MultiArchive
from hpcvsr.ops import degrade as dg
from hpcvsr.ops import metrics
from hpcvsr.ops import windows as win
from hpcvsr.pipeline import build
from hpcvsr.pipeline import config as config_mod
from hpcvsr.pipeline import segments as sg

ENSEMBLE_STATS = ("sr_mean", "sr_std")  # an ensemble's HDF5 datasets beside its members (CF: <var>_mean, <var>_std)


@dataclass(frozen=True)
class Job:
    """One inference job, as ``hpcvsr infer`` states it (see the module docstring and ``hpcvsr infer --help``)."""

    run_dir: str  # a finished training run (holds model.pt)
    input: str | tuple  # the archive: a file, a Zarr store, a glob or folder of files, or several of those
    output: str  # HDF5, or CF NetCDF-4 for a .nc name (or netcdf=True)
    var: str = ""  # comma-separated variables ('' : those the run was trained on)
    select: tuple = ()  # "DIM=VALUE" pairs choosing extra dimensions by coordinate value
    isel: tuple = ()  # ... or "DIM=INDEX" by index
    degrade: bool = False  # the input is high resolution: degrade, super-resolve, compare
    reference: str = ""  # a high-resolution archive to compare with
    ref_var: str = ""  # its variables ('' : var)
    overwrite: bool = False
    consolidate: bool = False  # copy a virtual-dataset output into one plain file
    netcdf: bool = False
    stats: str = ""  # write timings here as JSON
    command: str = ""  # the command line recorded in a NetCDF output's history
    allow_gaps: bool = False  # many files as one archive: accept a gap in the time series
    time_origin: str = ""  # the origin of time units that have none ('days' -> 'days since <time_origin>')
    members: int = 0  # ensemble members of a run with a generative stage (0: the deterministic output)
    seed: int = 0  # the members' noise: the same seed gives the same members
    fss_thresholds: tuple = ()  # event thresholds (physical units) of the members' fractions skill score


def infer(job: Job, cfg=None) -> int:
    """Run ``job`` with the configuration ``cfg`` (its ``infer`` section; None: the embedded defaults)
    on this process's ranks: what ``hpcvsr infer`` does."""
    check_ensemble(job)  # before any rank starts
    cfg = cfg if cfg is not None else build.load_config()
    return dist.launch(cfg, lambda env: run(job, cfg, env))


def run(job: Job, cfg, env) -> int:
    with contextlib.ExitStack() as held:
        return _run(job, cfg, env, held)


def check_ensemble(job: Job) -> None:
    """Refuse ensemble settings that do not go together."""
    if job.members < 0:
        raise UserError(f"--members {job.members}: give the number of ensemble members (0, the default, for the deterministic output)")
    if job.seed and not job.members:
        raise UserError(f"--seed {job.seed} chooses the ensemble members' noise: give --members N too")
    if job.fss_thresholds and not job.members:
        raise UserError("--fss-threshold scores ensemble members: give --members N too")
    if job.fss_thresholds and not (job.degrade or job.reference):
        raise UserError("--fss-threshold scores the members against a reference: give --degrade or --reference")


def _run(job: Job, cfg, env, held: contextlib.ExitStack) -> int:
    ic = cfg.infer
    check_ensemble(job)
    pred = Predictor(job.run_dir, env.device, batch=ic.batch, tile=ic.tile, tile_halo=ic.tile_halo, precision=ic.precision,
                     compile=ic.compile, members=job.members, seed=job.seed)
    M, seed = pred.members, pred.seed  # M > 0: sr of a chunk is (k, M, C, H, W)
    names = _variables(job.var, pred.vars, "--var")
    var = ",".join(names)  # for messages and attributes
    select, isel = config_mod.parse_pairs(job.select, "--select"), config_mod.parse_pairs(job.isel, "--isel")
    opening = catalog.Opening(allow_gaps=job.allow_gaps, time_origin=job.time_origin)
    arcs = MultiArchive(job.input, names, select=select, isel=isel, opening=opening)
    held.callback(arcs.close)
    arc = arcs.first  # time, grid and attributes (the variables share them)
    T, H, W = arc.shape
    s, c, norms = pred.scale, pred.crop, pred.norms
    one = len(names) == 1
    zarr_out = zarrout.is_zarr_out(job.output)
    netcdf = not zarr_out and (job.netcdf or job.output.lower().endswith(NETCDF_EXTENSIONS))
    if T < env.world:
        raise UserError(f"{catalog.label(job.input)}:{var} has {T} frames, fewer than the {env.world} ranks")
    if M and not one:
        raise UserError(f"--members: an ensemble is of one variable, not {len(names)} ({var})")
    if M and (netcdf or zarr_out) and REALIZATION in (arc.scalar_coords() if hasattr(arc, "scalar_coords") else {}):
        raise UserError(f"{catalog.label(job.input)}:{var} has a coordinate '{REALIZATION}', the name of the output's members dimension; "
                        "write HDF5 instead")
    if job.degrade and job.reference:
        raise UserError("use either --degrade (compare with the input) or --reference, not both")
    if job.degrade and pred.degrade in dg.PAIRED:
        raise UserError(f"{job.run_dir} was trained on pairs (a coarse run and a fine one), with no degradation to apply: give it a coarse "
                        "run as --input and compare with the fine run with --reference")
    rows = cols = None
    h, w = H, W
    if job.degrade:  # crop as in training, to the largest size divisible by the scale
        mode = pred.config.get("data", {}).get("crop", "centre")
        y, x = sg.frame_crop(f"{catalog.label(job.input)}:{var}", H, W, s, mode)
        (y0, y1), (x0, x1) = y or (0, H), x or (0, W)
        if y or x:
            rows, cols = slice(y0, y1), slice(x0, x1)
            if env.is_root:
                print(f"{catalog.label(job.input)}:{var}: frames of {H}x{W} cropped to rows {y0}:{y1}, columns {x0}:{x1} ({mode}) to be divisible by {s}")
        h, w = (y1 - y0) // s, (x1 - x0) // s
    out_shape = (T, h * s - 2 * c, w * s - 2 * c) if one else (T, len(names), h * s - 2 * c, w * s - 2 * c)
    if M:
        out_shape = (T, M, *out_shape[1:])
    periodic = hasattr(arc, "grid") and cf.periodic_x(arc.grid(rows, cols))  # a global longitude: no seam
    pred.check_grid(f"{catalog.label(job.input)}:{var}", (h * s, w * s), _hr_axes(arc, rows, cols, degraded=bool(job.degrade), pred=pred))
    if pred.needs_time and not getattr(arc, "cf_time", False):
        raise UserError(f"{catalog.label(job.input)}:{var} has no CF time coordinate, but the model {job.run_dir} was trained with time features")
    ref = None
    if job.reference:
        ref = MultiArchive(job.reference, _variables(job.ref_var, names, "--ref-var"), select=select, isel=isel, opening=opening)
        held.callback(ref.close)
        if ref.shape != (T, h * s, w * s):
            raise UserError(f"{job.reference}: shape {ref.shape} does not match the super-resolved {(T, h * s, w * s)}")
    chunk_list = win.chunks(T, ic.block_frames)
    if len(chunk_list) < env.world:
        raise UserError(f"{T} frames in chunks of {ic.block_frames} give {len(chunk_list)} chunks for {env.world} ranks; lower infer.block_frames")
    mine = range(*win.block_range(len(chunk_list), env.world, env.rank))
    attrs = {"scale": s, "pipeline": pred.pipeline, "checkpoint_hash": pred.hash, "run_dir": os.path.abspath(job.run_dir),
             "source_file": ", ".join(os.path.abspath(p) for p in catalog.split(job.input)), "source_var": var, "degraded_input": bool(job.degrade),
             "degradation": pred.degrade,
             "normalisation": json.dumps({"lo": norms[0].lo, "hi": norms[0].hi} if one else {v: {"lo": n.lo, "hi": n.hi} for v, n in zip(names, norms)}),
             "units": str(arc.units or norms[0].units) if one else json.dumps([str(a.units or n.units) for a, n in zip(arcs.parts, norms)]),
             "crop": c, "window": pred.win_size, "padding": pred.pad, "tile": ic.tile, "precision": ic.precision,
             "input_crop": json.dumps({"rows": [rows.start, rows.stop] if rows else None, "cols": [cols.start, cols.stop] if cols else None}),
             "selection": json.dumps({"select": select, "isel": isel}), "missing_values": "NaN" if any(a.missing_possible for a in arcs.parts) else "none"}
    thresholds = tuple(dict.fromkeys(float(t) for t in job.fss_thresholds))  # physical units, each once
    if M:
        attrs.update(members=M, seed=seed)
        if thresholds:
            attrs["fss_thresholds"] = json.dumps(thresholds)
    if netcdf or zarr_out:
        check_writable(job.output, job.overwrite)
    held.enter_context(lock.held_by_root(env, job.output + ".lock", job.output))  # one job per output, after every input check
    h5_path = job.output + ".h5" if netcdf else job.output
    accs = [metrics.MetricSums(data_range=1.0, unit_scale=n.span, spectrum_cutoff=1.0 / s, device=env.device,
                               degradation=pred.consistency) for n in norms]
    scored = bool(job.degrade or ref)
    ens_sums = None  # ens_sums(): a new, empty EnsembleSums of this run (members scored against the reference)
    fss_unit = tuple(norms[0].unit(t) for t in thresholds)  # the thresholds in the members' normalised units
    if M and scored:
        ens_sums = functools.partial(_ensemble_sums, M, unit_scale=norms[0].span, spectrum_cutoff=1.0 / s, thresholds=fss_unit,
                                     device=env.device)
    ens_rows = {"ens": (ens_sums().sums.numel(),)} if ens_sums else {}  # one row of the ensemble sums per frame
    ens_layout = {"members": M, "seed": seed, "fss_thresholds": list(thresholds)} if M else {}
    if zarr_out:
        out = zarrout.ZarrOutput(job.output, lambda: _zarr_template(job, arcs, names=names, pred=pred, rows=rows, cols=cols, attrs=attrs,
                                                                   out_shape=out_shape, chunk=chunk_list[0][1] - chunk_list[0][0], members=M),
                                 frame_vars=names, chunk_list=chunk_list, env=env, metrics=scored, overwrite=job.overwrite,
                                 layout={"shape": list(out_shape), "checkpoint_hash": pred.hash, **ens_layout},
                                 extra_vars={"sr_mean": f"{names[0]}_mean", "sr_std": f"{names[0]}_std"} if M else None, extra_rows=ens_rows)
    else:
        out = h5out.SROutput(h5_path, out_shape, chunk_list, attrs, env, compression=ic.compression, metrics=scored, overwrite=job.overwrite,
                             **(_ensemble_datasets(out_shape, ens_rows, ens_layout) if M else {}))
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
        times = torch.from_numpy(arc.time_features(r0, r1)).to(env.device) if pred.needs_time else None
        sr, x, lr, valid = pred.resolve_chunk(dist.to_device(arcs.read(r0, r1, rows, cols), env.device), frames=(a, b), read=(r0, r1),
                                              total=T, times=times, degrade=bool(job.degrade), what=f"{catalog.label(job.input)}:{var}",
                                              periodic_x=periodic)
        frame_rows = None
        if job.degrade or ref is not None:
            if job.degrade:
                hr = x[a - r0 : b - r0] if valid is None else x[a - r0 : b - r0].masked_fill(~valid[a - r0 : b - r0], float("nan"))
            else:
                hr = unit(norms, torch.from_numpy(ref.read(a, b)).to(env.device))
            hr = metrics.shave(hr, c)
            low = lr[a - r0 : b - r0]  # the inputs the outputs should degrade back to
            det = sr.mean(1) if M else sr  # an ensemble's mean takes the deterministic metrics
            per_var = [acc.rows(det[:, i], hr[:, i], offset=n.lo / n.span, lr=low[:, i]) for i, (acc, n) in enumerate(zip(accs, norms))]
            frame_rows = {k: torch.stack([r[k] for r in per_var], -1).cpu().numpy() for k in per_var[0]}  # (k, C)
            frame_rows = {k: v[:, 0] for k, v in frame_rows.items()} if one else frame_rows
            if ens_sums:
                frame_rows["ens"] = _ensemble_rows(ens_sums, sr[:, :, 0], hr[:, 0], offset=norms[0].lo / norms[0].span)
        extra = None
        if M:  # sr (k, M, 1, H, W): the members of one variable
            data = norms[0].phys(sr[:, :, 0]).float().cpu().numpy()
            extra = dict(zip(ENSEMBLE_STATS, member_stats(data)))
        else:
            data = phys(norms, sr).float().cpu().numpy()
            data = data[:, 0] if one else data
        tw = time.time()
        out.write(cid, data, frame_rows, extra=extra)
        write_s += time.time() - tw
        write_bytes += data.nbytes + sum(v.nbytes for v in (extra or {}).values())
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
    gm = scores = None
    if out.metrics:  # from the stored rows of this rank's chunks, written by this run or an earlier one
        stored = out.read_metrics(mine)
        for i, acc in enumerate(accs):
            acc.add_rows(stored if one else {k: v[:, i] for k, v in stored.items()})
        packed = [acc.sums for acc in accs]
        if ens_sums:
            packed.append(torch.as_tensor(stored["ens"], dtype=torch.float64, device=env.device).sum(0))
        sums = env.all_reduce_sum(torch.cat(packed)).split([p.numel() for p in packed])  # every variable and the ensemble in one collective
        per = {v: acc.summary(sums[i]) for i, (v, acc) in enumerate(zip(names, accs))}
        gm = per[names[0]] if one else {f"{k}_{v}": x for v, m in per.items() for k, x in m.items()}
        if ens_sums:
            scores = _ensemble_scores(ens_sums().summary(sums[-1]), thresholds, fss_unit)
            gm = dict(gm, **{f"ens_{k}": v for k, v in scores.items() if isinstance(v, (int, float))},
                      **{f"ens_fss_{t}": v for t, v in scores["fss"].items()})
    if zarr_out:
        out.finish(gm, frame_metrics=lambda rows: _frame_metric_vars(rows, names))
    else:
        out.finish(gm)
    if env.is_root:
        if netcdf:
            _publish_netcdf(job, arcs, h5_path, names=names, pred=pred, rows=rows, cols=cols, attrs=attrs)
        elif job.consolidate:
            h5out.consolidate(job.output)
        stats = {"ranks": env.world, "frames": T, "frames_computed": int(timing[0]), "seconds": slowest,
                 "frames_per_s": timing[0] / slowest if slowest > 0 else 0.0,
                 "write_MB_per_s": timing[1] / 1e6 / timing[2] if timing[2] > 0 else 0.0, "write_mode": out.mode, "metrics": gm}
        layout = f"sr {out_shape} float32"
        if M and (netcdf or zarr_out):  # the CF outputs put the members first
            layout = (f"{names[0]} {(M, T, *out_shape[2:])} float32 (realization, time, y, x: {M} members, seed {seed}) "
                      f"with {names[0]}_mean, {names[0]}_std {(T, *out_shape[2:])}")
        elif M:
            layout += f" (time, realization, y, x: {M} members, seed {seed}) with sr_mean, sr_std {(T, *out_shape[2:])}"
        print(f"wrote {job.output}: {layout} ({out.mode}); {stats['frames_per_s']:.1f} frames/s on {env.world} rank(s), "
              f"writes {stats['write_MB_per_s']:.1f} MB/s", flush=True)
        if gm:
            print("global metrics: " + ", ".join(f"{k} {v:.6g}" for k, v in gm.items()), flush=True)
        if scores:
            write_json(job.output + ".scores.json", _plain(dict(scores, members=M, seed=seed, units=attrs["units"])))
            print(f"ensemble scores (rank histogram, spectra): {job.output}.scores.json", flush=True)
        if job.stats:
            write_json(job.stats, stats)
    return 0


def _ensemble_sums(members: int, **kwargs):
    """A new :class:`hpcvsr.ops.ensemble.EnsembleSums` (imported only when an ensemble is scored)."""
    from hpcvsr.ops.ensemble import EnsembleSums

    return EnsembleSums(members, **kwargs)


def _ensemble_rows(new, ens: torch.Tensor, truth: torch.Tensor, offset: float = 0.0) -> np.ndarray:
    """Per-frame rows (k, L) of the ensemble sums (``new()`` an empty accumulator) of members ``ens``
    (k, M, H, W) against ``truth`` (k, H, W), normalised: the sums of any frames are the sums of their rows."""
    rows = []
    for i in range(len(ens)):
        acc = new()
        acc.update(ens[i : i + 1], truth[i : i + 1], offset=offset)
        rows.append(acc.sums)
    return torch.stack(rows).cpu().numpy()


def _ensemble_scores(summary: dict, thresholds: tuple, normalised: tuple) -> dict:
    """An :meth:`EnsembleSums.summary` with its FSS keyed by the physical thresholds it was asked for."""
    return dict(summary, fss={f"{t:g}": summary["fss"][f"{n:g}"] for t, n in zip(thresholds, normalised)})


def _ensemble_datasets(out_shape: tuple, ens_rows: dict, layout: dict) -> dict:
    """:class:`~hpcvsr.io.h5out.SROutput` keywords of an ensemble: members ``sr`` (T, M, H, W) and their
    mean and standard deviation (T, H, W) beside them, a row of ensemble sums per frame."""
    frame = tuple(out_shape[2:])
    return {"extra": dict.fromkeys(ENSEMBLE_STATS, frame), "extra_rows": ens_rows, "row_shape": (), "layout": layout,
            "dataset_attrs": {"sr": {"dims": "time realization y x", "long_name": "ensemble members"},
                              "sr_mean": {"dims": "time y x", "long_name": "ensemble mean", "statistic": "mean over realization"},
                              "sr_std": {"dims": "time y x", "long_name": "ensemble standard deviation",
                                         "statistic": "standard deviation over realization, ddof=1"}}}


def _plain(value):
    """``value`` for strict JSON: NaN and infinities as null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _hr_axes(arc, rows, cols, *, degraded: bool, pred) -> dict:
    """{"y", "x"}: 1D coordinates of the high-resolution grid the output lies on ({} when the input has none)."""
    from hpcvsr.io.cf import fine_grid
    from hpcvsr.pipeline.segments import grid_axes_of

    if not hasattr(arc, "grid"):
        return {}
    grid = arc.grid(rows, cols)
    if not degraded:
        h, w = (len(range(*sl.indices(n))) if sl else n for sl, n in ((rows, arc.shape[1]), (cols, arc.shape[2])))
        grid = fine_grid(grid, *pred.output_positions(h, w, crop=False))
    return grid_axes_of(grid)


def _variables(text: str, default: list, option: str) -> list:
    """The comma-separated variable names of ``option`` (``default`` when empty); as many as the model has."""
    names = [v.strip() for v in text.split(",")] if text else list(default)
    if len(names) != len(default) or not all(names):
        raise UserError(f"{option} {text}: the model super-resolves {len(default)} variable(s) together ({', '.join(default)}); "
                        f"name as many, comma-separated")
    return names


def _cf_layout(job: Job, arcs, *, names: list, pred, rows, cols, frames: tuple | None = None) -> dict:
    """What a CF output of ``job`` holds besides its frames (the :func:`~hpcvsr.io.ncout.write_cf` keywords):
    the input's time (of ``frames`` (a, b) only, when given), attributes and scalar coordinates, on the
    input's grid (``--degrade``, less the model's border) or its finer grid."""
    from hpcvsr.io.cf import fine_grid

    arc = arcs.first
    c = pred.crop
    metas = [a.describe(rows, cols) for a in arcs.parts]
    if frames and metas[0].get("time"):
        metas[0]["time"] = dict(metas[0]["time"], values=np.asarray(metas[0]["time"]["values"])[frames[0] : frames[1]])
    for m, n in zip(metas, pred.norms):
        if not m["attrs"].get("units"):
            m["attrs"]["units"] = n.units
    if job.degrade:  # the input's own grid (cropped as the data were), less the model's border
        h, w = (len(range(*sl.indices(n))) if sl else n for sl, n in ((rows, arc.shape[1]), (cols, arc.shape[2])))
        pos_y, pos_x = np.arange(c, c + h - 2 * c, dtype=np.float64), np.arange(c, c + w - 2 * c, dtype=np.float64)
    else:  # the finer grid, with low-resolution pixels placed as the degradation places them
        pos_y, pos_x = pred.output_positions(arc.shape[1], arc.shape[2])
    fills = [m.get("fill_value") if m.get("missing_possible") else None for m in metas]
    one = len(names) == 1
    return {"meta": metas[0], "grid": fine_grid(metas[0]["grid"], pos_y, pos_x), "var": names[0] if one else names,
            "var_attrs": [m["attrs"] for m in metas], "fill_value": fills[0] if one else fills,
            "history": job.command or f"hpcvsr infer --run-dir {job.run_dir} --input {job.input}"}


def _frame_metric_vars(rows: dict, names: list) -> dict:
    """The per-frame metric variables of a CF output from the stored rows ((T,) or (T, C) each)."""
    out = {}
    for n in ("psnr", "ssim"):
        if n in rows:
            v = np.asarray(rows[n])
            out.update({f"metric_frame_{n}": v} if len(names) == 1 else {f"metric_frame_{n}_{x}": v[:, i] for i, x in enumerate(names)})
    return out


def _publish_netcdf(job: Job, arcs, h5_path: str, *, names: list, pred, rows, cols, attrs: dict) -> None:
    """Rank 0: the finished HDF5 output as a CF NetCDF file on the input's grid or its finer grid, then removed."""
    import h5py

    layout = _cf_layout(job, arcs, names=names, pred=pred, rows=rows, cols=cols)
    with h5py.File(h5_path, "r") as f:
        stored = {n: f[f"metrics/frame_{n}"][:] for n in ("psnr", "ssim") if f"metrics/frame_{n}" in f}
        global_attrs = dict(attrs, **{f"metric_{k}": float(v) for k, v in (f["metrics"].attrs.items() if "metrics" in f else [])})
        members = int(f.attrs.get("members", 0))
        size = sum(int(np.prod(f[n].shape)) * 4 for n in ("sr", *ENSEMBLE_STATS) if n in f)
        check_space(job.output, size)  # netCDF4 reports a full disk only as "HDF error"
        write_cf(job.output, frames=lambda a, b: f["sr"][a:b], n_frames=len(arcs.first), frame_metrics=_frame_metric_vars(stored, names),
                 global_attrs=global_attrs, members=members, **layout)
        parts = f.attrs.get("parts")
    os.remove(h5_path)
    if parts:
        shutil.rmtree(os.path.join(os.path.dirname(os.path.abspath(h5_path)), parts), ignore_errors=True)


def _zarr_template(job: Job, arcs, *, names: list, pred, rows, cols, attrs: dict, out_shape: tuple, chunk: int, members: int = 0):
    """The CF layout of the NetCDF output as a lazy ``xarray.Dataset`` (frames as dask arrays of
    ``chunk`` frames): a one-frame NetCDF skeleton written by the same writer, grown to every frame
    (an ensemble's members and their mean and standard deviation alike)."""
    import tempfile

    import dask.array as da
    import xarray as xr

    layout = _cf_layout(job, arcs, names=names, pred=pred, rows=rows, cols=cols, frames=(0, 1))
    T = out_shape[0]
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(job.output))) as tmp:
        skeleton = os.path.join(tmp, "skeleton.nc")
        write_cf(skeleton, frames=lambda a, b: np.zeros((b - a, *out_shape[1:]), np.float32), n_frames=1, global_attrs=attrs,
                 compression=False, members=members, **layout)
        with xr.open_dataset(skeleton, decode_times=False) as ds:
            ds = ds.load()
    tdim, arc = ds[names[-1]].dims[-3], arcs.first  # an ensemble's members lead: (realization, time, y, x)
    written = [*names, *((f"{names[0]}_mean", f"{names[0]}_std") if members else ())]
    variables = {}
    for name, v in ds.variables.items():
        if name in written:  # the frames, written chunk by chunk
            shape = tuple(T if d == tdim else n for d, n in zip(v.dims, v.shape))
            chunks = tuple(chunk if d == tdim else n for d, n in zip(v.dims, v.shape))
            v = xr.Variable(v.dims, da.zeros(shape, dtype=np.float32, chunks=chunks), v.attrs, v.encoding)
        elif tdim in v.dims:  # the time coordinate (or frame index) of every frame
            values = arc.time_values(0, T) if getattr(arc, "time", None) == name else np.arange(T)
            v = xr.Variable(v.dims, np.asarray(values, v.dtype), v.attrs, v.encoding)
        variables[name] = v
    coords = {k: variables.pop(k) for k in list(variables) if k in ds.coords}
    return xr.Dataset(variables, coords=coords, attrs=ds.attrs)
