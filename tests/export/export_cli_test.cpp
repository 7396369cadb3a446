// The nnx-export command as users script it (CLI.md): exit codes, one error line per
// unsupported call with its source location, nothing written on failure, and a verified export.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;

using Result = testing_util::ShellResult;

class ExportCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(NNX_PYTHON).empty()) GTEST_SKIP() << "no Python with torch: no nnx-export";
    // The example models use torchvision (fixture_export.py notes when it is missing).
    fs::path marker = fs::path(NNX_FIXTURE_DIR) / "export" / "SKIPPED";
    if (fs::exists(marker)) GTEST_SKIP() << testing_util::read_file(marker.string());
    dir_ = fs::temp_directory_path() /
           ("nnx_export_cli_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs nnx-export (the launcher beside nnx in the build tree) with `args`.
  Result run(const std::string& args) const {
    std::string exporter = (fs::path(NNX_CLI_PATH).parent_path() / "nnx-export").string();
    return testing_util::run_shell(exporter + " " + args, dir_);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static std::string cases(const std::string& file) {
    return std::string(NNX_SOURCE_DIR) + "/python/export_cases/" + file;
  }
  fs::path dir_;
};

int count_lines(const std::string& text) {
  int n = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) n += !line.empty();
  return n;
}

TEST_F(ExportCli, UnsupportedCallsAreListedWithTheirSourceLines) {
  Result r = run(cases("unsupported.py") + ":Unsupported --shape 1,3,8,8 --out " +
                 path("out/model") + " --no-verify");
  EXPECT_EQ(r.status, 1) << r.err;
  // Every line of the file marked "# unsupported" is named, one error line per call.
  std::ifstream src(cases("unsupported.py"));
  int line_no = 0, marked = 0;
  for (std::string line; std::getline(src, line);) {
    ++line_no;
    if (line.find("# unsupported") == std::string::npos ||
        line.find("\"\"\"") != std::string::npos || line.find("`") != std::string::npos)
      continue;
    ++marked;
    EXPECT_NE(r.err.find("unsupported.py:" + std::to_string(line_no) + ": unsupported"),
              std::string::npos)
        << "line " << line_no << " not reported:\n"
        << r.err;
  }
  EXPECT_EQ(marked, 4);
  EXPECT_NE(r.err.find("torch.roll"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("PixelShuffle"), std::string::npos) << r.err;
  int lines = count_lines(r.err);
  EXPECT_GE(lines, marked);
  std::istringstream in(r.err);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) {
      EXPECT_EQ(line.rfind("nnx-export: error: ", 0), 0u) << line;
    }
  }
  EXPECT_FALSE(fs::exists(path("out/model.json")));
  EXPECT_FALSE(fs::exists(path("out/model.pth")));
}

TEST_F(ExportCli, UsageErrorsExitTwo) {
  std::string model = cases("two_branch.py") + ":TwoBranch";
  EXPECT_EQ(run(model + " --out " + path("m")).status, 2);              // no --shape
  EXPECT_EQ(run(model + " --shape 1,3 --out " + path("m")).status, 2);  // not NCHW
  EXPECT_EQ(run(model + " --shape 1,3,8,8").status, 2);                 // no --out
  EXPECT_EQ(run(model + " --shape 1,3,8,8 --out " + path("m") + " --frobnicate").status, 2);
  EXPECT_EQ(run("").status, 2);
  EXPECT_FALSE(fs::exists(path("m.json")));
}

TEST_F(ExportCli, ModelsThatCannotBeLoadedAreBadInput) {
  Result missing = run(path("nothing.py") + ":Net --shape 1,3,8,8 --out " + path("m"));
  EXPECT_EQ(missing.status, 1) << missing.err;
  EXPECT_NE(missing.err.find("nothing.py"), std::string::npos) << missing.err;
  Result no_class = run(cases("two_branch.py") + ":NoSuchNet --shape 1,3,8,8 --out " + path("m"));
  EXPECT_EQ(no_class.status, 1) << no_class.err;
  EXPECT_NE(no_class.err.find("NoSuchNet"), std::string::npos) << no_class.err;
  // The model's forward refuses the shapes given (one input for two).
  Result wrong = run(cases("two_branch.py") + ":TwoBranch --shape 1,3,8,8 --out " + path("m"));
  EXPECT_EQ(wrong.status, 1) << wrong.err;
  EXPECT_FALSE(fs::exists(path("m.json")));
}

// The whole path: export with verification through the runtime beside the launcher, then
// `nnx convert` gives the same description back.
TEST_F(ExportCli, ExportsVerifiesAndRoundTrips) {
  Result r = run(cases("two_branch.py") + ":TwoBranch --shape 1,3,16,20 --shape 1,2,8,10 --out " +
                 path("deep/dir/tb"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("largest difference"), std::string::npos) << r.out;
  ASSERT_TRUE(fs::exists(path("deep/dir/tb.json")));
  ASSERT_TRUE(fs::exists(path("deep/dir/tb.pth")));
  for (const auto& e : fs::directory_iterator(path("deep/dir")))
    EXPECT_TRUE(e.path().filename() == "tb.json" || e.path().filename() == "tb.pth") << e.path();
  std::string convert = std::string(NNX_CLI_PATH) + " convert " + path("deep/dir/tb.json") +
                        " --weights " + path("deep/dir/tb.pth") + " --out " +
                        path("again/tb.json") + " 2>/dev/null";
  ASSERT_EQ(std::system(convert.c_str()), 0);
  EXPECT_EQ(testing_util::read_file(path("again/tb.json")),
            testing_util::read_file(path("deep/dir/tb.json")));
}

// MODEL as a whole module saved with torch.save, exported for a batch of two.
TEST_F(ExportCli, ExportsAModelSavedWithTorchSave) {
  std::string saved = path("whole.pth");
  std::string make = std::string(NNX_PYTHON) +
                     " -c \"import torch, torchvision; torch.manual_seed(0); "
                     "torch.save(torchvision.models.squeezenet1_1(), '" +
                     saved + "')\"";
  ASSERT_EQ(std::system(make.c_str()), 0);
  Result r = run(saved + " --shape 2,3,64,64 --out " + path("sq"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("largest difference"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(path("sq.json")));
}

}  // namespace
}  // namespace nnx
