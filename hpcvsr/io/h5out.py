"""The super-resolved archive: one HDF5 file, written in parallel, resumable, never half-visible.

Two ways to write, chosen at run time:

* **MPI-IO** (h5py built against parallel HDF5, ``h5py.get_config().mpi``, several ranks):
  every rank opens ``OUT.partial`` with ``driver='mpio'`` and takes part in every collective call
  (open, dataset creation, close) even with nothing to write; each writes its own frames.
  Progress is a ``done`` flag per chunk, set after the chunk's frames are flushed.
* **Chunk files + virtual dataset** (any h5py): every chunk of frames is written to
  ``OUT.parts/chunk<N>.h5`` under a temporary name and renamed when complete (so a killed job
  leaves only whole chunks, and a file's existence is its progress record); at the end rank 0
  writes ``OUT`` whose ``sr`` is a virtual dataset joining the chunks, so readers see one dataset.
  :func:`consolidate` copies it into one plain file.

Either way the final name appears only when every rank has finished (rename by rank 0), and a
rerun skips the chunks already written. Per-frame metric rows are stored beside ``sr``: ``sr`` is
(T, H, W) for one variable and (T, C, H, W) for C variables, the rows (T,) and (T, C).
"""

from __future__ import annotations

import io
import json
import os
import shutil

import h5py
import numpy as np

from hpcvsr.errors import UserError
from hpcvsr.io.atomic import atomic_path, check_space, check_writable, write_bytes, write_json
from hpcvsr.ops.metrics import FRAME_FIELDS


def mpi_h5py() -> bool:
    return bool(h5py.get_config().mpi)


class SROutput:
    def __init__(self, path: str, shape: tuple, chunk_list: list, attrs: dict, env, *, compression: str = "",
                 metrics: bool = False, overwrite: bool = False):
        self.path, self.shape, self.env, self.chunks = path, tuple(int(s) for s in shape), env, chunk_list
        self.partial, self.parts = path + ".partial", path + ".parts"
        self.metrics, self.attrs = metrics, dict(attrs)
        self.row_shape = self.shape[1:2] if len(self.shape) == 4 else ()  # sr (T, C, H, W): one metric row per frame and variable
        self.compression = compression or None
        self.mode = "mpio" if mpi_h5py() and env.distributed else "parts"
        self.layout = {"frames": self.shape[0], "shape": list(self.shape), "chunks": [list(c) for c in chunk_list],
                       "checkpoint_hash": str(attrs.get("checkpoint_hash", "")), "metrics": metrics, "mode": self.mode}
        if env.is_root:
            check_writable(path, overwrite)
        env.barrier()
        if self.mode == "mpio":
            from mpi4py import MPI

            resume = os.path.exists(self.partial)
            self.f = h5py.File(self.partial, "a" if resume else "w", driver="mpio", comm=MPI.COMM_WORLD)
            if resume:
                self._check_layout(json.loads(self.f.attrs["layout"]), self.partial)
            else:
                self._create(self.f, self.shape, len(chunk_list))
        else:
            layout_file = os.path.join(self.parts, "layout.json")
            if env.is_root:
                os.makedirs(self.parts, exist_ok=True)
                if os.path.exists(layout_file):
                    self._check_layout(json.load(open(layout_file)), self.parts)
                else:
                    write_json(layout_file, self.layout)
            env.barrier()

    def discard_if_unused(self) -> None:
        """After a failed run: remove the chunk folder when no chunk was ever finished in it (chunk-file mode)."""
        if self.mode == "parts" and os.path.isdir(self.parts) and set(os.listdir(self.parts)) <= {"layout.json"}:
            shutil.rmtree(self.parts, ignore_errors=True)

    def _check_layout(self, old: dict, where: str) -> None:
        for key in ("shape", "chunks", "checkpoint_hash", "metrics"):
            if old.get(key) != self.layout[key]:
                raise UserError(f"{where}: an unfinished output made with other settings ({key} differs) is in the way; "
                                f"rerun with the same model, input and infer settings, or delete it")

    def _create(self, f, shape, n_chunks: int) -> None:
        f.create_dataset("sr", shape=shape, dtype="f4", chunks=(1, *shape[1:]), compression=self.compression)
        if n_chunks:
            f.create_dataset("done", shape=(n_chunks,), dtype="u1", fillvalue=0)
        if self.metrics:
            g = f.create_group("metrics")
            for k in FRAME_FIELDS:
                g.create_dataset(f"frame_{k}", shape=(shape[0], *self.row_shape), dtype="f8", fillvalue=np.nan)
        for k, v in self.attrs.items():
            f.attrs[k] = v
        f.attrs["layout"] = json.dumps(self.layout)

    def _chunk_file(self, cid: int) -> str:
        return os.path.join(self.parts, f"chunk{cid:06d}.h5")

    def done(self) -> set:
        """Chunk ids written completely in this or an earlier run."""
        if self.mode == "mpio":
            return {int(i) for i in np.nonzero(self.f["done"][:])[0]}
        return {i for i in range(len(self.chunks)) if os.path.exists(self._chunk_file(i))}

    def write(self, cid: int, frames: np.ndarray, frame_metrics: dict | None = None) -> None:
        a, b = self.chunks[cid]
        if self.mode == "mpio":
            self.f["sr"][a:b] = frames
            for k, v in (frame_metrics or {}).items():
                self.f[f"metrics/frame_{k}"][a:b] = v
            self.f.flush()
            self.f["done"][cid] = 1  # only after the frames are on disk
            self.f.flush()
            return
        # the chunk file is built in memory and written with plain file writes: a full disk is then an
        # OSError here (hpcvsr.io.atomic turns it into one clear error), never a failure inside HDF5's close
        with h5py.File(io.BytesIO(), "w") as f:
            f.create_dataset("sr", data=frames.astype(np.float32), chunks=(1, *frames.shape[1:]), compression=self.compression)
            for k, v in (frame_metrics or {}).items():
                f[f"metrics/frame_{k}"] = v
            f.flush()
            image = f.id.get_file_image()
        write_bytes(self._chunk_file(cid), image)

    def read_metrics(self, cids) -> dict:
        """Per-frame metric rows of chunks ``cids`` (from whatever run wrote them)."""
        rows = {k: [] for k in FRAME_FIELDS}
        for cid in cids:
            a, b = self.chunks[cid]
            if self.mode == "mpio":
                for k in FRAME_FIELDS:
                    rows[k].append(self.f[f"metrics/frame_{k}"][a:b])
            else:
                with h5py.File(self._chunk_file(cid), "r") as f:
                    for k in FRAME_FIELDS:
                        rows[k].append(f[f"metrics/frame_{k}"][:])
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in rows.items()}

    def finish(self, global_metrics: dict | None) -> None:
        """Collective: store global metrics and publish the file under its final name."""
        if self.mode == "mpio":
            if global_metrics:
                for k, v in global_metrics.items():
                    self.f["metrics"].attrs[k] = v
            self.f.close()
            self.env.barrier()
            if self.env.is_root:
                os.replace(self.partial, self.path)
            self.env.barrier()
            return
        self.env.barrier()
        if self.env.is_root:
            layout = h5py.VirtualLayout(shape=self.shape, dtype="f4")
            rel = os.path.basename(self.parts)
            for cid, (a, b) in enumerate(self.chunks):
                layout[a:b] = h5py.VirtualSource(os.path.join(rel, os.path.basename(self._chunk_file(cid))), "sr", shape=(b - a, *self.shape[1:]))
            with atomic_path(self.path) as tmp, h5py.File(tmp, "w") as f:
                f.create_virtual_dataset("sr", layout, fillvalue=np.nan)
                for k, v in self.attrs.items():
                    f.attrs[k] = v
                f.attrs["layout"] = json.dumps(self.layout)
                f.attrs["parts"] = rel
                if self.metrics:
                    g = f.create_group("metrics")
                    for k, v in self.read_metrics(range(len(self.chunks))).items():
                        g.create_dataset(f"frame_{k}", data=v)
                    for k, v in (global_metrics or {}).items():
                        g.attrs[k] = v
        self.env.barrier()


def consolidate(path: str) -> None:
    """Replace a virtual-dataset output by one self-contained file and remove its chunk files."""
    with h5py.File(path, "r") as src:
        if not src["sr"].is_virtual:
            return
        parts = os.path.join(os.path.dirname(os.path.abspath(path)), src.attrs["parts"])
        check_space(path, int(np.prod(src["sr"].shape)) * 4)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as dst:
            for k, v in src.attrs.items():
                if k != "parts":
                    dst.attrs[k] = v
            sr = src["sr"]
            d = dst.create_dataset("sr", shape=sr.shape, dtype="f4", chunks=(1, *sr.shape[1:]))
            for i in range(0, sr.shape[0], 16):
                d[i : i + 16] = sr[i : i + 16]
            for name in src:
                if name != "sr":
                    src.copy(name, dst)
    shutil.rmtree(parts)
