"""The README's main job, end to end (slow: about 2-3 minutes on 2 cores; run with -m slow).

``python -m hpcvsr.train`` on the embedded defaults must print the table the README's Quickstart
shows: the same methods and PSNR within 0.1 dB (the README's numbers come from one machine; other
CPUs differ by float round-off in training).
"""

import os

import pytest

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.slow


def _rows(text: str) -> dict:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) in (9, 10) and cells[0] in ("bicubic", "2d", "2d_3d") and cells[0] not in rows:
            rows[cells[0]] = float(cells[1])
    return rows


def test_quickstart_reproduces_the_readme_table(tmp_path):
    proc = run_cli("hpcvsr.train", "--run-dir", str(tmp_path / "run"), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    readme = _rows(open(os.path.join(ROOT, "README.md")).read().split("## Results")[0])
    printed = _rows(proc.stdout)
    assert set(readme) == set(printed) == {"bicubic", "2d", "2d_3d"}
    for method, psnr in readme.items():
        assert printed[method] == pytest.approx(psnr, abs=0.1), method
    assert printed["2d_3d"] > printed["2d"] > printed["bicubic"]
