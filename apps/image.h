// A small RGB canvas for the inkgrad program's pictures: filled rectangles, anti-aliased lines,
// text in a built-in 5x7 bitmap font, nearest-neighbour upscaling, and PNG encoding to bytes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ink::app {

struct Color {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Color&) const = default;
};

inline constexpr Color kWhite{255, 255, 255};
inline constexpr Color kBlack{0, 0, 0};

// What this object represents: a width x height picture, 8-bit RGB, row-major. Drawing outside
// the picture is clipped silently, so callers never need to check coordinates.
class Image {
 public:
  // The largest picture we make (an accidental `-n 100000 --scale 64` must fail, not swap).
  static constexpr int64_t kMaxPixels = int64_t{1} << 26;  // 64 megapixels, 192 MiB

  // Throws ink::Error unless width, height >= 1 and width * height <= kMaxPixels.
  Image(int width, int height, Color background = kWhite);

  int width() const { return width_; }
  int height() const { return height_; }
  Color at(int x, int y) const;  // (x, y) must be inside
  void set(int x, int y, Color color);
  // Mixes `color` into the pixel with weight alpha in [0, 1].
  void blend(int x, int y, Color color, float alpha);
  const std::vector<uint8_t>& rgb() const { return rgb_; }  // (height, width, 3)

 private:
  int width_;
  int height_;
  std::vector<uint8_t> rgb_;
};

void fill_rect(Image& image, int x, int y, int width, int height, Color color);
// A line of the given width (in pixels) with anti-aliased edges and round ends.
void draw_line(Image& image, float x0, float y0, float x1, float y1, float width, Color color);

// Draws a grayscale picture (values in [0, 1], row-major, width x height; NaN shows as black)
// at (x, y), each pixel as a scale x scale block: nearest-neighbour upscaling.
void draw_gray(Image& image, std::span<const float> values, int width, int height, int x, int y,
               int scale);
// A grayscale picture as a new image, upscaled by `scale`.
Image gray_image(std::span<const float> values, int width, int height, int scale = 1);
// Nearest-neighbour upscaling of a whole image.
Image upscale_nearest(const Image& image, int scale);

// ---- text in the built-in font ----
// Glyphs are 5x7 pixels (lowercase descenders go 2 below) in a 6-pixel advance, drawn as
// scale x scale blocks. ASCII 32..126 have glyphs; any other character (a control byte, a
// whole UTF-8 sequence) draws as one hollow box.
inline constexpr int kGlyphAdvance = 6;  // pixels per character at scale 1
inline constexpr int kGlyphHeight = 9;   // cap height 7 plus 2 for descenders
int text_width(std::string_view text, int scale);
inline int text_height(int scale) {
  return kGlyphHeight * scale;
}
// Draws `text` with its top-left corner at (x, y).
void draw_text(Image& image, int x, int y, std::string_view text, int scale, Color color);
// Whether the glyph of `c` lights pixel (column, row); column in [0, 5), row in [0, 9).
bool glyph_pixel(char c, int column, int row);

// ---- PNG ----
// The PNG file bytes of `image` (8-bit RGB).
std::vector<uint8_t> encode_png(const Image& image);
// encode_png, then ink::write_file_atomic: `path` holds the old file or the complete new one.
void write_png(const std::string& path, const Image& image);

}  // namespace ink::app
