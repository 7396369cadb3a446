/* NN-Executor's C API: load a model (description + PyTorch weights), run it, read its outputs.
   Plain C (C99), no C++ type crosses it, no exception escapes it. The C++ API is nnx/nnx.hpp.

     nnx_model* model;  nnx_executor* exec;  nnx_tensor_view out;
     if (nnx_model_load("arch.json", "state.pth", NULL, &model) != NNX_OK)
       fprintf(stderr, "%s\n", nnx_last_error());
     nnx_executor_create(model, NULL, &exec);
     nnx_tensor_view in = {NNX_FLOAT32, 4, {1, 3, 224, 224}, pixels, 0};
     nnx_executor_set_input(exec, 0, &in);
     nnx_executor_run(exec);
     nnx_executor_get_output(exec, 0, &out);   (out.data: valid until the next run or free)
     nnx_executor_free(exec);  nnx_model_free(model);

   Every function returns an nnx_status; on failure nnx_last_error() says why (one line per
   fault, naming the file, layer and what was expected against what was found). Objects are not
   thread-safe, but any number of executors (one per thread) may run one model at once.
   User ops are C++ only (nnx::register_op): C programs get them from a plugin built in C++
   (nnx/plugin.h), loaded with nnx_load_plugin before the model that names them. */
#ifndef NNX_NNX_H_
#define NNX_NNX_H_

#include <stddef.h>
#include <stdint.h>

#include "nnx/export.h"
#include "nnx/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The same values as the nnx command's exit statuses. */
typedef enum nnx_status {
  NNX_OK = 0,
  /* A file, description, weights or input that is missing, malformed or inconsistent (wrong
     shape or channel count, unknown op...). */
  NNX_BAD_INPUT = 1,
  /* Misuse of the API: a null or out-of-range argument, or a call out of order (running before
     every input is bound, reading an output before a run). */
  NNX_USAGE = 2,
  /* Anything else: no device, out of memory, an internal error. */
  NNX_FAILURE = 3
} nnx_status;

/* Element types (the same order as nnx::DType). Inputs are usually NNX_FLOAT32. */
typedef enum nnx_dtype {
  NNX_FLOAT32 = 0,
  NNX_FLOAT16,
  NNX_BFLOAT16,
  NNX_FLOAT64,
  NNX_INT64,
  NNX_INT32,
  NNX_INT16,
  NNX_INT8,
  NNX_UINT8,
  NNX_BOOL
} nnx_dtype;

typedef enum nnx_device_type { NNX_DEVICE_CPU = 0, NNX_DEVICE_CUDA = 1 } nnx_device_type;

#define NNX_MAX_RANK 8

/* A dense, C-order (row-major, contiguous) tensor that the caller or the library owns. As an
   input, `nbytes` is ignored (it follows from dtype and shape); as an output, it is set.
   Enumerations travel as int32_t in structs, so that their size is fixed. */
typedef struct nnx_tensor_view {
  int32_t dtype; /* an nnx_dtype */
  int32_t rank;
  int64_t shape[NNX_MAX_RANK];
  const void* data;
  size_t nbytes;
} nnx_tensor_view;

typedef struct nnx_load_options {
  int32_t device; /* an nnx_device_type: where the weights live and the model runs (CPU) */
  int32_t device_index;
  /* As PyTorch's load_state_dict: 0 tolerates missing and unexpected tensors, never wrong
     shapes. Default 1. */
  int32_t strict;
  uint64_t seed; /* of the PyTorch-like initialisation of tensors the weights do not give */
} nnx_load_options;

typedef struct nnx_executor_options {
  int32_t threads; /* threads for one run; 0 (default): all hardware threads */
} nnx_executor_options;

typedef struct nnx_model nnx_model;       /* a loaded, validated model; immutable */
typedef struct nnx_executor nnx_executor; /* runs a model: its inputs, plan, outputs */
typedef struct nnx_tensor nnx_tensor;     /* a tensor the library owns (nnx_npy_read) */

/* "0.1.0": the library's version (NNX_VERSION_STRING of the headers it was built with). */
NNX_API const char* nnx_version(void);
/* The message of the last call on this thread that failed ("" if none). Valid until the next
   failing call on this thread. */
NNX_API const char* nnx_last_error(void);
/* "ok", "bad input", "usage", "failure". */
NNX_API const char* nnx_status_name(nnx_status status);

/* Default options: CPU, strict, seed 0; all threads. */
NNX_API void nnx_load_options_init(nnx_load_options* options);
NNX_API void nnx_executor_options_init(nnx_executor_options* options);

/* Loads a user-op plugin (a C++ shared library made with nnx/plugin.h) whose ops later loads
   may name. It stays loaded until the process exits. */
NNX_API nnx_status nnx_load_plugin(const char* path);

/* Loads `arch` (a .json description, or a one-file .pth) with `weights` (a .pth or
   .safetensors file; NULL or "": none, or those inside a one-file .pth). `options` may be NULL
   (defaults). On success *model is a new model to free with nnx_model_free. */
NNX_API nnx_status nnx_model_load(const char* arch, const char* weights,
                                  const nnx_load_options* options, nnx_model** model);
/* The same from memory: the description's bytes (JSON, or a one-file .pth) and the weights'
   bytes (a .pth or .safetensors file; NULL/0: none). Both are copied before it returns. */
NNX_API nnx_status nnx_model_load_memory(const void* description, size_t description_size,
                                         const void* weights, size_t weights_size,
                                         const nnx_load_options* options, nnx_model** model);
NNX_API nnx_status nnx_model_num_inputs(const nnx_model* model, int32_t* count);
NNX_API nnx_status nnx_model_num_outputs(const nnx_model* model, int32_t* count);
/* Frees a model (NULL: nothing). Executors made from it keep what they need: free in any order. */
NNX_API void nnx_model_free(nnx_model* model);

/* A new executor for `model`; `options` may be NULL. */
NNX_API nnx_status nnx_executor_create(const nnx_model* model, const nnx_executor_options* options,
                                       nnx_executor** executor);
/* Binds network input `index` to a copy of `input` (NCHW; a CHW input gets a batch dimension of
   1, and the outputs keep it). Shapes are checked by the next run. */
NNX_API nnx_status nnx_executor_set_input(nnx_executor* executor, int32_t index,
                                          const nnx_tensor_view* input);
/* Runs the network on the bound inputs (every input must be bound). */
NNX_API nnx_status nnx_executor_run(nnx_executor* executor);
/* The number of outputs of the last run (the model's output count). */
NNX_API nnx_status nnx_executor_num_outputs(const nnx_executor* executor, int32_t* count);
/* Output `index` of the last run, in host memory; output->data stays valid until the next run or
   nnx_executor_free. */
NNX_API nnx_status nnx_executor_get_output(const nnx_executor* executor, int32_t index,
                                           nnx_tensor_view* output);
NNX_API void nnx_executor_free(nnx_executor* executor);

/* NumPy .npy files, as `nnx run` reads and writes them. */
NNX_API nnx_status nnx_npy_read(const char* path, nnx_tensor** tensor);
/* The tensor's contents; view->data is valid until nnx_tensor_free. */
NNX_API nnx_status nnx_tensor_get_view(const nnx_tensor* tensor, nnx_tensor_view* view);
NNX_API void nnx_tensor_free(nnx_tensor* tensor);
/* Writes `tensor` (C order) to `path`, atomically: a temporary name renamed when complete. */
NNX_API nnx_status nnx_npy_write(const char* path, const nnx_tensor_view* tensor);

#ifdef __cplusplus
}
#endif

#endif /* NNX_NNX_H_ */
