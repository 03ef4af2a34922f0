"""The distributed environment: the only module that calls ``init_process_group``.

Launchers are detected from the environment, in this order (no code change between them):

* torchrun / explicit:  RANK, WORLD_SIZE, LOCAL_RANK
* Slurm ``srun``:        SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
* Open MPI ``mpirun`` and Spectrum MPI under ``jsrun`` (Summit): OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK
* MPICH / Cray MPICH / Intel MPI: PMI_RANK, PMI_SIZE, MPI_LOCALRANKID (or PMI_LOCAL_RANK)
* otherwise a single process.

When several ranks run and MASTER_ADDR / MASTER_PORT are not set, rank 0's host name and a free
port are broadcast with mpi4py (the launcher wire-up); under Slurm without mpi4py the first host
of the allocation and a port derived from the job id are used. The device is chosen from the
local rank *before* the process group (NCCL needs it); CPU runs use gloo. Every helper works at
world size 1.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from hpcvsr.errors import UserError

LAUNCHERS = (
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
)


def detect(environ=None) -> tuple[str, int, int, int]:
    """(launcher, rank, world size, local rank) from the environment.

    >>> detect({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1"})
    ('openmpi', 1, 2, 1)
    >>> detect({})
    ('single', 0, 1, 0)
    """
    env = os.environ if environ is None else environ
    for name, r, w, lr in LAUNCHERS:
        if r in env and w in env:
            local = env.get(lr, env.get("PMI_LOCAL_RANK", "0"))
            if name == "slurm" and int(env[w]) > 1 and "OMPI_COMM_WORLD_RANK" in env:
                continue  # mpirun inside an allocation: Open MPI's variables describe this job
            return name, int(env[r]), int(env[w]), int(local)
    return "single", 0, 1, 0


def mpirun_command(n: int) -> list[str]:
    """The command prefix that starts ``n`` ranks of a Python module on this node (benchmarks and
    sweeps that launch themselves): the environment's ``mpirun`` (the PyPI Open MPI sits next to the
    interpreter), else the one on PATH."""
    exe = os.path.join(os.path.dirname(sys.executable), "mpirun")
    exe = exe if os.path.exists(exe) else shutil.which("mpirun")
    if not exe:
        raise UserError("more than one rank needs mpirun (pip install 'hpcvsr[mpi]')")
    return [exe, "-n", str(n), "--oversubscribe"]


def launch_env() -> dict:
    """The environment for :func:`mpirun_command`'s children (Open MPI refuses root without these)."""
    env = dict(os.environ)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _rendezvous(launcher: str, rank: int) -> None:
    """Agree on MASTER_ADDR / MASTER_PORT when the launcher did not set them."""
    if os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        return
    try:
        from mpi4py import MPI
    except ImportError:
        MPI = None
    if MPI is not None:
        comm = MPI.COMM_WORLD
        addr = (socket.gethostname(), _free_port()) if rank == 0 else None
        host, port = comm.bcast(addr, root=0)
        if host == socket.gethostname():
            host = "127.0.0.1"
        os.environ.setdefault("MASTER_ADDR", host)
        os.environ.setdefault("MASTER_PORT", str(port))
        return
    if launcher == "slurm":
        nodes = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True, text=True, check=True)
        os.environ.setdefault("MASTER_ADDR", nodes.stdout.split()[0])
        os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))
        return
    raise UserError("several ranks but no MASTER_ADDR/MASTER_PORT: set them, or pip install 'hpcvsr[mpi]' so mpi4py can agree on them")


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    launcher: str = "single"

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` (any picklable value) on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (in place, returned). Sums, never means: divide afterwards."""
        if self.distributed:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    def all_reduce_max(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return t

    def all_reduce_min(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
        return t

    def barrier(self) -> None:
        if self.distributed:
            tdist.barrier()


def pick_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but no CUDA device is available")
    dev = torch.device("cuda", local_rank % torch.cuda.device_count())
    torch.cuda.set_device(dev)
    torch.backends.cudnn.benchmark = True  # the shapes repeat (patches, chunks): pick the fastest kernels once
    return dev


def to_device(a, device: torch.device) -> torch.Tensor:
    """A host array as a tensor on ``device``: through pinned memory and an asynchronous copy on a
    GPU (the copy overlaps the work already queued), as is on a CPU."""
    t = torch.from_numpy(a)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def init(device: str = "auto", threads: int = 0, timeout_s: float | None = None) -> DistEnv:
    """Create the process group (if several ranks) and return the environment.

    ``threads``: CPU threads per rank (0: the node's cores shared by its ranks). Results are
    bitwise reproducible across rank counts only at equal threads per rank: oneDNN's reduction
    order depends on the thread count (differences are float round-off, ~1e-7 relative).
    """
    launcher, rank, world, local = detect()
    dev = pick_device(device, local)
    if world > 1 and not tdist.is_initialized():
        _rendezvous(launcher, rank)
        timeout = datetime.timedelta(seconds=timeout_s or float(os.environ.get("HPCVSR_TIMEOUT", "600")))
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        tdist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout, **kwargs)
    if threads:
        torch.set_num_threads(threads)
    elif dev.type == "cpu":
        local_size = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", os.environ.get("SLURM_NTASKS_PER_NODE", os.environ.get("LOCAL_WORLD_SIZE", world))))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_size)))
    return DistEnv(rank=rank, world=world, local_rank=local, device=dev, launcher=launcher)


def shutdown(env: DistEnv) -> None:
    if env.distributed and tdist.is_initialized():
        tdist.destroy_process_group()


def exit_process(code: int = 0) -> None:
    """End a distributed process now, after its last collective, without interpreter finalisation.

    Once a model has been wrapped in DDP, its C++ reducer keeps the gloo process group (and its
    worker threads) alive past ``destroy_process_group``. A worker that drops its last reference
    to a Python-owned tensor while the interpreter is finalising aborts the process ("terminate
    called without an active exception", signal 6) although all work finished. Logs and standard
    streams are flushed and MPI is finalised first; every file the package writes is closed by then.
    """
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.Finalize()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextlib.contextmanager
def fail_fast(env: DistEnv):
    """Run an entry point's body; on an unexpected error with several ranks, print it and exit 1 at once.

    Waiting politely would leave the other ranks blocked in their next collective until the
    timeout; exiting lets the launcher (mpirun, ``srun --kill-on-bad-exit``) end the job. User
    errors keep their one-line message (every rank meets them alike); the process group is shut
    down on the way out.
    """
    try:
        yield
    except (UserError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        if env.distributed:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        raise
    finally:
        shutdown(env)


def launch(cfg, body):
    """An entry point's run: the environment from ``cfg`` (device, threads), then ``body(env)`` under
    :func:`fail_fast`; returns what ``body`` returns (a distributed run exits with it instead, see
    :func:`exit_process`)."""
    env = init(cfg.device, cfg.threads)
    with fail_fast(env):
        result = body(env)
        env.barrier()
    if env.distributed:
        exit_process(int(result or 0))
    return result


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # scancel, the time limit, `timeout`; Slurm's --signal warning


class Stopped(BaseException):
    """A stop signal outside a loop that checkpoints, raised where the program is when it arrives.

    A BaseException, as KeyboardInterrupt is, so that ``except Exception`` clauses let it pass;
    atomic writers remove their temporary files as it goes through them.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class StopFlag:
    """SIGTERM / SIGUSR1 (Slurm's warning before the walltime): a flag inside a checkpointing loop, an exception elsewhere.

    Inside :meth:`polled` (the trainer's step loop) a signal only sets :attr:`raised`, which the
    trainer reads at step boundaries; its decision to stop is collective (the flags of all ranks
    are reduced with one maximum every step), so every rank checkpoints and exits at the same step
    even if the signal reached only some of them. Anywhere else (data generation, validation,
    evaluation, writing) the first signal raises :class:`Stopped` at once; later ones only set
    the flag, so that the clean-up on the way out is not cut short.
    """

    def __init__(self):
        self.raised = False
        self.signum = 0
        self._polled = False
        self._previous: dict = {}

    def install(self) -> StopFlag:
        self._previous = {sig: signal.signal(sig, self._handler) for sig in STOP_SIGNALS}
        return self

    def restore(self) -> None:
        """The handlers from before :meth:`install` again (a signal after the job's end needs no clean-up)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous = {}

    @contextlib.contextmanager
    def polled(self):
        """A block whose loop reads :attr:`raised` at every step; a signal that came after the last
        read raises :class:`Stopped` when the block ends normally."""
        self._polled = True
        try:
            yield
        finally:
            self._polled = False
        if self.raised:
            raise Stopped(self.signum)

    def _handler(self, signum, frame):
        first = not self.raised
        self.raised, self.signum = True, self.signum or signum
        if first and not self._polled:
            raise Stopped(signum)
