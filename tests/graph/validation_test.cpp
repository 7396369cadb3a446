// Section 9 of the format: every invalid description is refused with one message per fault
// that names the layer (index and constructor string) and what was expected against found.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "examples/embed/yolo_head.h"
#include "importer/description.h"
#include "importer/json.h"
#include "nnx/nnx.hpp"

namespace nnx {
namespace {

namespace fs = std::filesystem;

std::string load_error(const std::string& arch, const std::string& weights = "",
                       bool strict = true) {
  try {
    LoadOptions options;
    options.strict = strict;
    load(arch, weights, options);
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

TEST(Validation, SeedAsWrittenIsRefusedNamingTheContradictingLayers) {
  example::register_yolo_head();
  std::string path = std::string(NNX_SOURCE_DIR) + "/examples/seed/seed_as_written.json";
  std::string msg = load_error(path);
  ASSERT_FALSE(msg.empty()) << "the seed example as written must be refused";
  // The convolution declares 128 output channels but makes 256 ...
  EXPECT_NE(msg.find("'torch.nn.Conv2d(128,256,3,padding=1)'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("declared 128"), std::string::npos) << msg;
  // ... which BatchNorm2d(128) cannot take ...
  EXPECT_NE(msg.find("'torch.nn.BatchNorm2d(128)'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 128"), std::string::npos) << msg;
  EXPECT_NE(msg.find("found 256"), std::string::npos) << msg;
  // ... and YOLO is given two connections for the one input it declares.
  EXPECT_NE(msg.find("own_module.YOLO"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 connections"), std::string::npos) << msg;
  // Every line names the file.
  size_t start = 0;
  while (start < msg.size()) {
    size_t end = msg.find('\n', start);
    if (end == std::string::npos) end = msg.size();
    EXPECT_EQ(msg.compare(start, path.size(), path), 0) << msg.substr(start, end - start);
    start = end + 1;
  }
}

TEST(Validation, CorrectedSeedLoads) {
  example::register_yolo_head();
  Model m = load(std::string(NNX_SOURCE_DIR) + "/examples/seed/seed.json");
  EXPECT_EQ(m.num_outputs(), 2);
  EXPECT_FALSE(m.report().weights_given);
}

TEST(Validation, UnregisteredUserOpIsAnError) {
  unregister_op("own_module.YOLO");
  std::string msg = load_error(std::string(NNX_SOURCE_DIR) + "/examples/seed/seed.json");
  EXPECT_NE(msg.find("own_module.YOLO"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not registered"), std::string::npos) << msg;
  example::register_yolo_head();
}

TEST(Validation, ARunOfMissingNodeIndicesIsOneFault) {
  // Found probing with fuzz_json (a slow unit): a layer at node 1000000 made 999999 faults, 80 MB
  // of message, from 100 bytes of description.
  auto error_of = [](const std::string& layers) -> std::string {
    std::string text = R"({"inputs_channels": [1], "outputs_channels": [1],)"
                       R"( "outputs": [[1, 0, 0]], "layers": [)" +
                       layers + "]}";
    try {
      build_graph(json::parse(text, "gap.json"), "gap.json");
    } catch (const Error& e) {
      return e.message();
    }
    return "";
  };
  std::string msg = error_of(R"j([[1000000], "ReLU()"])j");
  EXPECT_EQ(msg,
            "gap.json: node indices 1..999999 are missing: no layer stands at them (indices must "
            "be 1..N without gaps)");
  // A single missing index keeps its own message, in node order with the runs.
  msg = error_of(R"j([[2], "ReLU()"], [[4], "ReLU()"], [[8], "ReLU()"])j");
  EXPECT_NE(msg.find("gap.json: node index 1 is missing: no layer stands at it"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("gap.json: node index 3 is missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gap.json: node indices 5..7 are missing"), std::string::npos) << msg;
}

TEST(Validation, EveryRuleOfSection9) {
  if (std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: bad-model fixtures not generated";
  fs::path root = fs::path(NNX_FIXTURE_DIR) / "bad_models";
  ASSERT_TRUE(fs::exists(root / "cases.json")) << root;
  json::Value cases = json::parse_file((root / "cases.json").string());
  ASSERT_TRUE(cases.is_object());
  ASSERT_GE(cases.object.size(), 10u);
  example::register_yolo_head();
  for (auto& [name, c] : cases.object) {
    std::string arch = (root / c.find("arch")->str).string();
    std::string weights;
    if (const json::Value* w = c.find("weights"); w && w->is_string())
      weights = (root / w->str).string();
    bool strict = true;
    if (const json::Value* s = c.find("strict"); s && s->kind == json::Value::Kind::boolean)
      strict = s->b;
    std::string msg = load_error(arch, weights, strict);
    EXPECT_FALSE(msg.empty()) << name << ": was accepted";
    for (auto& expect : c.find("expect")->array)
      EXPECT_NE(msg.find(expect.str), std::string::npos)
          << name << ": '" << expect.str << "' not in: " << msg;
  }
}

}  // namespace
}  // namespace nnx
