#!/bin/bash
# The fixed-domain study behind README's "Fixed domains" table: generated shallow-water sequences on
# one domain with bottom topography and a daily periodic forcing (hourly CF NetCDF, h, u and v), the
# trailing 20 % of the hours held out. Every row is an ordinary training run with
# configs/fixed_domain.yaml; only the conditioning differs.
#   OUT=runs/fixed_domain bash jobs/fixed_domain.sh
set -euo pipefail
OUT=${OUT:-runs/fixed_domain}
mkdir -p "$OUT"
DATA="$OUT/swe_domain.nc"
STATIC="$OUT/swe_domain_static.nc"
[ -f "$DATA" ] || python -m hpcvsr.data swe --out "$DATA" --static-out "$STATIC" --frames 744 --size 64 96 --seed 1 \
  --domain-seed 7 --topography 0.3 --forcing 0.2 --quiet
run() { local name=$1; shift; [ -f "$OUT/$name/metrics.json" ] || python -m hpcvsr.train --run-dir "$OUT/$name" \
  --config configs/fixed_domain.yaml --set data.path="$DATA" --set data.var=h "$@" > "$OUT/$name.log" 2>&1; }
NONE=(--set condition.location_channels=0 --set condition.time_features=false)
TOPO=(--set data.static.path="$STATIC" --set "data.static.vars=[orography]")
run plain --set pipeline=2d "${NONE[@]}"
run topography --set pipeline=2d "${NONE[@]}" "${TOPO[@]}"
run location --set pipeline=2d --set condition.time_features=false
run location_time --set pipeline=2d
run topography_location_time --set pipeline=2d "${TOPO[@]}"
run topography_location_time_3d --set pipeline=2d_3d "${TOPO[@]}"
python -m hpcvsr.summarize "$OUT"/*/ --json "$OUT/summary.json"
