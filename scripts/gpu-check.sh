#!/bin/sh
# The GPU check (issue 3) on a machine with an NVIDIA GPU, python3 + torch + transformers, no TVM
# and no network: installs apache-tvm-ffi from a carried wheel if missing, puts this checkout on
# the path as the `edgeattn` package, and runs tests/benchmarks/gpu_tvm_cuda.py.
#   sh scripts/gpu-check.sh ARTIFACT [--out results.json] [--skip-compile]
# Wheels: WHEELS (default .whl) holds apache_tvm_ffi-0.1.14.post1-cp312-*.whl (pip download, see README).
set -e
GPU_SCRIPT=${GPU_SCRIPT:-tests/benchmarks/gpu_tvm_cuda.py}
SITE=${SITE:-/tmp/edgeattn-site}
WHEELS=${WHEELS:-.whl}
mkdir -p "$SITE/edgeattn"
if ! python3 -c "import tvm_ffi" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/apache_tvm_ffi-*.whl
fi
for d in compiler runtime targets models passes kernels; do ln -sfn "$PWD/$d" "$SITE/edgeattn/$d"; done
PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 exec python3 "$GPU_SCRIPT" "$@"
