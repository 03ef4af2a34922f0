"""What a model reads from a rank's blocks: random training patches and whole-frame windows.

* :func:`prepare_inputs` adds the buffers a 3D stage reads (bicubic upscale, 2D outputs);
* :func:`window_frames` gives inputs (:func:`hpcvsr.models.inputs.model_input`) and cropped targets for whole frames;
* :class:`PatchTask` samples random patches (2D) or windows of patches (3D) from a rank's own
  frames for training, and evaluates whole frames on the training and validation blocks.
"""

from __future__ import annotations

import numpy as np
import torch

from hpcvsr.data import blocks as bl
from hpcvsr.models.conditioning import Where, run
from hpcvsr.models.inputs import model_input
from hpcvsr.models.lowering import autocast
from hpcvsr.ops import degrade as dg
from hpcvsr.ops import metrics as mt
from hpcvsr.ops import windows as win


@torch.no_grad()
def frames_through(model, frames: torch.Tensor, batch: int = 8, times: torch.Tensor | None = None) -> torch.Tensor:
    """Run a 2D model over (T, C, h, w) whole LR frames (time features ``times`` (T, 4)) -> (T, C, H, W)."""
    model.eval()
    out = []
    for i in range(0, len(frames), batch):
        x = frames[i : i + batch]
        where = Where.at(len(x), times=None if times is None else times[i : i + batch, None], device=x.device)
        out.append(run(model, x, where))
    model.train()
    return torch.cat(out)


def prepare_inputs(blocks: list, scale: int, model2d=None) -> None:
    """Set the bicubic upscale and, with a 2D model, its outputs, for every frame a block holds
    (own + halo), so its windows are complete."""
    for b in blocks:
        b.bicubic = dg.upscale(b.lr, scale)
        if model2d is not None:
            b.sr2d = frames_through(model2d, b.lr, times=b.times)


def window_frames(b: bl.Block, centres, *, source: str = "lr", window: int = 1, crop: int = 0,
                  shared: bool = False) -> tuple[torch.Tensor | tuple, torch.Tensor, Where]:
    """Inputs read from buffer ``source`` (:func:`hpcvsr.models.inputs.model_input`), targets (k, C, H - 2 crop, W - 2 crop)
    and where the whole frames lie (their time features when the block has them). ``shared``: the
    input as (the block's frames, the windows as indices into them), for a network whose overlapping
    windows share their frames' features (:meth:`hpcvsr.models.vsr3d.VSR3D.forward_shared`)."""
    idx = torch.from_numpy(b.window_index(centres, window)).to(b.hr.device)
    hr = mt.shave(b.target(np.asarray(centres) - b.read[0]), crop)
    times = None if b.times is None else b.times[idx.reshape(len(idx), -1)]
    x = (b.buffer(source)[:, 0], idx) if shared else model_input(b.buffer(source)[idx])
    return x, hr, Where.at(len(idx), times=times, device=b.hr.device)


class PatchTask:
    """Random patches of a rank's own frames for training; whole frames for evaluation.

    ``source`` is the buffer the model reads ('lr', 'bicubic' or 'sr2d'); ``window`` the number
    of consecutive frames per sample (1 for 2D models); ``crop`` the border the model's output
    lacks (the study's valid 3D layers). Flips are used only for degradations that commute with
    them (bicubic, block mean). Targets are NaN where the data are missing (``masked``).

    ``centres`` > 1 (a 3D network with per-frame features, one variable): every ``centres``
    consecutive samples are the windows of consecutive centre frames at one place (a clip), and
    the batch's input is (frames, windows): each clip's frames once, and the windows as indices
    into them (:meth:`hpcvsr.models.vsr3d.VSR3D.forward_shared`), so overlapping windows share
    their frames' work in training too.
    """

    def __init__(self, *, train: list, val: list, source: str, window: int, crop: int, scale: int, patch: int, flips: bool,
                 train_eval_frames: int = 8, eval_batch: int = 4, centres: int = 1):
        if centres > 1 and (window == 1 or train[0].hr.shape[1] != 1):
            raise ValueError("centres > 1 needs windows of one variable")  # programming error: train.py decides
        self.train, self.val, self.centres = train, val, centres
        self.source, self.window, self.crop, self.scale, self.patch = source, window, crop, scale, patch
        self.flips, self.train_eval_frames, self.eval_batch = flips, train_eval_frames, eval_batch
        self.frames_per_sample = window
        self.counts = np.array([b.n_own for b in train])
        self.masked = any(b.mask is not None for b in train)  # targets hold NaN where values are missing

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """(count, 5) rows (block, centre, y, x, flip); centres are segment-local frame indices. With
        ``centres`` K > 1, ``count`` is a multiple of K and every K rows are one clip: the same place
        and flip, consecutive centres (within the block's own frames)."""
        k = self.centres
        n = count // k
        which = rng.choice(len(self.train), size=n, p=self.counts / self.counts.sum())
        sizes = np.array([b.hr.shape[-2:] for b in self.train])[which]
        o = win.patch_origins(rng, n, np.maximum(1, self.counts[which] - k + 1), sizes[:, 0], sizes[:, 1], self.patch, self.scale)
        first = np.array([b.own[0] for b in self.train])[which]
        flip = o[:, 3] if self.flips else np.zeros(n, dtype=np.int64)
        rows = np.stack([which, first + o[:, 0], o[:, 1], o[:, 2], flip], axis=1)
        if k > 1:
            rows = np.repeat(rows, k, axis=0)
            last = np.repeat(first + self.counts[which] - 1, k)
            rows[:, 1] = np.minimum(rows[:, 1] + np.tile(np.arange(k), n), last)
        return rows

    def batch(self, origins: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, Where]:
        """Inputs, targets and where the patches lie (grid offsets, time features), gathered with
        one indexing operation per block (no loop over samples)."""
        p, s, c = self.patch, self.scale, self.crop
        n, w = len(origins), self.window
        xs = ys = ts = None
        fidx = np.empty((n, w), dtype=np.int64)  # the windows' buffer frames
        for bi in np.unique(origins[:, 0]).tolist():
            sel = np.flatnonzero(origins[:, 0] == bi)
            b, o = self.train[bi], origins[sel]
            buf, dev = b.buffer(self.source), b.hr.device
            step = s if self.source == "lr" else 1  # buffer pixels per HR pixel of the origin
            fy, fx = (o[:, 4] & 2) > 0, (o[:, 4] & 1) > 0
            fidx[sel] = b.window_index(o[:, 1], w)
            frames = torch.from_numpy(fidx[sel]).to(dev)[:, :, None, None, None]
            chans = torch.arange(buf.shape[1], device=dev)[None, None, :, None, None]
            ry = torch.from_numpy(win.patch_rows(o[:, 2] // step, p // step, fy)).to(dev)[:, None, None, :, None]
            rx = torch.from_numpy(win.patch_rows(o[:, 3] // step, p // step, fx)).to(dev)[:, None, None, None, :]
            xi = buf[frames, chans, ry, rx]  # (k, window, C, p', p')
            ty = torch.from_numpy(win.patch_rows(o[:, 2] + c, p - 2 * c, fy)).to(dev)[:, None, :, None]
            tx = torch.from_numpy(win.patch_rows(o[:, 3] + c, p - 2 * c, fx)).to(dev)[:, None, None, :]
            t = torch.from_numpy(o[:, 1] - b.read[0]).to(dev)[:, None, None, None]
            yi = b.target((t, chans[0], ty, tx))  # (k, C, p - 2c, p - 2c)
            if xs is None:
                xs, ys = xi.new_empty((n, *xi.shape[1:])), yi.new_empty((n, *yi.shape[1:]))
                ts = None if b.times is None else b.times.new_empty((n, w, b.times.shape[-1]))
            sel_t = torch.from_numpy(sel).to(dev)
            xs[sel_t], ys[sel_t] = xi, yi
            if ts is not None:
                ts[sel_t] = b.times[frames[:, :, 0, 0, 0]]
        dev = xs.device
        where = Where(torch.as_tensor(origins[:, 2], device=dev), torch.as_tensor(origins[:, 3], device=dev), ts)
        if self.centres == 1:
            return model_input(xs), ys, where
        # clips: each (clip, buffer frame) once; the windows index into those frames
        key = torch.from_numpy((np.arange(n) // self.centres)[:, None] * (fidx.max() + 1) + fidx)
        keys, windows = torch.unique(key, return_inverse=True)
        first = torch.zeros(len(keys), dtype=torch.int64).scatter_(0, windows.reshape(-1), torch.arange(n * w))
        return (xs.reshape(n * w, *xs.shape[2:])[first.to(dev), 0], windows.to(dev)), ys, where

    def evaluate(self, model, split: str, precision: str = "fp32") -> mt.MetricSums:
        """Metric sums of ``model`` on the whole frames of ``split``; the model runs at ``precision``
        (:func:`hpcvsr.models.lowering.autocast`), the metrics in fp32/float64."""
        acc = mt.MetricSums(data_range=1.0)
        blocks = self.val if split == "val" else self.train
        for b in blocks:
            centres = b.centres()
            if split == "train":
                centres = centres[: self.train_eval_frames]
            shared = model.frame_features and self.window > 1 and b.hr.shape[1] == 1
            for i in range(0, len(centres), self.eval_batch):
                # shared: overlapping windows share their frames' features (the same numbers, about 3x fewer operations)
                x, y, where = window_frames(b, centres[i : i + self.eval_batch], source=self.source, window=self.window, crop=self.crop,
                                            shared=shared)
                with autocast(y.device, precision):
                    out = run(model, x, where)
                acc.update(out.float(), y)
        return acc
