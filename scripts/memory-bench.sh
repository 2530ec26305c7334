#!/usr/bin/env bash
# Memory and speed of fine-tuning variants side by side, for one small model and one sequence
# length: each row is an SFT run of a few steps with its own extra flags, reporting the
# predicted peak (`--dry-run`), the engine's measured allocation high-water and the process's
# peak RSS (metrics.jsonl's peak_alloc_bytes and peak_rss_bytes, last step) and the median
# step time (tokens / tokens_per_s, the first step left out as warm-up).
#
#   scripts/memory-bench.sh                       # full, full + recompute
#   scripts/memory-bench.sh "LoRA r8|--lora-r 8"  # ... plus a row per "label|flags" argument
#
# Rows are "label|flags": adding a variant is one line in ROWS below
# or one argument. Settings by environment: PRESET (small), SEQ_LEN (256), BATCH (8), STEPS
# (4), DEVICE (cpu), THREADS (all cores), SOLAR_BIN (default: a release build via cargo),
# WORK (a temporary folder, removed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

PRESET=${PRESET:-small}
SEQ_LEN=${SEQ_LEN:-256}
BATCH=${BATCH:-8}
STEPS=${STEPS:-4}
DEVICE=${DEVICE:-cpu}
ROWS=(
  "full|"
  "full + recompute|--recompute"
  "LoRA r8|--lora-r 8"
  "LoRA r8 + recompute|--lora-r 8 --recompute"
)
ROWS+=("$@")

if [[ -z "${SOLAR_BIN:-}" ]]; then
  cargo build --locked --release --quiet --bin solar-train
  SOLAR_BIN=target/release/solar-train
fi
THREAD_FLAGS=()
[[ -n "${THREADS:-}" ]] && THREAD_FLAGS=(--threads "$THREADS")
WORK=${WORK:-$(mktemp -d)}
trap 'rm -rf "$WORK"' EXIT

"$SOLAR_BIN" init --preset "$PRESET" --out "$WORK/model" >/dev/null 2>&1
# Prompt-completion pairs long enough to fill a row (the byte-level tokenizer: a token a byte).
for i in $(seq 1 $((BATCH * STEPS))); do
  printf '{"prompt": "Question %d: %s", "completion": " %s"}\n' "$i" \
    "$(head -c $((SEQ_LEN / 2)) </dev/zero | tr '\0' 'q')" "$(head -c $((SEQ_LEN / 2)) </dev/zero | tr '\0' 'a')"
done >"$WORK/data.jsonl"

# The last value of a numeric field in metrics.jsonl, and the median step time.
field() { grep -o "\"$1\":[0-9.e+-]*" "$2" | tail -1 | cut -d: -f2; }
median_step_s() {
  paste -d' ' <(grep -o '"tokens":[0-9]*' "$1" | cut -d: -f2) \
    <(grep -o '"tokens_per_s":[0-9.e+-]*' "$1" | cut -d: -f2) |
    tail -n +2 | awk '{print $1 / $2}' | sort -g | awk '{a[NR]=$1} END {print (NR ? a[int((NR+1)/2)] : "nan")}'
}
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

echo "model $PRESET, seq_len $SEQ_LEN, batch $BATCH, $STEPS steps, device $DEVICE"
printf '%-24s %14s %14s %14s %12s\n' variant "predicted MiB" "engine MiB" "RSS MiB" "step s"
n=0
for row in "${ROWS[@]}"; do
  label=${row%%|*}
  read -r -a flags <<<"${row#*|}"
  n=$((n + 1))
  out="$WORK/run$n"
  common=(sft --model "$WORK/model" --data "$WORK/data.jsonl" --format prompt-completion --out "$out"
    --seq-len "$SEQ_LEN" --batch "$BATCH" --steps "$STEPS" --device "$DEVICE" "${THREAD_FLAGS[@]}" "${flags[@]}")
  predicted=$("$SOLAR_BIN" "${common[@]}" --dry-run 2>/dev/null | awk '/^predicted_peak_bytes/ {print $2}')
  "$SOLAR_BIN" "${common[@]}" >"$WORK/log$n" 2>&1 || {
    echo "$label: the run failed:" >&2
    tail -5 "$WORK/log$n" >&2
    exit 1
  }
  m="$out/metrics.jsonl"
  printf '%-24s %14s %14s %14s %12.3f\n' "$label" "$(mib "$predicted")" "$(mib "$(field peak_alloc_bytes "$m")")" \
    "$(mib "$(field peak_rss_bytes "$m")")" "$(median_step_s "$m")"
done
