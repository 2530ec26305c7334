#!/usr/bin/env bash
# Solar's CPU f32 matmul against numpy's BLAS at 1024x1024x1024, side by side with the same
# thread count (THREADS, default 2), alternating for ROUNDS rounds (default 3). The issue's bar:
# Solar reaches at least 0.7x numpy's GFLOP/s. numpy (and threadpoolctl, to name the BLAS) go
# into target/numpy-venv when the system Python lacks them.
# Exit status: 0 at or above the bar, 1 below it or on any failure.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
threads="${THREADS:-2}"
rounds="${ROUNDS:-3}"
cd "$root"

python=python3
if ! "$python" -c 'import numpy, threadpoolctl' 2>/dev/null; then
    venv="$root/target/numpy-venv"
    if [ ! -x "$venv/bin/python" ]; then
        echo "matmul_vs_numpy: creating $venv for numpy" >&2
        python3 -m venv "$venv"
    fi
    if ! "$venv/bin/python" -c 'import numpy, threadpoolctl' 2>/dev/null; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy threadpoolctl
    fi
    python="$venv/bin/python"
fi

cargo build --release --quiet -p solar-cli

# This machine may set OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which slow a current numpy's
# OpenBLAS; drop both (together) for this command only.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
    OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" \
    "$python" "$root/benches/matmul_vs_numpy.py" "$root/target/release/solar-train" "$threads" "$rounds"
