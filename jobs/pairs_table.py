"""The tables and figure of docs/pairs.md from the outputs of jobs/pairs.sh: python jobs/pairs_table.py OUT/x2 [OUT/x4 ...]

Every row is on the held-out pair (seed 1001) against its fine run: PSNR, RMSE in metres, PSNR over the first, middle
and last third of the frames, the HF energy ratio and the mass error. Each run reports PSNR on the range of its own
training runs (one pair's range is narrower than four's); every PSNR here is moved to one range, that of the four
training runs (the degradation-trained runs' and the 4-pair runs'), so that the rows compare as their RMSE do. The
figure (docs/pairs_temporal.png, or the path in $FIGURE) shows PSNR over the held-out frames, on the same range.
"""

import json
import math
import os
import sys

import numpy as np
import xarray as xr

PAIRS = (1, 2, 4)


def row(name: str, m: dict, thirds: list, shift: float) -> str:
    """A table row; ``shift`` (dB) moves the run's PSNRs onto the common range."""
    cells = [f"{m['psnr'] + shift:.2f}", f"{m['rmse_phys']:.4f}"] + [f"{t + shift:.2f}" for t in thirds]
    cells += [f"{m['hf_energy_ratio']:.3f}", f"{m['mass_rel_err']:.1e}"]
    return f"| {name} | " + " | ".join(cells) + " |"


def run(d: str, name: str) -> dict:
    return json.load(open(os.path.join(d, name, "metrics.json")))


def data_range(d: str, name: str) -> float:
    """The range PSNR is computed on in run ``name`` (its training runs' min to max)."""
    n = run(d, name)["normalisation"]
    return float(n["hi"]) - float(n["lo"])


def shift_db(d: str, name: str, common: float) -> float:
    """dB that move run ``name``'s PSNR onto the range ``common``: 20 log10(common / its own range)."""
    return 20 * math.log10(common / data_range(d, name))


def infer_psnr(d: str, name: str) -> np.ndarray:
    with xr.open_dataset(os.path.join(d, f"{name}_on_coarse.nc")) as ds:
        return np.asarray(ds["metric_frame_psnr"].values, np.float64)


def thirds(psnr: np.ndarray) -> list:
    """PSNR over each third from per-frame PSNR (every frame has the same pixels), as the training comparison splits them."""
    parts = [np.flatnonzero(np.minimum(2, np.arange(len(psnr)) * 3 // len(psnr)) == k) for k in range(3)]
    return [-10 * math.log10(np.mean(10 ** (-psnr[p] / 10))) for p in parts]


def table(d: str) -> dict:
    """Print the table of one scale; return the per-frame PSNR of the figure's methods."""
    print(f"\n{os.path.basename(d.rstrip('/'))}:\n")
    print("| method (input: the coarse run; no degradation) | PSNR (dB) | RMSE (m) | PSNR 1st third | PSNR 2nd third | PSNR last third "
          "| HF energy SR/HR | mass rel. err |")
    print("|---|---|---|---|---|---|---|---|")
    most = run(d, f"paired_{PAIRS[-1]}")
    common = data_range(d, f"paired_{PAIRS[-1]}")  # the range of the four training runs
    test = most["metrics"]["test"]
    print(row("bicubic of the coarse run", test["bicubic"], [t["psnr"] for t in test["bicubic"]["lead_time"]], 0.0))
    if "qm_bicubic" in test:
        print(row(f"quantile mapping (xsdba EQM, fitted on {PAIRS[-1]} training pairs) + bicubic", test["qm_bicubic"],
                  [t["psnr"] for t in test["qm_bicubic"]["lead_time"]], 0.0))
    for p in ("2d", "2d_3d"):
        m = json.load(open(os.path.join(d, f"degraded_{p}_on_coarse.json")))["metrics"]
        name = f"{p} trained on degraded fine frames (bicubic, 4 runs), applied to the coarse run"
        print(row(name, m, thirds(infer_psnr(d, f"degraded_{p}")), shift_db(d, f"degraded_{p}", common)))
    rows = (("paired", "2d_3d trained on {n} pair(s) from scratch"),
            ("finetuned", "2d_3d pretrained on degraded frames, fine-tuned on {n} pair(s)"))
    for kind, text in rows:
        for n in PAIRS:
            if os.path.exists(os.path.join(d, f"{kind}_{n}", "metrics.json")):
                m = run(d, f"{kind}_{n}")["metrics"]["test"]["2d_3d"]
                print(row(text.format(n=n), m, [t["psnr"] for t in m["lead_time"]], shift_db(d, f"{kind}_{n}", common)))
    curves = {"bicubic of the coarse run": most["per_frame_psnr"]["bicubic"],
              "2d_3d trained on degraded frames": (infer_psnr(d, "degraded_2d_3d") + shift_db(d, "degraded_2d_3d", common)).tolist(),
              f"2d_3d trained on {PAIRS[-1]} pairs": most["per_frame_psnr"]["2d_3d"]}
    tuned = os.path.join(d, f"finetuned_{PAIRS[-1]}", "metrics.json")
    if os.path.exists(tuned):
        tuned_shift = shift_db(d, f"finetuned_{PAIRS[-1]}", common)
        curves[f"2d_3d pretrained, fine-tuned on {PAIRS[-1]} pairs"] = [p + tuned_shift for p in json.load(open(tuned))["per_frame_psnr"]["2d_3d"]]
    return curves


def figure(all_curves: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(all_curves), figsize=(6 * len(all_curves), 3.6), squeeze=False)
    for ax, (scale, curves) in zip(axes[0], all_curves.items()):
        for name, values in curves.items():
            ax.plot(np.arange(len(values)), values, lw=1.2, label=name)
        ax.set_title(f"{scale}: held-out pair, against the fine run")
        ax.set_xlabel("frame index")
        ax.set_ylabel("PSNR (dB)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    figure({os.path.basename(d.rstrip("/")): table(d) for d in sys.argv[1:]}, os.environ.get("FIGURE", "docs/pairs_temporal.png"))
