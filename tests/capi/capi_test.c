/* The C API from C: every function, each error path, and outputs against PyTorch's numbers
   (fixtures of python/fixture_models.py).
     nnx_capi_test FIXTURE_DIR YOLO_PLUGIN LIBNNX
   Exits 0 when every check passes, 1 otherwise, 77 (skipped) without the fixtures. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnx/nnx.h"

static int failures = 0;

#define CHECK(cond)                                                                            \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      fprintf(stderr, "%s:%d: check failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond, \
              nnx_last_error());                                                               \
      ++failures;                                                                              \
    }                                                                                          \
  } while (0)

/* The call returns `expected` and, on failure, leaves a message containing `fragment`. */
#define EXPECT(call, expected, fragment) \
  expect_status((call), (expected), (fragment), #call, __LINE__)

static void expect_status(nnx_status got, nnx_status expected, const char* fragment,
                          const char* call, int line) {
  if (got != expected) {
    fprintf(stderr, "%s:%d: %s returned '%s', expected '%s' (last error: %s)\n", __FILE__, line,
            call, nnx_status_name(got), nnx_status_name(expected), nnx_last_error());
    ++failures;
  } else if (expected != NNX_OK && strstr(nnx_last_error(), fragment) == NULL) {
    fprintf(stderr, "%s:%d: %s: message '%s' does not contain '%s'\n", __FILE__, line, call,
            nnx_last_error(), fragment);
    ++failures;
  }
}

static char* join(const char* dir, const char* name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char* path = malloc(n);
  snprintf(path, n, "%s/%s", dir, name);
  return path;
}

static char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  char* data = NULL;
  long n;
  *size = 0;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
    data = malloc((size_t)n);
    if (data && fread(data, 1, (size_t)n, f) == (size_t)n) {
      *size = (size_t)n;
    } else {
      free(data);
      data = NULL;
    }
  }
  fclose(f);
  return data;
}

static int file_exists(const char* path) {
  FILE* f = fopen(path, "rb");
  if (f) fclose(f);
  return f != NULL;
}

static size_t numel(const nnx_tensor_view* v) {
  size_t n = 1;
  int i;
  for (i = 0; i < v->rank; ++i) n *= (size_t)v->shape[i];
  return n;
}

/* The project's tolerance: max|got - ref| / max(1, max|ref|) <= 1e-4. */
static void check_close(const nnx_tensor_view* got, const nnx_tensor_view* ref, const char* what) {
  const float* g = got->data;
  const float* r = ref->data;
  double max_diff = 0, max_ref = 1;
  size_t i, n = numel(ref);
  int d, same_shape = got->rank == ref->rank;
  for (d = 0; same_shape && d < ref->rank; ++d) same_shape = got->shape[d] == ref->shape[d];
  if (!same_shape || got->dtype != NNX_FLOAT32 || ref->dtype != NNX_FLOAT32) {
    fprintf(stderr, "%s: shape or dtype differ from the reference\n", what);
    ++failures;
    return;
  }
  CHECK(got->nbytes == n * sizeof(float));
  for (i = 0; i < n; ++i) {
    double diff = fabs((double)g[i] - (double)r[i]);
    if (diff > max_diff || diff != diff) max_diff = diff != diff ? INFINITY : diff;
    if (fabs((double)r[i]) > max_ref) max_ref = fabs((double)r[i]);
  }
  if (!(max_diff / max_ref <= 1e-4)) {
    fprintf(stderr, "%s: max relative difference %g against PyTorch\n", what, max_diff / max_ref);
    ++failures;
  }
}

/* Runs `model` on FIXTURE/in0.npy and compares every output with FIXTURE/ref{k}.npy. */
static void run_fixture(const nnx_model* model, const char* fixture) {
  nnx_executor* executor = NULL;
  nnx_executor_options options;
  nnx_tensor* input = NULL;
  nnx_tensor_view in;
  int32_t count = -1, k;
  char* in_path = join(fixture, "in0.npy");
  nnx_executor_options_init(&options);
  CHECK(options.threads == 0);
  options.threads = 2;
  EXPECT(nnx_executor_create(model, &options, &executor), NNX_OK, "");
  EXPECT(nnx_npy_read(in_path, &input), NNX_OK, "");
  EXPECT(nnx_tensor_get_view(input, &in), NNX_OK, "");
  EXPECT(nnx_executor_set_input(executor, 0, &in), NNX_OK, "");
  EXPECT(nnx_executor_run(executor), NNX_OK, "");
  EXPECT(nnx_executor_num_outputs(executor, &count), NNX_OK, "");
  CHECK(count >= 1);
  for (k = 0; k < count; ++k) {
    char name[32];
    char* ref_path;
    nnx_tensor* ref = NULL;
    nnx_tensor_view got, want;
    snprintf(name, sizeof name, "ref%d.npy", (int)k);
    ref_path = join(fixture, name);
    EXPECT(nnx_executor_get_output(executor, k, &got), NNX_OK, "");
    EXPECT(nnx_npy_read(ref_path, &ref), NNX_OK, "");
    if (ref && nnx_tensor_get_view(ref, &want) == NNX_OK) check_close(&got, &want, ref_path);
    nnx_tensor_free(ref);
    free(ref_path);
  }
  nnx_tensor_free(input);
  nnx_executor_free(executor);
  free(in_path);
}

static void test_basics(void) {
  nnx_load_options load;
  CHECK(strcmp(nnx_version(), NNX_VERSION_STRING) == 0);
  CHECK(NNX_FORMAT_VERSION >= 1);
  CHECK(strcmp(nnx_status_name(NNX_OK), "ok") == 0);
  CHECK(strcmp(nnx_status_name(NNX_BAD_INPUT), "bad input") == 0);
  CHECK(strcmp(nnx_status_name(NNX_USAGE), "usage") == 0);
  CHECK(strcmp(nnx_status_name(NNX_FAILURE), "failure") == 0);
  nnx_load_options_init(&load);
  CHECK(load.device == NNX_DEVICE_CPU && load.device_index == 0 && load.strict == 1);
  CHECK(load.seed == 0);
  nnx_load_options_init(NULL);
  nnx_executor_options_init(NULL);
}

static void test_null_arguments(void) {
  nnx_model* model = (nnx_model*)&model; /* must be reset to NULL on failure */
  nnx_tensor* tensor = NULL;
  nnx_tensor_view view;
  int32_t count;
  memset(&view, 0, sizeof view);
  EXPECT(nnx_model_load(NULL, NULL, NULL, &model), NNX_USAGE, "arch is NULL");
  CHECK(model == NULL);
  EXPECT(nnx_model_load("model.json", NULL, NULL, NULL), NNX_USAGE, "model is NULL");
  EXPECT(nnx_model_load_memory(NULL, 0, NULL, 0, NULL, &model), NNX_USAGE, "empty");
  EXPECT(nnx_model_load_memory("{}", 2, NULL, 5, NULL, &model), NNX_USAGE, "weights is NULL");
  EXPECT(nnx_model_num_inputs(NULL, &count), NNX_USAGE, "model is NULL");
  EXPECT(nnx_model_num_outputs(NULL, &count), NNX_USAGE, "model is NULL");
  EXPECT(nnx_executor_create(NULL, NULL, NULL), NNX_USAGE, "executor is NULL");
  EXPECT(nnx_executor_set_input(NULL, 0, &view), NNX_USAGE, "executor is NULL");
  EXPECT(nnx_executor_run(NULL), NNX_USAGE, "executor is NULL");
  EXPECT(nnx_executor_num_outputs(NULL, &count), NNX_USAGE, "executor is NULL");
  EXPECT(nnx_executor_get_output(NULL, 0, &view), NNX_USAGE, "executor is NULL");
  EXPECT(nnx_npy_read(NULL, &tensor), NNX_USAGE, "path is NULL");
  EXPECT(nnx_npy_read("x.npy", NULL), NNX_USAGE, "tensor is NULL");
  EXPECT(nnx_npy_write("x.npy", NULL), NNX_USAGE, "tensor is NULL");
  EXPECT(nnx_npy_write(NULL, &view), NNX_USAGE, "path is NULL");
  EXPECT(nnx_tensor_get_view(NULL, &view), NNX_USAGE, "tensor is NULL");
  EXPECT(nnx_load_plugin(NULL), NNX_USAGE, "path is NULL");
  nnx_model_free(NULL);
  nnx_executor_free(NULL);
  nnx_tensor_free(NULL);
}

static void test_bad_files(const char* fixtures, const char* libnnx) {
  nnx_model* model = NULL;
  nnx_tensor* tensor = NULL;
  nnx_load_options options;
  const char* bad_json = "{\"layers\": [oops]}";
  char* missing = join(fixtures, "no/such/model.json");
  EXPECT(nnx_model_load(missing, NULL, NULL, &model), NNX_BAD_INPUT, "does not exist");
  CHECK(model == NULL);
  EXPECT(nnx_model_load_memory(bad_json, strlen(bad_json), NULL, 0, NULL, &model), NNX_BAD_INPUT,
         "<memory>");
  CHECK(model == NULL);
  nnx_load_options_init(&options);
  options.device = 7;
  EXPECT(nnx_model_load(missing, NULL, &options, &model), NNX_USAGE, "unknown device type");
  EXPECT(nnx_npy_read(missing, &tensor), NNX_BAD_INPUT, "no/such/model.json");
  CHECK(tensor == NULL);
  EXPECT(nnx_load_plugin(missing), NNX_BAD_INPUT, "cannot load the plugin");
  EXPECT(nnx_load_plugin(libnnx), NNX_BAD_INPUT, "not an nnx plugin");
  free(missing);
}

/* A network without user ops, by path and from memory: outputs, and every misuse. */
static void test_fixture_network(const char* fixtures) {
  char* folder = join(fixtures, "models/conv_pool_head");
  char* arch = join(folder, "model.json");
  char* weights = join(folder, "model.pth");
  char* in_path = join(folder, "in0.npy");
  nnx_model *model = NULL, *from_memory = NULL;
  nnx_executor* executor = NULL;
  nnx_tensor *input = NULL, *reread = NULL;
  nnx_tensor_view in, wrong, out, back;
  nnx_executor_options options;
  int32_t inputs = 0, outputs = 0;
  size_t arch_size, weights_size;
  char* arch_bytes = read_file(arch, &arch_size);
  char* weights_bytes = read_file(weights, &weights_size);
  CHECK(arch_bytes != NULL && weights_bytes != NULL);

  EXPECT(nnx_model_load(arch, weights, NULL, &model), NNX_OK, "");
  EXPECT(nnx_model_num_inputs(model, &inputs), NNX_OK, "");
  EXPECT(nnx_model_num_outputs(model, &outputs), NNX_OK, "");
  CHECK(inputs == 1 && outputs >= 1);
  run_fixture(model, folder);

  /* The same model from memory: the very same outputs. */
  EXPECT(
      nnx_model_load_memory(arch_bytes, arch_size, weights_bytes, weights_size, NULL, &from_memory),
      NNX_OK, "");
  free(arch_bytes);
  free(weights_bytes);
  run_fixture(from_memory, folder);

  nnx_executor_options_init(&options);
  options.threads = -1;
  EXPECT(nnx_executor_create(model, &options, &executor), NNX_USAGE, "threads is negative");
  CHECK(executor == NULL);
  EXPECT(nnx_executor_create(from_memory, NULL, &executor), NNX_OK, "");
  nnx_model_free(from_memory); /* the executor keeps what it needs */
  EXPECT(nnx_executor_run(executor), NNX_USAGE, "input 0 is not bound");
  EXPECT(nnx_executor_get_output(executor, 0, &out), NNX_USAGE, "has not run");
  EXPECT(nnx_npy_read(in_path, &input), NNX_OK, "");
  EXPECT(nnx_tensor_get_view(input, &in), NNX_OK, "");
  EXPECT(nnx_executor_set_input(executor, 1, &in), NNX_USAGE, "input 1 of a network with 1");
  EXPECT(nnx_executor_set_input(executor, -1, &in), NNX_USAGE, "input -1");
  EXPECT(nnx_executor_set_input(executor, 0, NULL), NNX_USAGE, "input is NULL");
  wrong = in;
  wrong.dtype = 99;
  EXPECT(nnx_executor_set_input(executor, 0, &wrong), NNX_USAGE, "unknown dtype");
  wrong = in;
  wrong.rank = 9;
  EXPECT(nnx_executor_set_input(executor, 0, &wrong), NNX_USAGE, "rank 9");
  wrong = in;
  wrong.data = NULL;
  EXPECT(nnx_executor_set_input(executor, 0, &wrong), NNX_USAGE, "data is NULL");
  wrong = in;
  wrong.shape[wrong.rank - 3] -= 1; /* a channel short (NCHW or CHW): the run says so */
  EXPECT(nnx_executor_set_input(executor, 0, &wrong), NNX_OK, "");
  EXPECT(nnx_executor_run(executor), NNX_BAD_INPUT, "expected");
  EXPECT(nnx_executor_get_output(executor, 0, &out), NNX_USAGE, "has not run");
  EXPECT(nnx_executor_set_input(executor, 0, &in), NNX_OK, "");
  EXPECT(nnx_executor_run(executor), NNX_OK, "");
  EXPECT(nnx_executor_get_output(executor, outputs, &out), NNX_USAGE, "output");
  EXPECT(nnx_executor_get_output(executor, 0, NULL), NNX_USAGE, "output is NULL");
  EXPECT(nnx_executor_get_output(executor, 0, &out), NNX_OK, "");

  /* .npy round trip, and a write that cannot happen. */
  EXPECT(nnx_npy_write("capi_test_out0.npy", &out), NNX_OK, "");
  EXPECT(nnx_npy_read("capi_test_out0.npy", &reread), NNX_OK, "");
  EXPECT(nnx_tensor_get_view(reread, &back), NNX_OK, "");
  CHECK(back.nbytes == out.nbytes && memcmp(back.data, out.data, out.nbytes) == 0);
  CHECK(back.rank == out.rank && back.dtype == out.dtype);
  remove("capi_test_out0.npy");
  EXPECT(nnx_npy_write("no/such/folder/out.npy", &out), NNX_BAD_INPUT, "no/such/folder");

  nnx_tensor_free(reread);
  nnx_tensor_free(input);
  nnx_executor_free(executor);
  nnx_model_free(model);
  free(in_path);
  free(weights);
  free(arch);
  free(folder);
}

/* The seed network names the user op own_module.YOLO: refused until its plugin is loaded. */
static void test_plugin_network(const char* fixtures, const char* plugin) {
  char* folder = join(fixtures, "models/seed");
  char* arch = join(folder, "seed.json");
  char* weights = join(folder, "seed.pth");
  nnx_model* model = NULL;
  EXPECT(nnx_model_load(arch, weights, NULL, &model), NNX_BAD_INPUT, "own_module.YOLO");
  EXPECT(nnx_load_plugin(plugin), NNX_OK, "");
  EXPECT(nnx_load_plugin(plugin), NNX_OK, ""); /* again: registers the same op again */
  EXPECT(nnx_model_load(arch, weights, NULL, &model), NNX_OK, "");
  if (model) run_fixture(model, folder);
  nnx_model_free(model);
  free(weights);
  free(arch);
  free(folder);
}

int main(int argc, char** argv) {
  char* probe;
  int have_fixtures;
  if (argc != 4) {
    fprintf(stderr, "usage: nnx_capi_test FIXTURE_DIR YOLO_PLUGIN LIBNNX\n");
    return 2;
  }
  probe = join(argv[1], "models/seed/seed.pth");
  have_fixtures = file_exists(probe);
  free(probe);
  test_basics();
  test_null_arguments();
  test_bad_files(argv[1], argv[3]);
  if (have_fixtures) {
    test_fixture_network(argv[1]);
    test_plugin_network(argv[1], argv[2]);
  }
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  if (!have_fixtures) {
    printf("the C API checks passed; PyTorch fixtures missing under %s: parity skipped\n", argv[1]);
    return 77;
  }
  printf("every C API check passed\n");
  return 0;
}
