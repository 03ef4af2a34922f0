#!/bin/bash
# The 3D training recipe on hourly-like data (README "The 3D training recipe"): 744 strongly correlated
# frames of 32x48 from the shallow-water generator (eddies scaled to the small grid, a short frame
# interval), the trailing 20 % held out; the quickstart settings with the default one-epoch warm-up of
# the 3D stage, and without it (the earlier recipe, whose 3D stage stalled).
#   OUT=runs/hourly bash jobs/hourly.sh
set -euo pipefail
OUT=${OUT:-runs/hourly}
mkdir -p "$OUT"
DATA="$OUT/swe_hourly.nc"
[ -f "$DATA" ] || python -m hpcvsr.data swe --out "$DATA" --frames 744 --size 32 48 --k0 6 --output-every 0.01 --seed 2 --quiet
run() { local name=$1; shift; [ -f "$OUT/$name/metrics.json" ] || python -m hpcvsr.train --run-dir "$OUT/$name" \
  --set data.source=archive --set data.path="$DATA" --set data.var=h "$@" > "$OUT/$name.log" 2>&1; }
run warmup
run no_warmup --set train3d.warmup=0
python -m hpcvsr.summarize "$OUT"/warmup/ "$OUT"/no_warmup/ --json "$OUT/summary.json"
