// nnx::load_memory: a model from bytes in memory (the C API's nnx_model_load_memory), read as
// nnx::load reads files: the description (JSON, or a one-file .pth told by its zip signature),
// then the weights (.pth or .safetensors, told the same way). Every tensor is copied.
#include <cstring>

#include "importer/description.h"
#include "importer/json.h"
#include "importer/pth.h"
#include "importer/safetensors.h"
#include "importer/weights.h"
#include "nnx/error.h"
#include "runtime/model_impl.h"

namespace nnx {
namespace {

bool is_zip(std::string_view bytes) {
  return bytes.size() >= 4 && std::memcmp(bytes.data(), "PK\x03\x04", 4) == 0;
}

}  // namespace

Model load_memory(std::string_view description_bytes, std::string_view weights,
                  const LoadOptions& options, const std::string& name) {
  py::ObjectPtr onefile;
  json::Value description;
  if (is_zip(description_bytes)) {
    onefile = parse_pth(description_bytes.data(), description_bytes.size(), name);
    description = description_from_pickle(*onefile, name);
  } else {
    description = json::parse(description_bytes, name);
  }
  const std::string weights_name = name + " (weights)";
  WeightsReader read_weights;
  if (!weights.empty()) {
    read_weights = [&](size_t num_layers) {
      if (is_zip(weights))
        return layer_state_dicts(*parse_pth(weights.data(), weights.size(), weights_name),
                                 num_layers, weights_name);
      return layer_state_dicts(parse_safetensors(weights.data(), weights.size(), weights_name),
                               num_layers, weights_name);
    };
  }
  return assemble_model(description, name, onefile.get(), read_weights, weights_name, options);
}

}  // namespace nnx
