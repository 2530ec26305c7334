#!/usr/bin/env bash
# One training step (forward, backward, AdamW) of a small Llama in Solar against PyTorch eager on
# the same shapes and thread count, printing tokens/s of each and the ratio. Defaults: hidden 256,
# 4 layers, 8 heads (4 kv), FFN 688, vocab 32000 (SOLAR's), batch 8 x seq 128, 2 threads; any
# flag of train_step_vs_pytorch.py can be passed through (e.g. --vocab 8192 --rounds 5).
# Needs a Python with torch and transformers: PYTHON (default python3). Not part of CI.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
threads="${THREADS:-2}"
cd "$root"

if ! "$python" -c 'import torch, transformers' 2>/dev/null; then
    echo "train_step_vs_pytorch: $python lacks torch or transformers; set PYTHON to one that has both" >&2
    exit 1
fi

cargo build --release --quiet -p solar-train --example train_step

# Both sides get the same thread count: PyTorch through set_num_threads and the OpenMP/BLAS
# variables, Solar through --threads.
OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" \
    "$python" "$root/benches/train_step_vs_pytorch.py" "$root/target/release/examples/train_step" \
    --threads "$threads" "$@"
