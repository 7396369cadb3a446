// Reads a model description (JSON, or the architecture part of a one-file .pth) into a wired,
// validated Graph: layer forms, node indices, connections, auto_connect, outputs.
#include "importer/description.h"

#include <algorithm>
#include <climits>
#include <map>
#include <optional>
#include <set>

#include "graph/validate.h"
#include "importer/call_parser.h"
#include "nnx/error.h"
#include "nnx/registry.h"

namespace nnx {
namespace {

// Faults are collected with a sort key (node index; 0 for faults of the whole description) so
// that layer faults come first, in node order.
class Faults {
 public:
  explicit Faults(std::string source) : source_(std::move(source)) {}
  // `node` may be any int64 a file gave, unchecked: clamped, it keeps its place in the order.
  void add(int64_t node, std::string message) {
    faults_.emplace_back(int(std::clamp<int64_t>(node, -1, INT_MAX)), std::move(message));
  }
  std::vector<std::pair<int, std::string>>& list() { return faults_; }
  bool empty() const { return faults_.empty(); }
  // Throws one Error listing every fault, one line each.
  void throw_if_any() {
    if (faults_.empty()) return;
    std::stable_sort(faults_.begin(), faults_.end(), [](const auto& a, const auto& b) {
      auto key = [](int n) { return n > 0 ? n : (n == 0 ? 1 << 30 : (1 << 30) + 1); };
      return key(a.first) < key(b.first);
    });
    std::string message;
    for (auto& [node, text] : faults_)
      message += (message.empty() ? "" : "\n") + source_ + ": " + text;
    throw Error(ErrorKind::format, message);
  }

 private:
  std::string source_;
  std::vector<std::pair<int, std::string>> faults_;
};

std::string where(const json::Value& v) {
  return "line " + std::to_string(v.line) + ", column " + std::to_string(v.column);
}

[[noreturn]] void bad(const json::Value& v, const std::string& what) {
  fail(ErrorKind::format, what, " (at ", where(v), ")");
}

Value local_from_json(const json::Value& v) {
  switch (v.kind) {
    case json::Value::Kind::null:
      return Value();
    case json::Value::Kind::boolean:
      return Value::boolean(v.b);
    case json::Value::Kind::number:
      return v.is_integer ? Value::integer(v.integer) : Value::real(v.number);
    case json::Value::Kind::string:
      return Value::string(v.str);
    case json::Value::Kind::array: {
      std::vector<Value> items;
      for (auto& item : v.array) items.push_back(local_from_json(item));
      return Value::list(std::move(items));
    }
    case json::Value::Kind::object:
      bad(v, "a local cannot be an object");
  }
  return Value();
}

int64_t channel_count(const json::Value& v, const Locals& locals, const std::string& what) {
  int64_t c = 0;
  if (v.is_int()) {
    c = v.integer;
  } else if (v.is_string()) {
    try {
      c = eval_int_expr(v.str, locals);
    } catch (const Error& e) {
      bad(v, what + " '" + v.str + "': " + e.message());
    }
  } else {
    bad(v, what + ": expected an int or an expression string, found " + v.kind_name());
  }
  if (c < 0) bad(v, what + ": negative channel count " + std::to_string(c));
  return c;
}

std::vector<int64_t> channel_list(const json::Value& v, const Locals& locals,
                                  const std::string& what) {
  if (!v.is_array()) bad(v, what + ": expected a list of channel counts, found " + v.kind_name());
  std::vector<int64_t> out;
  for (auto& item : v.array) out.push_back(channel_count(item, locals, what));
  return out;
}

int64_t int_of(const json::Value& v, const std::string& what) {
  if (!v.is_int()) bad(v, what + ": expected an integer, found " + v.kind_name());
  return v.integer;
}

// One layer description as written, before node indices are assigned.
struct RawLayer {
  const json::Value* json = nullptr;
  std::optional<std::vector<int64_t>> indices;
  std::string call_text;
  std::optional<int64_t> out;                                               // [CALL, OUT]
  std::optional<std::pair<std::vector<int64_t>, std::vector<int64_t>>> ch;  // CH
  std::optional<std::vector<std::pair<int64_t, int64_t>>> rel;              // REL
  const json::Value* rel_json = nullptr;
};

bool is_index_list(const json::Value& v) {
  if (!v.is_array()) return false;
  for (auto& x : v.array)
    if (!x.is_int()) return false;
  return true;
}

RawLayer parse_layer(const json::Value& v, const Locals& locals) {
  RawLayer raw;
  raw.json = &v;
  auto parse_ch = [&](const json::Value& c) {
    if (!c.is_array() || c.array.size() != 2) bad(c, "expected CH = [[in_ch, ...], [out_ch, ...]]");
    raw.ch = {channel_list(c.array[0], locals, "input channels"),
              channel_list(c.array[1], locals, "output channels")};
  };
  auto parse_out_or_ch = [&](const json::Value& c) {
    if (c.is_array())
      parse_ch(c);
    else
      raw.out = channel_count(c, locals, "output channels");
  };
  if (v.is_string()) {
    raw.call_text = v.str;
    return raw;
  }
  if (!v.is_array() || v.array.empty())
    bad(v, std::string("a layer is a constructor string or a list, found ") + v.kind_name());
  const auto& a = v.array;
  if (a[0].is_array()) {  // [IDX, CALL, ...]
    if (!is_index_list(a[0])) bad(a[0], "node indices must be a list of integers");
    if (a.size() < 2 || !a[1].is_string())
      bad(v, "expected [IDX, CALL, ...] with a constructor string");
    raw.indices = std::vector<int64_t>();
    for (auto& x : a[0].array) raw.indices->push_back(x.integer);
    if (raw.indices->empty()) bad(a[0], "empty list of node indices");
    raw.call_text = a[1].str;
    if (a.size() >= 3) parse_out_or_ch(a[2]);
    if (a.size() == 4) {  // [IDX, REPR, CH, MODULE]
      if (!a[3].is_string()) bad(a[3], "expected the module name of [IDX, REPR, CH, MODULE]");
      if (!raw.ch) bad(a[2], "[IDX, REPR, CH, MODULE] needs CH");
      raw.call_text = a[3].str + "." + a[1].str;
    }
    if (a.size() > 4)
      bad(v, "a layer with node indices has at most 4 elements, found " + std::to_string(a.size()));
    return raw;
  }
  if (!a[0].is_string()) bad(a[0], "expected a constructor string");
  raw.call_text = a[0].str;
  if (a.size() >= 2) parse_out_or_ch(a[1]);
  if (a.size() >= 3) {
    if (!raw.ch) bad(a[1], "[CALL, CH, REL] needs CH as [[in...], [out...]]");
    if (!a[2].is_array()) bad(a[2], "REL must be a list of [src_node, src_output]");
    raw.rel = std::vector<std::pair<int64_t, int64_t>>();
    raw.rel_json = &a[2];
    for (auto& r : a[2].array) {
      if (!r.is_array() || r.array.size() != 2) bad(r, "each REL entry is [src_node, src_output]");
      raw.rel->emplace_back(int_of(r.array[0], "REL source node"),
                            int_of(r.array[1], "REL source output"));
    }
  }
  if (a.size() > 3)
    bad(v,
        "a layer has at most 3 elements without node indices, found " + std::to_string(a.size()));
  return raw;
}

}  // namespace

Graph build_graph(const json::Value& root, const std::string& source) {
  Faults faults(source);
  Graph g;
  g.source = source;
  auto fatal = [&](const Error& e, int node = 0) {
    faults.add(node, e.message());
    faults.throw_if_any();
  };
  if (!root.is_object())
    fatal(Error(ErrorKind::format,
                std::string("expected a JSON object at the top, found ") + root.kind_name()));

  Locals locals;
  std::vector<RawLayer> raws;
  const json::Value* layers_json = nullptr;
  try {
    if (const json::Value* l = root.find("locals")) {
      if (!l->is_object()) bad(*l, "'locals' must be an object");
      for (auto& [k, v] : l->object) locals[k] = local_from_json(v);
    }
    const json::Value* in_ch = root.find("inputs_channels");
    const json::Value* out_ch = root.find("outputs_channels");
    layers_json = root.find("layers");
    if (!layers_json) layers_json = root.find("unique_layers_recreators");
    if (!in_ch) fail(ErrorKind::format, "missing key 'inputs_channels'");
    if (!out_ch) fail(ErrorKind::format, "missing key 'outputs_channels'");
    if (!layers_json)
      fail(ErrorKind::format, "missing key 'layers' (or 'unique_layers_recreators')");
    if (!root.find("outputs")) fail(ErrorKind::format, "missing key 'outputs'");
    g.inputs_channels = channel_list(*in_ch, locals, "'inputs_channels'");
    g.outputs_channels = channel_list(*out_ch, locals, "'outputs_channels'");
    if (g.inputs_channels.empty())
      bad(*in_ch, "'inputs_channels' is empty: a network needs an input");
    if (!layers_json->is_array()) bad(*layers_json, "'layers' must be a list");
  } catch (const Error& e) {
    fatal(e);
  }
  bool any_indexed = false;
  for (auto& l : layers_json->array)
    any_indexed |= l.is_array() && !l.array.empty() && l.array[0].is_array();
  for (size_t i = 0; i < layers_json->array.size(); ++i) {
    try {
      raws.push_back(parse_layer(layers_json->array[i], locals));
    } catch (const Error& e) {
      // Name the layer as its node would be named, where that can be told without the rest.
      const json::Value& l = layers_json->array[i];
      const json::Value* first = l.is_array() && !l.array.empty() ? &l.array[0] : &l;
      const json::Value* call = first->is_array() && l.array.size() > 1 ? &l.array[1] : first;
      int64_t node = 0;
      if (first->is_array() && !first->array.empty() && first->array[0].is_int())
        node = first->array[0].integer;
      else if (!any_indexed)
        node = int64_t(i) + 1;
      std::string name =
          node > 0 ? "layer " + std::to_string(node) : "layer description " + std::to_string(i);
      if (call->is_string()) name += " '" + call->str + "'";
      faults.add(node, name + ": " + e.message());
    }
  }
  faults.throw_if_any();

  // ---- node indices: explicit ones first, then the smallest unused for the rest.
  std::map<int64_t, int> owner;  // node index -> description
  for (size_t d = 0; d < raws.size(); ++d) {
    if (!raws[d].indices) continue;
    for (int64_t idx : *raws[d].indices) {
      if (idx < 1) {
        faults.add(0, "layer description " + std::to_string(d) + " '" + raws[d].call_text +
                          "': node index " + std::to_string(idx) +
                          " (layers are nodes 1..N; 0 is the input)");
      } else if (auto it = owner.find(idx); it != owner.end()) {
        faults.add(idx, "layer " + std::to_string(idx) + " '" + raws[d].call_text +
                            "': node index " + std::to_string(idx) + " is already used by '" +
                            raws[size_t(it->second)].call_text + "'");
      } else {
        owner[idx] = int(d);
      }
    }
  }
  int64_t next_free = 1;
  std::vector<std::vector<int>> nodes_of(raws.size());
  for (size_t d = 0; d < raws.size(); ++d) {
    if (raws[d].indices) {
      for (int64_t idx : *raws[d].indices)
        if (idx >= 1) nodes_of[d].push_back(int(idx));
      continue;
    }
    while (owner.count(next_free)) ++next_free;
    owner[next_free] = int(d);
    nodes_of[d].push_back(int(next_free));
  }
  // Checked before it is narrowed to int: [[9223372036854775807], ...] became -1 (fuzz_json).
  const int64_t largest = owner.empty() ? 0 : owner.rbegin()->first;
  if (largest > 1000000)
    fatal(Error(ErrorKind::format,
                "node index " + std::to_string(largest) + " is implausibly large"));
  const int num_nodes = int(largest);
  // A run of missing indices is one fault: [[1000000], ...] must not list a million lines.
  for (int i = 1; i <= num_nodes; ++i) {
    if (owner.count(i)) continue;
    int last = i;
    while (last < num_nodes && !owner.count(last + 1)) ++last;
    if (last == i)
      faults.add(i, "node index " + std::to_string(i) +
                        " is missing: no layer stands at it (indices must be 1..N without gaps)");
    else
      faults.add(i,
                 "node indices " + std::to_string(i) + ".." + std::to_string(last) +
                     " are missing: no layer stands at them (indices must be 1..N without gaps)");
    i = last;
  }
  faults.throw_if_any();

  // ---- layers: channels, ops.
  g.nodes.resize(size_t(num_nodes) + 1);
  g.nodes[0].index = 0;
  g.nodes[0].num_outputs = g.num_inputs();
  g.nodes[0].out_channels = g.inputs_channels;
  int64_t previous = g.inputs_channels[0];
  for (size_t d = 0; d < raws.size(); ++d) {
    RawLayer& raw = raws[d];
    Layer layer;
    layer.description_index = int(d);
    layer.call_text = raw.call_text;
    layer.nodes = nodes_of[d];
    if (raw.ch) {
      layer.declared_in = raw.ch->first;
      layer.declared_out = raw.ch->second;
    } else {
      layer.declared_in = {previous};
      layer.declared_out = {raw.out ? *raw.out : previous};
    }
    int first_node = layer.nodes.empty() ? 0 : layer.nodes[0];
    std::string name = "layer " + std::to_string(first_node) + " '" + layer.call_text + "'";
    try {
      auto call = std::make_shared<Call>(parse_call(layer.call_text, locals));
      layer.op = make_op(*call);
      layer.call = std::move(call);
      layer.op->check_arity(int(layer.declared_in.size()), int(layer.declared_out.size()));
    } catch (const Error& e) {
      // Keep going without the op, to report the wiring and channel faults as well.
      layer.op = nullptr;
      faults.add(first_node, name + ": " + e.message());
    }
    if (!layer.declared_out.empty()) previous = layer.declared_out[0];
    for (int n : layer.nodes) {
      Node& node = g.nodes[size_t(n)];
      node.index = n;
      node.layer = int(g.layers.size());
      node.inputs.assign(layer.declared_in.size(), PortRef{});
      node.num_outputs = int(layer.declared_out.size());
      node.out_channels = layer.declared_out;
    }
    g.layers.push_back(std::move(layer));
  }

  // ---- wiring: REL, then connections, then auto_connect for what is left.
  auto port_exists = [&](int64_t node, int64_t port) {
    return node >= 0 && node <= num_nodes && port >= 0 && port < g.nodes[size_t(node)].num_outputs;
  };
  auto feed = [&](int dst, int64_t dst_port, int64_t src, int64_t src_port,
                  const std::string& via) {
    Node& node = g.nodes[size_t(dst)];
    std::string name = g.describe_node(dst);
    if (dst_port < 0 || dst_port >= int64_t(node.inputs.size())) {
      faults.add(dst, name + ": " + via + " feeds input " + std::to_string(dst_port) +
                          ", but the layer declares " + std::to_string(node.inputs.size()) +
                          " input(s)");
      return;
    }
    if (src < 0) {
      faults.add(dst, name + ": " + via + " has a relative source before node 0");
      return;
    }
    if (!port_exists(src, src_port)) {
      faults.add(dst, name + ": " + via + " comes from node " + std::to_string(src) + " output " +
                          std::to_string(src_port) + ", which does not exist");
      return;
    }
    if (node.inputs[size_t(dst_port)].valid()) {
      faults.add(dst, name + ": input " + std::to_string(dst_port) + " is fed twice (from node " +
                          std::to_string(node.inputs[size_t(dst_port)].node) + " and from node " +
                          std::to_string(src) + ")");
      return;
    }
    node.inputs[size_t(dst_port)] = {int(src), int(src_port)};
  };
  for (size_t d = 0; d < raws.size(); ++d) {
    if (!raws[d].rel) continue;
    int n = nodes_of[d][0];
    const auto& rel = *raws[d].rel;
    if (rel.size() != g.nodes[size_t(n)].inputs.size()) {
      faults.add(n, g.describe_node(n) + ": " + std::to_string(rel.size()) +
                        " connections given in REL for " +
                        std::to_string(g.nodes[size_t(n)].inputs.size()) + " declared input(s)");
    }
    for (size_t i = 0; i < std::min(rel.size(), g.nodes[size_t(n)].inputs.size()); ++i) {
      int64_t src = rel[i].first >= 0 ? rel[i].first : n + rel[i].first;
      feed(n, int64_t(i), src, rel[i].second, "REL entry " + std::to_string(i));
    }
  }
  if (const json::Value* conns = root.find("connections")) {
    if (!conns->is_array()) {
      faults.add(0, "'connections' must be a list (at " + where(*conns) + ")");
    } else {
      for (auto& c : conns->array) {
        try {
          if (!c.is_array() || c.array.size() != 4)
            bad(c, "a connection is [src_node, src_output, dst_node, dst_input]");
          int64_t src = int_of(c.array[0], "connection source"),
                  sp = int_of(c.array[1], "connection source output");
          int64_t dst = int_of(c.array[2], "connection destination"),
                  dp = int_of(c.array[3], "connection destination input");
          std::string via = "connection [" + std::to_string(src) + ", " + std::to_string(sp) +
                            ", " + std::to_string(dst) + ", " + std::to_string(dp) + "]";
          if (dst < 1 || dst > num_nodes)
            bad(c, via + " goes to node " + std::to_string(dst) + ", which does not exist");
          feed(int(dst), dp, src >= 0 ? src : dst + src, sp, via);
        } catch (const Error& e) {
          faults.add(0, e.message());
        }
      }
    }
  }
  bool auto_connect = false;
  if (const json::Value* a = root.find("auto_connect")) {
    if (a->kind == json::Value::Kind::boolean)
      auto_connect = a->b;
    else if (a->kind != json::Value::Kind::null)
      faults.add(0, "'auto_connect' must be true or false (at " + where(*a) + ")");
  }
  for (int n = 1; n <= num_nodes; ++n) {
    Node& node = g.nodes[size_t(n)];
    const Layer& layer = g.layers[size_t(node.layer)];
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (node.inputs[i].valid()) continue;
      if (auto_connect) {
        // The nearest preceding node with an output of the same declared channel count.
        for (int src = n - 1; src >= 0 && !node.inputs[i].valid(); --src) {
          const std::vector<int64_t>& outs =
              src == 0 ? g.inputs_channels
                       : g.layers[size_t(g.nodes[size_t(src)].layer)].declared_out;
          for (size_t p = 0; p < outs.size(); ++p)
            if (outs[p] == layer.declared_in[i]) {
              node.inputs[i] = {src, int(p)};
              break;
            }
        }
      }
      if (!node.inputs[i].valid())
        faults.add(n, g.describe_node(n) + ": input " + std::to_string(i) +
                          (auto_connect ? " is not connected (no earlier node has an output with " +
                                              std::to_string(layer.declared_in[i]) + " channels)"
                                        : " is not connected"));
    }
  }

  // ---- network outputs.
  if (const json::Value* outs = root.find("outputs"); outs && outs->is_array()) {
    std::map<int64_t, PortRef> by_index;
    for (auto& o : outs->array) {
      try {
        if (!o.is_array() || o.array.size() != 3)
          bad(o, "an output is [src_node, src_output, network_output]");
        int64_t src = int_of(o.array[0], "output source"),
                sp = int_of(o.array[1], "output source port");
        int64_t k = int_of(o.array[2], "network output index");
        int64_t node = src >= 0 ? src : num_nodes + 1 + src;
        if (!port_exists(node, sp))
          bad(o, "network output " + std::to_string(k) + " comes from node " +
                     std::to_string(node) + " output " + std::to_string(sp) +
                     ", which does not exist");
        if (k < 0) bad(o, "negative network output index " + std::to_string(k));
        if (by_index.count(k)) bad(o, "network output " + std::to_string(k) + " is given twice");
        by_index[k] = {int(node), int(sp)};
      } catch (const Error& e) {
        faults.add(0, e.message());
      }
    }
    int64_t expect = 0;
    for (auto& [k, ref] : by_index) {
      if (k != expect) {
        faults.add(0, "network output " + std::to_string(expect) +
                          " is missing (outputs must be numbered 0..K-1)");
        break;
      }
      g.outputs.push_back(ref);
      ++expect;
    }
  } else {
    faults.add(0, "'outputs' must be a list of [src_node, src_output, network_output]");
  }
  if (g.outputs.empty() && faults.empty()) faults.add(0, "the network has no outputs");

  // ---- order and channels (also after wiring faults, to report every fault at once).
  try {
    g.schedule = topological_schedule(g);
  } catch (const Error& e) {
    fatal(e);
  }
  infer_and_check_channels(g, faults.list());
  if (g.outputs_channels.size() != g.outputs.size()) {
    faults.add(0, "'outputs_channels' lists " + std::to_string(g.outputs_channels.size()) +
                      " outputs, the network has " + std::to_string(g.outputs.size()));
  } else {
    for (size_t k = 0; k < g.outputs.size(); ++k) {
      PortRef r = g.outputs[k];
      int64_t real = g.nodes[size_t(r.node)].out_channels[size_t(r.port)];
      if (real != kUnknownChannels && real != g.outputs_channels[k])
        faults.add(0, "'outputs_channels' says output " + std::to_string(k) + " has " +
                          std::to_string(g.outputs_channels[k]) + " channels, but " +
                          g.describe_node(r.node) + " gives " + std::to_string(real));
    }
  }
  faults.throw_if_any();
  return g;
}

namespace {

// Pickles share objects (memo GETs): a few hundred bytes can reference one list 2^40 times.
// Converting copies every reference, so the number of values made is bounded.
constexpr size_t kMaxPickledValues = size_t(1) << 20;

json::Value json_from_pickle(const py::Object& o, const std::string& path, size_t& budget) {
  if (budget == 0) {
    fail(ErrorKind::format, path, ": the description holds more than ", kMaxPickledValues,
         " values (counting each reference to a shared object)");
  }
  --budget;
  json::Value v;
  switch (o.kind) {
    case py::Object::Kind::none:
      break;
    case py::Object::Kind::boolean:
      v.kind = json::Value::Kind::boolean;
      v.b = o.b;
      break;
    case py::Object::Kind::integer:
      v.kind = json::Value::Kind::number;
      v.is_integer = true;
      v.integer = o.i;
      v.number = double(o.i);
      break;
    case py::Object::Kind::real:
      v.kind = json::Value::Kind::number;
      v.number = o.d;
      break;
    case py::Object::Kind::string:
      v.kind = json::Value::Kind::string;
      v.str = o.s;
      break;
    case py::Object::Kind::list:
    case py::Object::Kind::tuple:
      v.kind = json::Value::Kind::array;
      for (size_t i = 0; i < o.items.size(); ++i)
        v.array.push_back(
            json_from_pickle(*o.items[i], path + "[" + std::to_string(i) + "]", budget));
      break;
    case py::Object::Kind::dict:
    case py::Object::Kind::ordered_dict:
      v.kind = json::Value::Kind::object;
      for (auto& [k, val] : o.entries) {
        NNX_CHECK(k->kind == py::Object::Kind::string, ErrorKind::format, "key of ", path, " is a ",
                  k->kind_name(), ", expected a string");
        v.object.emplace_back(k->s, json_from_pickle(*val, path + "['" + k->s + "']", budget));
      }
      break;
    default:
      fail(ErrorKind::format, path, ": a ", o.kind_name(),
           " where the description expects plain data");
  }
  return v;
}

}  // namespace

json::Value description_from_pickle(const py::Object& top, const std::string& source) {
  NNX_CHECK(top.is_dict(), ErrorKind::format, source, ": a one-file model is a dict, found a ",
            top.kind_name());
  json::Value v;
  v.kind = json::Value::Kind::object;
  size_t budget = kMaxPickledValues;
  for (auto& [k, val] : top.entries) {
    if (k->kind != py::Object::Kind::string) continue;
    if (k->s == "layers_state_dicts" || k->s == "unique_layers_state_dicts") continue;
    try {
      v.object.emplace_back(k->s, json_from_pickle(*val, "'" + k->s + "'", budget));
    } catch (const Error& e) {
      throw e.with_context(source);
    }
  }
  return v;
}

}  // namespace nnx
