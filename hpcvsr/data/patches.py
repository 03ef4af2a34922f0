"""What a model reads from a rank's blocks: random training patches and whole-frame windows.

* :func:`prepare_inputs` adds the buffers a 3D stage reads (bicubic upscale, 2D outputs);
* :func:`window_frames` gives inputs (:func:`model_input`) and cropped targets for whole frames;
* :class:`PatchTask` samples random patches (2D) or windows of patches (3D) from a rank's own
  frames for training, and evaluates whole frames on the training and validation blocks.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import metrics as mt
from ..models.conditioning import Where, run
from . import blocks as bl
from . import degrade as dg
from . import windows as win


def model_input(x: torch.Tensor) -> torch.Tensor:
    """What a network reads from samples of buffer frames (N, window, C, h, w) of C variables:
    a 2D network (window 1) (N, C, h, w); a 3D network (N, window, h, w) for one variable and
    (N, window, C, h, w) for several (:class:`hpcvsr.models.variables.Variables`)."""
    if x.shape[1] == 1:
        return x[:, 0]
    return x[:, :, 0] if x.shape[2] == 1 else x


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


def window_frames(b: bl.Block, centres, *, source: str = "lr", window: int = 1, crop: int = 0) -> tuple[torch.Tensor, torch.Tensor, Where]:
    """Inputs read from buffer ``source`` (:func:`model_input`), targets (k, C, H - 2 crop, W - 2 crop)
    and where the whole frames lie (their time features when the block has them)."""
    idx = torch.from_numpy(b.window_index(centres, window)).to(b.hr.device)
    hr = mt.shave(b.target(np.asarray(centres) - b.read[0]), crop)
    times = None if b.times is None else b.times[idx.reshape(len(idx), -1)]
    return model_input(b.buffer(source)[idx]), hr, Where.at(len(idx), times=times, device=b.hr.device)


class PatchTask:
    """Random patches of a rank's own frames for training; whole frames for evaluation.

    ``source`` is the buffer the model reads ('lr', 'bicubic' or 'sr2d'); ``window`` the number
    of consecutive frames per sample (1 for 2D models); ``crop`` the border the model's output
    lacks (the study's valid 3D layers). Flips are used only for degradations that commute with
    them (bicubic, block mean). Targets are NaN where the data are missing (``masked``).
    """

    def __init__(self, *, train: list, val: list, source: str, window: int, crop: int, scale: int, patch: int, flips: bool,
                 train_eval_frames: int = 8, eval_batch: int = 4):
        self.train, self.val = train, val
        self.source, self.window, self.crop, self.scale, self.patch = source, window, crop, scale, patch
        self.flips, self.train_eval_frames, self.eval_batch = flips, train_eval_frames, eval_batch
        self.frames_per_sample = window
        self.counts = np.array([b.n_own for b in train])
        self.masked = any(b.mask is not None for b in train)  # targets hold NaN where values are missing

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """(count, 5) rows (block, centre, y, x, flip); centres are segment-local frame indices."""
        which = rng.choice(len(self.train), size=count, p=self.counts / self.counts.sum())
        sizes = np.array([b.hr.shape[-2:] for b in self.train])[which]
        o = win.patch_origins(rng, count, self.counts[which], sizes[:, 0], sizes[:, 1], self.patch, self.scale)
        first = np.array([b.own[0] for b in self.train])[which]
        flip = o[:, 3] if self.flips else np.zeros(count, dtype=np.int64)
        return np.stack([which, first + o[:, 0], o[:, 1], o[:, 2], flip], axis=1)

    def batch(self, origins: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, Where]:
        """Inputs, targets and where the patches lie (grid offsets, time features)."""
        xs, ys, ts = [], [], []
        p, s, c = self.patch, self.scale, self.crop
        for bi, t, y, x, flip in origins.tolist():
            b = self.train[bi]
            idx = b.window_index([t], self.window)[0]
            buf = b.buffer(self.source)
            if self.source == "lr":
                xi = buf[idx, :, y // s : (y + p) // s, x // s : (x + p) // s]
            else:
                xi = buf[idx, :, y : y + p, x : x + p]
            yi = b.target((t - b.read[0], slice(None), slice(y + c, y + p - c), slice(x + c, x + p - c)))
            dims = [d for d, bit in ((-1, 1), (-2, 2)) if flip & bit]
            if dims:
                xi, yi = xi.flip(dims), yi.flip(dims)
            xs.append(xi)
            ys.append(yi)
            if b.times is not None:
                ts.append(b.times[torch.as_tensor(idx, device=b.times.device)])
        dev = xs[0].device
        where = Where(torch.as_tensor(origins[:, 2], device=dev), torch.as_tensor(origins[:, 3], device=dev),
                      torch.stack(ts) if ts else None)
        return model_input(torch.stack(xs)), torch.stack(ys), where

    def evaluate(self, model, split: str) -> mt.MetricSums:
        acc = mt.MetricSums(data_range=1.0)
        blocks = self.val if split == "val" else self.train
        for b in blocks:
            centres = b.centres()
            if split == "train":
                centres = centres[: self.train_eval_frames]
            for i in range(0, len(centres), self.eval_batch):
                x, y, where = window_frames(b, centres[i : i + self.eval_batch], source=self.source, window=self.window, crop=self.crop)
                acc.update(run(model, x, where), y)
        return acc
