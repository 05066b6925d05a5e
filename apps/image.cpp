// The RGB canvas of image.h: drawing primitives, nearest-neighbour upscaling and PNG encoding
// (with stb_image_write, compiled into this file only).
#include "apps/image.h"

#include <algorithm>
#include <cmath>

#include "nn/safetensors.h"
#include "tensor/error.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC  // private to this file: no clash with another copy of stb
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

namespace ink::app {

Image::Image(int width, int height, Color background) : width_(width), height_(height) {
  INK_CHECK(width >= 1 && height >= 1, "image: size {}x{} must be at least 1x1", width, height);
  INK_CHECK(int64_t{width} * height <= kMaxPixels,
            "image: {}x{} pixels is too large (the limit is {} megapixels); use fewer images or a "
            "smaller --scale",
            width, height, kMaxPixels >> 20);
  rgb_.resize(static_cast<size_t>(width) * static_cast<size_t>(height) * 3);
  for (size_t i = 0; i < rgb_.size(); i += 3) {
    rgb_[i] = background.r;
    rgb_[i + 1] = background.g;
    rgb_[i + 2] = background.b;
  }
}

Color Image::at(int x, int y) const {
  const size_t i = (static_cast<size_t>(y) * static_cast<size_t>(width_) + x) * 3;
  return {rgb_[i], rgb_[i + 1], rgb_[i + 2]};
}

void Image::set(int x, int y, Color color) {
  if (x < 0 || y < 0 || x >= width_ || y >= height_) return;
  const size_t i = (static_cast<size_t>(y) * static_cast<size_t>(width_) + x) * 3;
  rgb_[i] = color.r;
  rgb_[i + 1] = color.g;
  rgb_[i + 2] = color.b;
}

void Image::blend(int x, int y, Color color, float alpha) {
  if (x < 0 || y < 0 || x >= width_ || y >= height_ || !(alpha > 0.0f)) return;
  alpha = std::min(alpha, 1.0f);
  const size_t i = (static_cast<size_t>(y) * static_cast<size_t>(width_) + x) * 3;
  auto mix = [alpha](uint8_t under, uint8_t over) {
    return static_cast<uint8_t>(std::lround(under + (over - under) * alpha));
  };
  rgb_[i] = mix(rgb_[i], color.r);
  rgb_[i + 1] = mix(rgb_[i + 1], color.g);
  rgb_[i + 2] = mix(rgb_[i + 2], color.b);
}

void fill_rect(Image& image, int x, int y, int width, int height, Color color) {
  const int x0 = std::max(x, 0), x1 = std::min(x + width, image.width());
  const int y0 = std::max(y, 0), y1 = std::min(y + height, image.height());
  for (int row = y0; row < y1; ++row) {
    for (int column = x0; column < x1; ++column) image.set(column, row, color);
  }
}

void draw_line(Image& image, float x0, float y0, float x1, float y1, float width, Color color) {
  // Coverage of each pixel centre from its distance to the segment: 1 inside, fading to 0
  // over one pixel at the edge. Good enough for plots, and simple.
  const float half = width / 2.0f;
  const float dx = x1 - x0, dy = y1 - y0;
  const float length_sq = dx * dx + dy * dy;
  const int left = static_cast<int>(std::floor(std::min(x0, x1) - half - 1.0f));
  const int right = static_cast<int>(std::ceil(std::max(x0, x1) + half + 1.0f));
  const int top = static_cast<int>(std::floor(std::min(y0, y1) - half - 1.0f));
  const int bottom = static_cast<int>(std::ceil(std::max(y0, y1) + half + 1.0f));
  for (int y = std::max(top, 0); y <= std::min(bottom, image.height() - 1); ++y) {
    for (int x = std::max(left, 0); x <= std::min(right, image.width() - 1); ++x) {
      const float px = x + 0.5f - x0, py = y + 0.5f - y0;
      const float t =
          length_sq > 0.0f ? std::clamp((px * dx + py * dy) / length_sq, 0.0f, 1.0f) : 0.0f;
      const float distance = std::hypot(px - t * dx, py - t * dy);
      image.blend(x, y, color, std::clamp(half + 0.5f - distance, 0.0f, 1.0f));
    }
  }
}

namespace {

uint8_t gray_level(float value) {
  if (!(value > 0.0f)) return 0;  // also NaN
  if (value >= 1.0f) return 255;
  return static_cast<uint8_t>(std::lround(value * 255.0f));
}

void check_picture(std::span<const float> values, int width, int height, int scale) {
  INK_CHECK(
      width >= 1 && height >= 1 && static_cast<int64_t>(values.size()) == int64_t{width} * height,
      "draw_gray: {} values do not make a {}x{} picture", values.size(), width, height);
  INK_CHECK(scale >= 1, "draw_gray: scale must be at least 1, got {}", scale);
}

}  // namespace

void draw_gray(Image& image, std::span<const float> values, int width, int height, int x, int y,
               int scale) {
  check_picture(values, width, height, scale);
  for (int row = 0; row < height; ++row) {
    for (int column = 0; column < width; ++column) {
      const uint8_t level = gray_level(values[static_cast<size_t>(row) * width + column]);
      fill_rect(image, x + column * scale, y + row * scale, scale, scale, {level, level, level});
    }
  }
}

Image gray_image(std::span<const float> values, int width, int height, int scale) {
  check_picture(values, width, height, scale);
  INK_CHECK(int64_t{width} * scale * int64_t{height} * scale <= Image::kMaxPixels,
            "gray_image: {}x{} at scale {} is too large", width, height, scale);
  Image image(width * scale, height * scale, kBlack);
  draw_gray(image, values, width, height, 0, 0, scale);
  return image;
}

Image upscale_nearest(const Image& image, int scale) {
  INK_CHECK(scale >= 1, "upscale_nearest: scale must be at least 1, got {}", scale);
  INK_CHECK(int64_t{image.width()} * scale * int64_t{image.height()} * scale <= Image::kMaxPixels,
            "upscale_nearest: {}x{} at scale {} is too large", image.width(), image.height(),
            scale);
  Image out(image.width() * scale, image.height() * scale);
  for (int y = 0; y < out.height(); ++y) {
    for (int x = 0; x < out.width(); ++x) out.set(x, y, image.at(x / scale, y / scale));
  }
  return out;
}

std::vector<uint8_t> encode_png(const Image& image) {
  std::vector<uint8_t> bytes;
  auto append = [](void* context, void* data, int size) {
    auto* out = static_cast<std::vector<uint8_t>*>(context);
    const auto* begin = static_cast<const uint8_t*>(data);
    out->insert(out->end(), begin, begin + size);
  };
  const int ok = stbi_write_png_to_func(append, &bytes, image.width(), image.height(), 3,
                                        image.rgb().data(), image.width() * 3);
  INK_CHECK(ok != 0 && !bytes.empty(), "encode_png: could not encode a {}x{} image", image.width(),
            image.height());
  return bytes;
}

void write_png(const std::string& path, const Image& image) {
  const std::vector<uint8_t> bytes = encode_png(image);
  write_file_atomic(path, bytes);
}

}  // namespace ink::app
