"""Moving Shepp-Logan phantom sequences: ellipses drifting, rotating and breathing smoothly."""

from __future__ import annotations

import numpy as np

# (intensity, a, b, x0, y0, phi degrees): the modified Shepp-Logan phantom (Toft)
ELLIPSES = np.array([
    [1.0, 0.69, 0.92, 0.0, 0.0, 0],
    [-0.8, 0.6624, 0.874, 0.0, -0.0184, 0],
    [-0.2, 0.11, 0.31, 0.22, 0.0, -18],
    [-0.2, 0.16, 0.41, -0.22, 0.0, 18],
    [0.1, 0.21, 0.25, 0.0, 0.35, 0],
    [0.1, 0.046, 0.046, 0.0, 0.1, 0],
    [0.1, 0.046, 0.046, 0.0, -0.1, 0],
    [0.1, 0.046, 0.023, -0.08, -0.605, 0],
    [0.1, 0.023, 0.023, 0.0, -0.606, 0],
    [0.1, 0.023, 0.046, 0.06, -0.605, 0],
])


def render(ellipses: np.ndarray, size: tuple[int, int], supersample: int = 2) -> np.ndarray:
    h, w = size
    ys = (np.arange(h * supersample) + 0.5) / (h * supersample) * 2 - 1
    xs = (np.arange(w * supersample) + 0.5) / (w * supersample) * 2 - 1
    X, Y = np.meshgrid(xs, -ys)
    img = np.zeros_like(X)
    for val, a, b, x0, y0, phi in ellipses:
        c, s = np.cos(np.radians(phi)), np.sin(np.radians(phi))
        xr, yr = (X - x0) * c + (Y - y0) * s, -(X - x0) * s + (Y - y0) * c
        img[(xr / a) ** 2 + (yr / b) ** 2 <= 1] += val
    return img.reshape(h, supersample, w, supersample).mean(axis=(1, 3))


def generate(frames: int = 100, size: tuple[int, int] = (128, 128), seed: int = 0, speed: float = 0.01) -> np.ndarray:
    """(T, H, W) float32 sequence; every ellipse follows its own smooth random trajectory."""
    rng = np.random.default_rng(seed)
    n = len(ELLIPSES)
    freq = rng.uniform(0.5, 2.0, (n, 4)) * 2 * np.pi / max(frames, 1)
    phase = rng.uniform(0, 2 * np.pi, (n, 4))
    amp = np.array([speed * 8, speed * 8, 0.15, 20.0])  # dx, dy, relative axis change, rotation (deg)
    amp_rows = np.tile(amp, (n, 1))
    amp_rows[:2] *= 0.25  # the outer skull moves less
    out = np.empty((frames, *size), np.float32)
    for t in range(frames):
        d = amp_rows * np.sin(freq * t + phase)
        e = ELLIPSES.copy()
        e[:, 3] += d[:, 0]
        e[:, 4] += d[:, 1]
        e[:, 1] *= 1 + d[:, 2]
        e[:, 2] *= 1 - d[:, 2]
        e[:, 5] += d[:, 3]
        out[t] = render(e, size)
    return out
