#!/usr/bin/env bash
# Embedding check: installs nnx to a temporary prefix, builds examples/embed against that
# installation alone, and checks that embed_demo (C++), embed_demo_c (C API + YOLO plugin) and
# the installed `nnx run --plugin` write byte-identical outputs for the corrected seed network
# (examples/seed) on one input. Also checks the installed package: only the public API exported,
# no Python library needed, no CUDA library for a CPU-only build, `find_package(nnx COMPONENTS
# CUDA)` found only for a CUDA build, and nnx.pc usable; prints the installed sizes.
#   tools/embed-check.sh [BUILD_DIR]   (default: build/embed-check, configured CPU-only release;
#                                       an existing, configured BUILD_DIR is reused as it is)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/embed-check}
jobs=${NNX_JOBS:-$(nproc)}
work=$(mktemp -d "${TMPDIR:-/tmp}/nnx-embed.XXXXXX")
trap 'rm -rf "$work"' EXIT
say() { echo "embed-check: $*"; }
die() { echo "embed-check: FAILED: $*" >&2; exit 1; }

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNNX_CUDA=OFF \
        -DNNX_BUILD_TESTS=OFF -DNNX_BUILD_BENCH=OFF >/dev/null
fi
cmake --build "$build" -j "$jobs"
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
say "installed: $(cd "$prefix" && find bin lib -type f | sort | tr '\n' ' ')+ $(find "$prefix/include/nnx" -type f | wc -l) headers"

# The consumer, from the installed package alone.
cmake -S examples/embed -B "$work/embed" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >/dev/null
grep -q "^nnx_DIR:PATH=$prefix/" "$work/embed/CMakeCache.txt" || die "nnx was not found in $prefix"
cmake --build "$work/embed" -j "$jobs" >/dev/null

# The example network: the corrected seed (its YOLO head is the plugin's user op), weights
# written by the installed nnx (PyTorch-like initialisation, seed 0), a pseudo-random input.
nnx="$prefix/bin/nnx"
plugin="$work/embed/nnx_yolo.so"
arch=examples/seed/seed.json
"$nnx" convert "$arch" --plugin "$plugin" --out "$work/seed_weights.json" 2>/dev/null
weights="$work/seed_weights.pth"
perl - "$work/input.npy" <<'PERL'
my $path = shift;
my @shape = (1, 3, 96, 128);
my $n = 1;
$n *= $_ for @shape;
my $header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" . join(", ", @shape) . "), }";
$header .= " " x ((64 - (10 + length($header) + 1) % 64) % 64) . "\n";
my ($seed, @values) = (12345);
for (1 .. $n) {
  $seed = ($seed * 1103515245 + 12345) % 2147483648;
  push @values, $seed / 2147483648;
}
open(my $f, ">:raw", $path) or die "$path: $!";
print $f "\x93NUMPY\x01\x00", pack("v", length($header)), $header, pack("f<*", @values);
close $f;
PERL

"$nnx" run "$arch" --plugin "$plugin" --weights "$weights" --input "$work/input.npy" \
       --out "$work/out_nnx" >/dev/null 2>&1 || die "nnx run failed"
"$work/embed/embed_demo" "$arch" "$weights" "$work/input.npy" "$work/out_cpp" >/dev/null
mkdir -p "$work/out_c"
"$work/embed/embed_demo_c" --plugin "$plugin" "$arch" "$weights" "$work/input.npy" \
  "$work/out_c" >/dev/null
count=0
for ref in "$work"/out_nnx/out*.npy; do
  name=$(basename "$ref")
  cmp -s "$ref" "$work/out_cpp/$name" || die "embed_demo's $name differs from nnx run's"
  cmp -s "$ref" "$work/out_c/$name" || die "embed_demo_c's $name differs from nnx run's"
  count=$((count + 1))
done
for dir in out_cpp out_c; do
  [ "$count" -ge 2 ] && [ "$(find "$work/$dir" -name '*.npy' | wc -l)" = "$count" ] ||
    die "expected the seed's 2 outputs from nnx run and $dir, found $count"
done
say "embed_demo, embed_demo_c and nnx run: $count outputs, byte-identical"

# What the installed library and command need and export.
lib=$(find "$prefix/lib" -maxdepth 1 \( -name 'libnnx.so.*.*.*' -o -name libnnx.a \) | head -1)
cuda=$(sed -n 's/^set(nnx_CUDA_FOUND \(.*\))$/\1/p' "$prefix/lib/cmake/nnx/nnxConfig.cmake")
binaries=("$nnx")
[ "${lib##*.}" = a ] || binaries+=("$lib")
needs=$(ldd "${binaries[@]}" | grep -v ':$' | awk '{print $1}' | sort -u)
! grep -qi python <<<"$needs" || die "a Python library is needed: $needs"
if [ "$cuda" = OFF ] || [ "$cuda" = FALSE ]; then
  ! grep -Eqi 'cuda|cublas|cudnn|nvidia' <<<"$needs" || die "a CPU-only build needs CUDA: $needs"
fi
if [ "${lib##*.}" != a ]; then
  extra=$(nm -D --defined-only "$lib" | awk '{print $3}' | c++filt |
          grep -Ev '^(nnx::|nnx_|(typeinfo|typeinfo name|vtable|VTT) for nnx::|(non-)?virtual thunk to nnx::|_init$|_fini$)' || true)
  [ -z "$extra" ] || die "exported beyond the public API: $(head -5 <<<"$extra")"
  say "$(basename "$lib") exports $(nm -D --defined-only "$lib" | wc -l) symbols, all public API"
fi
say "needs (ldd of the library and nnx): $(tr '\n' ' ' <<<"$needs")"

# find_package(nnx COMPONENTS CUDA) is found exactly when the build has CUDA; nnx.pc works.
mkdir -p "$work/component"
cat >"$work/component/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.24)
project(component LANGUAGES C)
find_package(nnx CONFIG COMPONENTS CUDA)
message(STATUS "nnx with CUDA: ${nnx_FOUND}")
EOF
found=$(cmake -S "$work/component" -B "$work/component/build" -DCMAKE_PREFIX_PATH="$prefix" 2>/dev/null |
        sed -n 's/^-- nnx with CUDA: //p')
case "$cuda:$found" in
  ON:1 | TRUE:1 | ON:TRUE | TRUE:TRUE | OFF:0 | FALSE:0 | OFF:FALSE | FALSE:FALSE) ;;
  *) die "find_package(nnx COMPONENTS CUDA) gave '$found' for a build with CUDA '$cuda'" ;;
esac
if command -v pkg-config >/dev/null; then
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  # shellcheck disable=SC2046
  cc -std=c99 examples/embed/embed_demo_c.c -o "$work/embed_demo_c_pc" $(pkg-config --cflags nnx) \
     $(pkg-config --libs $([ "${lib##*.}" = a ] && echo --static) nnx) \
     $([ "${lib##*.}" = a ] && echo -lstdc++ -lm) -Wl,-rpath,"$prefix/lib"
  "$work/embed_demo_c_pc" --plugin "$plugin" "$arch" "$weights" "$work/input.npy" "$work/out_c" \
    >/dev/null || die "the C demo built with pkg-config failed"
  say "nnx.pc: the C demo builds and runs with pkg-config alone"
fi
say "sizes: $(basename "$lib") $(du -h "$lib" | cut -f1), nnx $(du -h "$nnx" | cut -f1)" \
    "(CUDA: $cuda)"
say "ok"
