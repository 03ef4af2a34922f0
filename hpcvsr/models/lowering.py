"""The networks' fast inference forms, and the precision of training.

:func:`lower` turns a trained network into the form inference runs, in place:

* **Exact rewrites** of layers the convolution libraries run far below their peak. A k x k
  convolution with one output channel and replicate padding (the reconstruction layers) becomes a
  1x1 convolution to its k^2 taps, padded, and summed shifted in fp32 (:class:`TapConv2d`); a
  temporal-only convolution (kt x 1 x 1, the 3D network's second layer) becomes a 1x1x1
  convolution to its kt taps, summed shifted in time (:class:`TimeTapConv3d`). Replicate padding
  commutes with a 1x1 convolution (it copies pixels), so both give the same numbers up to float
  rounding (tested to 1e-5 of the data range) with one GEMM in place of a convolution that has
  one or a few output channels.
* **bf16** (``precision='bf16'``): the 3D bodies (:class:`~hpcvsr.models.vsr3d.VSR3D`,
  :class:`~hpcvsr.models.vsr3d.SRNet3D`) hold nearly all the multiply-adds. Their weights and
  activations are stored in bfloat16 and channels-last, so oneDNN runs them on the CPU's bf16 matrix instructions (AMX, AVX-512 BF16)
  and cuDNN on tensor cores on a GPU, without a cast per layer. Their input is cast on entry and
  their output (a small correction to the centre frame) back to fp32 before the residual is
  added, so the super-resolved field itself is never rounded to bf16's 8-bit mantissa. The 2D
  network (whose output is the whole field), the mixing and conditioning heads and the
  constraint layer stay in fp32.

Training (:func:`autocast`): fp32 master weights and optimizer state, the forward and backward
passes under bf16 autocast (the standard mixed-precision recipe), the loss in fp32.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from hpcvsr.models.vsr3d import VSR3D, SRNet3D

PRECISIONS = ("fp32", "bf16")


class TapConv2d(nn.Module):
    """A 'same' k x k :class:`~torch.nn.Conv2d` with one output channel and replicate padding, as a
    1x1 convolution to its k^2 taps plus a shifted sum (accumulated in fp32)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        k = conv.kernel_size[0]
        self.k = k
        self.taps = nn.Conv2d(conv.in_channels, k * k, 1, bias=False).to(conv.weight)
        with torch.no_grad():  # tap (i, j) of the kernel is output channel i k + j of the 1x1 convolution
            self.taps.weight.copy_(conv.weight[0].permute(1, 2, 0).reshape(k * k, conv.in_channels, 1, 1))
        self.register_buffer("bias", conv.bias.detach().float().clone() if conv.bias is not None else torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, (h, w) = self.k, x.shape[-2:]
        z = F.pad(self.taps(x).float(), (k // 2,) * 4, mode="replicate")
        y = z[:, 0:1, 0:h, 0:w] + self.bias.view(1, 1, 1, 1)
        for t in range(1, k * k):
            i, j = divmod(t, k)
            y = y + z[:, t : t + 1, i : i + h, j : j + w]
        return y.to(x.dtype)


class TimeTapConv3d(nn.Module):
    """A 'same' kt x 1 x 1 :class:`~torch.nn.Conv3d` with replicate padding, as a 1x1x1 convolution
    to its kt taps (kt x out channels) plus a sum shifted in time."""

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        kt, cout = conv.kernel_size[0], conv.out_channels
        self.kt, self.cout = kt, cout
        self.taps = nn.Conv3d(conv.in_channels, kt * cout, 1, bias=conv.bias is not None).to(conv.weight)
        with torch.no_grad():  # tap t of output channel o is channel t cout + o
            self.taps.weight.copy_(conv.weight[:, :, :, 0, 0].permute(2, 0, 1).reshape(kt * cout, conv.in_channels, 1, 1, 1))
            if conv.bias is not None:  # the bias once, on the first tap
                self.taps.bias.zero_()
                self.taps.bias[:cout] = conv.bias
        self.taps.to(memory_format=torch.channels_last_3d if conv.weight.dtype != torch.float32 else torch.contiguous_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kt, c, T = self.kt, self.cout, x.shape[2]
        z = F.pad(self.taps(x), (0, 0, 0, 0, kt // 2, kt // 2), mode="replicate")
        y = z[:, 0:c, 0:T]
        for t in range(1, kt):
            y = y + z[:, t * c : (t + 1) * c, t : t + T]
        return y


def _rewrite(module: nn.Module) -> None:
    for name, child in module.named_children():
        if (isinstance(child, nn.Conv2d) and child.out_channels == 1 and child.padding_mode == "replicate" and child.groups == 1
                and child.stride == (1, 1) and child.dilation == (1, 1) and child.kernel_size[0] == child.kernel_size[1] > 1
                and child.padding == (child.kernel_size[0] // 2,) * 2 and child.kernel_size[0] % 2):
            setattr(module, name, TapConv2d(child))
        elif (isinstance(child, nn.Conv3d) and child.kernel_size[1:] == (1, 1) and child.kernel_size[0] % 2 and child.kernel_size[0] > 1
              and child.padding == (child.kernel_size[0] // 2, 0, 0) and child.padding_mode == "replicate" and child.groups == 1
              and child.stride == (1, 1, 1) and child.dilation == (1, 1, 1)):
            setattr(module, name, TimeTapConv3d(child))
        else:
            _rewrite(child)


def lower(net: nn.Module, precision: str) -> nn.Module:
    """``net`` (in place) in its inference form: its 3D bodies in ``precision``, then the exact
    layer rewrites; returns ``net``.

    >>> m = lower(VSR3D(residual=True, same_padding=True), "bf16")
    >>> type(m.recon).__name__, m.same_layers[0].weight.dtype, m(torch.zeros(1, 5, 8, 8)).dtype
    ('TapConv2d', torch.bfloat16, torch.float32)
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        for body in (m for m in net.modules() if isinstance(m, (VSR3D, SRNet3D))):
            body.to(torch.bfloat16)
            for m in body.modules():
                if isinstance(m, nn.Conv3d):
                    m.to(memory_format=torch.channels_last_3d)
    _rewrite(net)
    return net


def autocast(device: torch.device, precision: str):
    """The training forward/backward context for ``precision`` on ``device``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
