// The C API (include/nnx/nnx.h) over the C++ one: handles own C++ objects, every entry point
// turns exceptions into a status plus a per-thread message, and checks its arguments itself.
#include "nnx/nnx.h"

#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "nnx/nnx.hpp"

struct nnx_model {
  nnx::Model model;
};

struct nnx_executor {
  nnx::Executor executor;
  std::vector<nnx::Tensor> inputs;   // bound copies; undefined until bound
  std::vector<nnx::Tensor> outputs;  // of the last run, contiguous on the CPU
  bool ran = false;
};

struct nnx_tensor {
  nnx::Tensor tensor;  // contiguous, on the CPU
};

namespace {

thread_local std::string last_error;

static_assert(NNX_FLOAT32 == int(nnx::DType::f32) && NNX_FLOAT16 == int(nnx::DType::f16) &&
              NNX_BFLOAT16 == int(nnx::DType::bf16) && NNX_FLOAT64 == int(nnx::DType::f64) &&
              NNX_INT64 == int(nnx::DType::i64) && NNX_INT32 == int(nnx::DType::i32) &&
              NNX_INT16 == int(nnx::DType::i16) && NNX_INT8 == int(nnx::DType::i8) &&
              NNX_UINT8 == int(nnx::DType::u8) && NNX_BOOL == int(nnx::DType::boolean));
static_assert(NNX_MAX_RANK == nnx::Shape::kMaxDims);

// Misuse of the API, found by this layer: reported as NNX_USAGE naming the function.
[[noreturn]] void usage(const char* function, const std::string& what) {
  throw nnx::Error(nnx::ErrorKind::usage, std::string(function) + ": " + what);
}

template <class T>
T& require(T* pointer, const char* function, const char* name) {
  if (pointer == nullptr) usage(function, std::string(name) + " is NULL");
  return *pointer;
}

const char* require_text(const char* text, const char* function, const char* name) {
  if (text == nullptr) usage(function, std::string(name) + " is NULL");
  return text;
}

nnx_status status_of(nnx::ErrorKind kind) {
  switch (kind) {
    case nnx::ErrorKind::usage:
      return NNX_USAGE;
    case nnx::ErrorKind::device:
      return NNX_FAILURE;
    default:  // format, shape, io, unsupported: the input's fault
      return NNX_BAD_INPUT;
  }
}

nnx_status failed(nnx_status status, std::string message) {
  last_error = std::move(message);
  return status;
}

// Runs `body`, turning every exception into a status and the thread's last error.
template <class Body>
nnx_status guarded(Body&& body) noexcept {
  try {
    body();
    return NNX_OK;
  } catch (const nnx::Error& e) {
    return failed(status_of(e.kind()), e.message());
  } catch (const std::bad_alloc&) {
    return failed(NNX_FAILURE, "out of memory");
  } catch (const std::exception& e) {
    return failed(NNX_FAILURE, e.what());
  } catch (...) {
    return failed(NNX_FAILURE, "unknown error");
  }
}

nnx::DType dtype_from(int32_t dtype, const char* function) {
  if (dtype < NNX_FLOAT32 || dtype > NNX_BOOL)
    usage(function, "unknown dtype " + std::to_string(dtype));
  return nnx::DType(dtype);
}

nnx::Shape shape_from(const nnx_tensor_view& view, const char* function) {
  if (view.rank < 0 || view.rank > NNX_MAX_RANK)
    usage(function, "rank " + std::to_string(view.rank) + " is outside [0, 8]");
  nnx::Shape shape;
  for (int i = 0; i < view.rank; ++i) {
    if (view.shape[i] < 0)
      usage(function, "dimension " + std::to_string(i) + " is negative (" +
                          std::to_string(view.shape[i]) + ")");
    shape.push_back(view.shape[i]);
  }
  shape.numel();  // throws Error(shape) on overflow
  return shape;
}

// A tensor viewing the caller's memory (no copy), for copying or writing it.
nnx::Tensor tensor_over(const nnx_tensor_view& view, const char* function) {
  nnx::DType dtype = dtype_from(view.dtype, function);
  nnx::Shape shape = shape_from(view, function);
  size_t nbytes = size_t(shape.numel()) * nnx::dtype_size(dtype);
  if (view.data == nullptr && nbytes > 0) usage(function, "data is NULL");
  auto storage =
      nnx::Storage::wrap(const_cast<void*>(view.data), nbytes, nnx::Device::cpu());  // NOLINT
  return nnx::Tensor::from_storage(storage, shape, dtype);
}

void fill_view(const nnx::Tensor& tensor, nnx_tensor_view& view) {
  view = nnx_tensor_view{};
  view.dtype = int32_t(tensor.dtype());
  view.rank = tensor.dim();
  for (int i = 0; i < tensor.dim(); ++i) view.shape[i] = tensor.size(i);
  view.data = tensor.raw_data();
  view.nbytes = tensor.nbytes();
}

nnx::Tensor on_host(const nnx::Tensor& tensor) {
  nnx::Tensor host = tensor.device().is_cpu() ? tensor : tensor.to(nnx::Device::cpu());
  return host.contiguous();
}

nnx::LoadOptions load_options_from(const nnx_load_options* options, const char* function) {
  nnx_load_options o;
  nnx_load_options_init(&o);
  if (options) o = *options;
  nnx::LoadOptions out;
  if (o.device == NNX_DEVICE_CPU)
    out.device = nnx::Device::cpu();
  else if (o.device == NNX_DEVICE_CUDA)
    out.device = nnx::Device::cuda(o.device_index);
  else
    usage(function, "unknown device type " + std::to_string(o.device));
  if (o.device_index < 0) usage(function, "negative device index");
  out.strict = o.strict != 0;
  out.seed = o.seed;
  return out;
}

}  // namespace

extern "C" {

const char* nnx_version(void) {
  return NNX_VERSION_STRING;
}

const char* nnx_last_error(void) {
  return last_error.c_str();
}

const char* nnx_status_name(nnx_status status) {
  switch (status) {
    case NNX_OK:
      return "ok";
    case NNX_BAD_INPUT:
      return "bad input";
    case NNX_USAGE:
      return "usage";
    case NNX_FAILURE:
      return "failure";
  }
  return "unknown status";
}

void nnx_load_options_init(nnx_load_options* options) {
  if (options) *options = nnx_load_options{NNX_DEVICE_CPU, 0, 1, 0};
}

void nnx_executor_options_init(nnx_executor_options* options) {
  if (options) *options = nnx_executor_options{0};
}

nnx_status nnx_load_plugin(const char* path) {
  return guarded([&] { nnx::load_plugin(require_text(path, "nnx_load_plugin", "path")); });
}

nnx_status nnx_model_load(const char* arch, const char* weights, const nnx_load_options* options,
                          nnx_model** model) {
  return guarded([&] {
    const char* fn = "nnx_model_load";
    require(model, fn, "model") = nullptr;
    nnx::LoadOptions o = load_options_from(options, fn);
    *model = new nnx_model{nnx::load(require_text(arch, fn, "arch"), weights ? weights : "", o)};
  });
}

nnx_status nnx_model_load_memory(const void* description, size_t description_size,
                                 const void* weights, size_t weights_size,
                                 const nnx_load_options* options, nnx_model** model) {
  return guarded([&] {
    const char* fn = "nnx_model_load_memory";
    require(model, fn, "model") = nullptr;
    if (description == nullptr || description_size == 0) usage(fn, "the description is empty");
    if (weights == nullptr && weights_size > 0) usage(fn, "weights is NULL");
    nnx::LoadOptions o = load_options_from(options, fn);
    std::string_view d(static_cast<const char*>(description), description_size);
    std::string_view w(weights ? static_cast<const char*>(weights) : "", weights_size);
    *model = new nnx_model{nnx::load_memory(d, w, o)};
  });
}

nnx_status nnx_model_num_inputs(const nnx_model* model, int32_t* count) {
  return guarded([&] {
    const char* fn = "nnx_model_num_inputs";
    require(count, fn, "count") = require(model, fn, "model").model.num_inputs();
  });
}

nnx_status nnx_model_num_outputs(const nnx_model* model, int32_t* count) {
  return guarded([&] {
    const char* fn = "nnx_model_num_outputs";
    require(count, fn, "count") = require(model, fn, "model").model.num_outputs();
  });
}

void nnx_model_free(nnx_model* model) {
  delete model;
}

nnx_status nnx_executor_create(const nnx_model* model, const nnx_executor_options* options,
                               nnx_executor** executor) {
  return guarded([&] {
    const char* fn = "nnx_executor_create";
    require(executor, fn, "executor") = nullptr;
    const nnx::Model& m = require(model, fn, "model").model;
    nnx_executor_options o;
    nnx_executor_options_init(&o);
    if (options) o = *options;
    if (o.threads < 0) usage(fn, "threads is negative (" + std::to_string(o.threads) + ")");
    *executor = new nnx_executor{nnx::Executor(m, {.threads = o.threads}),
                                 std::vector<nnx::Tensor>(size_t(m.num_inputs())),
                                 {},
                                 false};
  });
}

nnx_status nnx_executor_set_input(nnx_executor* executor, int32_t index,
                                  const nnx_tensor_view* input) {
  return guarded([&] {
    const char* fn = "nnx_executor_set_input";
    nnx_executor& e = require(executor, fn, "executor");
    if (index < 0 || size_t(index) >= e.inputs.size())
      usage(fn, "input " + std::to_string(index) + " of a network with " +
                    std::to_string(e.inputs.size()) + " input(s)");
    e.inputs[size_t(index)] = tensor_over(require(input, fn, "input"), fn).clone();
  });
}

nnx_status nnx_executor_run(nnx_executor* executor) {
  return guarded([&] {
    const char* fn = "nnx_executor_run";
    nnx_executor& e = require(executor, fn, "executor");
    for (size_t k = 0; k < e.inputs.size(); ++k)
      if (!e.inputs[k].defined())
        usage(fn, "input " + std::to_string(k) + " is not bound (nnx_executor_set_input)");
    e.ran = false;
    // Into the last run's outputs (on the CPU, written in place: no allocation per run).
    e.outputs.resize(size_t(e.executor.model().num_outputs()));
    e.executor.run(e.inputs, e.outputs);
    for (nnx::Tensor& out : e.outputs)
      if (!out.device().is_cpu() || !out.is_contiguous()) out = on_host(out);
    e.ran = true;
  });
}

nnx_status nnx_executor_num_outputs(const nnx_executor* executor, int32_t* count) {
  return guarded([&] {
    const char* fn = "nnx_executor_num_outputs";
    require(count, fn, "count") = require(executor, fn, "executor").executor.model().num_outputs();
  });
}

nnx_status nnx_executor_get_output(const nnx_executor* executor, int32_t index,
                                   nnx_tensor_view* output) {
  return guarded([&] {
    const char* fn = "nnx_executor_get_output";
    const nnx_executor& e = require(executor, fn, "executor");
    nnx_tensor_view& view = require(output, fn, "output");
    if (!e.ran) usage(fn, "no outputs: the executor has not run (nnx_executor_run)");
    if (index < 0 || size_t(index) >= e.outputs.size())
      usage(fn, "output " + std::to_string(index) + " of a network with " +
                    std::to_string(e.outputs.size()) + " output(s)");
    fill_view(e.outputs[size_t(index)], view);
  });
}

void nnx_executor_free(nnx_executor* executor) {
  delete executor;
}

nnx_status nnx_npy_read(const char* path, nnx_tensor** tensor) {
  return guarded([&] {
    const char* fn = "nnx_npy_read";
    require(tensor, fn, "tensor") = nullptr;
    *tensor = new nnx_tensor{on_host(nnx::read_npy(require_text(path, fn, "path")))};
  });
}

nnx_status nnx_tensor_get_view(const nnx_tensor* tensor, nnx_tensor_view* view) {
  return guarded([&] {
    const char* fn = "nnx_tensor_get_view";
    fill_view(require(tensor, fn, "tensor").tensor, require(view, fn, "view"));
  });
}

void nnx_tensor_free(nnx_tensor* tensor) {
  delete tensor;
}

nnx_status nnx_npy_write(const char* path, const nnx_tensor_view* tensor) {
  return guarded([&] {
    const char* fn = "nnx_npy_write";
    const char* p = require_text(path, fn, "path");
    nnx::write_npy(p, tensor_over(require(tensor, fn, "tensor"), fn));
  });
}

}  // extern "C"
