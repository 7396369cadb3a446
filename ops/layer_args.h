// Argument helpers shared by the layer ops (conv, linear, norm, pooling, resampling): PyTorch's
// _pair() of ints and the device/dtype factory keywords, with errors naming the argument.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "nnx/value.h"

namespace nnx::layer_args {

// An int or a sequence of exactly two ints, as PyTorch's _pair() takes it; `fallback` when the
// argument is absent or None. Pooling functions also take a one-int sequence (`accept_single`).
std::array<int64_t, 2> int_pair(const Args& args, std::string_view name, int64_t fallback,
                                bool accept_single = false);
// Throws Error(format) unless every value is >= minimum: "Conv2d: stride must be at least 1,
// got (0, 1)".
void expect_at_least(std::string_view op, std::string_view name, std::array<int64_t, 2> values,
                     int64_t minimum);
// PyTorch's device= and dtype= keywords: only None (or float32) is meaningful here, since the
// executor places ops and runs float32; anything else is refused with Error(unsupported).
void check_factory_kwargs(const Args& args, std::string_view op);

}  // namespace nnx::layer_args
