"""Batch assembly: the vectorised gather equals cutting the patches one by one."""

import numpy as np
import pytest
import torch

from hpcvsr.data.blocks import Block, Segment
from hpcvsr.models.inputs import model_input
from hpcvsr.ops import degrade as dg
from hpcvsr.training.patches import PatchTask


def one_by_one(task: PatchTask, origins: np.ndarray):
    """The reference: each sample cut, flipped and stacked on its own."""
    xs, ys, ts = [], [], []
    p, s, c = task.patch, task.scale, task.crop
    for bi, t, y, x, flip in origins.tolist():
        b = task.train[bi]
        idx = b.window_index([t], task.window)[0]
        buf = b.buffer(task.source)
        xi = buf[idx, :, y // s : (y + p) // s, x // s : (x + p) // s] if task.source == "lr" else buf[idx, :, y : y + p, x : x + p]
        yi = b.target((t - b.read[0], slice(None), slice(y + c, y + p - c), slice(x + c, x + p - c)))
        dims = [d for d, bit in ((-1, 1), (-2, 2)) if flip & bit]
        if dims:
            xi, yi = xi.flip(dims), yi.flip(dims)
        xs.append(xi)
        ys.append(yi)
        if b.times is not None:
            ts.append(b.times[torch.as_tensor(idx)])
    return model_input(torch.stack(xs)), torch.stack(ys), torch.stack(ts) if ts else None


def _block(seed: int, n: int, own: tuple, read: tuple, channels: int, size: tuple, missing: bool, times: bool) -> Block:
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand((read[1] - read[0], channels, *size), generator=g)
    mask = torch.rand(hr.shape, generator=g) > 0.1 if missing else None
    b = Block(Segment("(memory)", f"b{seed}", 0, n, f"b{seed}"), own, read, hr, dg.degrade(hr, 2, "bicubic"), mask=mask,
              times=torch.rand((len(hr), 4), generator=g) if times else None)
    b.bicubic = dg.upscale(b.lr, 2)
    b.sr2d = b.bicubic + 0.01
    return b


def test_vectorised_batch_equals_one_by_one():
    for channels, missing, times in ((1, False, False), (3, True, True)):
        blocks = [_block(1, 20, (2, 12), (0, 14), channels, (24, 32), missing, times),
                  _block(2, 9, (0, 9), (0, 9), channels, (24, 32), missing, times)]
        for source, window, crop in (("lr", 1, 0), ("sr2d", 5, 0), ("bicubic", 5, 2), ("lr", 3, 0)):
            task = PatchTask(train=blocks, val=[], source=source, window=window, crop=crop, scale=2, patch=16, flips=True)
            origins = task.sample(np.random.default_rng(window + crop), 37)
            assert len(np.unique(origins[:, 0])) == 2 and len(np.unique(origins[:, 4])) == 4  # both blocks, every flip
            x, y, where = task.batch(origins)
            rx, ry, rt = one_by_one(task, origins)
            assert torch.equal(x, rx)
            assert torch.equal(torch.nan_to_num(y, nan=-1.0), torch.nan_to_num(ry, nan=-1.0))
            assert bool(torch.isnan(y).any()) == missing
            assert (where.times is None) == (rt is None) and (rt is None or torch.equal(where.times, rt))
            assert torch.equal(where.rows, torch.as_tensor(origins[:, 2])) and torch.equal(where.cols, torch.as_tensor(origins[:, 3]))


def test_clip_batches_share_frames_and_give_the_windows_outputs():
    """centres=K: every K samples are consecutive centres at one place; the batch holds each clip's
    frames once, and the network's shared pass equals running every window on its own."""
    from hpcvsr.models.vsr3d import VSR3D

    blocks = [_block(1, 20, (2, 12), (0, 14), 1, (24, 32), False, False), _block(2, 9, (0, 9), (0, 9), 1, (24, 32), False, False)]
    plain = PatchTask(train=blocks, val=[], source="sr2d", window=5, crop=0, scale=2, patch=16, flips=True)
    clips = PatchTask(train=blocks, val=[], source="sr2d", window=5, crop=0, scale=2, patch=16, flips=True, centres=4)
    origins = clips.sample(np.random.default_rng(3), 24)
    groups = origins.reshape(6, 4, 5)
    assert (groups[:, :, [0, 2, 3, 4]] == groups[:, :1, [0, 2, 3, 4]]).all()  # one block, place and flip per clip
    assert (np.diff(groups[:, :, 1], axis=1) >= 0).all()  # consecutive centres (repeated only at a block's end)
    for (bi, t) in origins[:, :2].tolist():
        assert blocks[bi].own[0] <= t < blocks[bi].own[1]
    (frames, windows), y, where = clips.batch(origins)
    x_ref, y_ref, _ = plain.batch(origins)
    assert torch.equal(y, y_ref) and windows.shape == (24, 5)
    assert len(frames) < 24 * 5 / 2  # each clip's frames once: at most 8 per clip of 4 windows
    assert torch.equal(frames[windows], x_ref)  # the windows are the same frames
    torch.manual_seed(0)
    net = VSR3D(residual=True, same_padding=True, frame_features=True)
    torch.nn.init.normal_(net.recon.weight, std=0.1)
    with torch.no_grad():
        assert (net(frames, windows) - net(x_ref)).abs().max() <= 1e-5


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_training_with_clips_and_bf16_runs_and_logs_when_clips_do_not_apply(tmp_path):
    """train3d.centres with train3d.precision=bf16 trains end to end; a 3D network that cannot share
    windows (several variables) trains independent windows and the log says so."""
    import json

    from .conftest import TINY, run_cli

    small = ["--set", "data.frames=24", "--set", "data.size=[32,32]", "--set", "train3d.centres=4", "--set", "train3d.precision=bf16"]
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "clips"), *TINY, *small)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((tmp_path / "clips" / "metrics.json").read_text())
    assert m["history"]["2d_3d"][-1]["epoch"] == 1 and m["metrics"]["test"]["2d_3d"]["psnr"] > m["metrics"]["test"]["bicubic"]["psnr"]
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "vars"), *TINY, *small, "--set", "data.vars=[h,u]")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "needs a bare vsr3d with frame_features; training independent windows" in (tmp_path / "vars" / "logs" / "rank0.log").read_text()


def test_evaluation_with_shared_frames_equals_the_per_window_pass():
    """Whole-frame evaluation of a network with per-frame features feeds (frames, windows); the sums
    equal those of the same network run window by window."""
    from hpcvsr.models.vsr3d import VSR3D

    blocks = [_block(1, 20, (2, 12), (0, 14), 1, (24, 32), False, False), _block(2, 9, (0, 9), (0, 9), 1, (24, 32), False, False)]
    task = PatchTask(train=blocks, val=blocks, source="sr2d", window=5, crop=0, scale=2, patch=16, flips=True, eval_batch=3)
    torch.manual_seed(0)
    net = VSR3D(residual=True, same_padding=True, frame_features=True)
    torch.nn.init.normal_(net.recon.weight, std=0.1)

    from hpcvsr.models.base import Network

    class PerWindow(Network):  # the same network, saying it has no frame features: one stack per window
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

    with torch.no_grad():
        shared, per_window = task.evaluate(net, "val"), task.evaluate(PerWindow(), "val")
    from hpcvsr.ops.metrics import FIELDS

    items = FIELDS.index("items")
    assert shared.sums[items] == per_window.sums[items] == 10 + 9  # every frame of both blocks' own ranges
    assert torch.allclose(shared.sums, per_window.sums, rtol=1e-5, atol=1e-8)
    assert not torch.equal(per_window.sums, torch.zeros_like(per_window.sums))
