"""Real video as luma frames: YUV4MPEG2 (.y4m), raw planar .yuv, or a folder of images."""

from __future__ import annotations

import os

import numpy as np

from hpcvsr.data import images
from hpcvsr.errors import UserError

_CHROMA = {"420": (2, 2), "422": (1, 2), "444": (1, 1), "mono": None}


def _chroma_bytes(tag: str, h: int, w: int) -> int:
    key = "mono" if tag.startswith("mono") else tag[:3] if tag[:3] in _CHROMA else "420"
    sub = _CHROMA[key]
    if sub is None:
        return 0
    sy, sx = sub
    return 2 * ((h + sy - 1) // sy) * ((w + sx - 1) // sx)


def read_y4m(path: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Luma of frames [start, stop) of an 8-bit YUV4MPEG2 file, float32 (T, H, W) in 0..255."""
    if not os.path.isfile(path):
        raise UserError(f"video not found: {path}")
    with open(path, "rb") as f:
        header = f.readline()
        if not header.startswith(b"YUV4MPEG2"):
            raise UserError(f"{path}: not a YUV4MPEG2 file (missing 'YUV4MPEG2' header)")
        fields = {t[:1]: t[1:] for t in header.decode("ascii", "replace").split()[1:]}
        try:
            w, h = int(fields["W"]), int(fields["H"])
        except (KeyError, ValueError):
            raise UserError(f"{path}: YUV4MPEG2 header lacks W/H") from None
        chroma = fields.get("C", "420")
        if chroma.endswith(("p10", "p12", "p16")):
            raise UserError(f"{path}: only 8-bit YUV4MPEG2 is supported (C{chroma})")
        frame_bytes = w * h + _chroma_bytes(chroma, h, w)
        body = f.tell()
        size = os.path.getsize(path)
        frames = []
        t = 0
        pos = body
        while pos < size and (stop is None or t < stop):
            f.seek(pos)
            line = f.readline()
            if not line.startswith(b"FRAME"):
                raise UserError(f"{path}: corrupt frame header at byte {pos}")
            data_at = f.tell()
            if data_at + frame_bytes > size:
                raise UserError(f"{path}: truncated frame {t}")
            if t >= start:
                y = np.frombuffer(f.read(w * h), np.uint8).reshape(h, w)
                frames.append(y.astype(np.float32))
            pos = data_at + frame_bytes
            t += 1
    if not frames:
        raise UserError(f"{path}: no frames in range {start}:{stop}")
    return np.stack(frames)


def read_yuv(path: str, size: tuple[int, int], chroma: str = "420", start: int = 0, stop: int | None = None) -> np.ndarray:
    """Luma of a raw planar 8-bit .yuv file of known (H, W)."""
    if not os.path.isfile(path):
        raise UserError(f"video not found: {path}")
    h, w = size
    frame_bytes = w * h + _chroma_bytes(chroma, h, w)
    total = os.path.getsize(path)
    if total % frame_bytes:
        raise UserError(f"{path}: size {total} bytes is not a whole number of {w}x{h} {chroma} frames")
    n = total // frame_bytes
    stop = n if stop is None else min(stop, n)
    mm = np.memmap(path, np.uint8, "r")
    out = [np.asarray(mm[t * frame_bytes : t * frame_bytes + w * h]).reshape(h, w).astype(np.float32) for t in range(start, stop)]
    if not out:
        raise UserError(f"{path}: no frames in range {start}:{stop}")
    return np.stack(out)


def read_folder(folder: str) -> np.ndarray:
    frames = [images.read_image(p) for p in images.list_folder(folder)]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise UserError(f"{folder}: frames have different sizes {sorted(shapes)}")
    return np.stack(frames).astype(np.float32)


def read_video(path: str, size: tuple[int, int] | None = None, start: int = 0, stop: int | None = None) -> np.ndarray:
    if os.path.isdir(path):
        return read_folder(path)[start:stop]
    if path.lower().endswith(".y4m"):
        return read_y4m(path, start, stop)
    if path.lower().endswith(".yuv"):
        if not size:
            raise UserError(f"{path}: raw .yuv needs its frame size (--size H W)")
        return read_yuv(path, size, start=start, stop=stop)
    raise UserError(f"{path}: unsupported video (use .y4m, .yuv or a folder of frames)")


def write_y4m(path: str, frames: np.ndarray, fps: int = 25) -> None:
    """Write uint8 luma frames as a 4:2:0 YUV4MPEG2 file (neutral chroma). For tests and export."""
    t, h, w = frames.shape
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        chroma = np.full(_chroma_bytes("420", h, w), 128, np.uint8).tobytes()
        for fr in np.clip(np.round(frames), 0, 255).astype(np.uint8):
            f.write(b"FRAME\n" + fr.tobytes() + chroma)
