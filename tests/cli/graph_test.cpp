// `nnx graph`: the DOT text of a network (nodes, edges with shapes, inputs and outputs),
// placeholders for unregistered user ops, usage and input errors, and nothing partial. SVG and
// PNG need Graphviz's `dot`: those tests skip where it is not installed.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;
using testing_util::read_file;
using testing_util::TempDir;
using testing_util::write_file;

using Result = testing_util::ShellResult;

// Runs `nnx graph ARGS` through the shell, with `env` before it (e.g. "PATH=/nowhere").
Result graph(const TempDir& dir, const std::string& args, const std::string& env = "") {
  fs::path scratch = fs::path(dir.file("shell"));
  Result r = testing_util::run_shell(env + " " + NNX_CLI_PATH + " graph " + args, scratch);
  fs::remove_all(scratch);
  return r;
}

std::string original(const std::string& name) {
  return std::string(NNX_SHARED_DIR) + "/fixtures/original-package/" + name;
}
std::string seed() {
  return std::string(NNX_SOURCE_DIR) + "/examples/seed/seed.json";
}
bool have_dot() {
  return std::system("command -v dot >/dev/null 2>&1") == 0;
}
size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(Graph, DotHasNodesEdgesShapesInputsAndOutputs) {
  TempDir dir;
  Result r = graph(dir, original("tmp.json") + " --weights " + original("tmp.pth") +
                            " --shape 2,3,32,32 --out " + dir.file("tmp.dot"));
  ASSERT_EQ(r.status, 0) << r.err;
  std::string dot = read_file(dir.file("tmp.dot"));
  EXPECT_EQ(dot.rfind("digraph nnx {", 0), 0u) << dot;
  EXPECT_EQ(dot.substr(dot.size() - 2), "}\n");
  // The input, 13 layers, one output; each layer fed by one edge, the output by one more.
  EXPECT_EQ(count(dot, "  in0 [shape=oval"), 1u) << dot;
  EXPECT_NE(dot.find("label=\"input 0\\n2x3x32x32\""), std::string::npos) << dot;
  for (int v = 1; v <= 13; ++v)
    EXPECT_EQ(count(dot, "  n" + std::to_string(v) + " ["), 1u) << "node " << v << "\n" << dot;
  EXPECT_EQ(count(dot, " -> "), 14u) << dot;
  EXPECT_NE(dot.find("  in0 -> n1 [label=\"2x3x32x32\"];"), std::string::npos) << dot;
  // Op, shortened arguments, output shape and parameter count in the node's label.
  EXPECT_NE(dot.find("label=\"#1 Conv2d\\n3, 5, kernel_size=(3, 3), stride=(1, 1), ...\\n-> "
                     "2x5x32x32\\n140 params\""),
            std::string::npos)
      << dot;
  EXPECT_NE(dot.find("  n1 -> n2 [label=\"2x5x32x32\"];"), std::string::npos) << dot;
  EXPECT_NE(dot.find("  n5 -> n6 [label=\"2x5x16x16\"];"), std::string::npos) << dot;
  EXPECT_NE(dot.find("label=\"output 0\\n2x4x8x8\""), std::string::npos) << dot;
  EXPECT_NE(dot.find("  n13 -> out0;"), std::string::npos) << dot;
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"tmp.dot"});
}

TEST(Graph, SeedNetworkDrawsItsUnregisteredUserOpAsAPlaceholder) {
  TempDir dir;
  Result r = graph(dir, seed() + " --out " + dir.file("seed.dot"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("user op 'own_module.YOLO' is not registered"), std::string::npos) << r.err;
  std::string dot = read_file(dir.file("seed.dot"));
  // Default input 1,C,224,224; two inputs of the Add; the YOLO head fed by node 16 and the image.
  EXPECT_NE(dot.find("label=\"input 0\\n1x3x224x224\""), std::string::npos) << dot;
  EXPECT_NE(dot.find("#17 own_module.YOLO\\nanchors=[[3, 4]]\\n-> ?"), std::string::npos) << dot;
  EXPECT_NE(dot.find("  n16 -> n17 [label=\"[0] 1x15x28x28\"];"), std::string::npos) << dot;
  EXPECT_NE(dot.find("  in0 -> n17 [label=\"[1] 1x3x224x224\"];"), std::string::npos) << dot;
  EXPECT_NE(dot.find("(not registered: shapes unknown)"), std::string::npos) << dot;
  // Outputs: the head's (unknown shape) and node 4's.
  EXPECT_NE(dot.find("label=\"output 0\\n?\""), std::string::npos) << dot;
  EXPECT_NE(dot.find("label=\"output 1\\n1x64x112x112\""), std::string::npos) << dot;
}

TEST(Graph, LabelsAreEscaped) {
  TempDir dir;
  // A quote and a backslash in a (placeholder) user op's constructor string.
  write_file(dir.file("odd.json"), R"json({
    "inputs_channels": [3], "outputs_channels": [3], "outputs": [[-1, 0, 0]],
    "auto_connect": true,
    "layers": [["own_module.Odd(text='a\"b\\\\c')", 3]]
  })json");
  Result r = graph(dir, dir.file("odd.json") + " --out " + dir.file("odd.dot"));
  ASSERT_EQ(r.status, 0) << r.err;
  std::string dot = read_file(dir.file("odd.dot"));
  EXPECT_NE(dot.find("label=\"#1 own_module.Odd\\ntext='a\\\"b\\\\\\\\c'\\n-> ?"),
            std::string::npos)
      << dot;
}

TEST(Graph, UsageErrorsExit2) {
  TempDir dir;
  EXPECT_EQ(graph(dir, original("tmp.json") + " --out " + dir.file("g.pdf")).status, 2);
  EXPECT_EQ(graph(dir, original("tmp.json")).status, 2);
  EXPECT_EQ(graph(dir, "--out " + dir.file("g.dot")).status, 2);
  EXPECT_EQ(graph(dir, original("tmp.json") + " --out " + dir.file("g.dot") + " --bogus").status,
            2);
  EXPECT_TRUE(dir.listing().empty());
}

TEST(Graph, BadInputExits1AndWritesNothing) {
  TempDir dir;
  Result r = graph(dir, dir.file("missing.json") + " --out " + dir.file("g.dot"));
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("missing.json"), std::string::npos) << r.err;
  write_file(dir.file("broken.json"), "{\"layers\": [");
  r = graph(dir, dir.file("broken.json") + " --out " + dir.file("g.svg"));
  EXPECT_EQ(r.status, 1) << r.err;
  // Shapes the network refuses: 4 channels into a 3-channel input.
  r = graph(dir, original("tmp.json") + " --shape 1,4,32,32 --out " + dir.file("g.dot"));
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"broken.json"});
}

TEST(Graph, WithoutGraphvizSvgFailsWithExit3AndNoFile) {
  TempDir dir;
  Result r = graph(dir, original("tmp.json") + " --out " + dir.file("g.svg"),
                   "PATH=" + dir.file("no-such-dir"));
  EXPECT_EQ(r.status, 3) << r.err;
  EXPECT_NE(r.err.find("'dot' is not installed"), std::string::npos) << r.err;
  EXPECT_TRUE(dir.listing().empty());
}

TEST(Graph, SvgAndPngThroughGraphviz) {
  if (!have_dot()) GTEST_SKIP() << "Graphviz's dot is not installed: SVG/PNG not tested";
  TempDir dir;
  Result r = graph(dir, seed() + " --out " + dir.file("seed.svg"));
  ASSERT_EQ(r.status, 0) << r.err;
  std::string svg = read_file(dir.file("seed.svg"));
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("own_module.YOLO"), std::string::npos);
  r = graph(dir, original("tmp.json") + " --out " + dir.file("tmp.png"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_file(dir.file("tmp.png")).substr(0, 8), "\x89PNG\r\n\x1a\n");
  EXPECT_EQ(dir.listing(), (std::vector<std::string>{"seed.svg", "tmp.png"}));
}

}  // namespace
}  // namespace nnx
