"""Natural images: a folder of PNG/JPEG/BMP files or the images bundled with scikit-image.

Images are reduced to luma as MATLAB ``rgb2ycbcr`` does for uint8 input (Y in [16, 235],
rounded to integers), which is what the SRCNN / FSRCNN papers evaluate on.
"""

from __future__ import annotations

import os

import numpy as np

from hpcvsr.errors import UserError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# Colour images bundled with scikit-image (no download needed) used for pretraining.
SKIMAGE_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "cat", "camera", "moon",
                 "page", "text", "coins", "brick", "grass", "gravel")


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma of a uint8 (H, W, 3) image, as float64 in [16, 235] (rounded)."""
    rgb = rgb.astype(np.float64)
    y = 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0
    return np.round(y)


def to_luma(img: np.ndarray, name: str) -> np.ndarray:
    """uint8 grey or RGB(A) -> luma float64 in MATLAB's uint8 scale."""
    if img.dtype != np.uint8:
        raise UserError(f"{name}: expected an 8-bit image, got {img.dtype}")
    if img.ndim == 2:
        return img.astype(np.float64)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        return rgb_to_y(img[..., :3])
    raise UserError(f"{name}: unsupported image shape {img.shape}")


def list_folder(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise UserError(f"image folder not found: {folder}")
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(EXTENSIONS))
    if not files:
        raise UserError(f"no PNG/JPEG/BMP images in {folder}")
    return [os.path.join(folder, f) for f in files]


def read_image(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from None
    return to_luma(arr, path)


def load_luma(folder: str | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, luma) pairs from a folder, or from scikit-image's bundled images when None."""
    if folder:
        return [(os.path.splitext(os.path.basename(p))[0], read_image(p)) for p in list_folder(folder)]
    import skimage.data

    out = []
    for name in SKIMAGE_NAMES:
        fn = getattr(skimage.data, name, None)
        if fn is None:
            continue
        try:
            img = np.asarray(fn())
        except Exception:  # noqa: BLE001 - an image that needs a download is skipped
            continue
        if img.dtype != np.uint8:
            continue
        out.append((name, to_luma(img, name)))
    return out
