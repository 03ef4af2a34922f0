"""Scaling studies: a real 2-rank sweep, the performance model against hand-computed numbers, the job scripts."""

import dataclasses
import doctest
import json
import math
import os
import re
import shlex

import pytest
import torch

from hpcvsr.cli import scaling as scaling_cli
from hpcvsr.errors import UserError
from hpcvsr.perf import calibration, scaling, scaling_report, timing
from hpcvsr.perf import perfmodel as pm

from .conftest import ROOT, mpi_env, mpirun_cmd, run_cli

TINY = ["--set", "data.frames=24", "--set", "data.size=[32,32]", "--set", "train2d.patch=16", "--set", "train3d.patch=16",
        "--set", "train2d.patches_per_epoch=16", "--set", "infer.block_frames=2", "--set", "infer.batch=2",
        "--batch", "2", "--strong-batch", "4", "--frames", "2", "--strong-frames", "4", "--steps", "3", "--warmup-steps", "1",
        "--accuracy-epochs", "1", "--base-batch", "2"]


def test_doctests():
    for mod in (pm, scaling, timing, calibration, scaling_report):
        assert doctest.testmod(mod).failed == 0


# --- (a) a real 2-rank sweep ---------------------------------------------------------------------

@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
@pytest.mark.mpi
def test_two_rank_sweep_writes_every_field_and_a_breakdown_that_adds_up(tmp_path):
    mpirun_cmd(2)  # skips with a reason when mpi4py or mpirun is missing
    out = tmp_path / "study"
    proc = run_cli("hpcvsr.scaling", "--out", str(out), "--sweep", "1", "2", *TINY, env=mpi_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| study | ranks |" in proc.stdout and "model prediction for summit" in proc.stdout
    res = json.load(open(out / "scaling.json"))
    assert os.path.getsize(out / "scaling.png") > 10_000
    assert res["ranks"] == [1, 2]
    # loaded steps (2 ranks only): the same work on both cores at once, no communication, recorded apart;
    # they calibrate the model's compute and waiting for ranks that share the node
    assert res["loaded_steps"] == {"1": False, "2": True}
    net = res["networks"]["2"]
    assert net["barrier_s"] > 0 and res["networks"]["1"] is None
    for r in res["studies"]:
        if r["ranks"] == 1:
            assert r["loaded"] is None
            continue
        lo = r["loaded"]
        assert lo["ranks"] == 2 and lo["barrier_s"] == net["barrier_s"] and lo["wait_fraction"] >= 0 and lo["jitter_fraction"] >= 0
        # neither all-reduce nor barrier: those parts are empty intervals, whose length is the machine's noise; assert the
        # structure (parts within the step, the step their sum plus what lies between) and leave timings to the benchmarks
        step = lo["time_s"]["step"]["max"]
        assert all(0 <= lo["time_s"][q]["max"] <= step for q in ("allreduce", "wait")), r["workload"]
        assert lo["time_s"]["compute"]["min"] > 0
        per = r["per_rank"] if r["unit"] == "sample" else r["global"] / r["ranks"] / r["steps"]
        steps = r["steps"] if r["unit"] == "frame" else 1
        bd = r["model"]["breakdown"]
        # the model's compute is the loaded steps' compute; its waiting their would-be waiting plus the measured barrier
        assert math.isclose(bd["compute"], lo["time_s"]["compute"]["mean"] * steps, rel_tol=1e-9)
        c_d = lo["time_s"]["compute"]["mean"] + lo["time_s"]["data"]["mean"] + lo["time_s"]["write"]["mean"]
        assert math.isclose(bd["wait"] / steps, lo["wait_fraction"] * c_d + net["barrier_s"], rel_tol=1e-6), r["workload"]
        assert per > 0
    check = {c["study"]: c for c in res["model_check"]}
    assert all(c["loaded"] and c["model_alone_s"] > 0 for c in check.values())
    studies = {(r["workload"], r["mode"], r["ranks"]) for r in res["studies"]}
    assert studies == {(w, m, n) for w in scaling.WORKLOADS for m in scaling.MODES for n in (1, 2)}
    for r in res["studies"]:
        for q in timing.QUANTITIES:
            t = r["time_s"][q]
            assert set(t) == {"min", "mean", "max"} and 0 <= t["min"] <= t["mean"] <= t["max"], (r["workload"], q, t)
        for key in ("per_rank", "global", "steps", "step_s", "t_s", "other_s", "allreduce_bytes", "efficiency", "model", "flops_per_sample"):
            assert key in r, key
        parts = sum(r["time_s"][q]["mean"] for q in timing.PARTS)
        assert abs(parts / r["step_s"] - 1) < 0.10, (r["workload"], r["mode"], r["ranks"], parts, r["step_s"])
        assert r["efficiency"] > 0 and r["model"]["t_s"] > 0
        if r["workload"] == "infer":
            assert r["allreduce_bytes"] == 0 and r["read_bytes"] > 0 and r["written_bytes"] > 0
        else:
            assert r["allreduce_bytes"] > 0 and r["flops_per_sample"] > 0
            if r["ranks"] == 2:
                assert r["time_s"]["allreduce"]["mean"] > 0
    weak2 = next(r for r in res["studies"] if r["workload"] == "train2d" and r["mode"] == "weak" and r["ranks"] == 2)
    assert weak2["global"] == 4 and weak2["per_rank"] == 2
    strong2 = next(r for r in res["studies"] if r["workload"] == "train2d" and r["mode"] == "strong" and r["ranks"] == 2)
    assert strong2["global"] == 4 and strong2["per_rank"] == 2
    assert {c["ranks"] for c in res["model_check"]} == {2} and len(res["model_check"]) == 6
    assert set(res["accuracy"]) == {"1", "2"}
    a1, a2 = res["accuracy"]["1"], res["accuracy"]["2"]
    assert a2["global_batch"] == 2 * a1["global_batch"] and math.isclose(a2["lr"], 2 * a1["lr"])  # the linear rule
    assert all(math.isfinite(a["val_psnr"]) for a in (a1, a2))
    assert res["networks"]["2"]["bandwidth_Bps"] > 0
    summit = res["predictions"]["summit"]["workloads"]
    assert set(summit) == set(scaling.WORKLOADS)
    assert set(summit["train2d"]["weak_efficiency"]) == {"6", "96", "1024", "27648"}
    assert summit["train3d"]["batch_for_90_at_1024"] >= 1
    # an existing report is not replaced silently
    again = run_cli("hpcvsr.scaling", "--out", str(out), "--report", env=mpi_env())
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr, again.stderr


# --- (b) the model against hand-computed numbers ------------------------------------------------

def toy(**kw):
    base = dict(name="toy", ranks_per_node=4, max_nodes=8, intra_latency_us=1.0, intra_bandwidth_GBps=10.0,
                inter_latency_us=2.0, inter_bandwidth_GBps=1.0)
    return pm.Machine(**{**base, **kw})


def test_ring_and_tree_formulas():
    # ring: 2 (p-1)/p bytes/bw + 2 (p-1) latency
    assert math.isclose(pm.ring_allreduce(8e6, 8, 2e-6, 4e9), 2 * 7 / 8 * 8e6 / 4e9 + 2 * 7 * 2e-6)
    assert math.isclose(pm.ring_allreduce(8e6, 8, 2e-6, 4e9), 0.003528)
    # tree: 2 ceil(log2 p) latency + 2 bytes/bw
    assert math.isclose(pm.tree_allreduce(8e6, 8, 2e-6, 4e9), 2 * 3 * 2e-6 + 2 * 8e6 / 4e9)
    assert math.isclose(pm.tree_allreduce(8e6, 5, 2e-6, 4e9), 2 * 3 * 2e-6 + 0.004)
    assert pm.ring_allreduce(1e9, 1, 1, 1) == pm.tree_allreduce(1e9, 1, 1, 1) == 0.0
    # at many ranks and small messages the tree wins, at 2 ranks and large ones the ring
    assert pm.tree_allreduce(1e5, 4096, 5e-6, 25e9) < pm.ring_allreduce(1e5, 4096, 5e-6, 25e9)
    assert pm.ring_allreduce(1e9, 2, 5e-6, 25e9) < pm.tree_allreduce(1e9, 2, 5e-6, 25e9)


def test_hierarchical_allreduce_by_hand():
    m = toy()
    # one node of 4: ring inside, 2*3/4 * 1e6/1e10 + 2*3*1e-6 = 156 us
    assert math.isclose(pm.allreduce_time(1e6, 4, m), 156e-6)
    # 4 nodes x 4: + between nodes on 1/4 shards at 1/4 of the NIC each: ring 2*3/4 * 2.5e5/2.5e8 + 2*3*2e-6 = 1.512 ms
    # tree: 2*2*2e-6 + 2 * 2.5e5/2.5e8 = 2.008 ms; best = ring
    assert math.isclose(pm.allreduce_time(1e6, 16, m, "ring"), 156e-6 + 1.512e-3)
    assert math.isclose(pm.allreduce_time(1e6, 16, m, "tree"), 156e-6 + 2.008e-3)
    assert math.isclose(pm.allreduce_time(1e6, 16, m), 156e-6 + 1.512e-3)
    # fewer ranks than a node: a ring of those ranks only
    assert math.isclose(pm.allreduce_time(1e6, 2, m), 1e6 / 1e10 + 2e-6)
    with pytest.raises(UserError, match="algorithm"):
        pm.allreduce_time(1e6, 16, m, "butterfly")


def test_step_efficiencies_and_batch_for_90_by_hand():
    m = toy(ranks_per_node=2, max_nodes=1, intra_latency_us=10.0, intra_bandwidth_GBps=1.0)
    w = pm.Workload(compute_s_per_sample=0.01, data_s_per_sample=0.001, grad_bytes=1e6)
    bd = pm.step_time(w, 4, 2, m)
    assert math.isclose(bd["compute"], 0.04) and math.isclose(bd["data"], 0.004)
    assert math.isclose(bd["allreduce"], 1e-3 + 2e-5) and bd["io"] == 0.0
    assert bd["wait"] == 0.0 and math.isclose(pm.step_time(w, 4, 2, m, barrier_s=pm.barrier_time(2, m))["wait"], 2e-5)  # a barrier
    assert math.isclose(bd["total"], 0.04502)
    assert math.isclose(pm.weak_efficiency(w, 4, 2, m), 0.044 / 0.04502)
    assert math.isclose(pm.strong_efficiency(w, 8, 2, m), 0.088 / (2 * 0.04502))
    assert math.isnan(pm.strong_efficiency(w, 1, 2, m))
    # 0.0001 b / (0.0001 b + 0.00102) >= 0.9  <=>  b >= 91.8
    assert pm.batch_for_efficiency(pm.Workload(1e-4, grad_bytes=1e6), 2, m) == 92
    # a step-to-step spread of 10 %: the slower of 2 ranks is later by E[max of 2 normals] = 0.589 (Blom) x 10 % x 44 ms
    j = pm.step_time(w, 4, 2, dataclasses.replace(m, jitter_fraction=0.1))
    assert math.isclose(j["wait"], pm.expected_max(2) * 0.1 * 0.044) and abs(pm.expected_max(2) - 1 / math.sqrt(math.pi)) < 0.03
    # GPU compute from FLOPs: 4 samples x 1e9 FLOP / (10 TFLOP/s x 0.5) = 0.8 ms; data overlapped
    g = toy(peak_tflops=10.0, sustained_fraction=0.5, data_on_critical_path=False, fs_bandwidth_GBps=100.0)
    bd = pm.step_time(pm.Workload(1.0, 1.0, io_bytes_per_sample=1e6, flops_per_sample=1e9), 4, 1, g)
    assert math.isclose(bd["compute"], 8e-4) and bd["data"] == 0.0
    assert math.isclose(bd["io"], 4e6 / 100e9)  # one rank, the whole aggregate
    assert math.isclose(pm.io_time(4e6, 1000, g), 4e9 / 100e9)  # 1000 ranks share it


def test_lr_rule():
    assert scaling.lr_factor("linear", 8) == 8.0 and scaling.lr_factor("sqrt", 9) == 3.0 and scaling.lr_factor("none", 8) == 1.0
    with pytest.raises(UserError, match="lr-rule"):
        scaling.lr_factor("cubic", 2)


# --- (c) the job scripts -------------------------------------------------------------------------

def _commands(path: str, launcher: str) -> tuple[dict, list]:
    """(defaults of VAR=${VAR:-default}, the launcher lines joined across continuations)."""
    text = open(path).read().replace("\\\n", " ")
    defaults = dict(re.findall(r"^(\w+)=\$\{\1:-([^}]*)\}", text, re.M))
    study = re.search(r"^STUDY=\((.*)\)$", text, re.M).group(1)
    lines = [l.strip() for l in text.splitlines() if l.strip().startswith((launcher, "python -m hpcvsr.scaling"))]
    return defaults, [l.replace('"${STUDY[@]}"', study) for l in lines]


def _scaling_args(line: str, values: dict) -> list:
    for k, v in values.items():
        line = line.replace(f'"${k}"', v).replace(f"${k}", v)
    ints = {k: int(v) for k, v in values.items() if v.isdigit()}
    line = re.sub(r"\$\(\((.*?)\)\)", lambda m: str(eval(m.group(1), {"__builtins__": {}}, ints)), line)  # $((4 * MAX_RANKS))
    tokens = [t for t in shlex.split(line) if t != "$@"]
    i = tokens.index("python")
    assert tokens[i + 1 : i + 3] == ["-m", "hpcvsr.scaling"], line
    return tokens[:i], tokens[i + 3 :]


@pytest.mark.parametrize("script,launcher", [("scaling.sbatch", "srun"), ("scaling.lsf", "jsrun")])
def test_job_scripts_name_existing_files_and_valid_options(script, launcher):
    path = os.path.join(ROOT, "jobs", script)
    defaults, lines = _commands(path, launcher)
    for key in ("CONFIG", "MACHINE"):
        assert os.path.isfile(os.path.join(ROOT, defaults[key])), (script, key, defaults[key])
    values = {"CONFIG": os.path.join(ROOT, defaults["CONFIG"]), "MACHINE": os.path.join(ROOT, defaults["MACHINE"]), "OUT": "/tmp/study",
              "NODES": "2", "MAX_RANKS": "8", "PER_NODE": "4", "OMP_NUM_THREADS": "7"}
    launches = [l for l in lines if l.startswith(launcher)]
    assert len(launches) == 2, lines  # the one-rank reference and the loop over node counts
    for line in lines:
        prefix, args = _scaling_args(line, values)
        if launcher == "srun" and prefix:
            assert prefix[0] == "srun" and "--kill-on-bad-exit=1" in prefix, prefix
            assert all(re.fullmatch(r"-[-\w]+(=\S+)?|\d+", t) for t in prefix[1:]), prefix
        if launcher == "jsrun" and prefix:
            assert prefix[0] == "jsrun" and {"--nrs", "--tasks_per_rs", "--gpu_per_rs"} <= set(prefix), prefix
        ns = scaling_cli.parser().parse_args(args)  # the job does not drift from the parser
        if ns.report:
            assert os.path.isfile(ns.this_machine)
        else:
            assert ns.config and os.path.isfile(ns.config) and ns.strong_batch == 32 and ns.strong_frames == 64


# --- (d) machine files -------------------------------------------------------------------------------

def test_machine_files_load_and_unknown_keys_are_refused(tmp_path):
    files = sorted(os.listdir(os.path.join(ROOT, "configs", "machines")))
    assert {"this_machine.yaml", "summit.yaml", "perlmutter.yaml"} <= set(files)
    machines = {f: pm.load_machine(os.path.join(ROOT, "configs", "machines", f)) for f in files}
    s = machines["summit.yaml"]
    assert (s.ranks_per_node, s.max_nodes, s.inter_bandwidth_GBps, s.intra_bandwidth_GBps) == (6, 4608, 25.0, 50.0)
    assert s.sources and s.assumptions and s.peak_tflops == 15.7
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(os.path.join(ROOT, "configs", "machines", "summit.yaml")).read() + "nvlink_generation: 2\n")
    with pytest.raises(UserError, match="unknown key 'nvlink_generation'"):
        pm.load_machine(str(bad))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("name: x\nranks_per_node: six\nmax_nodes: 1\nintra_latency_us: 1\nintra_bandwidth_GBps: 1\n"
                     "inter_latency_us: 1\ninter_bandwidth_GBps: 1\n")
    with pytest.raises(UserError, match="'ranks_per_node' must be an integer"):
        pm.load_machine(str(wrong))
    with pytest.raises(UserError, match="missing key"):
        pm.machine_from_dict({"name": "x"}, "inline")
    proc = run_cli("hpcvsr.scaling", "--report", "--out", str(tmp_path), "--machines", str(bad))
    assert proc.returncode == 2 and "unknown key 'nvlink_generation'" in proc.stderr and "Traceback" not in proc.stderr


def test_would_wait_by_hand():
    rows = torch.zeros(3, 2, len(timing.QUANTITIES))
    # step 0: the ranks arrive after 1, 2 and 4 s; step 1: the third rank had no work (left out)
    rows[:, 0, 0] = scaling.torch.tensor([1.0, 2.0, 4.0])
    rows[:, 1, 0] = scaling.torch.tensor([5.0, 5.0, 0.0])
    # a barrier of 0.5 s: the first waits 4 + 0.5 - 1 = 3.5 s, the second 2.5 s, the last max(0, 2 + 0.5 - 4) = 0;
    # 2 s on average, 1.5 s more than the barrier alone, over a mean of 7/3 s
    assert math.isclose(timing.would_wait(rows, barrier_s=0.5), 1.5 / (7 / 3))
    # equal arrivals wait for nothing but the barrier
    same = torch.zeros(2, 3, len(timing.QUANTITIES))
    same[:, :, 0] = 1.0
    assert timing.would_wait(same, barrier_s=0.5) == 0.0
    # the model at the measured rank count gives back that waiting (plus the barrier), at other counts it scales with expected_max
    rec1 = {"time_s": {q: {"mean": v} for q, v in (("compute", 0.04), ("compute_cpu", 0.04), ("data", 0.004), ("write", 0.0))},
            "per_rank": 4, "unit": "sample", "allreduce_bytes": 1e6}
    busy = {q: {"mean": v} for q, v in (("compute", 0.05), ("compute_cpu", 0.05), ("data", 0.006), ("write", 0.0))}
    loaded = {**rec1, "ranks": 2, "loaded": {"ranks": 2, "wait_fraction": 0.1, "jitter_fraction": 0.05, "time_s": busy}}
    w = calibration.workload_from(rec1, loaded=loaded)
    m = pm.Machine("here", ranks_per_node=4, max_nodes=1, intra_latency_us=10, intra_bandwidth_GBps=1, inter_latency_us=10,
                   inter_bandwidth_GBps=1, calibrate_jitter=True)
    assert math.isclose(pm.step_time(w, 4, 2, m, barrier_s=0.002)["wait"], 0.1 * 0.056 + 0.002)
    assert math.isclose(pm.step_time(w, 4, 4, m)["wait"], pm.expected_max(4) / pm.expected_max(2) * 0.1 * 0.056)
