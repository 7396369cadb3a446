// State dicts onto layers, with the messages of ARCH_FORMAT.md section 9.
#include "importer/weights.h"

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "nnx/error.h"

namespace nnx {
namespace {

StateDict state_dict_from(const py::Object& o, const std::string& where) {
  NNX_CHECK(o.is_dict(), ErrorKind::format, where,
            ": expected a state dict (OrderedDict), found a ", o.kind_name());
  StateDict dict;
  for (auto& [k, v] : o.entries) {
    NNX_CHECK(k->kind == py::Object::Kind::string, ErrorKind::format, where,
              ": a state dict key is a ", k->kind_name(), ", expected a string");
    NNX_CHECK(v->kind == py::Object::Kind::tensor, ErrorKind::format, where, ": '", k->s, "' is a ",
              v->kind_name(), ", expected a tensor");
    dict.emplace_back(k->s, v->tensor);
  }
  return dict;
}

// Splits "layer_003_type_Conv2d.weight" into (3, "Conv2d", "weight").
bool parse_flat_key(const std::string& key, size_t& index, std::string& cls, std::string& param) {
  if (key.rfind("layer_", 0) != 0) return false;
  size_t type_at = key.find("_type_", 6);
  size_t dot = key.find('.', type_at == std::string::npos ? 0 : type_at);
  if (type_at == std::string::npos || dot == std::string::npos || type_at == 6) return false;
  auto [ptr, ec] = std::from_chars(key.data() + 6, key.data() + type_at, index);
  if (ec != std::errc() || ptr != key.data() + type_at) return false;
  cls = key.substr(type_at + 6, dot - type_at - 6);
  param = key.substr(dot + 1);
  return !cls.empty() && !param.empty();
}

std::vector<StateDict> from_flat(const std::vector<std::pair<std::string, Tensor>>& flat,
                                 size_t num_layers, const std::string& source) {
  std::vector<StateDict> dicts(num_layers);
  std::string faults;
  for (auto& [key, tensor] : flat) {
    size_t index;
    std::string cls, param;
    if (!parse_flat_key(key, index, cls, param)) {
      faults += (faults.empty() ? "" : "\n") + source + ": key '" + key +
                "' is not of the form layer_{index:03}_type_{Class}.{param}";
      continue;
    }
    if (index >= num_layers) {
      faults += (faults.empty() ? "" : "\n") + source + ": key '" + key +
                "' names layer description " + std::to_string(index) +
                ", but the description has " + std::to_string(num_layers);
      continue;
    }
    // Keep the class for the check against the layer's op in bind_state_dicts.
    dicts[index].emplace_back("\x01" + cls + "\x01" + param, tensor);
  }
  if (!faults.empty()) throw Error(ErrorKind::format, faults);
  return dicts;
}

}  // namespace

std::string flat_key(size_t description_index, const std::string& class_name,
                     const std::string& param) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "layer_%03zu_type_", description_index);
  return buf + class_name + "." + param;
}

std::vector<StateDict> layer_state_dicts(const py::Object& top, size_t num_layers,
                                         const std::string& source) {
  if (top.is_sequence()) {
    NNX_CHECK(top.items.size() == num_layers, ErrorKind::format, source, ": expected ", num_layers,
              " state dicts (one per layer description), found ", top.items.size());
    std::vector<StateDict> dicts;
    for (size_t i = 0; i < top.items.size(); ++i)
      dicts.push_back(state_dict_from(*top.items[i], source + ": state dict " + std::to_string(i)));
    return dicts;
  }
  if (top.is_dict()) {
    std::vector<std::pair<std::string, Tensor>> flat;
    for (auto& [k, v] : top.entries) {
      NNX_CHECK(k->kind == py::Object::Kind::string && v->kind == py::Object::Kind::tensor,
                ErrorKind::format, source, ": a flat state dict maps strings to tensors; found a ",
                k->kind_name(), " -> ", v->kind_name(), " entry");
      flat.emplace_back(k->s, v->tensor);
    }
    return from_flat(flat, num_layers, source);
  }
  fail(ErrorKind::format, source, ": expected a list of state dicts or a flat state dict, found a ",
       top.kind_name());
}

std::vector<StateDict> layer_state_dicts(const std::vector<std::pair<std::string, Tensor>>& flat,
                                         size_t num_layers, const std::string& source) {
  return from_flat(flat, num_layers, source);
}

void bind_state_dicts(Graph& graph, const std::vector<StateDict>& dicts, bool strict,
                      const std::string& source, LoadReport& report,
                      const std::function<void(size_t)>& init_layer) {
  std::string faults;
  auto fault = [&](const std::string& text) {
    faults += (faults.empty() ? "" : "\n") + source + ": " + text;
  };
  for (size_t d = dicts.size(); d < graph.layers.size(); ++d) init_layer(d);
  for (size_t d = 0; d < graph.layers.size() && d < dicts.size(); ++d) {
    Layer& layer = graph.layers[d];
    Op& op = *layer.op;
    std::string name = graph.describe_node(layer.nodes[0]);
    // The dict's keys as the file and as the op name them; `skip` where not for this op.
    std::vector<std::string> keys, canonical_keys;
    std::vector<bool> skip;
    for (auto& [raw_key, tensor] : dicts[d]) {
      std::string key = raw_key;
      if (!raw_key.empty() && raw_key[0] == '\x01') {  // flat key: check its class
        size_t sep = raw_key.find('\x01', 1);
        std::string cls = raw_key.substr(1, sep - 1);
        key = raw_key.substr(sep + 1);
        if (cls != op.type()) {
          fault(name + ": key '" + flat_key(d, cls, key) + "' names class " + cls +
                ", the layer is " + op.type());
          skip.push_back(true);
          canonical_keys.emplace_back();
          keys.push_back(std::move(key));
          continue;
        }
      }
      skip.push_back(false);
      canonical_keys.push_back(op.canonical_param_name(key));
      keys.push_back(std::move(key));
    }
    bool complete = std::all_of(op.params().begin(), op.params().end(), [&](const Param& p) {
      for (size_t k = 0; k < keys.size(); ++k)
        if (!skip[k] && canonical_keys[k] == p.name) return true;
      return false;
    });
    if (!complete) init_layer(d);
    std::vector<bool> given(op.params().size(), false);
    for (size_t k = 0; k < keys.size(); ++k) {
      const std::string& key = keys[k];
      const Tensor& tensor = dicts[d][k].second;
      if (skip[k]) continue;
      const std::string& canonical = canonical_keys[k];
      const Param* p = op.find_param(canonical);
      if (p == nullptr) {
        if (strict)
          fault(name + ": unexpected tensor '" + key + "' in its state dict");
        else
          report.unexpected_keys.push_back(flat_key(d, op.type(), key));
        continue;
      }
      try {
        op.set_param(key, tensor);
        given[size_t(p - op.params().data())] = true;
      } catch (const Error& e) {
        fault(name + ": " + e.message());
      }
    }
    for (size_t i = 0; i < op.params().size(); ++i) {
      if (given[i]) continue;
      const std::string& pname = op.params()[i].name;
      if (strict)
        fault(name + ": missing tensor '" + pname + "' in its state dict");
      else
        report.missing_keys.push_back(flat_key(d, op.type(), pname));
    }
  }
  if (!faults.empty()) throw Error(ErrorKind::shape, faults);
}

}  // namespace nnx
