// Tests of .pth reading and writing: the original package's files, bit-exact round trips,
// files PyTorch writes and reads (when a Python with torch is configured), and damaged archives
// and pickles, each of which must end in an nnx::Error that says what is wrong.
#include "importer/pth.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "importer/description.h"
#include "importer/pickle_writer.h"
#include "importer/zip.h"
#include "nnx/error.h"
#include "nnx/npy.h"
#include "test_util.h"

namespace nnx {
namespace {

using testing_util::expect_error;
using testing_util::read_file;
using testing_util::TempDir;
using testing_util::write_file;

namespace fs = std::filesystem;
using namespace std::string_literals;
using py::Object;
using py::ObjectPtr;

const std::string kOriginal = std::string(NNX_SHARED_DIR) + "/fixtures/original-package/";
const std::string kPython = NNX_PYTHON;

// ---- helpers ------------------------------------------------------------------------------

// A fresh folder per test, removed afterwards.
// Runs `fn`, expecting an nnx::Error of `kind` whose message contains `needle`.
struct ZipEntry {
  std::string name, data;
  zip::Writer::Method method = zip::Writer::Method::stored;
};

std::string make_zip(const std::vector<ZipEntry>& entries, bool zip64 = false) {
  std::string out;
  zip::Writer w([&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); }, 64,
                zip64);
  for (const auto& e : entries) w.add(e.name, e.data.data(), e.data.size(), e.method);
  w.finish();
  return out;
}

ObjectPtr parse(const std::string& bytes, const std::string& name = "test.pth") {
  return parse_pth(bytes.data(), bytes.size(), name);
}

// Pickle opcode builders, for crafting data.pkl by hand.
std::string u32(uint32_t v) {
  return std::string(reinterpret_cast<const char*>(&v), 4);
}
std::string str(const std::string& s) {
  return "X" + u32(uint32_t(s.size())) + s;
}
std::string num(int64_t v) {  // LONG1 with all 8 bytes: any int64
  return std::string("\x8a\x08", 2) + std::string(reinterpret_cast<const char*>(&v), 8);
}
std::string tuple(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (int64_t x : v) s += num(x);
  return s + "t";
}
const std::string kProto = "\x80\x02";
const std::string kOrderedDict = "ccollections\nOrderedDict\n)R";

std::string tensor_pickle(const std::string& key, int64_t numel, int64_t offset,
                          const std::vector<int64_t>& size, const std::vector<int64_t>& stride,
                          const std::string& storage_type = "FloatStorage") {
  return "ctorch._utils\n_rebuild_tensor_v2\n(" +
         ("(" + str("storage") + "ctorch\n" + storage_type + "\n" + str(key) + str("cpu") +
          num(numel) + "tQ") +
         num(offset) + tuple(size) + tuple(stride) + "\x89" + kOrderedDict + "tR";
}

// An archive holding `pickle` as data.pkl and `storages` as data/<index>.
std::string pth_archive(const std::string& pickle, const std::vector<std::string>& storages = {},
                        bool zip64 = false) {
  std::vector<ZipEntry> entries{{"top/data.pkl", pickle}};
  for (size_t k = 0; k < storages.size(); ++k) {
    entries.push_back({"top/data/" + std::to_string(k), storages[k]});
  }
  entries.push_back({"top/version", "3\n"});
  return make_zip(entries, zip64);
}

std::string floats(std::initializer_list<float> v) {
  return std::string(reinterpret_cast<const char*>(std::data(v)), v.size() * sizeof(float));
}

// Deep equality: kinds, values, and tensors bit for bit.
void expect_same(const Object& a, const Object& b, const std::string& where = "top") {
  ASSERT_EQ(a.kind, b.kind) << where << ": " << a.kind_name() << " vs " << b.kind_name();
  switch (a.kind) {
    case Object::Kind::none:
      break;
    case Object::Kind::boolean:
      EXPECT_EQ(a.b, b.b) << where;
      break;
    case Object::Kind::integer:
      EXPECT_EQ(a.i, b.i) << where;
      break;
    case Object::Kind::real:
      EXPECT_EQ(std::memcmp(&a.d, &b.d, sizeof a.d), 0) << where << ": " << a.d << " vs " << b.d;
      break;
    case Object::Kind::string:
    case Object::Kind::bytes:
      EXPECT_EQ(a.s, b.s) << where;
      break;
    case Object::Kind::list:
    case Object::Kind::tuple:
      ASSERT_EQ(a.items.size(), b.items.size()) << where;
      for (size_t k = 0; k < a.items.size(); ++k) {
        expect_same(*a.items[k], *b.items[k], where + "[" + std::to_string(k) + "]");
      }
      break;
    case Object::Kind::dict:
    case Object::Kind::ordered_dict:
      ASSERT_EQ(a.entries.size(), b.entries.size()) << where;
      for (size_t k = 0; k < a.entries.size(); ++k) {
        expect_same(*a.entries[k].first, *b.entries[k].first, where + ".key" + std::to_string(k));
        expect_same(*a.entries[k].second, *b.entries[k].second,
                    where + "." +
                        (a.entries[k].first->kind == Object::Kind::string ? a.entries[k].first->s
                                                                          : std::to_string(k)));
      }
      break;
    case Object::Kind::tensor:
      EXPECT_EQ(a.requires_grad, b.requires_grad) << where;
      ASSERT_EQ(a.tensor.str(), b.tensor.str()) << where;
      if (a.tensor.numel() > 0) {
        EXPECT_TRUE(a.tensor.bitwise_equal(b.tensor)) << where;
      }
      break;
  }
}

// A tensor of `shape` whose bytes follow a pattern (distinct per dtype and position).
Tensor patterned(const Shape& shape, DType dtype, int seed = 0) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* p = static_cast<uint8_t*>(t.raw_data());
  for (size_t k = 0; k < t.nbytes(); ++k) p[k] = uint8_t(k * 37 + seed * 11 + 5);
  if (dtype == DType::boolean) {
    for (size_t k = 0; k < t.nbytes(); ++k) p[k] &= 1;
  }
  return t;
}

ObjectPtr S(const std::string& s) {
  return Object::string(s);
}

// ---- the original package's files ------------------------------------------------------------

TEST(Pth, ReadsTheTwoFileFormWeights) {
  ObjectPtr top = read_pth(kOriginal + "tmp.pth");
  ASSERT_EQ(top->kind, Object::Kind::list);
  ASSERT_EQ(top->items.size(), 13u);
  // (keys and shapes per layer, from torch.load)
  const std::vector<std::vector<std::pair<std::string, Shape>>> expected = {
      {{"weight", {5, 3, 3, 3}}, {"bias", {5}}},
      {{"weight", {5}},
       {"bias", {5}},
       {"running_mean", {5}},
       {"running_var", {5}},
       {"num_batches_tracked", {}}},
      {},
      {{"weights", {1, 5, 1, 1}}},
      {},
      {{"weight", {8, 5, 7, 7}}, {"bias", {8}}},
      {{"weight", {8}},
       {"bias", {8}},
       {"running_mean", {8}},
       {"running_var", {8}},
       {"num_batches_tracked", {}}},
      {},
      {},
      {{"weights", {1, 8, 1, 1}}},
      {{"weight", {2, 8, 3, 3}}, {"bias", {2}}},
      {{"weight", {4, 2, 3, 3}}, {"bias", {4}}},
      {{"weights", {1, 4, 1, 1}}},
  };
  for (size_t layer = 0; layer < 13; ++layer) {
    const Object& sd = *top->items[layer];
    ASSERT_EQ(sd.kind, Object::Kind::ordered_dict) << "layer " << layer;
    ASSERT_EQ(sd.entries.size(), expected[layer].size()) << "layer " << layer;
    for (size_t k = 0; k < sd.entries.size(); ++k) {
      EXPECT_EQ(sd.entries[k].first->s, expected[layer][k].first) << "layer " << layer;
      const Object& t = *sd.entries[k].second;
      ASSERT_EQ(t.kind, Object::Kind::tensor);
      EXPECT_EQ(t.tensor.shape(), expected[layer][k].second) << "layer " << layer;
      DType want = expected[layer][k].first == "num_batches_tracked" ? DType::i64 : DType::f32;
      EXPECT_EQ(t.tensor.dtype(), want);
      EXPECT_FALSE(t.requires_grad);
    }
  }
  // Values, against torch.load's.
  Tensor w = top->items[0]->get("weight")->tensor;
  double sum = 0;
  for (int64_t k = 0; k < w.numel(); ++k) sum += w.at_flat(k);
  EXPECT_NEAR(sum, 1.497474013012834, 1e-9);
  EXPECT_FLOAT_EQ(float(w.at_flat(0)), 0.01294633187353611f);
  EXPECT_FLOAT_EQ(float(w.at_flat(2)), 0.09347564727067947f);
  const Tensor& nbt = top->items[1]->get("num_batches_tracked")->tensor;
  EXPECT_EQ(nbt.dim(), 0);
  EXPECT_EQ(nbt.item(), 1.0);
  Tensor last = top->items[12]->get("weights")->tensor;
  EXPECT_FLOAT_EQ(float(last.at_flat(0)), 1.0037599802017212f);
  EXPECT_EQ(last.at_flat(2), 0.0);
}

TEST(Pth, ReadsTheOneFileForm) {
  ObjectPtr top = read_pth(kOriginal + "onefile-two-inputs.pth");
  ASSERT_EQ(top->kind, Object::Kind::dict);
  std::vector<std::string> keys;
  for (const auto& [k, v] : top->entries) keys.push_back(k->s);
  EXPECT_EQ(keys, (std::vector<std::string>{"connections", "outputs", "inputs_channels",
                                            "outputs_channels", "unique_layers_recreators",
                                            "unique_layers_state_dicts"}));
  const Object* connections = top->get("connections");
  ASSERT_EQ(connections->kind, Object::Kind::list);
  ASSERT_EQ(connections->items.size(), 15u);
  const Object& c6 = *connections->items[6];
  ASSERT_EQ(c6.kind, Object::Kind::tuple);
  ASSERT_EQ(c6.items.size(), 4u);
  EXPECT_EQ(c6.items[0]->i, 5);
  EXPECT_EQ(c6.items[1]->i, 0);
  EXPECT_EQ(c6.items[2]->i, 6);
  EXPECT_EQ(c6.items[3]->i, 1);
  const Object* outputs = top->get("outputs");
  ASSERT_EQ(outputs->items.size(), 2u);
  EXPECT_EQ(outputs->items[1]->kind, Object::Kind::tuple);
  const Object* inputs = top->get("inputs_channels");
  ASSERT_EQ(inputs->items.size(), 2u);
  EXPECT_EQ(inputs->items[0]->i, 3);
  EXPECT_EQ(inputs->items[1]->i, 2);

  const Object* recreators = top->get("unique_layers_recreators");
  ASSERT_EQ(recreators->items.size(), 12u);
  const Object& conv = *recreators->items[0];
  ASSERT_EQ(conv.kind, Object::Kind::list);
  ASSERT_EQ(conv.items.size(), 4u);
  EXPECT_EQ(conv.items[1]->s, "Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))");
  EXPECT_EQ(conv.items[2]->kind, Object::Kind::tuple);  // channel lists are tuples
  EXPECT_EQ(conv.items[2]->items[0]->kind, Object::Kind::list);
  EXPECT_EQ(recreators->items[8]->items[1]->s, "Upsample(scale_factor=1.0, mode=nearest)");
  EXPECT_EQ(recreators->items[10]->items[0]->items.size(), 2u);  // a shared Conv2d: two nodes

  const Object* sds = top->get("unique_layers_state_dicts");
  ASSERT_EQ(sds->items.size(), 12u);
  const Object& bn = *sds->items[1];
  ASSERT_EQ(bn.kind, Object::Kind::ordered_dict);
  const Tensor& nbt = bn.get("num_batches_tracked")->tensor;
  EXPECT_EQ(nbt.dim(), 0);
  EXPECT_EQ(nbt.dtype(), DType::i64);
  EXPECT_EQ(nbt.item(), 0.0);
  EXPECT_EQ(sds->items[0]->get("weight")->tensor.shape(), (Shape{4, 3, 3, 3}));
  EXPECT_EQ(sds->items[10]->get("weight")->tensor.shape(), (Shape{8, 8, 3, 3}));
  Tensor w = sds->items[0]->get("weight")->tensor;
  double sum = 0;
  for (int64_t k = 0; k < w.numel(); ++k) sum += w.at_flat(k);
  EXPECT_NEAR(sum, 0.6474807220511138, 1e-9);
  Tensor pruner = sds->items[11]->get("weights")->tensor;
  EXPECT_FLOAT_EQ(float(pruner.at_flat(0)), 1.0177544355392456f);
  EXPECT_FLOAT_EQ(float(pruner.at_flat(7)), 0.9446122050285339f);
}

TEST(Pth, OriginalFilesRoundTripBitExact) {
  TempDir dir;
  for (const char* name : {"tmp.pth", "onefile-two-inputs.pth"}) {
    ObjectPtr original = read_pth(kOriginal + name);
    std::string out = dir.file(name);
    write_pth(out, *original);
    std::string first = read_file(out);
    ObjectPtr again = read_pth(out);
    expect_same(*original, *again, name);
    // Writing what was read reproduces the same bytes: the writer is deterministic.
    write_pth(out, *again);
    EXPECT_TRUE(read_file(out) == first);
  }
}

// ---- round trips --------------------------------------------------------------------------

ObjectPtr everything() {
  std::vector<std::pair<ObjectPtr, ObjectPtr>> tensors;
  const DType dtypes[] = {DType::f32, DType::f16, DType::bf16, DType::f64, DType::i64,
                          DType::i32, DType::i16, DType::i8,   DType::u8,  DType::boolean};
  int seed = 0;
  for (DType dt : dtypes) {
    tensors.emplace_back(S(std::string(dtype_name(dt))),
                         Object::make_tensor(patterned({2, 3, 5}, dt, seed++)));
  }
  Tensor base = patterned({4, 6}, DType::f32, 99);
  std::vector<ObjectPtr> views = {
      Object::make_tensor(base),
      Object::make_tensor(base.slice(0, 1, 3)),                  // offset view
      Object::make_tensor(base.as_strided({6, 4}, {1, 6}, 0)),   // transposed
      Object::make_tensor(base.as_strided({3, 2}, {0, 5}, 2)),   // stride 0
      Object::make_tensor(Tensor::scalar(7, DType::i64)),        // 0-dim
      Object::make_tensor(Tensor::empty({0, 3}, DType::f32)),    // empty
      Object::make_tensor(patterned({3}, DType::f32, 4), true),  // a Parameter
  };
  std::vector<ObjectPtr> many;
  for (int k = 0; k < 2500; ++k) many.push_back(Object::integer(int64_t(k) * 1000003));
  std::vector<std::pair<ObjectPtr, ObjectPtr>> big_dict;
  for (int k = 0; k < 1500; ++k)
    big_dict.emplace_back(S("k" + std::to_string(k)), Object::integer(k));
  std::vector<ObjectPtr> ints;
  for (int64_t v : {int64_t(0),
                    int64_t(1),
                    int64_t(255),
                    int64_t(256),
                    int64_t(65535),
                    int64_t(65536),
                    int64_t(-1),
                    int64_t(-129),
                    int64_t(INT32_MAX),
                    int64_t(INT32_MIN),
                    int64_t(INT32_MAX) + 1,
                    int64_t(INT32_MIN) - 1,
                    int64_t(1) << 40,
                    INT64_MAX,
                    INT64_MIN,
                    int64_t(-128),
                    int64_t(128),
                    int64_t(-32768),
                    int64_t(0x80),
                    int64_t(-0x8000000000)}) {
    ints.push_back(Object::integer(v));
  }
  return Object::dict(
      {
          {S("tensors"), Object::dict(std::move(tensors), true)},
          {S("views"), Object::list(std::move(views))},
          {S("ints"), Object::list(std::move(ints))},
          {S("reals"), Object::tuple({Object::real(1.5), Object::real(-0.0), Object::real(INFINITY),
                                      Object::real(NAN), Object::real(1e-310)})},
          {S("scalars"), Object::tuple({Object::none(), Object::boolean(true),
                                        Object::boolean(false), S(""), S("héllo wörld ✓ 𝄞")})},
          {S("tuples"), Object::list({Object::tuple({}), Object::tuple({Object::integer(1)}),
                                      Object::tuple({Object::integer(1), Object::integer(2)}),
                                      Object::tuple({Object::integer(1), Object::integer(2),
                                                     Object::integer(3)}),
                                      Object::tuple({Object::integer(1), Object::integer(2),
                                                     Object::integer(3), Object::integer(4)})})},
          {S("many"), Object::list(std::move(many))},
          {S("big_dict"), Object::dict(std::move(big_dict))},
          {Object::integer(42), S("int key")},
          {S("empty"), Object::dict({}, true)},
      },
      false);
}

TEST(Pth, RoundTripIsBitExact) {
  TempDir dir;
  ObjectPtr top = everything();
  write_pth(dir.file("all.pth"), *top);
  ObjectPtr back = read_pth(dir.file("all.pth"));
  expect_same(*top, *back);
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"all.pth"});  // no temporary left
}

TEST(Pth, SharedStoragesStayShared) {
  TempDir dir;
  Tensor base = patterned({10}, DType::f32);
  ObjectPtr top = Object::dict({{S("a"), Object::make_tensor(base.slice(0, 0, 4))},
                                {S("b"), Object::make_tensor(base.slice(0, 3, 9))},
                                {S("c"), Object::make_tensor(patterned({2}, DType::f32))}},
                               true);
  write_pth(dir.file("shared.pth"), *top);
  ObjectPtr back = read_pth(dir.file("shared.pth"));
  const Tensor& a = back->get("a")->tensor;
  const Tensor& b = back->get("b")->tensor;
  EXPECT_EQ(a.storage().get(), b.storage().get());
  EXPECT_NE(a.storage().get(), back->get("c")->tensor.storage().get());
  // One storage record, trimmed to the elements viewed: [0, 9) of the 10.
  zip::MappedFile f(dir.file("shared.pth"));
  zip::Reader r(f.data(), f.size(), "shared.pth");
  ASSERT_NE(r.find("shared/data/0"), nullptr);
  EXPECT_EQ(r.find("shared/data/0")->uncompressed_size, 9 * 4u);
  EXPECT_EQ(r.find("shared/data/2"), nullptr);
  expect_same(*top, *back);
  // Writes through one view show through the other, as in PyTorch.
  a.data<float>()[3] = 123.0f;
  EXPECT_EQ(b.data<float>()[0], 123.0f);
}

TEST(Pth, LayoutFollowsTorchSave) {
  TempDir dir;
  write_pth(dir.file("my-model.v2.pth"), *everything());
  std::string bytes = read_file(dir.file("my-model.v2.pth"));
  zip::Reader r(bytes.data(), bytes.size(), "my-model.v2.pth");
  ASSERT_GE(r.entries().size(), 4u);
  EXPECT_EQ(r.entries().front().name, "my-model.v2/data.pkl");
  ASSERT_NE(r.find("my-model.v2/version"), nullptr);
  EXPECT_EQ(r.read(*r.find("my-model.v2/version")), "3\n");
  EXPECT_EQ(r.read(*r.find("my-model.v2/byteorder")), "little");
  for (const zip::Entry& e : r.entries()) {
    EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
    EXPECT_EQ(e.method, 0) << e.name;
  }
  std::string pkl = r.read(r.entries().front());
  EXPECT_EQ(pkl.substr(0, 2), "\x80\x02");
  EXPECT_EQ(pkl.back(), '.');
}

TEST(Pth, WriteIsAtomic) {
  TempDir dir;
  // Unpicklable data: nothing is created.
  ObjectPtr bad = Object::list({S(std::string("\xff\xfe", 2))});
  expect_error([&] { write_pth(dir.file("bad.pth"), *bad); }, "UTF-8", ErrorKind::usage);
  EXPECT_TRUE(dir.listing().empty());
  // An existing file survives a failed write.
  write_pth(dir.file("keep.pth"), *Object::list({Object::integer(1)}));
  std::string before = read_file(dir.file("keep.pth"));
  expect_error([&] { write_pth(dir.file("keep.pth"), *bad); }, "UTF-8", ErrorKind::usage);
  EXPECT_EQ(read_file(dir.file("keep.pth")), before);
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"keep.pth"});
  expect_error([&] { write_pth(dir.file("missing/folder/x.pth"), *bad); }, "", ErrorKind::usage);
  expect_error([&] { write_pth(dir.file("missing/folder/x.pth"), *Object::none()); },
               "missing/folder/x.pth", ErrorKind::io);
}

TEST(Pth, ReadsDeflatedAndZip64Archives) {
  std::string original = read_file(kOriginal + "tmp.pth");
  zip::Reader r(original.data(), original.size(), "tmp.pth");
  std::vector<ZipEntry> deflated, stored;
  for (const zip::Entry& e : r.entries()) {
    deflated.push_back({e.name, r.read(e), zip::Writer::Method::deflated});
    stored.push_back({e.name, r.read(e)});
  }
  ObjectPtr want = parse(original);
  expect_same(*want, *parse(make_zip(deflated)), "deflated");
  std::string z64 = make_zip(stored, /*zip64=*/true);
  expect_same(*want, *parse(z64), "zip64");
  expect_same(*want, *parse(make_zip(deflated, true)), "deflated zip64");
  // The zip64 records are really there: saturated 32-bit fields, a locator before the end.
  uint32_t cd_offset;
  std::memcpy(&cd_offset, z64.data() + z64.size() - 6, 4);
  EXPECT_EQ(cd_offset, 0xffffffffu);
  uint32_t locator;
  std::memcpy(&locator, z64.data() + z64.size() - 22 - 20, 4);
  EXPECT_EQ(locator, 0x07064b50u);
}

TEST(Pth, ReadsCraftedPickles) {
  // Two tensors on one storage key share memory; protocol-4 opcodes; OrderedDict with BUILD.
  std::string pkl = kProto + "\x95" + std::string(8, '\0') + kOrderedDict + "\x94" + "(" +
                    "\x8c\x01"
                    "a" +
                    tensor_pickle("0", 4, 0, {2, 2}, {2, 1}) +
                    "\x8c\x01"
                    "b" +
                    tensor_pickle("0", 4, 1, {3}, {1}) + "u" + "}" + str("_metadata") + "h\x00"s +
                    "sb.";
  ObjectPtr top = parse(pth_archive(pkl, {floats({1, 2, 3, 4})}));
  ASSERT_EQ(top->kind, Object::Kind::ordered_dict);
  const Tensor& a = top->get("a")->tensor;
  const Tensor& b = top->get("b")->tensor;
  EXPECT_EQ(a.storage().get(), b.storage().get());
  EXPECT_EQ(a.at_flat(3), 4.0);
  EXPECT_EQ(b.at_flat(0), 2.0);
  // _rebuild_parameter marks a Parameter; Python's dict semantics for repeated keys.
  std::string param = kProto + "}(" + str("p") + "ctorch._utils\n_rebuild_parameter\n(" +
                      tensor_pickle("0", 4, 0, {4}, {1}) + "\x88" + kOrderedDict + "tR" + str("x") +
                      "K\x01" + str("x") + "K\x02" + "J\x05\x00\x00\x00"s + "N" + "u.";
  top = parse(pth_archive(param, {floats({1, 2, 3, 4})}));
  EXPECT_TRUE(top->get("p")->requires_grad);
  ASSERT_EQ(top->entries.size(), 3u);
  EXPECT_EQ(top->get("x")->i, 2);
  EXPECT_EQ(top->entries[1].first->s, "x");
  EXPECT_EQ(top->entries[2].first->i, 5);
}

// ---- PyTorch interoperability --------------------------------------------------------------

int run_python(const std::string& script, const std::string& args, const TempDir& dir) {
  std::string path = dir.file("check.py");
  write_file(path, script);
  std::string cmd = "'" + kPython + "' '" + path + "' " + args;
  return std::system(cmd.c_str());
}

// Tensors with values a Python script can rebuild: base(n)[k] = k * 0.25 - 1 in the dtype.
Tensor ramp(const Shape& shape, DType dtype) {
  Tensor f = Tensor::empty(shape, DType::f64);
  for (int64_t k = 0; k < f.numel(); ++k) {
    f.data<double>()[k] = dtype == DType::boolean    ? double(k % 3 == 0)
                          : dtype == DType::u8       ? double(k * 3)
                          : dtype_is_floating(dtype) ? k * 0.25 - 1
                                                     : double(k * 7 - 20);
  }
  return f.to(dtype);
}

const char* const kRampPy = R"py(
import sys, torch
def ramp(shape, dtype):
    n = 1
    for s in shape: n *= s
    k = torch.arange(n, dtype=torch.float64)
    if dtype == torch.bool: v = (torch.arange(n) % 3 == 0)
    elif dtype == torch.uint8: v = k * 3
    elif dtype.is_floating_point: v = k * 0.25 - 1
    else: v = k * 7 - 20
    return v.to(dtype).reshape(shape)
)py";

TEST(Pth, PyTorchLoadsOurFiles) {
  if (kPython.empty()) GTEST_SKIP() << "NNX_PYTHON is empty: no Python with torch to load files";
  TempDir dir;
  const std::pair<const char*, DType> dtypes[] = {
      {"float32", DType::f32}, {"float16", DType::f16}, {"bfloat16", DType::bf16},
      {"float64", DType::f64}, {"int64", DType::i64},   {"int32", DType::i32},
      {"int16", DType::i16},   {"int8", DType::i8},     {"uint8", DType::u8},
      {"bool", DType::boolean}};
  std::vector<std::pair<ObjectPtr, ObjectPtr>> sd;
  for (const auto& [name, dt] : dtypes)
    sd.emplace_back(S(name), Object::make_tensor(ramp({3, 4}, dt)));
  Tensor base = ramp({4, 5}, DType::f32);
  ObjectPtr top = Object::dict(
      {{S("sd"), Object::dict(std::move(sd), true)},
       {S("t"), Object::make_tensor(base.as_strided({5, 4}, {1, 5}, 0))},
       {S("row"), Object::make_tensor(base.slice(0, 2, 3))},
       {S("nbt"), Object::make_tensor(Tensor::scalar(17, DType::i64))},
       {S("param"), Object::make_tensor(ramp({2}, DType::f32), true)},
       {S("empty"), Object::make_tensor(Tensor::empty({0, 2}, DType::f32))},
       {S("meta"), Object::list({Object::tuple({Object::integer(3), Object::integer(-70000),
                                                Object::integer(int64_t(1) << 50)}),
                                 S("Conv2d(3, 4)"), Object::none(), Object::boolean(true)})}},
      false);
  std::string path = dir.file("ours.pth");
  write_pth(path, *top);
  // The same content repacked with forced zip64 records, as a multi-gigabyte file would have.
  {
    std::string bytes = read_file(path);
    zip::Reader r(bytes.data(), bytes.size(), path);
    std::vector<ZipEntry> entries;
    for (const zip::Entry& e : r.entries()) {
      entries.push_back({"ours64/" + e.name.substr(e.name.find('/') + 1), r.read(e)});
    }
    write_file(dir.file("ours64.pth"), make_zip(entries, true));
  }
  std::string script = std::string(kRampPy) + R"py(
for path in sys.argv[1:]:
    d = torch.load(path, weights_only=True)
    sd = d['sd']
    assert type(sd).__name__ == 'OrderedDict', type(sd)
    names = ['float32','float16','bfloat16','float64','int64','int32','int16','int8','uint8','bool']
    assert list(sd.keys()) == names, list(sd.keys())
    for name in names:
        dt = getattr(torch, name)
        assert sd[name].dtype == dt, (name, sd[name].dtype)
        assert torch.equal(sd[name], ramp((3, 4), dt)), (name, sd[name])
    base = ramp((4, 5), torch.float32)
    assert torch.equal(d['t'], base.t()), d['t']
    assert d['t'].stride() == (1, 5)
    assert torch.equal(d['row'], base[2:3])
    assert d['row'].storage().data_ptr() == d['t'].storage().data_ptr(), 'storage not shared'
    assert d['nbt'].dim() == 0 and d['nbt'].dtype == torch.int64 and d['nbt'].item() == 17
    assert isinstance(d['param'], torch.nn.Parameter) and torch.equal(d['param'].data, ramp((2,), torch.float32))
    assert d['empty'].shape == (0, 2)
    assert d['meta'] == [(3, -70000, 1 << 50), 'Conv2d(3, 4)', None, True], d['meta']
print('torch.load ok')
)py";
  EXPECT_EQ(run_python(script, "'" + path + "' '" + dir.file("ours64.pth") + "'", dir), 0);

  // Floats are BINFLOAT, which torch 1.13's weights_only unpickler lacks (torch 2 has it).
  std::string fpath = dir.file("floats.pth");
  write_pth(fpath, *Object::dict({{S("eps"), Object::real(1e-5)}, {S("m"), Object::real(-0.1)}}));
  std::string fscript = R"py(
import sys, torch, inspect, torch._weights_only_unpickler as w
wo = 'BINFLOAT' in inspect.getsource(w)
d = torch.load(sys.argv[1], weights_only=wo)
assert d == {'eps': 1e-5, 'm': -0.1}, d
)py";
  EXPECT_EQ(run_python(fscript, "'" + fpath + "'", dir), 0);
}

TEST(Pth, ReadsFilesPyTorchWrites) {
  if (kPython.empty()) GTEST_SKIP() << "NNX_PYTHON is empty: no Python with torch to write files";
  TempDir dir;
  std::string script = std::string(kRampPy) + R"py(
import collections, zipfile, numpy as np
out = sys.argv[1]
base = ramp((4, 5), torch.float32)
d = collections.OrderedDict()
for name in ['float32','float16','bfloat16','float64','int64','int32','int16','int8','uint8','bool']:
    d[name] = ramp((3, 4), getattr(torch, name))
d['t'] = base.t()
d['row'] = base[2]
d['nbt'] = torch.tensor(5)
d['param'] = torch.nn.Parameter(ramp((2,), torch.float32))
top = {'sd': d, 'list': [1, (2, 3), 'x', None, True, 2.5, -(1 << 40)]}
torch.save(top, out + '/p2.pth')
torch.save(top, out + '/p4.pth', pickle_protocol=4)
with zipfile.ZipFile(out + '/p2.pth') as src, zipfile.ZipFile(out + '/deflated.pth', 'w', zipfile.ZIP_DEFLATED) as dst:
    for info in src.infolist():
        dst.writestr(info.filename, src.read(info.filename))
for name, t in d.items():
    np.save(out + '/' + name + '.npy', (t.float() if t.dtype == torch.bfloat16 else t.detach()).numpy())
)py";
  ASSERT_EQ(run_python(script, "'" + dir.file("") + "'", dir), 0);
  for (const char* file : {"p2.pth", "p4.pth", "deflated.pth"}) {
    SCOPED_TRACE(file);
    ObjectPtr top = read_pth(dir.file(file));
    const Object* sd = top->get("sd");
    ASSERT_NE(sd, nullptr);
    ASSERT_EQ(sd->kind, Object::Kind::ordered_dict);
    for (const auto& [k, v] : sd->entries) {
      Tensor ref = read_npy(dir.file(k->s + ".npy"));
      Tensor got = v->tensor;
      if (got.dtype() == DType::bf16) got = got.to(DType::f32);
      EXPECT_TRUE(got.bitwise_equal(ref)) << k->s << ": " << got.str() << " vs " << ref.str();
    }
    EXPECT_TRUE(sd->get("param")->requires_grad);
    EXPECT_EQ(sd->get("t")->tensor.strides(), (Shape{1, 5}));
    EXPECT_EQ(sd->get("t")->tensor.storage().get(), sd->get("row")->tensor.storage().get());
    EXPECT_EQ(sd->get("row")->tensor.offset(), 10);
    const Object* list = top->get("list");
    ASSERT_EQ(list->items.size(), 7u);
    EXPECT_EQ(list->items[1]->kind, Object::Kind::tuple);
    EXPECT_EQ(list->items[2]->s, "x");
    EXPECT_EQ(list->items[5]->d, 2.5);
    EXPECT_EQ(list->items[6]->i, -(int64_t(1) << 40));
  }
}

// ---- damaged files ------------------------------------------------------------------------

// Parsing must either succeed or throw nnx::Error: anything else (a crash, another exception)
// fails the test.
bool parses(const std::string& bytes) {
  try {
    parse(bytes);
    return true;
  } catch (const Error&) {
    return false;
  }
}

TEST(PthDamage, TruncatedAnywhere) {
  TempDir dir;
  write_pth(dir.file("t.pth"), *everything());
  for (const std::string& path : {dir.file("t.pth"), kOriginal + "tmp.pth"}) {
    std::string bytes = read_file(path);
    for (size_t cut = 0; cut < bytes.size(); cut += 97) {
      SCOPED_TRACE("cut at " + std::to_string(cut));
      EXPECT_THROW(parse(bytes.substr(0, cut)), Error);
    }
  }
  std::string bytes = read_file(kOriginal + "tmp.pth");
  expect_error([&] { parse(bytes.substr(0, 10)); }, "not a zip archive");
  expect_error([&] { parse(bytes.substr(0, bytes.size() - 30)); }, "truncated");
  // Cut inside the central directory, the end record kept: the directory no longer fits.
  std::string cut = bytes.substr(0, 13800) + bytes.substr(bytes.size() - 22);
  expect_error([&] { parse(cut); }, "central directory at offset 13842 past end of file");
}

TEST(PthDamage, CorruptedBytesNeverCrash) {
  std::string bytes = read_file(kOriginal + "onefile-two-inputs.pth");
  for (size_t at = 0; at < bytes.size(); at += 17) {
    for (uint8_t x : {0x01, 0x80, 0xff}) {
      std::string damaged = bytes;
      damaged[at] = char(damaged[at] ^ x);
      parses(damaged);
    }
  }
}

TEST(PthDamage, CorruptedStoredDataFailsTheCrc) {
  std::string bytes = read_file(kOriginal + "tmp.pth");
  zip::Reader r(bytes.data(), bytes.size(), "tmp.pth");
  const zip::Entry* e = r.find("archive/data/0");
  ASSERT_NE(e, nullptr);
  bytes[e->data_offset + 5] ^= 0x10;
  expect_error([&] { parse(bytes, "tmp.pth"); }, "tmp.pth: CRC mismatch in 'archive/data/0'");
}

TEST(PthDamage, BadDeflatedData) {
  std::string payload(5000, 'a');
  for (size_t k = 0; k < payload.size(); ++k) payload[k] = char(k * k % 251);
  std::string z = make_zip({{"top/data.pkl", payload, zip::Writer::Method::deflated}});
  zip::Reader r(z.data(), z.size(), "z");
  const zip::Entry e = r.entries()[0];
  EXPECT_EQ(r.read(e), payload);
  std::string damaged = z;
  for (size_t k = 4; k < 40; ++k) damaged[e.data_offset + k] = char(0xff);
  zip::Reader rd(damaged.data(), damaged.size(), "z");
  expect_error([&] { rd.read(rd.entries()[0]); }, "deflated entry 'top/data.pkl'");
  // The whole stream replaced by garbage.
  std::string garbage = z;
  for (size_t k = 0; k < e.compressed_size; ++k) garbage[e.data_offset + k] = char(0xfe - k % 3);
  expect_error([&] { parse(garbage, "g.pth"); }, "g.pth: deflated entry 'top/data.pkl'");
  // A stream cut short: the declared compressed size is smaller than the real one.
  std::string shortened = z;
  zip::Reader rs(shortened.data(), shortened.size(), "z");
  uint64_t cd = rs.entries()[0].data_offset + rs.entries()[0].compressed_size;
  uint32_t csize = uint32_t(e.compressed_size / 2);
  std::memcpy(&shortened[cd + 20], &csize, 4);
  expect_error([&] { parse(shortened); }, "ends before its deflate stream does");
}

TEST(PthDamage, Zip64Damage) {
  std::string z = pth_archive(kProto + "N.", {}, /*zip64=*/true);
  EXPECT_EQ(parse(z)->kind, Object::Kind::none);
  // The zip64 end record's directory offset pushed past the end of the file.
  size_t rec = z.size() - 22 - 20 - 56;
  uint64_t far = 1ull << 40;
  std::string bad = z;
  std::memcpy(&bad[rec + 48], &far, 8);
  expect_error([&] { parse(bad); }, "central directory at offset 1099511627776 past end of file");
  // The locator pointing nowhere.
  bad = z;
  std::memcpy(&bad[z.size() - 22 - 20 + 8], &far, 8);
  expect_error([&] { parse(bad); }, "zip64 end-of-central-directory record at offset");
  // A zip64 extra field too short for the values it must hold.
  bad = z;
  size_t cd = z.find(std::string("PK\x01\x02", 4));
  ASSERT_NE(cd, std::string::npos);
  uint16_t len = 8;
  size_t name_len = 12;  // "top/data.pkl"
  std::memcpy(&bad[cd + 46 + name_len + 2], &len, 2);
  expect_error([&] { parse(bad); },
               "zip64 extra field of entry 'top/data.pkl' has no room for its compressed size");
}

std::string crafted(const std::string& pickle, const std::vector<std::string>& storages = {}) {
  return pth_archive(pickle, storages);
}

TEST(PthDamage, UnknownOpcode) {
  expect_error([&] { parse(crafted(kProto + "N\xff.")); },
               "test.pth (top/data.pkl): unknown pickle opcode 0xff at offset 3");
  expect_error([&] { parse(crafted(kProto + "\x8f.")); }, "EMPTY_SET (0x8f) is not supported");
}

TEST(PthDamage, GlobalsOutsideTheAllowList) {
  expect_error([&] { parse(crafted(kProto + "cos\nsystem\n(S'ls'\ntR.")); },
               "global 'os.system' is not allowed");
  expect_error([&] { parse(crafted(kProto + str("builtins") + str("eval") + "\x93.")); },
               "global 'builtins.eval' is not allowed");
  expect_error([&] { parse(crafted(kProto + "ctorch\nHalfTensor\n.")); },
               "global 'torch.HalfTensor' is not allowed");
  // Allowed globals are still data only: calling a storage type is refused.
  expect_error([&] { parse(crafted(kProto + "ctorch\nFloatStorage\n)R.")); },
               "storage type cannot be called");
  expect_error([&] { parse(crafted(kProto + "ctorch\nFloatStorage\n.")); }, "appears as a value");
}

TEST(PthDamage, StorageProblems) {
  std::string data = floats({1, 2, 3, 4, 5, 6});
  // Offset past the end of the storage.
  expect_error([&] { parse(crafted(kProto + tensor_pickle("0", 6, 5, {2}, {1}) + ".", {data})); },
               "storage offset 5 with size [2] and stride [1] needs 7 elements, but the storage "
               "has 6");
  expect_error([&] { parse(crafted(kProto + tensor_pickle("0", 6, 7, {0}, {1}) + ".", {data})); },
               "needs 7 elements");
  expect_error(
      [&] {
        parse(crafted(kProto + tensor_pickle("0", 6, 0, {3, 3}, {3, 1}) + ".", {data}));
      },
      "needs 9 elements");
  // Element counts and extents that overflow int64.
  expect_error(
      [&] {
        parse(crafted(kProto + tensor_pickle("0", 6, 0, {int64_t(1) << 62, 4}, {0, 0}) + ".",
                      {data}));
      },
      "overflows int64");
  expect_error(
      [&] {
        parse(crafted(kProto + tensor_pickle("0", 6, 0, {3, 3}, {INT64_MAX / 2, 1}) + ".", {data}));
      },
      "overflows int64");
  expect_error(
      [&] { parse(crafted(kProto + tensor_pickle("0", 6, INT64_MAX, {1}, {1}) + ".", {data})); },
      "storage offset 9223372036854775807 plus the extent of size [1] overflows");
  expect_error([&] { parse(crafted(kProto + tensor_pickle("0", 6, 0, {-1}, {1}) + ".", {data})); },
               "negative size or stride");
  expect_error(
      [&] {
        parse(crafted(kProto + tensor_pickle("0", 6, 0, {2}, {1, 1}) + ".", {data}));
      },
      "size has 1 dimensions but stride has 2");
  // The entry's size disagrees with the declared element count.
  expect_error([&] { parse(crafted(kProto + tensor_pickle("0", 7, 0, {2}, {1}) + ".", {data})); },
               "'top/data/0' holds 24 bytes, but the pickle declares it as 7 float32 elements");
  expect_error(
      [&] { parse(crafted(kProto + tensor_pickle("0", INT64_MAX, 0, {2}, {1}) + ".", {data})); },
      "holds 24 bytes");
  // A storage key without an entry.
  expect_error([&] { parse(crafted(kProto + tensor_pickle("5", 6, 0, {2}, {1}) + ".", {data})); },
               "refers to storage '5' but the archive has no 'top/data/5'");
  // The same key with two types.
  expect_error(
      [&] {
        parse(crafted(kProto + "(" + tensor_pickle("0", 6, 0, {2}, {1}) +
                          tensor_pickle("0", 3, 0, {2}, {1}, "DoubleStorage") + "t.",
                      {data}));
      },
      "storage '0' is used as float64[3] after being used as float32[6]");
  // Bools are normalised to 0/1.
  ObjectPtr b = parse(crafted(kProto + tensor_pickle("0", 3, 0, {3}, {1}, "BoolStorage") + ".",
                              {std::string("\x00\x07\x01", 3)}));
  EXPECT_EQ(b->tensor.at_flat(1), 1.0);
  EXPECT_EQ(static_cast<const uint8_t*>(b->tensor.raw_data())[1], 1);
  // Persistent ids other than storages.
  expect_error([&] { parse(crafted(kProto + str("x") + "Q.")); }, "persistent id must be a tuple");
  expect_error([&] { parse(crafted(kProto + "Pfoo\n.")); }, "persistent id must be a tuple");
}

TEST(PthDamage, PickleStructureErrors) {
  auto err = [&](const std::string& pkl, const std::string& needle) {
    SCOPED_TRACE(needle);
    expect_error([&] { parse(crafted(kProto + pkl)); }, needle);
  };
  err("a.", "pickle stack underflow (APPEND at offset 2)");
  err("N(a.", "pickle stack underflow");
  err("h\x05.", "memo key 5 was never stored");
  err("X\xff\xff\xff\x7f"
      "abc.",
      "truncated pickle: BINUNICODE at offset 2 needs 2147483647 more bytes");
  err("\x8d\xff\xff\xff\xff\xff\xff\xff\xff.", "needs 18446744073709551615 more bytes");
  err("N", "without a STOP opcode");
  err("", "without a STOP opcode");
  err("\x8b\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00."s, "does not fit in 64 bits");
  err("\x8b\xff\xff\xff\xff.", "negative LONG4 length");
  err("Iabc\n.", "bad INT 'abc'");
  err("I99999999999999999999\n.", "bad INT");
  err("]N}s.", "SETITEM needs a dict");
  err("}(Nu.", "SETITEMS with an odd number of items (1)");
  err("}]]s.", "unhashable dict key of type list");
  err("]Nb.", "BUILD on a list");
  err("N)R.", "REDUCE cannot call None");
  err("ccollections\nOrderedDict\nNR.", "REDUCE needs an argument tuple");
  err("]q\x00h\x00"
      "a."s,
      "contains itself");
  err("(\x80\x09.", "unsupported pickle protocol 9");
  err("ctorch._utils\n_rebuild_tensor_v2\n)R.",
      "_rebuild_tensor_v2 takes 6 or 7 arguments, found 0");
  err("ctorch._utils\n_rebuild_tensor_v2\n(NNNNNNtR.",
      "the first argument must be a storage, found None");
  err("ctorch._utils\n_rebuild_parameter\n(NNNtR.", "_rebuild_parameter takes (tensor");
  err("cos\nsystem", "truncated pickle: no end of line");
  // parses() rather than expect_error: this one is valid (POP of an empty mark drops the mark).
  EXPECT_TRUE(parses(crafted(kProto + "(0N.")));
  EXPECT_FALSE(parses(crafted(kProto + "0.")));
}

TEST(PthDamage, DeepAndWideStructuresAreSafe) {
  // 200000 nested lists (two bytes a level): an error, not a stack overflow, even when the
  // chain is dropped mid-pickle.
  const size_t depth = 200000;
  std::string deep = kProto + std::string(depth, ']') + std::string(depth - 1, 'a');
  expect_error([&] { parse(crafted(deep + ".")); }, "nested deeper than 1000");
  EXPECT_EQ(parse(crafted(deep + "0N."))->kind, Object::Kind::none);
  // Deeply nested tuples as a dict key.
  std::string tuples = kProto + "}N" + std::string(500, '\x85') + "Ns.";
  expect_error([&] { parse(crafted(tuples)); }, "nested 500 deep");
  // Objects shared many times (a DAG of 2^40 paths) are converted once each.
  std::string dag = kProto + "N";
  for (int k = 0; k < 40; ++k) dag += "2\x86";
  EXPECT_EQ(parse(crafted(dag + "."))->kind, Object::Kind::tuple);
  // The same large string used as a key a hundred thousand times.
  std::string keys = kProto + "}" + str(std::string(100000, 'k')) + "q\x01" + "0(";
  for (int k = 0; k < 100000; ++k) keys += "h\x01N";
  EXPECT_EQ(parse(crafted(keys + "u."))->entries.size(), 1u);
}

TEST(PthDamage, SharedObjectsInADescriptionDoNotExpand) {
  // Found by review, confirmed with fuzz_pth (a timeout): a one-file model whose 'layers' holds two
  // references to one list, which holds two references to the next, 40 levels deep: 2^40 paths in
  // 419 bytes of pickle, which description_from_pickle copied path by path, forever.
  std::string dag = kProto + "}" + str("layers") + "]q" + std::string(1, '\0');
  for (int k = 1; k <= 40; ++k) {
    std::string prev(1, char(k - 1));
    dag += "0](h" + prev + "h" + prev + "eq" + std::string(1, char(k));
  }
  ObjectPtr top = parse(pth_archive(dag + "s."));
  std::string msg;
  try {
    description_from_pickle(*top, "dag.pth");
  } catch (const Error& e) {
    msg = e.message();
  }
  EXPECT_EQ(msg.rfind("dag.pth: 'layers'[0][0][0]", 0), 0u) << msg;
  EXPECT_NE(msg.find(": the description holds more than 1048576 values (counting each reference "
                     "to a shared object)"),
            std::string::npos)
      << msg;
  // Sharing within the bound converts as copies.
  std::string small = kProto + "}" + str("layers") + "](" + str("ReLU()") + "q\x01h\x01" + "es.";
  json::Value d = description_from_pickle(*parse(pth_archive(small)), "small.pth");
  EXPECT_EQ(json::dump(d, -1), "{\"layers\": [\"ReLU()\", \"ReLU()\"]}");
}

TEST(PthDamage, ArchiveShapeProblems) {
  expect_error([&] { parse(make_zip({})); }, "the zip archive is empty");
  expect_error([&] { parse(make_zip({{"data.pkl", kProto + "N."}})); }, "not inside a top folder");
  expect_error(
      [&] {
        parse(make_zip({{"a/version", "3\n"}, {"a/data.pkl.bak", "x"}}));
      },
      "no 'a/data.pkl' in the archive");
  expect_error(
      [&] {
        parse(make_zip({{"a/data.pkl", kProto + "N."}, {"a/byteorder", "middle"}}));
      },
      "'a/byteorder' says 'middle'");
  expect_error([&] { parse(kProto + "\x8a\x0a" + std::string(10, '\x11') + "."); },
               "legacy (pre-1.6, non-zip) torch.save file");
  expect_error([&] { read_pth("/nonexistent/x.pth"); }, "cannot open '/nonexistent/x.pth'",
               ErrorKind::io);
  // Big-endian archives are byte-swapped.
  int32_t be = int32_t(__builtin_bswap32(uint32_t(258)));
  ObjectPtr t =
      parse(make_zip({{"a/data.pkl", kProto + tensor_pickle("0", 1, 0, {}, {}, "IntStorage") + "."},
                      {"a/byteorder", "big"},
                      {"a/data/0", std::string(reinterpret_cast<const char*>(&be), 4)}}));
  EXPECT_EQ(t->tensor.item(), 258.0);
}

TEST(PthDamage, DuplicateAndMismatchedEntries) {
  std::string z = make_zip({{"a/data.pkl", kProto + "N."}, {"a/x", "1"}});
  // Rename the second entry in the central directory only.
  std::string bad = z;
  size_t cd = bad.rfind("a/x");
  bad[cd + 2] = 'y';
  expect_error([&] { parse(bad); }, "names 'a/x' but the central directory names 'a/y'");
  // Two entries of the same name.
  std::string dup = make_zip({{"a/data.pkl", kProto + "N."}, {"a/data.pkl", kProto + "N."}});
  expect_error([&] { parse(dup); }, "entry 'a/data.pkl' appears twice");
}

}  // namespace
}  // namespace nnx
