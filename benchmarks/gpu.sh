#!/usr/bin/env bash
# GPU figures for BENCHMARKS.md, run from the repository root on a CUDA machine whose Python
# already has torch 2.11 (the project's own venv works too: `PY=.venv/bin/python bash benchmarks/gpu.sh`).
# Writes its logs to ${OUT:-outputs/gpu_bench} (data and runs under ${WORK:-/tmp/meanflowse_gpu}).
# Sections run in the order of SECTIONS (most wanted first, for short device sessions):
#   train     multi-step training of the full NCSN++ at batch 8, fp32 (does it fit in memory?)
#   enhance   RTF by NFE, pipeline overhead, a folder run with/without overlap_io (untrained full NCSN++)
#   objective MeanFlow step vs CFM step, full NCSN++
#   compile   backbones: fp32 against torch.compile, full NCSN++ and tiny
#   bf16      the training run again with bf16-mixed
#   backbones every preset, fp32 and bf16 autocast
set -u
PY=${PY:-python3}
OUT=${OUT:-outputs/gpu_bench}
WORK=${WORK:-/tmp/meanflowse_gpu}
STEPS=${STEPS:-150}
SECTIONS=${SECTIONS:-train enhance objective compile bf16 backbones}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
TRAIN="backbone=ncsnpp trainer=gpu data.batch_size=8 data.num_workers=6 paths.data_dir=$WORK/data"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
for section in $SECTIONS; do
  echo "### $section"
  case $section in
    train) $PY -m benchmarks.bench_train --out "$WORK/fp32" --steps "$STEPS" $TRAIN 2>&1 \
             | tail -n 12 | tee "$OUT/train_fp32.txt" ;;
    enhance) $PY -m benchmarks.make_checkpoint --out "$WORK/full/checkpoints/last.ckpt" backbone=ncsnpp \
             && $PY -m benchmarks.bench_enhance --ckpt "$WORK/full/checkpoints/last.ckpt" --device cuda \
                  --only rtf,folder 2>&1 | tee "$OUT/enhance.txt" ;;
    objective) $PY -m benchmarks.bench_objective --device cuda --backbone ncsnpp --batch 2 --frames 256 \
                 --repeats 10 2>&1 | tee "$OUT/objective.txt" ;;
    compile) $PY -m benchmarks.bench_backbones --device cuda --presets ncsnpp,ncsnpp_tiny --batches 1,4 \
               --modes fp32,compile,bf16+compile --repeats ${REPEATS:-20} 2>&1 | tee "$OUT/compile.txt" ;;
    bf16) $PY -m benchmarks.bench_train --out "$WORK/bf16" --steps "$STEPS" $TRAIN \
            trainer.precision=bf16-mixed 2>&1 | tail -n 12 | tee "$OUT/train_bf16.txt" ;;
    backbones) $PY -m benchmarks.bench_backbones --device cuda --presets ncsnpp,ncsnpp_small,ncsnpp_tiny,dcunet \
                 --batches 1,4 --modes fp32,bf16 --repeats ${REPEATS:-20} 2>&1 | tee "$OUT/backbones.txt" ;;
    *) echo "unknown section $section" ;;
  esac
done
