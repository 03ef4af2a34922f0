"""The calibrated performance model of a data-parallel training step and an inference chunk.

One step on ``p`` ranks with a per-rank batch of ``b`` samples takes

    t(b, p) = compute(b) + data(b) + allreduce(gradient bytes, p) + io(bytes per rank, p)

* **compute**: ``b`` times the compute time per sample. On the machine that was measured it is
  the measured one-rank time per sample (forward, backward and optimizer update); with more than
  one rank on a node it is the time per sample of the *loaded steps*, when the study has them: the
  same work on every rank at the same moments, without the barrier and the all-reduce (ranks that
  share a node's cores, caches and memory bandwidth compute slower than one rank alone). On a GPU machine
  it is ``b`` times the floating-point operations per sample (counted on the measured run) divided
  by ``peak_tflops * sustained_fraction``; the sustained fraction is an assumption stated in each
  machine file, not a measurement.
* **data**: batch assembly on the host (``b`` times the measured time per sample) when the machine
  file says it is on the critical path (a CPU run); on GPU nodes it is assumed to overlap with the
  GPU's work (loader processes on the host cores) and left out.
* **allreduce**: hierarchical, as NCCL and MPI do it on multi-GPU nodes: a ring reduce-scatter and
  all-gather among the ``g`` ranks of a node (:func:`ring_allreduce` with ``g``), and between the
  nodes a ring or a tree all-reduce of each rank's ``1/g`` shard, the ``g`` shards sharing the node's
  injection bandwidth (:func:`allreduce_time`). No overlap with the backward pass is assumed (the
  measurement does not overlap either).
* **io**: bytes each rank reads and writes per step over its share of the file system's aggregate
  bandwidth, ``bytes * p / aggregate`` (:func:`io_time`). Training reads each rank's frames once at
  the start, not per step, so its per-step file-system term is zero; inference reads and writes
  every chunk.

* **wait**: every step lasts as long as its slowest rank. The measured step also synchronises the
  ranks with a barrier before its all-reduce (inference: after each chunk), so that waiting is
  measured apart from communication; its cost ``barrier_s`` is measured by the run's network
  benchmark (or :func:`barrier_time`) and is left out of predictions for production runs (DDP has
  none). With a spread ``jitter`` of a rank's host and compute time about the mean of the ranks
  in the same step (standard deviation over mean; noise, not imbalance of work), the expected
  slowest of ``p`` ranks is later than the mean by :func:`expected_max` ``(p) * jitter * (compute +
  data)``. On the measured machine (``calibrate_jitter``) ``jitter`` comes from the loaded steps
  when ranks share a node (:attr:`Workload.loaded_jitter_fraction`), else from the one-rank run's
  step-to-step spread; on the others it is an assumption stated in the machine file.
 Weak efficiency is ``t(b, 1) / t(b, p)``; strong efficiency with a global batch
``B`` is ``t(B, 1) / (p * t(B / p, p))``. Machine descriptions (:class:`Machine`) are YAML files in
``configs/machines/``, loaded strictly by :func:`load_machine`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field

from hpcvsr.errors import UserError
from hpcvsr.pipeline.config import read_yaml, typed


@dataclass(frozen=True)
class Machine:
    """A machine for the model; YAML units: microseconds, GB/s (1e9 bytes/s), TFLOP/s."""

    name: str
    ranks_per_node: int  # one rank per GPU (or per CPU core on a CPU machine)
    max_nodes: int
    intra_latency_us: float  # per message between two ranks of a node
    intra_bandwidth_GBps: float  # per rank and direction between two ranks of a node
    inter_latency_us: float  # per message between nodes
    inter_bandwidth_GBps: float  # injection bandwidth of one node (all its NICs), per direction
    fs_bandwidth_GBps: float = 0.0  # aggregate file-system bandwidth; 0: no separate term (in the measured data time)
    peak_tflops: float = 0.0  # per rank at the precision used; 0: compute time as measured on this machine
    sustained_fraction: float = 1.0  # ASSUMPTION: fraction of peak the convolutions sustain
    data_on_critical_path: bool = True  # host batch assembly adds to the step (CPU run) or overlaps (GPU node)
    calibrate_network: bool = False  # latency and bandwidth from the measured run's all-reduce benchmark when it has one
    jitter_fraction: float = 0.0  # ASSUMPTION: per-step spread of a rank's step time (std / mean) from noise
    calibrate_jitter: bool = False  # use the spread measured on the one-rank run instead
    description: str = ""
    assumptions: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Workload:
    """What the model needs of one workload, calibrated from a one-rank run."""

    compute_s_per_sample: float  # measured compute time per sample (forward, backward, update; or inference)
    data_s_per_sample: float = 0.0  # measured host time per sample: batch assembly (and reads and writes for inference)
    grad_bytes: float = 0.0  # gradient bytes all-reduced per step (0 for inference)
    io_bytes_per_sample: float = 0.0  # file-system bytes read and written per sample per step
    flops_per_sample: float = 0.0  # floating-point operations per sample (forward + backward for training)
    jitter_fraction: float = 0.0  # measured per-step spread (std / mean) of the host and compute time
    loaded_compute_s_per_sample: float = 0.0  # compute per sample with every core of the node busy (loaded steps); 0: unknown
    loaded_data_s_per_sample: float = 0.0  # host time per sample in the loaded steps; 0: unknown
    loaded_jitter_fraction: float = 0.0  # spread of a rank's time about its step's mean of the ranks, in the loaded steps


def load_machine(path: str) -> Machine:
    """A :class:`Machine` from YAML; an unknown key, a missing one or a wrong type is a UserError naming it."""
    return machine_from_dict(read_yaml(path, "machine file"), path)


def machine_from_dict(data: dict, where: str = "machine") -> Machine:
    """Strict conversion of a mapping into a :class:`Machine` (see :func:`load_machine`)."""
    m = typed(Machine, data, where)
    if m.ranks_per_node < 1 or m.max_nodes < 1:
        raise UserError(f"{where}: ranks_per_node and max_nodes must be >= 1")
    if min(m.intra_bandwidth_GBps, m.inter_bandwidth_GBps) <= 0 or min(m.intra_latency_us, m.inter_latency_us, m.fs_bandwidth_GBps, m.peak_tflops) < 0:
        raise UserError(f"{where}: bandwidths must be > 0, latencies, fs_bandwidth_GBps and peak_tflops >= 0")
    if m.jitter_fraction < 0:
        raise UserError(f"{where}: jitter_fraction must be >= 0, got {m.jitter_fraction}")
    if not 0 < m.sustained_fraction <= 1:
        raise UserError(f"{where}: sustained_fraction must be in (0, 1], got {m.sustained_fraction}")
    return m


def with_network(m: Machine, latency_s: float, bandwidth_Bps: float) -> Machine:
    """``m`` with its intra-node latency and bandwidth replaced by measured ones (a one-node calibration)."""
    return dataclasses.replace(m, intra_latency_us=latency_s * 1e6, intra_bandwidth_GBps=bandwidth_Bps / 1e9)


# --- collectives -------------------------------------------------------------------------------

def ring_allreduce(nbytes: float, p: int, latency_s: float, bandwidth_Bps: float) -> float:
    """Ring all-reduce (reduce-scatter then all-gather): ``2 (p-1)/p * bytes/bw + 2 (p-1) * latency``.

    >>> ring_allreduce(1e6, 4, 1e-6, 1e9)  # 1.5 ms of bandwidth + 6 messages of 1 us
    0.001506
    >>> ring_allreduce(1e6, 1, 1e-6, 1e9)
    0.0
    """
    if p <= 1:
        return 0.0
    return round(2 * (p - 1) / p * nbytes / bandwidth_Bps + 2 * (p - 1) * latency_s, 12)


def tree_allreduce(nbytes: float, p: int, latency_s: float, bandwidth_Bps: float) -> float:
    """Pipelined (double binary) tree all-reduce: ``2 ceil(log2 p) * latency + 2 * bytes/bw``.

    >>> tree_allreduce(1e6, 4, 1e-6, 1e9)  # 2 levels up and down + 2 ms of bandwidth
    0.002004
    >>> tree_allreduce(1e6, 1024, 1e-6, 1e9)  # the ring would pay 2046 latencies
    0.00202
    """
    if p <= 1:
        return 0.0
    return round(2 * math.ceil(math.log2(p)) * latency_s + 2 * nbytes / bandwidth_Bps, 12)


ALGORITHMS = {"ring": ring_allreduce, "tree": tree_allreduce}


def allreduce_time(nbytes: float, p: int, m: Machine, algorithm: str = "best") -> float:
    """Hierarchical all-reduce of ``nbytes`` over ``p`` ranks on machine ``m``.

    Inside a node of ``g = min(p, ranks_per_node)`` ranks: a ring (:func:`ring_allreduce` with ``g``).
    Between ``n = ceil(p / g)`` nodes: ``algorithm`` ('ring', 'tree' or 'best', the faster) on each
    rank's shard ``nbytes / g``, with ``inter_bandwidth / g`` each (the node's NICs are shared).

    >>> m = Machine("toy", ranks_per_node=4, max_nodes=8, intra_latency_us=1, intra_bandwidth_GBps=10,
    ...             inter_latency_us=2, inter_bandwidth_GBps=1)
    >>> allreduce_time(1e6, 4, m)  # one node: 2*3/4 * 1e6/1e10 + 6 us
    0.000156
    >>> allreduce_time(1e6, 8, m, "ring")  # + between 2 nodes: 2*1/2 * 2.5e5/2.5e8 + 2*1*2 us
    0.00116
    """
    if p <= 1:
        return 0.0
    if algorithm not in ALGORITHMS and algorithm != "best":
        raise UserError(f"unknown all-reduce algorithm '{algorithm}' (ring, tree or best)")
    g = min(p, m.ranks_per_node)
    n = math.ceil(p / g)
    intra = ring_allreduce(nbytes, g, m.intra_latency_us * 1e-6, m.intra_bandwidth_GBps * 1e9)
    if n <= 1:
        return intra
    shard, bw, lat = nbytes / g, m.inter_bandwidth_GBps * 1e9 / g, m.inter_latency_us * 1e-6
    names = list(ALGORITHMS) if algorithm == "best" else [algorithm]
    return round(intra + min(ALGORITHMS[a](shard, n, lat, bw) for a in names), 12)


def io_time(nbytes_per_rank: float, p: int, m: Machine) -> float:
    """Each rank's file-system bytes over its share of the aggregate bandwidth: ``bytes * p / aggregate``.

    >>> m = Machine("toy", 1, 1, 1, 1, 1, 1, fs_bandwidth_GBps=1000)
    >>> io_time(1e6, 1000, m)  # 1 GB in all at 1 TB/s
    0.001
    """
    if m.fs_bandwidth_GBps <= 0:
        return 0.0
    return nbytes_per_rank * p / (m.fs_bandwidth_GBps * 1e9)


# --- steps and efficiencies -----------------------------------------------------------------

def shares_node(p: int, m: Machine) -> bool:
    """Whether ``p`` ranks put more than one rank on a node of ``m`` (CPU ranks then share its cores,
    caches and memory bandwidth)."""
    return min(p, m.ranks_per_node) > 1


def compute_time(w: Workload, b: float, m: Machine, p: int = 1) -> float:
    """Seconds of compute for ``b`` samples: measured per sample (with ``p`` ranks sharing a node, as
    measured in the loaded steps when known), or FLOPs over the sustained rate (a GPU per rank).

    >>> compute_time(Workload(0.01, flops_per_sample=2e9), 4, Machine("cpu", 1, 1, 1, 1, 1, 1))
    0.04
    >>> compute_time(Workload(0.01, loaded_compute_s_per_sample=0.0125), 4, Machine("cpu", 2, 1, 1, 1, 1, 1), p=2)
    0.05
    >>> compute_time(Workload(0.01, flops_per_sample=2e9), 4, Machine("gpu", 1, 1, 1, 1, 1, 1, peak_tflops=10, sustained_fraction=0.4))
    0.002
    """
    if m.peak_tflops > 0:
        return b * w.flops_per_sample / (m.peak_tflops * 1e12 * m.sustained_fraction)
    if shares_node(p, m) and w.loaded_compute_s_per_sample:
        return b * w.loaded_compute_s_per_sample
    return b * w.compute_s_per_sample


def expected_max(p: int) -> float:
    """The expected largest of ``p`` independent standard normal values (Blom's approximation,
    within 5 % of the exact value; 0 for one rank): how much later than the mean the slowest rank is,
    in standard deviations.

    >>> expected_max(1), round(expected_max(2), 3), round(expected_max(1024), 2)
    (0.0, 0.589, 3.23)
    """
    if p <= 1:
        return 0.0
    return statistics.NormalDist().inv_cdf((p - 0.375) / (p + 0.25))


def barrier_time(p: int, m: Machine, algorithm: str = "best") -> float:
    """A barrier where none was measured: a collective with no payload, :func:`allreduce_time` of 0 bytes.

    >>> barrier_time(2, Machine("toy", 2, 1, 10, 1, 10, 1))  # 2 (p - 1) latencies
    2e-05
    """
    return allreduce_time(0.0, p, m, algorithm)


def step_time(w: Workload, b: float, p: int, m: Machine, algorithm: str = "best", barrier_s: float = 0.0) -> dict:
    """The predicted breakdown {compute, data, allreduce, io, wait, total} of one step (seconds);
    ``barrier_s``: the step also has the measurement's barrier, of that cost.

    >>> m = Machine("toy", ranks_per_node=2, max_nodes=1, intra_latency_us=10, intra_bandwidth_GBps=1,
    ...             inter_latency_us=10, inter_bandwidth_GBps=1)
    >>> step_time(Workload(0.01, 0.001, grad_bytes=1e6), 4, 2, m)["total"]  # 0.04 + 0.004 + (1 ms + 20 us)
    0.04502
    >>> step_time(Workload(0.01, 0.001, grad_bytes=1e6), 4, 2, m, barrier_s=3e-5)["wait"]
    3e-05
    >>> m = dataclasses.replace(m, jitter_fraction=0.1)
    >>> round(step_time(Workload(0.01, 0.001, grad_bytes=1e6), 4, 2, m)["wait"], 5)  # 0.589 * 0.1 * 0.044
    0.00259
    >>> w = Workload(0.01, 0.001, loaded_compute_s_per_sample=0.012, loaded_data_s_per_sample=0.001, loaded_jitter_fraction=0.1)
    >>> round(step_time(w, 4, 2, dataclasses.replace(m, calibrate_jitter=True))["wait"], 5)  # 0.589 * 0.1 * 0.052
    0.00307
    """
    c = compute_time(w, b, m, p)
    loaded = m.peak_tflops <= 0 and shares_node(p, m) and w.loaded_compute_s_per_sample > 0
    d = b * (w.loaded_data_s_per_sample if loaded else w.data_s_per_sample) if m.data_on_critical_path else 0.0
    a = allreduce_time(w.grad_bytes, p, m, algorithm) if w.grad_bytes else 0.0
    io = io_time(b * w.io_bytes_per_sample, p, m)
    jitter = (w.loaded_jitter_fraction if loaded else w.jitter_fraction) if m.calibrate_jitter else m.jitter_fraction
    wait = expected_max(p) * jitter * (c + d) + (barrier_s if p > 1 else 0.0)
    return {"compute": c, "data": d, "allreduce": a, "io": io, "wait": wait, "total": round(c + d + a + io + wait, 12)}


def weak_efficiency(w: Workload, b: float, p: int, m: Machine, algorithm: str = "best") -> float:
    """``t(b, 1) / t(b, p)`` at a fixed per-rank batch ``b``.

    >>> m = Machine("toy", 2, 1, 10, 1, 10, 1)
    >>> round(weak_efficiency(Workload(0.01, 0.001, grad_bytes=1e6), 4, 2, m), 4)  # 0.044 / 0.04502
    0.9773
    """
    return step_time(w, b, 1, m, algorithm)["total"] / step_time(w, b, p, m, algorithm)["total"]


def strong_efficiency(w: Workload, global_batch: float, p: int, m: Machine, algorithm: str = "best") -> float:
    """``t(B, 1) / (p t(B/p, p))`` at a fixed global batch ``B``; NaN when ``B < p`` (no sample for some rank).

    >>> m = Machine("toy", 2, 1, 10, 1, 10, 1)
    >>> round(strong_efficiency(Workload(0.01, 0.001, grad_bytes=1e6), 8, 2, m), 4)  # 0.088 / (2 * 0.04502)
    0.9773
    """
    if global_batch < p:
        return float("nan")
    return step_time(w, global_batch, 1, m, algorithm)["total"] / (p * step_time(w, global_batch / p, p, m, algorithm)["total"])


def batch_for_efficiency(w: Workload, p: int, m: Machine, target: float = 0.9, algorithm: str = "best", limit: int = 1 << 24) -> int | None:
    """The smallest integer per-rank batch with weak efficiency >= ``target`` at ``p`` ranks; None if
    even ``limit`` does not reach it (a file-system term that grows with the batch can forbid it).

    >>> m = Machine("toy", 2, 1, 10, 1, 10, 1)
    >>> batch_for_efficiency(Workload(0.01, 0.0, grad_bytes=1e6), 2, m)  # 0.01 b / (0.01 b + 0.00102) >= 0.9
    1
    >>> batch_for_efficiency(Workload(0.0001, 0.0, grad_bytes=1e6), 2, m)  # b >= 9 * 10.2
    92
    """
    ok = lambda b: weak_efficiency(w, b, p, m, algorithm) >= target  # noqa: E731
    if ok(1):
        return 1
    hi = 2
    while not ok(hi):
        if hi >= limit:
            return None
        hi *= 2
    lo = hi // 2  # ok(lo) is False, ok(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def node_ladder(max_nodes: int) -> list[int]:
    """1, 2, 4, ... nodes up to and including ``max_nodes``.

    >>> node_ladder(4608)[-3:]
    [2048, 4096, 4608]
    """
    out, n = [], 1
    while n < max_nodes:
        out.append(n)
        n *= 2
    return out + [max_nodes]
