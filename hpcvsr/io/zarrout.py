"""The super-resolved archive as a CF Zarr store, written in parallel, resumable, never half-visible.

The store is created at ``OUT.partial`` from a template (:class:`xarray.Dataset` with the same
variables, coordinates and attributes as the NetCDF output; its frame variables are lazy) chunked
along time as the work is chunked, so every rank writes whole chunks of its own (regions aligned
with the chunks need no lock). A chunk counts as done only once its region is written: its metric
rows are then saved as ``OUT.parts/chunkN.npz`` (renamed when complete), whose existence
is the progress record a rerun resumes from. When every rank has finished, rank 0 stores the
per-frame metric variables and the global metrics, consolidates the metadata and renames the
store to ``OUT``. All through xarray and the zarr package: ``xr.open_zarr(OUT)`` reads it.
"""

from __future__ import annotations

import io
import json
import os
import shutil

import numpy as np

from hpcvsr.errors import UserError
from hpcvsr.io.atomic import check_writable, write_bytes, write_json
from hpcvsr.ops.metrics import FRAME_FIELDS

CHUNK_BYTES = 64 * 2**20  # upper bound of one stored chunk: frames split into row bands beyond it
ZARR_FORMAT = 2  # the format with consolidated metadata that every Zarr reader (and older xarray) knows


def is_zarr_out(path: str) -> bool:
    return str(path).rstrip("/").lower().endswith(".zarr")


def chunks_of(frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Stored chunk (frames, rows, width): a work chunk of frames, in row bands of at most CHUNK_BYTES."""
    rows = max(1, min(height, CHUNK_BYTES // max(1, 4 * frames * width)))
    return frames, rows, width


class ZarrOutput:
    """The interface of :class:`hpcvsr.io.h5out.SROutput` for a Zarr store built from ``template()``
    (called on rank 0 only, when the store is created).

    ``frame_vars`` are the template's variables (along its first dim) that the frames of a chunk
    fill; ``extra_vars`` {name: template variable} those filled by :meth:`write`'s ``extra``
    (an ensemble's mean and standard deviation); ``extra_rows`` {name: row shape} more per-frame
    metric rows kept with the progress records; ``chunk_list`` the work chunks (equal lengths but
    the last, aligned with the stored chunks). A variable with dims before time (an ensemble's
    members, CF 2.4's order) is stored in chunks of one index of each.
    """

    mode = "zarr"

    def __init__(self, path: str, template, *, frame_vars: list, chunk_list: list, env, metrics: bool = False,
                 overwrite: bool = False, layout: dict | None = None, extra_vars: dict | None = None, extra_rows: dict | None = None):
        import xarray as xr
        self.path, self.partial, self.env, self.chunks = path, path + ".partial", env, chunk_list
        self.frame_vars, self.metrics = list(frame_vars), metrics
        self.extra_vars = dict(extra_vars or {})
        self.extra_rows = {k: tuple(int(n) for n in v) for k, v in (extra_rows or {}).items()}
        self.progress = path + ".parts"  # beside the store, so that it stays a plain Zarr hierarchy
        self.layout = dict(layout or {}, chunks=[list(c) for c in chunk_list], metrics=metrics, format="zarr")
        if self.extra_vars:
            self.layout["extra_vars"] = dict(self.extra_vars)
        if self.extra_rows:
            self.layout["extra_rows"] = {k: list(v) for k, v in self.extra_rows.items()}
        self.overwrite = overwrite
        if env.is_root:
            check_writable(path, overwrite)
            layout_file = os.path.join(self.progress, "layout.json")
            if os.path.exists(layout_file):
                self._check_layout(json.load(open(layout_file)))
            else:
                shutil.rmtree(self.partial, ignore_errors=True)  # a store whose creation did not finish
                template = template()
                template.to_zarr(self.partial, mode="w", compute=False, consolidated=False, zarr_format=ZARR_FORMAT,
                                 encoding=self._encoding(template))
                os.makedirs(self.progress, exist_ok=True)
                write_json(layout_file, self.layout)  # last: the store exists once this does
        env.barrier()
        with xr.open_zarr(self.partial, consolidated=False) as store:
            self.tdim = store[self.frame_vars[0]].dims[-3]

    def _encoding(self, template) -> dict:
        enc = {}
        frames = self.chunks[0][1] - self.chunks[0][0]
        for name in (*self.frame_vars, *self.extra_vars.values()):
            v = template[name]
            _, rows, width = chunks_of(frames, *v.shape[-2:])
            enc[name] = {"chunks": (*(1,) * (v.ndim - 3), frames, rows, width)}  # one member (index of a leading dim) a chunk
        return enc

    def _check_layout(self, old: dict) -> None:
        for key in sorted(set(old) | set(self.layout)):
            if old.get(key) != self.layout.get(key):
                raise UserError(f"{self.partial}: an unfinished output made with other settings ({key} differs) is in the way; "
                                "rerun with the same model, input and infer settings, or delete it")

    def discard_if_unused(self) -> None:
        """After a failed run: remove the store when no chunk was ever finished in it."""
        if os.path.isdir(self.progress) and set(os.listdir(self.progress)) <= {"layout.json"}:
            shutil.rmtree(self.partial, ignore_errors=True)
            shutil.rmtree(self.progress, ignore_errors=True)

    def _chunk_file(self, cid: int) -> str:
        return os.path.join(self.progress, f"chunk{cid:06d}.npz")

    def done(self) -> set:
        """Chunk ids written completely in this or an earlier run."""
        return {i for i in range(len(self.chunks)) if os.path.exists(self._chunk_file(i))}

    def write(self, cid: int, frames: np.ndarray, frame_metrics: dict | None = None, extra: dict | None = None) -> None:
        """Frames (b - a, [C or M,] H, W) of chunk ``cid`` (one frame variable: as they are; several:
        the variables along the second axis) and its ``extra`` {name: (b - a, ...)} into its region,
        then its progress record with the metric rows."""
        import xarray as xr
        a, b = self.chunks[cid]
        extra = dict(extra or {})
        if set(extra) != set(self.extra_vars):
            raise ValueError(f"chunk {cid}: extra variables {sorted(extra)} given, the output has {sorted(self.extra_vars)}")
        frames = np.asarray(frames, np.float32)
        parts = [frames] if len(self.frame_vars) == 1 else [frames[:, i] for i in range(len(self.frame_vars))]
        values = dict(zip(self.frame_vars, parts), **{self.extra_vars[k]: np.asarray(v, np.float32) for k, v in extra.items()})
        store = xr.open_zarr(self.partial, consolidated=False)
        # values come time first, (b - a, [M,] H, W); the store puts an ensemble's members first
        region = xr.Dataset({n: (store[n].dims, np.moveaxis(p, 0, -3)) for n, p in values.items()})
        region.to_zarr(self.partial, region={self.tdim: slice(a, b)}, mode="r+", consolidated=False)
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in (frame_metrics or {}).items()})
        write_bytes(self._chunk_file(cid), buf.getvalue())  # only after the frames are in the store

    def read_metrics(self, cids) -> dict:
        """Per-frame metric rows of chunks ``cids`` (from whatever run wrote them)."""
        fields = (*FRAME_FIELDS, *self.extra_rows)
        rows = {k: [] for k in fields}
        for cid in cids:
            with np.load(self._chunk_file(cid)) as f:
                for k in fields:
                    rows[k].append(f[k])
        return {k: np.concatenate(v) if v else np.zeros((0, *self.extra_rows.get(k, ()))) for k, v in rows.items()}

    def finish(self, global_metrics: dict | None, frame_metrics=None) -> None:
        """Collective: rank 0 stores the metric variables (``frame_metrics(rows) -> {name: (T,)}``) and
        global metrics, consolidates the metadata and publishes the store under its final name."""
        import xarray as xr
        import zarr
        self.env.barrier()
        if self.env.is_root:
            kept = dict(zarr.open_group(self.partial, mode="r").attrs)  # appending variables with xarray rewrites the root attributes
            if self.metrics and frame_metrics is not None:
                variables = frame_metrics(self.read_metrics(range(len(self.chunks))))
                ds = xr.Dataset({k: (self.tdim, np.asarray(v, np.float64), {"long_name": f"per-frame {k.replace('_', ' ')}"})
                                 for k, v in variables.items()})
                ds.to_zarr(self.partial, mode="a", consolidated=False)
            group = zarr.open_group(self.partial, mode="r+")
            group.attrs.update({**kept, **{f"hpcvsr_metric_{k}": float(v) for k, v in (global_metrics or {}).items()}})
            shutil.rmtree(self.progress)
            zarr.consolidate_metadata(self.partial)
            if os.path.exists(self.path):  # --overwrite, checked at the start
                shutil.rmtree(self.path)
            os.replace(self.partial, self.path)
        self.env.barrier()
