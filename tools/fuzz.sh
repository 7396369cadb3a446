#!/usr/bin/env bash
# Builds the libFuzzer targets (the `fuzz` preset: clang, ASan + UBSan) and runs each for a
# while with its seed corpus and dictionary. tests/fuzz/README.md has the details.
#
#   tools/fuzz.sh [--merge] [SECONDS_PER_TARGET=60] [TARGET...]
#
# TARGET: fuzz_json fuzz_call fuzz_zip fuzz_pickle fuzz_pth fuzz_safetensors fuzz_npy fuzz_idx (the
# default: all; the fuzz_ prefix may be left out). The repository's corpus is copied to a
# scratch folder first, so it changes only with --merge, which adds the inputs that found new
# coverage (minimised by libFuzzer's -merge). Findings (crash-*, leak-*, timeout-*, oom-*,
# slow-unit-* files) go to build/fuzz/findings/TARGET/; the exit status is 1 if any target found
# something, 2 on a usage error. Environment: NNX_FUZZ_JOBS (build jobs, and targets fuzzed at
# once, each on one core; default: all cores), NNX_FUZZ_ARGS (more libFuzzer flags, e.g.
# "-max_len=65536").
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(fuzz_json fuzz_call fuzz_zip fuzz_pickle fuzz_pth fuzz_safetensors fuzz_npy fuzz_idx)
merge=0
seconds=60
targets=()
for arg in "$@"; do
  case "$arg" in
    --merge) merge=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *[!0-9]*)
      t="fuzz_${arg#fuzz_}"
      if [[ " ${all_targets[*]} " != *" $t "* ]]; then
        echo "fuzz.sh: unknown target '$arg' (one of: ${all_targets[*]})" >&2
        exit 2
      fi
      targets+=("$t") ;;
    *) seconds=$arg ;;
  esac
done
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
if [ "$seconds" -lt 1 ]; then
  echo "fuzz.sh: SECONDS_PER_TARGET must be at least 1" >&2
  exit 2
fi

# libFuzzer ships with clang (Debian: clang and libclang-rt-dev, in tools/setup.sh's list).
if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: clang++ not found: run tools/setup.sh (it installs clang and libFuzzer)" >&2
  exit 2
fi
if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, long) { return 0; }' |
    clang++ -x c++ -fsanitize=fuzzer - -o /dev/null 2>/dev/null; then
  echo "fuzz.sh: clang++ -fsanitize=fuzzer does not link: libFuzzer is missing" \
       "(Debian: libclang-rt-dev; run tools/setup.sh)" >&2
  exit 2
fi

build=build/fuzz
if [ ! -f "$build/build.ninja" ]; then
  cmake --preset fuzz >/dev/null
fi
cmake --build --preset fuzz -j "${NNX_FUZZ_JOBS:-$(nproc)}" >/dev/null

# Sanitizer settings: stop at the first error, with a stack trace; leaks are findings too.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/nnx-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# One target: its summary in $scratch/$t.summary (a line, and for a finding the log's first error).
fuzz_one() {
  local t=$1 format=${1#fuzz_}
  local corpus=tests/fuzz/corpus/$t findings=$build/findings/$t log=$build/findings/$t.log
  mkdir -p "$findings" "$scratch/$t"
  [ -d "$corpus" ] && cp -R "$corpus/." "$scratch/$t/"
  local dict=()
  [ -f "tests/fuzz/dict/$format.dict" ] && dict=(-dict="tests/fuzz/dict/$format.dict")
  echo "fuzz.sh: $t for ${seconds}s (log: $log)"
  local before rc=0 execs new result="nothing found" detail=""
  before=$(find "$findings" -type f | wc -l)
  # shellcheck disable=SC2086
  "$build/tests/fuzz/$t" "$scratch/$t" "${dict[@]}" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$findings/" ${NNX_FUZZ_ARGS:-} >"$log" 2>&1 || rc=$?
  execs=$( (grep -h '^stat::number_of_executed_units:' "$log" || true) | awk '{s += $2} END {print s + 0}')
  new=$(( $(find "$findings" -type f | wc -l) - before ))
  if [ "$rc" -ne 0 ] || [ "$new" -gt 0 ]; then
    result="FOUND: exit $rc, $new new file(s) in $findings/"
    detail=$(grep -m1 -E '^==[0-9]+==ERROR|runtime error|deadly signal|Timeout|out-of-memory|fuzz property' \
      "$log" | sed 's/^/    /' || true)
  fi
  {
    printf '%-18s %6ss %12s execs  %s\n' "$t" "$seconds" "$execs" "$result"
    [ -z "$detail" ] || printf '%s\n' "$detail"
  } >"$scratch/$t.summary"
  if [ "$merge" -eq 1 ] && [ -d "$corpus" ]; then
    "$build/tests/fuzz/$t" -merge=1 "$corpus" "$scratch/$t" "${dict[@]}" -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=2048 >>"$log" 2>&1 || true
  fi
}

# The targets run side by side, as many at once as there are cores (each is single-threaded).
parallel=${NNX_FUZZ_JOBS:-$(nproc)}
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$parallel" ]; then
    wait -n || true  # a target's status is in its files
    running=$((running - 1))
  fi
  fuzz_one "$t" &
  running=$((running + 1))
done
wait || true
echo
found=0
for t in "${targets[@]}"; do
  [ -f "$scratch/$t.summary" ] || { echo "fuzz.sh: $t did not finish" >&2; found=1; continue; }
  cat "$scratch/$t.summary"
  if grep -q ' FOUND: ' "$scratch/$t.summary"; then found=1; fi
done
exit "$found"
