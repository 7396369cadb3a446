// The one exception type of the library: a kind plus a message that names the file, the layer
// or key, and what was expected against what was found.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

#include "nnx/export.h"

namespace nnx {

enum class ErrorKind {
  format,       // a file or description is malformed
  shape,        // shapes or channel counts disagree
  unsupported,  // a valid request this build or op does not handle
  io,           // a file cannot be read or written
  device,       // no device, out of memory, driver errors (not the input's fault)
  usage,        // API misuse by the caller
};

NNX_API const char* error_kind_name(ErrorKind kind);

class NNX_API Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message)
      : std::runtime_error(message), kind_(kind), message_(std::move(message)) {}
  ErrorKind kind() const noexcept { return kind_; }
  const std::string& message() const noexcept { return message_; }
  // The same error with "context: " put in front of its message (file, layer, key...).
  Error with_context(std::string_view context) const {
    return Error(kind_, std::string(context) + ": " + message_);
  }

 private:
  ErrorKind kind_;
  std::string message_;
};

namespace detail {
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}
}  // namespace detail

// NNX_CHECK(cond, kind, "expected ", a, " but found ", b): throws Error(kind, message) if !cond.
#define NNX_CHECK(cond, kind, ...)                                             \
  do {                                                                         \
    if (!(cond)) throw ::nnx::Error(kind, ::nnx::detail::concat(__VA_ARGS__)); \
  } while (0)

template <class... Parts>
[[noreturn]] void fail(ErrorKind kind, const Parts&... parts) {
  throw Error(kind, detail::concat(parts...));
}

}  // namespace nnx
