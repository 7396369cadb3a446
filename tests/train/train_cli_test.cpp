// `nnx train` end to end on the 8x8 digits of python3-sklearn (python/fixture_digits.py): the
// small CNN of examples/digits reaches 97% test accuracy; checkpoints load in nnx and
// PyTorch; a resumed run ends where an uninterrupted one does; bad input exits 1 or 2 with
// one line naming the file.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "nnx/cuda.h"
#include "nnx/nnx.hpp"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;

using Result = testing_util::ShellResult;

Result sh(const std::string& command, const fs::path& dir) {
  return testing_util::run_shell(command, dir);
}

std::string digits(const std::string& name) {
  return (fs::path(NNX_FIXTURE_DIR) / "digits" / ("digits_" + name + ".npy")).string();
}

std::string train_command(const std::string& out, int epochs, const std::string& extra = "",
                          const std::string& schedule = "cosine") {
  return std::string(NNX_CLI_PATH) + " train " + NNX_SOURCE_DIR +
         "/examples/digits/digits_cnn.json --train " + digits("train_x") + " " + digits("train_y") +
         " --val " + digits("test_x") + " " + digits("test_y") +
         " --loss cross_entropy --optimizer adam --lr 0.003 --batch 32 --schedule " + schedule +
         " --seed 1 --threads 2 --epochs " + std::to_string(epochs) + " --out " + out + " " + extra;
}

// The rows of history.csv as cells.
std::vector<std::vector<std::string>> history(const fs::path& dir) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(testing_util::read_file((dir / "history.csv").string()));
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) cells.push_back(cell);
    rows.push_back(cells);
  }
  return rows;
}

class TrainCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(digits("train_x"))) GTEST_SKIP() << "no digits fixture (python3-sklearn)";
    dir_ = fs::temp_directory_path() /
           ("nnx_train_cli_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(TrainCli, DigitsReach97PercentAndCheckpointsLoad) {
  fs::path out = dir_ / "run";
  Result r = sh(train_command(out.string(), 15), dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  auto rows = history(out);
  ASSERT_EQ(rows.size(), 16u) << testing_util::read_file((out / "history.csv").string());
  EXPECT_EQ(rows[0][5], "val_accuracy");
  double best = 0;
  for (size_t i = 1; i < rows.size(); ++i) best = std::max(best, std::stod(rows[i][5]));
  double last = std::stod(rows.back()[5]);
  EXPECT_GE(last, 0.97) << r.err;
  for (const char* f : {"last.json", "last.pth", "best.json", "best.pth", "last.optim.pth",
                        "history.csv", "history.png"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  std::string png = testing_util::read_file((out / "history.png").string());
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  // No temporary file is left behind.
  for (const auto& e : fs::directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();

  // best.* is the epoch with the best validation accuracy, and nnx runs it: recompute it.
  Model model = load((out / "best.json").string(), (out / "best.pth").string());
  Executor net(model, {.threads = 2});
  Tensor x = read_npy(digits("test_x"));
  Tensor y = read_npy(digits("test_y"));
  Tensor logits = net(x)[0];
  int64_t correct = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    const float* row = logits.data<float>() + i * 10;
    correct += std::max_element(row, row + 10) - row == y.data<int64_t>()[i];
  }
  EXPECT_NEAR(double(correct) / double(y.numel()), best, 1e-5);  // history.csv: 6 digits

  // PyTorch loads the checkpoint (two-file form) with weights_only=True.
  std::string py = std::string(NNX_PYTHON) +
                   " -c \"import torch,sys; sd=torch.load(sys.argv[1], weights_only=True); "
                   "assert isinstance(sd, list) and len(sd) == 14, len(sd); "
                   "assert sd[13]['weight'].shape == (10, 256)\" " +
                   (out / "last.pth").string();
  Result p = sh(py, dir_);
  EXPECT_EQ(p.status, 0) << p.err;
}

// On a GPU each step is one TrainStep, replayed from a CUDA graph (digits_resnet has no Dropout),
// and training converges as on the CPU.
TEST_F(TrainCli, OnCudaStepsAreReplayedAndReach97Percent) {
  cuda::init();
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason();
  fs::path out = dir_ / "run";
  const std::string command = std::string(NNX_CLI_PATH) + " train " + NNX_SOURCE_DIR +
                              "/examples/digits/digits_resnet.json --train " + digits("train_x") +
                              " " + digits("train_y") + " --val " + digits("test_x") + " " +
                              digits("test_y") +
                              " --loss cross_entropy --optimizer adamw --lr 0.003 --batch 64 "
                              "--seed 1 --epochs 2 --device cuda --out " +
                              out.string();
  Result r = sh(command, dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  // 2 x 23 steps: per epoch, two op by op (new shapes after the short last batch) and the
  // capture's, the rest replayed.
  const size_t at = r.err.find("training steps on cuda:0: ");
  ASSERT_NE(at, std::string::npos) << r.err;
  const size_t semicolon = r.err.find("; ", at);
  ASSERT_NE(semicolon, std::string::npos) << r.err;
  EXPECT_GE(std::stoi(r.err.substr(semicolon + 2)), 30) << r.err;
  auto rows = history(out);
  ASSERT_EQ(rows.size(), 3u) << testing_util::read_file((out / "history.csv").string());
  EXPECT_GE(std::stod(rows.back()[5]), 0.97) << r.err;
  Model model = load((out / "last.json").string(), (out / "last.pth").string());
  EXPECT_EQ(model.num_outputs(), 1);
}

TEST_F(TrainCli, ResumedRunEndsWhereAnUninterruptedOneDoes) {
  // The step schedule (epoch 3 at a tenth of the lr) depends on the epoch only, as an
  // interrupted run planned for 3 epochs would have it; cosine's T would differ here.
  fs::path straight = dir_ / "straight", resumed = dir_ / "resumed";
  std::string step = "step --step-size 2";
  ASSERT_EQ(sh(train_command(straight.string(), 3, "", step), dir_).status, 0);
  ASSERT_EQ(sh(train_command(resumed.string(), 2, "", step), dir_).status, 0);
  Result r = sh(train_command(resumed.string(), 3, "--resume " + resumed.string(), step), dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("resuming after epoch 2"), std::string::npos) << r.err;
  EXPECT_EQ(history(resumed).size(), 4u);
  Model a = load((straight / "last.json").string(), (straight / "last.pth").string());
  Model b = load((resumed / "last.json").string(), (resumed / "last.pth").string());
  Tensor x = read_npy(digits("test_x"));
  Tensor ya = Executor(a, {.threads = 1})(x)[0];
  Tensor yb = Executor(b, {.threads = 1})(x)[0];
  EXPECT_EQ(testing_util::relative_error(yb, ya), 0.0);
}

TEST_F(TrainCli, BadInputIsOneLineAndNoCheckpoint) {
  fs::path out = dir_ / "bad";
  // Labels of another length than the samples: exit 1, naming the file.
  std::string cmd =
      std::string(NNX_CLI_PATH) + " train " + NNX_SOURCE_DIR +
      "/examples/digits/digits_cnn.json --train " + digits("train_x") + " " + digits("test_y") +
      " --loss cross_entropy --optimizer sgd --lr 0.1 --epochs 1 --batch 8 --out " + out.string();
  Result r = sh(cmd, dir_);
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("digits_test_y.npy"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out / "last.pth"));
  // Float samples as cross-entropy labels: exit 1.
  cmd = std::string(NNX_CLI_PATH) + " train " + NNX_SOURCE_DIR +
        "/examples/digits/digits_cnn.json --train " + digits("test_x") + " " + digits("test_x") +
        " --loss cross_entropy --optimizer sgd --lr 0.1 --epochs 1 --batch 8 --out " + out.string();
  r = sh(cmd, dir_);
  EXPECT_EQ(r.status, 1) << r.err;
  // Usage: no --lr, an unknown loss, --train with one file.
  for (const std::string& args :
       {std::string(" --loss mse --optimizer sgd --epochs 1 --batch 8"),
        std::string(" --loss hinge --optimizer sgd --lr 0.1 --epochs 1 --batch 8")}) {
    r = sh(std::string(NNX_CLI_PATH) + " train " + NNX_SOURCE_DIR +
               "/examples/digits/digits_cnn.json --train " + digits("train_x") + " " +
               digits("train_y") + args + " --out " + out.string(),
           dir_);
    EXPECT_EQ(r.status, 2) << args << ": " << r.err;
  }
  r = sh(std::string(NNX_CLI_PATH) + " train " + NNX_SOURCE_DIR +
             "/examples/digits/digits_cnn.json --train " + digits("train_x") +
             " --loss mse --optimizer sgd --lr 0.1 --epochs 1 --batch 8 --out " + out.string(),
         dir_);
  EXPECT_EQ(r.status, 2) << r.err;
}

}  // namespace
}  // namespace nnx
