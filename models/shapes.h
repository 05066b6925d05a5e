// The synthetic training data: nine text prompts, each with a generator that draws a random
// 28x28 grayscale picture of it, with the same distributions as the reference notebook.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "tensor/random.h"

namespace ink {

// Images are 28x28, row-major: pixel (x, y) is image[y * kImageSide + x], values in [0, 1].
inline constexpr int64_t kImageSide = 28;
inline constexpr int64_t kImagePixels = kImageSide * kImageSide;

// The prompts in the notebook's order. A prompt's position here is its prompt index.
inline constexpr std::array<std::string_view, 9> kShapePrompts = {
    "horizontal line", "vertical line", "two vertical lines", "diagonal line", "cross",
    "circle",          "square",        "dense center",       "sparse dots",
};
inline constexpr int64_t kNumShapePrompts = static_cast<int64_t>(kShapePrompts.size());

// The generators. Each overwrites all kImagePixels floats of `image` (no allocation) and draws
// its random numbers from `gen` in the notebook's order. The ranges below are numpy's:
// randint(a, b) means a <= v < b.
//
// horizontal line: row y in [5, 23), thickness in [1, 3), columns [x_start, x_end) with
//                  x_start in [0, 5) and x_end in [23, 28).
void draw_horizontal_line(Generator& gen, float* image);
// vertical line: the horizontal line transposed.
void draw_vertical_line(Generator& gen, float* image);
// two vertical lines: 1-pixel columns x1 in [4, 10) and x2 in [18, 24), both over rows
//                     [y_start, y_end) with y_start in [2, 6) and y_end in [22, 26).
void draw_two_vertical_lines(Generator& gen, float* image);
// diagonal line: direction (down-right or up-right, equally likely), then offset in [-3, 4);
//                pixel (i, i + offset) or (i, 27 - i + offset) plus the pixel below it.
void draw_diagonal_line(Generator& gen, float* image);
// cross: a "+" centred at (14 + [-3, 4), 14 + [-3, 4)) with arms of length [6, 10).
void draw_cross(Generator& gen, float* image);
// circle: centre (14 + [-4, 5), 14 + [-4, 5)), radius [5, 10]; 100 points of the parametric
//         equation at theta = linspace(0, 2 pi, 100), truncated toward zero like Python's int().
void draw_circle(Generator& gen, float* image);
// square: side in [8, 16), top-left corner in [2, 26 - side) on each axis; the outline of the
//         box from (x1, y1) to (x1 + side, y1 + side) inclusive.
void draw_square(Generator& gen, float* image);
// dense center: exp(-d^2 / (2 sigma^2)) around (14 + [-2, 3), 14 + [-2, 3)), sigma uniform in
//               [3, 6), divided by its maximum (so the peak is exactly 1).
void draw_dense_center(Generator& gen, float* image);
// sparse dots: [5, 16) random pixels set to 1 (collisions possible, so 1..15 lit).
void draw_sparse_dots(Generator& gen, float* image);

// Index of `prompt` in kShapePrompts. Throws ink::Error listing the known prompts when unknown.
int64_t shape_prompt_index(std::string_view prompt);
// True when `prompt` is one of kShapePrompts (exact match).
bool is_shape_prompt(std::string_view prompt);

// Draws a picture of prompt `prompt_index` into `image` (kImagePixels floats).
// Throws ink::Error when the index is out of range.
void draw_shape(int64_t prompt_index, Generator& gen, float* image);
// Same, by name. Throws ink::Error listing the known prompts when the name is unknown.
void draw_shape(std::string_view prompt, Generator& gen, float* image);
// Convenience: a new kImagePixels-float image of `prompt`.
std::vector<float> make_shape(std::string_view prompt, Generator& gen);

}  // namespace ink
