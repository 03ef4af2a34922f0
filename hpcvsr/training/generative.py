"""The generative stage's data: the deterministic output of every frame, residual patches and members.

* :func:`prepare_det` sets every block's ``det`` buffer: the trained 2D->3D output of each frame it owns;
* :class:`GenTask` is a training task for :func:`hpcvsr.training.trainer.fit` (the same loop, checkpoints,
  resume and signals as the other stages): random patches of (det, lr) with ``members`` noise fields each,
  scored by the fair CRPS of the field and of its differences (:func:`hpcvsr.models.generative.spatial_crps`);
  validation by the same score;
* :func:`members_of` draws the members of whole frames with the counter-based noise of inference.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

from hpcvsr.data import blocks as bl
from hpcvsr.models.conditioning import run
from hpcvsr.models.generative import difference_lags, spatial_crps
from hpcvsr.models.lowering import autocast
from hpcvsr.ops import metrics as mt
from hpcvsr.ops import noise
from hpcvsr.training.patches import PatchTask, window_frames


@torch.no_grad()
def prepare_det(blocks: list, net, *, source: str, window: int, batch: int = 4) -> None:
    """``b.det`` (the shape of ``b.hr``): ``net``'s output for every frame ``b`` owns (NaN elsewhere)."""
    net.eval()
    for b in blocks:
        det = torch.full_like(b.hr, float("nan"))
        centres = b.centres()
        for i in range(0, len(centres), batch):
            cs = centres[i : i + batch]
            x, _, where = window_frames(b, cs, source=source, window=window)
            det[torch.from_numpy(cs - b.read[0]).to(det.device)] = run(net, x, where).float()
        b.det = det
    net.train()


def batch_seed(origins: np.ndarray) -> int:
    """A seed from a batch's patch origins: the same batch draws the same noise after a resume."""
    return zlib.crc32(np.ascontiguousarray(origins, dtype=np.int64).tobytes())


class GenTask:
    """Patches of the deterministic output and the LR frames, with ``members`` noise fields per sample;
    ``loss`` is the fair CRPS of the members and of their differences (:func:`spatial_crps`), and
    validation reports it (``objective``: the best epoch is the lowest validation score) besides the
    ensemble mean's MSE and PSNR."""

    objective = "crps"
    frames_per_sample = 1

    def __init__(self, *, train: list, val: list, scale: int, patch: int, flips: bool, members: int, noise: int,
                 train_eval_frames: int = 8, eval_batch: int = 4):
        self.det = PatchTask(train=train, val=val, source="det", window=1, crop=0, scale=scale, patch=patch, flips=flips)
        self.lr = PatchTask(train=train, val=val, source="lr", window=1, crop=0, scale=scale, patch=patch, flips=flips)
        self.train, self.val, self.members, self.noise = train, val, members, noise
        self.lags = difference_lags(scale)  # differences scored in every band above the coarse Nyquist wavenumber
        self.masked = self.det.masked
        self.train_eval_frames, self.eval_batch = train_eval_frames, eval_batch

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        return self.det.sample(rng, count)

    def batch(self, origins: np.ndarray) -> tuple:
        det, y, where = self.det.batch(origins)
        lr, _, _ = self.lr.batch(origins)
        h, w = det.shape[-2:]
        z = noise.fields(batch_seed(origins), self.members, self.noise, range(len(origins)), range(h), range(w), device=det.device)
        return (det, lr, z, where), y, where  # where: the places and hours a conditioned generator reads

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return spatial_crps(out, y, self.lags)

    def evaluate(self, model, split: str, precision: str = "fp32") -> CRPSSums:
        acc = CRPSSums(device=self.train[0].hr.device, lags=self.lags)
        for b in self.val if split == "val" else self.train:
            centres = b.centres()[: self.train_eval_frames] if split == "train" else b.centres()
            for i in range(0, len(centres), self.eval_batch):
                cs = centres[i : i + self.eval_batch]
                members, y = members_of(model, b, cs, members=self.members, seed=0, noise_channels=self.noise, precision=precision)
                acc.update(members, y)
        return acc


@torch.no_grad()
def members_of(model, b: bl.Block, centres, *, members: int, seed: int, noise_channels: int, precision: str = "fp32") -> tuple:
    """(members (k, M, C, H, W), targets (k, C, H, W)) of the whole frames ``centres`` of block ``b``,
    with the noise of global frames ``centres`` (segment-local indices) and seed ``seed``."""
    det, y, where = window_frames(b, centres, source="det")
    lr, _, _ = window_frames(b, centres, source="lr")
    h, w = det.shape[-2:]
    z = noise.fields(seed, members, noise_channels, centres, range(h), range(w), device=det.device)
    with autocast(det.device, precision):
        out = model(det, lr, z, where)
    return out.float(), y


class CRPSSums:
    """The training score (:func:`spatial_crps`), squared error of the ensemble mean and cells, as float64
    sums (one all-reduce); ``crps`` in the summary is that score."""

    def __init__(self, device=None, lags: tuple = (1,)):
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.lags = lags

    def update(self, members: torch.Tensor, y: torch.Tensor) -> None:
        valid = ~torch.isnan(y)
        n = valid.sum()
        crps = spatial_crps(members, y, self.lags).double() * n
        se = torch.where(valid, members.mean(1) - torch.nan_to_num(y), torch.zeros_like(y)).double().pow(2).sum()
        self.sums += torch.stack([crps, se, n.double()])

    @staticmethod
    def summary(sums: torch.Tensor) -> dict:
        crps, se, n = sums.tolist()
        mse = se / max(n, 1.0)
        return {"crps": crps / max(n, 1.0), "mse": mse, "psnr": float(mt.psnr_from_mse(mse, 1.0)), "ssim": float("nan")}


DET_ROW = "2d_3d"  # the deterministic row of a generative pipeline's tables: its 2D->3D output
EVAL_MEMBERS = 16  # members of the held-out ensemble in metrics.json and table.md
EVAL_SEED = 0  # their noise seed (as ``hpcvsr infer --members 16 --seed 0``)
FSS_QUANTILES = (0.9, 0.99)  # the fractions skill score's thresholds: these quantiles of the held-out fine frames


def residual_std(blocks: list, env) -> list:
    """Per channel, the standard deviation of (truth - det) over every rank's own frames (one all-reduce)."""
    sums = None
    for b in blocks:
        own = torch.from_numpy(b.centres() - b.read[0]).to(b.hr.device)
        r = (b.target(own) - b.det[own]).double()
        valid = ~torch.isnan(r)
        r = torch.nan_to_num(r)
        part = torch.stack([r.sum((0, 2, 3)), (r * r).sum((0, 2, 3)), valid.sum((0, 2, 3)).double()])
        sums = part if sums is None else sums + part
    s, ss, n = env.all_reduce_sum(sums).unbind(0)
    mean = s / n.clamp_min(1)
    return [max(float(v), 1e-6) for v in torch.sqrt((ss / n.clamp_min(1) - mean * mean).clamp_min(0))]


def fss_thresholds(blocks: list, env) -> tuple:
    """:data:`FSS_QUANTILES` of rank 0's held-out fine frames (normalised, first variable), the same on every rank."""
    values = torch.cat([b.target(torch.from_numpy(b.centres() - b.read[0]).to(b.hr.device))[:, 0].flatten() for b in blocks])
    values = values[~torch.isnan(values)].double()
    q = tuple(float(torch.quantile(values[:: max(1, len(values) // 1_000_000)], p)) for p in FSS_QUANTILES) if len(values) else ()
    return tuple(env.broadcast_object(q))


@torch.no_grad()
def held_out(gen, blocks: list, env, *, norms: list, scale: int, members: int = EVAL_MEMBERS, seed: int = EVAL_SEED,
             batch: int = 2) -> dict:
    """Draw ``members`` members of every held-out frame (``b.ensmean``: their mean, for the usual metrics)
    and score them (:class:`hpcvsr.ops.ensemble.EnsembleSums`, reduced across ranks); returns the summary
    of the first variable with its FSS thresholds in physical units."""
    from hpcvsr.ops.ensemble import EnsembleSums

    n = norms[0]
    thresholds = fss_thresholds(blocks, env)
    acc = EnsembleSums(members, unit_scale=n.span, spectrum_cutoff=1.0 / scale, thresholds=thresholds, device=env.device)
    lowest = torch.tensor([-math.inf], dtype=torch.float64, device=env.device)  # minus the smallest member value
    for b in blocks:
        b.ensmean = torch.full_like(b.hr, float("nan"))
        centres = b.centres()
        for i in range(0, len(centres), batch):
            cs = centres[i : i + batch]
            ens, y = members_of(gen, b, cs, members=members, seed=seed, noise_channels=gen.noise)
            b.ensmean[torch.from_numpy(cs - b.read[0]).to(ens.device)] = ens.mean(1)
            acc.update(ens[:, :, 0], y[:, 0], offset=n.lo / n.span)
            lowest = torch.maximum(lowest, -ens.double().nan_to_num(math.inf).min())
    summary = acc.summary(env.all_reduce_sum(acc.sums.clone()))
    summary["members_min"] = n.phys(-float(env.all_reduce_max(lowest).item()))  # physical units: >= the lower bound, when there is one
    summary["fss"] = {f"{n.phys(t):.4g}": v for t, v in zip(thresholds, summary.get("fss", {}).values())}
    summary["members"] = members
    return summary


def add_scores(test: dict, ensemble: dict, *, det_row: str, row: str, norms: list) -> None:
    """The ensemble's scores into its row of the held-out table ``test`` ({variable: {method: metrics}}),
    and every deterministic row's CRPS (its MAE, physical units), so the two compare directly."""
    rows, n = next(iter(test.values())), norms[0]  # one variable
    for name, m in rows.items():
        if name != row and "mae" in m:
            m["crps"] = m["mae"] * n.span
    r = rows[row]
    r["hf_energy_ratio_mean"] = r.get("hf_energy_ratio")
    r.update({k: ensemble[k] for k in ("crps", "spread", "spread_skill", "rank_histogram", "rank_flatness", "fss", "spectrum", "members",
                                       "members_min")
              if k in ensemble})
    r["hf_energy_ratio"] = ensemble.get("hf_energy_ratio")
    r["crps_over_mae"] = r["crps"] / rows[det_row]["crps"] if rows.get(det_row, {}).get("crps") else None
