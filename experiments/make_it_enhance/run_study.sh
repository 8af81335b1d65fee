#!/usr/bin/env bash
# The study's training runs, one after the other (2 cores: never two at once), each followed by
# its learning-curve evaluation. Usage: bash experiments/make_it_enhance/run_study.sh [NAME ...]
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-650}
COMMON=(experiment=study_cpu logger=csv trainer.max_steps=$STEPS
        callbacks.study_checkpoints.every_n_train_steps=$((STEPS / 5)))
declare -A ARGS=(
  [velocity]="mf.parametrization=velocity"
  [data]="mf.parametrization=data"
  [recipe]="mf.parametrization=data curriculum.time_sampler=logit_normal curriculum.logit_normal_mean=1.5 curriculum.lr_warmup_steps=50 curriculum.lr_decay=cosine"
  [cfm]="mf.parametrization=data mf.weight_final=0"
  [bridge]="mf.parametrization=data path.sigma_max=0"
  [c1]="mf.parametrization=data mf.first_order_coef=1.0"
  [two_pass]="mf.parametrization=data mf.formulation=two_pass"
  [noclip]="mf.parametrization=data mf.jvp_clip=null"
  [rms01]="mf.parametrization=data mf.jvp_clip_mode=rms mf.jvp_clip=0.1"
  [rms1]="mf.parametrization=data mf.jvp_clip_mode=rms mf.jvp_clip=1.0"
)
declare -A EVAL=([cfm]="--sampler euler --nfes 1 5 10" [data]="--sampler euler_mf --nfes 1 2 5"
                [recipe]="--sampler euler_mf --nfes 1 2")
for name in "${@:-data recipe velocity cfm c1 two_pass noclip bridge}"; do
  for n in $name; do
    if [ "$n" = tests ]; then  # the test suite, where it cannot compete with a training
      echo "=== tests ($(date -u +%H:%M:%S))"; $PY -m pytest -q -x > outputs/study/tests.log 2>&1
      tail -3 outputs/study/tests.log; continue
    fi
    echo "=== $n: ${ARGS[$n]} ($(date -u +%H:%M:%S))"
    $PY train.py "${COMMON[@]}" study_name=s$STEPS-$n ${ARGS[$n]} > outputs/study/s$STEPS-$n.log 2>&1 \
      || { echo "training $n failed: outputs/study/s$STEPS-$n.log"; continue; }
    $PY experiments/make_it_enhance/study.py curves outputs/study/s$STEPS-$n --name s$STEPS-$n \
      ${EVAL[$n]:---sampler euler_mf --nfes 1}
  done
done
echo "=== done ($(date -u +%H:%M:%S))"
