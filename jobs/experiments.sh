#!/bin/bash
# The experiments behind README's result tables, one after the other on one machine.
#   OUT=runs/experiments bash jobs/experiments.sh
# Each is an ordinary training run; python -m hpcvsr.summarize tabulates them afterwards.
set -euo pipefail
OUT=${OUT:-runs/experiments}
SHARED=${SHARED:-../shared/data}
mkdir -p "$OUT"
run() { local name=$1; shift; [ -f "$OUT/$name/metrics.json" ] || python -m hpcvsr.train --run-dir "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1; }

# transfer learning: the 2D stage from scratch, from hpcvsr's bundled weights, from the authors' FSRCNN-s
run tl_scratch --config configs/swe_2d.yaml --set model2d.init=
run tl_bundled --config configs/swe_2d.yaml --set model2d.init=bundled
if [ -f "$SHARED/pretrained/fsrcnn/fsrcnn-s/x2.mat" ]; then
  run tl_fsrcnn_s --config configs/swe_2d.yaml --set model2d.init="$SHARED/pretrained/fsrcnn/fsrcnn-s/x2.mat"
fi
# where the 3D stage helps: 2d_3d against 2d on the same crop, several degradations
run x2_bicubic --config configs/quickstart.yaml
run x4_point --config configs/swe_point_x4.yaml
run x4_blockmean --config configs/swe_blockmean_x4.yaml
run x4_bicubic --config configs/quickstart.yaml --set degrade.scale=4
# the other pipelines at x2
run p_3d --config configs/swe_3d.yaml
run p_joint --config configs/swe_joint.yaml
run p_3d_2d --config configs/swe_3d_2d.yaml
# the study's own 3D layout: 'valid' layers, 4 px border cropped from every method
run x2_valid3d --config configs/quickstart.yaml --set model3d.kwargs="{residual: false, same_padding: false}"
# moving phantoms
run phantom --config configs/phantom.yaml
# a real video clip (Vid4 "walk", luma): x4 blur-decimate, the trailing 20 % of its frames held out
if [ -d "$SHARED/vid4/walk" ]; then
  run vid4_walk --config configs/video.yaml --set data.path="$SHARED/vid4/walk"
  run vid4_walk_c --config configs/video.yaml --set data.path="$SHARED/vid4/walk" --set degrade.constrain=true
fi
# the same with the exact consistency constraint (degrade.constrain): outputs degrade back to their inputs
run x2_bicubic_c --config configs/quickstart.yaml --set degrade.constrain=true
run x4_point_c --config configs/swe_point_x4.yaml --set degrade.constrain=true
run x4_blockmean_c --config configs/swe_blockmean_x4.yaml --set degrade.constrain=true
run phantom_c --config configs/phantom.yaml --set degrade.constrain=true
# a loss on the finite differences: more high-wavenumber energy, at what PSNR
run x2_bicubic_grad --config configs/quickstart.yaml --set train2d.grad_weight=1 --set train3d.grad_weight=1
python -m hpcvsr.summarize "$OUT"/*/ --json "$OUT/summary.json"
