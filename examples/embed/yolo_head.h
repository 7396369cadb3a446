// An application's own op: the seed network's YOLO detection head, registered through
// nnx::register_op as "own_module.YOLO". Its exact definition is the PyTorch reference in
// examples/seed/yolo.py: boxes decoded to input pixels, objectness and classes activated.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "nnx/nnx.hpp"
#include "nnx/thread_pool.h"

namespace example {

class YoloHead final : public nnx::Op {
 public:
  explicit YoloHead(const nnx::Call& call) {
    nnx::Args args(call, {{"anchors", true}, {"cls_fcn", false}});
    const nnx::Value* anchors = args.get("anchors");
    if (!anchors || !anchors->is_sequence() || anchors->items().empty())
      args.bad_type("anchors", "a non-empty list of [w, h] pairs");
    for (const nnx::Value& a : anchors->items()) {
      if (!a.is_sequence() || a.items().size() != 2 || !a.items()[0].is_number() ||
          !a.items()[1].is_number() || a.items()[0].as_double() <= 0 ||
          a.items()[1].as_double() <= 0)
        args.bad_type("anchors", "a non-empty list of positive [w, h] pairs");
      anchors_.push_back({float(a.items()[0].as_double()), float(a.items()[1].as_double())});
    }
    cls_fcn_ = args.get_text("cls_fcn", "sigmoid");
    if (cls_fcn_ != "sigmoid" && cls_fcn_ != "softmax")
      args.bad_type("cls_fcn", "None, 'sigmoid' or 'softmax'");
    repr_ = call.text.substr(call.text.find(call.class_name()));
  }

  std::string type() const override { return "own_module.YOLO"; }
  std::string python_module() const override { return "own_module"; }
  std::string repr() const override { return repr_; }

  void check_arity(int num_inputs, int num_outputs) const override {
    nnx::op_util::expect_inputs(num_inputs, 2, 2);
    nnx::op_util::expect_outputs(num_outputs, 1, 1);
  }
  std::vector<int64_t> infer_channels(std::span<const int64_t> in, int) const override {
    int64_t a = int64_t(anchors_.size());
    if (in[0] != nnx::kUnknownChannels && (in[0] % a != 0 || in[0] / a < 5))
      nnx::fail(nnx::ErrorKind::shape, "expected ", a, "*(5+C) input channels for ", a,
                " anchor(s), found ", in[0]);
    return {in[0]};
  }
  // Each sample's boxes come from its own features (the image gives only the strides): an
  // Executor may run parts of a batch on threads of their own.
  bool batch_separable(std::span<const nnx::TensorSpec>) const override { return true; }
  std::vector<nnx::TensorSpec> infer_shapes(std::span<const nnx::TensorSpec> in,
                                            int) const override {
    nnx::op_util::expect_rank(in[0], 4);
    nnx::op_util::expect_rank(in[1], 4, "image");
    infer_channels(std::vector<int64_t>{in[0].shape[1]}, 1);
    return {in[0]};
  }

 protected:
  void forward_cpu(const nnx::ExecContext& ctx, std::span<const nnx::Tensor> in,
                   std::span<nnx::Tensor> out) const override {
    const nnx::Shape& s = in[0].shape();
    int64_t n = s[0], channels = s[1], height = s[2], width = s[3];
    int64_t a = int64_t(anchors_.size()), fields = channels / a, plane = height * width;
    float stride_x = float(double(in[1].size(3)) / double(width));
    float stride_y = float(double(in[1].size(2)) / double(height));
    const float* x = in[0].data<float>();
    float* y = out[0].data<float>();
    auto sigmoid = [](float t) { return 1.0f / (1.0f + std::exp(-t)); };
    nnx::parallel_for(ctx.pool, n * a, 1, [&](int64_t begin, int64_t end) {
      for (int64_t na = begin; na < end; ++na) {
        const float* src = x + na * fields * plane;
        float* dst = y + na * fields * plane;
        const auto& anchor = anchors_[size_t(na % a)];
        for (int64_t i = 0; i < height; ++i)
          for (int64_t j = 0; j < width; ++j) {
            int64_t p = i * width + j;
            dst[p] = (sigmoid(src[p]) + float(j)) * stride_x;
            dst[plane + p] = (sigmoid(src[plane + p]) + float(i)) * stride_y;
            dst[2 * plane + p] = std::exp(src[2 * plane + p]) * anchor[0];
            dst[3 * plane + p] = std::exp(src[3 * plane + p]) * anchor[1];
            dst[4 * plane + p] = sigmoid(src[4 * plane + p]);
          }
        int64_t classes = fields - 5;
        for (int64_t p = 0; p < plane; ++p) {
          const float* c_in = src + 5 * plane + p;
          float* c_out = dst + 5 * plane + p;
          if (cls_fcn_ == "softmax") {
            float m = -INFINITY, sum = 0;
            for (int64_t c = 0; c < classes; ++c) m = std::max(m, c_in[c * plane]);
            for (int64_t c = 0; c < classes; ++c)
              sum += (c_out[c * plane] = std::exp(c_in[c * plane] - m));
            for (int64_t c = 0; c < classes; ++c) c_out[c * plane] /= sum;
          } else {
            for (int64_t c = 0; c < classes; ++c) c_out[c * plane] = sigmoid(c_in[c * plane]);
          }
        }
      }
    });
  }

  // Every field is a function of its own raw value (the softmax couples the classes of one
  // anchor and position); the image gets no gradient.
  nnx::BackwardNeeds backward_needs() const override { return {true, true}; }

  void backward_cpu(const nnx::ExecContext& ctx, std::span<const nnx::Tensor> in,
                    std::span<const nnx::Tensor> out, std::span<const nnx::Tensor> grad_out,
                    std::span<nnx::Tensor> grad_in, std::span<nnx::Tensor>) const override {
    if (!grad_in[0].defined()) return;
    const nnx::Shape& s = out[0].shape();
    int64_t n = s[0], channels = s[1], height = s[2], width = s[3];
    int64_t a = int64_t(anchors_.size()), fields = channels / a, plane = height * width;
    float stride_x = float(double(in[1].size(3)) / double(width));
    float stride_y = float(double(in[1].size(2)) / double(height));
    const float* x = in[0].data<float>();
    const float* y = out[0].data<float>();
    const float* gy = grad_out[0].data<float>();
    auto sigmoid = [](float t) { return 1.0f / (1.0f + std::exp(-t)); };
    float* gx = grad_in[0].data<float>();
    nnx::parallel_for(ctx.pool, n * a, 1, [&](int64_t begin, int64_t end) {
      for (int64_t na = begin; na < end; ++na) {
        const float* xi = x + na * fields * plane;
        const float* yo = y + na * fields * plane;
        const float* g = gy + na * fields * plane;
        float* d = gx + na * fields * plane;
        for (int64_t i = 0; i < height; ++i)
          for (int64_t j = 0; j < width; ++j) {
            int64_t p = i * width + j;
            float sx = sigmoid(xi[p]), sy = sigmoid(xi[plane + p]);
            d[p] = g[p] * stride_x * sx * (1 - sx);
            d[plane + p] = g[plane + p] * stride_y * sy * (1 - sy);
            d[2 * plane + p] = g[2 * plane + p] * yo[2 * plane + p];
            d[3 * plane + p] = g[3 * plane + p] * yo[3 * plane + p];
            float o = yo[4 * plane + p];
            d[4 * plane + p] = g[4 * plane + p] * o * (1 - o);
          }
        int64_t classes = fields - 5;
        for (int64_t p = 0; p < plane; ++p) {
          const float* c_out = yo + 5 * plane + p;
          const float* c_g = g + 5 * plane + p;
          float* c_d = d + 5 * plane + p;
          if (cls_fcn_ == "softmax") {
            float dot = 0;
            for (int64_t c = 0; c < classes; ++c) dot += c_g[c * plane] * c_out[c * plane];
            for (int64_t c = 0; c < classes; ++c)
              c_d[c * plane] = c_out[c * plane] * (c_g[c * plane] - dot);
          } else {
            for (int64_t c = 0; c < classes; ++c)
              c_d[c * plane] = c_g[c * plane] * c_out[c * plane] * (1 - c_out[c * plane]);
          }
        }
      }
    });
  }

 private:
  std::vector<std::array<float, 2>> anchors_;
  std::string cls_fcn_;
  std::string repr_;
};

inline void register_yolo_head() {
  nnx::register_op("own_module.YOLO",
                   [](const nnx::Call& call) { return std::make_shared<YoloHead>(call); });
}

}  // namespace example
