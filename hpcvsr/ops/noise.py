"""Counter-based Gaussian noise: a value is a function of where it lies, not of the order it is drawn in.

An ensemble member's noise at a fine pixel depends only on (seed, member, channel, global frame,
global row, global column): each coordinate is folded into a 64-bit key with the SplitMix64
finaliser (Steele, Lea and Flood 2014, the mixer of Java's SplittableRandom), whose top 24 bits
give a uniform number in (0, 1) and its normal quantile the value. Any rank, tile or batch that
computes a pixel draws the same number for it, so ensembles do not depend on how frames are spread
over ranks or how frames are cut into tiles, and a periodic axis reads the same noise across its seam.
Integer arithmetic wraps modulo 2^64 (two's complement int64 in torch), the same on every device.
"""

from __future__ import annotations

import torch

_M1 = 0xBF58476D1CE4E5B9 - (1 << 64)  # SplitMix64's multipliers as signed int64
_M2 = 0x94D049BB133111EB - (1 << 64)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # the increment between keys


def _shift(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch shifts signed integers arithmetically)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def mix(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser of int64 keys (bijective on 64 bits)."""
    z = (z ^ _shift(z, 30)) * _M1
    z = (z ^ _shift(z, 27)) * _M2
    return z ^ _shift(z, 31)


def fold(key: torch.Tensor, value) -> torch.Tensor:
    """The key after one more coordinate (broadcasting): mix(key + golden * (value + 1))."""
    return mix(key + (torch.as_tensor(value, dtype=torch.int64, device=key.device) + 1) * _GOLDEN)


def normal(seed: int, member: int, channels: int, frames, rows, cols, device=None) -> torch.Tensor:
    """Standard normal float32 noise (len(frames), channels, len(rows), len(cols)) of one member:
    ``frames``, ``rows`` and ``cols`` are global indices (sequences of int), the value at each
    (frame, channel, row, col) the same however the indices are grouped.

    >>> a = normal(1, 0, 2, [3, 4], range(5), range(6))
    >>> b = normal(1, 0, 2, [4], [2, 3], [5])
    >>> bool(a[1, :, 2:4, 5:6].eq(b).all()), tuple(a.shape)
    (True, (2, 2, 5, 6))
    """
    def ints(v):
        return torch.as_tensor(list(v) if not isinstance(v, torch.Tensor) else v, dtype=torch.int64, device=device)

    key = fold(fold(torch.tensor(0, dtype=torch.int64, device=device), seed), member)
    key = fold(key, ints(range(channels))[None, :, None, None])
    key = fold(key, ints(frames)[:, None, None, None])
    key = fold(key, ints(rows)[None, None, :, None])
    key = fold(key, ints(cols)[None, None, None, :])
    u = (_shift(key, 40).double() + 0.5) / float(1 << 24)  # (0, 1), never 0 or 1
    return torch.special.ndtri(u).float()


def fields(seed: int, members: int, channels: int, frames, rows, cols, device=None) -> torch.Tensor:
    """(len(frames), members, channels, len(rows), len(cols)) noise of members 0..``members`` - 1 (:func:`normal`)."""
    return torch.stack([normal(seed, m, channels, frames, rows, cols, device=device) for m in range(members)], 1)
