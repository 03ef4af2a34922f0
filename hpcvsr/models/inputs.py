"""How a network reads samples of buffer frames: the one layout rule shared by training and inference."""

from __future__ import annotations

import torch


def model_input(x: torch.Tensor) -> torch.Tensor:
    """What a network reads from samples of buffer frames (N, window, C, h, w) of C variables:
    a 2D network (window 1) (N, C, h, w); a 3D network (N, window, h, w) for one variable and
    (N, window, C, h, w) for several (:class:`hpcvsr.models.variables.Variables`)."""
    if x.shape[1] == 1:
        return x[:, 0]
    return x[:, :, 0] if x.shape[2] == 1 else x
