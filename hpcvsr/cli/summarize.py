"""``hpcvsr summarize`` (``python -m hpcvsr.summarize``): parse the arguments, call :mod:`hpcvsr.report.summarize`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from hpcvsr.errors import UserError, cli
from hpcvsr.io.atomic import write_json
from hpcvsr.report import summarize as lib
from hpcvsr.report.tables import METHOD_ORDER


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hpcvsr.summarize", description=lib.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    rows = []
    for d in args.runs:
        path = os.path.join(d, "metrics.json")
        if not os.path.exists(path):
            raise UserError(f"{d}: no metrics.json (unfinished run?)")
        m = json.load(open(path))
        names = m.get("variables") or [m.get("var", "")]
        by_var = m["metrics"]["test"] if len(names) > 1 else {names[0]: m["metrics"]["test"]}  # several variables: keyed by variable
        for var, test in by_var.items():
            for method in [k for k in METHOD_ORDER if k in test]:
                t = test[method]
                rows.append({"run": os.path.basename(os.path.normpath(d)), "variable": var, "pipeline": m["pipeline"],
                             "degrade": f"x{m['scale']} {m['degrade']}", "method": method, "psnr": t["psnr"], "ssim": t["ssim"], "mse": t["mse"],
                             "mae": t["mae"], "rmse_phys": t["rmse_phys"], "mass_rel_err": t.get("mass_rel_err"),
                             "hf_energy_ratio": t.get("hf_energy_ratio"), "gain_vs_bicubic_db": t["psnr"] - test["bicubic"]["psnr"],
                             "seconds": m["seconds"]})
    print("| run | variable | degradation | method | PSNR (dB) | vs bicubic (dB) | SSIM | MSE | MAE | RMSE (phys) | mass rel. err | HF energy SR/HR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['variable']} | {r['degrade']} | {r['method']} | {r['psnr']:.2f} | {r['gain_vs_bicubic_db']:+.2f} | {r['ssim']:.4f} | "
              f"{r['mse']:.3e} | {r['mae']:.3e} | {r['rmse_phys']:.3e} | {r['mass_rel_err']:.2e} | {r['hf_energy_ratio']:.3f} |")
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
