// Binding state dicts to the layers of a graph: the two-file list form, the one-file form's
// layers_state_dicts, flat `layer_{u:03}_type_{Class}.{param}` keys (.pth or .safetensors).
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "graph/graph.h"
#include "importer/pyobject.h"
#include "nnx/model.h"

namespace nnx {

using StateDict = std::vector<std::pair<std::string, Tensor>>;

// One state dict per layer description, from a .pth top object (list, or flat dict) or a
// safetensors file. `source` names the file in messages.
std::vector<StateDict> layer_state_dicts(const py::Object& top, size_t num_layers,
                                         const std::string& source);
std::vector<StateDict> layer_state_dicts(const std::vector<std::pair<std::string, Tensor>>& flat,
                                         size_t num_layers, const std::string& source);

// Sets every layer's tensors. Shapes must match always; missing and unexpected keys are errors
// when `strict`, else recorded in `report`. Throws one Error with a line per fault.
// `init_layer(d)` initialises layer description d; it is called, before binding, for exactly
// the layers whose state dict does not give every tensor (initialising a tensor only to
// replace it would cost a pass over all the weights at every load).
void bind_state_dicts(Graph& graph, const std::vector<StateDict>& dicts, bool strict,
                      const std::string& source, LoadReport& report,
                      const std::function<void(size_t)>& init_layer);

// "layer_003_type_Conv2d.weight" for description 3.
std::string flat_key(size_t description_index, const std::string& class_name,
                     const std::string& param);

}  // namespace nnx
