#!/bin/bash
# The multi-variable study behind README's "Several variables" table: one model super-resolves h, u
# and v of the generated shallow-water sequences together (data.vars), next to one single-variable
# model per variable with the same budget (the quickstart defaults: same epochs, patches and
# held-out sequence). Every row is an ordinary training run.
#   OUT=runs/variables bash jobs/variables.sh
set -euo pipefail
OUT=${OUT:-runs/variables}
mkdir -p "$OUT"
run() { local name=$1; shift; [ -f "$OUT/$name/metrics.json" ] || python -m hpcvsr.train --run-dir "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1; }
run huv --set "data.vars=[h, u, v]"
for v in h u v; do run "$v" --set data.var="$v"; done
python -m hpcvsr.summarize "$OUT"/huv/ "$OUT"/h/ "$OUT"/u/ "$OUT"/v/ --json "$OUT/summary.json"
