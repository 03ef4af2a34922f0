"""Make a sequence file in hpcvsr's HDF5 layout from any data source.

    python -m hpcvsr.data swe --frames 200 --size 128 128 --seed 1 --out swe.h5
    python -m hpcvsr.data swe --frames 744 --size 64 96 --seed 1 --domain-seed 7 --topography 0.3 --forcing 0.2 \
        --out swe.nc --static-out orography.nc         (CF-1.8 NetCDF, hourly labels, a daily forcing)
    python -m hpcvsr.data swe --frames 200 --size 128 128 --seed 1 --out fine.nc --coarse-scale 4
                                                       (and fine_coarse4.nc: the same flow run on a 32 x 32 grid)
    python -m hpcvsr.data phantom --frames 100 --size 128 128 --out phantom.h5
    python -m hpcvsr.data images [--folder DIR] --size 256 256 --out images.h5
    python -m hpcvsr.data video clip.y4m --out clip.h5           (.y4m, .yuv with --size, folder)
    python -m hpcvsr.data archive run.nc --var zeta --start 0 --stop 500 --out part.h5   [--select level=500]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from hpcvsr.data import sources, swe
from hpcvsr.dist import StopFlag, Stopped
from hpcvsr.errors import UserError, cli
from hpcvsr.io.atomic import check_writable
from hpcvsr.pipeline.config import parse_pairs

# swe-only options: argparse dest -> SWEParams field; None when not given (SWEParams' default then)
SWE_OPTIONS = {"domain_seed": "domain_seed", "topography": "topography", "forcing": "forcing", "forcing_period": "forcing_period_frames",
               "interval_hours": "interval_hours", "start_date": "start_date", "output_every": "output_every", "k0": "k0"}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def add_swe_options(p: argparse.ArgumentParser) -> None:
    d = swe.SWEParams
    g = p.add_argument_group("swe: a place (bottom topography), a daily cycle, the flow's scales and frame interval")
    g.add_argument("--domain-seed", type=int, metavar="INT",
                   help=f"seed of the bottom and the forcing pattern, independent of --seed (default {d.domain_seed})")
    g.add_argument("--topography", type=float, metavar="FRACTION",
                   help=f"max |bottom height| as a fraction of the mean depth, in [0, 1); up to about 0.6 keeps water everywhere "
                        f"(default {d.topography:g}: flat bottom)")
    g.add_argument("--forcing", type=float, metavar="FRACTION",
                   help="periodic mass source: daily peak-to-trough swing of h as a fraction of the mean depth where the pattern is +-1 "
                        f"(default {d.forcing:g}: none; 0.2 is about a third of h's variance)")
    g.add_argument("--forcing-period", type=float, metavar="FRAMES", help=f"period of the forcing in frames (default {d.forcing_period_frames:g}: "
                                                                            "a day of hourly frames)")
    g.add_argument("--interval-hours", type=float, metavar="HOURS",
                   help=f"calendar hours a frame interval is labelled as (default {d.interval_hours:g}); with --start-date it only labels the .nc "
                        "time coordinate (an .h5 file has none) and sets the forcing's hour of day")
    g.add_argument("--start-date", metavar='"YYYY-MM-DD HH:MM:SS"',
                   help=f"calendar label of the first frame (default {d.start_date}): labels the .nc time coordinate and sets the forcing's hour of day")
    g.add_argument("--output-every", type=float, metavar="TURNOVERS",
                   help=f"model time between frames in eddy turnovers (default {d.output_every:g}); smaller: more strongly correlated frames")
    g.add_argument("--k0", type=float, metavar="CYCLES",
                   help=f"spectral peak of the initial vortices, cycles per domain (default {d.k0:g}); lower it with the grid size to keep "
                        "the eddies resolved on small frames")
    g.add_argument("--static-out", metavar="PATH.nc", help="also write the bottom height (orography) as a static CF NetCDF file; needs --topography > 0")
    g.add_argument("--coarse-scale", type=int, metavar="S",
                   help="also run the same flow on a grid S times coarser (S >= 2 dividing both sizes): it starts from the first frame "
                        "restricted by finite-volume means over the same bottom and forcing, and then drifts as a coarse model does")
    g.add_argument("--coarse-out", metavar="PATH", help="the coarse file of --coarse-scale (default: --out with _coarseS before the extension; "
                                                        ".nc: CF NetCDF, else the HDF5 layout)")


def swe_options(args) -> dict:
    """The swe-only options given on the command line, as SWEParams fields; an error for other sources."""
    given = {dest: getattr(args, dest) for dest in SWE_OPTIONS if getattr(args, dest) is not None}
    outputs = [_flag(d) for d in ("static_out", "coarse_scale", "coarse_out") if getattr(args, d) is not None]
    if args.source != "swe" and (given or outputs):
        flags = [_flag(d) for d in given] + outputs
        raise UserError(f"{', '.join(flags)}: only 'swe' takes these options, not '{args.source}'")
    return {SWE_OPTIONS[dest]: value for dest, value in given.items()}


def check_static_out(args, params: swe.SWEParams | None) -> None:
    """--static-out: a .nc path, writable, not --out, and a bottom to write."""
    if params is None or params.topography <= 0:
        raise UserError("--static-out writes the bottom height: it needs --topography > 0 (the bottom is flat without it)")
    if not sources.is_netcdf_out(args.static_out):
        raise UserError(f"--static-out writes NetCDF: give a .nc path, not {args.static_out}")
    if os.path.abspath(args.static_out) == os.path.abspath(args.out):
        raise UserError("--static-out and --out name the same file")
    check_writable(args.static_out, args.overwrite)


def coarse_path(out: str, scale: int) -> str:
    """Default coarse file of a pair: ``fine.nc`` -> ``fine_coarse2.nc``."""
    root, ext = os.path.splitext(out)
    return f"{root}_coarse{scale}{ext}"


def check_coarse_out(args, params: swe.SWEParams | None) -> None:
    """--coarse-scale / --coarse-out: a scale that fits the grid and a writable coarse file, not another output."""
    if args.coarse_scale is None:
        if args.coarse_out is not None:
            raise UserError("--coarse-out names the coarse file of a pair: it needs --coarse-scale")
        return
    if args.coarse_scale < 2:
        raise UserError(f"--coarse-scale must be an integer >= 2, got {args.coarse_scale}")
    try:
        swe.coarse_params(params, args.coarse_scale)
    except UserError as exc:
        raise UserError(f"--coarse-scale: {exc}") from None
    args.coarse_out = args.coarse_out or coarse_path(args.out, args.coarse_scale)
    for flag, other in (("--out", args.out), ("--static-out", args.static_out)):
        if other is not None and os.path.abspath(args.coarse_out) == os.path.abspath(other):
            raise UserError(f"--coarse-out and {flag} name the same file: {args.coarse_out}")
    check_writable(args.coarse_out, args.overwrite)


def _built(seq: swe.SWESequence, extra: dict) -> sources.Built:
    """A shallow-water sequence written as :func:`sources.generate` writes one, with ``extra`` attributes."""
    return sources.Built({"h": seq.h, "u": seq.u, "v": seq.v, "vort": seq.vort}, {**swe.attributes(seq), **extra}, swe.UNITS,
                         dataset=lambda history=None: swe.to_dataset(seq, history=history, extra=extra))


def build_pair(args, params: swe.SWEParams) -> tuple[sources.Built, sources.Built]:
    """The fine and coarse files of ``--coarse-scale``."""
    try:
        fine, coarse = swe.run_pair(params, args.frames, args.coarse_scale, progress=not args.quiet)
    except FloatingPointError as exc:  # the options asked for more than the solver can take
        raise UserError(f"swe: {exc}") from None
    fine_attrs, coarse_attrs = swe.pair_attributes(args.coarse_scale, args.out, args.coarse_out)
    return _built(fine, fine_attrs), _built(coarse, coarse_attrs)


def write_pair(args, pair: tuple[sources.Built, sources.Built], history: str) -> None:
    """Both files, each atomically; if the coarse one fails the fine one is removed, so the same command can run again."""
    fine, coarse = pair
    fine.write(args.out, overwrite=args.overwrite, history=history)
    try:
        coarse.write(args.coarse_out, overwrite=args.overwrite, history=history)
    except BaseException:
        os.remove(args.out)
        raise


def _shape(built: sources.Built) -> tuple:
    return tuple(next(iter(built.variables.values())).shape)


def build(args) -> sources.Built:
    if args.source in sources.GENERATED:
        return sources.generate(args.source, args.frames, args.size, args.seed, progress=not args.quiet, **args.swe_options)
    if args.source == "images":
        return sources.still_images(args.folder, args.size_given)
    if args.source == "video":
        return sources.video(args.input, args.size_given, args.start, args.stop)
    return sources.archive(args.input, args.var, args.start, args.stop, select=parse_pairs(args.select, "--select"),
                           isel=parse_pairs(args.isel, "--isel"))


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", choices=("swe", "phantom", "images", "video", "archive"))
    p.add_argument("input", nargs="?", help="video file/folder or archive file")
    p.add_argument("--out", required=True, help="output file: HDF5 layout; for swe, a .nc name writes CF-1.8 NetCDF-4 instead")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folder", help="image folder (default: scikit-image's bundled images)")
    p.add_argument("--var", default="h", help="archive variable")
    p.add_argument("--select", action="append", default=[], metavar="DIM=VALUE", help="NetCDF: an extra dimension by coordinate value")
    p.add_argument("--isel", action="append", default=[], metavar="DIM=INDEX", help="NetCDF: an extra dimension by index")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--stop", type=int)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_swe_options(p)
    args = p.parse_args(argv)
    args.size_given = args.size
    args.size = args.size or [128, 128]
    if args.source in ("video", "archive") and not args.input:
        raise UserError(f"'{args.source}' needs an input file")
    if args.frames < 1:
        raise UserError(f"--frames must be positive, got {args.frames}")
    if min(args.size) < 8:
        raise UserError(f"--size must be at least 8x8, got {args.size}")
    args.swe_options = swe_options(args)
    params = sources.swe_params(args.size, args.seed, **args.swe_options) if args.source == "swe" else None
    if args.static_out:
        check_static_out(args, params)
    check_writable(args.out, args.overwrite)  # refuse before any work is done
    check_coarse_out(args, params)
    history = shlex.join(["python", "-m", "hpcvsr.data", *(sys.argv[1:] if argv is None else argv)])
    stop = StopFlag().install()  # SIGTERM ends the job at once; the atomic writes leave no partial file
    try:
        t0 = time.time()
        if args.coarse_scale is None:
            built = build(args)
            built.write(args.out, overwrite=args.overwrite, history=history)
        else:
            built, coarse = build_pair(args, params)
            write_pair(args, (built, coarse), history)
        print(f"wrote {args.out}: {', '.join(built.variables)} of shape {_shape(built)} float32 in {time.time() - t0:.1f} s")
        if args.coarse_scale is not None:
            print(f"wrote {args.coarse_out}: {', '.join(coarse.variables)} of shape {_shape(coarse)} float32, "
                  f"the same flow on a grid {args.coarse_scale} times coarser")
        if args.static_out:
            sources.write_netcdf(swe.static_dataset(params, history=history), args.static_out, overwrite=args.overwrite)
            print(f"wrote {args.static_out}: orography of shape ({params.ny}, {params.nx})")
    except Stopped as exc:
        print(f"hpcvsr: stopped by signal {exc.name}; no file was left half-written (those reported above as written are complete)",
              file=sys.stderr, flush=True)
        return 128 + exc.signum
    finally:
        stop.restore()
    return 0


if __name__ == "__main__":
    sys.exit(main())
