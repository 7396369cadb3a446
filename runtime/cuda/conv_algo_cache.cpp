// The process-wide cuDNN algorithm cache and its text file (see conv_algo_cache.h). The file is
// a header line, then one "KEY ALGO" line per searched problem, appended as they are found.
#include "runtime/cuda/conv_algo_cache.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

namespace nnx::cuda {
namespace {

constexpr std::string_view kFileHeader = "# nnx cuDNN convolution algorithms v1";

}  // namespace

bool conv_search_enabled() {
  const char* v = std::getenv("NNX_CUDNN_SEARCH");
  return v != nullptr && std::string_view(v) == "1";
}

std::string conv_cache_path() {
  const char* v = std::getenv("NNX_CUDNN_CACHE");
  return v != nullptr ? std::string(v) : std::string();
}

ConvAlgoCache& ConvAlgoCache::instance() {
  static ConvAlgoCache cache;
  return cache;
}

int ConvAlgoCache::get(const std::string& key, bool persist, const std::string& file,
                       const std::function<int()>& choose) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (persist && !file.empty()) load_file_locked(file);
    if (auto it = algos_.find(key); it != algos_.end()) {
      ++stats_.memory_hits;
      return it->second;
    }
  }
  const int algo = choose();
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.chosen;
  auto [it, inserted] = algos_.emplace(key, algo);
  if (inserted && persist && !file.empty()) append_to_file_locked(file, key, algo);
  return it->second;
}

void ConvAlgoCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  algos_.clear();
  files_read_.clear();
  stats_ = {};
}

ConvAlgoStats ConvAlgoCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void ConvAlgoCache::load_file_locked(const std::string& file) {
  if (files_read_.count(file) != 0) return;
  files_read_[file] = true;
  std::ifstream in(file);
  if (!in) return;  // not written yet
  std::string line;
  if (!std::getline(in, line)) return;  // empty: a cache with nothing in it yet
  if (line != kFileHeader) {
    std::fprintf(stderr,
                 "nnx: warning: %s is not a cuDNN algorithm cache; not read and not written\n",
                 file.c_str());
    files_read_[file] = false;
    return;
  }
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    int algo = -1;
    if (!(fields >> key >> algo) || algo < 0) continue;  // a torn or foreign line
    if (algos_.emplace(key, algo).second) ++stats_.file_entries;
  }
}

void ConvAlgoCache::append_to_file_locked(const std::string& file, const std::string& key,
                                          int algo) {
  load_file_locked(file);  // learns whether the file is a cache (or not there yet)
  if (!files_read_[file]) return;
  std::error_code ignored;
  const bool fresh =
      !std::filesystem::exists(file, ignored) || std::filesystem::file_size(file, ignored) == 0;
  std::ofstream out(file, std::ios::app);
  if (!out) {
    std::fprintf(stderr, "nnx: warning: cannot write the cuDNN algorithm cache %s\n", file.c_str());
    return;
  }
  if (fresh) out << kFileHeader << '\n';
  out << key << ' ' << algo << '\n';
}

}  // namespace nnx::cuda
