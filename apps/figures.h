// The inkgrad program's figures: labelled grids of pictures of any size and channel count (the
// notebook's data grid, generations grid and ground-truth-versus-generated demo, grayscale or
// RGB) and the training loss plot.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "apps/image.h"
#include "models/dataset.h"
#include "tensor/tensor.h"

namespace ink::app {

// One row of a grid: a label drawn on its left ("" for none) and its pictures, each
// channels x height x width values in [0, 1] (channel-major, then row-major, as a [C, H, W]
// tensor): see GridStyle.
struct GridRow {
  std::string label;
  std::vector<std::vector<float>> pictures;
};

struct GridStyle {
  std::string title;                       // drawn above the grid ("" for none)
  std::vector<std::string> group_headers;  // a header above each group of columns (optional)
  int group_size = 0;      // columns per group, with a wider gap between groups (0: one group)
  int picture_side = 28;   // width of every picture
  int picture_height = 0;  // 0: the same as picture_side
  // 1 (or 2): channel 0 drawn in gray; 3 or more: channels 0, 1, 2 drawn as red, green, blue
  // (a fourth channel, alpha, is not shown).
  int channels = 1;
  int scale = 3;  // nearest-neighbour upscaling of every picture
  // Shows each picture divided by its own maximum (when that is above 0.01), so that faint
  // generations are visible. Off: values in [0, 1] as they are (matplotlib's vmin=0, vmax=1).
  bool stretch = false;
};

// A default style for pictures of `format` (size and channels; scale 3).
GridStyle grid_style_for(const ImageFormat& format);
// Picture `index` of a batch of images [N, C, H, W] as C x H x W values.
std::vector<float> picture_values(const Tensor& images, int64_t index);
// One picture (C x H x W values, drawn as in GridStyle) as an image upscaled by `scale`.
Image picture_image(std::span<const float> values, const ImageFormat& format, int scale = 1);

// `values` divided by their maximum when it is above 0.01 (NaN is left alone).
std::vector<float> stretched(std::vector<float> values);

// Pictures on a light background with a small gap between them; labels and headers in the
// built-in font, scaled with the pictures. Labels longer than 40 characters are shortened.
// Throws ink::Error when a picture has the wrong size or the result would be too large.
Image render_grid(const std::vector<GridRow>& rows, const GridStyle& style);

struct LossPlotStyle {
  int width = 640;
  int height = 360;
  std::string title = "training loss (MSE)";
};

// A line plot of one loss per epoch (epoch 1 first): axes, grid lines, numeric ticks, a title
// and the final value. The y axis is logarithmic when the losses span more than a factor of 30,
// linear otherwise. Non-finite losses are skipped; an empty series gives empty axes.
Image render_loss_plot(std::span<const float> losses, const LossPlotStyle& style = {});

// Evenly spaced "nice" values (steps of 1, 2 or 5 times a power of ten) inside [low, high],
// about `count` of them. Returns at least one value when low <= high.
std::vector<double> nice_ticks(double low, double high, int count);

}  // namespace ink::app
