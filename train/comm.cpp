// The communicator interface's shared parts: the one-process communicator and gradient buckets
// (see nnx/comm.h). No communication library is needed here.
#include "nnx/comm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "nnx/error.h"

namespace nnx {

Communicator::~Communicator() = default;

void LocalCommunicator::abort(int code) {
  std::exit(code);
}

GradientBuckets::GradientBuckets(Communicator& comm, std::span<Parameter> params,
                                 size_t bucket_bytes)
    : comm_(comm), params_(params) {
  const size_t n = params.size();
  bucket_of_.assign(n, -1);
  offset_.assign(n, 0);
  is_ready_.assign(n, false);
  const size_t limit = std::max<size_t>(1, bucket_bytes / sizeof(float));
  size_t filled = 0;
  for (size_t i = n; i-- > 0;) {
    const size_t count = size_t(params[i].grad.numel());
    if (buckets_.empty() || (filled > 0 && filled + count > limit)) {
      buckets_.emplace_back();
      filled = 0;
    }
    Bucket& b = buckets_.back();
    bucket_of_[i] = int(buckets_.size() - 1);
    offset_[i] = filled;
    b.params.push_back(int(i));
    filled += count;
  }
  for (Bucket& b : buckets_) {
    size_t total = 0;
    for (int k : b.params) total += size_t(params[size_t(k)].grad.numel());
    b.data.assign(total, 0.f);
    b.pending = int(b.params.size());
  }
}

void GradientBuckets::start(Bucket& b) {
  b.handle = comm_.start_all_reduce(b.data.data(), b.data.size());
}

void GradientBuckets::ready(int k) {
  NNX_CHECK(k >= 0 && size_t(k) < params_.size(), ErrorKind::usage,
            "GradientBuckets::ready: no parameter ", k);
  if (is_ready_[size_t(k)]) return;
  is_ready_[size_t(k)] = true;
  const Parameter& p = params_[size_t(k)];
  Bucket& b = buckets_[size_t(bucket_of_[size_t(k)])];
  std::memcpy(b.data.data() + offset_[size_t(k)], p.grad.contiguous().data<float>(),
              size_t(p.grad.numel()) * sizeof(float));
  --b.pending;
  // Buckets start in index order on every rank, whatever order the parameters come in.
  while (next_start_ < buckets_.size() && buckets_[next_start_].pending == 0)
    start(buckets_[next_start_++]);
  comm_.progress();
}

void GradientBuckets::finish() {
  // A parameter never reported (or a rank without samples) is copied now.
  for (size_t k = params_.size(); k-- > 0;)
    if (!is_ready_[k]) ready(int(k));
  for (Bucket& b : buckets_) {
    comm_.wait(b.handle);
    b.handle = -1;
    for (int k : b.params) {
      Parameter& p = params_[size_t(k)];
      std::memcpy(p.grad.data<float>(), b.data.data() + offset_[size_t(k)],
                  size_t(p.grad.numel()) * sizeof(float));
    }
    b.pending = int(b.params.size());
  }
  std::fill(is_ready_.begin(), is_ready_.end(), false);
  next_start_ = 0;
}

}  // namespace nnx
