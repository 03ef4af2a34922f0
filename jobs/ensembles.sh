#!/usr/bin/env bash
# Ensembles of the generative stage (pipeline 2d_3d_gen), the study behind docs/ensembles.md: SWE h at x4 block mean
# (constrained) and at x2 bicubic, and a rain-like field (80 % zeros, heavy-tailed, bounded at 0; jobs/rainlike.py)
# at x4 block mean (constrained), each trained on seed 1 and scored with 16 members on the held-out seed 1001.
#
#   bash jobs/ensembles.sh [OUT]            (default runs/ensembles; about 15 minutes per case on 2 CPU cores)
#   python jobs/ensembles_table.py OUT --figures docs      (the tables and figures of docs/ensembles.md)
set -euo pipefail
OUT=${1:-runs/ensembles}
PY=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT/data"
for SEED in 1 1001; do
  [ -e "$OUT/data/swe$SEED.nc" ] || $PY -m hpcvsr.data swe --frames 120 --size 128 128 --seed $SEED --out "$OUT/data/swe$SEED.nc" --quiet
  [ -e "$OUT/data/rain$SEED.nc" ] || $PY "$HERE/rainlike.py" "$OUT/data/swe$SEED.nc" "$OUT/data/rain$SEED.nc" --seed $SEED
done
GEN=(--set pipeline=2d_3d_gen ${GEN_BUDGET:-})
$PY -m hpcvsr.train --config swe_blockmean_x4 --run-dir "$OUT/swe_x4_block_mean" "${GEN[@]}" --set degrade.constrain=true
$PY -m hpcvsr.train --run-dir "$OUT/swe_x2_bicubic" "${GEN[@]}"
$PY -m hpcvsr.train --run-dir "$OUT/rain_x4_block_mean" "${GEN[@]}" --set data.source=archive --set "data.path=$OUT/data/rain1.nc" \
  --set "data.test_path=$OUT/data/rain1001.nc" --set data.var=rain --set degrade.method=block_mean --set degrade.scale=4 \
  --set degrade.constrain=true --set data.normalise=fixed --set "data.norm_range=[0,40]" --set train3d.patch=40
# the command-line ensemble of the rain case: 16 members in CF NetCDF with their scores against the fine field
[ -e "$OUT/rain_members.nc" ] || $PY -m hpcvsr.infer --run-dir "$OUT/rain_x4_block_mean" --input "$OUT/data/rain1001.nc" --var rain --degrade \
  --members 16 --seed 0 --output "$OUT/rain_members.nc" --stats "$OUT/rain_members.json"
