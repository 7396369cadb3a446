// Weights used in place from a mapped file: which entries are viewed (stored, aligned, not bool,
// little-endian) and which copied (deflated, misaligned, bool), checks that still hold in place
// (CRC, bounds), the read() fallback, and models that outlive every other reference to the file.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <optional>
#include <vector>

#include "importer/pth.h"
#include "importer/safetensors.h"
#include "importer/zip.h"
#include "nnx/nnx.hpp"
#include "runtime/mapped_file.h"
#include "test_util.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;
using py::Object;
using py::ObjectPtr;
using testing_util::expect_error;
using testing_util::read_file;
using testing_util::TempDir;
using testing_util::write_file;

Tensor patterned(const Shape& shape, DType dtype, int seed = 0) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* p = static_cast<uint8_t*>(t.raw_data());
  for (size_t k = 0; k < t.nbytes(); ++k) p[k] = uint8_t(k * 37 + seed * 11 + 5);
  if (dtype == DType::boolean)
    for (size_t k = 0; k < t.nbytes(); ++k) p[k] &= 1;
  return t;
}

bool inside(const Tensor& t, const MappedFile& file) {
  auto* p = static_cast<const char*>(t.raw_data());
  auto* base = static_cast<const char*>(file.data());
  return p >= base && p < base + file.size();
}

ObjectPtr sample() {
  return Object::dict({{Object::string("w"), Object::make_tensor(patterned({4, 6}, DType::f32))},
                       {Object::string("h"), Object::make_tensor(patterned({5}, DType::f16, 1))},
                       {Object::string("n"), Object::make_tensor(Tensor::scalar(7, DType::i64))},
                       {Object::string("m"), Object::make_tensor(patterned({3}, DType::boolean))}},
                      true);
}

// The same archive with every entry re-written by `rewrite` (method, alignment).
std::string rezip(const std::string& bytes, zip::Writer::Method data_method, size_t alignment) {
  zip::Reader in(bytes.data(), bytes.size(), "in");
  std::string out;
  zip::Writer w([&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); },
                alignment);
  for (const zip::Entry& e : in.entries()) {
    std::string data = in.read(e);
    bool is_data = e.name.find("/data/") != std::string::npos;
    w.add(e.name, data.data(), data.size(), is_data ? data_method : zip::Writer::Method::stored);
  }
  w.finish();
  return out;
}

void expect_same_values(const Object& a, const Object& b) {
  for (const char* key : {"w", "h", "n", "m"})
    EXPECT_TRUE(a.get(key)->tensor.bitwise_equal(b.get(key)->tensor)) << key;
}

TEST(MappedWeights, StoredAlignedPthEntriesAreViewedInPlace) {
  TempDir dir;
  write_pth(dir.file("s.pth"), *sample());
  auto file = MappedFile::open(dir.file("s.pth"));
  EXPECT_TRUE(file->mapped());
  ObjectPtr top = parse_pth(file->data(), file->size(), "s.pth", file);
  EXPECT_TRUE(inside(top->get("w")->tensor, *file));
  EXPECT_TRUE(inside(top->get("h")->tensor, *file));
  EXPECT_TRUE(inside(top->get("n")->tensor, *file));
  EXPECT_FALSE(inside(top->get("m")->tensor, *file));  // bools are normalised: a copy
  EXPECT_EQ(reinterpret_cast<uintptr_t>(top->get("w")->tensor.raw_data()) % 64, 0u);
  expect_same_values(*top, *sample());
  // Without an owner, the same bytes are copied.
  ObjectPtr copied = parse_pth(file->data(), file->size(), "s.pth");
  EXPECT_FALSE(inside(copied->get("w")->tensor, *file));
  expect_same_values(*copied, *top);
}

TEST(MappedWeights, DeflatedAndMisalignedPthEntriesAreCopied) {
  TempDir dir;
  write_pth(dir.file("s.pth"), *sample());
  std::string bytes = read_file(dir.file("s.pth"));
  for (auto [method, alignment] : {std::pair{zip::Writer::Method::deflated, size_t(64)},
                                   std::pair{zip::Writer::Method::stored, size_t(1)}}) {
    write_file(dir.file("r.pth"), rezip(bytes, method, alignment));
    auto file = MappedFile::open(dir.file("r.pth"));
    ObjectPtr top = parse_pth(file->data(), file->size(), "r.pth", file);
    expect_same_values(*top, *sample());
    for (const char* key : {"w", "h", "n"}) {
      const Tensor& t = top->get(key)->tensor;
      if (method == zip::Writer::Method::deflated) {
        EXPECT_FALSE(inside(t, *file)) << key;
      } else if (inside(t, *file)) {  // stored: in place only where aligned for the dtype
        EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % t.element_size(), 0u) << key;
      }
    }
  }
}

TEST(MappedWeights, InPlaceEntriesStillHaveTheirCrcChecked) {
  TempDir dir;
  write_pth(dir.file("s.pth"), *sample());
  std::string bytes = read_file(dir.file("s.pth"));
  zip::Reader r(bytes.data(), bytes.size(), "s.pth");
  const zip::Entry* w = nullptr;
  for (const zip::Entry& e : r.entries())
    if (e.name.find("/data/") != std::string::npos && e.uncompressed_size == 4 * 6 * 4) w = &e;
  ASSERT_NE(w, nullptr);
  bytes[w->data_offset + 5] ^= 0x40;
  write_file(dir.file("bad.pth"), bytes);
  expect_error([&] { read_pth(dir.file("bad.pth"), true); }, "CRC mismatch");
  expect_error([&] { read_pth(dir.file("bad.pth"), false); }, "CRC mismatch");
}

TEST(MappedWeights, TruncatedFilesAreRefusedInPlaceToo) {
  TempDir dir;
  write_pth(dir.file("s.pth"), *sample());
  std::string bytes = read_file(dir.file("s.pth"));
  for (size_t keep : {bytes.size() - 1, bytes.size() / 2, size_t(10)}) {
    write_file(dir.file("t.pth"), bytes.substr(0, keep));
    EXPECT_THROW(read_pth(dir.file("t.pth"), true), Error) << keep;
  }
}

TEST(MappedWeights, SafetensorsAlignedTensorsAreViewedInPlace) {
  TempDir dir;
  // 3 bytes of u8 first: the f32 after it starts misaligned and must be copied.
  NamedTensors tensors = {{"a", patterned({8}, DType::f32)},
                          {"b", patterned({3}, DType::u8, 2)},
                          {"c", patterned({5}, DType::f32, 3)},
                          {"d", patterned({2}, DType::boolean)}};
  write_safetensors(dir.file("t.safetensors"), tensors);
  auto file = MappedFile::open(dir.file("t.safetensors"));
  NamedTensors back = parse_safetensors(file->data(), file->size(), "t.safetensors", file);
  ASSERT_EQ(back.size(), 4u);
  for (size_t i = 0; i < back.size(); ++i)
    EXPECT_TRUE(back[i].second.bitwise_equal(tensors[i].second)) << back[i].first;
  EXPECT_TRUE(inside(back[0].second, *file));
  EXPECT_TRUE(inside(back[1].second, *file));
  EXPECT_FALSE(inside(back[2].second, *file));
  EXPECT_FALSE(inside(back[3].second, *file));
  NamedTensors copied = read_safetensors(dir.file("t.safetensors"));
  EXPECT_TRUE(copied[0].second.bitwise_equal(back[0].second));
}

TEST(MappedWeights, ReadFallbackHoldsTheSameBytes) {
  TempDir dir;
  write_pth(dir.file("s.pth"), *sample());
  auto mapped = MappedFile::open(dir.file("s.pth"));
  auto read = MappedFile::open(dir.file("s.pth"), MappedFile::Mode::read);
  EXPECT_TRUE(mapped->mapped());
  EXPECT_FALSE(read->mapped());
  ASSERT_EQ(read->size(), mapped->size());
  EXPECT_EQ(std::memcmp(read->data(), mapped->data(), read->size()), 0);
  ObjectPtr top = parse_pth(read->data(), read->size(), "s.pth", read);
  EXPECT_TRUE(inside(top->get("w")->tensor, *read));
  expect_same_values(*top, *sample());
  write_file(dir.file("empty"), "");
  EXPECT_EQ(MappedFile::open(dir.file("empty"))->size(), 0u);
  expect_error([&] { MappedFile::open(dir.file("nope")); }, "cannot open", ErrorKind::io);
  expect_error([&] { MappedFile::open(fs::path(dir.file("x")).parent_path().string()); },
               "not a regular file", ErrorKind::io);
}

// Pages handed back from a mapped file read back the file's bytes; bytes outside every mapped
// file (heap memory, a file read into memory) are never touched.
TEST(MappedWeights, ReleasedPagesReadBackTheFile) {
  TempDir dir;
  const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  std::string bytes(5 * page + 123, '\0');
  for (size_t k = 0; k < bytes.size(); ++k) bytes[k] = char(k * 131 + 7);
  write_file(dir.file("b.bin"), bytes);
  auto mapped = MappedFile::open(dir.file("b.bin"));
  ASSERT_TRUE(mapped->mapped());
  const auto* base = static_cast<const char*>(mapped->data());
  ASSERT_EQ(std::memcmp(base, bytes.data(), bytes.size()), 0);  // every page resident
  // Whole pages inside the range only: from offset 100 over 3 pages and a bit, 2 whole pages.
  EXPECT_EQ(release_mapped_pages(base + 100, 3 * page + 50), 2 * page);
  EXPECT_EQ(release_mapped_pages(base + 10, 100), 0u);          // no whole page
  EXPECT_EQ(release_mapped_pages(base + page, 10 * page), 0u);  // past the mapping's end
  EXPECT_EQ(std::memcmp(base, bytes.data(), bytes.size()), 0);
  EXPECT_EQ(release_mapped_pages(base, mapped->size()), 5 * page);
  EXPECT_EQ(std::memcmp(base, bytes.data(), bytes.size()), 0);

  std::vector<char> heap(bytes.begin(), bytes.end());
  EXPECT_EQ(release_mapped_pages(heap.data(), heap.size()), 0u);
  EXPECT_EQ(std::memcmp(heap.data(), bytes.data(), bytes.size()), 0);
  auto read = MappedFile::open(dir.file("b.bin"), MappedFile::Mode::read);
  EXPECT_EQ(release_mapped_pages(read->data(), read->size()), 0u);
  EXPECT_EQ(std::memcmp(read->data(), bytes.data(), bytes.size()), 0);
  const void* gone = mapped->data();
  mapped.reset();  // unmapped: no longer a mapping to release from
  EXPECT_EQ(release_mapped_pages(gone, page), 0u);
}

// A mapped model keeps its file's mapping: it runs after the file is gone from the folder and
// every other reference is dropped, with the outputs of a model that copied its weights.
TEST(MappedWeights, ModelOutlivesItsFileAndMatchesTheCopiedOne) {
  TempDir dir;
  std::string shared = std::string(NNX_SHARED_DIR) + "/fixtures/original-package/";
  fs::copy_file(shared + "tmp.json", dir.file("m.json"));
  fs::copy_file(shared + "tmp.pth", dir.file("m.pth"));
  Model copied = load(dir.file("m.json"), dir.file("m.pth"), {.map_weights = false});
  std::optional<Model> mapped = load(dir.file("m.json"), dir.file("m.pth"));
  Executor net(*mapped);
  mapped.reset();
  fs::remove(dir.file("m.pth"));
  fs::remove(dir.file("m.json"));
  Tensor input = patterned({1, 3, 16, 16}, DType::u8).to(DType::f32);
  std::vector<Tensor> a = net(input), b = Executor(copied)(input);
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) EXPECT_TRUE(a[k].bitwise_equal(b[k]));
}

}  // namespace
}  // namespace nnx
