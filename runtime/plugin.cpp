// nnx::load_plugin: opens a user-op plugin (nnx/plugin.h), checks that it was built for this
// version of the library, and calls its registration entry point.
#include <dlfcn.h>

#include <mutex>

#include "nnx/error.h"
#include "nnx/plugin.h"

namespace nnx {

void load_plugin(const std::string& path) {
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  // Never closed: the ops it registers must outlive every model made with them. RTLD_LOCAL: its
  // own symbols do not interpose on anything loaded later.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = dlerror();
    fail(ErrorKind::io, path, ": cannot load the plugin: ", why ? why : "unknown error");
  }
  auto version = reinterpret_cast<int (*)()>(dlsym(handle, NNX_PLUGIN_VERSION_SYMBOL));  // NOLINT
  auto init = reinterpret_cast<void (*)()>(dlsym(handle, NNX_PLUGIN_INIT_SYMBOL));
  NNX_CHECK(version && init, ErrorKind::unsupported, path,
            ": not an nnx plugin (no " NNX_PLUGIN_INIT_SYMBOL " entry point: see nnx/plugin.h)");
  int built_for = version();
  NNX_CHECK(built_for / 100 == NNX_VERSION / 100, ErrorKind::unsupported, path,
            ": plugin built for nnx ", built_for / 10000, ".", built_for / 100 % 100,
            ", this library is ", NNX_VERSION_STRING);
  try {
    init();
  } catch (const Error& e) {
    throw e.with_context(path);
  }
}

}  // namespace nnx
