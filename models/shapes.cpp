// The nine shape generators. Each one is a line-by-line port of the notebook's numpy function:
// the same random draws in the same order, the same half-open slices, the same bounds checks.
#include "models/shapes.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "tensor/error.h"

namespace ink {

namespace {

constexpr int kSide = static_cast<int>(kImageSide);

// numpy's randint(low, high): high excluded.
int randint(Generator& gen, int low, int high) {
  return static_cast<int>(gen.randint(low, high));
}

void clear(float* image) {
  std::fill(image, image + kImagePixels, 0.0f);
}

void set_pixel(float* image, int x, int y) {
  image[y * kSide + x] = 1.0f;
}

// img[y, x_begin:x_end] = 1 (x_end excluded, like a numpy slice).
void fill_row(float* image, int y, int x_begin, int x_end) {
  for (int x = x_begin; x < x_end; ++x) set_pixel(image, x, y);
}

// img[y_begin:y_end, x] = 1 (y_end excluded).
void fill_column(float* image, int x, int y_begin, int y_end) {
  for (int y = y_begin; y < y_end; ++y) set_pixel(image, x, y);
}

bool in_bounds(int v) {
  return 0 <= v && v < kSide;
}

// cos and sin of np.linspace(0, 2 * np.pi, 100): numpy computes i * (2 pi / 99) and then sets
// the last point to exactly 2 pi.
constexpr int kCirclePoints = 100;
struct CircleTable {
  double cos[kCirclePoints];
  double sin[kCirclePoints];
  CircleTable() {
    const double stop = 2.0 * std::numbers::pi;
    const double step = stop / (kCirclePoints - 1);
    for (int i = 0; i < kCirclePoints; ++i) {
      const double theta = i == kCirclePoints - 1 ? stop : static_cast<double>(i) * step;
      cos[i] = std::cos(theta);
      sin[i] = std::sin(theta);
    }
  }
};

const CircleTable& circle_table() {
  static const CircleTable table;
  return table;
}

// The index of `prompt`, or an ink::Error naming `caller` and listing the known prompts.
int64_t find_prompt(std::string_view prompt, std::string_view caller) {
  const auto it = std::find(kShapePrompts.begin(), kShapePrompts.end(), prompt);
  INK_CHECK(it != kShapePrompts.end(), "{}: unknown prompt \"{}\"; known prompts: \"{}\"", caller,
            prompt, fmt::join(kShapePrompts, "\", \""));
  return it - kShapePrompts.begin();
}

using DrawFn = void (*)(Generator&, float*);
constexpr std::array<DrawFn, kShapePrompts.size()> kDrawFns = {
    draw_horizontal_line, draw_vertical_line, draw_two_vertical_lines,
    draw_diagonal_line,   draw_cross,         draw_circle,
    draw_square,          draw_dense_center,  draw_sparse_dots,
};

}  // namespace

void draw_horizontal_line(Generator& gen, float* image) {
  clear(image);
  const int y = randint(gen, 5, 23);
  const int thickness = randint(gen, 1, 3);
  const int x_start = randint(gen, 0, 5);
  const int x_end = randint(gen, 23, 28);
  for (int dy = 0; dy < thickness; ++dy) {
    if (in_bounds(y + dy)) fill_row(image, y + dy, x_start, x_end);
  }
}

void draw_vertical_line(Generator& gen, float* image) {
  clear(image);
  const int x = randint(gen, 5, 23);
  const int thickness = randint(gen, 1, 3);
  const int y_start = randint(gen, 0, 5);
  const int y_end = randint(gen, 23, 28);
  for (int dx = 0; dx < thickness; ++dx) {
    if (in_bounds(x + dx)) fill_column(image, x + dx, y_start, y_end);
  }
}

void draw_two_vertical_lines(Generator& gen, float* image) {
  clear(image);
  const int x1 = randint(gen, 4, 10);
  const int x2 = randint(gen, 18, 24);
  const int y_start = randint(gen, 2, 6);
  const int y_end = randint(gen, 22, 26);
  fill_column(image, x1, y_start, y_end);
  fill_column(image, x2, y_start, y_end);
}

void draw_diagonal_line(Generator& gen, float* image) {
  clear(image);
  // np.random.choice(['tlbr', 'trbl']): each with probability 1/2.
  const bool down_right = randint(gen, 0, 2) == 0;
  const int offset = randint(gen, -3, 4);
  for (int i = 0; i < kSide; ++i) {
    const int x = i;
    const int y = down_right ? i + offset : kSide - 1 - i + offset;
    if (in_bounds(x) && in_bounds(y)) {
      set_pixel(image, x, y);
      if (y + 1 < kSide) set_pixel(image, x, y + 1);  // the notebook's "slight thickness"
    }
  }
}

void draw_cross(Generator& gen, float* image) {
  clear(image);
  const int cx = 14 + randint(gen, -3, 4);
  const int cy = 14 + randint(gen, -3, 4);
  const int arm_length = randint(gen, 6, 10);
  for (int d = -arm_length; d <= arm_length; ++d) {
    if (in_bounds(cx + d)) set_pixel(image, cx + d, cy);
  }
  for (int d = -arm_length; d <= arm_length; ++d) {
    if (in_bounds(cy + d)) set_pixel(image, cx, cy + d);
  }
}

void draw_circle(Generator& gen, float* image) {
  clear(image);
  const int cx = 14 + randint(gen, -4, 5);
  const int cy = 14 + randint(gen, -4, 5);
  const int radius = randint(gen, 5, 11);
  const CircleTable& table = circle_table();
  for (int i = 0; i < kCirclePoints; ++i) {
    // static_cast<int> truncates toward zero, as Python's int() does; check bounds afterwards.
    const int x = static_cast<int>(cx + radius * table.cos[i]);
    const int y = static_cast<int>(cy + radius * table.sin[i]);
    if (in_bounds(x) && in_bounds(y)) set_pixel(image, x, y);
  }
}

void draw_square(Generator& gen, float* image) {
  clear(image);
  const int size = randint(gen, 8, 16);
  const int x1 = randint(gen, 2, kSide - size - 2);
  const int y1 = randint(gen, 2, kSide - size - 2);
  const int x2 = x1 + size;
  const int y2 = y1 + size;
  fill_row(image, y1, x1, x2);         // top:    img[y1, x1:x2]
  fill_row(image, y2, x1, x2 + 1);     // bottom: img[y2, x1:x2+1]
  fill_column(image, x1, y1, y2);      // left:   img[y1:y2, x1]
  fill_column(image, x2, y1, y2 + 1);  // right:  img[y1:y2+1, x2]
}

void draw_dense_center(Generator& gen, float* image) {
  const int cx = 14 + randint(gen, -2, 3);
  const int cy = 14 + randint(gen, -2, 3);
  // np.random.uniform(3, 6) is a double; drawing sigma as a float would round it.
  const double sigma = 3.0 + (6.0 - 3.0) * gen.uniform_double();
  const double two_sigma_sq = 2.0 * (sigma * sigma);
  // Like the notebook: exp in double, stored as float32, then divided by the float32 maximum.
  float max_value = 0.0f;
  for (int y = 0; y < kSide; ++y) {
    for (int x = 0; x < kSide; ++x) {
      const int dist_sq = (x - cx) * (x - cx) + (y - cy) * (y - cy);
      const auto value = static_cast<float>(std::exp(-dist_sq / two_sigma_sq));
      image[y * kSide + x] = value;
      max_value = std::max(max_value, value);
    }
  }
  for (int64_t i = 0; i < kImagePixels; ++i) image[i] /= max_value;
}

void draw_sparse_dots(Generator& gen, float* image) {
  clear(image);
  const int n_dots = randint(gen, 5, 16);
  for (int i = 0; i < n_dots; ++i) {
    const int x = randint(gen, 0, kSide);
    const int y = randint(gen, 0, kSide);
    set_pixel(image, x, y);
  }
}

bool is_shape_prompt(std::string_view prompt) {
  return std::find(kShapePrompts.begin(), kShapePrompts.end(), prompt) != kShapePrompts.end();
}

int64_t shape_prompt_index(std::string_view prompt) {
  return find_prompt(prompt, "shape_prompt_index");
}

void draw_shape(int64_t prompt_index, Generator& gen, float* image) {
  INK_CHECK(0 <= prompt_index && prompt_index < kNumShapePrompts,
            "draw_shape: prompt index {} is out of range [0, {})", prompt_index, kNumShapePrompts);
  kDrawFns[static_cast<size_t>(prompt_index)](gen, image);
}

void draw_shape(std::string_view prompt, Generator& gen, float* image) {
  draw_shape(find_prompt(prompt, "draw_shape"), gen, image);
}

std::vector<float> make_shape(std::string_view prompt, Generator& gen) {
  const int64_t prompt_index = find_prompt(prompt, "make_shape");
  std::vector<float> image(kImagePixels);
  draw_shape(prompt_index, gen, image.data());
  return image;
}

}  // namespace ink
