/* Embedding nnx from C: load the YOLO plugin (C cannot register ops), load a model, run it on an
   input read from .npy and write every output as `nnx run --out` does.
     embed_demo_c [--plugin LIB.so] ARCH.json WEIGHTS.pth INPUT.npy OUTDIR
   writes OUTDIR/out0.npy, out1.npy, ... (OUTDIR must exist). Exit status as the nnx command. */
#include <stdio.h>
#include <string.h>

#include "nnx/nnx.h"

#ifndef NNX_EMBED_PLUGIN
#define NNX_EMBED_PLUGIN "nnx_yolo.so"
#endif

static int fail(nnx_status status) {
  fprintf(stderr, "embed_demo_c: error (%s): %s\n", nnx_status_name(status), nnx_last_error());
  return (int)status;
}

int main(int argc, char** argv) {
  const char* plugin = NNX_EMBED_PLUGIN;
  int first = 1;
  if (argc > 2 && strcmp(argv[1], "--plugin") == 0) {
    plugin = argv[2];
    first = 3;
  }
  if (argc - first != 4) {
    fprintf(stderr,
            "usage: embed_demo_c [--plugin LIB.so] ARCH.json WEIGHTS.pth INPUT.npy OUTDIR\n");
    return 2;
  }
  const char* arch = argv[first];
  const char* weights = argv[first + 1];
  const char* input_path = argv[first + 2];
  const char* outdir = argv[first + 3];

  nnx_model* model = NULL;
  nnx_executor* executor = NULL;
  nnx_tensor* input = NULL;
  nnx_tensor_view view;
  int32_t num_outputs = 0;
  nnx_status status;
  if ((status = nnx_load_plugin(plugin)) != NNX_OK ||
      (status = nnx_model_load(arch, weights, NULL, &model)) != NNX_OK ||
      (status = nnx_executor_create(model, NULL, &executor)) != NNX_OK ||
      (status = nnx_npy_read(input_path, &input)) != NNX_OK ||
      (status = nnx_tensor_get_view(input, &view)) != NNX_OK ||
      (status = nnx_executor_set_input(executor, 0, &view)) != NNX_OK ||
      (status = nnx_executor_run(executor)) != NNX_OK ||
      (status = nnx_executor_num_outputs(executor, &num_outputs)) != NNX_OK) {
    fail(status);
  } else {
    for (int32_t k = 0; k < num_outputs && status == NNX_OK; ++k) {
      char path[4096];
      nnx_tensor_view out;
      snprintf(path, sizeof path, "%s/out%d.npy", outdir, (int)k);
      if ((status = nnx_executor_get_output(executor, k, &out)) != NNX_OK ||
          (status = nnx_npy_write(path, &out)) != NNX_OK) {
        fail(status);
        break;
      }
      printf("output %d: rank %d -> %s\n", (int)k, (int)out.rank, path);
    }
  }
  nnx_tensor_free(input);
  nnx_executor_free(executor);
  nnx_model_free(model);
  return (int)status;
}
