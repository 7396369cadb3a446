// Every op against PyTorch: each case folder written by python/gen_fixtures.py (op_cases/) holds
// a constructor string, inputs, parameters and PyTorch's outputs; the op is built from the
// string through the registry and run on the CPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "importer/call_parser.h"
#include "importer/json.h"
#include "nnx/npy.h"
#include "nnx/registry.h"
#include "nnx/thread_pool.h"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> case_folders() {
  std::vector<fs::path> folders;
  fs::path root = fs::path(NNX_FIXTURE_DIR) / "ops";
  if (!fs::exists(root)) return folders;
  for (auto& entry : fs::recursive_directory_iterator(root))
    if (entry.path().filename() == "case.json") folders.push_back(entry.path().parent_path());
  std::sort(folders.begin(), folders.end());
  return folders;
}

std::string run_case(const fs::path& folder, ThreadPool* pool) {
  json::Value meta = json::parse_file((folder / "case.json").string());
  Call call = parse_call(meta.find("call")->str);
  std::shared_ptr<Op> op = make_op(call);
  int num_in = int(meta.find("num_inputs")->integer);
  int num_out = int(meta.find("num_outputs")->integer);
  op->check_arity(num_in, num_out);
  for (auto& name : meta.find("params")->array)
    op->set_param(name.str, read_npy((folder / ("param_" + name.str + ".npy")).string()));
  std::vector<Tensor> inputs;
  std::vector<TensorSpec> specs;
  for (int i = 0; i < num_in; ++i) {
    inputs.push_back(read_npy((folder / ("in" + std::to_string(i) + ".npy")).string()));
    specs.push_back({inputs.back().shape(), inputs.back().dtype()});
  }
  std::vector<TensorSpec> out_specs = op->infer_shapes(specs, num_out);
  std::vector<Tensor> outputs(num_out);
  for (int i = 0; i < num_out; ++i)
    if (!op->output_view_of(i)) outputs[i] = Tensor::empty(out_specs[i].shape, out_specs[i].dtype);
  ExecContext ctx;
  ctx.pool = pool;
  op->forward(ctx, inputs, outputs);
  std::string failures;
  for (int i = 0; i < num_out; ++i) {
    Tensor ref = read_npy((folder / ("ref" + std::to_string(i) + ".npy")).string());
    if (outputs[i].shape() != ref.shape() || out_specs[i].shape != ref.shape()) {
      failures += " output " + std::to_string(i) + " shape " + outputs[i].shape().str() +
                  " (inferred " + out_specs[i].shape.str() + "), PyTorch " + ref.shape().str();
      continue;
    }
    double err = testing_util::relative_error(outputs[i], ref);
    if (!(err <= meta.find("tol")->number))
      failures += " output " + std::to_string(i) + " error " + std::to_string(err);
  }
  return failures;
}

TEST(OpParity, EveryCaseMatchesPyTorch) {
  if (std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  auto folders = case_folders();
  ASSERT_FALSE(folders.empty()) << "no op cases under " << NNX_FIXTURE_DIR << "/ops";
  ThreadPool pool(2);
  for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
    for (auto& folder : folders) {
      std::string name = fs::relative(folder, fs::path(NNX_FIXTURE_DIR) / "ops").string();
      try {
        std::string failures = run_case(folder, p);
        EXPECT_TRUE(failures.empty()) << name << ":" << failures;
      } catch (const std::exception& e) {
        ADD_FAILURE() << name << ": " << e.what();
      }
    }
  }
}

}  // namespace
}  // namespace nnx
