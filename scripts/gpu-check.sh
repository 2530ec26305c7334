#!/usr/bin/env bash
# The device-machine check (shared/GPU.md): runs from the repository root on a GPU machine with
# the prebuilt gpu-bundle/ (scripts/gpu-bundle.sh, carried by the device tool), no build step.
# It prints the device and commit, runs every GPU test (each op forward and backward vs the CPU,
# a tiny model's loss and gradients, 20 training steps vs the CPU, two GPU runs bitwise equal),
# the ptxas report for this GPU, Solar's GPU benchmark and the PyTorch baselines on the same
# card, then a memcheck pass over the op tests if time is left, and prints a table with ratios
# last. NCCL (the data-parallel backend) is looked for on the machine (the ld.so cache, then the
# python wheels torch brings: nvidia/nccl/lib/libnccl.so.2); with one, the NCCL test runs and a
# tiny pretrain runs twice, plain and as a torchrun world of one, whose models must agree within
# bf16 rounding (scripts/weights_close.py); without one, that part says it skipped.
#
# Budget: GPU_CHECK_BUDGET seconds in all (default 300, GPU.md's five minutes); each stage's
# timeout is cut to what is left, so a hung kernel costs its stage, not the lease.
# What comes back: the device tool returns at most 8 files from $OUT, so the logs are packed
# into one archive there and the work happens in a scratch folder:
#   $OUT/summary.txt   what this script printed (device, commit, per-test lines, failures, table)
#   $OUT/table.md      the ratio table alone (benches/gpu_compare.py)
#   $OUT/solar-bench.json, torch.json, solar-train-step.json   the raw numbers
#   $OUT/logs.tar.gz   every log: each test executable's output, the kernel report, stderr
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
work="${GPU_CHECK_WORK:-$(mktemp -d /tmp/solar-gpu-check.XXXXXX)}"
budget="${GPU_CHECK_BUDGET:-300}"
mkdir -p "$out" "$work/tests"
b=gpu-bundle
export SOLAR_KERNEL_CACHE="$work/kernel-cache" RUST_BACKTRACE=1 SOLAR_TRAIN_BIN="$PWD/$b/solar-train"
summary="$work/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
# Seconds for a stage: at most $1, and never past the budget less $2 seconds kept for later
# stages (at least 5, so a stage still starts and says why it stopped).
slot() {
  local left=$((budget - SECONDS - ${2:-0}))
  ((left > $1)) && left=$1
  ((left < 5)) && left=5
  echo "$left"
}
finish() {
  cp "$summary" "$out/summary.txt"
  for f in table.md solar-bench.json torch.json solar-train-step.json; do
    [[ -f "$work/$f" ]] && cp "$work/$f" "$out/$f"
  done
  tar -C "$work" --exclude kernel-cache --exclude '*.safetensors' -czf "$out/logs.tar.gz" . 2>/dev/null
}
trap finish EXIT

note "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$summary"
note "commit: $(tr '\n' ' ' < "$b/COMMIT" 2>/dev/null || echo unknown)"
note "rust toolchain on the device: $(command -v cargo || echo none); glibc $(ldd --version 2>/dev/null | head -1 | awk '{print $NF}')"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tee -a "$summary"
if ! "$b/solar-train" --version > /dev/null 2>&1; then
  note "the bundled solar-train does not start here:"
  "$b/solar-train" --version 2>&1 | head -5 | tee -a "$summary"
fi

# NCCL: SOLAR_NCCL_LIB if set, else the system's libnccl.so.2, else a pip wheel's (torch's
# nvidia-nccl-cu12/cu13). Not bundled: the library (about 250 MB) is over what a carry holds,
# and the device has no network to install it.
find_nccl() {
  if [[ -n ${SOLAR_NCCL_LIB:-} ]]; then echo "$SOLAR_NCCL_LIB"; return; fi
  local f
  f="$(ldconfig -p 2>/dev/null | awk '$1 == "libnccl.so.2" {print $NF; exit}')"
  if [[ -n $f ]]; then echo "$f"; return; fi
  python3 - 2>/dev/null <<'PY'
import glob, os, site, sys
roots = list(dict.fromkeys(site.getsitepackages() + [site.getusersitepackages()] + sys.path))
for r in roots:
    for pat in ("nvidia/nccl/lib/libnccl.so.2", "nvidia/cu1*/lib/libnccl.so.2", "torch/lib/libnccl.so.2"):
        hits = sorted(glob.glob(os.path.join(r, pat)))
        if hits:
            print(hits[0])
            sys.exit()
PY
}
nccl_lib="$(find_nccl)"
nccl_version=""
if [[ -n $nccl_lib ]]; then
  nccl_version="$(python3 -c 'import ctypes, sys
v = ctypes.c_int()
assert ctypes.CDLL(sys.argv[1]).ncclGetVersion(ctypes.byref(v)) == 0
print("%d.%d.%d" % (v.value // 10000, v.value // 100 % 100, v.value % 100))' "$nccl_lib" 2>&1 | tail -1)" ||
    nccl_version="unloadable ($nccl_version)"
  export SOLAR_NCCL_LIB="$nccl_lib"
fi
note "NCCL: ${nccl_lib:-none found (SOLAR_NCCL_LIB unset, no libnccl.so.2 in the ld.so cache or the python wheels)}${nccl_version:+, version $nccl_version}"

note "== GPU tests"
pass=0; fail=0; exp_note=""
# cuda_matmul_sm90 holds the experimental wgmma GEMM (not the default path): reported on its
# own line, not counted in the verdict.
# The op tests first: they compile the kernels into the shared cache the later ones reuse.
for t in "$b"/tests/cuda_* "$b"/tests/recompute "$b"/tests/cli_bench; do
  [[ -x "$t" ]] || continue
  name="$(basename "$t")"
  log="$work/tests/$name.log"
  if timeout "$(slot 120 150)" "$t" --test-threads=1 --nocapture > "$log" 2>&1; then
    result="ok"; [[ $name == cuda_matmul_sm90 ]] || pass=$((pass + 1))
  else
    code=$?
    result="FAILED (exit $code$([[ $code == 124 ]] && echo ', timed out'))"
    [[ $name == cuda_matmul_sm90 ]] || fail=$((fail + 1))
  fi
  [[ $name == cuda_matmul_sm90 ]] && exp_note="experimental wgmma GEMM tests: $result"
  skipped="$(grep -c 'skipping' "$log")"
  note "$(printf '%-22s %s  (%s skip lines; %s)' "$name" "$result" "$skipped" "$(grep -E '^test result' "$log" | tail -1)")"
  if [[ $result != ok ]]; then
    # The failing tests and their first messages, so the summary alone says what broke.
    grep -E "^test .* FAILED|panicked at|^thread '|assert|error" "$log" | head -12 | sed 's/^/    /' | tee -a "$summary"
  fi
done
note "tests: $pass passed, $fail failed${exp_note:+; $exp_note}"

note "== NCCL: one tiny pretrain run, plain and as a torchrun world of one"
nd="$work/world-of-one"
nccl_verdict="skipped"
if [[ -z $nccl_lib || $nccl_version == unloadable* ]]; then
  note "skipped: no loadable libnccl.so.2 here (set SOLAR_NCCL_LIB to one)"
elif ((budget - SECONDS < 150)); then
  note "skipped: $((budget - SECONDS)) s of the budget left, the three runs and the stages after need more"
else
  mkdir -p "$nd"
  python3 - "$nd/docs.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(32):
        f.write(json.dumps({"input_ids": [3 + (i * 5 + j * 11) % 250 for j in range(9 + i % 17)]}) + "\n")
PY
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  world=(RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT="$port")
  # pt NAME [env arguments]: the same tiny run each time, into $nd/NAME, log $nd/NAME.log.
  pt() {
    local o="$nd/$1"; shift
    env "$@" timeout "$(slot 60 100)" "$b/solar-train" pretrain --model "$nd/base" --data "$nd/docs.jsonl" \
      --out "$o" --steps 6 --batch 2 --seq-len 32 --lr 1e-2 --warmup 1 --seed 7 --device cuda \
      --bucket-mb 0.02 > "$o.log" 2>&1
  }
  "$b/solar-train" init --preset tiny --out "$nd/base" --seed 3 > "$nd/init.log" 2>&1
  pt plain -u RANK -u WORLD_SIZE -u LOCAL_RANK -u MASTER_ADDR -u MASTER_PORT; plain_rc=$?
  pt world1 "${world[@]}"; world_rc=$?
  # The world of one must go through NCCL: with NCCL made unloadable the same run must fail
  # saying so (else the launcher's variables did not reach the distributed path).
  pt nonccl "${world[@]}" SOLAR_NCCL_LIB=/nonexistent/libnccl.so.2; nonccl_rc=$?
  via_nccl="no"; ((nonccl_rc != 0)) && grep -q "cannot load NCCL" "$nd/nonccl.log" && via_nccl="yes"
  note "plain exit $plain_rc; world of one exit $world_rc (MASTER_PORT=$port); goes through NCCL: $via_nccl"
  for r in plain world1 nonccl; do tail -2 "$nd/$r.log" | sed "s/^/    $r: /" | tee -a "$summary"; done
  grep -i "nccl" "$nd/world1.log" | head -3 | sed "s/^/    world1 says: /" | tee -a "$summary"
  nccl_verdict="FAILED"
  if ((plain_rc == 0 && world_rc == 0)); then
    python3 scripts/weights_close.py "$nd/plain" "$nd/world1" > "$nd/compare.txt" 2>&1 && [[ $via_nccl == yes ]] &&
      nccl_verdict="ok"
    grep -v '^    .*within tolerance' "$nd/compare.txt" | tail -8 | tee -a "$summary"
  fi
fi
note "NCCL world of one: $nccl_verdict${nccl_version:+ (NCCL $nccl_version)}"

note "== kernels (ptxas for this GPU)"
timeout "$(slot 60 110)" "$b/solar-train" bench --device cuda --kernels > "$work/kernels.txt" 2>&1
awk 'NR == 1 || $NF != "0/0"' "$work/kernels.txt" | head -20 | tee -a "$summary"

note "== solar-train bench --device cuda --json"
timeout "$(slot 90 80)" "$b/solar-train" bench --device cuda --json --repeats 20 \
  > "$work/solar-bench.json" 2> "$work/solar-bench.err"
note "bench exit $? ($(wc -c < "$work/solar-bench.json") bytes)"
tail -3 "$work/solar-bench.err" | sed 's/^/    /' | tee -a "$summary"
timeout "$(slot 45 60)" "$b/train_step" --device cuda --vocab 32000 --hidden 1024 --layers 8 --heads 16 --kv-heads 8 \
  --ffn 2816 --batch 8 --seq 1024 --steps 10 > "$work/solar-train-step.json" 2> "$work/solar-train-step.err"
note "train_step exit $?"

note "== PyTorch baselines"
PYTHONUNBUFFERED=1 timeout "$(slot 90 15)" python3 benches/gpu_baselines.py --out "$work/torch.json" \
  > "$work/torch.log" 2>&1
note "baselines exit $?"
tail -3 "$work/torch.log" | sed 's/^/    /' | tee -a "$summary"

# Out-of-bounds accesses a comparison with the CPU can miss (a stray write past a buffer the
# pool hands out again): compute-sanitizer's memcheck over the op tests, in what time is left.
if command -v compute-sanitizer > /dev/null && ((budget - SECONDS > 40)); then
  note "== memcheck (compute-sanitizer) over the op tests"
  for t in "$b"/tests/cuda_elementwise "$b"/tests/cuda_rows "$b"/tests/cuda_attention; do
    [[ -x "$t" ]] || continue
    ((budget - SECONDS > 20)) || { note "$(basename "$t"): no time left"; continue; }
    timeout "$(slot 60 10)" compute-sanitizer --tool memcheck --error-exitcode 9 "$t" --test-threads=1 \
      > "$work/tests/memcheck-$(basename "$t").log" 2>&1
    note "$(basename "$t"): memcheck exit $? ($(grep -c 'Invalid' "$work/tests/memcheck-$(basename "$t").log") invalid accesses)"
  done
fi

note "== table"
python3 benches/gpu_compare.py "$work/solar-bench.json" "$work/torch.json" "$work/solar-train-step.json" \
  > "$work/table.md" 2> "$work/compare.err"
cat "$work/table.md" "$work/compare.err"
cat "$work/table.md" "$work/compare.err" >> "$summary"
note "tests: $pass passed, $fail failed; NCCL world of one: $nccl_verdict"
note "elapsed ${SECONDS}s of ${budget}s"
