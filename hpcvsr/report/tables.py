"""Run reports: ``metrics.json``, ``table.md`` and PNG figures, written atomically by rank 0."""

from __future__ import annotations

import os

import numpy as np

from hpcvsr.io.atomic import atomic_path
from hpcvsr.pipeline.kinds import KINDS

METHOD_ORDER = ("bicubic", "qm_bicubic", *KINDS)  # bicubic, the quantile-mapping baseline of pairs, 2d, then every pipeline kind


def _fmt(v, key):
    if v is None:
        return "-"
    if key in ("mse", "mae", "rmse_phys", "mass_rel_err", "consistency_rmse_phys"):
        return f"{v:.3e}"
    if key in ("ssim", "hf_energy_ratio"):
        return f"{v:.4f}"
    return f"{v:.2f}"


def test_table(test: dict, units: str = "") -> str:
    keys = ("psnr", "psnr_mean", "ssim", "mse", "mae", "rmse_phys", "mass_rel_err", "hf_energy_ratio", "consistency_rmse_phys")
    head = ["method", "PSNR (dB)", "mean frame PSNR", "SSIM", "MSE", "MAE", f"RMSE ({units or 'phys'})", "mass rel. err", "HF energy SR/HR",
            f"consistency RMSE ({units or 'phys'})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in [m for m in METHOD_ORDER if m in test] + [m for m in test if m not in METHOD_ORDER]:
        lines.append(f"| {m} | " + " | ".join(_fmt(test[m].get(k), k) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def lead_time_table(test: dict, units: str = "") -> str:
    """PSNR and RMSE over the first, middle and last third of the held-out frames, and the HF energy ratio."""
    head = ["method", "PSNR 1st third", "PSNR 2nd third", "PSNR last third", f"RMSE 1st third ({units or 'phys'})",
            f"RMSE 2nd third ({units or 'phys'})", f"RMSE last third ({units or 'phys'})", "HF energy SR/HR"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in [m for m in METHOD_ORDER if m in test] + [m for m in test if m not in METHOD_ORDER]:
        thirds = test[m].get("lead_time") or [{}] * 3
        lines.append(f"| {m} | " + " | ".join([_fmt(t.get("psnr"), "psnr") for t in thirds] + [_fmt(t.get("rmse_phys"), "rmse_phys") for t in thirds]
                                              + [_fmt(test[m].get("hf_energy_ratio"), "hf_energy_ratio")]) + " |")
    return "\n".join(lines) + "\n"


SMALL_GAIN_DB = 0.05  # a trained stage that gains less than this on validation is reported as not helping


def ensemble_table(test: dict, units: str = "") -> str:
    """CRPS of every row (a deterministic output's is its MAE) and, for an ensemble, the spread-skill
    ratio, its members' HF energy ratio, the rank histogram's distance from flat and the fractions skill scores."""
    u = units or "phys"
    fss = sorted({t for m in test.values() for t in (m.get("fss") or {})}, key=float)
    head = ["method", f"CRPS ({u})", "CRPS / MAE of 2d_3d", "spread-skill", "HF energy (members)", "HF energy (mean)", "rank hist. distance from flat",
            *[f"FSS > {t} {units}".rstrip() for t in fss]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in [m for m in METHOD_ORDER if m in test] + [m for m in test if m not in METHOD_ORDER]:
        r = test[m]
        if "crps" not in r:
            continue
        hf_mean = r.get("hf_energy_ratio_mean", r.get("hf_energy_ratio") if "spread_skill" not in r else None)
        cells = [f"{r['crps']:.4g}", _fmt(r.get("crps_over_mae"), "ssim"), _fmt(r.get("spread_skill"), "ssim"),
                 _fmt(r.get("hf_energy_ratio") if "spread_skill" in r else None, "ssim"), _fmt(hf_mean, "ssim"), _fmt(r.get("rank_flatness"), "ssim"),
                 *[_fmt((r.get("fss") or {}).get(t), "ssim") for t in fss]]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def stage_note(stage: str, history: list) -> str:
    """One plain sentence when stage ``stage`` did not improve on its start on validation ('' when it did).

    Its best epoch is what the run keeps; a stage whose start is the previous stage's output (a 3D
    stage's zero-initialised residual) and never beat it leaves the pipeline equal to that output."""
    start, best = history[0]["val"]["psnr"], max(h["val"]["psnr"] for h in history)
    if best - start >= SMALL_GAIN_DB:
        return ""
    if best <= start:
        return (f"stage {stage} never improved on its start on validation ({start:.2f} dB): the saved model is its starting point, "
                f"so {stage} equals the stage before it on this data")
    return f"stage {stage} gained only {best - start:+.3f} dB on validation ({start:.2f} -> {best:.2f} dB): it adds almost nothing on this data"


def stage_table(history: list) -> str:
    """The study's table: epoch 0 vs final, train vs validation."""
    first, last = history[0], history[-1]
    lines = ["| | epoch | train MSE | train SSIM | train PSNR | val MSE | val SSIM | val PSNR |", "|---|---|---|---|---|---|---|---|"]
    for label, h in (("initial", first), ("final", last)):
        t, v = h["train"], h["val"]
        lines.append(f"| {label} | {h['epoch']} | {t['mse']:.3e} | {t['ssim']:.4f} | {t['psnr']:.2f} | {v['mse']:.3e} | {v['ssim']:.4f} | {v['psnr']:.2f} |")
    return "\n".join(lines) + "\n"


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format=os.path.splitext(path)[1][1:])
    plt.close(fig)
    return path


def figures(run_dir: str, panels: dict, per_frame: dict, histories: dict) -> list[str]:
    """comparison.png (LR | methods | HR | |error|), temporal.png, curves.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    names = list(panels)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4))
    hr = panels.get("HR")
    vmin, vmax = (float(np.min(hr)), float(np.max(hr))) if hr is not None else (None, None)
    for ax, n in zip(np.atleast_1d(axes), names):
        img = panels[n]
        if n.startswith("|error|"):
            ax.imshow(img, cmap="magma")
        else:
            ax.imshow(img, cmap="RdBu_r", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(n, fontsize=9)
        ax.axis("off")
    out.append(_save(fig, os.path.join(run_dir, "comparison.png")))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for m, vals in per_frame.items():
        ax.plot(np.arange(len(vals)), vals, label=m, lw=1)
    ax.set_xlabel("frame index (held-out sequence)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("temporal consistency: error over frames")
    ax.legend(fontsize=8)
    out.append(_save(fig, os.path.join(run_dir, "temporal.png")))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for stage, hist in histories.items():
        ep = [h["epoch"] for h in hist]
        axes[0].plot(ep, [h["val"]["psnr"] for h in hist], marker="o", label=f"{stage} validation")
        axes[0].plot(ep, [h["train"]["psnr"] for h in hist], ls="--", label=f"{stage} train")
        axes[1].plot(ep[1:], [h["loss"] for h in hist[1:]], marker="o", label=f"{stage} loss")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("PSNR (dB)")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("training MSE")
    axes[1].set_yscale("log")
    for a in axes:
        a.legend(fontsize=8)
    out.append(_save(fig, os.path.join(run_dir, "curves.png")))
    return out
