"""The CUDA path: the same networks on a GPU agree with the CPU, in fp32 and under bf16 autocast.

Marked ``gpu``; skipped with a reason where no CUDA device is present.
"""

import pytest
import torch

from hpcvsr.models import build

pytestmark = pytest.mark.gpu

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


@needs_cuda
@pytest.mark.parametrize("name, shape", [("climate_fsrcnn", (4, 1, 32, 32)), ("vsr3d", (4, 5, 64, 64))])
def test_cuda_matches_cpu(name, shape):
    torch.manual_seed(0)
    model = build(name, 2, **({"residual": True, "same_padding": True} if name == "vsr3d" else {})).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x = torch.rand(shape)
    with torch.no_grad():
        ref = model(x)
        gpu = model.cuda()(x.cuda())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(x.cuda())
    torch.cuda.synchronize()
    assert torch.allclose(gpu.cpu(), ref, rtol=1e-3, atol=1e-4)
    assert (half.float().cpu() - ref).abs().max() < 0.05 * ref.abs().max()


@needs_cuda
def test_cuda_fast_path_matches_cpu():
    """The inference form on a GPU: bf16 3D body (tensor cores), exact rewrites, shared per-frame features."""
    import copy

    from hpcvsr.models.lowering import lower

    torch.manual_seed(0)
    model = build("vsr3d", 2, residual=True, same_padding=True, frame_features=True).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    seq = torch.rand(12, 64, 64)
    windows = torch.stack([torch.arange(c, c + 5) for c in range(8)])
    with torch.no_grad():
        ref = model(seq[windows])
        for precision, tol in (("fp32", 1e-3), ("bf16", 0.05)):
            fast = lower(copy.deepcopy(model).cuda(), precision)
            out = fast.forward_shared(seq.cuda(), windows.cuda())
            torch.cuda.synchronize()
            assert out.dtype == torch.float32
            assert (out.cpu() - ref).abs().max() <= tol * max(1.0, float(ref.abs().max())), precision
