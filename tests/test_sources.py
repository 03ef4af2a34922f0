import h5py
import numpy as np
import pytest
import scipy.io

from hpcvsr.data import phantom, video
from hpcvsr.errors import UserError
from hpcvsr.io import sequences

from .conftest import run_cli


def test_phantom_moves_smoothly():
    seq = phantom.generate(frames=12, size=(64, 64), seed=0)
    assert seq.shape == (12, 64, 64) and seq.dtype == np.float32
    d = np.abs(np.diff(seq, axis=0)).mean(axis=(1, 2))
    assert np.all(d > 0) and d.max() < 0.1 * np.abs(seq).mean() * 10


def test_y4m_round_trip(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (4, 16, 24)).astype(np.float32)
    path = str(tmp_path / "clip.y4m")
    video.write_y4m(path, frames)
    back = video.read_y4m(path)
    assert np.array_equal(back, frames)
    assert np.array_equal(video.read_y4m(path, 1, 3), frames[1:3])


def test_raw_yuv(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (3, 8, 12)).astype(np.uint8)
    raw = b"".join(f.tobytes() + bytes(2 * 4 * 6) for f in frames)
    path = tmp_path / "clip.yuv"
    path.write_bytes(raw)
    assert np.array_equal(video.read_yuv(str(path), (8, 12)), frames.astype(np.float32))


def test_archives_read_only_requested_frames(tmp_path):
    data = np.random.default_rng(2).random((10, 6, 8)).astype(np.float32)
    h5 = str(tmp_path / "a.h5")
    sequences.write_sequence(h5, {"zeta": data})
    arc = sequences.Archive(h5, "zeta")
    assert len(arc) == 10 and np.array_equal(arc.read(3, 5), data[3:5])
    m5 = str(tmp_path / "a.mat")
    scipy.io.savemat(m5, {"zeta": data})
    assert np.array_equal(sequences.Archive(m5, "zeta").read(2, 4), data[2:4])
    # MATLAB v7.3 is HDF5 with reversed (column-major) dimensions and a 512-byte user block
    m73 = str(tmp_path / "b.mat")
    with h5py.File(m73, "w", userblock_size=512) as f:
        f["zeta"] = data.transpose(2, 1, 0)
    with open(m73, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file")
    assert np.array_equal(sequences.Archive(m73, "zeta").read(0, 10), data)


def test_netcdf4_archive(tmp_path):
    import netCDF4  # a core dependency
    data = np.random.default_rng(3).random((5, 4, 6)).astype(np.float32)
    path = str(tmp_path / "a.nc")
    with netCDF4.Dataset(path, "w") as ds:
        for n, s in zip(("time", "y", "x"), data.shape):
            ds.createDimension(n, s)
        ds.createVariable("zeta", "f4", ("time", "y", "x"))[:] = data
    assert np.array_equal(sequences.Archive(path, "zeta").read(1, 4), data[1:4])


def test_data_cli_swe_layout_and_speed(tmp_path):
    import time

    out = tmp_path / "swe.h5"
    t0 = time.time()
    proc = run_cli("hpcvsr.data", "swe", "--frames", "200", "--size", "128", "128", "--seed", "1", "--out", str(out), "--quiet")
    elapsed = time.time() - t0
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 60
    with h5py.File(out) as f:
        assert f["h"].shape == (200, 128, 128) and f["h"].dtype == np.float32
        assert f["h"].chunks == (1, 128, 128)
        assert f["h"].attrs["units"] == "m"
        assert f.attrs["source"] == "swe" and f.attrs["seed"] == 1 and f.attrs["dx"] > 0 and f.attrs["dt"] > 0
        assert set(f.keys()) == {"h", "u", "v", "vort"}


@pytest.mark.slow  # CI's second pass (.ci/run: pytest -m slow)
def test_data_cli_other_sources(tmp_path):
    assert run_cli("hpcvsr.data", "phantom", "--frames", "6", "--size", "32", "32", "--out", str(tmp_path / "p.h5")).returncode == 0
    clip = tmp_path / "c.y4m"
    video.write_y4m(str(clip), np.zeros((6, 16, 16)))
    assert run_cli("hpcvsr.data", "video", str(clip), "--out", str(tmp_path / "v.h5")).returncode == 0
    proc = run_cli("hpcvsr.data", "archive", str(tmp_path / "p.h5"), "--var", "phantom", "--start", "2", "--stop", "5", "--out", str(tmp_path / "a.h5"))
    assert proc.returncode == 0, proc.stderr
    with h5py.File(tmp_path / "a.h5") as f, h5py.File(tmp_path / "p.h5") as g:
        assert np.array_equal(f["phantom"][:], g["phantom"][2:5])
    proc = run_cli("hpcvsr.data", "images", "--size", "128", "128", "--out", str(tmp_path / "i.h5"))
    assert proc.returncode == 0, proc.stderr
    with h5py.File(tmp_path / "i.h5") as f:
        assert f["y"].shape[1:] == (128, 128) and f["y"].shape[0] >= 5


def test_archive_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        sequences.Archive(str(tmp_path / "none.h5"), "h")
    p = str(tmp_path / "x.h5")
    sequences.write_sequence(p, {"h": np.zeros((3, 4, 4))})
    with pytest.raises(UserError, match="no variable 'q'"):
        sequences.Archive(p, "q")
