// Unstructured magnitude pruning (nnx/prune.h): masks over Conv2d and Linear weights.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "graph/graph.h"
#include "nnx/error.h"
#include "nnx/prune.h"

namespace nnx {
namespace {

bool prunable_type(const std::string& t) {
  return t == "Conv2d" || t == "Linear";
}

// Masks keeping all but the round(amount * n) smallest |w| of the tensors (one ranking over
// all of them), ties broken by position.
void rank_and_mask(const std::vector<Tensor>& tensors, double amount,
                   std::vector<std::vector<uint8_t>>& keep) {
  int64_t total = 0;
  for (auto& t : tensors) total += t.numel();
  std::vector<std::pair<float, int64_t>> order;
  order.reserve(size_t(total));
  int64_t base = 0;
  for (auto& t : tensors) {
    const float* d = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) order.push_back({std::abs(d[i]), base + i});
    base += t.numel();
  }
  int64_t k = std::llround(amount * double(total));
  k = std::clamp<int64_t>(k, 0, total);
  if (k > 0 && k < total) std::nth_element(order.begin(), order.begin() + k, order.end());
  keep.clear();
  for (auto& t : tensors) keep.emplace_back(size_t(t.numel()), uint8_t(1));
  std::vector<int64_t> starts;
  base = 0;
  for (auto& t : tensors) {
    starts.push_back(base);
    base += t.numel();
  }
  for (int64_t i = 0; i < k; ++i) {
    int64_t flat = order[size_t(i)].second;
    size_t which =
        size_t(std::upper_bound(starts.begin(), starts.end(), flat) - starts.begin() - 1);
    keep[which][size_t(flat - starts[which])] = 0;
  }
}

void zero_masked(const Tensor& t, const std::vector<uint8_t>& keep) {
  float* d = t.data<float>();
  for (size_t i = 0; i < keep.size(); ++i)
    if (!keep[i]) d[i] = 0.f;
}

}  // namespace

std::vector<WeightMask> magnitude_masks(std::vector<Parameter>& params,
                                        const MagnitudeOptions& options) {
  NNX_CHECK(options.amount >= 0 && options.amount <= 1, ErrorKind::usage,
            "sparsity must be in [0, 1], got ", options.amount);
  std::vector<size_t> chosen;
  for (size_t i = 0; i < params.size(); ++i) {
    const Parameter& p = params[i];
    std::string suffix = p.name.substr(p.name.find('.') + 1);
    // Weights of Conv2d and Linear: rank >= 2 tensors named weight.
    if (suffix == "weight" && p.value.dim() >= 2 && p.value.dtype() == DType::f32 &&
        p.value.is_contiguous())
      chosen.push_back(i);
  }
  std::vector<WeightMask> masks;
  auto emit = [&](size_t i, std::vector<uint8_t> keep) {
    zero_masked(params[i].value, keep);
    masks.push_back({params[i].layer, "weight", std::move(keep)});
  };
  if (options.global) {
    std::vector<Tensor> ts;
    for (size_t i : chosen) ts.push_back(params[i].value);
    std::vector<std::vector<uint8_t>> keep;
    rank_and_mask(ts, options.amount, keep);
    for (size_t k = 0; k < chosen.size(); ++k) emit(chosen[k], std::move(keep[k]));
  } else {
    for (size_t i : chosen) {
      std::vector<std::vector<uint8_t>> keep;
      rank_and_mask({params[i].value}, options.amount, keep);
      emit(i, std::move(keep[0]));
    }
  }
  return masks;
}

void apply_masks(std::vector<Parameter>& params, const std::vector<WeightMask>& masks) {
  for (const WeightMask& m : masks)
    for (Parameter& p : params)
      if (p.layer == m.layer && p.name == std::to_string(m.layer) + "." + m.param &&
          size_t(p.value.numel()) == m.keep.size())
        zero_masked(p.value, m.keep);
}

Model prune_magnitude(const Model& model, const MagnitudeOptions& options,
                      std::vector<WeightMask>* masks) {
  Model copy = model.clone();
  std::vector<Parameter> params;
  const Graph& g = copy.graph();
  for (const Layer& layer : g.layers) {
    if (!prunable_type(layer.op->type())) continue;
    const Param* w = layer.op->find_param("weight");
    if (!w || w->value.dtype() != DType::f32) continue;
    params.push_back({std::to_string(layer.description_index) + ".weight", layer.description_index,
                      w->value, Tensor()});
  }
  std::vector<WeightMask> m = magnitude_masks(params, options);
  if (masks) *masks = std::move(m);
  return copy;
}

double cubic_sparsity(double initial, double final, int64_t step, int64_t steps) {
  if (steps <= 0 || step >= steps) return final;
  double r = 1.0 - double(std::max<int64_t>(step, 0)) / double(steps);
  return final + (initial - final) * r * r * r;
}

std::vector<LayerSparsity> sparsity_report(const Model& model) {
  std::vector<LayerSparsity> out;
  for (const Layer& layer : model.graph().layers) {
    if (!prunable_type(layer.op->type())) continue;
    const Param* w = layer.op->find_param("weight");
    if (!w) continue;
    Tensor t = w->value.to(DType::f32).contiguous();
    const float* d = t.data<float>();
    int64_t zeros = 0;
    for (int64_t i = 0; i < t.numel(); ++i) zeros += d[i] == 0.f;
    out.push_back({layer.description_index, layer.op->type(), t.numel(), zeros});
  }
  return out;
}

}  // namespace nnx
