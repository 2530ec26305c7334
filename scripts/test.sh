#!/usr/bin/env bash
# The test command (README, CI): builds the workspace and runs every test on a fresh clone.
# It installs what the tests need; today that is only the Rust toolchain already on the machine.
# (The CUDA issue adds the NVRTC/ptxas wheels here for the kernel compile checks.)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

echo "== build (all targets)"
cargo build --workspace --all-targets --locked
echo "== tests"
cargo test --workspace --locked
