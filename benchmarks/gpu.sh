#!/usr/bin/env bash
# GPU figures for BENCHMARKS.md, run from the repository root on a CUDA machine whose Python
# already has torch 2.11 (the project's own venv works too: `PY=.venv/bin/python bash benchmarks/gpu.sh`).
# Writes its logs to ${OUT:-outputs/gpu_bench} (data and runs under ${WORK:-/tmp/meanflowse_gpu}).
set -u
PY=${PY:-python3}
OUT=${OUT:-outputs/gpu_bench}
STEPS=${STEPS:-300}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

echo "### backbones: fp32 and bf16 autocast, batch 1 and 4 x 256 frames"
$PY -m benchmarks.bench_backbones --device cuda --presets ncsnpp,ncsnpp_small,ncsnpp_tiny,dcunet \
    --batches 1,4 --modes fp32,bf16 --repeats ${REPEATS:-20} 2>&1 | tee "$OUT/backbones.txt"

echo "### MeanFlow step vs CFM step, full NCSN++, batch 2 x 256 frames"
$PY -m benchmarks.bench_objective --device cuda --backbone ncsnpp --batch 2 --frames 256 \
    --repeats 10 2>&1 | tee "$OUT/objective.txt"

WORK=${WORK:-/tmp/meanflowse_gpu}
TRAIN="backbone=ncsnpp trainer=gpu data.batch_size=8 data.num_workers=6 paths.data_dir=$WORK/data"
echo "### multi-step training of the full NCSN++ (MeanFlow, func JVP), fp32"
$PY -m benchmarks.bench_train --out "$WORK/fp32" --steps "$STEPS" $TRAIN 2>&1 | tail -n 12 | tee "$OUT/train_fp32.txt"
echo "### the same, bf16-mixed (JVP in fp32)"
$PY -m benchmarks.bench_train --out "$WORK/bf16" --steps "$STEPS" $TRAIN trainer.precision=bf16-mixed \
    2>&1 | tail -n 12 | tee "$OUT/train_bf16.txt"

echo "### backbones: torch.compile (default mode), full NCSN++ and tiny"
$PY -m benchmarks.bench_backbones --device cuda --presets ncsnpp,ncsnpp_tiny --batches 4 \
    --modes compile --repeats ${REPEATS:-20} 2>&1 | tee "$OUT/compile.txt"
