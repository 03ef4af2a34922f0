"""From the data configuration to the frames every rank holds.

* :func:`segments` turns ``cfg.data`` into training, validation and held-out
  :class:`~hpcvsr.data.blocks.Segment` lists (generating sequences or converting a video on rank 0
  when they are not there yet);
* :func:`normaliser` derives the value range (fixed, or reduced over every rank's training frames);
* :func:`load_blocks` reads this rank's block (plus halo) of each segment.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import UserError
from . import blocks as bl
from . import sequences, sources
from . import windows as win


def _ensure(path: str, make, env) -> None:
    """Rank 0 makes ``path`` with ``make()`` (a :class:`~hpcvsr.data.sources.Built`) if it is missing."""
    if env.is_root and not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        make().write(path)
    env.barrier()


def _split(path: str, var: str, n: int, val_fraction: float) -> tuple[bl.Segment, bl.Segment]:
    try:
        (a, b), (c, e) = win.split_train_val(n, val_fraction)
    except ValueError as exc:
        raise UserError(f"{path}:{var}: {exc}") from None
    return bl.Segment(path, var, a, b, "train"), bl.Segment(path, var, c, e, "val")


def segments(cfg, env, data_dir: str, kind) -> tuple[list, list, list]:
    """(train, val, test) lists of segments; ``kind`` is the pipeline kind (for the window length)."""
    d = cfg.data
    train_files: list[tuple[str, str, int]] = []  # (path, var, frames used for training and validation)
    if d.source in sources.GENERATED:
        var = sources.generated_var(d.source, d.var)
        if d.test_seed in d.seeds:
            raise UserError(f"data.test_seed {d.test_seed} is also a training seed; the held-out sequence must be unseen")
        paths = {}
        for seed in list(d.seeds) + [d.test_seed]:
            paths[seed] = os.path.join(data_dir, f"{d.source}_seed{seed}_{d.frames}x{d.size[0]}x{d.size[1]}.h5")
            _ensure(paths[seed], lambda s=seed: sources.generate(d.source, d.frames, d.size, s), env)
        train_files = [(paths[s], var, d.frames) for s in d.seeds]
        test = [bl.Segment(paths[d.test_seed], var, 0, d.frames, f"seed {d.test_seed}")]
    else:
        if not d.path:
            raise UserError(f"data.path must name the input when data.source is '{d.source}'")
        path, test_path, var = d.path, d.test_path, d.var
        if d.source == "video":
            path, var = os.path.join(data_dir, "video.h5"), "y"
            _ensure(path, lambda: sources.video(d.path), env)
            if d.test_path:
                test_path = os.path.join(data_dir, "video_test.h5")
                _ensure(test_path, lambda: sources.video(d.test_path), env)
        n = len(sequences.Archive(path, var))
        if test_path:
            test = [bl.Segment(test_path, var, 0, len(sequences.Archive(test_path, var)), "held-out file")]
            train_files = [(path, var, n)]
        else:  # hold out the trailing frames of the one file
            (_, cut), _ = win.split_train_val(n, d.val_fraction)
            test = [bl.Segment(path, var, cut, n, "held-out tail")]
            train_files = [(path, var, cut)]
    train, val = [], []
    for path, var, n in train_files:
        t, v = _split(path, var, n, d.val_fraction)
        train.append(t)
        val.append(v)
    need = kind.window(cfg.windows.size)
    for s in train + val + test:
        if s.n < max(need, env.world):
            raise UserError(f"{s.path}:{s.var} {s.name} has {s.n} frames; at least {max(need, env.world)} are needed "
                            f"(a {need}-frame window and one frame per rank)")
    return train, val, test


def normaliser(cfg, env, train: list, reads: list | None = None) -> bl.Normaliser:
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


def load_blocks(segs: list, cfg, env, norm: bl.Normaliser, halo: int, reads: list | None = None) -> list:
    g = cfg.degrade
    return [bl.read_block(s, env.world, env.rank, halo, norm, g.scale, g.method, sigma=g.blur_sigma, pad=cfg.windows.pad,
                          device=env.device, reads=reads) for s in segs]
