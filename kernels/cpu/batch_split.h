// A batch split over a pool's threads by whole images (see for_each_image).
#pragma once

#include <cstdint>

#include "nnx/thread_pool.h"

namespace nnx::cpu {

// Calls image(n, p) for every image n of a batch. With `whole` and at least one image per
// thread, each thread takes an even share of whole images and runs each alone (p null): no
// meeting of the threads inside an image, and the image's data stays in that core's cache. The
// images left over, or all of them without `whole`, run one at a time split over the pool
// (p = pool, which may itself be null).
template <typename Image>
void for_each_image(ThreadPool* pool, int64_t batch, bool whole, Image&& image) {
  const int64_t threads = pool != nullptr ? pool->size() : 1;
  const int64_t alone = whole && threads > 1 ? batch / threads * threads : 0;
  if (alone > 0)
    parallel_for(pool, alone, 1, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) image(n, nullptr);
    });
  for (int64_t n = alone; n < batch; ++n) image(n, pool);
}

}  // namespace nnx::cpu
