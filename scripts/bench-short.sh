#!/usr/bin/env bash
# CI's short benchmark run: every criterion benchmark with a brief warm-up and few samples, and
# the `solar-train bench` suite with 3 timed runs per case. It checks that the benchmarks still
# run; the numbers from a shared 2-core machine are reported, not judged.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== criterion (short mode)"
cargo bench --locked -p solar-benches --bench ops -- --warm-up-time 0.2 --measurement-time 0.5 --sample-size 10

echo "== solar-train bench --device cpu --repeats 3"
cargo run --locked --release --quiet --bin solar-train -- bench --device cpu --repeats 3
