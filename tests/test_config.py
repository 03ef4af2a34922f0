import glob
import os

import pytest

from hpcvsr.errors import UserError
from hpcvsr.pipeline import config
from hpcvsr.pipeline.build import load_config

from .conftest import ROOT


def test_defaults_are_valid_and_overrides_typed():
    cfg = load_config(None, ["train2d.lr=1e-4", "data.size=[64, 64]", "degrade.method=point"])
    assert cfg.train2d.lr == 1e-4 and cfg.data.size == [64, 64] and cfg.degrade.method == "point"


@pytest.mark.parametrize(
    "text,expect",
    [
        ("train2d: {foo: 1}\n", "unknown key 'train2d.foo'"),
        ("train2d: {epochs: two}\n", "'train2d.epochs' must be an integer"),
        ("degrade: {scale: 5}\n", "'degrade.scale' must be one of"),
        ("nonsense: 1\n", "unknown key 'nonsense'"),
        ("- a\n- b\n", "top level must be a mapping"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path, text, expect):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as e:
        load_config(str(f))
    assert expect in str(e.value) and str(f) in str(e.value)


def test_bad_override_names_key():
    with pytest.raises(UserError, match="unknown key 'data.nope'"):
        load_config(None, ["data.nope=3"])
    with pytest.raises(UserError, match="section.key=value"):
        load_config(None, ["data.size"])


def test_dump_round_trips(tmp_path):
    cfg = load_config(None, ["pipeline=3d", "model2d.lr_mult={feature: 0.1}"])
    out = tmp_path / "resolved.yaml"
    config.dump(cfg, str(out))
    again = load_config(str(out))
    assert again == cfg


def test_every_config_in_configs_and_jobs_parses():
    files = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
    assert files, "configs/ is empty"
    for f in files:
        load_config(f)
    # every config a job script names exists and parses; every job passes only --config and overrides
    import re

    used = set()
    for job in glob.glob(os.path.join(ROOT, "jobs", "*")):
        text = open(job).read()
        used |= set(re.findall(r"configs/[\w.-]+\.yaml", text))
        for call in re.findall(r"python -m hpcvsr\.(?:train|infer)([^\n&]*)", text):
            flags = set(re.findall(r"--[\w-]+", call))
            assert flags <= {"--config", "--run-dir", "--input", "--var", "--output", "--degrade", "--reference", "--set"}, (job, flags)
    assert used, "no job script names a config"
    for path in used:
        load_config(os.path.join(ROOT, path))


def test_pipeline_kinds_have_one_owner():
    """Each pipeline-kind string appears only in the owning table (kinds.py) and config (its default); config takes its
    choices from the table."""
    import re

    from hpcvsr.pipeline import kinds

    assert config.CHOICES["pipeline"] == tuple(kinds.KINDS)
    pkg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hpcvsr")
    for name in kinds.KINDS:
        pattern = re.compile(r"""["']""" + re.escape(name) + r"""["']""")
        owners = [os.path.relpath(os.path.join(d, f), pkg) for d, _, files in os.walk(pkg) for f in files
                  if f.endswith(".py") and pattern.search(open(os.path.join(d, f)).read())]
        # io/checkpoint.py: the frozen names of the first file format, converted by upgrade
    assert set(owners) <= {"pipeline/kinds.py", "pipeline/config.py", "io/checkpoint.py"} and "pipeline/kinds.py" in owners, (name, owners)


@pytest.mark.parametrize("override, fragment", [("data.source=images", "must be one of"), ("data.swe_steps_per_frame=3", "unknown key")])
def test_removed_settings_are_rejected(override, fragment):
    with pytest.raises(UserError, match=fragment):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["degrade.method=paired", "degrade.method=paired_point", "data.lr_var=h"])
def test_pair_settings_without_a_coarse_run_are_refused(override):
    with pytest.raises(UserError, match="need data.lr_path"):
        load_config(None, [override])
