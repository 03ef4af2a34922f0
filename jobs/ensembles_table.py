"""The tables and figures of docs/ensembles.md from the runs of jobs/ensembles.sh.

    python jobs/ensembles_table.py OUT [--figures docs]

For every run OUT/<case> (a finished 2d_3d_gen run): the held-out deterministic rows and the
ensemble's row from its metrics.json, the issue's criteria checked, and two figures per case
(rank histogram; radially averaged power spectra of members, ensemble mean and truth).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess

CASES = {"swe_x4_block_mean": "SWE h, x4 block mean, constrained", "swe_x2_bicubic": "SWE h, x2 bicubic",
         "rain_x4_block_mean": "rain-like (80 % zeros), x4 block mean, constrained, bounded at 0"}


def rows(run: str) -> tuple[dict, dict]:
    m = json.load(open(os.path.join(run, "metrics.json")))
    return m["metrics"]["test"], m


def table(test: dict, units: str) -> str:
    det, gen = test["2d_3d"], test["2d_3d_gen"]
    head = ["method", "PSNR (dB)", f"RMSE ({units})", f"CRPS ({units})", "CRPS / MAE 2d_3d", "spread-skill", "HF energy",
            "rank hist. distance from flat", *[f"FSS > {t} {units}" for t in gen.get("fss", {})], "mass rel. err", "consistency RMSE"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in ("bicubic", "2d", "2d_3d", "2d_3d_gen"):
        r = test[name]
        ens = name == "2d_3d_gen"
        cells = [name + (f" (mean of {r['members']})" if ens else ""), f"{r['psnr']:.2f}", f"{r['rmse_phys']:.4g}", f"{r['crps']:.4g}",
                 f"{r['crps'] / det['crps']:.3f}", f"{r['spread_skill']:.3f}" if ens else "-",
                 f"{r['hf_energy_ratio']:.3f}" + (" (members)" if ens else ""), f"{r['rank_flatness']:.3f}" if ens else "-",
                 *[f"{v:.3f}" if ens else "-" for v in gen.get("fss", {}).values()],
                 f"{r['mass_rel_err']:.2e}" if "mass_rel_err" in r else "-",
                 f"{r['consistency_rmse_phys']:.2e}" if "consistency_rmse_phys" in r else "-"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def criteria(test: dict, *, rain: bool) -> list[str]:
    det, gen = test["2d_3d"], test["2d_3d_gen"]
    checks = [("CRPS <= 0.85 MAE(2d_3d)" if not rain else "CRPS < MAE(2d_3d)", gen["crps"] / det["crps"], (0, 0.85 if not rain else 1.0)),
              ("members' HF energy ratio in " + ("[0.9, 1.1]" if not rain else "[0.8, 1.25]"), gen["hf_energy_ratio"], (0.9, 1.1) if not rain else (0.8, 1.25))]
    if rain and gen.get("members_min") is not None:
        checks.append(("members never negative (smallest member value >= 0)", gen["members_min"], (0, float("inf"))))
    if not rain:
        checks += [("spread-skill in [0.8, 1.2]", gen["spread_skill"], (0.8, 1.2)),
                   ("ensemble-mean PSNR - 2d_3d PSNR >= -0.3 dB", gen["psnr"] - det["psnr"], (-0.3, 99))]
    return [f"{'met' if lo <= v <= hi else 'NOT met'}: {what} ({v:.3f})" for what, v, (lo, hi) in checks]


def figures(name: str, test: dict, folder: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = test["2d_3d_gen"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    h = gen["rank_histogram"]
    ax[0].bar(range(1, len(h) + 1), h, color="tab:blue")
    ax[0].axhline(1 / len(h), color="k", ls="--", lw=1, label="flat")
    ax[0].set(xlabel="rank of the truth among the members", ylabel="frequency", title=f"rank histogram ({gen['members']} members)")
    ax[0].legend()
    s = gen["spectrum"]
    for key, color in (("truth", "black"), ("members", "tab:red"), ("mean", "tab:blue")):
        ax[1].loglog(s["k"], s[key], "-", color=color, label=key)
    ax[1].axvline(1 / float(name.split("_x")[1][0]), color="gray", ls=":", lw=1, label="coarse Nyquist")
    ax[1].set(xlabel="radial wavenumber (fraction of Nyquist)", ylabel="power", title="power spectra, held-out frames")
    ax[1].legend()
    fig.suptitle(CASES.get(name, name))
    fig.tight_layout()
    path = os.path.join(folder, f"ensembles_{name}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [path]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--figures", default="")
    a = p.parse_args(argv)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"(hpcvsr {rev}; runs in {a.out})\n")
    for name in CASES:
        run = os.path.join(a.out, name)
        if not os.path.exists(os.path.join(run, "metrics.json")):
            continue
        test, m = rows(run)
        units = m["normalisation"].get("units") or "phys"
        print(f"### {CASES[name]}\n\n{table(test, units)}\n")
        print("\n".join(f"- {c}" for c in criteria(test, rain=name.startswith("rain"))) + "\n")
        if a.figures:
            print("figures: " + ", ".join(figures(name, test, a.figures)) + "\n")


if __name__ == "__main__":
    main()
