// The MPI communicator: every collective is non-blocking and polled against a deadline, and
// MPI errors return (MPI_ERRORS_RETURN), so a rank that is gone ends the job with an error
// instead of a hang.
#include "train/dist/comm_mpi.h"

#include <mpi.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "nnx/error.h"

namespace nnx::dist {

namespace {

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, size_t(length));
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(double timeout_s) : timeout_s_(timeout_s) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
      int provided = 0;
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init");
      owns_mpi_ = true;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiCommunicator() override {
    if (owns_mpi_) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  void all_reduce(float* data, size_t count) override { reduce(data, count, MPI_FLOAT); }
  void all_reduce(double* data, size_t count) override { reduce(data, count, MPI_DOUBLE); }
  void all_reduce(int64_t* data, size_t count) override { reduce(data, count, MPI_INT64_T); }

  void broadcast(void* data, size_t bytes, int root) override {
    auto* p = static_cast<char*>(data);
    for (size_t done = 0; done < bytes;) {
      const int n = int(std::min<size_t>(bytes - done, kMaxCount));
      MPI_Request request;
      check(MPI_Ibcast(p + done, n, MPI_BYTE, root, MPI_COMM_WORLD, &request), "MPI_Ibcast");
      complete(request, "broadcast");
      done += size_t(n);
    }
  }

  int start_all_reduce(float* data, size_t count) override {
    NNX_CHECK(count <= kMaxCount, ErrorKind::unsupported, "rank ", rank_, ": all-reduce of ", count,
              " values exceeds one MPI message");
    MPI_Request request;
    check(MPI_Iallreduce(MPI_IN_PLACE, data, int(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                         &request),
          "MPI_Iallreduce");
    requests_.push_back(request);
    return int(requests_.size() - 1);
  }

  void wait(int handle) override {
    NNX_CHECK(handle >= 0 && size_t(handle) < requests_.size(), ErrorKind::usage,
              "MpiCommunicator::wait: no request ", handle);
    complete(requests_[size_t(handle)], "gradient all-reduce");
    bool all_done = true;
    for (MPI_Request r : requests_) all_done = all_done && r == MPI_REQUEST_NULL;
    if (all_done) requests_.clear();
  }

  void progress() override {
    for (MPI_Request& r : requests_) {
      if (r == MPI_REQUEST_NULL) continue;
      int done = 0;
      check(MPI_Test(&r, &done, MPI_STATUS_IGNORE), "MPI_Test");
    }
  }

  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  static constexpr size_t kMaxCount = size_t(1) << 30;

  void check(int code, const char* what) const {
    NNX_CHECK(code == MPI_SUCCESS, ErrorKind::device, "rank ", rank_, ": ", what,
              " failed: ", mpi_error_text(code));
  }

  // Waits for `request`, polling, until the deadline.
  void complete(MPI_Request& request, const char* what) {
    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    for (int spins = 0;; ++spins) {
      int done = 0;
      check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      if ((spins & 1023) == 1023) {
        const double waited = std::chrono::duration<double>(Clock::now() - start).count();
        NNX_CHECK(waited < timeout_s_, ErrorKind::device, "rank ", rank_, ": ", what,
                  " did not complete within ", timeout_s_,
                  " s (another rank has stopped?); NNX_COMM_TIMEOUT sets the limit");
        sched_yield();
      }
    }
  }

  template <class T>
  void reduce(T* data, size_t count, MPI_Datatype type) {
    for (size_t done = 0; done < count;) {
      const int n = int(std::min(count - done, kMaxCount));
      MPI_Request request;
      check(MPI_Iallreduce(MPI_IN_PLACE, data + done, n, type, MPI_SUM, MPI_COMM_WORLD, &request),
            "MPI_Iallreduce");
      complete(request, "all-reduce");
      done += size_t(n);
    }
  }

  double timeout_s_;
  bool owns_mpi_ = false;
  int rank_ = 0, size_ = 1;
  std::vector<MPI_Request> requests_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(double timeout_s) {
  return std::make_unique<MpiCommunicator>(timeout_s);
}

}  // namespace nnx::dist
