#!/usr/bin/env bash
# The CUDA checks in one go, for a session that has a device for a few minutes: runs the CUDA
# runtime tests, the CUDA op tests (tests/cuda: forwards, training passes, optimizers) and the
# whole-network training parity on the GPU (tests/train, CudaNetworkParity), and prints what
# failed; full logs go to $OUT (the device tool's output folder) or ./cuda_logs.
#
#   tests/cuda/device_check.sh               build here first (build/gpu), then run
#   tests/cuda/device_check.sh BIN_DIR       run the test binaries already in BIN_DIR (e.g. a
#                                            build/cudahelper/tests carried over, built with
#                                            NNX_NATIVE=OFF so that any x86-64 runs it)
#
# The PyTorch fixtures are read from $NNX_FIXTURE_DIR (default build/fixtures; the train tests
# read the folder the build was configured with). build/device-fixtures.tar.xz, when carried
# (tests/cuda/pack_fixtures.sh writes it: ops, models and train_parity), is unpacked there first.
# The whole recipe for a session with the device tool is in tests/cuda/gpu_session.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-cuda_logs}"
mkdir -p "$out"
export NNX_FIXTURE_DIR="${NNX_FIXTURE_DIR:-$PWD/build/fixtures}"
if [ -f build/device-fixtures.tar.xz ] && [ ! -d "$NNX_FIXTURE_DIR/train_parity" ]; then
  mkdir -p "$NNX_FIXTURE_DIR" && tar -C "$NNX_FIXTURE_DIR" -xJf build/device-fixtures.tar.xz
fi
bin="${1:-}"
if [ -z "$bin" ]; then
  # cuDNN from the toolkit, else from PyTorch's nvidia-cudnn package (the GPU machine has no
  # Debian packages: tests/cuda/gpu_session.sh pack puts the others in .deps/, which CMake finds).
  if [ -z "${CUDNN_ROOT:-}" ] && [ ! -e /usr/local/cuda/include/cudnn.h ] && [ ! -e /usr/include/cudnn.h ]; then
    CUDNN_ROOT=$(python3 -c "import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__))" 2>/dev/null || true)
    export CUDNN_ROOT
  fi
  cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DNNX_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DNNX_MPI=OFF -DNNX_BUILD_BENCH=OFF \
    -DNNX_FIXTURE_DIR="$NNX_FIXTURE_DIR" >"$out/configure.log" 2>&1 ||
    { tail -20 "$out/configure.log"; exit 3; }
  ninja -C build/gpu nnx_cuda_tests nnx_runtime_tests nnx_train_tests >"$out/build.log" 2>&1 ||
    { grep -m 30 -E "error|Error" "$out/build.log"; exit 3; }
  bin=build/gpu/tests
fi
[ -n "${CUDNN_ROOT:-}" ] && export LD_LIBRARY_PATH="$CUDNN_ROOT/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi -L 2>/dev/null || true
status=0
check() {  # LOG TIMEOUT BINARY ARGS...: a crash is rerun under cuda-gdb for its backtrace
  local log="$1" limit="$2" rc
  shift 2
  timeout "$limit" "$@" >"$out/$log.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] && return 0
  status=1
  if [ $rc -ge 128 ] && [ $rc -ne 137 ]; then
    local test
    test=$(grep -E "^\[ RUN      \]" "$out/$log.log" | tail -1 | awk '{print $4}')
    echo "$log: crashed (exit $rc) in ${test:-?}"
    tests/cuda/backtrace.sh "$out/$log.bt" "$1" --gtest_filter="${test:-*}"
  fi
}
check runtime 240 "$bin/nnx_runtime_tests" --gtest_filter='Cuda*'
check cuda_ops 420 "$bin/nnx_cuda_tests"
check cuda_train 240 "$bin/nnx_train_tests" --gtest_filter='Cuda*'
grep -h -E "^\[  PASSED  \]|^\[  FAILED  \]|^\[  SKIPPED \] [0-9]+ test|\[ cuda ops \]" \
  "$out/runtime.log" "$out/cuda_ops.log" "$out/cuda_train.log"
grep -h -B1 -A6 -E "Failure$|^unknown file" "$out/runtime.log" "$out/cuda_ops.log" \
  "$out/cuda_train.log" | head -200
exit $status
