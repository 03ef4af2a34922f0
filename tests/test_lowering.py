"""The fast inference forms: exact layer rewrites, bf16 3D bodies, shared per-frame features, cost counts."""

import copy

import pytest
import torch
import torch.nn as nn

from hpcvsr.models import SRCNN, ClimateFSRCNN, Variables
from hpcvsr.models.cost import macs
from hpcvsr.models.lowering import TapConv2d, TimeTapConv3d, lower
from hpcvsr.models.vsr3d import VSR3D


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    """Equal to float rounding: within ``tol`` of the larger of 1 and the reference's magnitude."""
    return bool((a - b).abs().max() <= tol * max(1.0, float(b.abs().max())))


def _randomised(net: nn.Module, seed: int = 0) -> nn.Module:
    """``net`` with every weight drawn at random (zero-initialised heads would hide errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.05))
    return net.eval()


def test_rewritten_layers_equal_the_convolutions_they_replace():
    g = torch.Generator().manual_seed(1)
    conv2 = _randomised(nn.Conv2d(7, 1, 5, padding=2, padding_mode="replicate"))
    conv3 = _randomised(nn.Conv3d(6, 4, (3, 1, 1), padding=(1, 0, 0), padding_mode="replicate"))
    x2, x3 = torch.randn(3, 7, 11, 9, generator=g), torch.randn(2, 6, 5, 8, 10, generator=g)
    with torch.no_grad():
        assert close(TapConv2d(conv2)(x2), conv2(x2))
        assert close(TimeTapConv3d(conv3)(x3), conv3(x3))


@pytest.mark.parametrize("make, shape", [
    (lambda: ClimateFSRCNN(scale=2), (3, 1, 12, 10)),
    (lambda: ClimateFSRCNN(scale=4, mass_conserving=True), (2, 1, 8, 8)),
    (lambda: SRCNN(), (2, 1, 16, 12)),
    (lambda: VSR3D(residual=True, same_padding=True), (2, 5, 16, 14)),
    (lambda: VSR3D(residual=False, same_padding=False, frames=7), (2, 7, 16, 14)),
    (lambda: Variables(VSR3D(residual=True, same_padding=True), channels=2, shared=False), (2, 5, 2, 12, 12)),
])
def test_lowered_fp32_network_equals_the_trained_one(make, shape):
    net = _randomised(make())
    x = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    low = lower(copy.deepcopy(net), "fp32")
    assert any(isinstance(m, (TapConv2d, TimeTapConv3d)) for m in low.modules())  # something was rewritten
    with torch.no_grad():
        assert close(low(x), net(x))


def test_bf16_body_keeps_the_field_in_fp32_and_the_correction_close():
    net = _randomised(VSR3D(residual=True, same_padding=True))
    x = torch.rand(2, 5, 16, 16, generator=torch.Generator().manual_seed(3)) * 0.5 + 0.5  # normalised frames
    with torch.no_grad():  # a correction of about 1e-2, as a trained residual makes
        scale = 1e-2 / float((net(x) - x[:, 2:3]).abs().max())
        net.recon.weight.mul_(scale)
        net.recon.bias.mul_(scale)
    low = lower(copy.deepcopy(net), "bf16")
    assert low.same_layers[0].weight.dtype == torch.bfloat16 and low.same_layers[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        ref, out = net(x), low(x)
        centre = x[:, 2:3]
    assert out.dtype == torch.float32
    # only the correction carries bf16 error: far below rounding the field itself to bf16 (spacing 2^-8 near 1)
    err = float((out - ref).abs().max())
    assert err <= 0.05 * float((ref - centre).abs().max())
    assert err < 0.1 * float((ref.bfloat16().float() - ref).abs().max())
    with pytest.raises(ValueError, match="precision"):
        lower(net, "fp16")


@pytest.mark.parametrize("same_padding, frames", [(True, 5), (False, 5), (True, 7)])
def test_shared_windows_equal_window_by_window(same_padding, frames):
    """forward_shared over overlapping windows (replicated at the sequence ends, as inference builds
    them) equals running every window on its own, in fp32 and bf16."""
    net = _randomised(VSR3D(residual=True, same_padding=same_padding, frames=frames, frame_features=True))
    seq = torch.rand(11, 18, 16, generator=torch.Generator().manual_seed(4))
    h = frames // 2
    windows = torch.tensor([[min(max(c + d, 0), 10) for d in range(-h, h + 1)] for c in range(11)])
    for precision in ("fp32", "bf16"):
        low = lower(copy.deepcopy(net), precision)
        with torch.no_grad():
            assert close(low.forward_shared(seq, windows), low(seq[windows]))
    with pytest.raises(RuntimeError, match="frame_features"):
        VSR3D().forward_shared(seq, windows)


def test_cost_counts():
    # the study's 3D network: 5 x (3*25*32 + 3*32*8 + 2 * 27*8*8 + 27*8*32) + 3 * 27*32*32 + 27*32*32 + 25*32 per output pixel
    per_px = 5 * (2400 + 768 + 2 * 1728 + 6912) + 4 * 27648 + 800
    assert macs(VSR3D(residual=True, same_padding=True), torch.zeros(1, 5, 8, 8)) == per_px * 64 == 179072 * 64
    # per-frame features: 5 x (25*32 + 32*8 + 2 * 9*8*8 + 9*8*32) + the same valid layers and reconstruction
    ff = VSR3D(residual=True, same_padding=True, frame_features=True)
    assert macs(ff, torch.zeros(1, 5, 8, 8)) == (5 * (800 + 256 + 2 * 576 + 2304) + 4 * 27648 + 800) * 64
    # shared over a long run of windows: each frame's features and each run of three once, about 3x fewer than 179k
    seq, windows = torch.zeros(44, 8, 8), torch.stack([torch.arange(c, c + 5) for c in range(40)])
    per_frame = macs(_SharedCall(ff), seq, windows) / 40 / 64
    assert per_frame < 179072 / 2.8
    low = lower(VSR3D(residual=True, same_padding=True), "fp32")  # the rewrites do the same arithmetic
    assert macs(low, torch.zeros(1, 5, 8, 8)) == per_px * 64


class _SharedCall(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, frames, windows):
        return self.net.forward_shared(frames, windows)


def test_doctests():
    import doctest

    from hpcvsr.models import cost, lowering

    for mod in (cost, lowering):
        assert doctest.testmod(mod).failed == 0
