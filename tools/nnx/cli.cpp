// Argument parsing and model/input set-up shared by the nnx commands.
#include "tools/nnx/cli.h"

#include <charconv>
#include <cmath>
#include <iostream>
#include <random>

#include "nnx/cuda.h"

namespace nnx::cli {

Args::Args(int argc, char** argv, int first, const std::vector<std::string>& value_flags,
           const std::vector<std::string>& switches, const std::vector<std::string>& pair_flags) {
  auto known = [](const std::vector<std::string>& list, const std::string& s) {
    for (auto& x : list)
      if (x == s) return true;
    return false;
  };
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0 && a.size() > 2) {
      std::string name = a, value;
      bool inline_value = false;
      if (size_t eq = a.find('='); eq != std::string::npos) {
        name = a.substr(0, eq);
        value = a.substr(eq + 1);
        inline_value = true;
      }
      if (known(pair_flags, name)) {
        if (inline_value || i + 2 >= argc || std::string(argv[i + 1]).rfind("--", 0) == 0 ||
            std::string(argv[i + 2]).rfind("--", 0) == 0)
          throw UsageError(name + " needs two values");
        values_.emplace(name, argv[++i]);
        values_.emplace(name, argv[++i]);
      } else if (known(switches, name)) {
        if (inline_value) throw UsageError(name + " takes no value");
        switches_.push_back(name);
      } else if (known(value_flags, name)) {
        if (!inline_value) {
          if (i + 1 >= argc) throw UsageError(name + " needs a value");
          value = argv[++i];
        }
        values_.emplace(name, value);
      } else {
        throw UsageError("unknown option '" + name + "'");
      }
    } else {
      positional_.push_back(a);
    }
  }
}

std::optional<std::string> Args::value(const std::string& flag) const {
  auto range = values_.equal_range(flag);
  if (range.first == range.second) return std::nullopt;
  return std::prev(range.second)->second;
}

std::vector<std::string> Args::values(const std::string& flag) const {
  std::vector<std::string> out;
  auto range = values_.equal_range(flag);
  for (auto it = range.first; it != range.second; ++it) out.push_back(it->second);
  return out;
}

bool Args::has(const std::string& flag) const {
  for (auto& s : switches_)
    if (s == flag) return true;
  return values_.count(flag) > 0;
}

int64_t Args::integer(const std::string& flag, int64_t fallback) const {
  auto v = value(flag);
  if (!v) return fallback;
  int64_t out = 0;
  auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc() || ptr != v->data() + v->size() || out < 0)
    throw UsageError(flag + " expects a non-negative integer, found '" + *v + "'");
  return out;
}

double Args::number(const std::string& flag, double fallback) const {
  auto v = value(flag);
  if (!v) return fallback;
  double out = 0;
  auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc() || ptr != v->data() + v->size() || !std::isfinite(out))
    throw UsageError(flag + " expects a number, found '" + *v + "'");
  return out;
}

Shape parse_shape(const std::string& text) {
  Shape shape;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find_first_of(",x", start);
    if (end == std::string::npos) end = text.size();
    int64_t d = 0;
    auto [ptr, ec] = std::from_chars(text.data() + start, text.data() + end, d);
    if (ec != std::errc() || ptr != text.data() + end || d <= 0 || shape.size() == Shape::kMaxDims)
      throw UsageError("bad shape '" + text + "' (expected positive sizes like 1,3,224,224)");
    shape.push_back(d);
    start = end + 1;
  }
  return shape;
}

Model load_model(const Args& args, bool lenient) {
  if (args.positional().size() != 1)
    throw UsageError("expected one model description (ARCH), found " +
                     std::to_string(args.positional().size()));
  std::string device = args.value("--device").value_or("cpu");
  if (device != "cpu" && device != "cuda" && device != "auto")
    throw UsageError("--device must be cpu, cuda or auto, found '" + device + "'");
  std::string precision = args.value("--precision").value_or("fp32");
  if (precision != "fp32" && precision != "tf32" && precision != "fp16" && precision != "bf16")
    throw UsageError("--precision must be fp32, tf32, fp16 or bf16, found '" + precision + "'");
  if (precision != "fp32" && device == "cpu")
    fail(ErrorKind::unsupported, "--precision ", precision, " is for CUDA; the CPU runs fp32");
  for (const std::string& plugin : args.values("--plugin")) load_plugin(plugin);
  LoadOptions options;
  options.strict = !args.has("--no-strict") && !lenient;
  // `auto`: CUDA where this build has the backend and it finds a device, else the CPU.
  const bool use_cuda = device == "cuda" || (device == "auto" && [] {
                          cuda::init();
                          return cuda::available();
                        }());
  options.device = use_cuda ? Device::cuda() : Device::cpu();
  if (precision != "fp32" && !use_cuda)
    fail(ErrorKind::unsupported, "--precision ", precision,
         " is for CUDA, and --device auto found none: the CPU runs fp32");
  options.seed = uint64_t(args.integer("--seed", 0));
  Model model = load(args.positional()[0], args.value("--weights").value_or(""), options);
  const LoadReport& r = model.report();
  if (!r.weights_given)
    std::cerr << "nnx: note: no weights given: layers initialised as PyTorch would (seed "
              << options.seed << ")\n";
  for (auto& k : r.missing_keys)
    std::cerr << "nnx: warning: missing tensor " << k << " (kept its initial value)\n";
  for (auto& k : r.unexpected_keys)
    std::cerr << "nnx: warning: unexpected tensor " << k << " (ignored)\n";
  return model;
}

std::vector<Shape> input_shapes(const Model& model, const Args& args) {
  std::vector<std::string> given = args.values("--shape");
  if (!given.empty() && int(given.size()) != model.num_inputs())
    throw UsageError("the network has " + std::to_string(model.num_inputs()) + " input(s), " +
                     std::to_string(given.size()) + " --shape given");
  std::vector<Shape> shapes;
  for (int k = 0; k < model.num_inputs(); ++k)
    shapes.push_back(given.empty() ? Shape{1, model.inputs_channels()[size_t(k)], 224, 224}
                                   : parse_shape(given[size_t(k)]));
  if (auto batch = args.value("--batch")) {
    int64_t n = args.integer("--batch", 1);
    if (n <= 0) throw UsageError("--batch must be positive, found '" + *batch + "'");
    for (auto& s : shapes) s[0] = n;
  }
  return shapes;
}

std::vector<Tensor> random_inputs(const std::vector<Shape>& shapes, uint64_t seed) {
  std::vector<Tensor> inputs;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (const Shape& s : shapes) {
    Tensor t = Tensor::empty(s);
    float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = uniform(rng);
    inputs.push_back(t);
  }
  return inputs;
}

}  // namespace nnx::cli
