#!/usr/bin/env bash
# GPU figures for BENCHMARKS.md, run from the repository root on a CUDA machine whose Python
# already has torch 2.11 (the project's own venv works too: `PY=.venv/bin/python bash benchmarks/gpu.sh`).
# Writes its logs to ${OUT:-outputs/gpu_bench}. Each part runs on even if an earlier one fails.
set -u
PY=${PY:-python3}
OUT=${OUT:-outputs/gpu_bench}
STEPS=${STEPS:-300}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

echo "### backbones: fp32 and bf16 autocast, batch 1 and 4 x 256 frames"
$PY -m benchmarks.bench_backbones --device cuda --presets ncsnpp,ncsnpp_small,ncsnpp_tiny,dcunet \
    --batches 1,4 --modes fp32,bf16 --repeats 20 2>&1 | tee "$OUT/backbones.txt"

echo "### backbones: torch.compile (default mode), full NCSN++ and tiny"
$PY -m benchmarks.bench_backbones --device cuda --presets ncsnpp,ncsnpp_tiny --batches 4 \
    --modes compile --repeats 20 2>&1 | tee "$OUT/compile.txt"

echo "### MeanFlow step vs CFM step, full NCSN++, batch 2 x 256 frames"
$PY -m benchmarks.bench_objective --device cuda --backbone ncsnpp --batch 2 --frames 256 \
    --repeats 10 2>&1 | tee "$OUT/objective.txt"

echo "### multi-step training of the full NCSN++ (MeanFlow, func JVP) on the synthetic corpus"
$PY train.py backbone=ncsnpp trainer=gpu trainer.max_steps="$STEPS" trainer.max_epochs=-1 \
    logger=csv callbacks.progress=null trainer.enable_progress_bar=false callbacks.val_metrics=null \
    callbacks.model_checkpoint=null callbacks.best_si_sdr=null \
    trainer.log_every_n_steps=10 trainer.check_val_every_n_epoch=1000 \
    data.batch_size=8 data.num_workers=6 data.synthetic.num_train=160 \
    data.synthetic.num_valid=4 data.synthetic.num_test=4 \
    curriculum.mf_warmup_frac=0.2 hydra.run.dir="$OUT/train" 2>&1 | tail -n 40 | tee "$OUT/train.txt"
