// A fixed pool of worker threads for data-parallel loops inside one op. Between jobs the workers
// (and a caller waiting for them) spin for a short while before they sleep, so the next op's
// loop of a running network starts without a wake-up through the kernel; NNX_SPIN_US in the
// environment sets that while in microseconds (default 200; 0 sleeps at once).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "nnx/export.h"

namespace nnx {

// A non-owning reference to a callable taking (begin, end), as parallel_for's loop body. Unlike a
// std::function it never copies the callable, so a lambda with many captures costs no heap
// allocation per call; it must not outlive the callable it refers to (a parameter, never a
// variable that a temporary initialises).
class RangeFn {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, RangeFn>>>
  RangeFn(F&& f) noexcept  // NOLINT(google-explicit-constructor): any callable converts
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* object, int64_t begin, int64_t end) {
          (*static_cast<std::remove_reference_t<F>*>(object))(begin, end);
        }) {}
  void operator()(int64_t begin, int64_t end) const { call_(object_, begin, end); }

 private:
  void* object_;
  void (*call_)(void*, int64_t, int64_t);
};

class NNX_API ThreadPool {
 public:
  // `threads` counts the calling thread: ThreadPool(1) runs everything inline.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }
  // Calls fn(begin, end) over disjoint chunks covering [0, n), at most size() chunks of at least
  // `grain` items, and returns when all are done. Exceptions from fn are rethrown here.
  void parallel_for(int64_t n, int64_t grain, RangeFn fn);

  static int hardware_threads();

 private:
  void worker_loop(int index);
  // Spins until done() or the spin budget is spent; returns done().
  template <typename Done>
  static bool spin_until(Done done);
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const RangeFn* job_ = nullptr;
  int64_t job_n_ = 0, chunk_ = 0, chunks_ = 0;
  int64_t next_chunk_ = 0;
  std::atomic<int64_t> pending_{0};      // chunks not finished; changed under mutex_ only
  std::atomic<uint64_t> generation_{0};  // jobs posted; changed under mutex_ only
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
};

// Runs fn over [0, n) on `pool` if given and worthwhile, else inline.
inline void parallel_for(ThreadPool* pool, int64_t n, int64_t grain, RangeFn fn) {
  if (n <= 0) return;
  if (pool == nullptr || pool->size() == 1 || n <= grain) return fn(0, n);
  pool->parallel_for(n, grain, fn);
}

}  // namespace nnx
