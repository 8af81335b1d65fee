#!/usr/bin/env bash
# The mean-flow family study: the demo recipe (same net, corpus, 900 steps) with each objective,
# one training at a time (2 cores), each evaluated on the test split at NFE 1, 2 and 4.
# Usage: bash experiments/mean_flow_family/run.sh RECIPE:SEED ...   e.g. meanflow:0 imf:1
# Runs go to outputs/family/<recipe>-s<seed>/; table.py reads them.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
declare -A ARGS=(
  [cfm]="mf_objective=cfm"
  [meanflow]=""                                   # the demo itself: MeanFlow, c 0.5
  [meanflow_c1]="mf.first_order_coef=1.0"
  [imf]="mf_objective=imf"                        # predicted tangent (beta 0), c 1
  [imf_b094]="mf_objective=imf mf.beta=0.94"      # the variance paper's gradient-MSE optimum on its DiT
  [split]="mf_objective=split"
)
declare -A SAMPLER=([cfm]=euler)
mkdir -p outputs/family
for job in "$@"; do
  recipe=${job%%:*} seed=${job##*:}
  run=outputs/family/$recipe-s$seed
  echo "=== $recipe seed $seed: ${ARGS[$recipe]} ($(date -u +%H:%M:%S))"
  start=$(date +%s)
  $PY train.py experiment=demo task_name=family seed=$seed hydra.run.dir=$run ${ARGS[$recipe]} \
    > outputs/family/$recipe-s$seed.log 2>&1 || { echo "training failed: outputs/family/$recipe-s$seed.log"; continue; }
  echo "$(( $(date +%s) - start ))" > $run/train_seconds.txt
  for nfe in 1 2 4; do
    $PY eval.py ckpt_path=$run/checkpoints/last.ckpt split=test output=$run/enhanced-nfe$nfe overwrite=true \
      sampler.name=${SAMPLER[$recipe]:-euler_mf} sampler.nfe=$nfe >> outputs/family/$recipe-s$seed.log 2>&1 \
      || echo "evaluation at NFE $nfe failed: outputs/family/$recipe-s$seed.log"
  done
done
echo "=== done ($(date -u +%H:%M:%S))"
