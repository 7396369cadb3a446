// nnx-export against PyTorch: each case folder written by python/fixture_export.py holds what
// the exporter wrote for a torchvision model (or a user-file model) and the original module's
// outputs. The files must load, match PyTorch, and survive `nnx convert` (Model::save) byte for
// byte and bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "graph/graph.h"
#include "importer/json.h"
#include "nnx/nnx.hpp"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;

bool have_pytorch() {
  return !std::string(NNX_PYTHON).empty();
}

// Why the export fixtures were not generated (fixture_export.py says so in a file), or "".
std::string skipped_because() {
  if (!have_pytorch()) return "no Python with torch: export fixtures not generated";
  fs::path marker = fs::path(NNX_FIXTURE_DIR) / "export" / "SKIPPED";
  return fs::exists(marker) ? testing_util::read_file(marker.string()) : "";
}

std::vector<fs::path> export_cases() {
  std::vector<fs::path> folders;
  fs::path root = fs::path(NNX_FIXTURE_DIR) / "export";
  if (!fs::exists(root)) return folders;
  for (auto& entry : fs::directory_iterator(root))
    if (fs::exists(entry.path() / "case.json")) folders.push_back(entry.path());
  std::sort(folders.begin(), folders.end());
  return folders;
}

struct Case {
  fs::path folder;
  json::Value meta;
  std::string arch() const { return (folder / meta.find("arch")->str).string(); }
  std::string weights() const { return (folder / meta.find("weights")->str).string(); }
  std::string name() const { return folder.filename().string(); }
};

Case read_case(const fs::path& folder) {
  return {folder, json::parse_file((folder / "case.json").string())};
}

// The agreement with PyTorch's outputs, as failure text (empty: within the case's tolerance).
std::string compare_with_pytorch(const Case& c, int threads) {
  Model model = load(c.arch(), c.weights());
  std::vector<Tensor> inputs;
  for (auto& in : c.meta.find("inputs")->array)
    inputs.push_back(read_npy((c.folder / in.str).string()));
  Executor net(model, {.threads = threads});
  std::vector<Tensor> outputs = net(inputs);
  const auto& refs = c.meta.find("refs")->array;
  double tol = c.meta.find("tol")->number;
  std::string failures;
  if (outputs.size() != refs.size())
    failures +=
        " " + std::to_string(outputs.size()) + " outputs, PyTorch " + std::to_string(refs.size());
  for (size_t k = 0; k < std::min(outputs.size(), refs.size()); ++k) {
    Tensor ref = read_npy((c.folder / refs[k].str).string());
    double err = testing_util::relative_error(outputs[k], ref);
    if (!(err <= tol))
      failures += " output " + std::to_string(k) + ": shape " + outputs[k].shape().str() +
                  " vs PyTorch " + ref.shape().str() + ", error " + std::to_string(err);
  }
  return failures;
}

TEST(ExportParity, EveryExportMatchesPyTorch) {
  if (std::string why = skipped_because(); !why.empty()) GTEST_SKIP() << why;
  auto folders = export_cases();
  ASSERT_FALSE(folders.empty()) << "no export cases under " << NNX_FIXTURE_DIR << "/export";
  for (auto& folder : folders) {
    Case c = read_case(folder);
    try {
      std::string failures = compare_with_pytorch(c, 2);
      EXPECT_TRUE(failures.empty()) << c.name() << ":" << failures;
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name() << ": " << e.what();
    }
  }
}

TEST(ExportParity, CoversTheIssuesModels) {
  if (std::string why = skipped_because(); !why.empty()) GTEST_SKIP() << why;
  std::vector<std::string> names;
  for (auto& f : export_cases()) names.push_back(f.filename().string());
  for (const char* required : {"resnet18", "resnet50", "vgg11", "mobilenet_v2",
                               "mobilenet_v3_small", "squeezenet1_1", "two_branch"})
    EXPECT_NE(std::find(names.begin(), names.end(), required), names.end()) << required;
}

// What nnx-export writes is exactly what `nnx convert` writes: saving the loaded model again
// gives the same description text and the same weights, bit for bit.
TEST(ExportRoundTrip, ConvertReproducesTheFilesExactly) {
  if (std::string why = skipped_because(); !why.empty()) GTEST_SKIP() << why;
  testing_util::TempDir tmp;
  for (auto& folder : export_cases()) {
    Case c = read_case(folder);
    SCOPED_TRACE(c.name());
    Model model = load(c.arch(), c.weights());
    std::string saved = tmp.file(c.name() + ".json");
    model.save(saved);
    EXPECT_EQ(testing_util::read_file(saved), testing_util::read_file(c.arch()))
        << "the exported description differs from what nnx convert writes";
    Model again = load(saved, tmp.file(c.name() + ".pth"));
    const auto& a = model.graph().layers;
    const auto& b = again.graph().layers;
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      const auto& pa = a[i].op->params();
      const auto& pb = b[i].op->params();
      ASSERT_EQ(pa.size(), pb.size()) << "layer " << i;
      for (size_t j = 0; j < pa.size(); ++j) {
        EXPECT_EQ(pa[j].name, pb[j].name);
        EXPECT_TRUE(pa[j].value.bitwise_equal(pb[j].value))
            << "layer " << i << " '" << a[i].call_text << "' " << pa[j].name;
      }
    }
  }
}

// A module called twice is one layer at several nodes: its weights are stored once.
TEST(ExportRoundTrip, SharedModuleIsOneLayerAtTwoNodes) {
  if (std::string why = skipped_because(); !why.empty()) GTEST_SKIP() << why;
  Case c = read_case(fs::path(NNX_FIXTURE_DIR) / "export" / "two_branch");
  Model model = load(c.arch(), c.weights());
  int shared = 0;
  for (const auto& layer : model.graph().layers)
    if (layer.nodes.size() == 2 && layer.call_text.find("Conv2d(16, 16") != std::string::npos)
      ++shared;
  EXPECT_EQ(shared, 1);
  EXPECT_EQ(model.num_inputs(), 2);
  EXPECT_EQ(model.num_outputs(), 2);
}

}  // namespace
}  // namespace nnx
