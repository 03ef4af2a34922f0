"""Networks. Every model is a plain ``nn.Module`` built from keyword arguments.

2D models map a low-resolution frame batch (N, 1, h, w) to (N, 1, s*h, s*w). 3D models map a
window batch (N, T, H, W) of consecutive frames to the centre frame (N, 1, H', W'); their
``input_space`` says whether the frames are high-resolution ('hr': 2D outputs or bicubic) or
low-resolution ('lr').
"""

from .fsrcnn import FSRCNN, ClimateFSRCNN
from .srcnn import SRCNN
from .vsr3d import SRNet3D, VSR3D

MODELS = {
    "srcnn": SRCNN,
    "fsrcnn": FSRCNN,
    "climate_fsrcnn": ClimateFSRCNN,
    "vsr3d": VSR3D,
    "srnet3d": SRNet3D,
}

MODELS_2D = ("srcnn", "fsrcnn", "climate_fsrcnn")
MODELS_3D = ("vsr3d", "srnet3d")


def build(name: str, scale: int, **kwargs):
    """Instantiate ``MODELS[name]`` with ``scale`` and the given keyword arguments."""
    from ..errors import UserError

    if name not in MODELS:
        raise UserError(f"unknown model '{name}' (choose from {', '.join(MODELS)})")
    try:
        return MODELS[name](scale=scale, **kwargs)
    except TypeError as exc:
        raise UserError(f"model '{name}': {exc}") from None
