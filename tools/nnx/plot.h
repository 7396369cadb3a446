// Line charts as PNG files, with no plotting library: training curves for `nnx train`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nnx::cli {

struct Series {
  std::string name;            // legend text (lower-case letters, digits, ". - /")
  std::vector<double> values;  // one per epoch; NaN leaves a gap
  uint32_t rgb = 0;            // 0xRRGGBB
};

struct Panel {
  std::string title;  // "loss", "accuracy"
  std::vector<Series> series;
};

// Writes the panels side by side (x: epochs 1..N) to `path` through a temporary file renamed
// into place. Throws nnx::Error(io) when it cannot be written.
void write_chart_png(const std::string& path, const std::vector<Panel>& panels);

}  // namespace nnx::cli
