// A small raster line chart: axes, min/max tick labels in a 5x7 bitmap font, one polyline per
// series, a legend; encoded as an 8-bit RGB PNG with zlib.
#include "tools/nnx/plot.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "importer/zip.h"
#include "nnx/error.h"

namespace nnx::cli {

namespace {

// 5x7 glyphs, one 5-bit row each (bit 4 is the leftmost pixel).
struct Glyph {
  char c;
  uint8_t rows[7];
};
constexpr Glyph kFont[] = {
    {'0', {14, 17, 19, 21, 25, 17, 14}}, {'1', {4, 12, 4, 4, 4, 4, 14}},
    {'2', {14, 17, 1, 2, 4, 8, 31}},     {'3', {30, 1, 1, 14, 1, 1, 30}},
    {'4', {2, 6, 10, 18, 31, 2, 2}},     {'5', {31, 16, 30, 1, 1, 17, 14}},
    {'6', {6, 8, 16, 30, 17, 17, 14}},   {'7', {31, 1, 2, 4, 8, 8, 8}},
    {'8', {14, 17, 17, 14, 17, 17, 14}}, {'9', {14, 17, 17, 15, 1, 2, 12}},
    {'.', {0, 0, 0, 0, 0, 12, 12}},      {'-', {0, 0, 0, 31, 0, 0, 0}},
    {'/', {1, 2, 2, 4, 8, 8, 16}},       {'+', {0, 4, 4, 31, 4, 4, 0}},
    {'a', {0, 0, 14, 1, 15, 17, 15}},    {'b', {16, 16, 22, 25, 17, 17, 30}},
    {'c', {0, 0, 14, 16, 16, 17, 14}},   {'d', {1, 1, 13, 19, 17, 17, 15}},
    {'e', {0, 0, 14, 17, 31, 16, 14}},   {'g', {0, 0, 15, 17, 15, 1, 14}},
    {'h', {16, 16, 22, 25, 17, 17, 17}}, {'i', {4, 0, 12, 4, 4, 4, 14}},
    {'k', {16, 16, 18, 20, 24, 20, 18}}, {'l', {12, 4, 4, 4, 4, 4, 14}},
    {'m', {0, 0, 26, 21, 21, 17, 17}},   {'n', {0, 0, 22, 25, 17, 17, 17}},
    {'o', {0, 0, 14, 17, 17, 17, 14}},   {'p', {0, 0, 30, 17, 30, 16, 16}},
    {'r', {0, 0, 22, 25, 16, 16, 16}},   {'s', {0, 0, 14, 16, 14, 1, 30}},
    {'t', {8, 8, 28, 8, 8, 9, 6}},       {'u', {0, 0, 17, 17, 17, 19, 13}},
    {'v', {0, 0, 17, 17, 17, 10, 4}},    {'w', {0, 0, 17, 17, 21, 21, 10}},
    {'x', {0, 0, 17, 10, 4, 10, 17}},    {'y', {0, 0, 17, 17, 15, 1, 14}},
};

class Image {
 public:
  Image(int w, int h) : w_(w), h_(h), px_(size_t(w) * size_t(h) * 3, 255) {}
  int width() const { return w_; }
  int height() const { return h_; }
  void set(int x, int y, uint32_t rgb) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    uint8_t* p = &px_[(size_t(y) * size_t(w_) + size_t(x)) * 3];
    p[0] = uint8_t(rgb >> 16), p[1] = uint8_t(rgb >> 8), p[2] = uint8_t(rgb);
  }
  void dot(double x, double y, uint32_t rgb, int radius) {
    for (int dy = -radius; dy <= radius; ++dy)
      for (int dx = -radius; dx <= radius; ++dx)
        set(int(std::lround(x)) + dx, int(std::lround(y)) + dy, rgb);
  }
  void line(double x0, double y0, double x1, double y1, uint32_t rgb, int radius = 0) {
    int steps = int(std::max(std::abs(x1 - x0), std::abs(y1 - y0))) + 1;
    for (int i = 0; i <= steps; ++i) {
      double t = double(i) / steps;
      dot(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, rgb, radius);
    }
  }
  // Text at (x, y) = top-left, each font pixel drawn as scale x scale.
  void text(int x, int y, const std::string& s, uint32_t rgb, int scale = 2) {
    for (char c : s) {
      for (const Glyph& g : kFont)
        if (g.c == c)
          for (int r = 0; r < 7; ++r)
            for (int b = 0; b < 5; ++b)
              if (g.rows[r] & (16 >> b))
                for (int sy = 0; sy < scale; ++sy)
                  for (int sx = 0; sx < scale; ++sx)
                    set(x + b * scale + sx, y + r * scale + sy, rgb);
      x += 6 * scale;
    }
  }
  static int text_width(const std::string& s, int scale = 2) { return int(s.size()) * 6 * scale; }

  std::string png() const {
    std::string raw;
    raw.reserve(size_t(h_) * (size_t(w_) * 3 + 1));
    for (int y = 0; y < h_; ++y) {
      raw.push_back('\0');  // filter: none
      raw.append(reinterpret_cast<const char*>(&px_[size_t(y) * size_t(w_) * 3]), size_t(w_) * 3);
    }
    uLongf zlen = compressBound(uLong(raw.size()));
    std::string z(zlen, '\0');
    NNX_CHECK(compress2(reinterpret_cast<Bytef*>(z.data()), &zlen,
                        reinterpret_cast<const Bytef*>(raw.data()), uLong(raw.size()), 6) == Z_OK,
              ErrorKind::io, "PNG: compression failed");
    z.resize(zlen);
    std::string out = "\x89PNG\r\n\x1a\n";
    auto be32 = [](std::string& s, uint32_t v) {
      for (int k = 3; k >= 0; --k) s.push_back(char((v >> (8 * k)) & 255));
    };
    auto chunk = [&](const char* type, const std::string& data) {
      be32(out, uint32_t(data.size()));
      std::string body = std::string(type, 4) + data;
      out += body;
      be32(out, uint32_t(crc32(0, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size()))));
    };
    std::string ihdr;
    be32(ihdr, uint32_t(w_));
    be32(ihdr, uint32_t(h_));
    ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB, no interlace
    chunk("IHDR", ihdr);
    chunk("IDAT", z);
    chunk("IEND", "");
    return out;
  }

 private:
  int w_, h_;
  std::vector<uint8_t> px_;
};

std::string tick(double v) {
  char buf[32];
  double a = std::abs(v);
  if (a != 0 && (a < 1e-3 || a >= 1e5))
    std::snprintf(buf, sizeof buf, "%.2e", v);
  else
    std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

void draw_panel(Image& img, int x0, int width, const Panel& panel) {
  const uint32_t axis = 0x202020, grid = 0xdddddd;
  int left = x0 + 90, right = x0 + width - 20, top = 50, bottom = img.height() - 50;
  double lo = INFINITY, hi = -INFINITY;
  size_t n = 0;
  for (const Series& s : panel.series) {
    n = std::max(n, s.values.size());
    for (double v : s.values)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (hi - lo < 1e-12) lo -= 0.5, hi += 0.5;
  double pad = 0.05 * (hi - lo);
  lo -= pad, hi += pad;
  img.text(left + (right - left - Image::text_width(panel.title)) / 2, 15, panel.title, axis);
  for (int k = 0; k <= 4; ++k) {
    double v = lo + (hi - lo) * k / 4;
    int y = int(std::lround(bottom - (bottom - top) * double(k) / 4));
    img.line(left, y, right, y, grid);
    std::string label = tick(v);
    img.text(left - 8 - Image::text_width(label), y - 7, label, axis);
  }
  img.line(left, top, left, bottom, axis);
  img.line(left, bottom, right, bottom, axis);
  auto xpos = [&](size_t i) {
    return n <= 1 ? (left + right) / 2.0 : left + (right - left) * double(i) / double(n - 1);
  };
  auto ypos = [&](double v) { return bottom - (bottom - top) * (v - lo) / (hi - lo); };
  for (size_t i : {size_t(0), n ? n - 1 : 0}) {
    std::string label = std::to_string(i + 1);
    img.text(int(xpos(i)) - Image::text_width(label) / 2, bottom + 8, label, axis);
  }
  img.text((left + right - Image::text_width("epoch")) / 2, bottom + 28, "epoch", axis);
  int legend_y = top + 8;
  for (const Series& s : panel.series) {
    for (size_t i = 0; i < s.values.size(); ++i) {
      if (!std::isfinite(s.values[i])) continue;
      img.dot(xpos(i), ypos(s.values[i]), s.rgb, 2);
      if (i > 0 && std::isfinite(s.values[i - 1]))
        img.line(xpos(i - 1), ypos(s.values[i - 1]), xpos(i), ypos(s.values[i]), s.rgb, 1);
    }
    int lx = right - Image::text_width(s.name) - 40;
    img.line(lx, legend_y + 7, lx + 24, legend_y + 7, s.rgb, 1);
    img.text(lx + 32, legend_y, s.name, axis);
    legend_y += 22;
  }
}

}  // namespace

void write_chart_png(const std::string& path, const std::vector<Panel>& panels) {
  const int panel_width = 520, height = 380;
  Image img(panel_width * int(std::max<size_t>(panels.size(), 1)), height);
  for (size_t k = 0; k < panels.size(); ++k)
    draw_panel(img, int(k) * panel_width, panel_width, panels[k]);
  std::string bytes = img.png();
  zip::write_file_atomically(path, bytes);
}

}  // namespace nnx::cli
