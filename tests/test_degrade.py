import numpy as np
import pytest
import torch

from hpcvsr.errors import UserError
from hpcvsr.ops import degrade as dg


def test_resize_matrix_rows_sum_to_one_and_symmetric_boundary():
    m = dg.resize_matrix(8, 4)
    assert np.allclose(m.sum(1), 1.0)
    # symmetric padding: a constant image stays constant, a ramp stays monotone
    x = torch.arange(8.0)[None, :].repeat(8, 1)
    y = dg.imresize(x.double(), (4, 4))
    assert torch.all(y[:, 1:] > y[:, :-1])


def test_imresize_matches_hand_computed_matlab_weights():
    # MATLAB: imresize(1:4 as a row, [1 2]) with antialiasing at scale 1/2: kernel width 8,
    # u = [1.5, 3.5]; weights of in-pixels for out-pixel 1 (1-based), computed by hand from
    # h(x) = 0.5 * cubic(0.5 x) at distances u - j, then mirrored at the border.
    cubic = lambda x: dg._cubic(np.asarray(x, float))  # noqa: E731
    d = 1.5 - np.arange(-2, 6)  # taps left..left+7 with left = floor(1.5 - 4) = -2 (1-based)
    w = 0.5 * cubic(0.5 * d)
    w /= w.sum()
    idx = np.array([-2, -1, 0, 1, 2, 3, 4, 5])  # 1-based; mirror: 0->1, -1->2, -2->3, 5->4
    mirrored = {-2: 3, -1: 2, 0: 1, 1: 1, 2: 2, 3: 3, 4: 4, 5: 4}
    expect = np.zeros(4)
    for i, wi in zip(idx, w):
        expect[mirrored[i] - 1] += wi
    assert np.allclose(dg.resize_matrix(4, 2)[0], expect)


def test_upscale_downscale_shapes_and_constants():
    x = torch.rand(3, 2, 24, 36, dtype=torch.float64)
    for s in (2, 3, 4):
        for m in dg.DEGRADATIONS:
            lr = dg.degrade(x, s, m)
            assert lr.shape == (3, 2, 24 // s, 36 // s)
        for m in dg.UPSCALERS:
            assert dg.upscale(lr, s, m).shape == (3, 2, 24 // s * s, 36 // s * s)
    c = torch.full((16, 16), 0.7, dtype=torch.float64)
    for m in dg.DEGRADATIONS:
        assert torch.allclose(dg.degrade(c, 2, m), torch.full((8, 8), 0.7, dtype=torch.float64))


def test_block_mean_conserves_mass_at_every_scale():
    x = torch.rand(5, 64, 64, dtype=torch.float64)
    for s in (2, 3, 4, 8):
        xs = x[..., : 64 // s * s, : 64 // s * s]
        lr = dg.block_mean(xs, s)
        assert torch.allclose(lr.sum(dim=(-2, -1)) * s * s, xs.sum(dim=(-2, -1)))


def test_point_sampling_keeps_exact_values():
    x = torch.rand(32, 32)
    assert torch.equal(dg.point_sample(x, 4), x[::4, ::4])


def test_blur_kernel_is_normalised_gaussian():
    k = dg.gaussian_kernel(1.6)
    assert k.shape == (13, 13) and abs(float(k.sum()) - 1) < 1e-12
    assert float(k[6, 6]) == float(k.max())


def test_not_divisible_is_a_user_error():
    with pytest.raises(UserError, match="not divisible by the scale 3"):
        dg.degrade(torch.rand(10, 10), 3)
