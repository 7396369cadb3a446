// Helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "nnx/error.h"
#include "nnx/tensor.h"

namespace nnx::testing_util {

// A float32 tensor of values uniform in [lo, hi), the same for the same seed.
inline Tensor uniform_tensor(const Shape& shape, uint64_t seed, float lo = -2.f, float hi = 2.f) {
  Tensor t = Tensor::empty(shape);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

// The project's agreement measure: max|got - ref| / max(1, max|ref|); NaN/shape mismatch -> inf.
inline double relative_error(const Tensor& got, const Tensor& ref) {
  if (got.shape() != ref.shape()) return INFINITY;
  Tensor g = got.to(DType::f64).contiguous(), r = ref.to(DType::f64).contiguous();
  const double* gp = g.data<double>();
  const double* rp = r.data<double>();
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0; i < g.numel(); ++i) {
    if (std::isnan(gp[i]) != std::isnan(rp[i])) return INFINITY;
    if (std::isnan(gp[i])) continue;
    if (std::isinf(gp[i]) || std::isinf(rp[i])) {
      if (gp[i] != rp[i]) return INFINITY;
      continue;
    }
    max_diff = std::max(max_diff, std::abs(gp[i] - rp[i]));
    max_ref = std::max(max_ref, std::abs(rp[i]));
  }
  return max_diff / std::max(1.0, max_ref);
}

// A fresh folder per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("nnx_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" +
             std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  // The names in the folder, sorted: what a failed write must not have left behind.
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(path_))
      names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::filesystem::path path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// What a command line did: exit status (128 + signal when killed), stdout, stderr.
struct ShellResult {
  int status = -1;
  std::string out, err;
};

// Runs `command` with /bin/sh, capturing stdout and stderr through files in `scratch` (a
// folder; default: one per process under the temp folder).
inline ShellResult run_shell(const std::string& command, std::filesystem::path scratch = {}) {
  if (scratch.empty())
    scratch = std::filesystem::temp_directory_path() / ("nnx_sh_" + std::to_string(::getpid()));
  std::filesystem::create_directories(scratch);
  std::string out = (scratch / "stdout").string(), err = (scratch / "stderr").string();
  int raw = std::system((command + " >" + out + " 2>" + err).c_str());
  ShellResult r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  r.out = read_file(out);
  r.err = read_file(err);
  return r;
}

// Expects fn to throw nnx::Error of `kind` whose message contains `needle`.
inline void expect_error(const std::function<void()>& fn, const std::string& needle,
                         ErrorKind kind = ErrorKind::format) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing \"" << needle << "\"";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find(needle), std::string::npos)
        << "message: " << e.message() << "\nexpected to contain: " << needle;
    EXPECT_EQ(e.kind(), kind) << e.message();
  }
}

}  // namespace nnx::testing_util
