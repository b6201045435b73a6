#!/usr/bin/env bash
# Prepare, on this machine, the wheels that bench/gpu_jax.py needs on a GPU machine
# that has JAX with CUDA but no TensorFlow, no Keras and no package registry.
# Nothing is downloaded there: carry the folder, then install it from local files.
#
#   bash bench/carry_wheels.sh [DEST]        # default DEST: .whl (git-ignored locally)
#
# On the GPU machine (DEST carried into the repository root):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#       --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   KERAS_BACKEND=jax python3 -m bench.gpu_jax --json gpu.json
#
# Keras needs absl-py, numpy, rich, namex, h5py, optree, ml-dtypes, packaging; that
# image already has all but namex and optree (see the device README's package list).
# Versions follow this machine's venv so the GPU runs the code tested here.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-/work/venv/bin/python}
[ -x "$PY" ] || PY=python3
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
PKGS="keras==$(version keras) namex==$(version namex) optree==$(version optree)"
mkdir -p "$DEST"
if [ "$DEST" = .whl ] && [ -d .git ] && ! grep -qx '/.whl/' .git/info/exclude 2>/dev/null; then
    echo '/.whl/' >> .git/info/exclude
fi
# The GPU machine: CPython 3.12 on x86-64 Linux (glibc manylinux wheels).
# shellcheck disable=SC2086
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DEST" $PKGS
ls -l "$DEST"
