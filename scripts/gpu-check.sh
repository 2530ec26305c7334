#!/usr/bin/env bash
# The device-machine check (shared/GPU.md): runs from the repository root on a GPU machine with
# the prebuilt gpu-bundle/ (scripts/gpu-bundle.sh, carried by the device tool), no build step.
# In well under 5 minutes it prints the device and commit, runs every GPU test (each op forward
# and backward vs the CPU, a tiny model's loss and gradients, 20 training steps vs the CPU, two
# GPU runs bitwise equal), the kernel compile checks and ptxas report for this GPU, Solar's GPU
# benchmark and the PyTorch baselines on the same card, and prints a table with ratios last.
# Full logs and JSON go to $OUT (default gpu-out/).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
mkdir -p "$out/tests"
b=gpu-bundle
export SOLAR_KERNEL_CACHE="$out/kernel-cache" RUST_BACKTRACE=1 SOLAR_TRAIN_BIN="$PWD/$b/solar-train"
summary="$out/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

note "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$summary"
note "commit: $(tr '\n' ' ' < "$b/COMMIT" 2>/dev/null || echo unknown)"
note "rust toolchain on the device: $(command -v cargo || echo none)"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tee -a "$summary"

note "== GPU tests"
pass=0; fail=0
for t in "$b"/tests/*; do
  name="$(basename "$t")"
  if timeout 150 "$t" --test-threads=1 --nocapture > "$out/tests/$name.log" 2>&1; then
    result="ok"; pass=$((pass + 1))
  else
    result="FAILED (exit $?)"; fail=$((fail + 1))
  fi
  skipped="$(grep -c 'skipping' "$out/tests/$name.log")"
  note "$(printf '%-22s %s  (%s skip lines; %s)' "$name" "$result" "$skipped" "$(grep -E '^test result' "$out/tests/$name.log" | tail -1)")"
done
note "tests: $pass passed, $fail failed"

note "== kernels (ptxas for this GPU)"
timeout 120 "$b/solar-train" bench --device cuda --kernels > "$out/kernels.txt" 2>&1
awk 'NR == 1 || $NF != "0/0"' "$out/kernels.txt" | head -20 | tee -a "$summary"

note "== solar-train bench --device cuda --json"
timeout 200 "$b/solar-train" bench --device cuda --json --repeats 20 > "$out/solar-bench.json" 2> "$out/solar-bench.err"
note "bench exit $? ($(wc -c < "$out/solar-bench.json") bytes)"
timeout 120 "$b/train_step" --device cuda --vocab 32000 --hidden 1024 --layers 8 --heads 16 --kv-heads 8 \
  --ffn 2816 --batch 8 --seq 1024 --steps 10 > "$out/solar-train-step.json" 2> "$out/solar-train-step.err"
note "train_step exit $?"

note "== PyTorch baselines"
timeout 240 python3 benches/gpu_baselines.py --out "$out/torch.json" > "$out/torch.log" 2>&1
note "baselines exit $?"

note "== table"
python3 benches/gpu_compare.py "$out/solar-bench.json" "$out/torch.json" "$out/solar-train-step.json" \
  > "$out/table.md" 2> "$out/compare.err"
cat "$out/table.md" "$out/compare.err"
cat "$out/table.md" >> "$summary"
