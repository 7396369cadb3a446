// Helpers of the convolution kernel tests that check a path against a direct double-precision
// sum: a compact shape description, its printable form, and the products such a sum walks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/cpu/conv2d.h"

namespace nnx::test {

using nnx::cpu::Conv2dShape;

struct Case {
  int64_t batch, in, out, h, w, kh, kw, sh, sw, ph, pw, dh, dw;
};

inline Conv2dShape shape_of(const Case& c) {
  Conv2dShape s;
  s.batch = c.batch;
  s.in_channels = c.in;
  s.out_channels = c.out;
  s.in_h = c.h;
  s.in_w = c.w;
  s.kernel_h = c.kh;
  s.kernel_w = c.kw;
  s.stride_h = c.sh;
  s.stride_w = c.sw;
  s.pad_top = c.ph;
  s.pad_left = c.pw;
  s.dilation_h = c.dh;
  s.dilation_w = c.dw;
  s.out_h = (c.h + 2 * c.ph - c.dh * (c.kh - 1) - 1) / c.sh + 1;
  s.out_w = (c.w + 2 * c.pw - c.dw * (c.kw - 1) - 1) / c.sw + 1;
  return s;
}

inline std::string describe(const Conv2dShape& s) {
  return std::to_string(s.batch) + "x" + std::to_string(s.in_channels) + "x" +
         std::to_string(s.in_h) + "x" + std::to_string(s.in_w) + " -> " +
         std::to_string(s.out_channels) + "x" + std::to_string(s.out_h) + "x" +
         std::to_string(s.out_w) + " kernel " + std::to_string(s.kernel_h) + "x" +
         std::to_string(s.kernel_w) + " stride " + std::to_string(s.stride_h) + "," +
         std::to_string(s.stride_w) + " pad " + std::to_string(s.pad_top) + "," +
         std::to_string(s.pad_left) + " dilation " + std::to_string(s.dilation_h) + "," +
         std::to_string(s.dilation_w);
}

// Calls f(y, x, w) with the flat indices of each output element, input element and weight that
// a direct convolution multiplies together (taps in the padding skipped).
template <typename F>
void for_each_product(const Conv2dShape& s, F f) {
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t o = 0; o < s.out_channels; ++o)
      for (int64_t oh = 0; oh < s.out_h; ++oh)
        for (int64_t ow = 0; ow < s.out_w; ++ow)
          for (int64_t c = 0; c < s.in_channels; ++c)
            for (int64_t kh = 0; kh < s.kernel_h; ++kh)
              for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
                const int64_t ih = oh * s.stride_h - s.pad_top + kh * s.dilation_h;
                const int64_t iw = ow * s.stride_w - s.pad_left + kw * s.dilation_w;
                if (ih < 0 || ih >= s.in_h || iw < 0 || iw >= s.in_w) continue;
                f(size_t(((n * s.out_channels + o) * s.out_h + oh) * s.out_w + ow),
                  size_t(((n * s.in_channels + c) * s.in_h + ih) * s.in_w + iw),
                  size_t(((o * s.in_channels + c) * s.kernel_h + kh) * s.kernel_w + kw));
              }
}

}  // namespace nnx::test
