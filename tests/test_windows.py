"""Index maths against hand-written arrays."""

import doctest

import numpy as np
import pytest

from hpcvsr import dist
from hpcvsr.ops import windows as win


def test_doctests():
    for mod in (win, dist):
        assert doctest.testmod(mod).failed == 0


def test_block_range_balanced_within_one_frame():
    assert [win.block_range(10, 4, r) for r in range(4)] == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert [win.block_range(7, 7, r) for r in range(7)] == [(i, i + 1) for i in range(7)]
    with pytest.raises(ValueError, match="cannot be shared"):
        win.block_range(3, 4, 0)


def test_halo_ranges_for_two_ranks():
    # 20 frames, 2 ranks, 5-frame windows: rank 0 owns 0..9 and reads 0..11; rank 1 owns 10..19, reads 8..19
    assert win.halo_range(*win.block_range(20, 2, 0), 20, 2) == (0, 12)
    assert win.halo_range(*win.block_range(20, 2, 1), 20, 2) == (8, 20)


def test_windows_at_both_ends_replicate_and_reflect():
    expect_rep = np.array([[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [6, 7, 8, 9, 9], [7, 8, 9, 9, 9]])
    assert np.array_equal(win.window_indices([0, 1, 2, 7, 8, 9], 10, 5, "replicate"), expect_rep)
    expect_ref = np.array([[2, 1, 0, 1, 2], [1, 0, 1, 2, 3], [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [6, 7, 8, 9, 8], [7, 8, 9, 8, 7]])
    assert np.array_equal(win.window_indices([0, 1, 2, 7, 8, 9], 10, 5, "reflect"), expect_ref)


def test_local_windows_stay_inside_the_halo_buffer():
    # rank 1 of 2 over 20 frames reads frames 8..19 (buffer index 0..11)
    local = win.local_window_indices([10, 19], 20, 8, 20, 5)
    assert local.tolist() == [[0, 1, 2, 3, 4], [9, 10, 11, 11, 11]]
    with pytest.raises(ValueError, match="buffer holds"):
        win.local_window_indices([10], 20, 9, 20, 5)


def test_tiles_cover_disjointly():
    tiles = win.tile_grid(100, 32, 8, align=4)
    assert tiles == [(0, 40, 0, 32), (24, 72, 32, 64), (56, 100, 64, 96), (88, 100, 96, 100)]
    kept = np.concatenate([np.arange(k0, k1) for _, _, k0, k1 in tiles])
    assert np.array_equal(kept, np.arange(100))


def test_train_val_split():
    assert win.split_train_val(120, 0.2) == ((0, 96), (96, 120))
