// nnx::load: reads the description and the weights in whichever form they come, builds and
// validates the graph, initialises what the weights do not give, binds the rest.
#include <filesystem>

#include "importer/description.h"
#include "importer/json.h"
#include "importer/pth.h"
#include "importer/safetensors.h"
#include "importer/weights.h"
#include "nnx/cuda.h"
#include "nnx/error.h"
#include "nnx/registry.h"
#include "runtime/model_impl.h"

namespace nnx {
namespace {

bool has_extension(const std::string& path, std::string_view ext) {
  std::string e = std::filesystem::path(path).extension().string();
  for (auto& c : e) c = char(std::tolower(static_cast<unsigned char>(c)));
  return e == ext;
}

void check_readable(const std::string& path, std::string_view what) {
  std::error_code ec;
  NNX_CHECK(std::filesystem::is_regular_file(path, ec), ErrorKind::io, path, ": ", what,
            std::filesystem::exists(path, ec) ? " is not a regular file" : " does not exist");
}

}  // namespace

const Graph& Model::graph() const {
  return impl_->graph;
}
const LoadReport& Model::report() const {
  return impl_->report;
}
const std::string& Model::source() const {
  return impl_->source;
}
Device Model::device() const {
  return impl_->device;
}
int Model::num_inputs() const {
  return impl_->graph.num_inputs();
}
int Model::num_outputs() const {
  return impl_->graph.num_outputs();
}
const std::vector<int64_t>& Model::inputs_channels() const {
  return impl_->graph.inputs_channels;
}
const std::vector<int64_t>& Model::outputs_channels() const {
  return impl_->graph.outputs_channels;
}

int64_t Model::num_parameters() const {
  int64_t total = 0;
  for (const Layer& layer : impl_->graph.layers)
    for (const Param& p : layer.op->params())
      if (p.trainable) total += p.value.numel();
  return total;
}

Model assemble_model(const json::Value& description, const std::string& source,
                     const py::Object* onefile, const WeightsReader& read_weights,
                     const std::string& weights_source, const LoadOptions& options) {
  auto impl = std::make_shared<Model::Impl>();
  impl->source = source;
  impl->device = options.device;
  impl->graph = build_graph(description, source);
  Graph& graph = impl->graph;

  // Initialise as PyTorch would, each layer from its own stream so that one layer's
  // initialisation does not depend on the layers before it (nor on which layers the weights
  // give in full, and so need none).
  auto init_layer = [&](size_t d) {
    RandomEngine rng(options.seed * 1000003u + d);
    graph.layers[d].op->init_params(rng);
  };

  std::vector<StateDict> dicts;
  std::string bound_from = weights_source;
  if (read_weights) {
    dicts = read_weights(graph.layers.size());
  } else if (onefile) {
    const py::Object* list = onefile->get("layers_state_dicts");
    if (!list) list = onefile->get("unique_layers_state_dicts");
    if (list) dicts = layer_state_dicts(*list, graph.layers.size(), source);
    bound_from = source;
  }
  impl->report.weights_given = !dicts.empty() || bool(read_weights);
  if (impl->report.weights_given) {
    bind_state_dicts(graph, dicts, options.strict, bound_from, impl->report, init_layer);
  } else {
    for (size_t d = 0; d < graph.layers.size(); ++d) init_layer(d);
  }

  if (options.device.is_cuda()) {
    cuda::init();
    NNX_CHECK(cuda::available(), ErrorKind::device, "device ", options.device.str(), ": ",
              cuda::unavailable_reason());
  }
  return Model(std::move(impl));
}

Model Model::clone() const {
  NNX_CHECK(defined(), ErrorKind::usage, "clone of an empty Model");
  auto copy = std::make_shared<Model::Impl>(*impl_);
  copy->weights_may_change = true;
  for (Layer& layer : copy->graph.layers) {
    if (!layer.op) continue;
    std::shared_ptr<Op> fresh = layer.call ? make_op(*layer.call) : nullptr;
    NNX_CHECK(fresh, ErrorKind::unsupported, source(), ": layer ", layer.description_index, " '",
              layer.call_text, "' cannot be copied");
    for (const Param& p : layer.op->params()) fresh->set_param(p.name, p.value.clone());
    layer.op = std::move(fresh);
  }
  return Model(std::move(copy));
}

Model load(const std::string& arch, const std::string& weights, const LoadOptions& options) {
  check_readable(arch, "the model description");
  py::ObjectPtr onefile;
  json::Value description;
  if (has_extension(arch, ".pth") || has_extension(arch, ".pt")) {
    onefile = read_pth(arch, options.map_weights);
    description = description_from_pickle(*onefile, arch);
  } else {
    description = json::parse_file(arch);
  }
  WeightsReader read_weights;
  if (!weights.empty()) {
    read_weights = [&](size_t num_layers) {
      check_readable(weights, "the weights file");
      if (has_extension(weights, ".safetensors"))
        return layer_state_dicts(read_safetensors(weights, options.map_weights), num_layers,
                                 weights);
      return layer_state_dicts(*read_pth(weights, options.map_weights), num_layers, weights);
    };
  }
  return assemble_model(description, arch, onefile.get(), read_weights, weights, options);
}

}  // namespace nnx
