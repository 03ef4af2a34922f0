"""A trained run as one ``nn.Module`` for Python users: ``hpcvsr.load(run_dir)`` -> :class:`SuperResolver`.

The resolver owns everything its run needs to be applied: the networks, the normaliser of each
variable, the conditioning and the degradation. It takes and gives physical units:

* ``sr(da)``: an ``xarray.DataArray`` (time, y, x) at low resolution -> a DataArray on the fine grid, with
  the name, dims and attributes of the input (``history`` prepended), the time coordinate kept and the
  fine-grid coordinates computed as the NetCDF writer computes them; missing cells stay missing. A
  dask-backed input gives a dask-backed output, computed ``block_frames`` frames at a time with the
  halo frames the 3D windows need, so memory is bounded by the chunk, not the archive.
* ``sr(ds)``: a Dataset holding the run's variables -> a Dataset of the super-resolved variables.
* ``sr(tensor)``: (T, H, W) or (T, C, H, W) -> a tensor (T, H', W') or (T, C, H', W').
* ``SuperResolver(run, members=N, seed=S)`` of a run with a generative stage (pipeline ``2d_3d_gen``):
  N ensemble members along a ``realization`` dimension (first, as in the CF outputs; tensors
  (T, N, H', W')), the
  same members as ``hpcvsr infer --members N --seed S``.
* ``sr.degrade(hr)``: the run's own degradation of a high-resolution DataArray (the infer command's
  ``--degrade``), so that ``sr(sr.degrade(hr))`` is a one-line evaluation with :func:`scores`.

Frames are computed in the same chunks, batches and tiles as ``hpcvsr infer``, so the outputs equal
the command's bitwise on the same device and threads.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from hpcvsr.data.blocks import fill_missing
from hpcvsr.errors import UserError
from hpcvsr.inference.engine import Predictor
from hpcvsr.io import cf
from hpcvsr.io.ncout import REALIZATION, history_line
from hpcvsr.ops import degrade as dg
from hpcvsr.ops import metrics as mt
from hpcvsr.ops import windows as win
from hpcvsr.pipeline import config as config_mod
from hpcvsr.pipeline.segments import frame_crop, grid_axes_of

RUN_TAG = "hpcvsr run "  # in the history line of every output: which run made it (read back by :func:`scores`)


def load(run_dir: str, device=None, **options) -> SuperResolver:
    """The trained run in ``run_dir`` (its ``model.pt``) as a :class:`SuperResolver` on ``device``
    (default: a GPU when there is one, else the CPU); ``options`` as :class:`SuperResolver`."""
    return SuperResolver(run_dir, device=device, **options)


class SuperResolver(torch.nn.Module):
    """A finished training run, applied to arrays in physical units (see the module docstring).

    ``batch``, ``tile``, ``tile_halo``, ``precision`` and ``block_frames`` mean what the ``infer``
    section of the configuration means; their defaults are the infer command's. ``members`` and
    ``seed``: ensemble members of a run with a generative stage (``hpcvsr infer --members --seed``).
    """

    def __init__(self, run_dir: str, device=None, *, batch: int | None = None, tile: int | None = None, tile_halo: int | None = None,
                 precision: str | None = None, block_frames: int | None = None, members: int = 0, seed: int = 0):
        super().__init__()
        d = config_mod.InferConfig()
        device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.block_frames = block_frames or d.block_frames
        if self.block_frames < 1:
            raise UserError(f"block_frames must be >= 1, got {self.block_frames}")
        self.run_dir = os.path.abspath(run_dir)
        self.pred = Predictor(run_dir, device, batch=batch or d.batch, tile=d.tile if tile is None else tile,
                              tile_halo=d.tile_halo if tile_halo is None else tile_halo, precision=precision or d.precision,
                              members=members, seed=seed)
        self.net2d = self.pred.net2d  # registered, so that .to(device) moves the networks
        self.net = self.pred.net
        self.gen = self.pred.gen
        self.members = self.pred.members
        self.variables = list(self.pred.vars)
        self.scale, self.crop, self.method = self.pred.scale, self.pred.crop, self.pred.degrade

    def extra_repr(self) -> str:
        return f"run={self.run_dir!r}, pipeline={self.pred.pipeline}, x{self.scale} {self.method}, variables={self.variables}"

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- tensors --------------------------------------------------------------------------------------

    @torch.no_grad()
    def chunk(self, read, total: int, frames: tuple, *, times=None, what: str = "input", periodic_x: bool = False) -> np.ndarray:
        """Super-resolved frames ``frames`` = [a, b) of a ``total``-frame sequence in physical units,
        (b - a, C, H', W') ((b - a, M, C, H', W') with M members); ``read(r0, r1)`` gives frames [r0, r1) (n, C, h, w) in physical units,
        ``times(r0, r1)`` their time features (n, 4) for a time-conditioned model."""
        pred, dev = self.pred, self.device
        if pred.needs_time and times is None:
            raise UserError(f"{what}: the model {self.run_dir} was trained with time features; give it frames with a CF time coordinate")
        a, b = frames
        r0, r1 = win.halo_range(a, b, total, pred.halo)
        t = torch.from_numpy(np.asarray(times(r0, r1), np.float32)).to(dev) if times is not None else None
        raw = torch.from_numpy(np.ascontiguousarray(read(r0, r1), dtype=np.float32)).to(dev)
        sr = pred.resolve_chunk(raw, frames=(a, b), read=(r0, r1), total=total, times=t, what=what, periodic_x=periodic_x)[0]
        c = sr.dim() - 3  # the channel axis
        return torch.stack([n.phys(sr.select(c, i)) for i, n in enumerate(pred.norms)], c).float().cpu().numpy()

    def chunks(self, total: int) -> list:
        """The chunks [a, b) frames are computed in (those of the infer command)."""
        return win.chunks(total, self.block_frames)

    def forward(self, x):
        import xarray as xr

        if isinstance(x, xr.Dataset):
            return self._dataset(x)
        if isinstance(x, xr.DataArray):
            return self._dataarray(x)
        if isinstance(x, torch.Tensor):
            return self._tensor(x)
        raise UserError(f"super-resolve an xarray DataArray or Dataset, or a torch.Tensor; got {type(x).__name__}")

    def _tensor(self, x: torch.Tensor) -> torch.Tensor:
        C = len(self.variables)
        if x.ndim == 3 and C == 1:
            frames = x[:, None]
        elif x.ndim == 4 and x.shape[1] == C:
            frames = x
        else:
            raise UserError(f"a tensor of frames must be (T, H, W) for one variable or (T, {C}, H, W) for this model's {C}; "
                            f"got {tuple(x.shape)}")
        self._check_shape("tensor", (frames.shape[-2] * self.scale, frames.shape[-1] * self.scale), {})
        host = frames.detach().float().cpu().numpy()
        out = torch.from_numpy(np.concatenate([self.chunk(lambda r0, r1: host[r0:r1], len(host), ab, what="tensor")
                                               for ab in self.chunks(len(host))]))
        return (out.select(out.dim() - 3, 0) if x.ndim == 3 else out).to(x.device)

    # -- xarray -------------------------------------------------------------------------------------------

    def _dataarray(self, da):
        if len(self.variables) > 1:
            raise UserError(f"this model super-resolves {len(self.variables)} variables together ({', '.join(self.variables)}); "
                            "give it a Dataset holding them")
        return self._arrays([da])[0]

    def _dataset(self, ds):
        missing = [v for v in self.variables if v not in ds.data_vars]
        if missing:
            raise UserError(f"the Dataset has no variable {', '.join(missing)} (this model super-resolves {', '.join(self.variables)})")
        out = self._arrays([ds[v] for v in self.variables])
        import xarray as xr

        return xr.Dataset({da.name: da for da in out}, attrs=_with_history(ds.attrs, self._history()))

    def _arrays(self, arrays: list) -> list:
        """The super-resolved DataArrays of ``arrays`` (one per variable, on one grid), lazy when they are."""
        import xarray as xr

        first = arrays[0]
        what = f"DataArray '{first.name}'"
        tdim, ydim, xdim = frame_dims(first)
        for da in arrays[1:]:
            if da.dims != first.dims or da.shape != first.shape:
                raise UserError(f"DataArray '{da.name}' has dims {da.dims} {da.shape}, unlike '{first.name}' {first.dims} {first.shape}")
        T, h, w = (first.sizes[d] for d in (tdim, ydim, xdim))
        grid = self._fine_grid(first, ydim, xdim)
        ny, nx = h * self.scale - 2 * self.crop, w * self.scale - 2 * self.crop
        self._check_shape(what, (h * self.scale, w * self.scale), grid_axes_of(self._fine_grid(first, ydim, xdim, crop=False)))
        stack = [(_masked(da.transpose(tdim, ydim, xdim))).data for da in arrays]
        times = _time_features(first, tdim) if self.pred.needs_time else None
        data = _stacked(stack)  # (T, C, h, w), numpy or dask
        lazy = hasattr(data, "dask")
        periodic = cf.periodic_x(_grid(first, ydim, xdim))  # a global longitude: no seam
        out = self._lazy(data, T, ny, nx, times, what, periodic) if lazy else self._eager(data, T, times, what, periodic)
        coords = {tdim: first[tdim]} if tdim in first.coords else {}
        for k, v in first.coords.items():  # coordinates along time alone (and scalars) carry over
            if k != tdim and set(v.dims) <= {tdim}:
                coords[k] = v
        for name, c in grid["coords"].items():
            coords[name] = (c["dims"], c["values"], c["attrs"])
        dims = (tdim, ydim, xdim)
        if self.members:
            coords[REALIZATION] = (REALIZATION, np.arange(self.members, dtype=np.int32),
                                   {"standard_name": "realization", "long_name": "ensemble member", "units": "1"})
            dims = (tdim, REALIZATION, ydim, xdim)
        results = []
        for i, da in enumerate(arrays):
            values = out[:, :, i] if self.members else out[:, i]
            res = xr.DataArray(values, dims=dims, coords=coords, name=da.name, attrs=_with_history(da.attrs, self._history()))
            # the input's order of dims, the members first (CF 2.4, as the NetCDF and Zarr outputs)
            results.append(res.transpose(*((REALIZATION, *da.dims) if self.members else da.dims)))
        return results

    def _eager(self, data, T: int, times, what: str, periodic: bool = False) -> np.ndarray:
        times = _times_fn(times)
        return np.concatenate([self.chunk(lambda r0, r1: data[r0:r1], T, ab, times=times, what=what, periodic_x=periodic)
                               for ab in self.chunks(T)])

    def _lazy(self, data, T: int, ny: int, nx: int, times, what: str, periodic: bool = False):
        """One dask task per chunk. Each task reads its own frames plus the halo its windows need
        inside itself, so that the input is held one chunk at a time however dask orders the tasks
        (a neighbour's halo frames are read twice); keys name the input, the model and the chunk."""
        import dask
        import dask.array as dsa
        from dask.base import tokenize

        def task(a, b, r0, r1):
            block = np.asarray(data[r0:r1].compute(scheduler="sync"))
            return self.chunk(lambda q0, q1: block[q0 - r0 : q1 - r0], T, (a, b), times=_times_fn(times), what=what, periodic_x=periodic)

        token = tokenize(data.name, self.pred.hash, self.block_frames, self.pred.tile, self.pred.precision, periodic, self.members, self.pred.seed)
        pieces = []
        for a, b in self.chunks(T):
            r0, r1 = win.halo_range(a, b, T, self.pred.halo)
            piece = dask.delayed(task)(a, b, r0, r1, dask_key_name=f"hpcvsr-sr-{token}-{a}")
            shape = (b - a, self.members, data.shape[1], ny, nx) if self.members else (b - a, data.shape[1], ny, nx)
            pieces.append(dsa.from_delayed(piece, shape=shape, dtype=np.float32, name=f"hpcvsr-frames-{token}-{a}"))
        return dsa.concatenate(pieces, axis=0)

    # -- degradation ----------------------------------------------------------------------------------

    def degrade(self, hr):
        """The run's degradation of high-resolution frames (a DataArray (time, y, x), or a tensor
        (T, H, W) / (T, C, H, W)), after the crop training applies to frames not divisible by the
        scale: what ``hpcvsr infer --degrade`` feeds the networks, in physical units."""
        import xarray as xr

        if self.method in dg.PAIRED:
            raise UserError(f"{self.run_dir} was trained on pairs (a coarse run and a fine one): it has no degradation; give it the coarse run")
        if isinstance(hr, torch.Tensor):
            x = hr[:, None] if hr.ndim == 3 else hr
            (y0, y1), (x0, x1) = self._crop(x.shape[-2], x.shape[-1], "tensor")
            lr = torch.cat([self._degrade_unit(x[a:b, ..., y0:y1, x0:x1]) for a, b in win.chunks(len(x), self.block_frames)])
            return lr[:, 0] if hr.ndim == 3 else lr
        if not isinstance(hr, xr.DataArray):
            raise UserError(f"degrade a DataArray or a torch.Tensor; got {type(hr).__name__}")
        tdim, ydim, xdim = frame_dims(hr)
        (y0, y1), (x0, x1) = self._crop(hr.sizes[ydim], hr.sizes[xdim], f"DataArray '{hr.name}'")
        hr = hr.isel({ydim: slice(y0, y1), xdim: slice(x0, x1)})
        grid = _grid(hr, ydim, xdim)
        s, centred = self.scale, dg.CENTRED[self.method]
        h, w = hr.sizes[ydim] // s, hr.sizes[xdim] // s
        offset = (s - 1) / 2 if centred else 0.0  # where a coarse pixel sits among its fine cells
        coarse = cf.fine_grid(grid, np.arange(h) * s + offset, np.arange(w) * s + offset)

        def degrade_block(x):  # (n, y, x) in physical units
            t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[:, None]
            return self._degrade_unit(t)[:, 0].numpy()

        src = _masked(hr.transpose(tdim, ydim, xdim))
        if hasattr(src.data, "dask"):
            from dask.base import tokenize

            name = f"hpcvsr-degrade-{tokenize(src.data.name, self.pred.hash, y0, y1, x0, x1)}"
            whole = src.data.rechunk({1: -1, 2: -1})  # whole frames: the operators reach across any spatial chunk
            data = whole.map_blocks(degrade_block, chunks=(whole.chunks[0], (h,), (w,)), dtype=np.float32, name=name)
        else:
            data = degrade_block(src.values)
        coords = {k: v for k, v in hr.coords.items() if set(v.dims) <= {tdim}}
        coords.update({name: (c["dims"], c["values"], c["attrs"]) for name, c in coarse["coords"].items()})
        attrs = _with_history(hr.attrs, f"degraded x{s} {self.method} as run {self.run_dir} was trained")
        return xr.DataArray(data, dims=(tdim, ydim, xdim), coords=coords, name=hr.name, attrs=attrs).transpose(*hr.dims)

    def _degrade_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Physical (n, C, H, W) -> degraded physical (n, C, h, w), the degradation applied in normalised units."""
        norms = self.pred.norms
        u = torch.stack([n.unit(x[:, i]) for i, n in enumerate(norms)], 1)
        lr = dg.degrade(u, self.scale, self.method, self.pred.sigma)
        return torch.stack([n.phys(lr[:, i]) for i, n in enumerate(norms)], 1)

    def _crop(self, height: int, width: int, what: str) -> tuple:
        mode = self.pred.config.get("data", {}).get("crop", "centre")
        rows, cols = frame_crop(what, height, width, self.scale, mode)
        return rows or (0, height), cols or (0, width)

    # -- grids ----------------------------------------------------------------------------------------

    def _fine_grid(self, da, ydim: str, xdim: str, crop: bool = True) -> dict:
        """The output's coordinates, as the NetCDF writer places them: low-resolution pixels where the
        degradation puts them, less the model's border (``crop``)."""
        return cf.fine_grid(_grid(da, ydim, xdim), *self.pred.output_positions(da.sizes[ydim], da.sizes[xdim], crop=crop))

    def _check_shape(self, what: str, shape, axes: dict) -> None:
        self.pred.check_grid(what, tuple(int(n) for n in shape), axes)

    def _history(self) -> str:
        return f"super-resolved x{self.scale} by {RUN_TAG}{self.run_dir} (model.pt {self.pred.hash}, pipeline {self.pred.pipeline})"


# -- helpers on xarray objects ---------------------------------------------------------------------------

def frame_dims(da) -> tuple[str, str, str]:
    """(time, y, x) dimension names of a DataArray of frames, from CF evidence (axis, standard_name,
    units, names); one clear error when it has other dimensions or they cannot be told apart."""
    if da.ndim != 3:
        raise UserError(f"DataArray '{da.name}' has dimensions {da.dims}; frames need three: time, y and x "
                        "(select the others first, e.g. da.sel(level=500))")
    evidence = {}
    for dim in map(str, da.dims):
        found = [cf.axis_evidence(str(n), dict(c.attrs)) for n, c in da.coords.items() if c.dims == (dim,)]
        if dim in da.coords and np.issubdtype(da[dim].dtype, np.datetime64):
            found.append(("T", 0))
        found = [e for e in found + [cf.axis_evidence(dim, {})] if e is not None]
        evidence[dim] = min(found, key=lambda e: e[1]) if found else None
    axes = {}
    for ax in ("T", "Y", "X"):
        cands = sorted((e[1], d) for d, e in evidence.items() if e is not None and e[0] == ax)
        if cands:
            axes[ax] = cands[0][1]
    if len(set(axes.values())) != 3 or len(axes) != 3:
        axes = dict(zip(("T", "Y", "X"), map(str, da.dims)))  # by position, as (time, y, x)
    return axes["T"], axes["Y"], axes["X"]


def _grid(da, ydim: str, xdim: str) -> dict:
    """The horizontal coordinates of ``da`` as :meth:`hpcvsr.io.cf.CFArchive.grid` describes them."""
    coords = {}
    for name, c in da.coords.items():
        if c.dims and set(c.dims) <= {ydim, xdim} and np.issubdtype(c.dtype, np.number):
            coords[str(name)] = {"dims": [str(d) for d in c.dims], "values": np.asarray(c.values, np.float64), "attrs": dict(c.attrs)}
    return {"ydim": ydim, "xdim": xdim, "coords": coords}


def _masked(da):
    """Values outside ``valid_min``/``valid_max``/``valid_range`` as missing, as the file readers do."""
    bounds = cf.CFArchive._valid_bounds(da.attrs)
    if bounds is None:
        return da
    scale, offset = float(da.encoding.get("scale_factor", 1.0)), float(da.encoding.get("add_offset", 0.0))
    lo, hi = (v * scale + offset for v in bounds)  # stated in stored units (CF)
    return da.where((da >= lo) & (da <= hi))


def _stacked(arrays: list):
    """(T, C, h, w) from C arrays (T, h, w), numpy or dask alike, as float32."""
    if any(hasattr(a, "dask") for a in arrays):
        import dask.array as dsa

        return dsa.stack([dsa.asarray(a).astype(np.float32) for a in arrays], axis=1)
    return np.stack([np.asarray(a, np.float32) for a in arrays], axis=1)


def _time_features(da, tdim: str) -> np.ndarray:
    """(T, 4) time features of the frames, from their time coordinate (any CF calendar)."""
    if tdim not in da.coords:
        raise UserError(f"DataArray '{da.name}' has no time coordinate, but the model was trained with time features")
    values = np.asarray(da[tdim].values)
    if np.issubdtype(values.dtype, np.datetime64):
        import cftime

        seconds = (values - np.datetime64("1970-01-01T00:00:00")) / np.timedelta64(1, "us") / 1e6
        dates = cftime.num2date(seconds, "seconds since 1970-01-01", calendar="standard", only_use_cftime_datetimes=True)
    elif values.dtype == object:
        dates = values
    else:
        raise UserError(f"DataArray '{da.name}': its time coordinate is not decoded (open the file with decode_times=True)")
    return cf.time_features(np.asarray(dates).ravel())


def _times_fn(times):
    return None if times is None else (lambda r0, r1: times[r0:r1])


def _with_history(attrs: dict, text: str) -> dict:
    out = dict(attrs)
    line = history_line(f"hpcvsr: {text}")
    out["history"] = f"{line}\n{attrs['history']}" if attrs.get("history") else line
    return out


def scores(sr, hr, resolver: SuperResolver | None = None) -> dict:
    """The global metrics of super-resolved frames ``sr`` against high-resolution ``hr`` (DataArrays),
    as the infer command computes and prints them; the run comes from ``sr``'s history (or ``resolver``)."""
    import xarray as xr

    if not isinstance(sr, xr.DataArray) or not isinstance(hr, xr.DataArray):
        raise UserError("hpcvsr.metrics compares two DataArrays: the super-resolved frames and the high-resolution ones")
    if resolver is None:
        resolver = load(_run_of(sr), device="cpu")
    pred, s, c = resolver.pred, resolver.scale, resolver.crop
    if len(pred.norms) != 1:
        raise UserError("hpcvsr.metrics compares one variable at a time")
    norm = pred.norms[0]
    tdim, ydim, xdim = frame_dims(hr)
    paired = pred.degrade in dg.PAIRED  # hr is the fine run of a pair: compared as it is
    (y0, y1), (x0, x1) = ((0, hr.sizes[ydim]), (0, hr.sizes[xdim])) if paired else resolver._crop(hr.sizes[ydim], hr.sizes[xdim], f"DataArray '{hr.name}'")
    hr = _masked(hr.isel({ydim: slice(y0, y1), xdim: slice(x0, x1)}).transpose(tdim, ydim, xdim))
    sr = sr.transpose(*frame_dims(sr))
    if sr.shape != (hr.shape[0], hr.shape[1] - 2 * c, hr.shape[2] - 2 * c):
        raise UserError(f"the super-resolved frames {sr.shape} do not match the high-resolution ones {hr.shape} less the model's {c}-pixel border")
    acc = mt.MetricSums(data_range=1.0, unit_scale=norm.span, spectrum_cutoff=1.0 / s, degradation=pred.consistency)
    for a, b in resolver.chunks(hr.shape[0]):  # as infer --degrade: the input degraded in normalised units
        x, valid = fill_missing(norm.unit(torch.from_numpy(np.asarray(hr[a:b].values, np.float32))), f"DataArray '{hr.name}'")
        low = None if paired else dg.degrade(x[:, None], s, pred.degrade, pred.sigma)[:, 0]
        target = mt.shave(x if valid is None else x.masked_fill(~valid, float("nan")), c)
        y = norm.unit(torch.from_numpy(np.asarray(sr[a:b].values, np.float32)))
        acc.add_rows(acc.rows(y, target, offset=norm.lo / norm.span, lr=low))
    return acc.summary(acc.sums)


def _run_of(da) -> str:
    for line in str(da.attrs.get("history", "")).splitlines():
        if RUN_TAG in line:
            return line.split(RUN_TAG, 1)[1].split(" (model.pt", 1)[0]
    raise UserError(f"DataArray '{da.name}' was not made by hpcvsr (no run in its history); pass resolver=hpcvsr.load(RUN)")
