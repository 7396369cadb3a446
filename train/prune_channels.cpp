// Structured channel pruning (nnx/prune.h). Every channel of every NCHW (or N,F) value is a
// position; positions that must go together are united (tied) into groups; a group is removed
// as a whole. With gates, a per-position constant analysis of the gated network proves that a
// removal is exact; constants that leave a removed group are folded into the consumer's bias.
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "graph/planner.h"
#include "importer/call_parser.h"
#include "importer/json.h"
#include "importer/weights.h"
#include "nnx/error.h"
#include "nnx/prune.h"
#include "runtime/model_impl.h"

namespace nnx {
namespace {

const std::set<std::string> kPointwise = {"BatchNorm2d",
                                          "ReLU",
                                          "ReLU6",
                                          "LeakyReLU",
                                          "Hardtanh",
                                          "Sigmoid",
                                          "Tanh",
                                          "SiLU",
                                          "Mish",
                                          "Hardswish",
                                          "Hardsigmoid",
                                          "ELU",
                                          "GELU",
                                          "Softplus",
                                          "Identity",
                                          "Dropout",
                                          "Dropout2d",
                                          "Pruner",
                                          "AllOrNothingPruner"};
const std::set<std::string> kSpatial = {"MaxPool2d", "AvgPool2d",           "AdaptiveAvgPool2d",
                                        "Upsample",  "UpsamplingNearest2d", "UpsamplingBilinear2d"};
// y(g x) = g y(x) for g >= 0: a non-negative gate may be moved in front of them.
const std::set<std::string> kHomogeneous = {
    "ReLU",     "LeakyReLU", "MaxPool2d",           "AvgPool2d", "AdaptiveAvgPool2d",
    "Upsample", "Identity",  "UpsamplingNearest2d", "Dropout",   "Dropout2d"};

bool is_pruner(const std::string& t) {
  return t == "Pruner" || t == "AllOrNothingPruner";
}
bool is_elementwise(const std::string& t) {
  return t == "Add" || t == "Sub" || t == "Mul";
}

struct UnionFind {
  std::vector<int64_t> parent;
  explicit UnionFind(int64_t n) : parent(size_t(n)) { std::iota(parent.begin(), parent.end(), 0); }
  int64_t find(int64_t x) {
    while (parent[size_t(x)] != x) x = parent[size_t(x)] = parent[size_t(parent[size_t(x)])];
    return x;
  }
  void unite(int64_t a, int64_t b) { parent[size_t(find(a))] = find(b); }
};

const Value* kwarg(const Call& c, std::string_view name) {
  for (auto& [k, v] : c.kwargs)
    if (k == name) return &v;
  return nullptr;
}
bool all_zero_value(const Value* v) {
  if (v == nullptr || v->is_none()) return true;
  if (v->is_int()) return v->as_int() == 0;
  if (v->is_sequence()) {
    for (auto& x : v->items())
      if (!x.is_int() || x.as_int() != 0) return false;
    return true;
  }
  return v->is_text() && v->as_text() == "valid";
}
std::string call_text(const Call& c) {
  std::string s = std::string(c.class_name()) + "(";
  bool first = true;
  for (auto& a : c.args) {
    s += (first ? "" : ", ") + a.repr();
    first = false;
  }
  for (auto& [k, v] : c.kwargs) {
    s += (first ? "" : ", ") + k + "=" + v.repr();
    first = false;
  }
  return s + ")";
}
void set_kwarg(Call& c, const std::string& name, Value v) {
  for (auto& [k, x] : c.kwargs)
    if (k == name) {
      x = std::move(v);
      return;
    }
  c.kwargs.emplace_back(name, std::move(v));
}
// Positional argument `i`, or the keyword `name` when it was given so.
void set_arg(Call& c, size_t i, const std::string& name, int64_t v) {
  if (i < c.args.size())
    c.args[i] = Value::integer(v);
  else
    set_kwarg(c, name, Value::integer(v));
}
void erase_kwarg(Call& c, const std::string& name) {
  std::erase_if(c.kwargs, [&](auto& kv) { return kv.first == name; });
}

Tensor f32(const Tensor& t) {
  return t.to(Device::cpu()).to(DType::f32).contiguous();
}

// Keeps `index` along `dim`.
Tensor select(const Tensor& src, int dim, const std::vector<int64_t>& index) {
  Tensor t = f32(src);
  Shape shape = t.shape();
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= shape[d];
  for (int d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
  int64_t n = shape[dim];
  shape[dim] = int64_t(index.size());
  Tensor out = Tensor::empty(shape);
  const float* s = t.data<float>();
  float* o = out.data<float>();
  for (int64_t a = 0; a < outer; ++a)
    for (size_t k = 0; k < index.size(); ++k)
      std::copy_n(s + (a * n + index[k]) * inner, inner,
                  o + (a * int64_t(index.size()) + k) * inner);
  return out;
}

struct Graphs {
  const Graph& g;
  Plan plan;
  std::vector<std::vector<int64_t>> base, count;  // [node][port]
  int64_t total = 0;
  std::vector<std::vector<std::pair<int, int>>> consumers;  // by position base: (node, input)
  std::map<std::pair<int, int>, std::vector<std::pair<int, int>>> users;  // (node,port) -> uses
  std::vector<char> in_plan;

  int64_t pos(PortRef r, int64_t c) const { return base[size_t(r.node)][size_t(r.port)] + c; }
  int64_t channels(PortRef r) const { return count[size_t(r.node)][size_t(r.port)]; }
  const TensorSpec& spec(PortRef r) const { return plan.specs[size_t(r.node)][size_t(r.port)]; }
};

struct Pruning {
  const Model& model;
  const ChannelPruneOptions& opt;
  const Graph& g;
  Graphs G;
  UnionFind uf{0};
  std::vector<char> frozen;              // by root after finalize
  std::vector<char> is_const;            // by position
  std::vector<float> cval;               // by position
  std::vector<std::vector<float>> gate;  // by node (Pruner gates)
  std::vector<std::vector<Call>> calls;  // by layer: the op's repr parsed
  std::vector<Call> layer_call;
  std::vector<std::map<std::string, Tensor>> params;  // by layer, current values
  std::vector<std::vector<std::string>> param_order;
  std::vector<char> bias_added;  // by layer

  Pruning(const Model& m, const ChannelPruneOptions& o)
      : model(m), opt(o), g(m.graph()), G{m.graph(), {}, {}, {}, 0, {}, {}, {}} {}

  std::string type(int n) const { return g.layer_of(n).op->type(); }
  const Op& op(int n) const { return *g.layer_of(n).op; }
  const Call& call(int n) const { return layer_call[size_t(g.nodes[size_t(n)].layer)]; }

  void build_positions() {
    std::vector<TensorSpec> specs;
    std::vector<Shape> shapes = opt.input_shapes;
    if (shapes.empty())
      for (int64_t c : g.inputs_channels) shapes.push_back(Shape{1, c, 32, 32});
    for (auto& s : shapes) specs.push_back({s, DType::f32});
    G.plan = make_plan(g, specs);
    G.in_plan.assign(g.nodes.size(), 0);
    G.in_plan[0] = 1;
    for (int n : G.plan.steps) G.in_plan[size_t(n)] = 1;
    G.base.resize(g.nodes.size());
    G.count.resize(g.nodes.size());
    for (size_t n = 0; n < g.nodes.size(); ++n) {
      size_t ports = n == 0 ? g.inputs_channels.size() : size_t(g.nodes[n].num_outputs);
      G.base[n].assign(ports, 0);
      G.count[n].assign(ports, 0);
      for (size_t p = 0; p < ports; ++p) {
        int64_t c = 0;
        if (G.in_plan[n] && p < G.plan.specs[n].size() && G.plan.specs[n][p].shape.size() >= 2)
          c = G.plan.specs[n][p].shape[1];
        G.base[n][p] = G.total;
        G.count[n][p] = c;
        G.total += c;
      }
    }
    for (int n : G.plan.steps)
      for (size_t i = 0; i < g.nodes[size_t(n)].inputs.size(); ++i) {
        PortRef r = g.nodes[size_t(n)].inputs[i];
        G.users[{r.node, r.port}].push_back({n, int(i)});
      }
    uf = UnionFind(G.total);
    frozen.assign(size_t(G.total), 0);
    layer_call.resize(g.layers.size());
    params.resize(g.layers.size());
    param_order.resize(g.layers.size());
    bias_added.assign(g.layers.size(), 0);
    for (size_t l = 0; l < g.layers.size(); ++l) {
      layer_call[l] = parse_call(g.layers[l].op->repr());
      for (const Param& p : g.layers[l].op->params()) {
        params[l][p.name] = p.value;
        param_order[l].push_back(p.name);
      }
    }
  }

  void freeze(PortRef r) {
    for (int64_t c = 0; c < G.channels(r); ++c) frozen[size_t(G.pos(r, c))] = 1;
  }
  void tie(PortRef a, int64_t ca, PortRef b, int64_t cb) { uf.unite(G.pos(a, ca), G.pos(b, cb)); }

  int groups_of_conv(int n) const {
    const Value* v = kwarg(call(n), "groups");
    return v && v->is_int() ? int(v->as_int()) : 1;
  }

  void build_ties() {
    for (int n : G.plan.steps) {
      const Node& node = g.nodes[size_t(n)];
      std::string t = type(n);
      PortRef out{n, 0};
      auto freeze_all = [&] {
        for (auto& in : node.inputs) freeze(in);
        for (int p = 0; p < node.num_outputs; ++p) freeze({n, p});
      };
      auto same = [&](PortRef a, PortRef b) { return G.channels(a) == G.channels(b); };
      if (t == "Conv2d") {
        int groups = groups_of_conv(n);
        int64_t cin = G.channels(node.inputs[0]), cout = G.channels(out);
        if (groups == 1) continue;
        if (groups == cin && cout % cin == 0) {
          int64_t k = cout / cin;
          for (int64_t c = 0; c < cin; ++c)
            for (int64_t j = 0; j < k; ++j) tie(node.inputs[0], c, out, c * k + j);
        } else {
          freeze_all();
        }
      } else if (t == "Linear") {
        if (G.spec(node.inputs[0]).shape.size() != 2) freeze_all();
      } else if (kPointwise.count(t) || kSpatial.count(t)) {
        for (size_t i = 0; i < node.inputs.size() && int(i) < node.num_outputs; ++i) {
          PortRef o{n, int(i)};
          if (!same(node.inputs[i], o)) {
            freeze(node.inputs[i]);
            freeze(o);
            continue;
          }
          for (int64_t c = 0; c < G.channels(o); ++c) tie(node.inputs[i], c, o, c);
        }
      } else if (is_elementwise(t)) {
        for (auto& in : node.inputs) {
          if (!same(in, out) || G.spec(in).shape.size() != G.spec(out).shape.size()) {
            freeze(in);
            continue;
          }
          for (int64_t c = 0; c < G.channels(out); ++c) tie(in, c, out, c);
        }
      } else if (t == "Cat") {
        const Value* d = kwarg(call(n), "dim");
        int64_t dim = d && d->is_int() ? d->as_int() : 1;
        int rank = G.spec(out).shape.size();
        if (dim < 0) dim += rank;
        if (dim == 1) {
          int64_t off = 0;
          for (auto& in : node.inputs) {
            for (int64_t c = 0; c < G.channels(in); ++c) tie(in, c, out, off + c);
            off += G.channels(in);
          }
        } else {
          bool ok = true;
          for (auto& in : node.inputs) ok = ok && same(in, out);
          if (!ok) {
            freeze_all();
            continue;
          }
          for (auto& in : node.inputs)
            for (int64_t c = 0; c < G.channels(out); ++c) tie(in, c, out, c);
        }
      } else if (t == "Flatten") {
        const Shape& s = G.spec(node.inputs[0]).shape;
        const Value* sd = kwarg(call(n), "start_dim");
        const Value* ed = kwarg(call(n), "end_dim");
        int64_t start = sd ? sd->as_int() : 1, end = ed ? ed->as_int() : -1;
        if (s.size() == 4 && start == 1 && (end == -1 || end == 3) &&
            G.spec(out).shape.size() == 2) {
          int64_t hw = s[2] * s[3];
          for (int64_t c = 0; c < s[1]; ++c)
            for (int64_t f = 0; f < hw; ++f) tie(node.inputs[0], c, out, c * hw + f);
        } else {
          freeze_all();
        }
      } else if (t == "Constant" || t == "Variable") {
        const Shape& s = G.spec(out).shape;
        if (!(s.size() == 4 && s[0] == 1 && s[2] == 1 && s[3] == 1)) freeze_all();
      } else {
        freeze_all();
      }
    }
    // Shared layers: the same weights at every node.
    for (const Layer& layer : g.layers) {
      if (layer.nodes.size() < 2) continue;
      const Node& a = g.nodes[size_t(layer.nodes[0])];
      for (size_t k = 1; k < layer.nodes.size(); ++k) {
        const Node& b = g.nodes[size_t(layer.nodes[k])];
        if (!G.in_plan[size_t(a.index)] || !G.in_plan[size_t(b.index)]) continue;
        for (int p = 0; p < a.num_outputs; ++p) {
          PortRef pa{a.index, p}, pb{b.index, p};
          if (G.channels(pa) != G.channels(pb)) {
            freeze(pa);
            freeze(pb);
          } else {
            for (int64_t c = 0; c < G.channels(pa); ++c) tie(pa, c, pb, c);
          }
        }
        for (size_t i = 0; i < a.inputs.size(); ++i) {
          if (G.channels(a.inputs[i]) != G.channels(b.inputs[i])) {
            freeze(a.inputs[i]);
            freeze(b.inputs[i]);
          } else {
            for (int64_t c = 0; c < G.channels(a.inputs[i]); ++c)
              tie(a.inputs[i], c, b.inputs[i], c);
          }
        }
      }
    }
    for (size_t p = 0; p < g.inputs_channels.size(); ++p) freeze({0, int(p)});
    for (auto& o : g.outputs) freeze(o);
    std::vector<char> root_frozen(size_t(G.total), 0);
    for (int64_t p = 0; p < G.total; ++p)
      if (frozen[size_t(p)]) root_frozen[size_t(uf.find(p))] = 1;
    frozen = std::move(root_frozen);
  }

  bool group_frozen(int64_t p) { return frozen[size_t(uf.find(p))] != 0; }

  // Zero padding that a constant input would not see everywhere.
  bool conv_exact_for_constants(int n) const {
    const Call& c = call(n);
    const Value* mode = kwarg(c, "padding_mode");
    if (mode && mode->is_text() && mode->as_text() != "zeros") return true;
    return all_zero_value(kwarg(c, "padding"));
  }

  Tensor param(int n, const std::string& name) const {
    auto& m = params[size_t(g.nodes[size_t(n)].layer)];
    auto it = m.find(name);
    return it == m.end() ? Tensor() : f32(it->second);
  }

  // Runs a channel-wise op on a (1, C, 1, 1) (or (1, C)) tensor.
  std::vector<float> run_small(int n, const std::vector<float>& x, int rank) {
    int64_t c = int64_t(x.size());
    Shape shape = rank == 2 ? Shape{1, c} : Shape{1, c, 1, 1};
    Tensor in = Tensor::empty(shape);
    std::copy(x.begin(), x.end(), in.data<float>());
    const Op& o = op(n);
    if (o.output_view_of(0)) return x;
    std::vector<TensorSpec> specs{{shape, DType::f32}};
    auto outs = o.infer_shapes(specs, 1);
    Tensor out = Tensor::empty(outs[0].shape);
    ExecContext ctx;
    o.forward(ctx, std::span(&in, 1), std::span(&out, 1));
    const float* d = out.data<float>();
    return std::vector<float>(d, d + c);
  }

  void analyse_constants() {
    is_const.assign(size_t(G.total), 0);
    cval.assign(size_t(G.total), 0.f);
    gate.resize(g.nodes.size());
    for (int n : G.plan.steps) {
      const Node& node = g.nodes[size_t(n)];
      std::string t = type(n);
      PortRef out{n, 0};
      int64_t cout = node.num_outputs > 0 ? G.channels(out) : 0;
      auto setc = [&](int64_t c, float v) {
        is_const[size_t(G.pos(out, c))] = 1;
        cval[size_t(G.pos(out, c))] = v;
      };
      auto in_const = [&](size_t i, int64_t c) {
        return is_const[size_t(G.pos(node.inputs[i], c))] != 0;
      };
      auto in_val = [&](size_t i, int64_t c) { return cval[size_t(G.pos(node.inputs[i], c))]; };
      if (cout == 0) continue;
      if (kPointwise.count(t)) {
        if (G.channels(node.inputs[0]) != cout) continue;
        int rank = G.spec(out).shape.size() == 2 ? 2 : 4;
        std::vector<float> x(static_cast<size_t>(cout), 0.f);
        for (int64_t c = 0; c < cout; ++c) x[size_t(c)] = in_val(0, c);
        std::vector<float> y = run_small(n, x, rank);
        if (is_pruner(t))
          gate[size_t(n)] = run_small(n, std::vector<float>(size_t(cout), 1.f), rank);
        for (int64_t c = 0; c < cout; ++c) {
          if (in_const(0, c))
            setc(c, y[size_t(c)]);
          else if (is_pruner(t) && gate[size_t(n)][size_t(c)] == 0.f)
            setc(c, 0.f);
        }
      } else if (kSpatial.count(t)) {
        bool exact = t != "AvgPool2d" || all_zero_value(kwarg(call(n), "padding"));
        for (int64_t c = 0; c < cout && c < G.channels(node.inputs[0]); ++c)
          if (in_const(0, c) && (exact || in_val(0, c) == 0.f)) setc(c, in_val(0, c));
      } else if (is_elementwise(t)) {
        for (int64_t c = 0; c < cout; ++c) {
          bool all = true, zero = false;
          float v = 0;
          for (size_t i = 0; i < node.inputs.size(); ++i) {
            int64_t ci = G.channels(node.inputs[i]) == 1 ? 0 : c;
            if (G.channels(node.inputs[i]) == 0) {
              all = false;
              continue;
            }
            bool k = in_const(i, ci);
            float x = in_val(i, ci);
            if (t == "Mul" && k && x == 0.f) zero = true;
            if (!k) {
              all = false;
              continue;
            }
            v = i == 0 ? x : t == "Add" ? v + x : t == "Sub" ? v - x : v * x;
          }
          if (zero)
            setc(c, 0.f);
          else if (all)
            setc(c, v);
        }
      } else if (t == "Cat") {
        const Value* d = kwarg(call(n), "dim");
        int64_t dim = d && d->is_int() ? d->as_int() : 1;
        if (dim < 0) dim += G.spec(out).shape.size();
        if (dim != 1) continue;
        int64_t off = 0;
        for (size_t i = 0; i < node.inputs.size(); ++i) {
          for (int64_t c = 0; c < G.channels(node.inputs[i]); ++c)
            if (in_const(i, c)) setc(off + c, in_val(i, c));
          off += G.channels(node.inputs[i]);
        }
      } else if (t == "Flatten") {
        const Shape& s = G.spec(node.inputs[0]).shape;
        if (s.size() != 4 || s[1] * s[2] * s[3] != cout) continue;
        int64_t hw = s[2] * s[3];
        for (int64_t f = 0; f < cout; ++f)
          if (in_const(0, f / hw)) setc(f, in_val(0, f / hw));
      } else if (t == "Conv2d" || t == "Linear") {
        Tensor w = param(n, "weight"), b = param(n, "bias");
        if (!w.defined()) continue;
        int64_t cin = G.channels(node.inputs[0]);
        int64_t per = w.size(1);
        int64_t k = w.numel() / (w.size(0) * per);
        bool exact = t == "Linear" || conv_exact_for_constants(n);
        if (t == "Linear" && G.spec(out).shape.size() != 2) continue;
        int groups = t == "Conv2d" ? groups_of_conv(n) : 1;
        int64_t out_per_group = cout / groups;
        const float* wd = w.data<float>();
        for (int64_t o = 0; o < cout; ++o) {
          int64_t first = (o / out_per_group) * per;
          bool all = true, zero = true;
          double v = b.defined() ? b.data<float>()[o] : 0.0;
          for (int64_t j = 0; j < per && first + j < cin; ++j) {
            const float* wj = wd + (o * per + j) * k;
            // A live input seen through all-zero weights adds nothing.
            if (!in_const(0, first + j)) {
              if (std::all_of(wj, wj + k, [](float x) { return x == 0.f; })) continue;
              all = false;
              break;
            }
            float x = in_val(0, first + j);
            if (x != 0.f) zero = false;
            double s = 0;
            for (int64_t q = 0; q < k; ++q) s += wd[(o * per + j) * k + q];
            v += s * x;
          }
          if (all && (zero || exact)) setc(o, float(v));
        }
      } else if (t == "Constant" || t == "Variable") {
        Tensor v = param(n, "t");
        if (v.defined() && v.numel() == cout)
          for (int64_t c = 0; c < cout; ++c) setc(c, v.data<float>()[c]);
      }
    }
  }

  // Inputs of Conv2d (groups 1) and Linear: where a removed group's values leave it.
  struct Exit {
    int node;
    int64_t channel;
    int64_t position;
  };
  std::map<int64_t, std::vector<Exit>> exits;  // by root

  bool consumes_channels(int n) const {
    std::string t = type(n);
    return (t == "Conv2d" && groups_of_conv(n) == 1) || t == "Linear";
  }

  void find_exits() {
    for (int n : G.plan.steps) {
      if (!consumes_channels(n)) continue;
      PortRef in = g.nodes[size_t(n)].inputs[0];
      for (int64_t c = 0; c < G.channels(in); ++c)
        exits[uf.find(G.pos(in, c))].push_back({n, c, G.pos(in, c)});
    }
  }

  bool absorbable(const Exit& e) const {
    float v = is_const[size_t(e.position)] ? cval[size_t(e.position)] : 0.f;
    return v == 0.f || type(e.node) == "Linear" || conv_exact_for_constants(e.node);
  }

  // ---- choosing groups
  std::vector<char> removed;  // by root

  void choose() {
    removed.assign(size_t(G.total), 0);
    std::vector<int64_t> roots;
    {
      std::vector<char> seen(size_t(G.total), 0);
      for (int64_t p = 0; p < G.total; ++p) {
        int64_t r = uf.find(p);
        if (!seen[size_t(r)]) {
          seen[size_t(r)] = 1;
          roots.push_back(r);
        }
      }
    }
    if (opt.score == ChannelScore::gates) {
      for (int n : G.plan.steps) {
        std::string t = type(n);
        if (!is_pruner(t)) continue;
        const Value* pr = kwarg(call(n), "prunable");
        const Value* act = kwarg(call(n), "activated");
        if (!(pr && pr->is_bool() && pr->as_bool())) continue;
        if (act && act->is_bool() && !act->as_bool()) continue;
        for (int64_t c = 0; c < G.channels({n, 0}); ++c) {
          if (gate[size_t(n)][size_t(c)] != 0.f) continue;
          int64_t r = uf.find(G.pos({n, 0}, c));
          if (frozen[size_t(r)]) continue;
          bool ok = true;
          for (const Exit& e : exits[r]) ok = ok && is_const[size_t(e.position)] && absorbable(e);
          if (ok) removed[size_t(r)] = 1;
        }
      }
      return;
    }
    // Scores: sum over the group's filters (l1, l2) or BatchNorm scales (slim).
    std::map<int64_t, double> score;
    std::map<int64_t, int> owner;  // root -> layer
    for (int n : G.plan.steps) {
      std::string t = type(n);
      const Layer& layer = g.layer_of(n);
      if (layer.nodes[0] != n) continue;
      bool filters = (opt.score != ChannelScore::slim) && (t == "Conv2d" || t == "Linear");
      bool scales = opt.score == ChannelScore::slim && t == "BatchNorm2d";
      if (!filters && !scales) continue;
      Tensor w = param(n, "weight");
      if (!w.defined()) continue;
      int64_t cout = G.channels({n, 0});
      int64_t per = w.numel() / std::max<int64_t>(1, w.size(0));
      const float* d = w.data<float>();
      for (int64_t o = 0; o < cout && o < w.size(0); ++o) {
        int64_t r = uf.find(G.pos({n, 0}, o));
        if (frozen[size_t(r)]) continue;
        double s = 0;
        if (scales) {
          s = std::abs(d[o]);
        } else {
          for (int64_t q = 0; q < per; ++q) {
            double x = d[o * per + q];
            s += opt.score == ChannelScore::l1 ? std::abs(x) : x * x;
          }
          s = opt.score == ChannelScore::l1 ? s / double(per) : std::sqrt(s / double(per));
        }
        score[r] += s;
        if (!owner.count(r)) owner[r] = layer.description_index;
      }
    }
    std::vector<std::pair<double, int64_t>> ranked;
    for (auto& [r, s] : score) ranked.push_back({s, r});
    std::sort(ranked.begin(), ranked.end());
    if (opt.global) {
      size_t k = size_t(std::floor(opt.amount * double(ranked.size())));
      for (size_t i = 0; i < k && i < ranked.size(); ++i) removed[size_t(ranked[i].second)] = 1;
    } else {
      std::map<int, std::vector<int64_t>> by_layer;
      for (auto& [s, r] : ranked) by_layer[owner[r]].push_back(r);
      for (auto& [l, rs] : by_layer) {
        size_t k = size_t(std::floor(opt.amount * double(rs.size())));
        k = std::min(k, rs.size() - 1);
        for (size_t i = 0; i < k; ++i) removed[size_t(rs[i])] = 1;
      }
    }
  }

  bool kept(PortRef r, int64_t c) { return !removed[size_t(uf.find(G.pos(r, c)))]; }
  std::vector<int64_t> kept_list(PortRef r) {
    std::vector<int64_t> k;
    for (int64_t c = 0; c < G.channels(r); ++c)
      if (kept(r, c)) k.push_back(c);
    return k;
  }

  // ---- node fates
  enum class Fate { keep, deleted, constant, bypass };
  std::vector<Fate> fate;
  std::vector<char> small;

  bool bypass_pruners() const { return opt.score == ChannelScore::gates; }

  // Decides what becomes of every node; returns a removed root to restore when a constant
  // would reach a place that needs full spatial size, else -1.
  int64_t decide() {
    fate.assign(g.nodes.size(), Fate::keep);
    small.assign(g.nodes.size(), 0);
    for (int n : G.plan.steps) {
      const Node& node = g.nodes[size_t(n)];
      std::string t = type(n);
      int64_t positions = 0, kept_out = 0;
      for (int p = 0; p < node.num_outputs; ++p) {
        positions += G.channels({n, p});
        kept_out += int64_t(kept_list({n, p}).size());
      }
      if (positions > 0 && kept_out == 0) {
        fate[size_t(n)] = Fate::deleted;
        continue;
      }
      bool any_small = false, all_small = true;
      for (auto& in : node.inputs) {
        if (fate[size_t(in.node)] == Fate::deleted) continue;
        bool s = small[size_t(in.node)] != 0;
        any_small = any_small || s;
        all_small = all_small && s;
      }
      if (consumes_channels(n)) {
        PortRef in = node.inputs[0];
        if (G.channels(in) > 0 && kept_list(in).empty()) {
          fate[size_t(n)] = Fate::constant;
          small[size_t(n)] = 1;
          continue;
        }
      }
      if (bypass_pruners() && is_pruner(t)) fate[size_t(n)] = Fate::bypass;
      if (!any_small) continue;
      if (kPointwise.count(t) || (is_elementwise(t) && all_small)) {
        small[size_t(n)] = 1;
      } else if (!is_elementwise(t)) {
        return restore_for(n);
      }
    }
    for (auto& o : g.outputs)
      if (small[size_t(o.node)]) return restore_for(o.node);
    return -1;
  }

  // The first removed group feeding the constant node behind `n`.
  int64_t restore_for(int n) {
    std::vector<int> stack{n};
    std::set<int> seen;
    while (!stack.empty()) {
      int v = stack.back();
      stack.pop_back();
      if (!seen.insert(v).second) continue;
      if (fate[size_t(v)] == Fate::constant) {
        PortRef in = g.nodes[size_t(v)].inputs[0];
        for (int64_t c = 0; c < G.channels(in); ++c) {
          int64_t r = uf.find(G.pos(in, c));
          if (removed[size_t(r)]) return r;
        }
      }
      for (auto& in : g.nodes[size_t(v)].inputs)
        if (in.node > 0 && small[size_t(in.node)]) stack.push_back(in.node);
    }
    fail(ErrorKind::unsupported, model.source(), ": pruning left ", g.describe_node(n),
         " without a value of full size");
  }

  // ---- rewriting weights
  Tensor& mparam(int layer, const std::string& name) {
    Tensor& t = params[size_t(layer)][name];
    t = f32(t).clone();
    return t;
  }

  // Adds the constants of removed input channels into the consumers' biases.
  void absorb() {
    std::set<std::pair<int, int>> done;  // (layer, channel) of shared layers once
    for (auto& [r, list] : exits) {
      if (!removed[size_t(r)]) continue;
      for (const Exit& e : list) {
        float v = is_const[size_t(e.position)] ? cval[size_t(e.position)] : 0.f;
        if (v == 0.f || fate[size_t(e.node)] == Fate::deleted) continue;
        int layer = g.nodes[size_t(e.node)].layer;
        if (!done.insert({layer, int(e.channel)}).second) continue;
        Tensor w = param(e.node, "weight");
        int64_t cout = w.size(0), per = w.size(1), k = w.numel() / (cout * per);
        if (!params[size_t(layer)].count("bias")) {
          params[size_t(layer)]["bias"] = Tensor::zeros(Shape{cout});
          param_order[size_t(layer)].push_back("bias");
          bias_added[size_t(layer)] = 1;
        }
        Tensor& b = mparam(layer, "bias");
        const float* wd = w.data<float>();
        float* bd = b.data<float>();
        for (int64_t o = 0; o < cout; ++o) {
          double s = 0;
          for (int64_t q = 0; q < k; ++q) s += wd[(o * per + e.channel) * k + q];
          bd[o] = float(bd[o] + s * v);
        }
      }
    }
  }

  std::map<int, std::vector<float>> mul_fallback;  // pruner node -> gate to multiply by

  // Folds each bypassed Pruner's gate into the producer, else marks it for a Mul.
  void fold_gates() {
    for (int n : G.plan.steps) {
      if (fate[size_t(n)] != Fate::bypass) continue;
      const std::vector<float>& gt = gate[size_t(n)];
      bool ones = std::all_of(gt.begin(), gt.end(), [](float x) { return x == 1.f; });
      if (ones) continue;
      bool nonneg = std::all_of(gt.begin(), gt.end(), [](float x) { return x >= 0.f; });
      PortRef src = g.nodes[size_t(n)].inputs[0];
      bool folded = false;
      while (src.node > 0) {
        const Layer& layer = g.layer_of(src.node);
        auto it = G.users.find({src.node, src.port});
        if (layer.nodes.size() != 1 || it == G.users.end() || it->second.size() != 1) break;
        std::string t = layer.op->type();
        int l = g.nodes[size_t(src.node)].layer;
        auto scale_rows = [&](const std::string& name) {
          if (!params[size_t(l)].count(name)) return;
          Tensor& w = mparam(l, name);
          int64_t rows = name == "t" ? w.size(1) : w.size(0);
          int64_t per = w.numel() / rows;
          float* d = w.data<float>();
          for (int64_t o = 0; o < rows && o < int64_t(gt.size()); ++o)
            for (int64_t q = 0; q < per; ++q) d[o * per + q] *= gt[size_t(o)];
        };
        if (t == "Conv2d" || t == "Linear") {
          scale_rows("weight");
          scale_rows("bias");
          folded = true;
        } else if (t == "BatchNorm2d" && params[size_t(l)].count("weight")) {
          scale_rows("weight");
          scale_rows("bias");
          folded = true;
        } else if (t == "Constant" || t == "Variable") {
          scale_rows("t");
          folded = true;
        } else if ((kHomogeneous.count(t) && nonneg) || fate[size_t(src.node)] == Fate::bypass) {
          src = g.nodes[size_t(src.node)].inputs[0];
          continue;
        }
        break;
      }
      if (!folded) mul_fallback[n] = gt;
    }
  }

  // ---- emitting the new description
  struct NewLayer {
    std::string text;
    StateDict state;
    std::vector<int> nodes;  // new indices
  };
  std::vector<NewLayer> new_layers;
  std::map<int, int> layer_map;                     // old layer -> new layer
  std::map<std::pair<int, int>, PortRef> port_map;  // old (node, port) -> new
  struct NewNode {
    std::vector<PortRef> inputs;
    std::vector<int64_t> in_ch, out_ch;
  };
  std::vector<NewNode> new_nodes{NewNode{}};

  PortRef resolve(PortRef r) {
    while (r.node > 0 && fate[size_t(r.node)] == Fate::bypass && !mul_fallback.count(r.node))
      r = g.nodes[size_t(r.node)].inputs[0];
    auto it = port_map.find({r.node, r.port});
    return it == port_map.end() ? PortRef{} : it->second;
  }

  int64_t new_channels(PortRef old) {
    if (old.node == 0) return g.inputs_channels[size_t(old.port)];
    if (G.channels(old) == 0) return g.nodes[size_t(old.node)].out_channels[size_t(old.port)];
    return int64_t(kept_list(old).size());
  }

  int add_node(int layer, std::vector<PortRef> inputs, std::vector<int64_t> in_ch,
               std::vector<int64_t> out_ch) {
    int idx = int(new_nodes.size());
    new_nodes.push_back({std::move(inputs), std::move(in_ch), std::move(out_ch)});
    new_layers[size_t(layer)].nodes.push_back(idx);
    return idx;
  }

  std::string constant_text(const Shape& s) {
    std::string shape = "(";
    for (int d = 0; d < s.size(); ++d) shape += (d ? ", " : "") + std::to_string(s[d]);
    return "nn_executor.models.Constant(t=torch.zeros(" + shape + "),dtype=torch.float32))";
  }

  // The layer text and state of old node n with its kept channels.
  NewLayer rewrite(int n) {
    const Node& node = g.nodes[size_t(n)];
    int l = node.layer;
    std::string t = type(n);
    Call c = layer_call[size_t(l)];
    auto& ps = params[size_t(l)];
    NewLayer out;
    std::vector<int64_t> ko = node.num_outputs > 0 ? kept_list({n, 0}) : std::vector<int64_t>{};
    std::vector<int64_t> ki =
        node.inputs.empty() ? std::vector<int64_t>{} : kept_list(node.inputs[0]);
    bool full_out = node.num_outputs == 0 || int64_t(ko.size()) == G.channels({n, 0});
    auto state = [&](const std::string& name, Tensor v) { out.state.emplace_back(name, v); };
    if (fate[size_t(n)] == Fate::constant) {
      Tensor b = ps.count("bias") ? select(ps.at("bias"), 0, ko)
                                  : Tensor::zeros(Shape{int64_t(ko.size())});
      Shape s = t == "Linear" ? Shape{1, int64_t(ko.size())} : Shape{1, int64_t(ko.size()), 1, 1};
      out.text = constant_text(s);
      state("t", b.reshape(s));
      return out;
    }
    if (t == "Conv2d") {
      int groups = groups_of_conv(n);
      if (groups == 1) {
        set_arg(c, 0, "in_channels", int64_t(ki.size()));
      } else {
        int64_t mult = G.channels({n, 0}) / G.channels(node.inputs[0]);
        set_arg(c, 0, "in_channels", int64_t(ko.size()) / mult);
        set_kwarg(c, "groups", Value::integer(int64_t(ko.size()) / mult));
      }
      set_arg(c, 1, "out_channels", int64_t(ko.size()));
      if (bias_added[size_t(l)]) erase_kwarg(c, "bias");
      Tensor w = select(ps.at("weight"), 0, ko);
      if (groups == 1) w = select(w, 1, ki);
      state("weight", w);
      if (ps.count("bias")) state("bias", select(ps.at("bias"), 0, ko));
    } else if (t == "Linear") {
      set_arg(c, 0, "in_features", int64_t(ki.size()));
      set_arg(c, 1, "out_features", int64_t(ko.size()));
      if (bias_added[size_t(l)]) set_kwarg(c, "bias", Value::boolean(true));
      state("weight", select(select(ps.at("weight"), 0, ko), 1, ki));
      if (ps.count("bias")) state("bias", select(ps.at("bias"), 0, ko));
    } else if (t == "BatchNorm2d" || is_pruner(t) ||
               ((t == "Constant" || t == "Variable") && !full_out)) {
      if (t == "BatchNorm2d") set_arg(c, 0, "num_features", int64_t(ko.size()));
      if (is_pruner(t)) set_arg(c, 0, "ch", int64_t(ko.size()));
      for (auto& name : param_order[size_t(l)]) {
        Tensor v = ps.at(name);
        if (v.dim() == 1 && v.size(0) == G.channels({n, 0}))
          v = select(v, 0, ko);
        else if (v.dim() == 4 && v.size(1) == G.channels({n, 0}))
          v = select(v, 1, ko);
        state(name, v);
      }
      if (t == "Constant" || t == "Variable") {
        out.text = (t == "Constant" ? "nn_executor.models.Constant(t=torch.zeros((1, "
                                    : "nn_executor.models.Variable(t=torch.zeros((1, ") +
                   std::to_string(ko.size()) + ", 1, 1),dtype=torch.float32))";
        return out;
      }
    } else {
      for (auto& name : param_order[size_t(l)]) state(name, ps.at(name));
      out.text = g.layers[size_t(l)].call_text;
      return out;
    }
    out.text = call_text(c);
    return out;
  }

  Model emit() {
    std::vector<char> live(g.nodes.size(), 0);
    // Dead code: nodes no network output needs.
    std::vector<int> stack;
    for (auto& o : g.outputs) stack.push_back(o.node);
    while (!stack.empty()) {
      int v = stack.back();
      stack.pop_back();
      if (v <= 0 || live[size_t(v)]) continue;
      live[size_t(v)] = 1;
      if (fate[size_t(v)] == Fate::constant) continue;
      for (auto& in : g.nodes[size_t(v)].inputs)
        if (in.node > 0 && fate[size_t(in.node)] != Fate::deleted) stack.push_back(in.node);
    }
    for (size_t p = 0; p < g.inputs_channels.size(); ++p)
      port_map[{0, int(p)}] = PortRef{0, int(p)};
    for (int n : G.plan.steps) {
      if (!live[size_t(n)] || fate[size_t(n)] == Fate::deleted) continue;
      const Node& node = g.nodes[size_t(n)];
      if (fate[size_t(n)] == Fate::bypass) {
        auto it = mul_fallback.find(n);
        if (it == mul_fallback.end()) continue;
        std::vector<int64_t> ko = kept_list({n, 0});
        std::vector<float> gk;
        for (int64_t c : ko) gk.push_back(it->second[size_t(c)]);
        Shape s{1, int64_t(ko.size()), 1, 1};
        Tensor t = Tensor::empty(s);
        std::copy(gk.begin(), gk.end(), t.data<float>());
        new_layers.push_back({constant_text(s), {{"t", t}}, {}});
        int cn = add_node(int(new_layers.size()) - 1, {}, {}, {int64_t(ko.size())});
        new_layers.push_back({"nn_executor.models.Mul(num=2)", {}, {}});
        PortRef src = resolve(node.inputs[0]);
        int mn = add_node(int(new_layers.size()) - 1, {src, PortRef{cn, 0}},
                          {int64_t(ko.size()), int64_t(ko.size())}, {int64_t(ko.size())});
        port_map[{n, 0}] = PortRef{mn, 0};
        continue;
      }
      int l = node.layer;
      std::vector<PortRef> ins;
      std::vector<int64_t> in_ch;
      if (fate[size_t(n)] != Fate::constant) {
        for (auto& in : node.inputs) {
          PortRef r = resolve(in);
          if (!r.valid()) continue;  // a Cat input whose channels all went
          PortRef old = in;
          while (old.node > 0 && fate[size_t(old.node)] == Fate::bypass &&
                 !mul_fallback.count(old.node))
            old = g.nodes[size_t(old.node)].inputs[0];
          ins.push_back(r);
          in_ch.push_back(new_channels(old));
        }
      }
      std::vector<int64_t> out_ch;
      for (int p = 0; p < node.num_outputs; ++p) out_ch.push_back(new_channels({n, p}));
      int nl;
      bool shared = g.layers[size_t(l)].nodes.size() > 1 && fate[size_t(n)] != Fate::constant;
      if (shared && layer_map.count(l)) {
        nl = layer_map[l];
      } else {
        new_layers.push_back(rewrite(n));
        nl = int(new_layers.size()) - 1;
        if (shared) layer_map[l] = nl;
      }
      int idx = add_node(nl, ins, in_ch, out_ch);
      for (int p = 0; p < node.num_outputs; ++p) port_map[{n, p}] = PortRef{idx, p};
    }

    std::vector<json::Value> connections, outputs, layers;
    for (size_t n = 1; n < new_nodes.size(); ++n)
      for (size_t i = 0; i < new_nodes[n].inputs.size(); ++i) {
        PortRef in = new_nodes[n].inputs[i];
        connections.push_back(json::integers({in.node, in.port, int64_t(n), int64_t(i)}));
      }
    for (size_t k = 0; k < g.outputs.size(); ++k) {
      PortRef r = resolve(g.outputs[k]);
      NNX_CHECK(r.valid(), ErrorKind::unsupported, model.source(), ": pruning lost output ", k);
      outputs.push_back(json::integers({r.node, r.port, int64_t(k)}));
    }
    std::vector<StateDict> dicts;
    for (auto& nl : new_layers) {
      const NewNode& first = new_nodes[size_t(nl.nodes[0])];
      std::vector<int64_t> idx(nl.nodes.begin(), nl.nodes.end());
      layers.push_back(
          json::array({json::integers(idx), json::string(nl.text),
                       json::array({json::integers(first.in_ch), json::integers(first.out_ch)})}));
      dicts.push_back(nl.state);
    }
    json::Value desc = json::object({{"connections", json::array(std::move(connections))},
                                     {"outputs", json::array(std::move(outputs))},
                                     {"inputs_channels", json::integers(g.inputs_channels)},
                                     {"outputs_channels", json::integers(g.outputs_channels)},
                                     {"layers", json::array(std::move(layers))}});
    LoadOptions lo;
    lo.map_weights = false;
    WeightsReader reader = [&](size_t) { return dicts; };
    return assemble_model(desc, model.source() + " (pruned)", nullptr, reader,
                          model.source() + " (pruned)", lo);
  }
};

}  // namespace

ChannelPruneResult prune_channels(const Model& model, const ChannelPruneOptions& options) {
  NNX_CHECK(model.defined(), ErrorKind::usage, "prune_channels of an empty Model");
  NNX_CHECK(options.score == ChannelScore::gates || (options.amount >= 0 && options.amount < 1),
            ErrorKind::usage, "pruning amount must be in [0, 1), got ", options.amount);
  Pruning p(model, options);
  p.build_positions();
  p.build_ties();
  p.analyse_constants();
  p.find_exits();
  p.choose();
  for (;;) {
    int64_t r = p.decide();
    if (r < 0) break;
    p.removed[size_t(r)] = 0;
  }
  p.absorb();
  p.fold_gates();
  ChannelPruneResult result;
  result.model = p.emit();
  std::set<int64_t> roots, gone;
  for (int64_t q = 0; q < p.G.total; ++q) {
    int64_t r = p.uf.find(q);
    roots.insert(r);
    if (p.removed[size_t(r)]) gone.insert(r);
  }
  result.groups_total = int64_t(roots.size());
  result.groups_removed = int64_t(gone.size());
  const Graph& g = model.graph();
  for (const Layer& layer : g.layers) {
    std::string t = layer.op->type();
    if (t != "Conv2d" && t != "Linear" && t != "BatchNorm2d") continue;
    int n = layer.nodes[0];
    if (!p.G.in_plan[size_t(n)]) continue;
    ChannelCount cc{layer.description_index, t, p.G.channels({n, 0}), 0};
    if (p.fate[size_t(n)] == Pruning::Fate::keep || p.fate[size_t(n)] == Pruning::Fate::constant)
      cc.after = int64_t(p.kept_list({n, 0}).size());
    result.channels.push_back(cc);
  }
  return result;
}

}  // namespace nnx
