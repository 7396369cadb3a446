// Shared pieces of the nnx command-line tool: argument parsing, exit codes, error printing.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nnx/nnx.hpp"
#include "nnx/thread_pool.h"

namespace nnx::cli {

// Exit statuses of every command (CLI.md).
enum Exit { kOk = 0, kBadInput = 1, kUsage = 2, kFailure = 3 };

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Flags of one command: --name value pairs (repeatable), bare --switches and positionals.
class Args {
 public:
  // `pair_flags` take two values each (--train X.npy Y.npy); values() lists them in order.
  Args(int argc, char** argv, int first, const std::vector<std::string>& value_flags,
       const std::vector<std::string>& switches, const std::vector<std::string>& pair_flags = {});
  const std::vector<std::string>& positional() const { return positional_; }
  std::optional<std::string> value(const std::string& flag) const;
  std::vector<std::string> values(const std::string& flag) const;
  bool has(const std::string& flag) const;
  int64_t integer(const std::string& flag, int64_t fallback) const;
  double number(const std::string& flag, double fallback) const;

 private:
  std::vector<std::string> positional_;
  std::multimap<std::string, std::string> values_;
  std::vector<std::string> switches_;
};

// "1,3,224,224" -> Shape; throws UsageError.
Shape parse_shape(const std::string& text);
// Loads ARCH with --weights and --no-strict (after the --plugin libraries), telling stderr
// when no weights were given; `lenient` loads as --no-strict does.
Model load_model(const Args& args, bool lenient = false);
// Shapes of the network inputs from --shape flags (default 1,C,224,224 per input).
std::vector<Shape> input_shapes(const Model& model, const Args& args);
// Deterministic pseudo-random inputs in [0, 1), as torch.rand would give in distribution.
std::vector<Tensor> random_inputs(const std::vector<Shape>& shapes, uint64_t seed = 0);

int run_command(const Args& args);
int info_command(const Args& args);
int convert_command(const Args& args);
int bench_command(const Args& args);
int graph_command(const Args& args);
int train_command(const Args& args);
int prune_command(const Args& args);

}  // namespace nnx::cli
