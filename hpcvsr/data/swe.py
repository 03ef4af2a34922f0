"""Nonlinear rotating shallow-water equations on a doubly periodic Arakawa C-grid.

Prognostic fields: free-surface height anomaly ``h`` at cell centres (total depth ``H + h - b``
over a bottom of elevation ``b``, flat by default), ``u`` on west faces, ``v`` on south faces.
The continuity equation is in flux form, so the domain sum of ``h`` changes only by round-off;
momentum uses the vector-invariant form with Sadourny's energy-conserving potential-vorticity flux, f-plane Coriolis and a biharmonic viscosity that
removes enstrophy at the grid scale. Time stepping is third-order strong-stability-preserving
Runge-Kutta with a CFL-controlled step.

The default regime is decaying rotating shallow-water turbulence: random, geostrophically
balanced vortices (a streamfunction with a spectral peak at ``k0``) spun up for a few eddy
turnovers, so the fields carry fronts, filaments and vortices down to the grid scale.

Place-locked and daily structure, as in a regional climate archive (both off by default, and then
the solver runs exactly as without them):

* ``topography`` > 0: a random bottom :func:`bottom` fixed by ``domain_seed`` (not by the sequence
  ``seed``), with detail down to near the grid scale. It enters the mass flux and the potential
  vorticity through the total depth; the pressure gradient stays ``g grad h``.
* ``forcing`` > 0: a periodic mass source ``pi * forcing * H / P * Q(x, y) * sin(phase)`` in the
  height equation (``P`` the period in model seconds, ``Q`` of :func:`forcing_pattern`: zero
  domain sum, so mass is conserved to round-off, and max |Q| = 1). ``forcing`` is the daily
  peak-to-trough swing of ``h`` as a fraction of the mean depth ``H`` where |Q| = 1, if the added
  water stayed in place: ``h`` swings by about ``-forcing * H / 2 * Q * cos(phase)``, a quarter
  period behind the source. forcing = 0.2 gives +-0.2 m where |Q| = 1 (Q is about 0.3 rms) on
  top of turbulence of about 0.1 m rms: measured at 64 x 64, about a third of h's variance is
  the daily cycle.

Time: frames are ``output_every`` turnovers of model time apart, and each such output interval
is *labelled* as ``interval_hours`` hours of calendar time from ``start_date`` (NetCDF output, and
the forcing phase: ``phase(k) = 2 pi (start_hour + k interval_hours) / (forcing_period_frames
interval_hours)`` at frame k). The model's physical clock and the calendar label are different
time scales on purpose: one output interval of model time is labelled as ``interval_hours``.

Index convention (numpy ``roll``): ``h[j, i]`` is the cell with centre (i + 1/2, j + 1/2) dx;
``u[j, i]`` sits at (i, j + 1/2) dx; ``v[j, i]`` at (i + 1/2, j) dx; vorticity at corners (i, j).

Fine and coarse pairs (:func:`run_pair`): the same flow on the grid of ``p`` and on a grid ``scale``
times coarser. Coarse cell (J, I) covers fine cells j = scale J .. scale J + scale - 1 and likewise
in i, so coarse west face I is fine west face scale I and coarse south face J is fine south face
scale J. After the spin-up the fine state is restricted by finite-volume means (:func:`restrict`):
h over the scale x scale fine cells, u over the ``scale`` fine west faces on the coarse west face,
v over the fine south faces on the coarse south face; the coarse run then goes its own way with
the same parameters, its own viscosity and CFL step for its dx, and the bottom and forcing pattern
of the fine grid restricted the same way as h (the same place, not a new one drawn at another size).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from dataclasses import dataclass

import numpy as np

from hpcvsr.errors import UserError

VISC = 0.01  # grid-scale damping rate ~ VISC * 97 * u0 / dx


def parse_date(text: str) -> datetime.datetime:
    """A calendar date "YYYY-MM-DD HH:MM:SS" ("YYYY-MM-DD" or ISO 8601 without a time zone also do).

    >>> parse_date("2000-01-01 06:30:00").hour
    6
    """
    try:
        date = datetime.datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise ValueError(f"start date must look like 'YYYY-MM-DD HH:MM:SS', got '{text}'") from None
    if date.tzinfo is not None:
        raise ValueError(f"start date must have no time zone (UTC is implied), got '{text}'")
    return date


@dataclass(frozen=True)
class SWEParams:
    nx: int = 128
    ny: int = 128
    length: float = 1.0e6  # domain side in x (m); dy = dx
    depth: float = 2.0  # mean depth H (m): gravity-wave speed sqrt(g H) ~ 4.4 m/s
    g: float = 9.81
    f0: float = 5.0e-5  # Coriolis parameter (1/s)
    k0: float = 16.0  # spectral peak of the initial vortices (cycles per domain)
    u0: float = 2.0  # initial peak velocity (m/s)
    cfl: float = 0.4
    nu4: float = 0.0  # biharmonic viscosity (m^4/s); 0: set from the grid (see `viscosity`)
    spinup_turnovers: float = 3.0  # eddy turnovers before the first frame
    output_every: float = 0.03  # eddy turnovers between frames
    unbalanced: float = 0.5  # amplitude of unbalanced height bumps, fraction of depth
    seed: int = 0
    topography: float = 0.0  # max |bottom elevation|, fraction of depth (0: flat bottom; <= ~0.6 keeps water everywhere)
    domain_seed: int = 0  # seed of the bottom and the forcing pattern (the place), not of the flow
    forcing: float = 0.0  # periodic mass source (see the module doc); 0: none
    forcing_period_frames: float = 24.0  # period of the forcing in output frames (a day of hourly frames)
    interval_hours: float = 1.0  # calendar label of one output interval
    start_date: str = "2000-01-01 00:00:00"  # calendar label of the first frame

    def __post_init__(self):
        problems = []
        if not 0.0 <= self.topography < 1.0:
            problems.append(f"topography must be in [0, 1) (a fraction of the depth), got {self.topography}")
        if self.forcing < 0:
            problems.append(f"forcing must be >= 0, got {self.forcing}")
        if not self.forcing_period_frames > 0:
            problems.append(f"forcing period must be positive (frames), got {self.forcing_period_frames}")
        if not self.interval_hours > 0:
            problems.append(f"interval_hours must be positive, got {self.interval_hours}")
        if problems:
            raise ValueError("; ".join(problems))
        parse_date(self.start_date)

    @property
    def start(self) -> datetime.datetime:
        return parse_date(self.start_date)

    @property
    def start_hour(self) -> float:
        """Hour of day of the first frame."""
        s = self.start
        return s.hour + s.minute / 60 + (s.second + s.microsecond / 1e6) / 3600

    @property
    def time_units(self) -> str:
        """CF units of the calendar time coordinate."""
        return f"hours since {self.start.isoformat(sep=' ')}"

    @property
    def output_interval(self) -> float:
        """Model seconds between frames."""
        return self.output_every * self.turnover

    @property
    def forcing_period(self) -> float:
        """Period of the forcing in model seconds."""
        return self.forcing_period_frames * self.output_interval

    def forcing_phase(self, t: float) -> float:
        """Phase of the forcing at model time ``t`` (s; 0 at the first frame, negative during spin-up)."""
        return 2 * math.pi * (t / self.forcing_period + self.start_hour / (self.forcing_period_frames * self.interval_hours))

    @property
    def dx(self) -> float:
        return self.length / self.nx

    @property
    def wave_speed(self) -> float:
        return math.sqrt(self.g * self.depth)

    @property
    def turnover(self) -> float:
        """Eddy turnover time (s): vortex size / peak velocity."""
        return (self.length / self.k0) / self.u0


def _dxm(a, dx):  # backward difference in x (axis 1)
    return (a - np.roll(a, 1, axis=1)) / dx


def _dxp(a, dx):  # forward difference in x
    return (np.roll(a, -1, axis=1) - a) / dx


def _dym(a, dx):
    return (a - np.roll(a, 1, axis=0)) / dx


def _dyp(a, dx):
    return (np.roll(a, -1, axis=0) - a) / dx


def _axm(a):  # average with the western neighbour
    return 0.5 * (a + np.roll(a, 1, axis=1))


def _axp(a):
    return 0.5 * (a + np.roll(a, -1, axis=1))


def _aym(a):
    return 0.5 * (a + np.roll(a, 1, axis=0))


def _ayp(a):
    return 0.5 * (a + np.roll(a, -1, axis=0))


def vorticity(u: np.ndarray, v: np.ndarray, dx: float) -> np.ndarray:
    """Relative vorticity dv/dx - du/dy at cell corners."""
    return _dxm(v, dx) - _dym(u, dx)


def _wavenumber(ny: int, nx: int) -> np.ndarray:
    """|k| in cycles per domain length x of every FFT mode of an (ny, nx) grid (dy = dx)."""
    kx = np.fft.fftfreq(nx, 1.0 / nx)
    ky = np.fft.fftfreq(ny, 1.0 / ny) * (nx / ny)
    return np.sqrt(kx[None, :] ** 2 + ky[:, None] ** 2)


def _spectral_field(ny: int, nx: int, rng: np.random.Generator, slope: float) -> np.ndarray:
    """Random field with amplitude spectrum ``k^-slope`` (no k = 0), zero mean, max |field| = 1."""
    k = _wavenumber(ny, nx)
    amp = np.where(k > 0, np.maximum(k, 1.0) ** -slope, 0.0)
    field = np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((ny, nx)))))
    field -= field.mean()
    return field / np.abs(field).max()


def bottom(p: SWEParams) -> np.ndarray:
    """Bottom elevation b (m) at cell centres, (ny, nx) float64: zero mean, max |b| = topography * depth.

    Amplitude spectrum k^-1.5 from k = 1 to the grid scale, random phases from ``domain_seed``:
    the same place for every sequence seed and run length. Zeros when ``topography`` is 0.
    """
    if p.topography == 0:
        return np.zeros((p.ny, p.nx))
    return p.topography * p.depth * _spectral_field(p.ny, p.nx, np.random.default_rng(p.domain_seed), slope=1.5)


def forcing_pattern(p: SWEParams) -> np.ndarray:
    """Q(x, y) of the periodic mass source: zero mean, max |Q| = 1, fixed by the place.

    The bottom itself when there is one (Q = (b - mean b) / max |b|: "heating over mountains"),
    else a smooth random pattern (amplitude spectrum k^-3) from ``domain_seed``.
    """
    if p.topography > 0:
        b = bottom(p)
        b = b - b.mean()
        return b / np.abs(b).max()
    return _spectral_field(p.ny, p.nx, np.random.default_rng(p.domain_seed), slope=3.0)


def _laplacian_u(a, dx):
    return (np.roll(a, 1, 0) + np.roll(a, -1, 0) + np.roll(a, 1, 1) + np.roll(a, -1, 1) - 4 * a) / dx**2


def _place_field(p: SWEParams, given: np.ndarray | None, default) -> np.ndarray:
    """``given`` (checked against the grid of ``p``), or ``default(p)``."""
    if given is None:
        return default(p)
    given = np.asarray(given, np.float64)
    if given.shape != (p.ny, p.nx):
        raise ValueError(f"a field of shape {given.shape} does not fit the grid {p.ny} x {p.nx}")
    return given


class ShallowWater:
    """Vectorised solver. ``state`` is (h, u, v) as float64 arrays of shape (ny, nx).

    ``bed`` and ``pattern`` are the bottom and the forcing pattern Q on this grid, for a run that shares
    its place with another grid's (default: :func:`bottom` and :func:`forcing_pattern` of ``p``); they
    are used only where ``p`` asks for topography or forcing.
    """

    def __init__(self, p: SWEParams, *, bed: np.ndarray | None = None, pattern: np.ndarray | None = None):
        self.p = p
        self.dx = p.dx
        self.nu4 = p.nu4 or self.viscosity(p)
        self.b = _place_field(p, bed, bottom) if p.topography > 0 else None  # None: flat bottom
        self.source = math.pi * p.forcing * p.depth / p.forcing_period * _place_field(p, pattern, forcing_pattern) if p.forcing > 0 else None
        # fastest gravity waves: over the deepest water
        self.wave_speed = p.wave_speed if self.b is None else math.sqrt(p.g * (p.depth - self.b.min()))

    @staticmethod
    def viscosity(p: SWEParams) -> float:
        # damping rate ~ nu4 (pi/dx)^4 equal to a few grid-scale advective rates: stable with SSP-RK3
        return VISC * p.u0 * p.dx**3

    def dt(self, u, v) -> float:
        speed = self.wave_speed + max(np.abs(u).max(), np.abs(v).max())
        return self.p.cfl * self.dx / speed

    def total_depth(self, h):
        """H + h - b at cell centres."""
        return self.p.depth + h if self.b is None else self.p.depth + h - self.b

    def rhs(self, h, u, v, t: float = 0.0):
        """Tendencies (dh, du, dv) at model time ``t`` (s; only the forcing depends on it)."""
        p, dx = self.p, self.dx
        depth = self.total_depth(h)
        U = _axm(depth) * u  # mass flux at u points
        V = _aym(depth) * v
        dh = -(_dxp(U, dx) + _dyp(V, dx))
        if self.nu4 > 0:  # a flux-form difference: sums to zero, so mass is still conserved
            dh -= self.nu4 * _laplacian_u(_laplacian_u(h, dx), dx)
        if self.source is not None:  # zero domain sum: mass is conserved
            dh += self.source * math.sin(p.forcing_phase(t))
        zeta = vorticity(u, v, dx)  # corners
        hq = _axm(_aym(depth))  # depth at corners
        q = (p.f0 + zeta) / hq
        ke = 0.5 * (_axp(u * u) + _ayp(v * v))  # at centres
        bern = p.g * h + ke
        # Sadourny (1975) energy-conserving PV flux
        du = _ayp(q * _axm(V)) - _dxm(bern, dx)
        dv = -_axp(q * _aym(U)) - _dym(bern, dx)
        if self.nu4 > 0:
            du -= self.nu4 * _laplacian_u(_laplacian_u(u, dx), dx)
            dv -= self.nu4 * _laplacian_u(_laplacian_u(v, dx), dx)
        return dh, du, dv

    def step(self, state, dt, t: float = 0.0):
        """One SSP-RK3 step from model time ``t``."""
        h, u, v = state
        k = self.rhs(h, u, v, t)
        s1 = [a + dt * b for a, b in zip(state, k)]
        k = self.rhs(*s1, t + dt)
        s2 = [0.75 * a + 0.25 * (b + dt * c) for a, b, c in zip(state, s1, k)]
        k = self.rhs(*s2, t + 0.5 * dt)
        return tuple((1 / 3) * a + (2 / 3) * (b + dt * c) for a, b, c in zip(state, s2, k))

    def advance(self, state, duration: float, t0: float = 0.0):
        """Integrate for ``duration`` seconds from model time ``t0`` with CFL-limited steps; returns (state, steps)."""
        t, n = 0.0, 0
        while t < duration - 1e-9:
            dt = min(self.dt(state[1], state[2]), duration - t)
            state = self.step(state, dt, t0 + t)
            t += dt
            n += 1
        return state, n


def balanced_vortices(p: SWEParams, rng: np.random.Generator):
    """Random geostrophically balanced initial state (h, u, v) from a spectral streamfunction."""
    ny, nx, dx = p.ny, p.nx, p.dx
    k = _wavenumber(ny, nx)
    amp = np.where(k > 0, np.exp(-((k - p.k0) ** 2) / (2 * (p.k0 / 3) ** 2)) / np.maximum(k, 1.0), 0.0)
    phase = np.exp(2j * np.pi * rng.random((ny, nx)))
    psi = np.real(np.fft.ifft2(amp * phase))
    # streamfunction at corners; velocities on faces; h at centres from geostrophy
    u = -_dyp(psi, dx)  # u at (i, j+1/2): -dpsi/dy between corners (i,j) and (i,j+1)
    v = _dxp(psi, dx)
    scale = p.u0 / max(np.abs(u).max(), np.abs(v).max())
    psi, u, v = psi * scale, u * scale, v * scale
    psi_c = _axp(_ayp(psi))  # corners -> centres
    h = p.f0 * psi_c / p.g
    if p.unbalanced > 0:  # ageostrophic height bumps: gravity waves that steepen into fronts
        bumps = np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((ny, nx)))))
        h = h + p.unbalanced * p.depth * bumps / np.abs(bumps).max()
    h -= h.mean()
    return h, u, v


@dataclass(frozen=True)
class SWESequence:
    h: np.ndarray  # (T, ny, nx) float32
    u: np.ndarray
    v: np.ndarray
    vort: np.ndarray
    times: np.ndarray  # seconds since the first frame
    params: SWEParams
    steps: int  # solver steps in total
    mass_drift: float  # relative change of total mass over the run
    bottom: np.ndarray | None = None  # (ny, nx) float32 bottom elevation; None for a flat bottom

    @property
    def hours(self) -> np.ndarray:
        """Calendar label of each frame: hours since ``params.start_date`` (float64)."""
        return np.arange(len(self.times), dtype=np.float64) * self.params.interval_hours


def make_params(size: tuple[int, int], seed: int, **overrides) -> SWEParams:
    """Checked parameters for a grid of ``size`` (ny, nx); a ValueError says what is wrong."""
    p = SWEParams(ny=int(size[0]), nx=int(size[1]), seed=seed, **overrides)
    if p.nx < 8 or p.ny < 8:
        raise ValueError("grid must be at least 8x8")
    return p


def generate(frames: int = 200, size: tuple[int, int] = (128, 128), seed: int = 0, progress: bool = False, **overrides) -> SWESequence:
    """Run the solver and return ``frames`` snapshots (every ``output_every`` turnovers).

    Deterministic from ``seed`` (the flow) and ``domain_seed`` (the bottom and forcing pattern).
    """
    return run(make_params(size, seed, **overrides), frames, progress=progress)


def run(p: SWEParams, frames: int, progress: bool = False) -> SWESequence:
    """``frames`` snapshots of a run with parameters ``p``, after spin-up (which ends at model time 0)."""
    solver = ShallowWater(p)
    state, mass0, steps = _spin_up(solver)
    return _record(solver, state, frames, mass0=mass0, steps=steps, progress=progress)


def run_pair(p: SWEParams, frames: int, scale: int, progress: bool = False) -> tuple[SWESequence, SWESequence]:
    """The flow of ``p`` on its grid and on one ``scale`` times coarser, saved at the same model times.

    The fine sequence is :func:`run` ``(p, frames)`` exactly. The coarse run starts from the fine state
    at the first frame (after the spin-up) restricted by :func:`restrict`, over the fine bottom and
    forcing pattern restricted by :func:`restrict_centres`, with :func:`coarse_params`; from then on
    it follows its own discretisation, so it drifts from the fine run as a coarse model does.
    """
    cp = coarse_params(p, scale)
    fine = ShallowWater(p)
    state, mass0, steps = _spin_up(fine)
    coarse = ShallowWater(cp, bed=restrict_centres(fine.b, scale) if fine.b is not None else None,
                          pattern=restrict_centres(forcing_pattern(p), scale) if p.forcing > 0 else None)
    start = restrict(state, scale)
    _check(coarse, start[0], "in the coarse initial state")
    fine_seq = _record(fine, state, frames, mass0=mass0, steps=steps, progress=progress)
    coarse_seq = _record(coarse, start, frames, mass0=float(np.sum(cp.depth + start[0])), steps=0, progress=progress,
                         label=f"swe 1/{scale}", where=f" on the {scale}x coarser grid")
    return fine_seq, coarse_seq


def coarse_params(p: SWEParams, scale: int) -> SWEParams:
    """``p`` on a grid ``scale`` times coarser (the domain and every physical parameter kept); a UserError if it does not fit."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise UserError(f"the coarse scale must be an integer >= 2, got {scale!r}")
    if p.ny % scale or p.nx % scale:
        raise UserError(f"a coarse scale of {scale} must divide both grid sizes, but the grid is {p.ny} x {p.nx} (ny x nx)")
    ny, nx = p.ny // scale, p.nx // scale
    if min(ny, nx) < 8:
        raise UserError(f"a coarse scale of {scale} makes the {p.ny} x {p.nx} grid {ny} x {nx}: the coarse grid must be at least 8x8")
    return dataclasses.replace(p, ny=ny, nx=nx)


def restrict_centres(a: np.ndarray, scale: int) -> np.ndarray:
    """Cell-centre field (..., ny, nx) -> mean over each ``scale`` x ``scale`` block (the coarse cell)."""
    *lead, ny, nx = a.shape
    return a.reshape(*lead, ny // scale, scale, nx // scale, scale).mean(axis=(-3, -1))


def restrict_u(u: np.ndarray, scale: int) -> np.ndarray:
    """West-face field (..., ny, nx) -> coarse west faces: coarse face I is fine face ``scale`` I, and its
    value is the mean over the ``scale`` fine faces along it, so the volume flux through it is the fine one."""
    *lead, ny, nx = u.shape
    return u[..., ::scale].reshape(*lead, ny // scale, scale, nx // scale).mean(axis=-2)


def restrict_v(v: np.ndarray, scale: int) -> np.ndarray:
    """South-face field (..., ny, nx) -> coarse south faces (fine face ``scale`` J, mean over the fine faces along it)."""
    *lead, ny, nx = v.shape
    return v[..., ::scale, :].reshape(*lead, ny // scale, nx // scale, scale).mean(axis=-1)


def restrict(state, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A C-grid state (h, u, v) on a grid ``scale`` times coarser, by finite-volume means (the domain sum of h
    times the cell area is kept to round-off)."""
    h, u, v = state
    return restrict_centres(h, scale), restrict_u(u, scale), restrict_v(v, scale)


def _spin_up(solver: ShallowWater):
    """The seed's balanced initial state run through the spin-up: (state at model time 0, initial mass, steps)."""
    p = solver.p
    rng = np.random.default_rng(p.seed)
    state = balanced_vortices(p, rng)
    mass0 = float(np.sum(p.depth + state[0]))
    _check(solver, state[0], "in the initial state")
    spinup = p.spinup_turnovers * p.turnover
    state, steps = solver.advance(state, spinup, t0=-spinup)
    return state, mass0, steps


def _record(solver: ShallowWater, state, frames: int, *, mass0: float, steps: int, progress: bool, label: str = "swe",
            where: str = "") -> SWESequence:
    """``frames`` snapshots from ``state`` at model time 0, one output interval apart (``where`` names the grid in errors)."""
    p = solver.p
    out = {k: np.empty((frames, p.ny, p.nx), np.float32) for k in ("h", "u", "v", "vort")}
    interval = p.output_interval
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=frames, desc=label, unit="frame")
    for t in range(frames):
        if t:
            state, n = solver.advance(state, interval, t0=(t - 1) * interval)
            steps += n
        h, u, v = state
        _check(solver, h, f"at frame {t}{where}")
        out["h"][t], out["u"][t], out["v"][t] = h, u, v
        out["vort"][t] = vorticity(u, v, p.dx)
        if bar:
            bar.update()
    if bar:
        bar.close()
    mass1 = float(np.sum(p.depth + state[0]))
    bed = None if solver.b is None else solver.b.astype(np.float32)
    return SWESequence(times=np.arange(frames) * interval, params=p, steps=steps, mass_drift=abs(mass1 - mass0) / mass0, bottom=bed, **out)


def _check(solver: ShallowWater, h: np.ndarray, when: str) -> None:
    """Stop a run whose height went non-finite or whose water column ran dry (``when``: "at frame 3")."""
    seed = solver.p.seed
    if not np.isfinite(h).all():
        raise FloatingPointError(f"shallow-water solver diverged {when} (seed {seed})")
    if solver.total_depth(h).min() <= 0:
        raise FloatingPointError(f"shallow-water total depth reached zero {when} (seed {seed}): lower the topography or the forcing")


def attributes(seq: SWESequence) -> dict:
    """HDF5 attributes describing the run."""
    p = seq.params
    attrs = {f"param_{k}": v for k, v in dataclasses.asdict(p).items()}
    attrs.update(
        source="swe", dx=p.dx, dy=p.dx, dt=float(seq.times[1] - seq.times[0]) if len(seq.times) > 1 else 0.0,
        seed=p.seed, solver_steps=seq.steps, mass_drift=seq.mass_drift,
        description="rotating shallow-water turbulence, Arakawa C-grid, doubly periodic, SSP-RK3",
    )
    return attrs


UNITS = {"h": "m", "u": "m s-1", "v": "m s-1", "vort": "s-1"}
LONG_NAMES = {"h": "free-surface height anomaly", "u": "x velocity (averaged from the west and east cell faces)",
              "v": "y velocity (averaged from the south and north cell faces)", "vort": "relative vorticity (averaged from the cell corners)"}
SOURCE = "hpcvsr.data.swe: nonlinear rotating shallow-water equations, Arakawa C-grid, doubly periodic, SSP-RK3"
DOMAIN_PARAMS = ("nx", "ny", "length", "depth", "topography", "domain_seed")


def _centre(a: np.ndarray, axis: int) -> np.ndarray:
    """Average of neighbours i and i + 1 along ``axis`` (faces or corners -> cell centres), periodic."""
    return 0.5 * (a + np.roll(a, -1, axis=axis))


def grid_coords(p: SWEParams) -> dict:
    """CF projection coordinates y, x (m) of the cell centres, as xarray (dims, values, attrs) tuples."""
    def axis(name: str, n: int) -> tuple:
        return (name, (np.arange(n) + 0.5) * p.dx, {"standard_name": f"projection_{name}_coordinate", "long_name": f"{name} of the cell centre",
                                                   "units": "m", "axis": name.upper()})
    return {"y": axis("y", p.ny), "x": axis("x", p.nx)}


def _global_attrs(title: str, history: str | None, params: dict) -> dict:
    from hpcvsr.io.ncout import history_line, netcdf_attr

    attrs = {"Conventions": "CF-1.8", "title": title, "source": SOURCE, "history": history_line(history or "hpcvsr.data.swe")}
    attrs.update({k: netcdf_attr(v) for k, v in params.items()})
    return attrs


def pair_attributes(scale: int, fine_path: str, coarse_path: str) -> tuple[dict, dict]:
    """Attributes that tie the two files of a :func:`run_pair` to each other: (fine file's, coarse file's)."""
    fine_name, coarse_name = os.path.basename(fine_path), os.path.basename(coarse_path)
    fine = {"coarse_scale": scale, "pair": coarse_name}
    coarse = {"coarse_scale": scale, "pair_of": fine_name,
              "pair_comment": f"the flow of {fine_name} on a grid {scale} times coarser: its state at the first frame, bottom and "
                              "forcing pattern restricted by finite-volume means (h: cell blocks; u, v: the fine faces on each coarse face), "
                              "then run on this grid with the same parameters and its own time step"}
    return fine, coarse


def to_dataset(seq: SWESequence, history: str | None = None, extra: dict | None = None):
    """The sequence as a CF-1.8 ``xarray.Dataset``: h, u, v, vort on (time, y, x) at cell centres.

    ``time`` is the calendar label (hours since ``start_date``, one output interval labelled as
    ``interval_hours``); the run's parameters are global attributes, followed by ``extra``; ``history`` is the command.
    """
    import xarray as xr

    p = seq.params
    fields = {"h": seq.h, "u": _centre(seq.u, axis=2), "v": _centre(seq.v, axis=1), "vort": _centre(_centre(seq.vort, axis=2), axis=1)}
    data = {k: (("time", "y", "x"), np.asarray(a, np.float32), {"units": UNITS[k], "long_name": LONG_NAMES[k]}) for k, a in fields.items()}
    time = ("time", seq.hours, {"units": p.time_units, "calendar": "standard", "standard_name": "time", "long_name": "time", "axis": "T"})
    run = {k: v for k, v in attributes(seq).items() if k not in ("source", "description")}
    run["comment"] = (f"model time is labelled: one output interval ({run['dt']:g} s of model time) is labelled as "
                      f"{p.interval_hours:g} h; u, v and vort are averaged to cell centres from the C-grid")
    run.update(extra or {})
    title = "Rotating shallow-water turbulence" + (" over topography" if p.topography > 0 else "") + (" with a periodic forcing" if p.forcing > 0 else "")
    return xr.Dataset(data, coords={"time": time, **grid_coords(p)}, attrs=_global_attrs(title, history, run))


def static_dataset(p: SWEParams, history: str | None = None):
    """The bottom height :func:`bottom` as a CF-1.8 ``xarray.Dataset``: ``orography`` (y, x), float32, m."""
    import xarray as xr

    attrs = {"units": "m", "standard_name": "surface_altitude", "long_name": "bottom height",
             "comment": f"bottom elevation above its mean; the water is {p.depth:g} m deep on average, total depth = depth + h - orography"}
    params = {f"param_{k}": getattr(p, k) for k in DOMAIN_PARAMS}
    params.update(dx=p.dx, dy=p.dx)
    data = {"orography": (("y", "x"), bottom(p).astype(np.float32), attrs)}
    return xr.Dataset(data, coords=grid_coords(p), attrs=_global_attrs("Bottom height of the shallow-water domain", history, params))
