#!/usr/bin/env bash
# One row of experiments/real_voices: train the demo recipe with a corpus change, score its test
# split, then the real-voice check.   usage: experiments/real_voices/run.sh TAG [overrides...]
# e.g. experiments/real_voices/run.sh R26s1 seed=1   (the README's "Recipes" says what the older rows add)
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=$1; shift
PY=${PY:-.venv/bin/python}
RUN=outputs/real_voices/runs/$TAG
$PY train.py experiment=demo task_name="$TAG" hydra.run.dir="$RUN" data.base_dir="outputs/real_voices/data_$TAG" "$@"
$PY eval.py ckpt_path="$RUN/checkpoints/last.ckpt" split=test output="$RUN/enhanced" overwrite=true progress=false speaker=false
$PY experiments/real_voices/check.py "$RUN/checkpoints/last.ckpt" --tag "$TAG"
