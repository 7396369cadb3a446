// nnx graph: the network drawn as Graphviz DOT, written here, or as SVG/PNG by Graphviz's own
// `dot` run as a subprocess on that text. User ops the command cannot build are drawn as
// placeholders: the description alone fixes where they stand and what feeds them.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>

#include "importer/call_parser.h"
#include "importer/description.h"
#include "importer/json.h"
#include "importer/pth.h"
#include "importer/zip.h"
#include "nnx/registry.h"
#include "tools/nnx/cli.h"

extern char** environ;

namespace nnx::cli {
namespace {

namespace fs = std::filesystem;

// ---- placeholders for unregistered user ops ---------------------------------------------------

// A user op this process has no factory for. Its place in the graph, its inputs and its declared
// output channels all come from the description, so the drawing is exact up to it; its output
// shapes are unknown, and so are the shapes of everything computed from them. It is registered
// only by `nnx graph`, which never runs the network, and cannot run.
class PlaceholderOp final : public Op {
 public:
  explicit PlaceholderOp(const Call& call) : name_(call.name), repr_(call.text) {}
  std::string type() const override { return name_; }
  std::string python_module() const override {
    return name_.substr(0, name_.rfind('.') == std::string::npos ? 0 : name_.rfind('.'));
  }
  std::string repr() const override { return repr_; }
  void check_arity(int, int) const override {}
  std::vector<int64_t> infer_channels(std::span<const int64_t>, int num_outputs) const override {
    return std::vector<int64_t>(size_t(num_outputs), kUnknownChannels);  // the declared ones
  }
  std::vector<TensorSpec> infer_shapes(std::span<const TensorSpec>, int) const override {
    fail(ErrorKind::unsupported, "user op '", name_, "' is not registered: shapes unknown");
  }

 protected:
  void forward_cpu(const ExecContext&, std::span<const Tensor>, std::span<Tensor>) const override {
    fail(ErrorKind::unsupported, "user op '", name_, "' is not registered: it cannot run");
  }

 private:
  std::string name_, repr_;
};

// The prefixes under which the registry finds built-in ops (ARCH_FORMAT.md section 6); any
// other prefix names a user op.
bool is_builtin_prefix(std::string_view prefix) {
  if (prefix.empty() || prefix == "torch.nn" || prefix == "nn_executor.models" ||
      prefix == "nn_executor.pruning.pruners" || prefix == "nnx" || prefix == "nn")
    return true;
  constexpr std::string_view modules = "torch.nn.modules.";
  return prefix.starts_with(modules) && prefix.size() > modules.size() &&
         prefix.find('.', modules.size()) == std::string_view::npos;
}

// The constructor strings of a description's layers, in every layer form of the format.
std::vector<std::string> layer_calls(const json::Value& root) {
  std::vector<std::string> calls;
  const json::Value* layers = root.is_object() ? root.find("layers") : nullptr;
  if (!layers && root.is_object()) layers = root.find("unique_layers_recreators");
  if (!layers || !layers->is_array()) return calls;
  for (const json::Value& l : layers->array) {
    if (l.is_string()) {
      calls.push_back(l.str);
    } else if (l.is_array() && !l.array.empty()) {
      const auto& a = l.array;
      if (a[0].is_string())
        calls.push_back(a[0].str);
      else if (a.size() == 4 && a[1].is_string() && a[3].is_string())
        calls.push_back(a[3].str + "." + a[1].str);  // [IDX, REPR, CH, MODULE]
      else if (a.size() >= 2 && a[1].is_string())
        calls.push_back(a[1].str);
    }
  }
  return calls;
}

// Registers a placeholder for every user op of ARCH that nothing registered; returns their
// names. Faults of the description are left for the load to report.
std::vector<std::string> register_placeholders(const std::string& arch) {
  json::Value root;
  try {
    std::string ext = fs::path(arch).extension().string();
    if (ext == ".pth" || ext == ".pt")
      root = description_from_pickle(*read_pth(arch, true), arch);
    else
      root = json::parse_file(arch);
  } catch (const Error&) {
    return {};
  }
  std::vector<std::string> names;
  for (const std::string& text : layer_calls(root)) {
    Call call;
    try {
      call = parse_call(text);
    } catch (const Error&) {
      continue;
    }
    if (is_builtin_prefix(call.prefix())) continue;
    try {
      make_op(call);
      continue;  // registered
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::unsupported) continue;  // registered, refused its arguments
    }
    register_op(call.name, [](const Call& c) { return std::make_shared<PlaceholderOp>(c); });
    names.push_back(call.name);
  }
  return names;
}

// ---- shapes ---------------------------------------------------------------------------------

using MaybeSpec = std::optional<TensorSpec>;

// Output specs of every node at the given input shapes; unknown after a placeholder. A node
// the outputs need whose op refuses its inputs is an error, as for `nnx run`.
std::vector<std::vector<MaybeSpec>> infer_all(const Graph& g, const std::vector<Shape>& inputs,
                                              const std::vector<bool>& needed) {
  for (size_t k = 0; k < inputs.size(); ++k)
    NNX_CHECK(inputs[k].size() >= 2 && inputs[k][1] == g.inputs_channels[k], ErrorKind::shape,
              g.source, ": input ", k, ": expected ", g.inputs_channels[k],
              " channels, found shape ", inputs[k].str());
  std::vector<std::vector<MaybeSpec>> specs(g.nodes.size());
  for (const Shape& s : inputs) specs[0].push_back(TensorSpec{s, DType::f32});
  for (int v : g.schedule) {
    const Node& node = g.nodes[size_t(v)];
    const Op& op = *g.layer_of(v).op;
    specs[size_t(v)].assign(size_t(node.num_outputs), std::nullopt);
    std::vector<TensorSpec> in;
    for (const PortRef& p : node.inputs) {
      const MaybeSpec& s = specs[size_t(p.node)][size_t(p.port)];
      if (!s) break;
      in.push_back(*s);
    }
    if (in.size() != node.inputs.size() || dynamic_cast<const PlaceholderOp*>(&op)) continue;
    try {
      std::vector<TensorSpec> out = op.infer_shapes(in, node.num_outputs);
      for (size_t p = 0; p < out.size() && p < specs[size_t(v)].size(); ++p)
        specs[size_t(v)][p] = out[p];
    } catch (const Error& e) {
      if (!needed[size_t(v)]) continue;  // never runs: drawn without shapes
      std::string shapes;
      for (auto& s : in) shapes += (shapes.empty() ? "" : ", ") + s.shape.str();
      throw Error(e.kind(), g.source + ": " + g.describe_node(v) + ": " + e.message() +
                                " (input shapes " + shapes + ")");
    }
  }
  return specs;
}

std::vector<bool> needed_nodes(const Graph& g) {
  std::vector<bool> needed(g.nodes.size(), false);
  std::vector<int> stack;
  for (const PortRef& o : g.outputs) stack.push_back(o.node);
  while (!stack.empty()) {
    int v = stack.back();
    stack.pop_back();
    if (needed[size_t(v)]) continue;
    needed[size_t(v)] = true;
    for (const PortRef& in : g.nodes[size_t(v)].inputs) stack.push_back(in.node);
  }
  return needed;
}

// ---- DOT --------------------------------------------------------------------------------------

// Text for inside a DOT "..." string: quotes and backslashes escaped (a backslash would
// otherwise start an escape such as \N), control characters and bytes that are not UTF-8 made
// harmless, so that whatever a description holds cannot break out of its label.
std::string dot_escape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
      ++i;
    } else if (c < 0x20 || c == 0x7f) {
      out += ' ';
      ++i;
    } else if (c < 0x80) {
      out += char(c);
      ++i;
    } else {
      size_t n = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
      bool valid = n > 0 && i + n <= s.size();
      for (size_t k = 1; valid && k < n; ++k)
        valid = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
      if (valid) {
        out.append(s.substr(i, n));
        i += n;
      } else {
        out += '?';
        ++i;
      }
    }
  }
  return out;
}

// A label of several lines, each escaped, centred.
std::string dot_label(const std::vector<std::string>& lines) {
  std::string out = "\"";
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i) out += "\\n";
    out += dot_escape(lines[i]);
  }
  return out + "\"";
}

std::string shape_text(const MaybeSpec& s) {
  if (!s) return "?";
  std::string out;
  for (int d = 0; d < s->shape.size(); ++d) out += (d ? "x" : "") + std::to_string(s->shape[d]);
  return s->shape.size() == 0 ? "scalar" : out;
}

// The constructor's arguments, shortened: "(3,64,3, padding=1)" -> "3, 64, 3, padding=1".
std::string arguments_text(const std::string& call_text) {
  size_t open = call_text.find('('), close = call_text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close <= open) return "";
  std::string args;
  bool space = false;
  for (char c : call_text.substr(open + 1, close - open - 1)) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      space = !args.empty();
      continue;
    }
    if (space && c != ',' && c != ')' && c != ']') args += ' ';
    space = false;
    args += c;
    if (c == ',') space = true;
  }
  // Long lists end at the last whole top-level argument that fits.
  constexpr size_t kMax = 40;
  if (args.size() > kMax) {
    size_t cut = 0;
    int depth = 0;
    for (size_t i = 0; i <= kMax; ++i) {
      char c = args[i];
      depth += (c == '(' || c == '[' || c == '{') - (c == ')' || c == ']' || c == '}');
      if (c == ',' && depth == 0) cut = i;
    }
    if (cut == 0) {
      cut = kMax;
      while (cut > 0 && (static_cast<unsigned char>(args[cut]) & 0xc0) == 0x80) --cut;
      args = args.substr(0, cut) + "...";
    } else {
      args = args.substr(0, cut) + ", ...";
    }
  }
  return args;
}

std::string count_text(int64_t n) {
  char buf[32];
  if (n >= 1000000)
    std::snprintf(buf, sizeof buf, "%.1fM", double(n) / 1e6);
  else if (n >= 1000)
    std::snprintf(buf, sizeof buf, "%.1fk", double(n) / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  return buf;
}

// Fill colours by op family, so that the structure shows at a glance.
const char* fill_for(const Op& op) {
  if (dynamic_cast<const PlaceholderOp*>(&op)) return "#eeeeee";
  std::string t = op.type();
  if (t == "Conv2d" || t == "Linear") return "#cfe2f3";
  if (t == "BatchNorm2d") return "#d9ead3";
  if (t.find("Pool") != std::string::npos || t == "Upsample") return "#e6dcf0";
  if (t == "Add" || t == "Sub" || t == "Mul" || t == "Cat") return "#f4cccc";
  if (t == "Flatten" || t == "Identity" || t == "Dropout") return "#f3f3f3";
  if (t.find('.') != std::string::npos) return "#fff2cc";  // a registered user op
  return "#fce5cd";                                        // activations and the rest
}

std::string to_dot(const Model& model, const std::vector<std::vector<MaybeSpec>>& specs,
                   const std::vector<bool>& needed) {
  const Graph& g = model.graph();
  std::ostringstream dot;
  dot << "digraph nnx {\n"
      << "  graph [rankdir=TB, fontname=\"Helvetica\", fontsize=11, labelloc=t, nodesep=0.3, "
         "ranksep=0.35, label="
      << dot_label({fs::path(model.source()).filename().string()}) << "];\n"
      << "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10, "
         "color=\"#666666\", margin=\"0.12,0.04\"];\n"
      << "  edge [fontname=\"Helvetica\", fontsize=8, color=\"#666666\", fontcolor=\"#444444\"];\n";
  auto port_name = [&](const PortRef& p) {
    return p.node == 0 ? "in" + std::to_string(p.port) : "n" + std::to_string(p.node);
  };
  for (int k = 0; k < g.num_inputs(); ++k)
    dot << "  in" << k << " [shape=oval, fillcolor=\"#b6d7a8\", label="
        << dot_label({"input " + std::to_string(k), shape_text(specs[0][size_t(k)])}) << "];\n";
  for (int v : g.schedule) {
    const Node& node = g.nodes[size_t(v)];
    const Layer& layer = g.layer_of(v);
    const Op& op = *layer.op;
    bool placeholder = dynamic_cast<const PlaceholderOp*>(&op) != nullptr;
    std::vector<std::string> lines = {"#" + std::to_string(v) + " " + op.type()};
    if (std::string args = arguments_text(layer.call_text); !args.empty()) lines.push_back(args);
    std::string shapes;
    for (const MaybeSpec& s : specs[size_t(v)])
      shapes += (shapes.empty() ? "" : ", ") + shape_text(s);
    lines.push_back("-> " + shapes);
    int64_t params = 0;
    for (const Param& p : op.params()) params += p.trainable ? p.value.numel() : 0;
    if (params > 0 && layer.nodes[0] == v) lines.push_back(count_text(params) + " params");
    if (layer.nodes.size() > 1) {
      // One layer (one module, one set of weights) standing at several nodes.
      std::string others;
      for (int node : layer.nodes)
        if (node != v) others += (others.empty() ? "#" : ", #") + std::to_string(node);
      lines.push_back("same layer as " + others);
    }
    if (placeholder) lines.push_back("(not registered: shapes unknown)");
    if (!needed[size_t(v)]) lines.push_back("(not needed by the outputs)");
    dot << "  n" << v << " [fillcolor=\"" << fill_for(op) << "\"";
    if (placeholder || !needed[size_t(v)]) dot << ", style=\"rounded,filled,dashed\"";
    dot << ", label=" << dot_label(lines) << "];\n";
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const PortRef& in = node.inputs[i];
      const Node& src = g.nodes[size_t(in.node)];
      std::string label = shape_text(specs[size_t(in.node)][size_t(in.port)]);
      if (in.node != 0 && src.num_outputs > 1)
        label = "out " + std::to_string(in.port) + ": " + label;
      if (node.inputs.size() > 1) label = "[" + std::to_string(i) + "] " + label;
      dot << "  " << port_name(in) << " -> n" << v << " [label=" << dot_label({label}) << "];\n";
    }
  }
  for (int k = 0; k < g.num_outputs(); ++k) {
    const PortRef& o = g.outputs[size_t(k)];
    std::string shape = shape_text(specs[size_t(o.node)][size_t(o.port)]);
    dot << "  out" << k << " [shape=oval, fillcolor=\"#f9cb9c\", label="
        << dot_label({"output " + std::to_string(k), shape}) << "];\n";
    dot << "  " << port_name(o) << " -> out" << k << ";\n";
  }
  dot << "}\n";
  return dot.str();
}

// ---- writing ----------------------------------------------------------------------------------

void write_text(const std::string& path, const std::string& text) {
  zip::write_file_atomically(
      path, [&](const zip::Writer::Sink& sink) { sink(text.data(), text.size()); });
}

// Runs Graphviz's `dot -T<format>` on `dot_path` into `out_path`: no shell, argv as given.
void run_graphviz(const std::string& format, const std::string& dot_path,
                  const std::string& out_path, const std::string& shown_path) {
  // Absolute paths: a relative one starting with '-' would read as an option.
  std::vector<std::string> argv_s = {"dot", "-T" + format, "-o" + fs::absolute(out_path).string(),
                                     fs::absolute(dot_path).string()};
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, "dot", nullptr, nullptr, argv.data(), environ);
  if (rc == ENOENT)
    throw std::runtime_error("cannot draw " + shown_path +
                             ": Graphviz's 'dot' is not installed (not found on PATH); install "
                             "graphviz, or write a .dot file");
  if (rc != 0)
    throw std::runtime_error("cannot draw " + shown_path +
                             ": cannot run Graphviz's 'dot': " + std::strerror(rc));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR)
      throw std::runtime_error("cannot draw " + shown_path +
                               ": lost Graphviz's 'dot': " + std::strerror(errno));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("cannot draw " + shown_path + ": Graphviz's 'dot' failed (" +
                             (WIFEXITED(status)
                                  ? "exit status " + std::to_string(WEXITSTATUS(status))
                                  : "signal " + std::to_string(WTERMSIG(status))) +
                             ")");
}

}  // namespace

int graph_command(const Args& args) {
  auto out = args.value("--out");
  if (!out) throw UsageError("graph needs --out FILE (.svg, .png or .dot)");
  std::string ext = fs::path(*out).extension().string();
  for (auto& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (ext != ".svg" && ext != ".png" && ext != ".dot")
    throw UsageError("--out must end in .svg, .png or .dot, found '" + *out + "'");
  if (args.positional().size() != 1)
    throw UsageError("expected one model description (ARCH), found " +
                     std::to_string(args.positional().size()));

  std::vector<std::string> placeholders = register_placeholders(args.positional()[0]);
  for (const std::string& name : placeholders)
    std::cerr << "nnx: note: user op '" << name
              << "' is not registered: drawn as a placeholder, shapes after it unknown\n";
  Model model = load_model(args, /*lenient=*/!placeholders.empty());
  std::vector<bool> needed = needed_nodes(model.graph());
  std::string dot =
      to_dot(model, infer_all(model.graph(), input_shapes(model, args), needed), needed);

  if (ext == ".dot") {
    write_text(*out, dot);
  } else {
    // Both files beside the output, removed whatever happens; the output appears complete.
    std::string stem = *out + ".tmp-" + std::to_string(::getpid());
    std::string dot_path = stem + ".dot", image_path = stem + ext;
    try {
      write_text(dot_path, dot);
      run_graphviz(ext.substr(1), dot_path, image_path, *out);
      std::error_code ec;
      fs::rename(image_path, *out, ec);
      if (ec) fail(ErrorKind::io, "cannot write '", *out, "': ", ec.message());
    } catch (...) {
      std::error_code ec;
      fs::remove(dot_path, ec);
      fs::remove(image_path, ec);
      throw;
    }
    std::error_code ec;
    fs::remove(dot_path, ec);
  }
  std::cerr << "nnx: wrote " << *out << "\n";
  return kOk;
}

}  // namespace nnx::cli
