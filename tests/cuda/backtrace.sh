#!/usr/bin/env bash
# Runs a command that crashed under cuda-gdb (the GPU machine has no gdb) and prints where it
# crashed; the whole session goes to LOG.
#   tests/cuda/backtrace.sh LOG COMMAND [ARGS...]
log="$1"
shift
command -v cuda-gdb >/dev/null || { echo "backtrace: no cuda-gdb here" >&2; exit 0; }
timeout 45 cuda-gdb -q -batch -ex "set pagination off" -ex run -ex bt -ex "info registers rip" \
  --args "$@" >"$log" 2>&1
echo "backtrace of $*:"
grep -E "^#[0-9]+|signal|SIG" "$log" | head -25
