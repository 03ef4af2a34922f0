"""The table of docs/pairs.md from the outputs of jobs/pairs.sh: python jobs/pairs_table.py runs/pairs/x2 [runs/pairs/x4 ...]

Every row is on the held-out pair (seed 1001) against its fine run: PSNR on the training data's range, RMSE in metres,
PSNR over the first, middle and last third of the frames, the HF energy ratio and the mass error.
"""

import json
import math
import os
import sys

import numpy as np
import xarray as xr


def row(name: str, m: dict, thirds: list) -> str:
    cells = [f"{m['psnr']:.2f}", f"{m['rmse_phys']:.4f}"] + [f"{t:.2f}" for t in thirds] + [f"{m['hf_energy_ratio']:.3f}", f"{m['mass_rel_err']:.1e}"]
    return f"| {name} | " + " | ".join(cells) + " |"


def from_run(path: str) -> dict:
    return json.load(open(os.path.join(path, "metrics.json")))["metrics"]["test"]


def infer_thirds(nc: str) -> list:
    """PSNR over each third from the per-frame PSNR the infer command stores (every frame has the same pixels)."""
    with xr.open_dataset(nc) as ds:
        psnr = np.asarray(ds["metric_frame_psnr"].values, np.float64)
    parts = [np.flatnonzero(np.minimum(2, np.arange(len(psnr)) * 3 // len(psnr)) == k) for k in range(3)]  # as the training comparison
    return [-10 * math.log10(np.mean(10 ** (-psnr[p] / 10))) for p in parts]


for d in sys.argv[1:]:
    print(f"\n{os.path.basename(d.rstrip('/'))}:\n")
    print("| method (input: the coarse run; no degradation) | PSNR (dB) | RMSE (m) | PSNR 1st third | PSNR 2nd third | PSNR last third "
          "| HF energy SR/HR | mass rel. err |")
    print("|---|---|---|---|---|---|---|---|")
    paired, tuned = from_run(os.path.join(d, "paired")), from_run(os.path.join(d, "finetuned"))
    for key, name in (("bicubic", "bicubic of the coarse run"), ("qm_bicubic", "quantile mapping (xsdba EQM) + bicubic")):
        if key in paired:
            print(row(name, paired[key], [t["psnr"] for t in paired[key]["lead_time"]]))
    deg = json.load(open(os.path.join(d, "degraded_on_coarse.json")))["metrics"]
    print(row("2d_3d trained on degraded fine frames (bicubic), applied to the coarse run", deg, infer_thirds(os.path.join(d, "degraded_on_coarse.nc"))))
    for key in ("2d", "2d_3d"):
        print(row(f"{key} trained on the pair", paired[key], [t["psnr"] for t in paired[key]["lead_time"]]))
    for key in ("2d", "2d_3d"):
        print(row(f"{key} pretrained on degraded frames, then fine-tuned on the pair", tuned[key], [t["psnr"] for t in tuned[key]["lead_time"]]))
