"""What a network costs: multiply-adds, counted on a real forward pass.

Every convolution of the package's networks is counted with a forward hook: a ``Conv2d`` or
``Conv3d`` costs (output elements) x (input channels / groups) x (kernel volume); a
``ConvTranspose2d`` and the authors' deconvolution (:class:`~hpcvsr.models.layers.AuthorsDeconv`)
cost (input elements) x (output channels) x (kernel area). Pointwise layers (PReLU, padding,
additions) are memory traffic, not arithmetic, and are not counted. One multiply-add is two
floating-point operations.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from hpcvsr.models.layers import AuthorsDeconv


def _layer_macs(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(m, (nn.Conv2d, nn.Conv3d)):
        return out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
    if isinstance(m, nn.ConvTranspose2d):
        return inp.numel() * (m.out_channels // m.groups) * math.prod(m.kernel_size)
    if isinstance(m, AuthorsDeconv):
        return (inp.shape[0] * (inp.shape[-2] + 2) * (inp.shape[-1] + 2)) * m.weight.shape[0] * m.k * m.k  # padded by one pixel
    return 0


@torch.no_grad()
def macs(net: nn.Module, *inputs, call=None) -> int:
    """Multiply-adds of one forward pass of ``net`` on ``inputs``, or of whatever ``call()`` runs of
    ``net``'s layers (e.g. a shared pass over overlapping windows).

    >>> macs(nn.Conv2d(2, 4, 3, padding=1), torch.zeros(1, 2, 5, 5))  # 4 x 25 outputs x 2 x 9
    1800
    """
    total = [0]

    def hook(m, args, out):
        total[0] += _layer_macs(m, args[0], out)

    counted = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, AuthorsDeconv)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, counted)]
    try:
        call() if call is not None else net(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total[0]
