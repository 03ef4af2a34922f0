"""``hpcvsr infer`` (``python -m hpcvsr.infer``): parse the arguments, run :func:`hpcvsr.inference.archive.infer`."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

from hpcvsr.errors import UserError, cli
from hpcvsr.inference import archive
from hpcvsr.inference.archive import Job, infer
from hpcvsr.pipeline import build
from hpcvsr.pipeline import config as config_mod


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="hpcvsr infer", description=archive.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="finished training run (holds model.pt)")
    p.add_argument("--input", required=True, nargs="+", help="archive: a NetCDF-3/-4 file with CF conventions, HDF5 or .mat, a Zarr store, "
                   "or many NetCDF files as one archive (several names, a quoted glob such as 'frames/*.nc', or a folder), ordered by "
                   "their time")
    p.add_argument("--allow-gaps", action="store_true", help="many files as one archive: accept a gap in the time series")
    p.add_argument("--time-origin", default="", help="the origin of time units that have none, e.g. --time-origin 2000-01-01 for "
                   "units 'days' (then read as 'days since 2000-01-01')")
    p.add_argument("--var", default="", help="variable to super-resolve (default: the one the run was trained on); "
                   "a model of several variables takes as many, comma-separated, e.g. --var u10,v10")
    p.add_argument("--output", required=True, help="output file: HDF5, CF NetCDF-4 if it ends in .nc (or with --netcdf), or a CF Zarr "
                   "store if it ends in .zarr")
    p.add_argument("--select", action="append", default=[], metavar="DIM=VALUE",
                   help="choose an extra dimension of a NetCDF variable by coordinate value, e.g. --select level=500 (repeatable)")
    p.add_argument("--isel", action="append", default=[], metavar="DIM=INDEX", help="... or by index, e.g. --isel member=0")
    p.add_argument("--degrade", action="store_true", help="input is high resolution: degrade, super-resolve, compare")
    p.add_argument("--reference", help="high-resolution archive to compare with")
    p.add_argument("--ref-var", default="", help="variable(s) in --reference (default: --var)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--consolidate", action="store_true", help="copy a virtual-dataset output into one plain file")
    p.add_argument("--netcdf", action="store_true", help="write --output as CF NetCDF-4 whatever its name")
    p.add_argument("--stats", help="write timings (frames/s, MB/s) as JSON here")
    p.add_argument("--members", type=int, default=0, metavar="N",
                   help="write N ensemble members of a run with a generative stage (pipeline 2d_3d_gen)")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="the members' noise: the same seed gives the same members (default 0)")
    p.add_argument("--fss-threshold", dest="fss_thresholds", type=float, action="append", default=[], metavar="X",
                   help="with --members and --degrade or --reference: score the members' fractions skill score of events above X "
                   "(physical units; repeatable)")
    config_mod.add_arguments(p)
    args = p.parse_args(argv)
    if args.seed is not None and not args.members:
        raise UserError(f"--seed {args.seed} chooses the ensemble members' noise: give --members N too")
    args.seed = args.seed or 0
    cfg = build.load_config(args.config, args.overrides)
    fields = {f.name for f in dataclasses.fields(Job)} - {"command"}
    args.input = args.input[0] if len(args.input) == 1 else tuple(args.input)
    given = {k: tuple(v) if isinstance(v, list) else (v or "" if k in ("reference", "stats") else v) for k, v in vars(args).items() if k in fields}
    job = Job(**given, command=f"python -m hpcvsr.infer {shlex.join(sys.argv[1:] if argv is None else argv)}")
    return infer(job, cfg)


if __name__ == "__main__":
    sys.exit(main())
