#!/usr/bin/env bash
# Sets up, builds and runs every test: the main build (release; CUDA compiled for one
# architecture where nvcc is found), then the same tests under ASan+UBSan (CPU only), then
# every fuzz target for a fixed, seeded number of inputs (reproducible; longer exploratory runs:
# tools/fuzz.sh SECONDS). NNX_SKIP_ASAN=1 / NNX_SKIP_FUZZ=1 skip those passes.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
jobs=$(nproc)
fixtures="$PWD/build/fixtures"
cmake --preset ci -DNNX_FIXTURE_DIR="$fixtures" >/dev/null
cmake --build --preset ci -j "$jobs"
ctest --preset ci -j "$jobs"
if [ "${NNX_SKIP_ASAN:-0}" != 1 ]; then
  cmake --preset asan -DNNX_FIXTURE_DIR="$fixtures" >/dev/null
  cmake --build --preset asan -j "$jobs"
  ctest --preset asan -j "$jobs"
fi
if [ "${NNX_SKIP_FUZZ:-0}" != 1 ]; then
  NNX_FUZZ_ARGS="-seed=1 -runs=30000" tools/fuzz.sh 300
fi
