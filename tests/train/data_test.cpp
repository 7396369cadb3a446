// Training data readers: IDX files of every element type (plain and gzip) against the arrays
// numpy wrote beside them (python/fixture_idx.py); MNIST-shaped pairs; damaged files refused
// with a message naming the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "nnx/data.h"
#include "nnx/npy.h"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& name) {
  return (fs::path(NNX_FIXTURE_DIR) / "idx" / name).string();
}

TEST(Idx, EveryElementTypeMatchesNumpy) {
  for (const char* name : {"u8", "i8", "i16", "i32", "f32", "f64"}) {
    Tensor got = read_idx(fixture(std::string(name) + ".idx"));
    Tensor ref = read_npy(fixture(std::string(name) + ".npy"));
    EXPECT_EQ(got.shape(), ref.shape()) << name;
    EXPECT_EQ(testing_util::relative_error(got.to(DType::f64), ref.to(DType::f64)), 0.0) << name;
  }
}

TEST(Idx, GzipImagesAndLabelsMakeADataset) {
  Dataset d = load_dataset(fixture("images.idx.gz"), fixture("labels.idx"));
  EXPECT_EQ(d.x.shape(), (Shape{6, 1, 28, 28}));
  EXPECT_EQ(d.y.dtype(), DType::i64);
  EXPECT_LE(testing_util::relative_error(d.x, read_npy(fixture("images_scaled.npy"))), 1e-7);
  EXPECT_EQ(testing_util::relative_error(d.y, read_npy(fixture("labels.npy"))), 0.0);
  std::vector<int64_t> rows = {5, 0, 5};
  Tensor picked = gather_rows(d.y, rows);
  EXPECT_EQ(picked.data<int64_t>()[0], d.y.data<int64_t>()[5]);
  EXPECT_EQ(picked.data<int64_t>()[1], d.y.data<int64_t>()[0]);
}

TEST(Idx, DamagedFilesAreRefusedNamingTheFile) {
  std::string bytes = testing_util::read_file(fixture("f32.idx"));
  auto refused = [](const std::string& data, const std::string& needle) {
    testing_util::expect_error([&] { parse_idx(data.data(), data.size(), "bad.idx"); }, needle,
                               ErrorKind::format);
  };
  refused(bytes.substr(0, bytes.size() - 1), "bad.idx: IDX body of");
  refused(bytes + "x", "bad.idx: IDX body of");
  refused(bytes.substr(0, 6), "bad.idx: truncated IDX header");
  refused("\x01\x00\x08\x01", "bad.idx: not an IDX file");
  refused(std::string("\x00\x00\x07\x01\x00\x00\x00\x01x", 9), "element type 7");
  std::string gz = testing_util::read_file(fixture("images.idx.gz"));
  refused(gz.substr(0, gz.size() / 2), "bad.idx: truncated gzip data");
  // Samples and labels of different lengths.
  testing_util::expect_error([&] { load_dataset(fixture("images.idx.gz"), fixture("u8.idx")); },
                             "u8.idx: 3 targets", ErrorKind::shape);
}

}  // namespace
}  // namespace nnx
