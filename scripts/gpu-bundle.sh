#!/usr/bin/env bash
# Builds everything scripts/gpu-check.sh runs on a device machine (which has no Rust toolchain
# and no internet) into gpu-bundle/ (git-ignored): the release solar-train binary, the
# train_step example and every GPU test executable, stripped, plus the commit they came from.
# Then: the device tool's run with carry ["gpu-bundle"] and command "bash scripts/gpu-check.sh".
# NCCL is not bundled: libnccl.so.2 is about 250 MB (the nvidia-nccl-cu13 2.30 wheel's), over the
# 64 MiB a carry holds; gpu-check.sh finds the device's own (ld.so cache, torch's pip wheels) and
# skips its NCCL part, saying so, when there is none. engine/tests/cuda_nccl.rs comes along with
# the other cuda_* tests.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf gpu-bundle && mkdir -p gpu-bundle/tests
cargo build --release --locked --bin solar-train -p solar-cli
cargo build --release --locked -p solar-train --example train_step
cp target/release/solar-train target/release/examples/train_step gpu-bundle/
# Test executables: the JSON stream names each one; keep those that hold GPU tests (the NVRTC
# compile checks are CI's, here; the device compiles what its tests load anyway).
cargo test --release --locked --no-run --message-format=json \
    -p solar-engine -p solar-train -p solar-tests 2>/dev/null |
  python3 -c '
import json, sys, shutil
want = ("cuda_", "cli_bench", "recompute")
for line in sys.stdin:
    m = json.loads(line)
    exe, name = m.get("executable"), m.get("target", {}).get("name", "")
    if exe and m.get("profile", {}).get("test") and name.startswith(want):
        shutil.copy(exe, "gpu-bundle/tests/" + name)
        print("bundled", name)
'
strip gpu-bundle/solar-train gpu-bundle/train_step gpu-bundle/tests/* 2>/dev/null || true
git rev-parse HEAD > gpu-bundle/COMMIT
git status --porcelain --untracked-files=no | grep -q . && echo "dirty" >> gpu-bundle/COMMIT || true
du -sh gpu-bundle
