#!/usr/bin/env bash
# nnx's own GPU latency for the networks issue 3 names, for a session with a device for a few
# minutes: the seed network (1x3x480x640, its YOLO head through the nnx_yolo plugin) and
# ResNet-18 (bench/models/resnet18.json, as nnx-export wrote torchvision's; weights initialised
# as PyTorch would, which does not change the time), at batch 1 and 32, `nnx bench --device
# cuda --json`; then the training step (forward + backward + SGD update, bench/train_bench.cpp
# with --device cuda) of the seed network at batch 16 x 3x128x160 and ResNet-18 at 32 x 3x64x64,
# the training issue's shapes. One JSON line per run goes to $OUT (or ./cuda_bench) and a summary
# to stdout. PyTorch's training step on the same GPU: python/bench_train_compare.py --device cuda.
# The comparison with PyTorch on the same GPU needs torch there: python/bench_compare.py
# --device cuda [--batch 32].
#
#   bench/cuda_bench.sh            configure and build build/gpu (nnx, nnx_yolo, nnx_train_bench),
#                                  then run
#   bench/cuda_bench.sh BUILD_DIR  use the nnx, bench/nnx_train_bench and
#                                  examples/embed/nnx_yolo.so in BUILD_DIR
# NNX_BENCH_DEVICE=cpu runs the same on the CPU (to check the script where there is no GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-cuda_bench}"
mkdir -p "$out"
build="${1:-}"
if [ -z "$build" ]; then
  # cuDNN from the toolkit, else from PyTorch's nvidia-cudnn package (the GPU machine has no
  # Debian packages: tests/cuda/gpu_session.sh pack puts the others in .deps/, which CMake finds).
  if [ -z "${CUDNN_ROOT:-}" ] && [ ! -e /usr/local/cuda/include/cudnn.h ] && [ ! -e /usr/include/cudnn.h ]; then
    CUDNN_ROOT=$(python3 -c "import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__))" 2>/dev/null || true)
    export CUDNN_ROOT
  fi
  cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DNNX_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DNNX_MPI=OFF -DNNX_BUILD_BENCH=ON >"$out/configure.log" 2>&1 ||
    { tail -20 "$out/configure.log"; exit 3; }
  ninja -C build/gpu nnx nnx_yolo nnx_train_bench >"$out/build.log" 2>&1 ||
    { grep -m 30 -E "error|Error" "$out/build.log"; exit 3; }
  build=build/gpu
fi
[ -n "${CUDNN_ROOT:-}" ] && export LD_LIBRARY_PATH="$CUDNN_ROOT/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi -L 2>/dev/null || true
status=0
run() {  # NAME ARGS...
  local name="$1"
  shift
  if timeout 120 "$build/nnx" bench "$@" --device ${NNX_BENCH_DEVICE:-cuda} --iters 50 --warmup 10 --json \
    >"$out/$name.json" 2>"$out/$name.err"; then
    echo "$name: $(cat "$out/$name.json")"
  else
    local rc=$?
    echo "$name: failed (exit $rc): $(tail -3 "$out/$name.err")"
    status=1
    [ $rc -ge 128 ] && [ $rc -ne 137 ] && tests/cuda/backtrace.sh "$out/$name.bt" "$build/nnx" bench \
      "$@" --device ${NNX_BENCH_DEVICE:-cuda} --iters 5 --warmup 1 --json
  fi
}
plugin=(--plugin "$build/examples/embed/nnx_yolo.so")
for batch in 1 32; do
  run "seed_b$batch" examples/seed/seed.json "${plugin[@]}" --shape "$batch,3,480,640"
  run "resnet18_b$batch" bench/models/resnet18.json --shape "$batch,3,224,224"
done
train() {  # NAME ARGS...
  local name="$1"
  shift
  if timeout 180 "$build/bench/nnx_train_bench" "$@" --device ${NNX_BENCH_DEVICE:-cuda} \
    --iters 20 --warmup 5 >"$out/$name.json" 2>"$out/$name.err"; then
    echo "$name: $(cat "$out/$name.json")"
  else
    echo "$name: failed (exit $?): $(tail -3 "$out/$name.err")"
    status=1
  fi
}
train train_seed_b16 examples/seed/seed.json --shape 16,3,128,160  # its YOLO head built in
train train_resnet18_b32 bench/models/resnet18.json --shape 32,3,64,64
exit $status
