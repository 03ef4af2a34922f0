"""The docs that are generated or measured: the configuration reference matches the dataclasses, the
README stays a front page."""

import os

from hpcvsr.report import configref

from .conftest import ROOT


def test_configuration_reference_is_generated_from_the_dataclasses():
    with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
        committed = f.read()
    assert committed == configref.reference(), "regenerate it: python -m hpcvsr.report.configref > docs/configuration.md"
    for key in ("`data.path`", "`train3d.centres`", "`infer.block_frames`", "`data.static.vars`", "`condition.time_features`"):
        assert key in committed


def test_readme_is_a_front_page():
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = f.read().splitlines()
    assert len(lines) <= 200
    assert sum(line.startswith(".venv/bin/") or line.startswith("python3 -m venv") for line in lines) == 2  # the two Quickstart commands
