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

More per-frame datasets (``extra``: {name: frame shape}, e.g. an ensemble's ``sr_mean`` and
``sr_std`` (T, H, W) beside its members ``sr`` (T, M, H, W)) are written with the frames of each
chunk and joined like ``sr``; more per-frame metric rows (``extra_rows``: {name: row shape}) are
stored as ``metrics/frame_<name>`` like the others.
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
    """The output ``path`` of ``sr`` frames ``shape`` (T, ...) in the work chunks ``chunk_list`` [(a, b)], with
    root attributes ``attrs``, on the ranks of ``env`` (collective: every rank builds it).

    ``extra`` {name: frame shape}: more per-frame datasets, given to :meth:`write` as ``extra``;
    ``extra_rows`` {name: row shape}: more per-frame metric rows, given with the ``frame_metrics``;
    ``row_shape``: one frame's metric row (default: (C,) for ``sr`` (T, C, H, W), () for (T, H, W));
    ``dataset_attrs`` {dataset name: attributes}; ``layout``: more settings a rerun must share to
    resume (e.g. an ensemble's seed).
    """

    def __init__(self, path: str, shape: tuple, chunk_list: list, attrs: dict, env, *, compression: str = "",
                 metrics: bool = False, overwrite: bool = False, extra: dict | None = None, extra_rows: dict | None = None,
                 row_shape: tuple | None = None, dataset_attrs: dict | None = None, layout: dict | None = None):
        self.path, self.shape, self.env, self.chunks = path, tuple(int(s) for s in shape), env, chunk_list
        self.partial, self.parts = path + ".partial", path + ".parts"
        self.metrics, self.attrs = metrics, dict(attrs)
        if row_shape is None:
            row_shape = self.shape[1:2] if len(self.shape) == 4 else ()  # sr (T, C, H, W): one metric row per frame and variable
        self.row_shape = tuple(row_shape)
        self.extra = {k: tuple(int(n) for n in v) for k, v in (extra or {}).items()}
        self.extra_rows = {k: tuple(int(n) for n in v) for k, v in (extra_rows or {}).items()}
        self.dataset_attrs = {k: dict(v) for k, v in (dataset_attrs or {}).items()}
        self.compression = compression or None
        self.mode = "mpio" if mpi_h5py() and env.distributed else "parts"
        self.layout = {"frames": self.shape[0], "shape": list(self.shape), "chunks": [list(c) for c in chunk_list],
                       "checkpoint_hash": str(attrs.get("checkpoint_hash", "")), "metrics": metrics, "mode": self.mode}
        if self.extra:
            self.layout["extra"] = {k: list(v) for k, v in self.extra.items()}
        if self.extra_rows:
            self.layout["extra_rows"] = {k: list(v) for k, v in self.extra_rows.items()}
        self.layout.update(layout or {})
        self.checked = ("shape", "chunks", "checkpoint_hash", "metrics", "extra", "extra_rows", *(layout or {}))
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
                self._create(self.f, len(chunk_list))
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
        for key in self.checked:
            if old.get(key) != self.layout.get(key):
                raise UserError(f"{where}: an unfinished output made with other settings ({key} differs) is in the way; "
                                f"rerun with the same model, input and infer settings, or delete it")

    def frame_shapes(self) -> dict:
        """{dataset: its shape}: ``sr`` and the extra datasets."""
        return {"sr": self.shape, **{k: (self.shape[0], *v) for k, v in self.extra.items()}}

    def _row_fields(self) -> dict:
        """{metric row name: one frame's row shape}."""
        return {**{k: self.row_shape for k in FRAME_FIELDS}, **self.extra_rows}

    def _create(self, f, n_chunks: int) -> None:
        for name, s in self.frame_shapes().items():
            f.create_dataset(name, shape=s, dtype="f4", chunks=(1, *s[1:]), compression=self.compression)
        if n_chunks:
            f.create_dataset("done", shape=(n_chunks,), dtype="u1", fillvalue=0)
        if self.metrics:
            g = f.create_group("metrics")
            for k, row in self._row_fields().items():
                g.create_dataset(f"frame_{k}", shape=(self.shape[0], *row), dtype="f8", fillvalue=np.nan)
        for name, attrs in self.dataset_attrs.items():
            for k, v in attrs.items():
                f[name].attrs[k] = v
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

    def write(self, cid: int, frames: np.ndarray, frame_metrics: dict | None = None, extra: dict | None = None) -> None:
        """Chunk ``cid``'s frames (b - a, ...), its metric rows {name: (b - a, ...)} and its ``extra``
        datasets {name: (b - a, ...)} (every one of those the output was made with)."""
        a, b = self.chunks[cid]
        extra = dict(extra or {})
        if set(extra) != set(self.extra):
            raise ValueError(f"chunk {cid}: extra datasets {sorted(extra)} given, the output has {sorted(self.extra)}")
        if self.mode == "mpio":
            self.f["sr"][a:b] = frames
            for k, v in extra.items():
                self.f[k][a:b] = v
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
            for k, v in extra.items():
                v = np.asarray(v, np.float32)
                f.create_dataset(k, data=v, chunks=(1, *v.shape[1:]), compression=self.compression)
            for k, v in (frame_metrics or {}).items():
                f[f"metrics/frame_{k}"] = v
            f.flush()
            image = f.id.get_file_image()
        write_bytes(self._chunk_file(cid), image)

    def read_metrics(self, cids) -> dict:
        """Per-frame metric rows of chunks ``cids`` (from whatever run wrote them)."""
        fields = self._row_fields()
        rows = {k: [] for k in fields}
        for cid in cids:
            a, b = self.chunks[cid]
            if self.mode == "mpio":
                for k in fields:
                    rows[k].append(self.f[f"metrics/frame_{k}"][a:b])
            else:
                with h5py.File(self._chunk_file(cid), "r") as f:
                    for k in fields:
                        rows[k].append(f[f"metrics/frame_{k}"][:])
        return {k: np.concatenate(v) if v else np.zeros((0, *fields[k])) for k, v in rows.items()}

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
            rel = os.path.basename(self.parts)
            layouts = {}
            for name, shape in self.frame_shapes().items():
                layouts[name] = h5py.VirtualLayout(shape=shape, dtype="f4")
                for cid, (a, b) in enumerate(self.chunks):
                    layouts[name][a:b] = h5py.VirtualSource(os.path.join(rel, os.path.basename(self._chunk_file(cid))), name, shape=(b - a, *shape[1:]))
            with atomic_path(self.path) as tmp, h5py.File(tmp, "w") as f:
                for name, layout in layouts.items():
                    f.create_virtual_dataset(name, layout, fillvalue=np.nan)
                for name, attrs in self.dataset_attrs.items():
                    for k, v in attrs.items():
                        f[name].attrs[k] = v
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
        joined = ["sr", *(n for n in src if n != "sr" and isinstance(src[n], h5py.Dataset) and src[n].is_virtual)]
        check_space(path, sum(int(np.prod(src[name].shape)) * 4 for name in joined))
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as dst:
            for k, v in src.attrs.items():
                if k != "parts":
                    dst.attrs[k] = v
            for name in joined:  # the virtual datasets, copied frame by frame
                v = src[name]
                d = dst.create_dataset(name, shape=v.shape, dtype="f4", chunks=(1, *v.shape[1:]))
                for i in range(0, v.shape[0], 16):
                    d[i : i + 16] = v[i : i + 16]
                for k, a in v.attrs.items():
                    d.attrs[k] = a
            for name in src:
                if name not in joined:
                    src.copy(name, dst)
    shutil.rmtree(parts)
