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
  [meanflow]=""                                   # the demo recipe of the study: MeanFlow, c 0.5
  [meanflow_c1]="mf.first_order_coef=1.0"
  [imf]="mf_objective=imf"                        # predicted tangent (beta 0), c 1
  [imf_vr]="mf_objective=imf mf.beta=0.06"         # the variance paper's gradient-MSE optimum beta* ~ 0.94 in its notation (beta weights the predicted velocity) = our 0.06
  [split]="mf_objective=split"
  [cfm_vel]="mf_objective=cfm mf.parametrization=velocity"   # one-step CFM: an Euler jump from the prior
  [meanflow_vel]="mf.parametrization=velocity"
)
declare -A SAMPLER=([cfm]=euler [cfm_vel]=euler)
mkdir -p outputs/family

# The test split at NFE 1 with every metric, at NFE 2 and 4 without DNSMOS and speaker similarity
# (those two take most of an evaluation's 2 minutes on 2 cores).
evaluate() {
  local recipe=$1 run=$2
  for nfe in 1 2 4; do
    local light=""; [ "$nfe" = 1 ] || light="dnsmos=false speaker=false"
    $PY eval.py ckpt_path=$run/checkpoints/last.ckpt split=test output=$run/enhanced-nfe$nfe overwrite=true \
      sampler.name=${SAMPLER[$recipe]:-euler_mf} sampler.nfe=$nfe $light >> $run.log 2>&1 \
      || echo "evaluation at NFE $nfe failed: $run.log"
  done
}
if [ "${1:-}" = --eval-only ]; then  # bash run.sh --eval-only RECIPE:SEED ...: a finished training
  shift
  for job in "$@"; do evaluate "${job%%:*}" "outputs/family/${job%%:*}-s${job##*:}"; done
  exit 0
fi
for job in "$@"; do
  recipe=${job%%:*} seed=${job##*:}
  run=outputs/family/$recipe-s$seed
  echo "=== $recipe seed $seed: ${ARGS[$recipe]} ($(date -u +%H:%M:%S))"
  start=$(date +%s)
  # the demo recipe as the study ran it: before the natural training voice (data.synthetic.train_natural_share,
  # b3596aa), the adaptive weighting (mf.adaptive_p, ee2ad06) and the larger nearly clean share (R26) of
  # experiments/real_voices
  $PY train.py experiment=demo data.synthetic.train_natural_share=0 data.synthetic.near_clean_share=0.2 mf.adaptive_p=0 task_name=family seed=$seed hydra.run.dir=$run ${ARGS[$recipe]} \
    > outputs/family/$recipe-s$seed.log 2>&1 || { echo "training failed: outputs/family/$recipe-s$seed.log"; continue; }
  echo "$(( $(date +%s) - start ))" > $run/train_seconds.txt
  evaluate $recipe $run
done
echo "=== done ($(date -u +%H:%M:%S))"
