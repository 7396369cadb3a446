#!/usr/bin/env bash
# Installs what building and testing NN-Executor needs on Debian, and nothing that is already
# there (idempotent; no download at build time). The CUDA toolkit, cuDNN and cuBLAS are used
# from /usr/local/cuda when present; nothing here installs them.
set -euo pipefail
# libopenblas0-pthread: Debian's python3-torch calls whatever libblas.so.3 is installed; without
# OpenBLAS that is the reference BLAS and PyTorch, the reference the benchmarks compare against,
# runs several times slower than it can (python/torch_blas.py).
packages=(cmake ninja-build g++ libeigen3-dev zlib1g-dev libgtest-dev libbenchmark-dev
          python3-torch python3-torchvision python3-numpy python3-sklearn clang
          libclang-rt-dev openmpi-bin libopenmpi-dev
          libopenblas0-pthread)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
/usr/bin/python3 -c "import torch, numpy" || { echo "setup: /usr/bin/python3 cannot import torch" >&2; exit 1; }
echo "setup: all dependencies present"
