#!/usr/bin/env bash
# The test command (README, CI): builds the workspace and runs every test on a fresh clone.
# It installs what the tests need: the Rust toolchain is on the machine; NVRTC, the CUDA headers
# and nvdisasm come from NVIDIA's wheels (scripts/cuda-wheels.sh) unless a CUDA toolkit is
# present, and SOLAR_REQUIRE_NVRTC=1 makes the kernel compile checks fail rather than skip
# without them. On a machine without a GPU (CI) the GPU tests run on the emulator executor (the
# kernels compiled as host C++ with memory and race checks); SOLAR_REQUIRE_EMU=1 makes the launch
# declaration test fail rather than skip if this build's emulator has no kernels.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

if [[ -z "${SOLAR_NVRTC:-}" && ! -e /usr/local/cuda/include/cuda_bf16.h && -z "${CUDA_HOME:-}" ]]; then
  SOLAR_CUDA_WHEELS="$(bash scripts/cuda-wheels.sh)"
  export SOLAR_CUDA_WHEELS
fi
export SOLAR_REQUIRE_NVRTC=1
export SOLAR_REQUIRE_EMU=1

# Data parallel training is tested with real ranks (mpirun, CPU): Open MPI, and libclang for the
# mpi crate's bindings, from the system's packages when missing.
if ! command -v mpirun >/dev/null 2>&1 || ! command -v mpicc >/dev/null 2>&1 \
  || ! ldconfig -p 2>/dev/null | grep -qE '\blibclang(-[0-9]+)?\.so'; then
  echo "== installing Open MPI and libclang (openmpi-bin libopenmpi-dev libclang-dev)"
  sudo=""
  if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: Open MPI (mpirun, mpicc) and libclang are needed and apt-get is not here; install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q openmpi-bin libopenmpi-dev libclang-dev >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q openmpi-bin libopenmpi-dev libclang-dev >/dev/null; }
fi
# solar-cli's `mpi` feature for the whole build; SOLAR_FEATURES makes the tests' own build of
# the binary (tests/src/cli.rs) match it, and SOLAR_REQUIRE_MPI=1 fails the mpirun tests
# rather than skipping them if MPI is missing after all.
export SOLAR_FEATURES=mpi
export SOLAR_REQUIRE_MPI=1

echo "== build (all targets)"
cargo build --workspace --all-targets --locked --features solar-cli/mpi
echo "== tests"
cargo test --workspace --locked --features solar-cli/mpi
