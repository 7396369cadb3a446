#!/usr/bin/env bash
# Everything a session does on the GPU machine, in one device call (the machine is lent for
# minutes): the CUDA tests, nnx's own GPU latencies and training steps, and the comparison with
# PyTorch on the same GPU. Logs and results go to $OUT (the device tool's output folder) or
# ./gpu_logs; a summary with the seconds each stage took goes to stdout.
#
#   tests/cuda/gpu_session.sh [STAGES]
#
# STAGES, comma-separated (default tests,bench,compare1,compare32,train), run in this order:
#   tests      tests/cuda/device_check.sh (CUDA runtime, op and training tests)
#   bench      bench/cuda_bench.sh (nnx bench --device cuda, nnx_train_bench --device cuda)
#   compare1   python/bench_compare.py --device cuda at batch 1, PyTorch eager only
#   compare32  the same at batch 32
#   tf32       batch 1 with --precision tf32, eager only (fp16, bf16: the same in those;
#              tf32_b32, fp16_b32: at batch 32)
#   train      python/bench_train_compare.py --device cuda
#   graphs     nnx bench with CUDA graphs on and off, and each kernel's GPU time (ncu)
#   igemm      nnx bench with our implicit-GEMM convolutions off and automatic (NNX_CONV_IGEMM;
#              the default times cuDNN and each of ours per problem and keeps the fastest), in
#              fp32, TF32 and fp16, with each problem's times (NNX_CONV_IGEMM_LOG)
#   traingraph nnx_train_bench --device cuda --cuda-graph on|off (ResNet-18, seed): the training
#              step replayed as one CUDA graph (nnx::TrainStep) against op by op, and with our
#              convolution kernels off (NNX_CONV_IGEMM=off) against the automatic choice
#   trainprof  nnx_train_bench --device cuda --profile 1 (seed, ResNet-18): time per node
#   graphapi   cuDNN's graph API (NNX_CUDNN_API=graph) against its legacy API: the CUDA tests
#              under it, then latencies (CUDA graphs off and on, heuristic and searched) and
#              training steps under each
#   diag       per-node profiles (nnx bench --profile), timed cuDNN search, nnx-export's traceback
#   compile    batch 1 with torch.compile(mode="reduce-overhead") too, one model at a time
#              (slow: tens of seconds per model), cut at DEADLINE
#   sanitize   compute-sanitizer memcheck over the CUDA op tests
# Environment: ROUNDS, rounds of each comparison (3; PRECISION_ROUNDS for the tf32/fp16/bf16
# ones); DEADLINE, seconds from the start by which the compile stage must end; COMPARE_ARGS,
# added to every bench_compare.py call (--models resnet18 ...).
#
# Before the call, here (in /work/main, after a CPU build's ctest made the fixtures):
#   tests/cuda/gpu_session.sh pack
# writes the three files to carry: build/device-deps.tar.xz (the Debian-only build
# dependencies), build/device-fixtures.tar.xz (tests/cuda/pack_fixtures.sh) and
# build/gpucarry.tar.xz (the CUDA build of build/gpucarry, NNX_NATIVE=OFF so that any x86-64
# runs it). Then: run `tests/cuda/gpu_session.sh [STAGES]`, carry those three. If the carried
# programs do not start there, the same folder is configured and built on the machine.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=/work/main  # the tests and tools have this checkout's path and fixture folder built in
build=build/gpucarry
targets=(nnx nnx_yolo nnx_train_bench nnx_cuda_tests nnx_runtime_tests nnx_train_tests)  # + nnx-export (configured)
configure() {
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNNX_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DNNX_MPI=OFF -DNNX_BUILD_BENCH=ON -DNNX_NATIVE=OFF \
    -DNNX_FIXTURE_DIR="$root/build/fixtures" "$@"
}

if [ "${1:-}" = "pack" ]; then  # here, before the call: the three files to carry
  [ "$PWD" = "$root" ] || { echo "pack from $root (the path the binaries have built in)" >&2; exit 2; }
  # The build dependencies Debian has and the GPU machine lacks (headers, static libraries and
  # CMake files), for the fallback build there.
  grep -qx '/.deps/' .git/info/exclude 2>/dev/null || echo '/.deps/' >>.git/info/exclude
  rm -rf .deps && mkdir -p .deps build
  for pkg in libeigen3-dev libgtest-dev libbenchmark-dev libbenchmark1debian zlib1g-dev; do
    dpkg -L "$pkg" | while read -r f; do
      case "$f" in /usr/share/doc/* | /usr/share/man/* | /usr/share/lintian/*) continue ;; esac
      [ -f "$f" ] || [ -L "$f" ] || continue
      mkdir -p ".deps$(dirname "$f")" && cp -a "$f" ".deps$f"
    done
  done
  find .deps -xtype l -delete  # links to the system's libraries (libz.so): not there
  tar -cJf build/device-deps.tar.xz .deps
  tests/cuda/pack_fixtures.sh || exit 1
  configure >/dev/null && ninja -C "$build" "${targets[@]}" || exit 1
  tar -cJf build/gpucarry.tar.xz "$build"/nnx "$build"/nnx-export \
    "$build"/examples/embed/nnx_yolo.so "$build"/bench/nnx_train_bench \
    "$build"/tests/nnx_cuda_tests "$build"/tests/nnx_runtime_tests "$build"/tests/nnx_train_tests
  ls -l build/*.tar.xz | awk '{s += $5; printf "%s: %.1f MiB\n", $9, $5 / 1048576} END {printf "together %.1f MiB\n", s / 1048576}'
  exit 0
fi

out="${OUT:-$PWD/gpu_logs}"
mkdir -p "$out"
start=$(date +%s)
stamp() { printf '[%4ds] %s\n' $(($(date +%s) - start)) "$*"; }
stages=",${1:-tests,bench,compare1,compare32,train},"
# The device tool brings back 8 files at most: everything goes back as one archive.
pack_logs() {
  [ -n "${OUT:-}" ] || return 0
  tar -C "$out" -czf /tmp/gpu_logs.tgz . && find "$out" -mindepth 1 -delete && mv /tmp/gpu_logs.tgz "$out/"
}
trap pack_logs EXIT
has() { [[ "$stages" == *",$1,"* ]]; }

if [ "$PWD" != "$root" ]; then
  [ -e "$root" ] || { mkdir -p "$(dirname "$root")" && ln -s "$PWD" "$root"; } || exit 2
  cd "$root" || exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
# cuDNN and cuBLAS: the toolkit's, else those of PyTorch's nvidia-* packages.
py=$(command -v python3)
if [ ! -e /usr/local/cuda/include/cudnn.h ] && [ -z "${CUDNN_ROOT:-}" ]; then
  CUDNN_ROOT=$("$py" -c "import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__))" 2>/dev/null)
  export CUDNN_ROOT
fi
libs=$("$py" -c "
import importlib, os
for m in ('nvidia.cudnn', 'nvidia.cublas', 'nvidia.cuda_runtime', 'nvidia.cu13'):
    try: print(os.path.join(os.path.dirname(importlib.import_module(m).__file__), 'lib'))
    except Exception: pass" 2>/dev/null | paste -sd:)
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64${libs:+:$libs}"
export NNX_PYTHON="$py" NNX_FIXTURE_DIR="$root/build/fixtures"
stamp "cuDNN: ${CUDNN_ROOT:-/usr/local/cuda}; python: $py"

if [ -f build/device-fixtures.tar.xz ] && [ ! -d "$NNX_FIXTURE_DIR/train_parity" ]; then
  mkdir -p "$NNX_FIXTURE_DIR" && tar -C "$NNX_FIXTURE_DIR" -xJf build/device-fixtures.tar.xz
  stamp "fixtures unpacked"
fi
ok_binaries() {
  [ -x "$build/nnx" ] && ! ldd "$build/nnx" "$build/tests/nnx_cuda_tests" | grep -q "not found" &&
    { "$build/nnx" 2>&1 || true; } | grep -c "usage: nnx" >/dev/null &&
    "$build/tests/nnx_cuda_tests" --gtest_list_tests >/dev/null 2>&1
}
if [ -f build/gpucarry.tar.xz ] && [ ! -x "$build/nnx" ]; then
  tar -xJf build/gpucarry.tar.xz
fi
if ok_binaries; then
  stamp "carried binaries start here"
else
  stamp "building here (carried binaries absent or not starting: $(ldd "$build/nnx" 2>&1 | grep 'not found' | head -3 | tr '\n' ' '))"
  rm -rf "$build"
  [ -d .deps ] || [ ! -f build/device-deps.tar.xz ] || tar -xJf build/device-deps.tar.xz
  configure -DCMAKE_PREFIX_PATH="$root/.deps/usr" ${CUDNN_ROOT:+-DCUDNN_ROOT=$CUDNN_ROOT} \
    >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 3; }
  ninja -C "$build" "${targets[@]}" >"$out/build.log" 2>&1 ||
    { grep -m 30 -E "error|Error" "$out/build.log"; exit 3; }
  stamp "built"
fi

status=0
if has tests; then
  OUT="$out" tests/cuda/device_check.sh "$build/tests" || status=1
  stamp "tests done"
fi
if has bench; then
  OUT="$out" bench/cuda_bench.sh "$build" || status=1
  stamp "nnx bench done"
fi
compare() {  # NAME ARGS...
  local name="$1"
  shift
  PYTHONUNBUFFERED=1 timeout "${limit:-400}" "$py" python/bench_compare.py --device cuda --models seed,resnet18 \
    --nnx "$build/nnx" --work /tmp/bench-compare --iters 50 --warmup 10 \
    --markdown "$out/$name.md" "$@" ${COMPARE_ARGS:-} >"$out/$name.log" 2>&1 || { status=1; tail -20 "$out/$name.log"; }
  grep -E "^\|" "$out/$name.log"
  stamp "$name done"
}
# nnx bench --device cuda --json into $out/FILE.json, then one line: LABEL, median, p90, peak
# device memory and the CUDA graph state. ITERS timed runs after ITERS / 10.
bench_line() {  # FILE LABEL ITERS ARGS...
  local file="$1" label="$2" iters="$3"
  shift 3
  timeout 60 "$build/nnx" bench "$@" --device cuda --iters "$iters" --warmup $((iters / 10)) \
    --json >"$out/$file.json" 2>"$out/$file.err" || tail -3 "$out/$file.err"
  "$py" -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'{sys.argv[2]:28s}: median {r[\"median_ms\"]:.3f} ms, p90 {r[\"p90_ms\"]:.3f} ms, peak {r[\"peak_device_mb\"]:.0f} MB; {r[\"cuda_graph\"]}')" \
    "$out/$file.json" "$label" 2>/dev/null
}
r18=(bench/models/resnet18.json --shape)
seed=(examples/seed/seed.json --plugin "$build/examples/embed/nnx_yolo.so" --shape)
rounds=${ROUNDS:-3}
has compare1 && compare compare_b1 --batch 1 --rounds "$rounds" --compile off
has compare32 && compare compare_b32 --batch 32 --rounds "$rounds" --compile off
xrounds=${PRECISION_ROUNDS:-$rounds}
has tf32 && compare tf32_b1 --batch 1 --rounds "$xrounds" --compile off --precision tf32
has fp16 && compare fp16_b1 --batch 1 --rounds "$xrounds" --compile off --precision fp16
has bf16 && compare bf16_b1 --batch 1 --rounds "$xrounds" --compile off --precision bf16
has tf32_b32 && compare tf32_b32 --batch 32 --rounds "$xrounds" --compile off --precision tf32
has fp16_b32 && compare fp16_b32 --batch 32 --rounds "$xrounds" --compile off --precision fp16
if has train; then
  PYTHONUNBUFFERED=1 timeout 300 "$py" python/bench_train_compare.py --device cuda \
    --bench "$build/bench/nnx_train_bench" --work /tmp/train-compare --rounds 3 --iters 10 \
    --warmup 3 --markdown "$out/train_compare.md" >"$out/train_compare.log" 2>&1 ||
    { status=1; tail -20 "$out/train_compare.log"; }
  grep -E "^\|" "$out/train_compare.log"
  stamp "train compare done"
fi
if has graphs; then  # CUDA graphs against kernel by kernel, and each kernel's time (ncu)
  graph_bench() {  # NAME ARGS...
    local name="$1" mode
    shift
    for mode in on off; do
      bench_line "${name}_graph_$mode" "$name graph $mode" 200 "$@" --cuda-graph $mode
    done
  }
  graph_bench r18_b1 "${r18[@]}" 1,3,224,224
  graph_bench seed_b1 "${seed[@]}" 1,3,480,640
  graph_bench r18_b32 "${r18[@]}" 32,3,224,224
  NNX_CUDNN_SEARCH=1 graph_bench r18_b1_search "${r18[@]}" 1,3,224,224
  if command -v ncu >/dev/null; then
    timeout 120 ncu --clock-control none --csv --metrics gpu__time_duration.sum "$build/nnx" bench \
      "${r18[@]}" 1,3,224,224 --device cuda --iters 1 --warmup 0 --cuda-graph off \
      >"$out/ncu_r18_b1.csv" 2>"$out/ncu_r18_b1.err" || tail -5 "$out/ncu_r18_b1.err"
    "$py" - "$out/ncu_r18_b1.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head = rows[0]
k, v, u = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}
launches = rows[1:]
half = launches[len(launches) // 2:]  # the second run (the first builds caches)
total = collections.Counter()
count = collections.Counter()
for r in half:
    total[r[k][:90]] += float(r[v].replace(",", "")) * scale.get(r[u], 1e-3)
    count[r[k][:90]] += 1
print(f"ncu: {len(launches)} kernels in 2 runs; second run {sum(total.values()):.1f} us on the GPU")
for name, us in total.most_common(14):
    print(f"  {us:8.1f} us  x{count[name]:<3d} {name}")
PY
  fi
  stamp "graphs done"
fi
if has igemm; then  # our implicit-GEMM convolutions against cuDNN's (NNX_CONV_IGEMM=off|auto)
  # auto (the default): each problem's candidates timed once, the fastest kept; the times, per
  # problem, from NNX_CONV_IGEMM_LOG in each .err file.
  igemm_bench() {  # NAME ITERS ARGS...
    local name="$1" iters="$2" mode
    shift 2
    for mode in off auto; do
      NNX_CONV_IGEMM=$mode NNX_CONV_IGEMM_LOG=1 bench_line "igemm_${name}_$mode" "$name $mode" "$iters" "$@"
    done
  }
  igemm_bench r18_b1 200 "${r18[@]}" 1,3,224,224
  igemm_bench seed_b1 100 "${seed[@]}" 1,3,480,640
  igemm_bench seed_b1_tf32 100 "${seed[@]}" 1,3,480,640 --precision tf32
  igemm_bench seed_b1_fp16 100 "${seed[@]}" 1,3,480,640 --precision fp16
  igemm_bench r18_b1_tf32 200 "${r18[@]}" 1,3,224,224 --precision tf32
  igemm_bench r18_b32 50 "${r18[@]}" 32,3,224,224
  igemm_bench seed_b32 20 "${seed[@]}" 32,3,480,640
  igemm_bench seed_b32_tf32 20 "${seed[@]}" 32,3,480,640 --precision tf32
  grep -h "^nnx: conv" "$out"/igemm_*_auto.err | sort -u | sed 's/^nnx: conv sm[^;]*;cudnn[^;]*;//' | head -60
  stamp "igemm done"
fi
if has traingraph; then  # training steps as one CUDA graph (TrainStep) against op by op, and
  # with our convolution kernels (forward and gradients) off against the automatic choice
  for mode in on off igemm-off; do
    for m in "r18 bench/models/resnet18.json 32,3,64,64" "seed examples/seed/seed.json 16,3,128,160"; do
      set -- $m
      graph=$mode igemm=auto
      [ "$mode" = igemm-off ] && graph=on igemm=off
      NNX_CONV_IGEMM=$igemm NNX_CONV_IGEMM_LOG=1 timeout 120 "$build/bench/nnx_train_bench" "$2" \
        --shape "$3" --device cuda --iters 20 --warmup 5 --cuda-graph $graph \
        >"$out/traingraph_$1_$mode.json" 2>"$out/traingraph_$1_$mode.err" ||
        { status=1; tail -3 "$out/traingraph_$1_$mode.err"; }
      echo "train $1 $mode: $(cat "$out/traingraph_$1_$mode.json")"
    done
  done
  grep -h "^nnx: conv" "$out"/traingraph_*_on.err | sort -u | sed 's/^nnx: conv sm[^;]*;cudnn[^;]*;//' | head -40
  stamp "traingraph done"
fi
if has trainprof; then  # where a training step's time goes on the GPU, node by node
  for job in "seed examples/seed/seed.json 16,3,128,160" "resnet18 bench/models/resnet18.json 32,3,64,64"; do
    set -- $job
    timeout 120 "$build/bench/nnx_train_bench" "$2" --shape "$3" --device cuda --iters 10 \
      --warmup 3 --profile 1 >"$out/trainprof_$1.json" 2>"$out/trainprof_$1.txt" ||
      tail -3 "$out/trainprof_$1.txt"
    echo "$1: $(cat "$out/trainprof_$1.json")"
    head -12 "$out/trainprof_$1.txt"
  done
  stamp "trainprof done"
fi
if has graphapi; then  # convolutions through cuDNN's graph API against its legacy API
  NNX_CUDNN_API=graph timeout 240 "$build/tests/nnx_cuda_tests" \
    --gtest_filter='CudaOps.ConvolutionGraph*:CudaOps.Every*:CudaOps.Fused*:CudaOps.CudaGraph*:CudaOps.Executor*:CudaOps.Tf32*:CudaOps.Fp16*' \
    >"$out/graphapi_tests.log" 2>&1 || status=1
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]" "$out/graphapi_tests.log" | head -20
  NNX_CUDNN_API=graph timeout 120 "$build/tests/nnx_train_tests" --gtest_filter='Cuda*' \
    >"$out/graphapi_train.log" 2>&1 || status=1
  grep -E "^\[  (PASSED|FAILED) " "$out/graphapi_train.log"
  stamp "graph API tests done"
  api_bench() {  # NAME ARGS...
    local name="$1" api
    shift
    for api in legacy graph; do
      NNX_CUDNN_API=$api bench_line "api_${name}_$api" "$name $api" 100 "$@"
    done
  }
  api_bench r18_b1_nograph "${r18[@]}" 1,3,224,224 --cuda-graph off
  api_bench r18_b1 "${r18[@]}" 1,3,224,224
  api_bench seed_b1 "${seed[@]}" 1,3,480,640
  api_bench seed_b32 "${seed[@]}" 32,3,480,640
  NNX_CUDNN_SEARCH=1 api_bench seed_b1_search "${seed[@]}" 1,3,480,640
  NNX_CUDNN_SEARCH=1 api_bench r18_b1_search "${r18[@]}" 1,3,224,224
  for job in "seed examples/seed/seed.json 16,3,128,160" "resnet18 bench/models/resnet18.json 32,3,64,64"; do
    set -- $job
    for api in legacy graph; do
      NNX_CUDNN_API=$api timeout 120 "$build/bench/nnx_train_bench" "$2" --shape "$3" --device cuda \
        --iters 10 --warmup 3 >"$out/api_train_$1_$api.json" 2>"$out/api_train_$1_$api.err" ||
        tail -3 "$out/api_train_$1_$api.err"
      echo "train $1 $api: $(cat "$out/api_train_$1_$api.json")"
    done
  done
  stamp "graph API done"
fi
if has diag; then  # where the time goes: per-node profiles, timed algorithm search, the exporter
  nnx_bench() {  # NAME ARGS...
    local name="$1"
    shift
    timeout 60 "$build/nnx" bench "$@" --device cuda --iters 30 --warmup 5 >"$out/$name.txt" 2>&1
    echo "$name: $(grep -E "^median" "$out/$name.txt")"
  }
  nnx_bench prof_r18_b1 "${r18[@]}" 1,3,224,224 --profile
  NNX_FUSE=0 nnx_bench prof_r18_b1_unfused "${r18[@]}" 1,3,224,224 --profile
  nnx_bench prof_r18_b32 "${r18[@]}" 32,3,224,224 --profile
  nnx_bench prof_seed_b1 "${seed[@]}" 1,3,480,640 --profile
  NNX_CUDNN_SEARCH=1 nnx_bench search_r18_b1 "${r18[@]}" 1,3,224,224
  NNX_CUDNN_SEARCH=1 nnx_bench search_r18_b32 "${r18[@]}" 32,3,224,224
  NNX_CUDNN_SEARCH=1 nnx_bench search_seed_b32 "${seed[@]}" 32,3,480,640
  head -45 "$out/prof_r18_b1.txt"
  NNX_EXPORT_DEBUG=1 timeout 60 "$build/nnx-export" torchvision.models:resnet18 --shape 1,3,224,224 \
    --out /tmp/export_r18/resnet18 --no-verify >"$out/export.log" 2>&1
  grep -B2 -A1 -E "Error|error" "$out/export.log" | tail -12
  stamp "diag done"
fi
# torch.compile takes tens of seconds per model and round: last, one model at a time, each
# within what DEADLINE leaves.
for model in resnet18 seed; do
  limit=$((${DEADLINE:-100000} - $(date +%s) + start))
  has compile && [ "$limit" -gt 20 ] &&
    compare "compile_b1_$model" --batch 1 --rounds 1 --compile on --models "$model"
done
if has sanitize && command -v compute-sanitizer >/dev/null; then
  timeout 150 compute-sanitizer --tool memcheck --print-limit 20 "$build/tests/nnx_cuda_tests" \
    --gtest_filter='CudaOps.EveryVariant*' >"$out/memcheck.log" 2>&1 || status=1
  grep -E "ERROR SUMMARY|PASSED|FAILED" "$out/memcheck.log" | head
  stamp "memcheck done"
fi
exit $status
