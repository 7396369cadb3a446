// Losses against PyTorch: every case folder of python/fixture_train_math.py (losses/) holds the
// prediction, target, options, and PyTorch's value and gradient (float64).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "importer/json.h"
#include "nnx/loss.h"
#include "nnx/npy.h"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;
using testing_util::expect_error;
using testing_util::relative_error;

constexpr double kTol = 1e-5;

std::vector<fs::path> loss_folders() {
  std::vector<fs::path> folders;
  fs::path root = fs::path(NNX_FIXTURE_DIR) / "train_math" / "losses";
  if (!fs::exists(root)) return folders;
  for (auto& entry : fs::directory_iterator(root)) folders.push_back(entry.path());
  std::sort(folders.begin(), folders.end());
  return folders;
}

LossOptions options_of(const json::Value& meta, const fs::path& folder) {
  LossOptions o;
  o.kind = parse_loss_name(meta.find("loss")->str);
  o.reduction = meta.find("reduction")->str == "sum" ? Reduction::sum : Reduction::mean;
  o.ignore_index = meta.find("ignore_index")->integer;
  o.label_smoothing = meta.find("label_smoothing")->number;
  o.beta = meta.find("beta")->number;
  if (meta.find("weight")->b) o.weight = read_npy((folder / "weight.npy").string());
  if (meta.find("pos_weight")->b) o.pos_weight = read_npy((folder / "pos_weight.npy").string());
  return o;
}

TEST(LossParity, EveryCaseMatchesPyTorch) {
  if (std::string(NNX_PYTHON).empty()) GTEST_SKIP() << "no Python with torch: no fixtures";
  auto folders = loss_folders();
  ASSERT_FALSE(folders.empty()) << "no loss cases under " << NNX_FIXTURE_DIR;
  for (const fs::path& folder : folders) {
    SCOPED_TRACE(folder.filename().string());
    json::Value meta = json::parse_file((folder / "case.json").string());
    LossOptions o = options_of(meta, folder);
    Tensor pred = read_npy((folder / "pred.npy").string());
    Tensor target = read_npy((folder / "target.npy").string());
    LossResult r = compute_loss(pred, target, o);
    double ref = meta.find("value")->number;
    EXPECT_LE(std::abs(r.value - ref) / std::max(1.0, std::abs(ref)), kTol)
        << "value " << r.value << ", PyTorch " << ref;
    EXPECT_EQ(r.grad.dtype(), pred.dtype());
    EXPECT_LE(relative_error(r.grad, read_npy((folder / "grad.npy").string())), kTol);
    // The f64 prediction gives the same numbers.
    LossResult r64 = compute_loss(pred.to(DType::f64), target, o);
    EXPECT_EQ(r64.grad.dtype(), DType::f64);
    EXPECT_LE(std::abs(r64.value - ref) / std::max(1.0, std::abs(ref)), kTol);
    if (const json::Value* correct = meta.find("correct")) {
      EXPECT_EQ(count_correct(pred, target, o.ignore_index), correct->integer);
      int64_t counted = meta.find("counted")->integer;
      EXPECT_EQ(count_labelled(target, o.ignore_index), counted);
      EXPECT_DOUBLE_EQ(accuracy(pred, target, o.ignore_index),
                       counted ? double(correct->integer) / double(counted) : 0.0);
    }
  }
}

TEST(Loss, ParsesNames) {
  EXPECT_EQ(parse_loss_name("cross_entropy"), LossKind::cross_entropy);
  EXPECT_EQ(parse_loss_name("bce_with_logits"), LossKind::bce_with_logits);
  for (LossKind k : {LossKind::cross_entropy, LossKind::mse, LossKind::l1, LossKind::smooth_l1,
                     LossKind::bce_with_logits})
    EXPECT_EQ(parse_loss_name(loss_name(k)), k);
  expect_error([] { parse_loss_name("hinge"); }, "unknown loss 'hinge'", ErrorKind::usage);
}

TEST(Loss, CrossEntropyChecksShapesAndLabels) {
  Tensor logits = Tensor::zeros({4, 3});
  Tensor labels = Tensor::zeros({4}, DType::i64);
  labels.data<int64_t>()[2] = 3;
  expect_error([&] { cross_entropy_loss(logits, labels); },
               "class index 3 at position 2 is out of range [0, 3)", ErrorKind::usage);
  labels.data<int64_t>()[2] = -1;
  expect_error([&] { cross_entropy_loss(logits, labels); }, "class index -1", ErrorKind::usage);
  labels.data<int64_t>()[2] = -100;  // ignored
  EXPECT_NO_THROW(cross_entropy_loss(logits, labels));
  expect_error([&] { cross_entropy_loss(logits, Tensor::zeros({5}, DType::i64)); },
               "expected class indices of shape [4] for logits [4, 3], found [5]",
               ErrorKind::shape);
  expect_error(
      [&] {
        cross_entropy_loss(logits, Tensor::zeros({4, 2}));
      },
      "expected class probabilities of the logits' shape [4, 3]", ErrorKind::shape);
  LossOptions o;
  o.weight = Tensor::full({2}, 1.0);
  expect_error([&] { cross_entropy_loss(logits, Tensor::zeros({4}, DType::i64), o); },
               "expected a class weight of shape [3], found float32[2]", ErrorKind::shape);
  expect_error(
      [&] {
        count_correct(logits, Tensor::zeros({4, 1}, DType::i64));
      },
      "expected class indices of shape [4]", ErrorKind::shape);
}

TEST(Loss, ElementwiseLossesCheckShapes) {
  Tensor x = Tensor::zeros({2, 3});
  for (LossKind k : {LossKind::mse, LossKind::l1, LossKind::smooth_l1, LossKind::bce_with_logits}) {
    LossOptions o;
    o.kind = k;
    expect_error(
        [&] {
          compute_loss(x, Tensor::zeros({3, 2}), o);
        },
        "expected a target of the prediction's shape [2, 3], found [3, 2]", ErrorKind::shape);
  }
  LossOptions o;
  o.kind = LossKind::bce_with_logits;
  o.pos_weight = Tensor::full({2}, 1.0);
  expect_error(
      [&] {
        compute_loss(x, Tensor::zeros({2, 3}), o);
      },
      "pos_weight of shape [2] does not broadcast to the prediction's [2, 3]", ErrorKind::shape);
  expect_error([&] { mse_loss(Tensor::zeros({2}, DType::i64), Tensor::zeros({2})); },
               "expected a floating-point prediction", ErrorKind::usage);
}

}  // namespace
}  // namespace nnx
