"""Pipeline pieces between the data blocks and the training loop.

* :func:`segments` turns the data config into training / validation / held-out segments
  (generating shallow-water or phantom sequences on rank 0 when absent);
* :func:`normaliser` derives the value range (fixed, or reduced over every rank's training frames);
* :class:`PatchTask` samples random patches (2D) or windows of patches (3D) from a rank's own
  blocks and evaluates full frames;
* :func:`evaluate_methods` measures every method on the held-out blocks, on one common crop,
  with sums reduced across ranks.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from . import metrics as mt
from .config import Config
from .data import blocks as bl
from .data import degrade as dg
from .data import phantom, sequences, swe
from .data import windows as win
from .dist import DistEnv
from .errors import UserError

def _generate(path: str, source: str, frames: int, size, seed: int) -> None:
    if source == "swe":
        seq = swe.generate(frames, tuple(size), seed)
        sequences.write_sequence(path, {"h": seq.h, "u": seq.u, "v": seq.v, "vort": seq.vort}, swe.attributes(seq), swe.UNITS)
    else:
        data = phantom.generate(frames, tuple(size), seed)
        sequences.write_sequence(path, {"phantom": data}, {"source": "phantom", "seed": seed}, {"phantom": "1"})


def segments(cfg: Config, env: DistEnv, data_dir: str) -> tuple[list, list, list]:
    """(train, val, test) lists of :class:`~hpcvsr.data.blocks.Segment`."""
    d = cfg.data
    if d.source in ("swe", "phantom"):
        var = d.var if d.source == "swe" else "phantom"
        if d.source == "swe" and var not in swe.UNITS:
            raise UserError(f"data.var: shallow-water sequences hold {', '.join(swe.UNITS)}, not '{var}'")
        if d.test_seed in d.seeds:
            raise UserError(f"data.test_seed {d.test_seed} is also a training seed; the held-out sequence must be unseen")
        paths = {}
        for seed in list(d.seeds) + [d.test_seed]:
            paths[seed] = os.path.join(data_dir, f"{d.source}_seed{seed}_{d.frames}x{d.size[0]}x{d.size[1]}.h5")
        if env.is_root:
            os.makedirs(data_dir, exist_ok=True)
            for seed, p in paths.items():
                if not os.path.exists(p):
                    _generate(p, d.source, d.frames, d.size, seed)
        env.barrier()
        files = [(paths[s], var) for s in d.seeds]
        test = [bl.Segment(paths[d.test_seed], var, 0, d.frames, f"seed {d.test_seed}")]
    else:
        path = d.path
        if d.source == "video":
            path = os.path.join(data_dir, "video.h5")
            if env.is_root and not os.path.exists(path):
                os.makedirs(data_dir, exist_ok=True)
                from .data import video

                sequences.write_sequence(path, {"y": video.read_video(d.path)}, {"source": "video", "input": d.path})
            env.barrier()
            var = "y"
        else:
            var = d.var
            if not d.path:
                raise UserError("data.path must name the archive when data.source is 'archive'")
        n = len(sequences.Archive(path, var))
        if d.test_path:
            tp, tv = d.test_path, var
            if d.source == "video":
                tp = os.path.join(data_dir, "video_test.h5")
                if env.is_root and not os.path.exists(tp):
                    from .data import video

                    sequences.write_sequence(tp, {"y": video.read_video(d.test_path)}, {"source": "video", "input": d.test_path})
                env.barrier()
            test = [bl.Segment(tp, tv, 0, len(sequences.Archive(tp, tv)), "held-out file")]
            files = [(path, var)]
        else:  # hold out the trailing frames of the one file
            (_, cut), _ = win.split_train_val(n, d.val_fraction)
            test = [bl.Segment(path, var, cut, n, "held-out tail")]
            files = [(path, var, cut)]
    train, val = [], []
    for entry in files:
        p, v = entry[0], entry[1]
        n = entry[2] if len(entry) > 2 else len(sequences.Archive(p, v))
        try:
            (a, b), (c, e) = win.split_train_val(n, d.val_fraction)
        except ValueError as exc:
            raise UserError(f"{p}:{v}: {exc}") from None
        train.append(bl.Segment(p, v, a, b, "train"))
        val.append(bl.Segment(p, v, c, e, "val"))
    need = cfg.windows.size if cfg.pipeline != "2d" else 1
    for s in train + val + test:
        if s.n < max(need, env.world):
            raise UserError(f"{s.path}:{s.var} {s.name} has {s.n} frames; at least {max(need, env.world)} are needed "
                            f"(a {need}-frame window and one frame per rank)")
    return train, val, test


def normaliser(cfg: Config, env: DistEnv, train: list, reads: list | None = None) -> bl.Normaliser:
    d = cfg.data
    units = str(sequences.Archive(train[0].path, train[0].var).units or "")
    if d.normalise == "none":
        return bl.Normaliser(0.0, 1.0, units)
    if d.normalise == "fixed":
        return bl.Normaliser(float(d.norm_range[0]), float(d.norm_range[1]), units)
    lo, hi = np.inf, -np.inf
    for s in train:
        a, b = bl.local_range(s, env.world, env.rank, reads)
        lo, hi = min(lo, a), max(hi, b)
    lo = float(env.all_reduce_min(torch.tensor([lo], dtype=torch.float64, device=env.device)).item())
    hi = float(env.all_reduce_max(torch.tensor([hi], dtype=torch.float64, device=env.device)).item())
    if not hi > lo:
        raise UserError(f"training data of {train[0].path}:{train[0].var} is constant ({lo}); nothing to normalise")
    return bl.Normaliser(lo, hi, units)


def load_blocks(segs, cfg: Config, env: DistEnv, norm: bl.Normaliser, halo: int, reads: list | None = None) -> list:
    g = cfg.degrade
    return [bl.read_block(s, env.world, env.rank, halo, norm, g.scale, g.method, g.blur_sigma, cfg.windows.pad, env.device, reads) for s in segs]


@torch.no_grad()
def frames_through(model, frames: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Run a 2D model over (T, h, w) LR frames -> (T, H, W)."""
    model.eval()
    out = [model(frames[i : i + batch].unsqueeze(1)).squeeze(1) for i in range(0, len(frames), batch)]
    model.train()
    return torch.cat(out)


def add_inputs(blocks: list, scale: int, model2d=None) -> None:
    """Buffers a 3D stage reads: the bicubic upscale and, with a 2D model, its outputs, for every
    frame a block holds (own + halo), so its windows are complete."""
    for b in blocks:
        b.extra["bicubic"] = dg.upscale(b.lr, scale)
        if model2d is not None:
            b.extra["sr2d"] = frames_through(model2d, b.lr)


class PatchTask:
    """Random patches of a rank's own frames for training; whole frames for evaluation.

    ``source`` is the buffer the model reads ('lr', 'bicubic' or 'sr2d'); ``window`` the number
    of consecutive frames per sample (1 for 2D models); ``crop`` the border the model's output
    lacks (the study's valid 3D layers). Flips are used only for degradations that commute with
    them (bicubic, block mean).
    """

    def __init__(self, train: list, val: list, source: str, window: int, crop: int, scale: int, patch: int, flips: bool, train_eval_frames: int = 8, eval_batch: int = 4):
        self.train, self.val = train, val
        self.source, self.window, self.crop, self.scale, self.patch = source, window, crop, scale, patch
        self.flips, self.train_eval_frames, self.eval_batch = flips, train_eval_frames, eval_batch
        self.frames_per_sample = window
        self.counts = np.array([b.n_own for b in train])

    def buffer(self, b: bl.Block) -> torch.Tensor:
        return b.lr if self.source == "lr" else b.extra[self.source]

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """(count, 5) rows (block, centre, y, x, flip); centres are segment-local frame indices."""
        which = rng.choice(len(self.train), size=count, p=self.counts / self.counts.sum())
        sizes = np.array([b.hr.shape[-2:] for b in self.train])[which]
        o = win.patch_origins(rng, count, self.counts[which], sizes[:, 0], sizes[:, 1], self.patch, self.scale)
        first = np.array([b.own[0] for b in self.train])[which]
        flip = o[:, 3] if self.flips else np.zeros(count, dtype=np.int64)
        return np.stack([which, first + o[:, 0], o[:, 1], o[:, 2], flip], axis=1)

    def batch(self, origins: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        p, s, c = self.patch, self.scale, self.crop
        for bi, t, y, x, flip in origins.tolist():
            b = self.train[bi]
            idx = b.window_index([t], self.window)[0]
            buf = self.buffer(b)
            if self.source == "lr":
                xi = buf[idx, y // s : (y + p) // s, x // s : (x + p) // s]
            else:
                xi = buf[idx, y : y + p, x : x + p]
            yi = b.hr[t - b.read[0], y + c : y + p - c, x + c : x + p - c][None]
            dims = [d for d, bit in ((-1, 1), (-2, 2)) if flip & bit]
            if dims:
                xi, yi = xi.flip(dims), yi.flip(dims)
            xs.append(xi)
            ys.append(yi)
        return torch.stack(xs), torch.stack(ys)

    def frames(self, b: bl.Block, centres) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (k, window, ...) and cropped targets (k, H', W') for whole frames."""
        idx = b.window_index(centres, self.window)
        c = self.crop
        hr = b.hr[np.asarray(centres) - b.read[0]]
        if c:
            hr = hr[..., c:-c, c:-c]
        return self.buffer(b)[torch.from_numpy(idx).to(b.hr.device)], hr

    def evaluate(self, model, split: str) -> mt.MetricSums:
        acc = mt.MetricSums(data_range=1.0)
        blocks = self.val if split == "val" else self.train
        for b in blocks:
            centres = b.centres()
            if split == "train":
                centres = centres[: self.train_eval_frames]
            for i in range(0, len(centres), self.eval_batch):
                x, y = self.frames(b, centres[i : i + self.eval_batch])
                acc.update(model(x).squeeze(1), y)
        return acc


def crop_to(x: torch.Tensor, have: int, want: int) -> torch.Tensor:
    """Crop (..., H, W) whose border is already ``have`` px short so it is ``want`` px short."""
    d = want - have
    return x[..., d:-d, d:-d] if d > 0 else x


@torch.no_grad()
def evaluate_methods(methods: dict, blocks: list, crop: int, norm: bl.Normaliser, scale: int, env: DistEnv, batch: int = 4) -> tuple[dict, dict]:
    """Metrics of every method on the held-out blocks, all on the same crop, reduced over ranks.

    ``methods`` maps a name to (fn, window, source, own_crop); ``fn`` takes inputs
    (k, window, ...) from ``source``. Returns ({method: metrics}, {method: per-frame PSNR list}).
    """
    results, per_frame = {}, {}
    n_total = sum(b.segment.n for b in blocks)
    for name, (fn, window, source, own_crop) in methods.items():
        acc = mt.MetricSums(data_range=1.0, unit_scale=norm.span, spectrum_cutoff=1.0 / scale)
        frame_psnr = torch.zeros(n_total, dtype=torch.float64, device=env.device)
        offset = 0
        task = PatchTask([], [], source, window, 0, scale, 8, False)
        for b in blocks:
            centres = b.centres()
            for i in range(0, len(centres), batch):
                cs = centres[i : i + batch]
                x, y = task.frames(b, cs)
                out = crop_to(fn(x).squeeze(1), own_crop, crop)
                p = acc.update(out, crop_to(y, 0, crop), offset=norm.lo / norm.span)
                frame_psnr[offset + cs] = p.to(frame_psnr)
            offset += b.segment.n
        results[name] = acc.summary(env.all_reduce_sum(acc.sums.clone()))
        per_frame[name] = env.all_reduce_sum(frame_psnr).tolist()
    return results, per_frame
