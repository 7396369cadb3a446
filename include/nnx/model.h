// Loading a model: an architecture description plus weights, validated, with immutable,
// shareable weights. Several Executors (one per thread) may run one Model concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nnx/tensor.h"

namespace nnx {

struct Graph;

struct LoadOptions {
  Device device = Device::cpu();
  // As PyTorch's load_state_dict: strict=false tolerates missing and unexpected keys, never
  // wrong shapes.
  bool strict = true;
  // Seed of the PyTorch-like initialisation used for tensors the weights do not provide.
  uint64_t seed = 0;
  // Map weight files and let the weights view them in place (stored .pth entries and
  // safetensors data aligned for their dtype; the rest is copied): loading copies nothing it
  // can map, and the mapping lives as long as the model. The weights are then read-only
  // memory. A file truncated or rewritten in place while mapped makes the next access to a lost
  // page raise SIGBUS; false copies every tensor and closes the file before load returns.
  bool map_weights = true;
};

// What a load found worth telling the user (missing/unexpected keys when not strict, no weights).
struct LoadReport {
  bool weights_given = false;
  std::vector<std::string> missing_keys, unexpected_keys;
};

class NNX_API Model {
 public:
  Model() = default;
  const Graph& graph() const;
  const LoadReport& report() const;
  const std::string& source() const;
  Device device() const;
  int num_inputs() const;
  int num_outputs() const;
  const std::vector<int64_t>& inputs_channels() const;
  const std::vector<int64_t>& outputs_channels() const;
  int64_t num_parameters() const;
  bool defined() const { return impl_ != nullptr; }

  // A deep copy whose ops and weights are its own, in ordinary writable memory (weights a
  // mapped file provided are copied): training and pruning change the copy, never this model
  // nor the Executors running it.
  Model clone() const;

  // Writes the model as `nnx convert` does, chosen by the extension: X.json (+ X.pth),
  // X.pth (one-file form), X.safetensors (+ X.json). Atomic: nothing partial on failure.
  void save(const std::string& path) const;

  struct Impl;
  explicit Model(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  const std::shared_ptr<const Impl>& impl() const { return impl_; }

 private:
  std::shared_ptr<const Impl> impl_;
};

// Loads `arch` (a .json description, or a one-file .pth) with `weights` (a two-file .pth list,
// a flat state dict .pth, or .safetensors; empty: none, or those inside a one-file .pth).
// Throws nnx::Error; a validation failure lists every fault, one per line.
NNX_API Model load(const std::string& arch, const std::string& weights = "",
                   const LoadOptions& options = {});
// The same from bytes in memory: `description` holds a .json description or a one-file .pth
// (told apart by content); `weights` (empty: none) a .pth or .safetensors file's bytes. Both are
// copied: the caller may free them when load_memory returns. Messages name `name`.
NNX_API Model load_memory(std::string_view description, std::string_view weights,
                          const LoadOptions& options = {}, const std::string& name = "<memory>");

}  // namespace nnx
