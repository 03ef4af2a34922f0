"""The configuration reference (docs/configuration.md), generated from the config dataclasses.

    python -m hpcvsr.report.configref > docs/configuration.md

Each key's type, default and meaning come from :mod:`hpcvsr.pipeline.config` itself (the comment on
its line), so the page cannot drift from the code; a test compares the committed page with this output.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing

from hpcvsr.pipeline import config as config_mod

HEADER = """# Configuration reference

Generated from `hpcvsr/pipeline/config.py` by `python -m hpcvsr.report.configref`; do not edit by hand.
A YAML file (or a packaged preset: `hpcvsr configs`) sets any of these keys, and `--set section.key=value`
overrides them; an unknown key or a value of the wrong type is one error naming the key. See
[presets](presets.md) for how the presets are meant to be used.
"""


def _comments(cls) -> dict:
    """{field: the comment on its line} from the class's source."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        found = re.match(r"\s+(\w+):[^#]*#\s?(.*)$", line)
        if found:
            out[found.group(1)] = found.group(2).strip()
    return out


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def _rows(cls, prefix: str, value=None) -> tuple[list, list]:
    """(table rows of cls's plain fields, (prefix, dataclass, its default) of its nested sections); ``value``:
    the section's default as the configuration holds it (a section's defaults may differ from its class's:
    train3d's epochs are not train2d's)."""
    hints, notes = typing.get_type_hints(cls), _comments(cls)
    rows, nested = [], []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            nested.append((prefix + f.name, tp, getattr(value, f.name) if value is not None else None))
            continue
        default = getattr(value, f.name) if value is not None else _default(f)
        shown = f"`{default!r}`" if not isinstance(default, str) else (f"`{default}`" if default else "`''`")
        rows.append(f"| `{prefix}{f.name}` | {_cell(config_mod._type_name(tp))} | {_cell(shown)} | {_cell(notes.get(f.name, ''))} |")
    return rows, nested


def reference() -> str:
    parts = [HEADER]
    top, sections = _rows(config_mod.Config, "", config_mod.Config())
    parts += ["\n## Top level\n", "| key | type | default | meaning |", "|---|---|---|---|", *top]
    while sections:
        name, cls, value = sections.pop(0)
        rows, nested = _rows(cls, name + ".", value)
        parts += [f"\n## `{name}`\n", "| key | type | default | meaning |", "|---|---|---|---|", *rows]
        sections = nested + sections
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
