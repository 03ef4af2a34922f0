"""What every hpcvsr network says of itself, so that no caller has to probe for it."""

from __future__ import annotations

from torch import nn


class Network(nn.Module):
    """The class defaults; a network or wrapper sets its own in ``__init__``.

    ``spec`` (set by :func:`hpcvsr.models.build` and :func:`hpcvsr.models.around`) is the
    description the network was built from, which its checkpoints store.
    """

    crop = 0  # the border its output lacks (high-resolution pixels each side)
    input_space = "lr"  # what it reads: 'lr' frames, or 'hr' frames (2D outputs or bicubic upscales)
    frame_features = False  # overlapping windows can share their frames' work (VSR3D.forward_shared)
    takes_where = False  # it reads where its samples lie (hpcvsr.models.conditioning.Where)
    spec: dict
