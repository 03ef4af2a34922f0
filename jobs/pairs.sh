#!/usr/bin/env bash
# Paired training on shallow-water pairs (the same flow run at a fine and a coarse resolution), the study behind
# docs/pairs.md. For each scale: the same flow at seeds 1-4 (training) and 1001 (held out), each run on the fine and
# on the nested coarse grid; degradation-trained 2d and 2d_3d runs (bicubic of the four fine training runs) applied
# to the held-out coarse run; pair-trained 2d_3d runs from scratch and fine-tuned from the degradation-trained one,
# with 1, 2 and 4 training pairs. Every number is on the held-out pair, against its fine run.
#
#   bash jobs/pairs.sh [OUT]          (default runs/pairs; about 35 minutes per scale on 2 CPU cores)
#   PAIR_BUDGET="--set train2d.epochs=6 --set train3d.epochs=4" bash jobs/pairs.sh OUT    (pair runs at half the epochs)
#   K0=8 bash jobs/pairs.sh OUT      (a flow of larger eddies, which the x4 grid resolves: --k0 of hpcvsr data swe)
#   python jobs/pairs_table.py OUT/x2 OUT/x4     (the tables and the figure of docs/pairs.md)
set -euo pipefail
OUT=${1:-runs/pairs}
PY=${PYTHON:-python}
for S in ${SCALES:-2 4}; do
  D=$OUT/x$S
  mkdir -p "$D/data"
  for SEED in 1 2 3 4 1001; do
    [ -e "$D/data/fine$SEED.nc" ] || $PY -m hpcvsr.data swe --frames 120 --size 128 128 --seed $SEED --k0 ${K0:-16} --out "$D/data/fine$SEED.nc" \
      --coarse-scale $S --coarse-out "$D/data/coarse$SEED.nc" --quiet
  done
  FILES=(--set data.source=archive --set "data.path=$D/data/fine1.nc" --set "data.test_path=$D/data/fine1001.nc" --set degrade.scale=$S)
  ALL_FINE="[$D/data/fine2.nc,$D/data/fine3.nc,$D/data/fine4.nc]"
  for P in 2d 2d_3d; do  # trained on degraded frames of the four fine runs (no pairs), then applied to the held-out coarse run
    $PY -m hpcvsr.train --run-dir "$D/degraded_$P" "${FILES[@]}" --set pipeline=$P --set "data.runs=$ALL_FINE"
    [ -e "$D/degraded_${P}_on_coarse.json" ] || $PY -m hpcvsr.infer --run-dir "$D/degraded_$P" --input "$D/data/coarse1001.nc" --var h \
      --reference "$D/data/fine1001.nc" --output "$D/degraded_${P}_on_coarse.nc" --stats "$D/degraded_${P}_on_coarse.json"
  done
  for N in 1 2 4; do
    FINE_RUNS=() COARSE_RUNS=()
    for SEED in $(seq 2 $N); do FINE_RUNS+=("$D/data/fine$SEED.nc"); COARSE_RUNS+=("$D/data/coarse$SEED.nc"); done
    PAIRS=(--set "data.lr_path=$D/data/coarse1.nc" --set "data.lr_test_path=$D/data/coarse1001.nc"
           --set "data.runs=[$(IFS=,; echo "${FINE_RUNS[*]}")]" --set "data.lr_runs=[$(IFS=,; echo "${COARSE_RUNS[*]}")]")
    $PY -m hpcvsr.train --run-dir "$D/paired_$N" "${FILES[@]}" "${PAIRS[@]}" ${PAIR_BUDGET:-}
    $PY -m hpcvsr.train --run-dir "$D/finetuned_$N" "${FILES[@]}" "${PAIRS[@]}" ${PAIR_BUDGET:-} \
      --set "model2d.init=$D/degraded_2d_3d" --set "model3d.init=$D/degraded_2d_3d"
  done
done
