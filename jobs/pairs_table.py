"""The tables and figure of docs/pairs.md from the outputs of jobs/pairs.sh: python jobs/pairs_table.py OUT/x2 [OUT/x4 ...]

Every row is on the held-out pair (seed 1001) against its fine run: PSNR on the training data's range, RMSE in metres,
PSNR over the first, middle and last third of the frames, the HF energy ratio and the mass error. The figure
(docs/pairs_temporal.png, or the path in $FIGURE) shows PSNR over the held-out frames.
"""

import json
import math
import os
import sys

import numpy as np
import xarray as xr

PAIRS = (1, 2, 4)


def row(name: str, m: dict, thirds: list) -> str:
    cells = [f"{m['psnr']:.2f}", f"{m['rmse_phys']:.4f}"] + [f"{t:.2f}" for t in thirds] + [f"{m['hf_energy_ratio']:.3f}", f"{m['mass_rel_err']:.1e}"]
    return f"| {name} | " + " | ".join(cells) + " |"


def run(d: str, name: str) -> dict:
    return json.load(open(os.path.join(d, name, "metrics.json")))


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
    test = most["metrics"]["test"]
    print(row("bicubic of the coarse run", test["bicubic"], [t["psnr"] for t in test["bicubic"]["lead_time"]]))
    if "qm_bicubic" in test:
        print(row(f"quantile mapping (xsdba EQM, fitted on {PAIRS[-1]} training pairs) + bicubic", test["qm_bicubic"],
                  [t["psnr"] for t in test["qm_bicubic"]["lead_time"]]))
    for p in ("2d", "2d_3d"):
        m = json.load(open(os.path.join(d, f"degraded_{p}_on_coarse.json")))["metrics"]
        name = f"{p} trained on degraded fine frames (bicubic, 4 runs), applied to the coarse run"
        print(row(name, m, thirds(infer_psnr(d, f"degraded_{p}"))))
    rows = (("paired", "2d_3d trained on {n} pair(s) from scratch"),
            ("finetuned", "2d_3d pretrained on degraded frames, fine-tuned on {n} pair(s)"))
    for kind, text in rows:
        for n in PAIRS:
            if os.path.exists(os.path.join(d, f"{kind}_{n}", "metrics.json")):
                m = run(d, f"{kind}_{n}")["metrics"]["test"]["2d_3d"]
                print(row(text.format(n=n), m, [t["psnr"] for t in m["lead_time"]]))
    curves = {"bicubic of the coarse run": most["per_frame_psnr"]["bicubic"],
              "2d_3d trained on degraded frames": infer_psnr(d, "degraded_2d_3d").tolist(),
              f"2d_3d trained on {PAIRS[-1]} pairs": most["per_frame_psnr"]["2d_3d"]}
    tuned = os.path.join(d, f"finetuned_{PAIRS[-1]}", "metrics.json")
    if os.path.exists(tuned):
        curves[f"2d_3d pretrained, fine-tuned on {PAIRS[-1]} pairs"] = json.load(open(tuned))["per_frame_psnr"]["2d_3d"]
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
