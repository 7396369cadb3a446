#!/usr/bin/env bash
# Sets up, builds, and runs the example: the corrected seed network of the original README,
# with its YOLO head registered as a user op, on a 1x3x480x640 input; prints outputs and time.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target seed_example nnx_cli
build/release/examples/seed_example examples/seed/seed.json "$@"
