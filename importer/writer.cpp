// Model::save: the description as every released version of the original package wrote it
// ([IDX, "module.Repr", CH] with PyTorch's reprs, explicit connections), weights as a list of
// state dicts (.pth), inside a one-file .pth, or as flat keys in .safetensors.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>

#include "importer/json.h"
#include "importer/pth.h"
#include "importer/safetensors.h"
#include "importer/weights.h"
#include "importer/zip.h"
#include "nnx/error.h"
#include "runtime/model_impl.h"

namespace nnx {
namespace {

namespace fs = std::filesystem;

json::Value description_json(const Graph& g) {
  std::vector<json::Value> connections, outputs, layers;
  for (size_t n = 1; n < g.nodes.size(); ++n)
    for (size_t i = 0; i < g.nodes[n].inputs.size(); ++i) {
      const PortRef& in = g.nodes[n].inputs[i];
      connections.push_back(json::integers({in.node, in.port, int64_t(n), int64_t(i)}));
    }
  for (size_t k = 0; k < g.outputs.size(); ++k)
    outputs.push_back(json::integers({g.outputs[k].node, g.outputs[k].port, int64_t(k)}));
  for (const Layer& layer : g.layers) {
    const Node& first = g.nodes[size_t(layer.nodes[0])];
    std::vector<int64_t> in_ch;
    for (const PortRef& in : first.inputs)
      in_ch.push_back(g.nodes[size_t(in.node)].out_channels[size_t(in.port)]);
    std::vector<int64_t> nodes(layer.nodes.begin(), layer.nodes.end());
    std::string module = layer.op->python_module();
    layers.push_back(
        json::array({json::integers(nodes),
                     json::string((module.empty() ? "" : module + ".") + layer.op->repr()),
                     json::array({json::integers(in_ch), json::integers(first.out_channels)})}));
  }
  return json::object({{"connections", json::array(std::move(connections))},
                       {"outputs", json::array(std::move(outputs))},
                       {"inputs_channels", json::integers(g.inputs_channels)},
                       {"outputs_channels", json::integers(g.outputs_channels)},
                       {"layers", json::array(std::move(layers))}});
}

py::ObjectPtr pickle_from_json(const json::Value& v) {
  switch (v.kind) {
    case json::Value::Kind::null:
      return py::Object::none();
    case json::Value::Kind::boolean:
      return py::Object::boolean(v.b);
    case json::Value::Kind::number:
      return v.is_integer ? py::Object::integer(v.integer) : py::Object::real(v.number);
    case json::Value::Kind::string:
      return py::Object::string(v.str);
    case json::Value::Kind::array: {
      std::vector<py::ObjectPtr> items;
      for (auto& x : v.array) items.push_back(pickle_from_json(x));
      return py::Object::list(std::move(items));
    }
    case json::Value::Kind::object: {
      std::vector<std::pair<py::ObjectPtr, py::ObjectPtr>> entries;
      for (auto& [k, x] : v.object)
        entries.emplace_back(py::Object::string(k), pickle_from_json(x));
      return py::Object::dict(std::move(entries));
    }
  }
  return py::Object::none();
}

py::ObjectPtr state_dict_list(const Graph& g) {
  std::vector<py::ObjectPtr> dicts;
  for (const Layer& layer : g.layers) {
    std::vector<std::pair<py::ObjectPtr, py::ObjectPtr>> entries;
    for (const Param& p : layer.op->params())
      // Host copies of parameters a Trainer holds on a device.
      entries.emplace_back(py::Object::string(p.name),
                           py::Object::make_tensor(p.value.to(Device::cpu())));
    dicts.push_back(py::Object::dict(std::move(entries), /*ordered=*/true));
  }
  return py::Object::list(std::move(dicts));
}

// Writes the description beside a weights file written by `write_weights`; on any failure
// neither file exists.
void save_pair(const std::string& json_path, const std::string& weights_path,
               const std::string& text, const std::function<void()>& write_weights) {
  std::error_code ec;
  bool json_existed = fs::exists(json_path, ec);
  zip::write_file_atomically(json_path, text);
  try {
    write_weights();
  } catch (...) {
    if (!json_existed) fs::remove(json_path, ec);
    (void)weights_path;
    throw;
  }
}

}  // namespace

void Model::save(const std::string& path) const {
  NNX_CHECK(defined(), ErrorKind::usage, "save() of an empty Model");
  const Graph& g = impl_->graph;
  fs::path p(path);
  std::string ext = p.extension().string();
  std::string stem = (p.parent_path() / p.stem()).string();
  if (p.has_parent_path() && !p.parent_path().empty()) fs::create_directories(p.parent_path());
  json::Value desc = description_json(g);
  if (ext == ".json") {
    save_pair(path, stem + ".pth", json::dump(desc),
              [&] { write_pth(stem + ".pth", *state_dict_list(g)); });
  } else if (ext == ".pth" || ext == ".pt") {
    auto top = pickle_from_json(desc);
    auto entries = top->entries;
    entries.emplace_back(py::Object::string("layers_state_dicts"), state_dict_list(g));
    write_pth(path, *py::Object::dict(std::move(entries)));
  } else if (ext == ".safetensors") {
    NamedTensors flat;
    for (const Layer& layer : g.layers)
      for (const Param& prm : layer.op->params())
        flat.emplace_back(flat_key(size_t(layer.description_index), layer.op->type(), prm.name),
                          prm.value.to(Device::cpu()));
    save_pair(stem + ".json", path, json::dump(desc), [&] { write_safetensors(path, flat); });
  } else {
    fail(ErrorKind::usage, path, ": unknown output format '", ext,
         "' (expected .json, .pth or .safetensors)");
  }
}

}  // namespace nnx
