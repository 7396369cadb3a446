// The NCCL communicator for device memory: the unique id travels through the MPI communicator;
// collectives run on the communicator's own stream and are polled against a deadline (with
// NCCL's asynchronous error), so a lost rank aborts the NCCL communicator instead of hanging.
#include <cuda_runtime.h>
#include <nccl.h>
#include <sched.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "nnx/error.h"
#include "train/dist/comm_mpi.h"

namespace nnx::dist {

namespace {

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& mpi, int device, double timeout_s)
      : mpi_(mpi), device_(device), timeout_s_(timeout_s), rank_(mpi.rank()), size_(mpi.size()) {
    cuda(cudaSetDevice(device_), "cudaSetDevice");
    ncclUniqueId id{};
    if (rank_ == 0) nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
    mpi_.broadcast(&id, sizeof id, 0);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // init and collectives return at once; completion is polled
    nccl(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config), "ncclCommInitRank");
    settle("ncclCommInitRank");
    cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~NcclCommunicator() override {
    for (cudaEvent_t e : events_)
      if (e != nullptr) cudaEventDestroy(e);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (comm_ != nullptr) ncclCommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  void all_reduce(float* data, size_t count) override {
    wait(start(data, count, ncclFloat32, "ncclAllReduce"));
  }
  void all_reduce(double* data, size_t count) override {
    wait(start(data, count, ncclFloat64, "ncclAllReduce"));
  }
  void all_reduce(int64_t* data, size_t count) override {
    wait(start(data, count, ncclInt64, "ncclAllReduce"));
  }
  void broadcast(void* data, size_t bytes, int root) override {
    nccl(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_), "ncclBroadcast");
    settle("ncclBroadcast");
    wait(record());
  }
  int start_all_reduce(float* data, size_t count) override {
    return start(data, count, ncclFloat32, "ncclAllReduce");
  }

  void wait(int handle) override {
    NNX_CHECK(handle >= 0 && size_t(handle) < events_.size() && events_[size_t(handle)],
              ErrorKind::usage, "NcclCommunicator::wait: no request ", handle);
    cudaEvent_t& event = events_[size_t(handle)];
    poll(
        [&] {
          cudaError_t e = cudaEventQuery(event);
          if (e == cudaErrorNotReady) return false;
          cuda(e, "cudaEventQuery");
          return true;
        },
        "all-reduce");
    cudaEventDestroy(event);
    event = nullptr;
    bool all_done = true;
    for (cudaEvent_t e : events_) all_done = all_done && e == nullptr;
    if (all_done) events_.clear();
  }

  [[noreturn]] void abort(int code) override {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    mpi_.abort(code);
    std::_Exit(code);  // not reached
  }

 private:
  void cuda(cudaError_t e, const char* what) const {
    NNX_CHECK(e == cudaSuccess, ErrorKind::device, "rank ", rank_, ": ", what,
              " failed: ", cudaGetErrorString(e));
  }
  void nccl(ncclResult_t r, const char* what) const {
    NNX_CHECK(r == ncclSuccess || r == ncclInProgress, ErrorKind::device, "rank ", rank_, ": ",
              what, " failed: ", ncclGetErrorString(r));
  }

  // Polls `done` until it holds; NCCL's asynchronous errors and the deadline abort the
  // communicator and throw.
  template <class F>
  void poll(F&& done, const char* what) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    for (;;) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        fail(ErrorKind::device, "rank ", rank_, ": NCCL ", what,
             " failed: ", ncclGetErrorString(async));
      }
      if (async == ncclSuccess && done()) return;
      const double waited = std::chrono::duration<double>(Clock::now() - start).count();
      if (waited >= timeout_s_) {
        ncclCommAbort(comm_);
        comm_ = nullptr;
        fail(ErrorKind::device, "rank ", rank_, ": NCCL ", what, " did not complete within ",
             timeout_s_, " s (another rank has stopped?); NNX_COMM_TIMEOUT sets the limit");
      }
      sched_yield();
    }
  }
  // Waits until a non-blocking NCCL call has been issued.
  void settle(const char* what) {
    poll([] { return true; }, what);
  }

  int record() {
    cudaEvent_t event = nullptr;
    cuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate");
    cuda(cudaEventRecord(event, stream_), "cudaEventRecord");
    events_.push_back(event);
    return int(events_.size() - 1);
  }

  int start(void* data, size_t count, ncclDataType_t type, const char* what) {
    nccl(ncclAllReduce(data, data, count, type, ncclSum, comm_, stream_), what);
    settle(what);
    return record();
  }

  Communicator& mpi_;
  int device_;
  double timeout_s_;
  int rank_, size_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::vector<cudaEvent_t> events_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& mpi, int device,
                                                     double timeout_s) {
  return std::make_unique<NcclCommunicator>(mpi, device, timeout_s);
}

}  // namespace nnx::dist
