#!/usr/bin/env bash
# GPU figures for BENCHMARKS.md, run from the repository root on a CUDA machine whose Python
# already has torch 2.11 (the project's own venv works too: `PY=.venv/bin/python bash benchmarks/gpu.sh`).
# A machine without a package index but with torch, torchaudio, lightning, torchmetrics, onnxruntime,
# numpy, scipy and rich (the lent GPU machines' image): make the other
# wheels here with `bash benchmarks/gpu_wheels.sh` (folder .whl) and carry it; they are installed
# into /tmp/site when ${WHEELS:-.whl} exists.
# Writes its logs to ${LOGS:-outputs/gpu_bench} (data and runs under ${WORK:-/tmp/meanflowse_gpu});
# where $OUT names a folder (the lent GPU machine's folder that comes back, 8 files at most) they
# are also packed into $OUT/gpu_bench_logs.tgz after every section (a call stopped at its limit
# still returns what finished).
# Sections run in the order of SECTIONS (most wanted first, for short device sessions):
#   train     multi-step training of the full NCSN++ at batch 8, fp32 (does it fit in memory?)
#   enhance   RTF by NFE, pipeline overhead, a folder run with/without overlap_io (untrained full NCSN++)
#   objective MeanFlow step vs CFM step, full NCSN++
#   compile   backbones: fp32 against torch.compile, full NCSN++ and tiny
#   bf16      the training run again with bf16-mixed
#   backbones every preset, fp32 and bf16 autocast
#   accum     the one-GPU recipe: global batch 8 from 4 accumulated micro-batches of 2 (data.global_batch_size)
#   ddp1      trainer=ddp trainer.devices=1 (the multi-GPU code path, one rank): which backend (NCCL wanted)
#   quality   (not in the default list: about QUALITY_S + 3 minutes, at most 1.25 QUALITY_S + 3) train ${QUALITY_BACKBONE:-ncsnpp_small}
#             on the built-in corpus for QUALITY_S seconds (default 300) with the paper's settings at
#             batch 8, then score the test split at 1-NFE euler_mf and 5-NFE euler (bench_quality);
#             QUALITY_ARGS adds overrides (a CPU dry run: ACCEL=cpu QUALITY_S=15 QUALITY_PROBE=5
#             QUALITY_BACKBONE=ncsnpp_tiny QUALITY_ARGS="backbone.nf=16 data.batch_size=2 data.num_frames=64
#             data.num_workers=0 data.synthetic.num_train=6 data.synthetic.num_valid=2 data.synthetic.num_test=2")
#   compile_train (not in the default list) the full NCSN++ MeanFlow training step: eager fd JVP,
#             compiled fd, compiled func (the func JVP's forward runs eager; BENCHMARKS.md section 7)
# One device call holds 10 minutes: e.g. `SECTIONS="train bf16 accum ddp1 enhance objective"` in one,
# `SECTIONS=quality` in the next.
set -u
PY=${PY:-python3}
LOGS=${LOGS:-outputs/gpu_bench}
WORK=${WORK:-/tmp/meanflowse_gpu}
STEPS=${STEPS:-150}
SECTIONS=${SECTIONS:-train enhance objective compile bf16 backbones accum ddp1}
ACCEL=${ACCEL:-gpu}   # ACCEL=cpu: a dry run of the ddp1 or quality section on a machine without a GPU
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1
WHEELS=${WHEELS:-.whl}
if [ -d "$WHEELS" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || echo "installing $WHEELS failed"
fi
TRAIN="backbone=ncsnpp trainer=gpu data.batch_size=8 data.num_workers=6 paths.data_dir=$WORK/data"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOGS/gpu.txt"
for section in $SECTIONS; do
  echo "### $section"
  case $section in
    train) $PY -m benchmarks.bench_train --out "$WORK/fp32" --steps "$STEPS" $TRAIN 2>&1 \
             | tail -n 12 | tee "$LOGS/train_fp32.txt" ;;
    enhance) $PY -m benchmarks.make_checkpoint --out "$WORK/full/checkpoints/last.ckpt" backbone=ncsnpp \
             && $PY -m benchmarks.bench_enhance --ckpt "$WORK/full/checkpoints/last.ckpt" --device cuda \
                  --only rtf,folder 2>&1 | tee "$LOGS/enhance.txt" ;;
    objective) $PY -m benchmarks.bench_objective --device cuda --backbone ncsnpp --batch 2 --frames 256 \
                 --repeats 10 2>&1 | tee "$LOGS/objective.txt" ;;
    compile) $PY -m benchmarks.bench_backbones --device cuda --presets ncsnpp,ncsnpp_tiny --batches 1,4 \
               --modes fp32,compile,bf16+compile --repeats ${REPEATS:-20} 2>&1 | tee "$LOGS/compile.txt" ;;
    bf16) $PY -m benchmarks.bench_train --out "$WORK/bf16" --steps "$STEPS" $TRAIN \
            trainer.precision=bf16-mixed 2>&1 | tail -n 12 | tee "$LOGS/train_bf16.txt" ;;
    backbones) $PY -m benchmarks.bench_backbones --device cuda --presets ncsnpp,ncsnpp_small,ncsnpp_tiny,dcunet \
                 --batches 1,4 --modes fp32,bf16 --repeats ${REPEATS:-20} 2>&1 | tee "$LOGS/backbones.txt" ;;
    accum) $PY -m benchmarks.bench_train --out "$WORK/accum" --steps "$STEPS" $TRAIN data.batch_size=2 \
             data.global_batch_size=8 2>&1 | tail -n 12 | tee "$LOGS/train_accum.txt" ;;  # step times are per micro-batch
    ddp1) $PY train.py backbone=ncsnpp_tiny trainer=ddp trainer.devices=1 trainer.accelerator=$ACCEL \
            trainer.max_steps=5 trainer.max_epochs=-1 trainer.num_sanity_val_steps=0 trainer.limit_val_batches=0 \
            callbacks.val_metrics=null callbacks.model_checkpoint=null callbacks.best_si_sdr=null \
            callbacks.progress=null trainer.enable_progress_bar=false logger=none \
            data.synthetic.num_train=8 data.synthetic.num_valid=2 data.synthetic.num_test=2 data.num_frames=64 \
            paths.data_dir=$WORK/data_ddp1 hydra.run.dir=$WORK/ddp1 \
            +callbacks.backend._target_=benchmarks.callbacks.ReportBackend 2>&1 | tail -n 8 | tee "$LOGS/ddp1.txt" ;;
    quality) rm -f "$WORK/quality/quality.json"; $PY -m benchmarks.bench_quality --out "$WORK/quality" --budget-s "${QUALITY_S:-300}" \
               --probe-steps "${QUALITY_PROBE:-30}" backbone="${QUALITY_BACKBONE:-ncsnpp_small}" trainer=gpu \
               trainer.accelerator=$ACCEL data.batch_size=8 data.num_workers=6 ${QUALITY_ARGS:-} 2>&1 \
               | tee "$LOGS/quality.txt"; cp "$WORK/quality/quality.json" "$LOGS/" 2>/dev/null ;;
    compile_train) for run in "fd false" "fd true" "func true"; do set -- $run
               $PY -m benchmarks.bench_train --out "$WORK/compile_$1_$2" --steps "${COMPILE_STEPS:-60}" $TRAIN \
                 mf.jvp_impl=$1 compile=$2 2>&1 | tail -n 12 | tee "$LOGS/train_jvp_$1_compile_$2.txt"; done ;;
    *) echo "unknown section $section" ;;
  esac
  if [ -n "${OUT:-}" ] && [ -d "$OUT" ] && [ "$(cd "$OUT" && pwd)" != "$(cd "$LOGS" && pwd)" ]; then
    tar czf "$OUT/gpu_bench_logs.tgz" -C "$LOGS" .
  fi
done
