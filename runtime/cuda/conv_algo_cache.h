// The cuDNN convolution algorithm chosen for each problem (shapes, padding, strides, dilation,
// groups, device and cuDNN version, all in a text key), kept for the life of the process and,
// for timed searches, in the text file NNX_CUDNN_CACHE names, so that a restarted process
// does not search again. Knows nothing of cuDNN: algorithms are plain ints here.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <string>

namespace nnx::cuda {

// NNX_CUDNN_SEARCH=1: pick convolution algorithms by timing them (cudnnFind...) rather than by
// cuDNN's heuristics. Read on each call.
bool conv_search_enabled();
// NNX_CUDNN_CACHE: the file searched choices are kept in ("" when unset). Read on each call.
std::string conv_cache_path();

struct ConvAlgoStats {
  size_t chosen = 0;        // calls of `choose` (heuristic queries and searches)
  size_t memory_hits = 0;   // answers from the process's cache
  size_t file_entries = 0;  // entries read from cache files
};

class ConvAlgoCache {
 public:
  static ConvAlgoCache& instance();

  // The algorithm for `key` (no spaces or newlines): from memory; else, when `persist`, from the
  // file at `file` (read once per path); else what choose() returns, called without the lock
  // held (two threads may both choose; the first answer stays), remembered and, when `persist`
  // and `file` is set, appended to that file. A file that cannot be read or written is skipped
  // with a warning on stderr, as is a file that is not such a cache (it is never written to):
  // the cache only saves time.
  int get(const std::string& key, bool persist, const std::string& file,
          const std::function<int()>& choose);

  // Forgets what is in memory, files read included (tests).
  void clear();
  ConvAlgoStats stats() const;

 private:
  void load_file_locked(const std::string& file);
  void append_to_file_locked(const std::string& file, const std::string& key, int algo);

  mutable std::mutex mutex_;
  std::map<std::string, int> algos_;
  std::map<std::string, bool> files_read_;  // path -> whether it is (or may become) a cache
  ConvAlgoStats stats_;
};

}  // namespace nnx::cuda
