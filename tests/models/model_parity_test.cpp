// Whole networks against PyTorch: each case folder written by python/fixture_models.py holds a
// description, weights, inputs and the outputs the PyTorch reference executor computed.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "examples/embed/yolo_head.h"
#include "importer/json.h"
#include "nnx/nnx.hpp"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> case_folders(const std::string& group) {
  std::vector<fs::path> folders;
  fs::path root = fs::path(NNX_FIXTURE_DIR) / group;
  if (!fs::exists(root)) return folders;
  for (auto& entry : fs::directory_iterator(root))
    if (fs::exists(entry.path() / "case.json")) folders.push_back(entry.path());
  std::sort(folders.begin(), folders.end());
  return folders;
}

struct CaseResult {
  std::string failures;
  Model model;
  std::vector<Tensor> outputs;
};

CaseResult run_case(const fs::path& folder, int threads) {
  json::Value meta = json::parse_file((folder / "case.json").string());
  example::register_yolo_head();
  std::string weights;
  if (const json::Value* w = meta.find("weights"); w && w->is_string())
    weights = (folder / w->str).string();
  LoadOptions options;
  if (const json::Value* s = meta.find("strict"); s && s->kind == json::Value::Kind::boolean)
    options.strict = s->b;
  CaseResult result;
  result.model = load((folder / meta.find("arch")->str).string(), weights, options);
  std::vector<Tensor> inputs;
  for (auto& in : meta.find("inputs")->array)
    inputs.push_back(read_npy((folder / in.str).string()));
  Executor net(result.model, {.threads = threads});
  result.outputs = net(inputs);
  const auto& refs = meta.find("refs")->array;
  double tol = meta.find("tol") ? meta.find("tol")->number : 1e-4;
  if (result.outputs.size() != refs.size())
    result.failures += " " + std::to_string(result.outputs.size()) + " outputs, PyTorch " +
                       std::to_string(refs.size());
  for (size_t k = 0; k < std::min(refs.size(), result.outputs.size()); ++k) {
    Tensor ref = read_npy((folder / refs[k].str).string());
    double err = testing_util::relative_error(result.outputs[k], ref);
    if (!(err <= tol))
      result.failures += " output " + std::to_string(k) + ": shape " +
                         result.outputs[k].shape().str() + " vs PyTorch " + ref.shape().str() +
                         ", error " + std::to_string(err);
  }
  // A second run on the same Executor reuses the plan and arena: same numbers.
  std::vector<Tensor> again = net(inputs);
  for (size_t k = 0; k < again.size(); ++k)
    if (!again[k].bitwise_equal(result.outputs[k]))
      result.failures += " second run differs at output " + std::to_string(k);
  return result;
}

TEST(ModelParity, EveryNetworkMatchesPyTorch) {
  if (std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  auto folders = case_folders("models");
  ASSERT_FALSE(folders.empty()) << "no network cases under " << NNX_FIXTURE_DIR << "/models";
  for (int threads : {1, 2}) {
    for (auto& folder : folders) {
      try {
        std::string failures = run_case(folder, threads).failures;
        EXPECT_TRUE(failures.empty())
            << folder.filename() << " (" << threads << " threads):" << failures;
      } catch (const std::exception& e) {
        ADD_FAILURE() << folder.filename() << " (" << threads << " threads): " << e.what();
      }
    }
  }
}

TEST(ModelParity, OriginalPackageFilesAreCovered) {
  if (std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  std::vector<std::string> names;
  for (auto& f : case_folders("models")) names.push_back(f.filename().string());
  for (const char* required : {"original_tmp", "original_onefile", "seed"})
    EXPECT_NE(std::find(names.begin(), names.end(), required), names.end()) << required;
}

// Concurrency: several Executors over one loaded model, one per thread, give the same numbers.
TEST(ModelParity, ExecutorsShareOneModelAcrossThreads) {
  if (std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  fs::path folder = fs::path(NNX_FIXTURE_DIR) / "models" / "seed";
  ASSERT_TRUE(fs::exists(folder));
  CaseResult base = run_case(folder, 1);
  ASSERT_TRUE(base.failures.empty()) << base.failures;
  json::Value meta = json::parse_file((folder / "case.json").string());
  std::vector<Tensor> inputs;
  for (auto& in : meta.find("inputs")->array)
    inputs.push_back(read_npy((folder / in.str).string()));
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      Executor net(base.model, {.threads = 1});
      for (int i = 0; i < 3; ++i) {
        auto out = net(inputs);
        for (size_t k = 0; k < out.size(); ++k)
          if (!out[k].bitwise_equal(base.outputs[k]))
            errors[size_t(t)] = "thread " + std::to_string(t) + " differs";
      }
    });
  for (auto& th : threads) th.join();
  for (auto& e : errors) EXPECT_TRUE(e.empty()) << e;
}

}  // namespace
}  // namespace nnx
