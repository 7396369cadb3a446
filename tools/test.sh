#!/usr/bin/env bash
# Sets up, builds and runs every test:
# 1. the main build (release; CUDA compiled for one architecture where nvcc is found): ctest,
#    then the installed package and examples/embed against it (tools/embed-check.sh);
# 2. the kernels of processors without AVX-512 (tools/avx2.sh): the library and its op, model and
#    training tests built for x86-64-v3 (AVX2 + FMA) and run against the same fixtures (on a host
#    without AVX-512, whose native build runs those, the library compiled for x86-64-v4 instead);
# 3. the same tests under ASan+UBSan, with the CUDA backend built on the host emulator
#    (tests/cuda_emulator: every CUDA test runs, its kernels checked by the sanitizers), and a
#    LeakSanitizer check of `nnx run` on the example network; the CPU-only end-to-end training
#    (one process and two) and pruning runs and the concurrency stress test, which pass 1 (and
#    4) run, are left out (CMakePresets.json, test preset "asan"): together they took 4 minutes
#    of the 45;
# 4. the threaded tests under ThreadSanitizer (tools/tsan.sh: 8 threads x 50 runs);
# 5. every fuzz target for a fixed, seeded number of inputs (longer runs: tools/fuzz.sh SECONDS).
# On a clean clone, 2 cores (AMD EPYC Zen 3, no AVX-512), 2026-12-07, at 0ec728a: main build
# 8.3 min (the fixtures written beside it then, since reverted: 7.1 without), its tests 1.9,
# embed check 0.1, the x86-64-v4 compile 1.7, ASan build 14.1, its tests 11.8, TSan 4.6,
# fuzzing 4.1: 47 minutes (51 the day before, 55-59 before that). Later commits, measured alone:
# the fixtures on two cores (71 -> 43 s of the main tests), one ASan test fewer (54 s of one
# core), the parameterised tests' scheduling costs (the ASan pass had ended on a 60 s test alone).
# CI's own run of 23ff098 took 2488 s (41 minutes).
# NNX_SKIP_AVX2=1 / NNX_SKIP_ASAN=1 / NNX_SKIP_TSAN=1 / NNX_SKIP_FUZZ=1 skip passes 2 / 3 / 4 / 5.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
jobs=$(nproc)
fixtures="$PWD/build/fixtures"
cmake --preset ci -DNNX_FIXTURE_DIR="$fixtures" >/dev/null
cmake --build --preset ci -j "$jobs"
ctest --preset ci -j "$jobs"
tools/embed-check.sh build/ci  # install, build examples/embed against it, compare outputs
if [ "${NNX_SKIP_AVX2:-0}" != 1 ]; then
  NNX_AVX2_JOBS="$jobs" tools/avx2.sh "$fixtures"
fi
if [ "${NNX_SKIP_ASAN:-0}" != 1 ]; then
  cmake --preset asan -DNNX_FIXTURE_DIR="$fixtures" >/dev/null
  cmake --build --preset asan -j "$jobs"
  ctest --preset asan -j "$jobs"
fi
if [ "${NNX_SKIP_TSAN:-0}" != 1 ]; then
  NNX_TSAN_JOBS="$jobs" tools/tsan.sh "$fixtures"  # 8 threads x 50 runs under ThreadSanitizer
fi
if [ "${NNX_SKIP_FUZZ:-0}" != 1 ]; then
  NNX_FUZZ_ARGS="-seed=1 -runs=30000" tools/fuzz.sh 300
fi
