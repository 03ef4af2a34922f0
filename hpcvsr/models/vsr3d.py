"""3D-convolution video super-resolution over windows of consecutive frames."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hpcvsr.models.base import Network
from hpcvsr.models.layers import BicubicUp, he_init, prelu


def body_input(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Windows (N, T, H, W) as the 3D body's input (N, 1, T, H, W), in the dtype of its weights
    (bf16 after :func:`hpcvsr.models.lowering.lower`) and, for bf16, channels-last: the layout
    oneDNN's bf16 kernels and cuDNN's tensor-core kernels read without reordering."""
    y = x.unsqueeze(1).to(weight.dtype)
    return y.contiguous(memory_format=torch.channels_last_3d) if weight.dtype != torch.float32 else y


def _conv3d(cin, cout, k, pad):
    return nn.Conv3d(cin, cout, k, padding=pad, padding_mode="replicate")


class VSR3D(Network):
    """The climate study's 3D network (after 3DSRnet, Kim et al.).

    Input (N, T, H, W) high-resolution frames (T = ``frames``, 5 by default). Conv3d
    3x5x5 -> 32, 3x1x1 -> 8, 3x3x3 -> 8, 3x3x3 -> 8, 3x3x3 -> 32 ('same'), then
    (T - 1) / 2 layers 3x3x3 -> 32 'valid' (time T -> 1, each side 1 px smaller per layer), then a
    2D 5x5 conv -> 1 channel; PReLU after every layer, slopes initialised at 0. The output is the
    centre frame, ``T - 1`` px smaller in each dimension (4 px for 5 frames).

    ``residual``: add the centre input frame (the network learns a correction; the last PReLU
    is dropped). ``same_padding``: pad the valid layers spatially so no border is lost.

    ``frame_features``: the five 'same' layers see one frame each (kernels 1x5x5, 1x1x1, 1x3x3,
    1x3x3, 1x3x3), so a frame's features do not depend on the window it sits in, and only the
    (T - 1) / 2 valid layers combine frames. Overlapping windows then share work
    (:meth:`forward_shared`): each frame's features, and each valid layer's output for each run of
    three frames, are computed once instead of once per window (about 3x fewer multiply-adds per
    output frame at 5 frames).
    """

    input_space = "hr"

    def __init__(self, scale: int = 2, frames: int = 5, width: int = 32, residual: bool = False, same_padding: bool = False,
                 frame_features: bool = False):
        super().__init__()
        if frames < 3 or frames % 2 == 0:
            raise ValueError(f"frames must be odd and >= 3, got {frames}")
        self.frames, self.residual, self.same = frames, residual, same_padding
        self.n_valid = (frames - 1) // 2
        self.crop = 0 if same_padding else self.n_valid
        self.frame_features = bool(frame_features)
        kt = 1 if frame_features else 3
        spec = [(1, width, (kt, 5, 5)), (width, 8, (kt, 1, 1)), (8, 8, (kt, 3, 3)), (8, 8, (kt, 3, 3)), (8, width, (kt, 3, 3))]
        self.same_layers = nn.ModuleList(_conv3d(ci, co, k, "same") for ci, co, k in spec)
        self.same_acts = nn.ModuleList(prelu(0.0) for _ in spec)
        vpad = (0, 1, 1) if same_padding else 0
        self.valid_layers = nn.ModuleList(_conv3d(width, width, 3, vpad) for _ in range(self.n_valid))
        self.valid_acts = nn.ModuleList(prelu(0.0) for _ in range(self.n_valid))
        self.recon = nn.Conv2d(width, 1, 5, padding=2, padding_mode="replicate")
        self.recon_act = None if residual else prelu(0.0)
        he_init(self)
        if residual:
            nn.init.zeros_(self.recon.weight)
            nn.init.zeros_(self.recon.bias)

    def _features(self, y: torch.Tensor) -> torch.Tensor:
        for c, a in zip(self.same_layers, self.same_acts):
            y = a(c(y))
        return y

    def _output(self, y: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """Reconstruction of the last valid layer's output (N, width, 1, H', W') plus the residual."""
        y = self.recon(y[:, :, 0])
        if self.recon_act is not None:
            y = self.recon_act(y)
        y = y.to(centre.dtype)  # the correction leaves the body; the residual is added at the input's precision
        if self.residual:
            if self.crop:
                centre = centre[..., self.crop : -self.crop, self.crop : -self.crop]
            y = y + centre
        return y

    def forward(self, x: torch.Tensor, windows: torch.Tensor | None = None) -> torch.Tensor:
        """Windows (N, T, H, W) -> centre frames (N, 1, H', W'); with ``windows`` (k, T), ``x`` is
        frames (F, H, W) and the windows index into them (:meth:`forward_shared`)."""
        if windows is not None:
            return self.forward_shared(x, windows)
        y = self._features(body_input(x, self.same_layers[0].weight))  # (N, 1, T, H, W) in the weights' precision and layout
        for c, a in zip(self.valid_layers, self.valid_acts):
            y = a(c(y))
        return self._output(y, x[:, self.frames // 2 : self.frames // 2 + 1])

    def forward_shared(self, frames: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """The output for ``windows`` (k, T) of indices into ``frames`` (F, H, W), equal to
        ``forward(frames[windows])`` up to float rounding, with each frame's features and each
        valid layer's output per run of three frames computed once (needs ``frame_features``)."""
        if not self.frame_features:
            raise RuntimeError("forward_shared needs frame_features=True")  # programming error
        used, index = torch.unique(windows, return_inverse=True)  # index (k, T) into the used frames
        table = self._features(body_input(frames[used][:, None], self.same_layers[0].weight))[:, :, 0]  # (u, width, H, W)
        for c, a in zip(self.valid_layers, self.valid_acts):
            runs = index.unfold(1, 3, 1)  # (k, T', 3): the runs of three consecutive entries each window needs
            keys, index = torch.unique(runs.reshape(-1, 3), dim=0, return_inverse=True)
            index = index.reshape(runs.shape[:2])
            x = table[keys].transpose(1, 2)  # (n, width, 3, H, W)
            if x.dtype != torch.float32:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            table = a(c(x))[:, :, 0]
        return self._output(table[index[:, 0]][:, :, None], frames[windows[:, self.frames // 2]][:, None])


class SRNet3D(Network):
    """The published 3DSRnet layout: six 64-channel 3x3x3 layers at low resolution (the last
    (T - 1) / 2 valid in time), a 3x3 conv to scale^2 channels, pixel shuffle, plus the bicubic
    upscale of the centre frame. Input (N, T, h, w) low-resolution frames."""

    input_space = "lr"

    def __init__(self, scale: int = 2, frames: int = 5, width: int = 64, layers: int = 6):
        super().__init__()
        n_valid = (frames - 1) // 2
        if layers <= n_valid:
            raise ValueError("layers must exceed the time-reducing layers")
        self.frames, self.scale, self.crop = frames, scale, 0
        chans = [1] + [width] * layers
        self.body = nn.ModuleList(
            _conv3d(chans[i], chans[i + 1], 3, "same" if i < layers - n_valid else (0, 1, 1)) for i in range(layers)
        )
        self.tail = nn.Conv2d(width, scale * scale, 3, padding=1, padding_mode="replicate")
        he_init(self)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)
        self.up = BicubicUp(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = body_input(x, self.body[0].weight)
        for c in self.body:
            y = F.relu(c(y))
        y = F.pixel_shuffle(self.tail(y[:, :, 0]), self.scale).to(x.dtype)
        c = self.frames // 2
        return y + self.up(x[:, c : c + 1])
