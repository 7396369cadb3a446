// The nnx command line as users script it: exit codes, one error line per fault naming the
// file, nothing partial on failure, and conversions that PyTorch loads back unchanged.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "graph/graph.h"
#include "importer/json.h"
#include "nnx/cuda.h"
#include "nnx/nnx.hpp"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;

using Result = testing_util::ShellResult;

Result sh(const std::string& command) {
  return testing_util::run_shell(command);
}

std::string nnx_cli() {
  return NNX_CLI_PATH;
}
std::string original(const std::string& name) {
  return std::string(NNX_SHARED_DIR) + "/fixtures/original-package/" + name;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("nnx_cli_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(Cli, RunWritesOutputsAndPrintsShapes) {
  Result r = sh(nnx_cli() + " run " + original("tmp.json") + " --weights " + original("tmp.pth") +
                " --shape 2,3,32,32 --out " + path("out/nested"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("output 0: [2, 4, 8, 8]"), std::string::npos) << r.out;
  Tensor out0 = read_npy(path("out/nested/out0.npy"));
  EXPECT_EQ(out0.shape(), (Shape{2, 4, 8, 8}));
  EXPECT_EQ(out0.dtype(), DType::f32);
}

// `nnx run` itself on the original package's files (two-file, one-file with two inputs, flat
// keys, shared weights) against the outputs PyTorch computed for the same inputs.
TEST_F(Cli, RunMatchesPyTorchOnTheOriginalPackagesFiles) {
  if (std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch fixtures not generated";
  for (const char* name :
       {"original_tmp", "original_onefile", "original_onefile_b2", "flat_keys"}) {
    fs::path folder = fs::path(NNX_FIXTURE_DIR) / "models" / name;
    ASSERT_TRUE(fs::exists(folder / "case.json")) << folder;
    json::Value meta = json::parse_file((folder / "case.json").string());
    std::string command = nnx_cli() + " run " + (folder / meta.find("arch")->str).string();
    if (const json::Value* w = meta.find("weights"); w && w->is_string())
      command += " --weights " + (folder / w->str).string();
    for (auto& in : meta.find("inputs")->array) command += " --input " + (folder / in.str).string();
    std::string out = path(name);
    Result r = sh(command + " --out " + out);
    ASSERT_EQ(r.status, 0) << name << ": " << r.err;
    const auto& refs = meta.find("refs")->array;
    for (size_t k = 0; k < refs.size(); ++k) {
      Tensor got = read_npy(out + "/out" + std::to_string(k) + ".npy");
      Tensor ref = read_npy((folder / refs[k].str).string());
      EXPECT_LE(testing_util::relative_error(got, ref), 1e-4) << name << " output " << k;
    }
    EXPECT_FALSE(fs::exists(out + "/out" + std::to_string(refs.size()) + ".npy")) << name;
  }
}

TEST_F(Cli, UsageErrorsExitTwo) {
  EXPECT_EQ(sh(nnx_cli()).status, 2);
  EXPECT_EQ(sh(nnx_cli() + " frobnicate x.json").status, 2);
  Result r = sh(nnx_cli() + " run " + original("tmp.json") + " --bogus");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--bogus"), std::string::npos) << r.err;
  EXPECT_EQ(sh(nnx_cli() + " run " + original("tmp.json") + " --shape 1,x,3").status, 2);
  EXPECT_EQ(sh(nnx_cli() + " convert " + original("tmp.json") + " --out " + path("m.txt")).status,
            2);
}

TEST_F(Cli, BadInputExitsOneWithOneLinePerFaultAndNoOutput) {
  std::string seed = std::string(NNX_SOURCE_DIR) + "/examples/seed/seed_as_written.json";
  Result r = sh(nnx_cli() + " run " + seed + " --out " + path("out"));
  EXPECT_EQ(r.status, 1);
  std::istringstream lines(r.err);
  std::string line;
  int count = 0;
  while (std::getline(lines, line)) {
    EXPECT_EQ(line.rfind("nnx: error: " + seed + ": ", 0), 0u) << line;
    ++count;
  }
  EXPECT_GE(count, 3) << r.err;
  EXPECT_FALSE(fs::exists(path("out/out0.npy")));
  // A named weights file that is missing is an error naming it.
  r = sh(nnx_cli() + " run " + original("tmp.json") + " --weights " + path("nope.pth"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find(path("nope.pth")), std::string::npos) << r.err;
  // Wrong input channels.
  r = sh(nnx_cli() + " run " + original("tmp.json") + " --weights " + original("tmp.pth") +
         " --shape 1,4,8,8");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("expected 3 channels, found 4"), std::string::npos) << r.err;
}

TEST_F(Cli, NoWeightsSaysSoOnStderr) {
  Result r = sh(nnx_cli() + " run " + original("tmp.json") + " --shape 1,3,16,16");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("no weights"), std::string::npos) << r.err;
}

TEST_F(Cli, InfoPrintsNodesAndTotals) {
  Result r = sh(nnx_cli() + " info " + original("tmp.json") + " --weights " + original("tmp.pth") +
                " --shape 1,3,64,64");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("Conv2d"), std::string::npos);
  EXPECT_NE(r.out.find("parameters:"), std::string::npos);
  EXPECT_NE(r.out.find("planned"), std::string::npos);
  r = sh(nnx_cli() + " info " + original("tmp.json") + " --weights " + original("tmp.pth") +
         " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.front(), '{');
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "exactly one JSON object on stdout";
}

// nnx convert to every form; each reloads with the same weights bit for bit and the same
// outputs; the .pth files load in PyTorch with weights_only=True and give the same outputs
// through the PyTorch reference executor.
TEST_F(Cli, ConvertRoundTripsThroughPyTorch) {
  Model original_model = load(original("tmp.json"), original("tmp.pth"));
  Tensor input = Tensor::empty({1, 3, 24, 24});
  for (int64_t i = 0; i < input.numel(); ++i)
    input.data<float>()[i] = float((i * 7919) % 1000) / 500.0f - 1.0f;
  write_npy(path("in0.npy"), input);
  Tensor expected = Executor(original_model, {.threads = 1})(input)[0];
  for (std::string target : {"two.json", "one.pth", "flat.safetensors"}) {
    Result r = sh(nnx_cli() + " convert " + original("tmp.json") + " --weights " +
                  original("tmp.pth") + " --out " + path(target));
    ASSERT_EQ(r.status, 0) << target << ": " << r.err;
    std::string arch =
        target == "one.pth" ? path("one.pth") : path(fs::path(target).stem().string() + ".json");
    std::string weights = target == "two.json"           ? path("two.pth")
                          : target == "flat.safetensors" ? path("flat.safetensors")
                                                         : "";
    Model back = load(arch, weights);
    ASSERT_EQ(back.graph().layers.size(), original_model.graph().layers.size());
    for (size_t l = 0; l < back.graph().layers.size(); ++l) {
      const auto& a = original_model.graph().layers[l].op->params();
      const auto& b = back.graph().layers[l].op->params();
      ASSERT_EQ(a.size(), b.size());
      for (size_t p = 0; p < a.size(); ++p)
        EXPECT_TRUE(a[p].value.bitwise_equal(b[p].value))
            << target << " layer " << l << " " << a[p].name;
    }
    Tensor got = Executor(back, {.threads = 1})(input)[0];
    EXPECT_TRUE(got.bitwise_equal(expected)) << target;
  }
  if (std::string(NNX_PYTHON).empty())
    GTEST_SKIP() << "no Python with torch: PyTorch side of the round trip not checked";
  std::string py = std::string(NNX_PYTHON);
  std::string pythonpath = "PYTHONPATH=" + std::string(NNX_SOURCE_DIR) + "/python ";
  for (auto [arch, weights] :
       {std::pair<std::string, std::string>{path("two.json"), path("two.pth")},
        {path("one.pth"), ""}}) {
    std::string check = weights.empty() ? arch : weights;
    Result r = sh(py + " -c \"import torch; torch.load('" + check + "', weights_only=True)\"");
    ASSERT_EQ(r.status, 0) << "torch.load(weights_only=True) refused " << check << ": " << r.err;
    fs::remove_all(path("ref"));
    r = sh(pythonpath + py + " -m nnx_ref run " + arch +
           (weights.empty() ? "" : " --weights " + weights) + " --input " + path("in0.npy") +
           " --out " + path("ref"));
    ASSERT_EQ(r.status, 0) << r.err;
    Tensor ref = read_npy(path("ref/out0.npy"));
    EXPECT_LE(testing_util::relative_error(expected, ref), 1e-4) << arch;
  }
}

TEST_F(Cli, BenchPrintsJson) {
  Result r = sh(nnx_cli() + " bench " + original("tmp.json") + " --weights " + original("tmp.pth") +
                " --shape 1,3,32,32 --iters 3 --warmup 1 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* key : {"\"median_ms\"", "\"p90_ms\"", "\"load_ms\"", "\"first_run_ms\"",
                          "\"peak_rss_mb\"", "\"threads\""})
    EXPECT_NE(r.out.find(key), std::string::npos) << key << " in " << r.out;
}

// --device cuda: where a GPU runs it, the JSON names the device and its peak memory; elsewhere
// (CI, a build without CUDA) it exits 3, a failure not caused by the input, naming CUDA.
// --cuda-graph is checked first: only with --device cuda, only on or off. The JSON says what
// was captured.
// A string member of a JSON object, or "(missing)".
std::string json_string(const json::Value& object, const char* key) {
  const json::Value* v = object.find(key);
  return v != nullptr && v->is_string() ? v->str : std::string("(missing)");
}

TEST_F(Cli, BenchOnCudaOrAClearRefusal) {
  const std::string bench = nnx_cli() + " bench " + original("tmp.json") + " --weights " +
                            original("tmp.pth") + " --shape 1,3,32,32 --iters 3 --warmup 1";
  EXPECT_EQ(sh(bench + " --cuda-graph on").status, 2);
  EXPECT_EQ(sh(bench + " --device cuda --cuda-graph sometimes").status, 2);
  Result r = sh(bench + " --device cuda --cuda-graph off --json");
  cuda::init();
  if (!cuda::available()) {
    EXPECT_EQ(r.status, 3) << r.err;
    EXPECT_NE(r.err.find("CUDA"), std::string::npos) << r.err;
    return;
  }
  ASSERT_EQ(r.status, 0) << r.err;
  const json::Value off = json::parse(r.out, "nnx bench --json");
  EXPECT_EQ(json_string(off, "device"), "cuda") << r.out;
  const json::Value* peak = off.find("peak_device_mb");
  EXPECT_TRUE(peak != nullptr && peak->kind == json::Value::Kind::number && peak->number > 0)
      << r.out;
  EXPECT_EQ(json_string(off, "cuda_graph"), "off") << r.out;
  Result graph = sh(bench + " --device cuda --json");
  ASSERT_EQ(graph.status, 0) << graph.err;
  EXPECT_EQ(json_string(json::parse(graph.out, "nnx bench --json"), "cuda_graph")
                .rfind("captured: 1 graph of", 0),
            0u)
      << graph.out;
}

// --precision: a misspelling is a usage error (2); tf32, fp16 and bf16 are CUDA's (on the CPU a
// refusal, exit 1, naming CUDA); on a GPU each runs.
TEST_F(Cli, PrecisionIsCheckedAndTf32IsForCuda) {
  const std::string bench = nnx_cli() + " bench " + original("tmp.json") + " --weights " +
                            original("tmp.pth") + " --shape 1,3,32,32 --iters 2 --warmup 1";
  EXPECT_EQ(sh(bench + " --precision fp64").status, 2);
  Result cpu = sh(bench + " --precision tf32");
  EXPECT_EQ(cpu.status, 1) << cpu.err;
  EXPECT_NE(cpu.err.find("is for CUDA"), std::string::npos) << cpu.err;
  Result half = sh(bench + " --precision fp16");
  EXPECT_EQ(half.status, 1) << half.err;
  EXPECT_NE(half.err.find("is for CUDA"), std::string::npos) << half.err;
  cuda::init();
  if (!cuda::available()) return;
  for (const char* precision : {"tf32", "fp16", "bf16"}) {
    Result r = sh(bench + " --device cuda --precision " + precision + " --json");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(json_string(json::parse(r.out, "nnx bench --json"), "precision"), precision) << r.out;
  }
}

}  // namespace
}  // namespace nnx
