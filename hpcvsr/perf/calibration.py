"""The performance model calibrated on measured studies: a workload from a study record, its predicted step
time and efficiency at other rank counts and on other machines (:mod:`hpcvsr.perf.perfmodel`).
"""

from __future__ import annotations

import dataclasses
import math

from hpcvsr.perf import perfmodel as pm

PREDICT_RANKS = (6, 96, 1024, 27648)


def _per_sample(rec: dict, cpu: bool = False) -> tuple[float, float]:
    """(compute, host) seconds per sample (per frame) of one rank in a study record (or its ``loaded`` part,
    which has the study's sizes)."""
    t, b = rec["time_s"], rec["per_rank"] if rec["unit"] == "sample" else rec["global"] / rec["ranks"] / rec["steps"]
    return t["compute_cpu" if cpu else "compute"]["mean"] / b, (t["data"]["mean"] + t["write"]["mean"]) / b


def workload_from(rec: dict, cpu: bool = False, loaded: dict | None = None) -> pm.Workload:
    """The model's :class:`~hpcvsr.perf.perfmodel.Workload` from a one-rank study record (``cpu``: the compute
    term from the CPU time of the computing thread instead of the wall time, i.e. a whole core);
    ``loaded``: a multi-rank study record with loaded steps (their compute and host time per sample,
    and the waiting a barrier would have added, with every rank of the node busy)."""
    compute, host = _per_sample(rec, cpu)
    lo = (loaded or {}).get("loaded")
    busy = _per_sample({**loaded, "time_s": lo["time_s"]}, cpu) if lo else (0.0, 0.0)
    # the spread about the step's mean that makes expected_max(ranks) * spread the loaded steps' would-be waiting
    spread = lo["wait_fraction"] / pm.expected_max(lo["ranks"]) if lo and lo["ranks"] > 1 else 0.0
    return pm.Workload(compute_s_per_sample=compute, data_s_per_sample=host, grad_bytes=rec["allreduce_bytes"],
                       io_bytes_per_sample=rec.get("io_bytes_per_sample", 0.0), flops_per_sample=rec.get("flops_per_sample", 0.0),
                       jitter_fraction=rec.get("jitter_fraction", 0.0),
                       loaded_compute_s_per_sample=busy[0], loaded_data_s_per_sample=busy[1], loaded_jitter_fraction=spread)


def predicted_t(rec1: dict, rec: dict, m: pm.Machine, cpu: bool = False, barrier_s: float | None = None) -> dict:
    """The model's breakdown of study ``rec`` (the same workload and mode as ``rec1``, at ``rec['ranks']``),
    calibrated on ``rec1`` and on ``rec``'s own loaded steps when it has them; ``barrier_s``: the
    measured cost of the study's barrier (None: :func:`~hpcvsr.perf.perfmodel.barrier_time`)."""
    w = workload_from(rec1, cpu, rec)
    bar = pm.barrier_time(rec["ranks"], m) if barrier_s is None else barrier_s
    if rec["unit"] == "sample":
        return pm.step_time(w, rec["per_rank"], rec["ranks"], m, barrier_s=bar)
    per_round = rec["global"] / rec["ranks"] / rec["steps"]
    bd = pm.step_time(w, per_round, rec["ranks"], m, barrier_s=bar)
    return {k: v * rec["steps"] for k, v in bd.items()}


def efficiency(mode: str, t1: float, tn: float, n: int) -> float:
    """Weak ``t1 / tn``; strong ``t1 / (n tn)``.

    >>> efficiency("weak", 1.0, 1.25, 2), efficiency("strong", 2.0, 1.25, 2)
    (0.8, 0.8)
    """
    return t1 / tn if mode == "weak" else t1 / (n * tn)


def _finite(v: float) -> float | None:
    return None if math.isnan(v) else v


def predictions(rec1: dict, machines: list, ranks=PREDICT_RANKS, global_batch: int = 4096) -> dict:
    """Per machine and workload: weak efficiency at ``ranks`` and along the node ladder, strong efficiency at
    ``global_batch`` (training; inference: frames per round in all), and for training the per-rank batch for
    >= 90 % weak efficiency at 1,024 ranks (an inference chunk's efficiency does not depend on its size here)."""
    out = {}
    for m in machines:
        per = {}
        for key, rec in rec1.items():
            name, mode = key.split("/")
            if mode != "weak":
                continue
            w = workload_from(rec)
            b = rec["per_rank"] if rec["unit"] == "sample" else rec["global"] / rec["steps"]
            top = m.max_nodes * m.ranks_per_node
            ladder = [n * m.ranks_per_node for n in pm.node_ladder(m.max_nodes)]

            per[name] = {
                "per_rank": b,
                "weak_efficiency": {str(p): (pm.weak_efficiency(w, b, p, m) if p <= top else None) for p in ranks},
                "strong_efficiency": {str(p): (_finite(pm.strong_efficiency(w, global_batch, p, m)) if p <= top else None) for p in ranks},
                "weak_curve": {str(p): pm.weak_efficiency(w, b, p, m) for p in ladder},
                "strong_global": global_batch,
                "strong_curve": {str(p): _finite(pm.strong_efficiency(w, global_batch, p, m)) for p in ladder},
                "breakdown": {str(p): pm.step_time(w, b, p, m) for p in ranks if p <= top},
                "batch_for_90_at_1024": pm.batch_for_efficiency(w, 1024, m) if 1024 <= top and w.grad_bytes else None,
                "allreduce_s_at_max": {a: pm.allreduce_time(w.grad_bytes, top, m, a) for a in ("ring", "tree")} if w.grad_bytes else None,
            }
        out[m.name] = {"machine": dataclasses.asdict(m), "workloads": per}
    return out
