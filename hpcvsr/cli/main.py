"""``hpcvsr``: one command with a subcommand per job; ``python -m hpcvsr.NAME`` runs the same.

Each subcommand is the ``main(argv)`` of its module in :mod:`hpcvsr.cli`: it parses the arguments
and calls the library function that owns the job.
"""

from __future__ import annotations

import importlib
import sys

from hpcvsr.errors import cli

COMMANDS = {  # name: (module whose main(argv) runs it, what it does)
    "train": ("hpcvsr.cli.train", "train a pipeline (2D, then 3D) on one or many ranks"),
    "infer": ("hpcvsr.cli.infer", "super-resolve an archive into HDF5 or CF NetCDF, with metrics"),
    "data": ("hpcvsr.cli.data", "generate or convert frame sequences (swe, phantom, images, video, archive)"),
    "evaluate": ("hpcvsr.cli.evaluate", "evaluate 2D weights on images (Set5) against bicubic"),
    "bench": ("hpcvsr.cli.bench", "measure throughput against the machine's peak"),
    "scaling": ("hpcvsr.cli.scaling", "weak and strong scaling studies and the performance model"),
    "mapfig": ("hpcvsr.cli.mapfig", "maps of a CF output against its input"),
    "summarize": ("hpcvsr.cli.summarize", "tabulate the metrics of several run directories"),
    "pretrain": ("hpcvsr.cli.pretrain", "pretrain the bundled 2D weights on natural images"),
    "checkpoint": ("hpcvsr.cli.checkpoint", "convert files of the first format"),
    "configs": (None, "list the configuration presets shipped in the package (--config NAME)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: hpcvsr COMMAND [options]   (hpcvsr COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def list_configs() -> int:
    from hpcvsr.pipeline.config import presets, read_yaml

    for name, path in presets().items():
        data = read_yaml(path)
        print(f"{name:<20} pipeline {data.get('pipeline', '2d_3d')}, data {data.get('data', {}).get('source', 'swe')}  ({path})")
    return 0


@cli
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"hpcvsr: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    module = COMMANDS[name][0]
    if module is None:
        return list_configs()
    sys.argv[0] = f"hpcvsr {name}"
    return importlib.import_module(module).main(rest)


if __name__ == "__main__":
    sys.exit(main())
