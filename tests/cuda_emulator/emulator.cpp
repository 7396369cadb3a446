// The CUDA emulator's host side: the fiber scheduler that runs kernels, and the CUDA runtime
// API functions the runtime calls (memory, copies, streams, events, graphs, errors), in place of
// libcudart. Everything runs synchronously on the calling thread. See README.md.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/cuda_emulator/emulator.h"

#if defined(__SANITIZE_ADDRESS__)
#define NNX_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NNX_EMU_ASAN 1
#endif
#endif
#ifdef NNX_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#include "tests/cuda_emulator/host_work.h"

namespace nnx::emu {

thread_local constinit Coordinates here{};

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "CUDA emulator: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

// ---- the fiber scheduler -----------------------------------------------------------------------

// Switches stacks: saves the callee-saved registers on the current stack and its pointer in
// *save, then resumes the stack at `load` (saved the same way, or prepared by start_stack). A
// kernel's threads switch tens of times each (every barrier and shuffle), so this is the
// emulator's inner loop: ucontext's swapcontext costs a system call per switch.
#if !defined(__x86_64__)
#error "the CUDA emulator's stack switch is written for x86-64"
#endif
extern "C" void nnx_emu_switch(void** save, void* load);
asm(R"(
  .pushsection .text
  .globl nnx_emu_switch
  .type nnx_emu_switch, @function
nnx_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size nnx_emu_switch, .-nnx_emu_switch
  .popsection
)");

// A stack that, switched to, enters entry() as if called (the ABI's alignment: rsp + 8 a multiple
// of 16 on entry). entry must never return.
void* start_stack(char* stack, size_t bytes, void (*entry)()) {
  auto* top = reinterpret_cast<void**>(reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t(15));
  top[-1] = nullptr;                               // entry's return address: never used
  top[-2] = reinterpret_cast<void*>(entry);        // where nnx_emu_switch's ret goes
  for (int r = 3; r <= 8; ++r) top[-r] = nullptr;  // rbp, rbx, r12-r15
  return top - 8;
}

constexpr int kMaxThreads = 1024;
constexpr size_t kStackBytes = size_t(256) << 10;

enum class State { runnable, at_barrier, done };

struct Fiber {
  void* sp = nullptr;  // the saved stack pointer while switched out
  State state = State::done;
  const char* barrier_file = nullptr;  // where it waits, at_barrier
  int barrier_line = 0;
  uint3 index{};
  unsigned shuffle_round = 0;
};

struct Block {
  void* scheduler = nullptr;              // the scheduler's saved stack pointer
  const void* scheduler_stack = nullptr;  // its stack, for AddressSanitizer's fiber switches
  size_t scheduler_stack_bytes = 0;
  Fiber fibers[kMaxThreads];
  char* stacks = nullptr;  // kMaxThreads stacks, each above a guard page
  int count = 0;
  int current = 0;
  void (*body)(void*) = nullptr;
  void* arg = nullptr;
  const char* kernel = "kernel";  // the running kernel's name, for messages
  // Warp shuffles: a lane writes slot[round % 2][thread], reads its source's after a yield.
  uint64_t slot[2][kMaxThreads] = {};
  unsigned slot_round[2][kMaxThreads] = {};
  // Shared memory: the block being run (counted per host thread) and, per __shared__ variable,
  // the block that last filled it (fresh_shared).
  uint64_t epoch = 0;
  std::map<void*, uint64_t> shared_epoch;

  const size_t page = size_t(sysconf(_SC_PAGESIZE));

  Block() {
    const size_t each = kStackBytes + page;
    void* p = mmap(nullptr, each * kMaxThreads, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("cannot map the fibers' stacks");
    stacks = static_cast<char*>(p);
    for (int i = 0; i < kMaxThreads; ++i) mprotect(stacks + i * each, page, PROT_NONE);
  }
  ~Block() { munmap(stacks, (kStackBytes + page) * kMaxThreads); }
  char* stack(int i) const {  // called at every switch: `page` is read once
    return stacks + i * (kStackBytes + page) + page;
  }
};

thread_local std::unique_ptr<Block> tls_block;

Block& block() {
  if (!tls_block) tls_block = std::make_unique<Block>();
  return *tls_block;
}

// A stack switch, told to AddressSanitizer where it runs (so that it knows which stack is
// current; a finished fiber's switch lets it drop that fiber's state).
void switch_stack(void** save, void* load, const void* to_stack, size_t to_bytes, bool finished) {
#ifdef NNX_EMU_ASAN
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(finished ? nullptr : &fake_stack, to_stack, to_bytes);
  nnx_emu_switch(save, load);
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
  (void)to_stack;
  (void)to_bytes;
  (void)finished;
  nnx_emu_switch(save, load);
#endif
}

void yield_to_scheduler(State state) {
  Block& b = *tls_block;
  Fiber& f = b.fibers[b.current];
  f.state = state;
  switch_stack(&f.sp, b.scheduler, b.scheduler_stack, b.scheduler_stack_bytes,
               state == State::done);
}

void fiber_main() {
  Block& b = *tls_block;
#ifdef NNX_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b.scheduler_stack, &b.scheduler_stack_bytes);
#endif
  b.body(b.arg);
  yield_to_scheduler(State::done);  // never resumed
  die("a finished thread was resumed");
}

void run_block(Block& b, dim3 block_dim) {
  b.count = int(block_dim.x * block_dim.y * block_dim.z);
  ++b.epoch;
  for (int i = 0; i < b.count; ++i) {
    Fiber& f = b.fibers[i];
#ifdef NNX_EMU_ASAN
    // The frames a finished fiber was in when it switched away for good never returned, so their
    // redzones are still poisoned: above its last stack pointer (the frames that returned
    // unpoisoned themselves).
    if (f.sp != nullptr) {
      char* low = static_cast<char*>(f.sp) - 256;
      __asan_unpoison_memory_region(low, size_t(b.stack(i) + kStackBytes - low));
    }
#endif
    f.sp = start_stack(b.stack(i), kStackBytes, fiber_main);
    f.state = State::runnable;
    f.index = make_uint3(unsigned(i) % block_dim.x, unsigned(i) / block_dim.x % block_dim.y,
                         unsigned(i) / (block_dim.x * block_dim.y));
    f.shuffle_round = 0;
  }
  for (;;) {
    bool ran = false, waiting = false;
    for (int i = 0; i < b.count; ++i) {
      Fiber& f = b.fibers[i];
      if (f.state != State::runnable) {
        waiting |= f.state == State::at_barrier;
        continue;
      }
      b.current = i;
      here.thread_idx = f.index;
      switch_stack(&b.scheduler, f.sp, b.stack(i), kStackBytes, false);
      ran = true;
    }
    if (ran) continue;
    if (!waiting) break;  // every thread done
    // Every thread that has not exited waits at a barrier: the same one, or the block diverged.
    const Fiber* first = nullptr;
    for (int i = 0; i < b.count; ++i) {
      Fiber& f = b.fibers[i];
      if (f.state != State::at_barrier) continue;
      if (first == nullptr) {
        first = &f;
      } else if (f.barrier_line != first->barrier_line ||
                 (f.barrier_file != first->barrier_file &&
                  std::strcmp(f.barrier_file, first->barrier_file) != 0)) {
        die(std::string("__syncthreads in ") + b.kernel + ": thread " +
            std::to_string(first - b.fibers) + " waits at " + first->barrier_file + ":" +
            std::to_string(first->barrier_line) + ", thread " + std::to_string(i) + " at " +
            f.barrier_file + ":" + std::to_string(f.barrier_line) + " (a divergent barrier)");
      }
      f.state = State::runnable;
    }
  }
}

// ---- call counts (NNX_EMU_STATS=1: printed at exit) ---------------------------------------------

// The emulator's process-wide state is never destroyed: static destructors (a caching
// allocator's among them) may still call into it at exit.
struct Counts {
  std::mutex mutex;
  std::map<std::string, long> calls;
};
Counts& counts() {
  static Counts* c = [] {
    const char* v = std::getenv("NNX_EMU_STATS");
    if (v != nullptr && *v != '\0' && *v != '0')
      std::atexit([] {
        Counts& all = counts();
        std::lock_guard<std::mutex> lock(all.mutex);
        std::vector<std::pair<long, std::string>> sorted;
        for (const auto& [name, n] : all.calls) sorted.emplace_back(-n, name);
        std::sort(sorted.begin(), sorted.end());
        std::fprintf(stderr, "CUDA emulator: calls and launches in this process\n");
        for (const auto& [n, name] : sorted) std::fprintf(stderr, "%10ld  %s\n", -n, name.c_str());
      });
    return new Counts;
  }();
  return *c;
}

// ---- errors ------------------------------------------------------------------------------------

thread_local cudaError_t last_error = cudaSuccess;

cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}

}  // namespace

// Set while a host function (cudaLaunchHostFunc) runs: it may make no CUDA call.
thread_local bool in_host_function = false;

void count(const char* what) {
  if (in_host_function)
    die((std::string(what) +
         " called from a host function (cudaLaunchHostFunc), which CUDA forbids")
            .c_str());
  Counts& c = counts();
  std::lock_guard<std::mutex> lock(c.mutex);
  ++c.calls[what];
}

void wmma_error(const char* what) {
  const Block& b = *tls_block;
  die(std::string("WMMA in ") + b.kernel + ": " + what);
}

int lane_id() {
  const uint3 t = here.thread_idx;
  const dim3 d = here.block_dim;
  return int((t.x + t.y * d.x + t.z * d.x * d.y) % 32);
}

void syncthreads(const char* file, int line) {
  Block& b = *tls_block;
  b.fibers[b.current].barrier_file = file;
  b.fibers[b.current].barrier_line = line;
  yield_to_scheduler(State::at_barrier);
}

namespace {

[[noreturn]] void shuffle_error(const Block& b, int me, const std::string& what) {
  die("warp shuffle in " + std::string(b.kernel) + ": block (" + std::to_string(here.block_idx.x) +
      ", " + std::to_string(here.block_idx.y) + ", " + std::to_string(here.block_idx.z) +
      "), thread " + std::to_string(me) + ": " + what);
}

}  // namespace

int shuffle_width(int width) {
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    die("warp shuffle width " + std::to_string(width) + ": not a power of two from 1 to 32");
  return width;
}

void shuffle(const void* value, void* result, size_t bytes, int source_lane, unsigned mask) {
  Block& b = *tls_block;
  const int me = b.current, lane = me % 32, warp = me - lane;
  if (source_lane < 0 || source_lane > 31) shuffle_error(b, me, "source lane out of range");
  if ((mask >> lane & 1u) == 0) shuffle_error(b, me, "the member mask leaves out the calling lane");
  if ((mask >> source_lane & 1u) == 0)
    shuffle_error(b, me, "reads lane " + std::to_string(source_lane) + ", outside the member mask");
  const int present = std::min(32, b.count - warp);  // lanes this warp has
  if (present < 32 && (mask >> present) != 0)
    shuffle_error(b, me, "the member mask names lanes past the block's last thread");
  Fiber& f = b.fibers[me];
  const unsigned round = f.shuffle_round++;
  const int parity = int(round % 2);
  uint64_t bits = 0;
  std::memcpy(&bits, value, bytes);
  b.slot[parity][me] = bits;
  b.slot_round[parity][me] = round;
  yield_to_scheduler(State::runnable);  // every lane of the warp publishes before any reads
  const int source = warp + source_lane;
  if (source == me) {
    std::memcpy(result, value, bytes);
    return;
  }
  // The source has published this round (it may have gone on to the next one, in the other slot).
  if (b.slot_round[parity][source] != round || b.fibers[source].shuffle_round < round + 1)
    shuffle_error(b, me,
                  "reads lane " + std::to_string(source_lane) + " (thread " +
                      std::to_string(source) +
                      "), which has not reached the same shuffle (divergent warp)");
  std::memcpy(result, &b.slot[parity][source], bytes);
}

void fresh_shared(void* p, size_t bytes) {
  Block& b = *tls_block;
  auto [it, added] = b.shared_epoch.try_emplace(p, b.epoch);
  if (!added && it->second == b.epoch) return;
  it->second = b.epoch;
  std::memset(p, 0xFF, bytes);
}

}  // namespace nnx::emu

// ---- the runtime API ---------------------------------------------------------------------------

using nnx::emu::die;
using nnx::emu::fail;
using nnx::emu::last_error;

// One operation recorded by a stream capture: a kernel closure or a copy.
struct Recorded {
  void (*body)(void*) = nullptr;
  void* arg = nullptr;
  void (*release)(void*) = nullptr;
  void* (*clone)(const void*) = nullptr;
  dim3 grid, block;
  std::vector<unsigned char> bytes;  // a memset's value or nothing
  void* dst = nullptr;
  const void* src = nullptr;
  size_t count = 0;
  size_t rows = 0, dst_pitch = 0, src_pitch = 0;
  enum Kind { kernel, copy, copy2d, set, event, host } kind = kernel;
  const char* name = "kernel";
  cudaEvent_t recorded_event = nullptr;
  std::function<void()> work;  // host: a library call's work

  Recorded() = default;
  Recorded(const Recorded& o)
      : body(o.body),
        arg(o.arg != nullptr ? o.clone(o.arg) : nullptr),
        release(o.release),
        clone(o.clone),
        grid(o.grid),
        block(o.block),
        bytes(o.bytes),
        dst(o.dst),
        src(o.src),
        count(o.count),
        rows(o.rows),
        dst_pitch(o.dst_pitch),
        src_pitch(o.src_pitch),
        kind(o.kind),
        name(o.name),
        recorded_event(o.recorded_event),
        work(o.work) {}
  Recorded& operator=(const Recorded&) = delete;
  ~Recorded() {
    if (arg != nullptr) release(arg);
  }
};

struct CUstream_st {
  bool blocking = true;  // synchronises with the legacy stream (not cudaStreamNonBlocking)
  bool capturing = false;
  std::thread::id owner;  // the thread that began the capture
  bool invalidated = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::vector<std::unique_ptr<Recorded>> recorded;
};

struct CUevent_st {
  bool timing = true;
  bool recorded = false;
  bool captured = false;  // last recorded in a capture: not a node, and not to be waited on
  double ms = 0;
};

struct CUgraph_st {
  std::vector<std::unique_ptr<Recorded>> ops;
};

struct CUgraphExec_st {
  std::vector<std::unique_ptr<Recorded>> ops;
};

namespace nnx::emu {
namespace {

struct Memory {
  std::mutex mutex;
  std::map<uintptr_t, size_t> blocks;  // start -> bytes asked for (the checks' bound)
  size_t used = 0;
  size_t limit = size_t(env_int("NNX_EMU_MEMORY_MB", 16384)) << 20;
};
Memory& memory() {
  static Memory* m = new Memory;  // never destroyed (see Counts)
  return *m;
}

// Page-locked host allocations (cudaMallocHost): start -> bytes.
struct Pinned {
  std::mutex mutex;
  std::map<uintptr_t, size_t> blocks;
};
Pinned& pinned() {
  static Pinned* p = new Pinned;  // never destroyed (see Counts)
  return *p;
}

// Whether [p, p + n) lies inside one of `blocks` (start -> bytes).
bool inside_one(std::mutex& mutex, const std::map<uintptr_t, size_t>& blocks, const void* p,
                size_t n) {
  std::lock_guard<std::mutex> lock(mutex);
  const auto a = uintptr_t(p);
  auto it = blocks.upper_bound(a);
  if (it == blocks.begin()) return false;
  --it;
  return a >= it->first && a + n <= it->first + it->second;
}

// Whether [p, p + n) lies inside one cudaMallocHost allocation.
bool is_pinned(const void* p, size_t n) {
  Pinned& m = pinned();
  return inside_one(m.mutex, m.blocks, p, n);
}

// Whether [p, p + n) lies inside one device allocation.
bool is_device(const void* p, size_t n) {
  Memory& m = memory();
  return inside_one(m.mutex, m.blocks, p, n);
}

int device_count() {
  static const int n = std::max(1, env_int("NNX_EMU_DEVICES", 1));
  return n;
}
thread_local int current_device = 0;

// Captures in progress, for the rules on "potentially unsafe" calls during a capture.
thread_local cudaStreamCaptureMode thread_mode = cudaStreamCaptureModeGlobal;
std::mutex capture_mutex;
std::vector<cudaStream_t>& capturing_streams() {
  static auto* s = new std::vector<cudaStream_t>;  // never destroyed (see Counts)
  return *s;
}

// A call that may synchronise or allocate, made while a capture forbids it: the captures of
// this thread are invalidated, as CUDA does.
bool prohibited_during_capture(const char* call) {
  if (thread_mode == cudaStreamCaptureModeRelaxed) return false;
  // CUDA's rule: this thread's own captures unless begun relaxed, and, for a thread in global
  // mode, other threads' global-mode captures; those are invalidated.
  std::lock_guard<std::mutex> lock(capture_mutex);
  bool prohibited = false;
  for (cudaStream_t s : capturing_streams()) {
    const bool mine = s->owner == std::this_thread::get_id();
    if ((mine && s->mode != cudaStreamCaptureModeRelaxed) ||
        (!mine && s->mode == cudaStreamCaptureModeGlobal &&
         thread_mode == cudaStreamCaptureModeGlobal)) {
      s->invalidated = true;
      prohibited = true;
    }
  }
  if (prohibited)  // what invalidated a capture is otherwise hard to find
    std::fprintf(stderr, "CUDA emulator: %s during a stream capture invalidates the capture\n",
                 call);
  return prohibited;
}

// Work on the legacy stream waits for every blocking stream: while one of them is captured, that
// dependency cannot be recorded, and the capture is invalidated, as CUDA does.
bool legacy_work_conflicts() {
  std::lock_guard<std::mutex> lock(capture_mutex);
  bool conflict = false;
  for (cudaStream_t s : capturing_streams()) {
    if (s->blocking) {
      s->invalidated = true;
      conflict = true;
    }
  }
  if (conflict)
    std::fprintf(stderr,
                 "CUDA emulator: work on the legacy stream while a blocking stream is captured "
                 "invalidates the capture\n");
  return conflict;
}

bool is_default(cudaStream_t s) {
  return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread;
}

// Runs or records `op` on `stream`.
cudaError_t submit(cudaStream_t stream, std::unique_ptr<Recorded> op);

void execute(const Recorded& op) {
  switch (op.kind) {
    case Recorded::kernel: {
      Block& b = block();
      const dim3 g = op.grid;
      for (unsigned z = 0; z < g.z; ++z) {
        for (unsigned y = 0; y < g.y; ++y) {
          for (unsigned x = 0; x < g.x; ++x) {
            here.block_idx = make_uint3(x, y, z);
            here.block_dim = op.block;
            here.grid_dim = g;
            b.body = op.body;
            b.arg = op.arg;
            b.kernel = op.name;
            run_block(b, op.block);
          }
        }
      }
      break;
    }
    case Recorded::copy:
      if (op.count != 0) std::memmove(op.dst, op.src, op.count);
      break;
    case Recorded::copy2d:
      for (size_t r = 0; r < op.rows; ++r) {
        std::memmove(static_cast<char*>(op.dst) + r * op.dst_pitch,
                     static_cast<const char*>(op.src) + r * op.src_pitch, op.count);
      }
      break;
    case Recorded::set:
      std::memset(op.dst, op.bytes[0], op.count);
      break;
    case Recorded::host:
      op.work();
      break;
    case Recorded::event:
      op.recorded_event->recorded = true;
      op.recorded_event->ms = std::chrono::duration<double, std::milli>(
                                  std::chrono::steady_clock::now().time_since_epoch())
                                  .count();
      break;
  }
}

cudaError_t submit(cudaStream_t stream, std::unique_ptr<Recorded> op) {
  if (!is_default(stream) && stream->capturing) {
    stream->recorded.push_back(std::move(op));
    return cudaSuccess;
  }
  if (is_default(stream) && stream != cudaStreamPerThread && legacy_work_conflicts()) {
    return fail(cudaErrorStreamCaptureImplicit);
  }
  execute(*op);
  return cudaSuccess;
}

const char* kind_name(cudaMemcpyKind kind) {
  switch (kind) {
    case cudaMemcpyHostToDevice:
      return "host to device";
    case cudaMemcpyDeviceToHost:
      return "device to host";
    case cudaMemcpyDeviceToDevice:
      return "device to device";
    case cudaMemcpyHostToHost:
      return "host to host";
    default:
      return "default";
  }
}

cudaError_t check_copy(const void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  if (n == 0) return cudaSuccess;
  const bool dst_device = is_device(dst, n), src_device = is_device(src, n);
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToDevice:
      ok = dst_device && !src_device;
      break;
    case cudaMemcpyDeviceToHost:
      ok = src_device && !dst_device;
      break;
    case cudaMemcpyDeviceToDevice:
      ok = dst_device && src_device;
      break;
    case cudaMemcpyHostToHost:
      ok = !dst_device && !src_device;
      break;
    default:
      break;  // cudaMemcpyDefault: either
  }
  return ok ? cudaSuccess : fail(cudaErrorInvalidValue);
}

}  // namespace

cudaError_t submit_host_work(cudaStream_t stream, std::function<void()> work) {
  auto op = std::make_unique<Recorded>();
  op->kind = Recorded::host;
  op->work = std::move(work);
  return submit(stream, std::move(op));
}

bool is_device_memory(const void* p, size_t bytes) {
  return is_device(p, bytes);
}

void run_kernel(const char* name, dim3 grid, dim3 block_dim, size_t dynamic_shared,
                cudaStream_t stream, void (*body)(void*), void* arg, void (*release)(void*),
                void* (*clone)(const void*)) {
  count(name);
  auto op = std::make_unique<Recorded>();
  op->name = name;
  op->kind = Recorded::kernel;
  op->body = body;
  op->arg = arg;
  op->release = release;
  op->clone = clone;
  op->grid = grid;
  op->block = block_dim;
  const unsigned long long threads = (unsigned long long)block_dim.x * block_dim.y * block_dim.z;
  if (threads == 0 || threads > 1024 || block_dim.z > 64 || grid.x == 0 || grid.y == 0 ||
      grid.z == 0 || grid.y > 65535 || grid.z > 65535 || dynamic_shared > 48 * 1024) {
    fail(cudaErrorInvalidConfiguration);
    return;  // op releases the closure
  }
  submit(stream, std::move(op));
}

}  // namespace nnx::emu

using namespace nnx::emu;

extern "C" {

cudaError_t cudaGetLastError() {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  return last_error;
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration:
      return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice:
      return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle:
      return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady:
      return "cudaErrorNotReady";
    case cudaErrorStreamCaptureUnsupported:
      return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
      return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit:
      return "cudaErrorStreamCaptureImplicit";
    case cudaErrorIllegalState:
      return "cudaErrorIllegalState";
    case cudaErrorCapturedEvent:
      return "cudaErrorCapturedEvent";
    case cudaErrorStreamCaptureWrongThread:
      return "cudaErrorStreamCaptureWrongThread";
    case cudaErrorStreamCaptureIsolation:
      return "cudaErrorStreamCaptureIsolation";
    default:
      return "cudaErrorUnknown";
  }
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle:
      return "invalid resource handle";
    case cudaErrorNotReady:
      return "device not ready";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated:
      return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorIllegalState:
      return "the stream is not capturing";
    case cudaErrorCapturedEvent:
      return "operation not permitted on an event last recorded in a capturing stream";
    case cudaErrorStreamCaptureWrongThread:
      return "attempt to terminate a thread-local capture sequence from another thread";
    case cudaErrorStreamCaptureIsolation:
      return "dependency created on uncaptured work in another stream";
    default:
      return "unknown error";
  }
}

cudaError_t cudaGetDeviceCount(int* n) {
  count("cudaGetDeviceCount");
  *n = device_count();
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
  current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = current_device;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount:
      *value = 2;  // small grids: a launch runs its blocks one after another
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock:
      *value = 1024;
      return cudaSuccess;
    case cudaDevAttrWarpSize:
      *value = 32;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
      *value = 9;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = 0;
      return cudaSuccess;
    default:
      return fail(cudaErrorInvalidValue);
  }
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  count("cudaGetDeviceProperties");
  if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof *prop);
  std::snprintf(prop->name, sizeof prop->name, "nnx CUDA emulator (host)");
  prop->totalGlobalMem = memory().limit;
  prop->multiProcessorCount = 2;
  prop->major = 9;
  prop->minor = 0;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->sharedMemPerBlock = 48 * 1024;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  count("cudaMemGetInfo");
  Memory& m = memory();
  std::lock_guard<std::mutex> lock(m.mutex);
  *total = m.limit;
  *free_bytes = m.limit - m.used;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t n) {
  count("cudaMalloc");
  *p = nullptr;
  if (prohibited_during_capture("cudaMalloc")) return fail(cudaErrorStreamCaptureUnsupported);
  Memory& m = memory();
  const size_t rounded = (std::max<size_t>(n, 1) + 255) / 256 * 256;
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    if (rounded > m.limit - m.used) return fail(cudaErrorMemoryAllocation);
    m.used += rounded;
  }
  // Exactly the bytes asked for (256-byte aligned, as cudaMalloc's are): under AddressSanitizer
  // an access one element past them is reported.
  void* q = nullptr;
  if (posix_memalign(&q, 256, std::max<size_t>(n, 1)) != 0) q = nullptr;
  if (q == nullptr) {
    std::lock_guard<std::mutex> lock(m.mutex);
    m.used -= rounded;
    return fail(cudaErrorMemoryAllocation);
  }
  std::lock_guard<std::mutex> lock(m.mutex);
  m.blocks[uintptr_t(q)] = std::max<size_t>(n, 1);
  *p = q;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  count("cudaFree");
  if (p == nullptr) return cudaSuccess;
  if (prohibited_during_capture("cudaFree")) return fail(cudaErrorStreamCaptureUnsupported);
  Memory& m = memory();
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    auto it = m.blocks.find(uintptr_t(p));
    if (it == m.blocks.end()) return fail(cudaErrorInvalidValue);
    m.used -= (it->second + 255) / 256 * 256;
    m.blocks.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** p, size_t n) {
  count("cudaMallocHost");
  *p = nullptr;
  if (prohibited_during_capture("cudaMallocHost")) return fail(cudaErrorStreamCaptureUnsupported);
  void* q = nullptr;
  if (posix_memalign(&q, 256, std::max<size_t>(n, 1)) != 0 || q == nullptr)
    return fail(cudaErrorMemoryAllocation);
  Pinned& m = pinned();
  std::lock_guard<std::mutex> lock(m.mutex);
  m.blocks[uintptr_t(q)] = std::max<size_t>(n, 1);
  *p = q;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* p) {
  count("cudaFreeHost");
  if (p == nullptr) return cudaSuccess;
  if (prohibited_during_capture("cudaFreeHost")) return fail(cudaErrorStreamCaptureUnsupported);
  {
    Pinned& m = pinned();
    std::lock_guard<std::mutex> lock(m.mutex);
    auto it = m.blocks.find(uintptr_t(p));
    if (it == m.blocks.end()) return fail(cudaErrorInvalidValue);
    m.blocks.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  count((std::string("cudaMemcpy, ") + kind_name(kind)).c_str());
  if (prohibited_during_capture("cudaMemcpy")) return fail(cudaErrorStreamCaptureUnsupported);
  if (const cudaError_t e = check_copy(dst, src, n, kind)) return e;
  if (n != 0) std::memmove(dst, src, n);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  count((std::string("cudaMemcpyAsync, ") + kind_name(kind)).c_str());
  if (const cudaError_t e = check_copy(dst, src, n, kind)) return e;
  if (n != 0 && !is_default(stream) && stream->capturing) {
    // A graph's copy node replays later, long after pageable memory may have changed hands: the
    // emulator holds captured copies to page-locked host memory (cudaMallocHost).
    const bool host_ok =
        (is_device(dst, n) || is_pinned(dst, n)) && (is_device(src, n) || is_pinned(src, n));
    if (!host_ok) {
      stream->invalidated = true;
      std::fprintf(stderr,
                   "CUDA emulator: a captured cudaMemcpyAsync with pageable host memory "
                   "invalidates the capture\n");
      return fail(cudaErrorStreamCaptureUnsupported);
    }
  }
  auto op = std::make_unique<Recorded>();
  op->kind = Recorded::copy;
  op->dst = dst;
  op->src = src;
  op->count = n;
  return submit(stream, std::move(op));
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind,
                              cudaStream_t stream) {
  count("cudaMemcpy2DAsync");
  if (width > dpitch || width > spitch) return fail(cudaErrorInvalidValue);
  if (height != 0) {
    const size_t dst_span = (height - 1) * dpitch + width, src_span = (height - 1) * spitch + width;
    const bool dst_device = is_device(dst, dst_span), src_device = is_device(src, src_span);
    bool ok = true;
    switch (kind) {
      case cudaMemcpyHostToDevice:
        ok = dst_device && !src_device;
        break;
      case cudaMemcpyDeviceToHost:
        ok = src_device && !dst_device;
        break;
      case cudaMemcpyDeviceToDevice:
        ok = dst_device && src_device;
        break;
      case cudaMemcpyHostToHost:
        ok = !dst_device && !src_device;
        break;
      default:
        break;
    }
    if (!ok) return fail(cudaErrorInvalidValue);
  }
  auto op = std::make_unique<Recorded>();
  op->kind = Recorded::copy2d;
  op->dst = dst;
  op->src = src;
  op->count = width;
  op->rows = height;
  op->dst_pitch = dpitch;
  op->src_pitch = spitch;
  return submit(stream, std::move(op));
}

cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_device, const void* src, int src_device,
                                size_t n, cudaStream_t stream) {
  if (dst_device < 0 || dst_device >= device_count() || src_device < 0 ||
      src_device >= device_count()) {
    return fail(cudaErrorInvalidDevice);
  }
  return cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream);
}

cudaError_t cudaMemset(void* p, int value, size_t n) {
  count("cudaMemset");
  if (prohibited_during_capture("cudaMemset")) return fail(cudaErrorStreamCaptureUnsupported);
  if (n != 0 && !is_device(p, n)) return fail(cudaErrorInvalidValue);
  std::memset(p, value, n);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t stream) {
  count("cudaMemsetAsync");
  if (n != 0 && !is_device(p, n)) return fail(cudaErrorInvalidValue);
  auto op = std::make_unique<Recorded>();
  op->kind = Recorded::set;
  op->dst = p;
  op->count = n;
  op->bytes.assign(1, static_cast<unsigned char>(value));
  return submit(stream, std::move(op));
}

cudaError_t cudaDeviceSynchronize() {
  count("cudaDeviceSynchronize");
  if (prohibited_during_capture("cudaDeviceSynchronize"))
    return fail(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  count("cudaStreamCreate");
  *s = new CUstream_st;
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  count("cudaStreamCreateWithFlags");
  *s = new CUstream_st;
  (*s)->blocking = (flags & cudaStreamNonBlocking) == 0;
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s) {
  count("cudaStreamDestroy");
  if (is_default(s)) return fail(cudaErrorInvalidResourceHandle);
  if (s->capturing) die("cudaStreamDestroy of a stream that is capturing");
  delete s;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  count("cudaStreamSynchronize");
  if (!is_default(s) && s->capturing) {
    s->invalidated = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  if (is_default(s) && legacy_work_conflicts()) {
    return fail(cudaErrorStreamCaptureImplicit);
  }
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  count("cudaStreamBeginCapture");
  if (is_default(s)) return fail(cudaErrorStreamCaptureUnsupported);
  if (s->capturing) return fail(cudaErrorIllegalState);
  std::lock_guard<std::mutex> lock(capture_mutex);
  s->capturing = true;
  s->invalidated = false;
  s->mode = mode;
  s->owner = std::this_thread::get_id();
  s->recorded.clear();
  capturing_streams().push_back(s);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  count("cudaStreamEndCapture");
  *graph = nullptr;
  if (is_default(s) || !s->capturing) return fail(cudaErrorIllegalState);
  if (s->mode != cudaStreamCaptureModeRelaxed && s->owner != std::this_thread::get_id())
    return fail(cudaErrorStreamCaptureWrongThread);
  {
    std::lock_guard<std::mutex> lock(capture_mutex);
    s->capturing = false;
    auto& all = capturing_streams();
    all.erase(std::remove(all.begin(), all.end(), s), all.end());
  }
  if (s->invalidated) {
    s->recorded.clear();
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  auto* g = new CUgraph_st;
  g->ops = std::move(s->recorded);
  s->recorded.clear();
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  if (is_default(s) && s != cudaStreamPerThread) {  // the legacy stream waits on blocking ones
    std::lock_guard<std::mutex> lock(capture_mutex);
    for (cudaStream_t c : capturing_streams())
      if (c->blocking) return fail(cudaErrorStreamCaptureImplicit);
  }
  *status = !is_default(s) && s->capturing ? (s->invalidated ? cudaStreamCaptureStatusInvalidated
                                                             : cudaStreamCaptureStatusActive)
                                           : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode) {
  std::swap(*mode, thread_mode);
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  count("cudaGraphInstantiate");
  if (graph == nullptr) return fail(cudaErrorInvalidValue);
  auto* e = new CUgraphExec_st;
  for (const auto& op : graph->ops) e->ops.push_back(std::make_unique<Recorded>(*op));
  *exec = e;
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  count("cudaGraphLaunch");
  if (exec == nullptr) return fail(cudaErrorInvalidValue);
  for (const auto& op : exec->ops) {
    if (const cudaError_t e = submit(stream, std::make_unique<Recorded>(*op))) return e;
  }
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  count("cudaGraphDestroy");
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  count("cudaGraphExecDestroy");
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  count("cudaEventCreate");
  *e = new CUevent_st;
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  count("cudaEventCreateWithFlags");
  *e = new CUevent_st;
  (*e)->timing = (flags & cudaEventDisableTiming) == 0;
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
  count("cudaEventDestroy");
  delete e;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream) {
  count("cudaEventRecord");
  if (e == nullptr) return fail(cudaErrorInvalidResourceHandle);
  if (!is_default(stream) && stream->capturing) {
    // In a capture a record is no node of the graph (only cudaEventRecordExternal makes one);
    // it only marks the event as captured, which nothing may wait on.
    e->captured = true;
    return cudaSuccess;
  }
  e->captured = false;
  auto op = std::make_unique<Recorded>();
  op->kind = Recorded::event;
  op->recorded_event = e;
  return submit(stream, std::move(op));
}

cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* user_data) {
  count("cudaLaunchHostFunc");
  if (fn == nullptr) return fail(cudaErrorInvalidValue);
  auto op = std::make_unique<Recorded>();
  op->kind = Recorded::host;
  op->work = [fn, user_data] {
    // CUDA forbids a host function any CUDA call: the emulator stops the program on one.
    in_host_function = true;
    fn(user_data);
    in_host_function = false;
  };
  return submit(stream, std::move(op));
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t e, unsigned int flags) {
  count("cudaStreamWaitEvent");
  if (e == nullptr || flags != 0) return fail(cudaErrorInvalidValue);
  if (e->captured) return fail(cudaErrorCapturedEvent);
  if (!is_default(stream) && stream->capturing) {
    // An event recorded outside the capture: the graph cannot hold that dependency.
    stream->invalidated = true;
    std::fprintf(stderr,
                 "CUDA emulator: waiting in a capture on an event recorded outside it "
                 "invalidates the capture\n");
    return fail(cudaErrorStreamCaptureIsolation);
  }
  return cudaSuccess;  // the event's work finished when its record returned
}

cudaError_t cudaEventQuery(cudaEvent_t e) {
  count("cudaEventQuery");
  if (e == nullptr) return fail(cudaErrorInvalidResourceHandle);
  if (e->captured) return fail(cudaErrorCapturedEvent);
  return cudaSuccess;  // all work is done when a call returns
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  count("cudaEventSynchronize");
  if (e == nullptr) return fail(cudaErrorInvalidResourceHandle);
  if (e->captured) return fail(cudaErrorCapturedEvent);
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  count("cudaEventElapsedTime");
  if (start == nullptr || end == nullptr || !start->timing || !end->timing) {
    return fail(cudaErrorInvalidResourceHandle);
  }
  if (start->captured || end->captured) return fail(cudaErrorCapturedEvent);
  if (!start->recorded || !end->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = float(end->ms - start->ms);
  return cudaSuccess;
}

}  // extern "C"
