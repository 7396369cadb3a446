// Data-parallel training: the communicator a run's processes ("ranks") share, and gradient
// buckets that all-reduce while backward still runs. The library holds only these interfaces;
// the MPI (CPU memory) and NCCL (device memory) backends are built into the nnx command where
// their libraries are found (train/dist/).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "nnx/export.h"
#include "nnx/op.h"
#include "nnx/train.h"

namespace nnx {

// A group of ranks. Collectives are called by every rank in the same order with the same
// counts; a backend fails (throws Error, or ends the job naming the rank) rather than hang when
// a rank is gone. Pointers are host memory for MPI and device memory for NCCL.
class NNX_API Communicator : public StatReducer {
 public:
  ~Communicator() override;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;

  // In-place sums over all ranks, blocking.
  virtual void all_reduce(float* data, size_t count) = 0;
  virtual void all_reduce(double* data, size_t count) = 0;
  virtual void all_reduce(int64_t* data, size_t count) = 0;
  // Copies root's bytes to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // A non-blocking in-place sum: returns a handle for wait(). `data` stays untouched by the
  // caller until then.
  virtual int start_all_reduce(float* data, size_t count) = 0;
  virtual void wait(int handle) = 0;
  // Lets started operations advance (backends without a progress thread need calls).
  virtual void progress() {}
  // Ends every rank of the job at once (after a fault on this one), with `code` as status.
  [[noreturn]] virtual void abort(int code) = 0;

  // StatReducer: BatchNorm's --sync-bn statistics.
  void sum(std::span<double> values) override { all_reduce(values.data(), values.size()); }
};

// One process: every collective is the identity.
class NNX_API LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "local"; }
  void all_reduce(float*, size_t) override {}
  void all_reduce(double*, size_t) override {}
  void all_reduce(int64_t*, size_t) override {}
  void broadcast(void*, size_t, int) override {}
  int start_all_reduce(float*, size_t) override { return 0; }
  void wait(int) override {}
  [[noreturn]] void abort(int code) override;
};

// Sums the gradients of `params` over the ranks in buckets of about `bucket_bytes` (parameters
// taken in reverse order, as backward finishes them). Call ready(k) when parameter k's
// gradient is final (Trainer::set_grad_ready_hook): a bucket's all-reduce starts as soon as all
// of its parameters are ready. finish() starts what is left, waits, and writes the sums back
// into Parameter::grad. Host (CPU) gradients.
class NNX_API GradientBuckets {
 public:
  GradientBuckets(Communicator& comm, std::span<Parameter> params, size_t bucket_bytes);
  void ready(int k);
  void finish();
  size_t buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<int> params;  // indices, in the order laid out in `data`
    std::vector<float> data;
    int pending = 0;  // parameters not yet ready
    int handle = -1;  // started all-reduce, or -1
  };
  void start(Bucket& b);
  Communicator& comm_;
  std::span<Parameter> params_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_;  // per parameter
  std::vector<size_t> offset_;  // per parameter, in its bucket
  std::vector<bool> is_ready_;  // per parameter, this step
  size_t next_start_ = 0;       // buckets started so far, in order
};

}  // namespace nnx
