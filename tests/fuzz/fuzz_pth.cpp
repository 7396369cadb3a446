// A whole .pth (importer/pth.h: zip, pickle, storages), then what nnx::load does with the
// objects: the architecture part of a one-file model (description_from_pickle) and the state
// dicts (layer_state_dicts).
#include "fuzz_util.h"
#include "importer/description.h"
#include "importer/pth.h"
#include "importer/weights.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nnx::py::ObjectPtr top;
  try {
    top = nnx::parse_pth(data, size, "fuzz.pth");
  } catch (const nnx::Error& e) {
    nnx::fuzz::refused(e);
    return 0;
  }
  try {
    nnx::json::Value description = nnx::description_from_pickle(*top, "fuzz.pth");
    (void)nnx::json::dump(description);
  } catch (const nnx::Error& e) {
    nnx::fuzz::refused(e);
  }
  const nnx::py::Object* dicts = top->get("layers_state_dicts");
  if (!dicts) dicts = top->get("unique_layers_state_dicts");
  const nnx::py::Object& weights = dicts ? *dicts : *top;
  size_t layers = weights.is_sequence() ? weights.items.size() : 16;
  try {
    (void)nnx::layer_state_dicts(weights, layers, "fuzz.pth");
  } catch (const nnx::Error& e) {
    nnx::fuzz::refused(e);
  }
  return 0;
}
