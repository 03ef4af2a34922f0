"""Pure index maths: rank blocks, halos, frame windows with end padding, patches and tiles.

Everything here is a function of integers (and numpy arrays of them): no I/O, no torch, no
global state, so it is tested against hand-written arrays.
"""

from __future__ import annotations

import numpy as np


def block_range(n: int, ranks: int, rank: int) -> tuple[int, int]:
    """Contiguous block [start, stop) of ``n`` frames owned by ``rank`` of ``ranks``.

    Blocks are balanced to within one frame; the first ``n % ranks`` ranks get one more.

    >>> [block_range(10, 3, r) for r in range(3)]
    [(0, 4), (4, 7), (7, 10)]
    """
    if ranks < 1 or not 0 <= rank < ranks:
        raise ValueError(f"rank {rank} outside 0..{ranks - 1}")
    if n < ranks:
        raise ValueError(f"{n} frames cannot be shared by {ranks} ranks (at least one frame each)")
    base, extra = divmod(n, ranks)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def halo_range(start: int, stop: int, n: int, halo: int) -> tuple[int, int]:
    """Frames to read for a block [start, stop) whose windows reach ``halo`` frames each side.

    Clipped at the sequence ends, where padding supplies the missing frames instead.

    >>> halo_range(4, 7, 10, 2), halo_range(0, 4, 10, 2), halo_range(7, 10, 10, 2)
    ((2, 9), (0, 6), (5, 10))
    """
    return max(0, start - halo), min(n, stop + halo)


def pad_index(idx: np.ndarray, n: int, mode: str = "replicate") -> np.ndarray:
    """Map frame indices outside [0, n) back inside by ``replicate`` or ``reflect`` padding.

    >>> pad_index(np.array([-2, -1, 0, 9, 10, 11]), 10, "replicate").tolist()
    [0, 0, 0, 9, 9, 9]
    >>> pad_index(np.array([-2, -1, 0, 9, 10, 11]), 10, "reflect").tolist()
    [2, 1, 0, 9, 8, 7]
    """
    idx = np.asarray(idx)
    if mode == "replicate":
        return np.clip(idx, 0, n - 1)
    if mode == "reflect":
        if n == 1:
            return np.zeros_like(idx)
        period = 2 * (n - 1)
        m = np.mod(idx, period)
        return np.where(m < n, m, period - m)
    raise ValueError(f"unknown padding '{mode}'")


def window_indices(centres, n: int, size: int = 5, mode: str = "replicate") -> np.ndarray:
    """(len(centres), size) global frame indices of the windows centred on ``centres``.

    >>> window_indices([0, 1, 9], 10, 5).tolist()
    [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [7, 8, 9, 9, 9]]
    """
    half = size // 2
    c = np.asarray(centres, dtype=np.int64)[:, None]
    return pad_index(c + np.arange(-half, half + 1)[None, :], n, mode)


def local_window_indices(centres, n: int, read_start: int, read_stop: int, size: int = 5, mode: str = "replicate") -> np.ndarray:
    """Windows as indices into a buffer holding frames [read_start, read_stop) of the sequence.

    Raises if a window needs a frame the buffer does not hold (a halo too small).
    """
    g = window_indices(centres, n, size, mode)
    if g.size and (g.min() < read_start or g.max() >= read_stop):
        raise ValueError(f"windows need frames {g.min()}..{g.max()} but the buffer holds {read_start}..{read_stop - 1}")
    return g - read_start


def chunks(n_frames: int, chunk: int) -> list[tuple[int, int]]:
    """Global frame chunks [a, b) of ``chunk`` frames (the last may be shorter).

    >>> chunks(10, 4)
    [(0, 4), (4, 8), (8, 10)]
    """
    return [(a, min(n_frames, a + chunk)) for a in range(0, n_frames, chunk)]


def divisible_crop(n: int, scale: int, mode: str = "centre") -> tuple[int, int]:
    """[start, stop) of the largest run of ``n`` pixels divisible by ``scale``, centred or from the origin.

    The centred crop drops ``(n % scale) // 2`` pixels at the start and the rest at the end.

    >>> divisible_crop(49, 2), divisible_crop(49, 3), divisible_crop(49, 4, "origin"), divisible_crop(33, 4)
    ((0, 48), (0, 48), (0, 48), (0, 32))
    >>> divisible_crop(35, 4), divisible_crop(48, 2)
    ((1, 33), (0, 48))
    """
    cut = n % scale
    if n < scale:
        raise ValueError(f"{n} pixels are fewer than the scale {scale}")
    start = cut // 2 if mode == "centre" else 0
    return start, start + n - cut


def fit_patch(patch: int, height: int, width: int, scale: int, minimum: int = 8) -> int:
    """The training patch side: ``patch``, or the largest multiple of ``scale`` that fits the frames.

    Raises ValueError when even that is smaller than ``minimum``.

    >>> fit_patch(48, 32, 48, 2), fit_patch(48, 128, 128, 2), fit_patch(40, 33, 60, 4)
    (32, 48, 32)
    """
    side = min(patch, height, width)
    side -= side % scale
    if side < minimum:
        raise ValueError(f"frames of {height}x{width} are too small to train on (a patch of at least {minimum} pixels is needed)")
    return side


def split_train_val(n: int, val_fraction: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """Leading frames train, trailing ``val_fraction`` validate: ((0, a), (a, n)).

    >>> split_train_val(100, 0.2)
    ((0, 80), (80, 100))
    """
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_val < 1:
        raise ValueError(f"{n} frames leave nothing to train on with val_fraction={val_fraction}")
    return (0, n - n_val), (n - n_val, n)


def patch_origins(rng: np.random.Generator, count: int, frames: int, height: int, width: int, patch: int, scale: int) -> np.ndarray:
    """(count, 4) rows of (frame, y, x, flip) for random HR patches aligned to the LR grid.

    ``y`` and ``x`` are multiples of ``scale`` so the LR patch starts at (y / s, x / s); ``flip``
    in 0..3 (bit 0: horizontal, bit 1: vertical). ``frames``, ``height`` and ``width`` may be
    arrays of length ``count`` (one source frame size per sample).

    >>> bool(patch_origins(np.random.default_rng(0), 3, 10, 16, 16, 8, 2)[:, 1:3].max() <= 8)
    True
    """
    if np.any(np.asarray(height) < patch) or np.any(np.asarray(width) < patch):
        raise ValueError(f"patch {patch} larger than a frame of {np.min(height)}x{np.min(width)}")
    t = rng.integers(0, frames, count)
    y = rng.integers(0, (height - patch) // scale + 1, count) * scale
    x = rng.integers(0, (width - patch) // scale + 1, count) * scale
    f = rng.integers(0, 4, count)
    return np.stack([t, y, x, f], axis=1)


def patch_rows(start, size: int, flip) -> np.ndarray:
    """(k, size) pixel indices of k patches along one axis: ``start`` (k,) first pixels, read in
    reverse order where ``flip`` (k,) is true (a mirrored patch is the same pixels read backwards).

    >>> patch_rows(np.array([0, 4]), 3, np.array([False, True])).tolist()
    [[0, 1, 2], [6, 5, 4]]
    """
    ar = np.arange(size)
    return np.asarray(start)[:, None] + np.where(np.asarray(flip, dtype=bool)[:, None], ar[::-1], ar)


def tile_grid(length: int, tile: int, halo: int, align: int = 1) -> list[tuple[int, int, int, int]]:
    """Overlapping tiles covering [0, length) along one axis.

    Each entry is (read_start, read_stop, keep_start, keep_stop): read ``tile`` pixels plus
    ``halo`` on each side (clipped at the ends), and keep [keep_start, keep_stop) of the output,
    in coordinates of the whole axis. Kept ranges are disjoint and cover the axis. All bounds
    are multiples of ``align`` (the scale, so LR and HR tiles line up).

    >>> tile_grid(10, 4, 2)
    [(0, 6, 0, 4), (2, 10, 4, 8), (6, 10, 8, 10)]
    """
    if tile <= 0 or tile >= length:
        return [(0, length, 0, length)]
    if tile % align or halo % align or length % align:
        raise ValueError(f"tile {tile}, halo {halo} and length {length} must be multiples of {align}")
    out = []
    for start in range(0, length, tile):
        stop = min(length, start + tile)
        out.append((max(0, start - halo), min(length, stop + halo), start, stop))
    return out
