"""The scaling studies' report: the sweep's table against the calibrated model, the predictions for other
machines, and the figure (``report.json``, ``report.md``, ``scaling.png``).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re

import numpy as np

from hpcvsr.errors import UserError
from hpcvsr.io.atomic import write_json
from hpcvsr.perf import perfmodel as pm
from hpcvsr.perf.calibration import efficiency, predicted_t, predictions
from hpcvsr.perf.scaling import WORKLOADS
from hpcvsr.perf.timing import PARTS


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
