// How many times this thread ran an op's CPU body on host copies of device tensors
// (Op::forward_on_host). The Executor compares the count around each node of a CUDA run to
// learn which nodes leave the device: those cannot be captured into a CUDA graph.
#pragma once

#include <cstdint>

namespace nnx::detail {

uint64_t host_fallbacks();

}  // namespace nnx::detail
