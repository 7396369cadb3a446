// Tests of the CUDA runtime layer: the caching allocator (reuse, statistics, empty_cache, out of
// memory), copies between host and device, and the activation and broadcasting kernels against
// the CPU kernels. Tests that need a device skip without one, saying why.
#include "nnx/cuda.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "nnx/error.h"
#include "nnx/tensor.h"
#include "test_util.h"

#ifdef NNX_WITH_CUDA
#include "kernels/cpu/activation.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cuda/activation.h"
#include "kernels/cuda/elementwise.h"
#include "runtime/cuda/cuda_allocator.h"
#endif

namespace nnx {
namespace {

#ifdef NNX_WITH_CUDA

using testing_util::relative_error;

class CudaDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cuda::init();
    if (!cuda::available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason();
  }
};

// A device tensor whose every element is NaN, so that an element a kernel skips shows up.
Tensor poisoned_device_tensor(const Shape& shape) {
  return Tensor::full(shape, std::nan("")).to(Device::cuda());
}

std::string error_of(const std::function<void()>& fn, ErrorKind* kind = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (kind) *kind = e.kind();
    return e.message();
  }
  return "(no error)";
}

// ---- without a device: the queries answer and the errors say why --------------------------

TEST(CudaRuntime, QueriesAnswerWithOrWithoutDevice) {
  EXPECT_NO_THROW(cuda::init());
  EXPECT_NO_THROW(cuda::init());  // idempotent
  const bool available = cuda::available();
  EXPECT_EQ(available, cuda::device_count() > 0);
  EXPECT_EQ(available, cuda::unavailable_reason().empty());
  if (available) {
    EXPECT_FALSE(cuda::device_name(0).empty());
    return;
  }
  // The backend is registered, so asking for device memory names the missing device rather
  // than a missing backend.
  ErrorKind kind = ErrorKind::usage;
  std::string message = error_of([] { Tensor::empty({4}, DType::f32, Device::cuda()); }, &kind);
  EXPECT_EQ(kind, ErrorKind::device);
  EXPECT_NE(message.find("no CUDA device"), std::string::npos) << message;
  kind = ErrorKind::usage;
  message = error_of([] { Tensor::full({3}, 1.0).to(Device::cuda()); }, &kind);
  EXPECT_EQ(kind, ErrorKind::device) << message;
  EXPECT_THROW(cuda::device_name(0), Error);
  EXPECT_THROW(cuda::allocator(0), Error);
}

TEST(CudaKernels, BroadcastRejectsShapesThatDoNotBroadcast) {
  // Shapes are checked on the host before anything is launched.
  const int64_t a[] = {2, 3}, b[] = {4}, out[] = {2, 3};
  ErrorKind kind = ErrorKind::usage;
  const std::string message = error_of(
      [&] {
        cuda::binary_broadcast(cuda::BinaryOp::add, false, nullptr, a, 2, nullptr, b, 1, nullptr,
                               out, 2, nullptr);
      },
      &kind);
  EXPECT_EQ(kind, ErrorKind::shape);
  EXPECT_NE(message.find("[4] does not broadcast to [2, 3]"), std::string::npos) << message;
}

// ---- the allocator ----------------------------------------------------------------------------

TEST_F(CudaDeviceTest, AllocatorReusesAFreedBlockWithoutTheSystem) {
  Allocator& allocator = cuda::allocator(0);
  EXPECT_EQ(allocator.device(), Device::cuda(0));
  void* first = allocator.allocate(1000);
  ASSERT_NE(first, nullptr);
  const AllocatorStats after_first = allocator.stats();
  allocator.deallocate(first, 1000);
  void* second = allocator.allocate(1000);
  const AllocatorStats after_second = allocator.stats();
  EXPECT_EQ(second, first);
  EXPECT_EQ(after_second.system_allocations, after_first.system_allocations);
  EXPECT_EQ(after_second.allocations, after_first.allocations + 1);
  allocator.deallocate(second, 1000);
}

TEST_F(CudaDeviceTest, AllocatorStatsCountRoundedBytes) {
  Allocator& allocator = cuda::allocator(0);
  allocator.reset_peak();
  const AllocatorStats base = allocator.stats();
  void* small = allocator.allocate(1000);     // 512-byte steps: 1024
  void* large = allocator.allocate(3 << 20);  // already a class boundary
  void* empty = allocator.allocate(0);        // still a distinct, valid pointer
  AllocatorStats s = allocator.stats();
  EXPECT_NE(empty, nullptr);
  EXPECT_EQ(s.current_bytes, base.current_bytes + 1024 + (3 << 20) + 512);
  EXPECT_EQ(s.peak_bytes, s.current_bytes);
  EXPECT_GE(s.reserved_bytes, s.current_bytes);
  EXPECT_EQ(s.allocations, base.allocations + 3);
  allocator.deallocate(large, 3 << 20);
  s = allocator.stats();
  EXPECT_EQ(s.current_bytes, base.current_bytes + 1024 + 512);
  EXPECT_EQ(s.peak_bytes, base.current_bytes + 1024 + (3 << 20) + 512);
  allocator.reset_peak();
  EXPECT_EQ(allocator.stats().peak_bytes, s.current_bytes);
  allocator.deallocate(small, 1000);
  allocator.deallocate(empty, 0);
  EXPECT_EQ(allocator.stats().current_bytes, base.current_bytes);
}

TEST_F(CudaDeviceTest, EmptyCacheReturnsCachedBlocks) {
  Allocator& allocator = cuda::allocator(0);
  void* p = allocator.allocate(5 << 20);
  allocator.deallocate(p, 5 << 20);
  AllocatorStats s = allocator.stats();
  EXPECT_GE(s.reserved_bytes, s.current_bytes + (5 << 20));
  allocator.empty_cache();
  s = allocator.stats();
  EXPECT_EQ(s.reserved_bytes, s.current_bytes);
  p = allocator.allocate(5 << 20);
  EXPECT_EQ(allocator.stats().system_allocations, s.system_allocations + 1);
  allocator.deallocate(p, 5 << 20);
}

TEST_F(CudaDeviceTest, OutOfMemoryThrowsDeviceErrorAndLeavesTheAllocatorUsable) {
  Allocator& allocator = cuda::allocator(0);
  const size_t one_pib = size_t(1) << 50;
  ErrorKind kind = ErrorKind::usage;
  const std::string message = error_of([&] { allocator.allocate(one_pib); }, &kind);
  EXPECT_EQ(kind, ErrorKind::device);
  EXPECT_NE(
      message.find("CUDA out of memory on cuda:0: asked for " + std::to_string(one_pib) + " bytes"),
      std::string::npos)
      << message;
  EXPECT_NE(message.find(" total"), std::string::npos) << message;
  void* p = allocator.allocate(1 << 20);
  EXPECT_NE(p, nullptr);
  allocator.deallocate(p, 1 << 20);
  EXPECT_THROW(Tensor::empty({int64_t(1) << 48}, DType::f32, Device::cuda()), Error);
}

TEST_F(CudaDeviceTest, BlockFreedOnOneStreamIsReusedOnAnotherOnceIdle) {
  Allocator& allocator = cuda::allocator(0);
  void* s1 = cuda::create_stream();
  void* s2 = cuda::create_stream();
  const size_t size = 7000;  // a size class no other test uses
  void* p;
  {
    cuda::StreamGuard guard(s1);
    EXPECT_EQ(cuda::current_stream(), s1);
    p = allocator.allocate(size);
  }
  EXPECT_EQ(cuda::current_stream(), nullptr);
  allocator.deallocate(p, size);
  cuda::synchronize_stream(s1);
  const AllocatorStats before = allocator.stats();
  void* q;
  {
    cuda::StreamGuard guard(s2);
    q = allocator.allocate(size);
  }
  EXPECT_EQ(q, p);
  EXPECT_EQ(allocator.stats().system_allocations, before.system_allocations);

  // A block also used on s1 is reused on s2 only after both streams' work is done.
  cuda::record_stream(q, s1);
  allocator.deallocate(q, size);
  cuda::synchronize_stream(s1);
  cuda::synchronize_stream(s2);
  {
    cuda::StreamGuard guard(s2);
    p = allocator.allocate(size);
  }
  EXPECT_EQ(p, q);
  EXPECT_EQ(allocator.stats().system_allocations, before.system_allocations);
  allocator.deallocate(p, size);
  cuda::destroy_stream(s1);
  cuda::destroy_stream(s2);
}

// The memory of CUDA graphs (the Executor's capture): what is freed on the stream while its
// pool is open stays in the pool, counted as allocated, handed back on that stream only while
// the pool is open, and to everyone once released.
TEST_F(CudaDeviceTest, GraphPoolKeepsWhatIsFreedOnItsStreamUntilReleased) {
  cuda::CachingAllocator& allocator = cuda::caching_allocator(0);
  void* s = cuda::create_stream();
  const cudaStream_t stream = static_cast<cudaStream_t>(s);
  const size_t size = 9 * 512 + 7;  // a size class no other test uses
  const size_t rounded = cuda::CachingAllocator::round_size(size);
  void* a = allocator.allocate(size, stream);
  const AllocatorStats start = allocator.stats();
  cuda::GraphPool pool;
  allocator.begin_pool(stream, pool);
  allocator.deallocate(a, size);
  EXPECT_EQ(pool.bytes(), rounded);
  EXPECT_EQ(allocator.stats().current_bytes, start.current_bytes);
  void* b = allocator.allocate(size, stream);
  EXPECT_EQ(b, a);
  EXPECT_EQ(pool.bytes(), 0u);
  EXPECT_EQ(allocator.stats().current_bytes, start.current_bytes);
  allocator.deallocate(b, size);
  allocator.end_pool(stream);
  void* c = allocator.allocate(size, stream);  // the pool's block belongs to the graph
  EXPECT_NE(c, a);
  allocator.deallocate(c, size);
  cuda::synchronize_stream(s);
  allocator.release_pool(pool);
  EXPECT_EQ(pool.bytes(), 0u);
  EXPECT_EQ(allocator.stats().current_bytes, start.current_bytes - rounded);
  void* d = allocator.allocate(size, stream);
  void* e = allocator.allocate(size, stream);
  EXPECT_TRUE((d == a || e == a) && (d == c || e == c));
  allocator.deallocate(d, size);
  allocator.deallocate(e, size);
  cuda::destroy_stream(s);
}

// A tensor may outlive the stream it was made on (an Executor's outputs outlive the Executor):
// freeing it then must not touch the dead stream.
TEST_F(CudaDeviceTest, BlocksOutliveTheStreamTheyWereUsedOn) {
  void* s = cuda::create_stream();
  Tensor t;
  {
    cuda::StreamGuard guard(s);
    t = Tensor::full(Shape{1000}, 1.5f).to(Device::cuda());
  }
  cuda::destroy_stream(s);
  EXPECT_EQ(t.to(Device::cpu()).data<float>()[999], 1.5f);
  t = Tensor();
  void* s2 = cuda::create_stream();
  {
    cuda::StreamGuard guard(s2);
    Tensor u = Tensor::full(Shape{1000}, 2.5f).to(Device::cuda());
    EXPECT_EQ(u.to(Device::cpu()).data<float>()[0], 2.5f);
  }
  cuda::destroy_stream(s2);
}

// ---- copies -----------------------------------------------------------------------------------

TEST_F(CudaDeviceTest, TensorRoundTripIsBitExact) {
  for (int64_t n : {int64_t(1), int64_t(3), int64_t(1000), int64_t((1 << 20) + 7)}) {
    Tensor x = testing_util::uniform_tensor({n}, uint64_t(n), -1e3f, 1e3f);
    Tensor on_device = x.to(Device::cuda());
    EXPECT_TRUE(on_device.device().is_cuda());
    EXPECT_TRUE(on_device.to(Device::cpu()).bitwise_equal(x)) << n;
    // Device to device through clone().
    EXPECT_TRUE(on_device.clone().to(Device::cpu()).bitwise_equal(x)) << n;
  }
  Tensor bytes = testing_util::uniform_tensor({2, 3, 5}, 7, 0, 255).to(DType::u8);
  EXPECT_TRUE(bytes.to(Device::cuda()).to(Device::cpu()).bitwise_equal(bytes));
}

TEST_F(CudaDeviceTest, TensorRoundTripOnANonDefaultStream) {
  void* stream = cuda::create_stream();
  {
    cuda::StreamGuard guard(stream);
    Tensor x = testing_util::uniform_tensor({3, 17, 19}, 11, -5, 5);
    EXPECT_TRUE(x.to(Device::cuda()).to(Device::cpu()).bitwise_equal(x));
  }
  cuda::destroy_stream(stream);
}

// ---- kernels against the CPU ------------------------------------------------------------------

struct ActivationCase {
  const char* name;
  cpu::Activation cpu_kind;
  cuda::Activation cuda_kind;
  float alpha = 0, beta = 1, threshold = 20, lo = -1, hi = 1;
};

std::vector<ActivationCase> activation_cases() {
  using C = cpu::Activation;
  using G = cuda::Activation;
  return {
      {"relu", C::relu, G::relu},
      {"leaky_relu", C::leaky_relu, G::leaky_relu, 0.01f},
      {"relu6", C::hardtanh, G::hardtanh, 0, 1, 20, 0, 6},
      {"hardtanh", C::hardtanh, G::hardtanh, 0, 1, 20, -1, 1},
      {"sigmoid", C::sigmoid, G::sigmoid},
      {"tanh", C::tanh, G::tanh},
      {"silu", C::silu, G::silu},
      {"hardswish", C::hardswish, G::hardswish},
      {"hardsigmoid", C::hardsigmoid, G::hardsigmoid},
      {"elu", C::elu, G::elu, 1.0f},
      {"elu_alpha", C::elu, G::elu, 0.3f},
      {"gelu", C::gelu, G::gelu},
      {"gelu_tanh", C::gelu_tanh, G::gelu_tanh},
      {"softplus", C::softplus, G::softplus, 0, 2.0f, 10.0f},
      {"mish", C::mish, G::mish},
  };
}

// The CPU kernel's result, itself checked against PyTorch in tests/ops.
Tensor cpu_activation(const ActivationCase& c, const Tensor& x) {
  Tensor y = Tensor::empty(x.shape());
  cpu::ActivationArgs args;
  args.alpha = c.alpha, args.beta = c.beta, args.threshold = c.threshold;
  args.lo = c.lo, args.hi = c.hi;
  cpu::activation(c.cpu_kind, args, x.data<float>(), y.data<float>(), x.numel(), nullptr);
  return y;
}

cuda::ActivationArgs cuda_args(const ActivationCase& c) {
  cuda::ActivationArgs args;
  args.alpha = c.alpha, args.beta = c.beta, args.threshold = c.threshold;
  args.lo = c.lo, args.hi = c.hi;
  return args;
}

TEST_F(CudaDeviceTest, ActivationsMatchTheCpu) {
  const int64_t n = 1000003;  // not a multiple of 4: the vector path's tail runs too
  Tensor x = testing_util::uniform_tensor({n}, 42, -8, 8);
  // Extremes where the stable forms matter, and NaN, which must come through.
  const float specials[] = {-90.0f, 90.0f, -0.0f, 0.0f, -3.0f, 3.0f, std::nanf("")};
  for (size_t i = 0; i < std::size(specials); ++i) x.data<float>()[i * 101] = specials[i];
  Tensor x_device = x.to(Device::cuda());
  for (const ActivationCase& c : activation_cases()) {
    SCOPED_TRACE(c.name);
    Tensor ref = cpu_activation(c, x);

    Tensor y = poisoned_device_tensor({n});
    cuda::activation(c.cuda_kind, cuda_args(c), x_device.data<float>(), y.data<float>(), n,
                     nullptr);
    EXPECT_LT(relative_error(y.to(Device::cpu()), ref), 1e-5);

    // Misaligned by one element: the scalar path.
    Tensor y1 = poisoned_device_tensor({n});
    cuda::activation(c.cuda_kind, cuda_args(c), x_device.data<float>() + 1, y1.data<float>() + 1,
                     n - 1, nullptr);
    EXPECT_LT(relative_error(y1.to(Device::cpu()).slice(0, 1, n), ref.slice(0, 1, n)), 1e-5);

    // In place.
    Tensor inplace = x_device.clone();
    cuda::activation(c.cuda_kind, cuda_args(c), inplace.data<float>(), inplace.data<float>(), n,
                     nullptr);
    EXPECT_LT(relative_error(inplace.to(Device::cpu()), ref), 1e-5);
  }
}

Shape broadcast_shape(const Shape& a, const Shape& b) {
  Shape out;
  const int ndim = std::max(a.size(), b.size());
  out.resize(ndim);
  for (int i = 0; i < ndim; ++i) {
    const int ia = i - (ndim - a.size()), ib = i - (ndim - b.size());
    const int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
    out[i] = da == 1 ? db : da;
  }
  return out;
}

TEST_F(CudaDeviceTest, BroadcastBinaryOpsMatchTheCpu) {
  const std::pair<Shape, Shape> cases[] = {
      {{2, 3, 5, 7}, {2, 3, 1, 1}},  // one value per row, rows not a multiple of 4
      {{2, 3, 4, 8}, {2, 3, 1, 1}},  // one value per row, float4
      {{2, 3, 1, 1}, {2, 3, 4, 8}},  // the broadcast operand first
      {{2, 3, 4, 8}, {1, 3, 1, 1}},
      {{1, 3, 1, 1}, {2, 3, 5, 7}},
      {{2, 3, 4, 8}, {2, 3, 4, 8}},  // same shape
      {{4, 5}, {5}},                 // a bias row
      {{3, 4}, {1}},                 // a scalar
      {{4, 1, 6}, {3, 1}},           // both broadcast: the general kernel
      {{2, 1, 4}, {1, 3, 1}},
      {{5, 1, 3, 2}, {5, 7, 1, 2}},
  };
  const std::pair<cpu::BinaryOp, cuda::BinaryOp> ops[] = {
      {cpu::BinaryOp::add, cuda::BinaryOp::add},
      {cpu::BinaryOp::sub, cuda::BinaryOp::sub},
      {cpu::BinaryOp::mul, cuda::BinaryOp::mul},
  };
  uint64_t seed = 1;
  for (const auto& [a_shape, b_shape] : cases) {
    const Shape out_shape = broadcast_shape(a_shape, b_shape);
    Tensor a = testing_util::uniform_tensor(a_shape, seed++, -4, 4);
    Tensor b = testing_util::uniform_tensor(b_shape, seed++, -4, 4);
    Tensor a_device = a.to(Device::cuda()), b_device = b.to(Device::cuda());
    for (const auto& [cpu_op, cuda_op] : ops) {
      for (bool relu : {false, true}) {
        SCOPED_TRACE(a_shape.str() + " op " + std::to_string(int(cpu_op)) + " " + b_shape.str() +
                     (relu ? " relu" : ""));
        Tensor ref = Tensor::empty(out_shape);
        cpu::binary_broadcast(cpu_op, a.data<float>(), a_shape, b.data<float>(), b_shape,
                              ref.data<float>(), out_shape, nullptr);
        if (relu) {
          float* r = ref.data<float>();
          for (int64_t i = 0; i < ref.numel(); ++i) r[i] = r[i] < 0 ? 0 : r[i];
        }
        Tensor out = poisoned_device_tensor(out_shape);
        cuda::binary_broadcast(cuda_op, relu, a_device.data<float>(), a_shape.begin(),
                               a_shape.size(), b_device.data<float>(), b_shape.begin(),
                               b_shape.size(), out.data<float>(), out_shape.begin(),
                               out_shape.size(), nullptr);
        // One rounding of one operation on both sides: the results agree exactly.
        EXPECT_EQ(relative_error(out.to(Device::cpu()), ref), 0.0);
        if (a_shape == b_shape) {
          Tensor same = poisoned_device_tensor(out_shape);
          cuda::binary_same_shape(cuda_op, relu, a_device.data<float>(), b_device.data<float>(),
                                  same.data<float>(), a.numel(), nullptr);
          EXPECT_EQ(relative_error(same.to(Device::cpu()), ref), 0.0);
        }
      }
    }
  }
}

#else  // no CUDA backend

TEST(CudaRuntime, BuildHasNoCudaBackend) {
  EXPECT_FALSE(cuda::available());
  EXPECT_EQ(cuda::device_count(), 0);
  EXPECT_THROW(cuda::allocator(0), Error);
  GTEST_SKIP() << "this build has no CUDA backend (NNX_WITH_CUDA is not defined)";
}

#endif

}  // namespace
}  // namespace nnx
