#!/usr/bin/env bash
# Paired training on shallow-water pairs (the same flow run at a fine and a coarse resolution), the study behind
# docs/pairs.md: for each scale, a degradation-trained 2d_3d run (bicubic of the fine run) applied to the coarse
# run of a held-out seed, a pair-trained run from scratch, and a pair run fine-tuned from the degradation-trained
# one. Every number is on the held-out pair (seed 1001), against its fine run.
#
#   bash jobs/pairs.sh [OUT]          (default runs/pairs; about 10 minutes per scale on 2 CPU cores)
set -euo pipefail
OUT=${1:-runs/pairs}
PY=${PYTHON:-python}
for S in ${SCALES:-2 4}; do
  D=$OUT/x$S
  mkdir -p "$D/data"
  for SEED in 1 1001; do
    [ -e "$D/data/fine$SEED.nc" ] || $PY -m hpcvsr.data swe --frames 120 --size 128 128 --seed $SEED --out "$D/data/fine$SEED.nc" \
      --coarse-scale $S --coarse-out "$D/data/coarse$SEED.nc" --quiet
  done
  FILES=(--set data.source=archive --set "data.path=$D/data/fine1.nc" --set "data.test_path=$D/data/fine1001.nc" --set degrade.scale=$S)
  PAIRS=(--set "data.lr_path=$D/data/coarse1.nc" --set "data.lr_test_path=$D/data/coarse1001.nc")
  $PY -m hpcvsr.train --run-dir "$D/degraded" "${FILES[@]}"
  [ -e "$D/degraded_on_coarse.json" ] || $PY -m hpcvsr.infer --run-dir "$D/degraded" --input "$D/data/coarse1001.nc" --var h \
    --reference "$D/data/fine1001.nc" --output "$D/degraded_on_coarse.nc" --stats "$D/degraded_on_coarse.json"
  $PY -m hpcvsr.train --run-dir "$D/paired" "${FILES[@]}" "${PAIRS[@]}"
  $PY -m hpcvsr.train --run-dir "$D/finetuned" "${FILES[@]}" "${PAIRS[@]}" --set "model2d.init=$D/degraded" --set "model3d.init=$D/degraded"
done
