// ThreadPool: workers wait for a job, take chunks of it from a shared counter, and the caller
// works on chunks too until all are done.
#include "nnx/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace nnx {

namespace {

std::chrono::microseconds spin_budget() {
  static const std::chrono::microseconds budget = [] {
    const char* v = std::getenv("NNX_SPIN_US");
    long us = 200;
    if (v != nullptr) {
      char* end = nullptr;
      const long parsed = std::strtol(v, &end, 10);
      if (end != v && *end == '\0' && parsed >= 0) us = std::min(parsed, 1000000L);
    }
    return std::chrono::microseconds(us);
  }();
  return budget;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

}  // namespace

template <typename Done>
bool ThreadPool::spin_until(Done done) {
  const auto budget = spin_budget();
  if (budget.count() == 0) return done();
  const auto deadline = std::chrono::steady_clock::now() + budget;
  while (true) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
    // Where threads outnumber cores, let a thread with work run instead of this spin.
    std::this_thread::yield();
  }
}

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < std::max(threads, 1); ++i)
    workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
}

int ThreadPool::hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : int(n);
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, RangeFn fn) {
  if (n <= 0) return;
  int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(grain, 1));
  int64_t chunks = std::min<int64_t>(size(), max_chunks);
  if (chunks <= 1) return fn(0, n);
  std::unique_lock<std::mutex> lock(mutex_);
  job_ = &fn;
  job_n_ = n;
  chunks_ = chunks;
  chunk_ = (n + chunks - 1) / chunks;
  next_chunk_ = 0;
  pending_ = chunks;
  error_ = nullptr;
  ++generation_;
  lock.unlock();
  wake_.notify_all();
  // The caller takes chunks as well.
  while (true) {
    lock.lock();
    if (next_chunk_ >= chunks_) break;
    int64_t c = next_chunk_++;
    lock.unlock();
    std::exception_ptr err;
    try {
      fn(c * chunk_, std::min(n, (c + 1) * chunk_));
    } catch (...) {
      err = std::current_exception();
    }
    lock.lock();
    if (err && !error_) error_ = err;
    --pending_;
    lock.unlock();
  }
  // The other chunks are finishing: spin for them before sleeping.
  lock.unlock();
  spin_until([this] { return pending_.load(std::memory_order_acquire) == 0; });
  lock.lock();
  done_.wait(lock, [this] { return pending_.load() == 0; });
  job_ = nullptr;
  std::exception_ptr err = error_;
  error_ = nullptr;
  lock.unlock();
  if (err) std::rethrow_exception(err);
}

void ThreadPool::worker_loop(int) {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    // Spin for the next job a while (a network's next op follows within microseconds).
    lock.unlock();
    spin_until([&] { return stop_.load() || generation_.load(std::memory_order_acquire) != seen; });
    lock.lock();
    wake_.wait(lock, [&] { return stop_ || (generation_ != seen && job_ != nullptr); });
    if (stop_) return;
    seen = generation_;
    while (job_ != nullptr && next_chunk_ < chunks_) {
      int64_t c = next_chunk_++;
      const auto* fn = job_;
      int64_t n = job_n_, chunk = chunk_;
      lock.unlock();
      std::exception_ptr err;
      try {
        (*fn)(c * chunk, std::min(n, (c + 1) * chunk));
      } catch (...) {
        err = std::current_exception();
      }
      lock.lock();
      if (err && !error_) error_ = err;
      if (pending_.fetch_sub(1) == 1) done_.notify_all();
    }
  }
}

}  // namespace nnx
