// User-op plugins: a shared library (CMake MODULE) that registers ops when loaded with
// nnx::load_plugin (C: nnx_load_plugin; CLI: --plugin). Built against these headers and not
// linked with libnnx: the nnx symbols it uses bind to the one copy of the library in the process
// that loads it (libnnx, or the nnx command, which exports its API), like a Python extension.
//   NNX_PLUGIN(register_my_ops) { nnx::register_op("own_module.YOLO", ...); }
#pragma once

#include "nnx/registry.h"
#include "nnx/version.h"

// The entry points a plugin exports: its nnx version (checked against the loading library's
// major.minor, since 0.x releases may change the ABI) and its registration function.
#define NNX_PLUGIN_VERSION_SYMBOL "nnx_plugin_version"
#define NNX_PLUGIN_INIT_SYMBOL "nnx_plugin_init"

#define NNX_PLUGIN(name)                        \
  static void name();                           \
  extern "C" NNX_API int nnx_plugin_version() { \
    return NNX_VERSION;                         \
  }                                             \
  extern "C" NNX_API void nnx_plugin_init() {   \
    name();                                     \
  }                                             \
  static void name()
