// Labelled picture grids and the loss plot of figures.h, drawn on the canvas of image.h.
#include "apps/figures.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include <fmt/format.h>

#include "tensor/error.h"

namespace ink::app {
namespace {

constexpr Color kPaper{246, 246, 246};
constexpr Color kInk{34, 34, 34};
constexpr Color kMutedInk{96, 96, 96};

std::string shorten(const std::string& text, size_t max_chars) {
  if (text.size() <= max_chars) return text;
  return text.substr(0, max_chars - 3) + "...";
}

// Draws a C x H x W picture at (x, y), each pixel as a scale x scale block: gray for one or two
// channels, RGB for three or more. Values are clamped to [0, 1]; NaN shows as black.
void draw_picture(Image& image, std::span<const float> values, int channels, int width, int height,
                  int x, int y, int scale) {
  if (channels < 3) {
    draw_gray(image, values.subspan(0, static_cast<size_t>(width) * height), width, height, x, y,
              scale);
    return;
  }
  const size_t plane = static_cast<size_t>(width) * height;
  const auto level = [](float v) {
    return static_cast<uint8_t>(std::lround((v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f) * 255.0f));
  };
  for (int row = 0; row < height; ++row) {
    for (int column = 0; column < width; ++column) {
      const size_t i = static_cast<size_t>(row) * width + column;
      const Color color{level(values[i]), level(values[plane + i]), level(values[2 * plane + i])};
      fill_rect(image, x + column * scale, y + row * scale, scale, scale, color);
    }
  }
}

}  // namespace

GridStyle grid_style_for(const ImageFormat& format) {
  GridStyle style;
  style.picture_side = static_cast<int>(format.width);
  style.picture_height = static_cast<int>(format.height);
  style.channels = static_cast<int>(format.channels);
  return style;
}

std::vector<float> picture_values(const Tensor& images, int64_t index) {
  INK_CHECK(images.defined() && images.dim() == 4 && index >= 0 && index < images.size(0),
            "picture_values: expected images [N, C, H, W] and an index in [0, N), got {} and {}",
            images.defined() ? shape_str(images.shape()) : "an undefined tensor", index);
  const int64_t size = images.size(1) * images.size(2) * images.size(3);
  const float* begin = images.data() + index * size;
  return {begin, begin + size};
}

Image picture_image(std::span<const float> values, const ImageFormat& format, int scale) {
  INK_CHECK(static_cast<int64_t>(values.size()) == format.pixels(),
            "picture_image: {} values for a {}x{}x{} picture", values.size(), format.channels,
            format.height, format.width);
  INK_CHECK(scale >= 1 && format.width * scale * format.height * scale <= Image::kMaxPixels,
            "picture_image: a {}x{} picture at scale {} is too large", format.width, format.height,
            scale);
  Image image(static_cast<int>(format.width * scale), static_cast<int>(format.height * scale));
  draw_picture(image, values, static_cast<int>(format.channels), static_cast<int>(format.width),
               static_cast<int>(format.height), 0, 0, scale);
  return image;
}

Image render_grid(const std::vector<GridRow>& rows, const GridStyle& style) {
  INK_CHECK(style.scale >= 1 && style.scale <= 64, "render_grid: scale must be in [1, 64], got {}",
            style.scale);
  const int picture_width = style.picture_side;
  const int picture_height = style.picture_height > 0 ? style.picture_height : style.picture_side;
  INK_CHECK(picture_width >= 1 && picture_width <= 4096 && picture_height <= 4096,
            "render_grid: pictures of {}x{} pixels are not supported", picture_width,
            picture_height);
  INK_CHECK(style.channels >= 1 && style.channels <= 64,
            "render_grid: {} channels per picture are not supported", style.channels);
  const int tile = picture_width * style.scale;  // width of a picture on the grid
  const int tile_height = picture_height * style.scale;
  const int text_scale = tile >= 56 ? 2 : 1;
  const int margin = 6 * text_scale + 4;
  const int gap = std::max(2, tile / 20);
  const int group_gap = style.group_size > 0 ? 4 * gap + 4 * text_scale : gap;

  size_t columns = 0;
  bool any_label = false;
  int label_width = 0;
  for (const GridRow& row : rows) {
    columns = std::max(columns, row.pictures.size());
    if (!row.label.empty()) {
      any_label = true;
      label_width = std::max(label_width, text_width(shorten(row.label, 40), text_scale));
    }
  }
  if (columns == 0) columns = 1;
  INK_CHECK(rows.size() <= 4096 && columns <= 4096, "render_grid: {} rows x {} columns is too many",
            rows.size(), columns);

  // x offset of each column: gaps within a group, a wider gap between groups.
  const int label_column = any_label ? label_width + 4 * text_scale + gap : 0;
  std::vector<int> column_x(columns);
  int x = margin + label_column;
  for (size_t c = 0; c < columns; ++c) {
    if (c > 0) {
      const bool new_group = style.group_size > 0 && c % style.group_size == 0;
      x += new_group ? group_gap : gap;
    }
    column_x[c] = x;
    x += tile;
  }
  int content_right = x;

  const std::string title = shorten(style.title, 80);
  int title_scale = text_scale + 1;
  while (title_scale > 1 && text_width(title, title_scale) > content_right - margin) --title_scale;
  const int title_height = title.empty() ? 0 : text_height(title_scale) + 4 * text_scale + 4;
  const bool headers = !style.group_headers.empty();
  const int header_height = headers ? text_height(text_scale) + 2 * text_scale : 0;

  const int width = std::max(content_right, margin + text_width(title, title_scale)) + margin;
  const int64_t height64 = int64_t{margin} + title_height + header_height +
                           static_cast<int64_t>(rows.size()) * (tile_height + gap) - gap + margin;
  INK_CHECK(int64_t{width} * std::max<int64_t>(height64, 1) <= Image::kMaxPixels,
            "render_grid: a {} x {} grid at scale {} would be too large; use fewer pictures or a "
            "smaller --scale",
            rows.size(), columns, style.scale);
  Image image(width, static_cast<int>(std::max<int64_t>(height64, 2 * margin)), kPaper);

  int y = margin;
  if (!title.empty()) {
    draw_text(image, margin, y, title, title_scale, kInk);
    y += title_height;
  }
  if (headers) {
    const size_t group = style.group_size > 0 ? style.group_size : columns;
    for (size_t h = 0; h < style.group_headers.size() && h * group < columns; ++h) {
      const size_t last = std::min(columns, (h + 1) * group) - 1;
      const int left = column_x[h * group], right = column_x[last] + tile;
      const std::string& text = style.group_headers[h];
      draw_text(image, left + (right - left - text_width(text, text_scale)) / 2, y, text,
                text_scale, kMutedInk);
    }
    y += header_height;
  }
  const size_t values = static_cast<size_t>(style.channels) * picture_width * picture_height;
  for (const GridRow& row : rows) {
    if (!row.label.empty()) {
      // Right-aligned next to the pictures, centred on the capital height.
      const std::string label = shorten(row.label, 40);
      draw_text(image, margin + label_width - text_width(label, text_scale),
                y + (tile_height - 7 * text_scale) / 2, label, text_scale, kInk);
    }
    for (size_t c = 0; c < row.pictures.size(); ++c) {
      if (style.channels == 1) {
        INK_CHECK(row.pictures[c].size() == values,
                  "render_grid: picture {} of row \"{}\" has {} values, expected {}x{}", c,
                  row.label, row.pictures[c].size(), picture_height, picture_width);
      } else {
        INK_CHECK(row.pictures[c].size() == values,
                  "render_grid: picture {} of row \"{}\" has {} values, expected {}x{}x{}", c,
                  row.label, row.pictures[c].size(), style.channels, picture_height, picture_width);
      }
      draw_picture(image, style.stretch ? stretched(row.pictures[c]) : row.pictures[c],
                   style.channels, picture_width, picture_height, column_x[c], y, style.scale);
    }
    y += tile_height + gap;
  }
  return image;
}

std::vector<float> stretched(std::vector<float> values) {
  float peak = 0.0f;
  for (float v : values) peak = v > peak ? v : peak;  // NaN never compares greater
  if (peak > 0.01f) {
    for (float& v : values) v /= peak;
  }
  return values;
}

std::vector<double> nice_ticks(double low, double high, int count) {
  if (!(low <= high) || !std::isfinite(low) || !std::isfinite(high)) return {};
  if (high - low <= 0.0) return {low};
  const double rough = (high - low) / std::max(count, 1);
  const double power = std::pow(10.0, std::floor(std::log10(rough)));
  double step = power;
  for (double factor : {1.0, 2.0, 5.0, 10.0}) {
    step = factor * power;
    if (step >= rough) break;
  }
  std::vector<double> ticks;
  for (double k = std::ceil(low / step - 1e-9); k * step <= high + step * 1e-9; k += 1.0) {
    const double value = k * step;
    ticks.push_back(std::abs(value) < step * 1e-9 ? 0.0 : value);
    if (ticks.size() > 1000) break;
  }
  if (ticks.empty()) ticks.push_back(low);
  return ticks;
}

namespace {

// A tick label with as many decimals as the step between ticks needs.
std::string tick_label(double value, double step) {
  if (step <= 0.0 || !std::isfinite(step)) return fmt::format("{:.4g}", value);
  if (std::abs(value) >= 1e5 || (value != 0.0 && std::abs(value) < 1e-4)) {
    return fmt::format("{:.2g}", value);
  }
  const int decimals = std::clamp(static_cast<int>(std::ceil(-std::log10(step) - 1e-9)), 0, 6);
  return fmt::format("{:.{}f}", value, decimals);
}

// Maps data values to pixel coordinates along one axis.
struct Axis {
  double low, high;  // data range shown (log10 of it when logarithmic)
  bool log;
  int pixel_low, pixel_high;
  double to_pixel(double value) const {
    const double v = log ? std::log10(value) : value;
    return pixel_low + (v - low) / (high - low) * (pixel_high - pixel_low);
  }
};

}  // namespace

Image render_loss_plot(std::span<const float> losses, const LossPlotStyle& style) {
  INK_CHECK(
      style.width >= 200 && style.height >= 150 && style.width <= 8192 && style.height <= 8192,
      "render_loss_plot: size {}x{} must be within 200x150 .. 8192x8192", style.width,
      style.height);
  constexpr Color kAxis{70, 70, 70};
  constexpr Color kGrid{226, 226, 226};
  constexpr Color kLine{31, 119, 180};
  constexpr int kTextScale = 2;
  Image image(style.width, style.height, kWhite);

  double min_loss = INFINITY, max_loss = -INFINITY;
  std::optional<size_t> last_finite;
  for (size_t i = 0; i < losses.size(); ++i) {
    if (!std::isfinite(losses[i])) continue;
    min_loss = std::min<double>(min_loss, losses[i]);
    max_loss = std::max<double>(max_loss, losses[i]);
    last_finite = i;
  }
  const bool have_data = last_finite.has_value();
  if (!have_data) min_loss = 0.0, max_loss = 1.0;
  const bool log = have_data && min_loss > 0.0 && max_loss / min_loss > 30.0;

  // y range: the data with 6% headroom; a constant series gets a band around its value.
  double y_low = log ? std::log10(min_loss) : min_loss;
  double y_high = log ? std::log10(max_loss) : max_loss;
  if (y_high - y_low < 1e-12 * std::max(1.0, std::abs(y_high))) {
    const double pad = std::max(std::abs(y_high) * 0.1, 1e-3);
    y_low -= pad;
    y_high += pad;
  } else {
    const double pad = (y_high - y_low) * 0.06;
    y_low -= pad;
    y_high += pad;
  }
  if (!log && min_loss >= 0.0 && y_low < 0.0) y_low = 0.0;  // a loss is never negative

  // y ticks and their labels (needed first: they set the left margin).
  std::vector<std::pair<double, std::string>> y_ticks;
  if (log) {
    // 1, 2, 5 per decade over a short span; powers of ten (every k-th) over a long one.
    const double decades = y_high - y_low;
    const std::vector<double> mantissas =
        decades <= 2.5 ? std::vector<double>{1.0, 2.0, 5.0} : std::vector<double>{1.0};
    const int every = std::max(1, static_cast<int>(std::ceil(decades / 7.0)));
    for (int decade = static_cast<int>(std::floor(y_low)); decade <= std::ceil(y_high); ++decade) {
      if (decade % every != 0) continue;
      for (double mantissa : mantissas) {
        const double value = mantissa * std::pow(10.0, decade);
        const double lv = std::log10(value);
        if (lv >= y_low && lv <= y_high) {
          y_ticks.emplace_back(value, fmt::format("{:g}", value));
        }
      }
    }
  }
  if (y_ticks.size() < 2) {
    y_ticks.clear();
    const std::vector<double> values =
        log ? nice_ticks(std::pow(10.0, y_low), std::pow(10.0, y_high), 5)
            : nice_ticks(y_low, y_high, 7);
    const double step = values.size() > 1 ? values[1] - values[0] : std::abs(values[0]);
    for (double v : values) {
      if (!log || v > 0.0) y_ticks.emplace_back(v, tick_label(v, step));
    }
  }
  int y_label_width = 0;
  for (const auto& [value, label] : y_ticks) {
    y_label_width = std::max(y_label_width, text_width(label, kTextScale));
  }

  const int title_height = text_height(kTextScale + 1);
  const int left = 14 + y_label_width + 10;
  const int right = style.width - 24;
  const int top = 14 + title_height + 14;
  const int bottom = style.height - (14 + 2 * text_height(kTextScale) + 10);
  const Axis y_axis{y_low, y_high, log, bottom, top};

  // x: epochs 1..n, with a little room at both ends.
  const double n = static_cast<double>(std::max<size_t>(losses.size(), 1));
  const double x_pad = std::max(0.5, (n - 1.0) * 0.02);
  const Axis x_axis{1.0 - x_pad, n + x_pad, false, left, right};
  std::vector<double> x_ticks = nice_ticks(1.0, n, 8);
  if (n >= 10.0 && std::find(x_ticks.begin(), x_ticks.end(), 0.0) == x_ticks.end()) {
    // Count from 0 like matplotlib when the steps are round (0, 20, 40, ...).
    const std::vector<double> from_zero = nice_ticks(0.0, n, 8);
    if (from_zero.size() >= 2) x_ticks = from_zero;
  }
  const double x_step = x_ticks.size() > 1 ? x_ticks[1] - x_ticks[0] : 1.0;

  // Grid lines, then axes, ticks and labels.
  for (const auto& [value, label] : y_ticks) {
    const int py = static_cast<int>(std::lround(y_axis.to_pixel(value)));
    fill_rect(image, left, py, right - left, 1, kGrid);
    fill_rect(image, left - 5, py, 5, 1, kAxis);
    draw_text(image, left - 9 - text_width(label, kTextScale), py - 7 * kTextScale / 2, label,
              kTextScale, kAxis);
  }
  for (double value : x_ticks) {
    if (std::abs(value - std::round(value)) > 1e-9) continue;  // epochs are whole numbers
    const int px = static_cast<int>(std::lround(x_axis.to_pixel(value)));
    if (px < left || px > right) continue;
    fill_rect(image, px, top, 1, bottom - top, kGrid);
    fill_rect(image, px, bottom, 1, 5, kAxis);
    const std::string label = tick_label(value, std::max(x_step, 1.0));
    draw_text(image, px - text_width(label, kTextScale) / 2, bottom + 9, label, kTextScale, kAxis);
  }
  fill_rect(image, left, top, 1, bottom - top + 1, kAxis);
  fill_rect(image, left, bottom, right - left + 1, 1, kAxis);

  const std::string x_label = "epoch";
  draw_text(image, left + (right - left - text_width(x_label, kTextScale)) / 2,
            bottom + 9 + text_height(kTextScale) + 4, x_label, kTextScale, kAxis);
  std::string title = style.title;
  if (log)
    title = title.ends_with(")") ? title.substr(0, title.size() - 1) + ", log scale)"
                                 : title + " (log scale)";
  draw_text(image, (style.width - text_width(title, kTextScale + 1)) / 2, 14, title, kTextScale + 1,
            kInk);

  if (!have_data) {
    const std::string text = "no data yet";
    draw_text(image, (left + right - text_width(text, kTextScale)) / 2, (top + bottom) / 2, text,
              kTextScale, kMutedInk);
    return image;
  }

  // The curve: segments between consecutive finite points; dots when there are few points.
  const bool dots = losses.size() <= 40;
  std::optional<std::pair<double, double>> previous;
  for (size_t i = 0; i < losses.size(); ++i) {
    if (!std::isfinite(losses[i])) {
      previous.reset();
      continue;
    }
    const double px = x_axis.to_pixel(static_cast<double>(i + 1));
    const double py = y_axis.to_pixel(losses[i]);
    if (previous) {
      draw_line(image, static_cast<float>(previous->first), static_cast<float>(previous->second),
                static_cast<float>(px), static_cast<float>(py), 2.2f, kLine);
    }
    if (dots || i == *last_finite) {
      draw_line(image, static_cast<float>(px), static_cast<float>(py), static_cast<float>(px),
                static_cast<float>(py), 6.0f, kLine);
    }
    previous = {px, py};
  }

  // The final value, top right inside the plot.
  const std::string final_text = fmt::format("final {:.5g}", losses[*last_finite]);
  draw_text(image, right - 8 - text_width(final_text, kTextScale), top + 8, final_text, kTextScale,
            kLine);
  return image;
}

}  // namespace ink::app
