// Tests for the synthetic shapes (models/shapes.h) and the epoch batcher (models/dataset.h):
// every generator's image statistics against the notebook's ranges, determinism, and resuming.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <numbers>
#include <set>
#include <vector>

#include "models/dataset.h"
#include "models/shapes.h"
#include "tensor/error.h"

namespace ink {
namespace {

using ::testing::HasSubstr;

constexpr int kSide = static_cast<int>(kImageSide);
constexpr int kDraws = 2000;  // per generator; a few milliseconds

// An image with the pixel at (x, y) = image[y * 28 + x], plus helpers to read it.
struct Image {
  std::vector<float> pixels = std::vector<float>(kImagePixels, 0.0f);
  float at(int x, int y) const { return pixels[static_cast<size_t>(y * kSide + x)]; }
  bool lit(int x, int y) const { return at(x, y) != 0.0f; }
  int lit_count() const {
    return static_cast<int>(
        std::count_if(pixels.begin(), pixels.end(), [](float v) { return v != 0.0f; }));
  }
  bool binary() const {
    return std::all_of(pixels.begin(), pixels.end(),
                       [](float v) { return v == 0.0f || v == 1.0f; });
  }
  Image transposed() const {
    Image t;
    for (int y = 0; y < kSide; ++y) {
      for (int x = 0; x < kSide; ++x) t.pixels[static_cast<size_t>(x * kSide + y)] = at(x, y);
    }
    return t;
  }
};

// The lit x in row y, sorted.
std::vector<int> lit_in_row(const Image& image, int y) {
  std::vector<int> xs;
  for (int x = 0; x < kSide; ++x) {
    if (image.lit(x, y)) xs.push_back(x);
  }
  return xs;
}

std::vector<int> lit_in_column(const Image& image, int x) {
  return lit_in_row(image.transposed(), x);
}

// True when the sorted values are consecutive integers.
bool contiguous(const std::vector<int>& values) {
  for (size_t i = 1; i < values.size(); ++i) {
    if (values[i] != values[i - 1] + 1) return false;
  }
  return true;
}

struct Box {
  int x_min = kSide, x_max = -1, y_min = kSide, y_max = -1;
};

Box bounding_box(const Image& image) {
  Box box;
  for (int y = 0; y < kSide; ++y) {
    for (int x = 0; x < kSide; ++x) {
      if (!image.lit(x, y)) continue;
      box.x_min = std::min(box.x_min, x);
      box.x_max = std::max(box.x_max, x);
      box.y_min = std::min(box.y_min, y);
      box.y_max = std::max(box.y_max, y);
    }
  }
  return box;
}

// Tracks the smallest and largest value seen, so a test can require the exact notebook range:
// every value inside it, and both ends reached over many draws.
struct Range {
  int64_t low = INT64_MAX, high = INT64_MIN;
  void add(int64_t v) {
    low = std::min(low, v);
    high = std::max(high, v);
  }
};

// Draws kDraws images of `prompt` from a fixed seed and hands each to `check`.
template <typename Check>
void for_each_draw(std::string_view prompt, Check&& check, uint64_t seed = 7) {
  Generator gen(seed);
  Image image;
  for (int i = 0; i < kDraws; ++i) {
    draw_shape(prompt, gen, image.pixels.data());
    check(image);
    if (::testing::Test::HasFatalFailure() || ::testing::Test::HasNonfatalFailure()) return;
  }
}

TEST(ShapePrompts, AreTheNotebooksNineInOrder) {
  const std::vector<std::string_view> expected = {
      "horizontal line", "vertical line", "two vertical lines", "diagonal line", "cross",
      "circle",          "square",        "dense center",       "sparse dots"};
  ASSERT_EQ(kNumShapePrompts, 9);
  EXPECT_EQ(std::vector<std::string_view>(kShapePrompts.begin(), kShapePrompts.end()), expected);
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(shape_prompt_index(expected[i]), static_cast<int64_t>(i));
    EXPECT_TRUE(is_shape_prompt(expected[i]));
  }
  EXPECT_FALSE(is_shape_prompt("Circle"));
  EXPECT_FALSE(is_shape_prompt("circle "));
  EXPECT_FALSE(is_shape_prompt(""));
}

TEST(ShapePrompts, UnknownNameIsAnErrorListingThePrompts) {
  Generator gen(1);
  std::vector<float> image(kImagePixels);
  try {
    draw_shape("triangle", gen, image.data());
    FAIL() << "draw_shape accepted an unknown prompt";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("draw_shape: unknown prompt \"triangle\""));
    EXPECT_THAT(e.what(), HasSubstr("\"horizontal line\", \"vertical line\""));
    EXPECT_THAT(e.what(), HasSubstr("\"sparse dots\""));
  }
  try {
    make_shape("", gen);
    FAIL() << "make_shape accepted an empty prompt";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("make_shape: unknown prompt \"\""));
  }
  EXPECT_THROW(shape_prompt_index("squares"), Error);
  try {
    draw_shape(int64_t{9}, gen, image.data());
    FAIL() << "draw_shape accepted index 9";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("draw_shape: prompt index 9 is out of range [0, 9)"));
  }
  EXPECT_THROW(draw_shape(int64_t{-1}, gen, image.data()), Error);
}

TEST(Shapes, EveryGeneratorWritesExactlyItsImageWithValuesInZeroOne) {
  // Sentinels around the image catch writes out of bounds; the stale 0.5 inside catches pixels
  // a generator forgot to clear.
  constexpr size_t kGuard = 64;
  constexpr float kSentinel = -7.0f;
  const int64_t dense = shape_prompt_index("dense center");
  for (int64_t p = 0; p < kNumShapePrompts; ++p) {
    Generator gen(100 + static_cast<uint64_t>(p));
    std::vector<float> buffer(kGuard + kImagePixels + kGuard, kSentinel);
    float* image = buffer.data() + kGuard;
    for (int i = 0; i < 500; ++i) {
      std::fill(image, image + kImagePixels, 0.5f);
      draw_shape(p, gen, image);
      for (size_t k = 0; k < kGuard; ++k) {
        ASSERT_EQ(buffer[k], kSentinel) << kShapePrompts[static_cast<size_t>(p)];
        ASSERT_EQ(buffer[kGuard + kImagePixels + k], kSentinel)
            << kShapePrompts[static_cast<size_t>(p)];
      }
      for (int64_t k = 0; k < kImagePixels; ++k) {
        ASSERT_TRUE(image[k] >= 0.0f && image[k] <= 1.0f) << kShapePrompts[static_cast<size_t>(p)];
        if (p != dense) {
          ASSERT_TRUE(image[k] == 0.0f || image[k] == 1.0f)
              << kShapePrompts[static_cast<size_t>(p)];
        }
      }
    }
  }
}

TEST(Shapes, SameSeedSameImagesAndEveryEntryPointAgrees) {
  for (const std::string_view prompt : kShapePrompts) {
    Generator a(5), b(5), c(5), d(6);
    std::vector<float> by_index(kImagePixels), by_name(kImagePixels), other(kImagePixels);
    bool any_differs_from_other_seed = false;
    for (int i = 0; i < 20; ++i) {
      draw_shape(shape_prompt_index(prompt), a, by_index.data());
      draw_shape(prompt, b, by_name.data());
      const std::vector<float> made = make_shape(prompt, c);
      draw_shape(prompt, d, other.data());
      ASSERT_EQ(by_index, by_name) << prompt;
      ASSERT_EQ(by_index, made) << prompt;
      any_differs_from_other_seed |= by_index != other;
    }
    EXPECT_TRUE(any_differs_from_other_seed) << prompt;
  }
}

// Horizontal line and (transposed) vertical line: thickness rows y..y+t-1, each lit on
// [x_start, x_end).
void check_horizontal_line(const Image& image, Range& y, Range& thickness, Range& x_start,
                           Range& x_end) {
  ASSERT_TRUE(image.binary());
  std::vector<int> rows;
  for (int r = 0; r < kSide; ++r) {
    if (!lit_in_row(image, r).empty()) rows.push_back(r);
  }
  ASSERT_FALSE(rows.empty());
  ASSERT_TRUE(contiguous(rows));
  const std::vector<int> xs = lit_in_row(image, rows.front());
  ASSERT_TRUE(contiguous(xs));
  for (const int r : rows) ASSERT_EQ(lit_in_row(image, r), xs);
  y.add(rows.front());
  thickness.add(static_cast<int64_t>(rows.size()));
  x_start.add(xs.front());
  x_end.add(xs.back() + 1);
}

TEST(Shapes, HorizontalLineMatchesTheNotebook) {
  Range y, thickness, x_start, x_end;
  for_each_draw("horizontal line", [&](const Image& image) {
    check_horizontal_line(image, y, thickness, x_start, x_end);
  });
  // randint(5, 23), randint(1, 3), randint(0, 5), randint(23, 28)
  EXPECT_EQ(y.low, 5);
  EXPECT_EQ(y.high, 22);
  EXPECT_EQ(thickness.low, 1);
  EXPECT_EQ(thickness.high, 2);
  EXPECT_EQ(x_start.low, 0);
  EXPECT_EQ(x_start.high, 4);
  EXPECT_EQ(x_end.low, 23);
  EXPECT_EQ(x_end.high, 27);
}

TEST(Shapes, VerticalLineIsTheTransposedHorizontalLine) {
  Range x, thickness, y_start, y_end;
  for_each_draw("vertical line", [&](const Image& image) {
    check_horizontal_line(image.transposed(), x, thickness, y_start, y_end);
  });
  EXPECT_EQ(x.low, 5);
  EXPECT_EQ(x.high, 22);
  EXPECT_EQ(thickness.low, 1);
  EXPECT_EQ(thickness.high, 2);
  EXPECT_EQ(y_start.low, 0);
  EXPECT_EQ(y_start.high, 4);
  EXPECT_EQ(y_end.low, 23);
  EXPECT_EQ(y_end.high, 27);
}

TEST(Shapes, TwoVerticalLinesMatchTheNotebook) {
  Range x1, x2, y_start, y_end;
  for_each_draw("two vertical lines", [&](const Image& image) {
    ASSERT_TRUE(image.binary());
    std::vector<int> columns;
    for (int c = 0; c < kSide; ++c) {
      if (!lit_in_column(image, c).empty()) columns.push_back(c);
    }
    ASSERT_EQ(columns.size(), 2u);
    const std::vector<int> ys = lit_in_column(image, columns[0]);
    ASSERT_TRUE(contiguous(ys));
    ASSERT_EQ(lit_in_column(image, columns[1]), ys);
    x1.add(columns[0]);
    x2.add(columns[1]);
    y_start.add(ys.front());
    y_end.add(ys.back() + 1);
  });
  // Columns in [4, 10) and [18, 24); rows [y_start, y_end) with randint(2, 6), randint(22, 26).
  EXPECT_EQ(x1.low, 4);
  EXPECT_EQ(x1.high, 9);
  EXPECT_EQ(x2.low, 18);
  EXPECT_EQ(x2.high, 23);
  EXPECT_EQ(y_start.low, 2);
  EXPECT_EQ(y_start.high, 5);
  EXPECT_EQ(y_end.low, 22);
  EXPECT_EQ(y_end.high, 25);
}

TEST(Shapes, DiagonalLineMatchesTheNotebook) {
  Range offset;
  int down_right = 0;
  for_each_draw("diagonal line", [&](const Image& image) {
    ASSERT_TRUE(image.binary());
    // In each column x the line's own pixel is the top lit one, with the thickening pixel just
    // below it (unless the line pixel is on the bottom row).
    std::map<int, int> top_of_column;
    for (int x = 0; x < kSide; ++x) {
      const std::vector<int> ys = lit_in_column(image, x);
      if (ys.empty()) continue;
      ASSERT_TRUE(contiguous(ys));
      ASSERT_EQ(ys.size(), ys.front() == kSide - 1 ? 1u : 2u) << "column " << x;
      top_of_column[x] = ys.front();
    }
    ASSERT_GE(top_of_column.size(), 2u);
    const auto [x0, y0] = *top_of_column.begin();
    const auto [x1, y1] = *std::next(top_of_column.begin());
    const bool is_down_right = y1 > y0;
    // y = x + offset, or y = 27 - x + offset
    const int off = is_down_right ? y0 - x0 : y0 - (kSide - 1 - x0);
    offset.add(off);
    down_right += is_down_right ? 1 : 0;
    int expected_columns = 0;
    for (int x = 0; x < kSide; ++x) {
      const int y = is_down_right ? x + off : kSide - 1 - x + off;
      if (y < 0 || y >= kSide) continue;
      ++expected_columns;
      ASSERT_EQ(top_of_column.count(x), 1u) << "column " << x;
      ASSERT_EQ(top_of_column[x], y) << "column " << x;
    }
    ASSERT_EQ(static_cast<int>(top_of_column.size()), expected_columns);
  });
  // randint(-3, 4) and a fair choice of direction.
  EXPECT_EQ(offset.low, -3);
  EXPECT_EQ(offset.high, 3);
  EXPECT_NEAR(down_right / static_cast<double>(kDraws), 0.5, 0.05);
}

TEST(Shapes, CrossMatchesTheNotebook) {
  Range cx, cy, arm;
  for_each_draw("cross", [&](const Image& image) {
    ASSERT_TRUE(image.binary());
    // The centre is where the one long row meets the one long column.
    int centre_y = -1, centre_x = -1;
    for (int r = 0; r < kSide; ++r) {
      if (lit_in_row(image, r).size() > 1) {
        ASSERT_EQ(centre_y, -1) << "two long rows";
        centre_y = r;
      }
    }
    for (int c = 0; c < kSide; ++c) {
      if (lit_in_column(image, c).size() > 1) {
        ASSERT_EQ(centre_x, -1) << "two long columns";
        centre_x = c;
      }
    }
    ASSERT_GE(centre_x, 0);
    ASSERT_GE(centre_y, 0);
    const std::vector<int> xs = lit_in_row(image, centre_y);
    const std::vector<int> ys = lit_in_column(image, centre_x);
    ASSERT_TRUE(contiguous(xs));
    ASSERT_TRUE(contiguous(ys));
    const int arm_length = centre_x - xs.front();
    ASSERT_EQ(xs.back() - centre_x, arm_length);
    ASSERT_EQ(centre_y - ys.front(), arm_length);
    ASSERT_EQ(ys.back() - centre_y, arm_length);
    ASSERT_EQ(image.lit_count(), 4 * arm_length + 1);
    cx.add(centre_x);
    cy.add(centre_y);
    arm.add(arm_length);
  });
  // 14 + randint(-3, 4) on each axis, arm randint(6, 10).
  EXPECT_EQ(cx.low, 11);
  EXPECT_EQ(cx.high, 17);
  EXPECT_EQ(cy.low, 11);
  EXPECT_EQ(cy.high, 17);
  EXPECT_EQ(arm.low, 6);
  EXPECT_EQ(arm.high, 9);
}

TEST(Shapes, CircleMatchesTheNotebook) {
  Range cx, cy, radius;
  int clipped = 0;
  for_each_draw("circle", [&](const Image& image) {
    ASSERT_TRUE(image.binary());
    ASSERT_LE(image.lit_count(), 100);  // 100 points of the parametric curve
    ASSERT_GE(image.lit_count(), 20);
    // With theta = linspace(0, 2 pi, 100) and truncation toward zero the extent is exactly
    // x in [cx - r, cx + r] and y in [cy - r, cy + r - 1]: sin never reaches 1 on that grid
    // (so the bottom is cy + r - 1), cos reaches 1 at theta = 0. Rounding instead of truncating,
    // or floor on negative values, would change these.
    const Box box = bounding_box(image);
    ASSERT_EQ((box.y_max - box.y_min + 1) % 2, 0);
    const int r = (box.y_max - box.y_min + 1) / 2;
    const int centre_y = box.y_min + r;
    const int centre_x = box.x_min + r;
    // cx + r == 28 falls off the image: then the rightmost pixel is 27 (from theta = 2 pi / 99).
    clipped += centre_x + r == kSide ? 1 : 0;
    ASSERT_EQ(box.x_max, std::min(centre_x + r, kSide - 1));
    ASSERT_TRUE(image.lit(box.x_min, centre_y) || image.lit(box.x_min, centre_y - 1));
    cx.add(centre_x);
    cy.add(centre_y);
    radius.add(r);
  });
  // 14 + randint(-4, 5) on each axis, radius randint(5, 11).
  EXPECT_EQ(cx.low, 10);
  EXPECT_EQ(cx.high, 18);
  EXPECT_EQ(cy.low, 10);
  EXPECT_EQ(cy.high, 18);
  EXPECT_EQ(radius.low, 5);
  EXPECT_EQ(radius.high, 10);
  EXPECT_GT(clipped, 0);
}

TEST(Shapes, CircleIsTheParametricCurveTruncatedTowardZero) {
  // One known draw, recomputed from the notebook's formula with its first random numbers.
  Generator gen(11), replay(11);
  std::vector<float> image(kImagePixels);
  draw_shape("circle", gen, image.data());
  const int64_t cx = 14 + replay.randint(-4, 5);
  const int64_t cy = 14 + replay.randint(-4, 5);
  const int64_t r = replay.randint(5, 11);
  std::vector<float> expected(kImagePixels, 0.0f);
  for (int i = 0; i < 100; ++i) {
    const double theta = i == 99 ? 2 * std::numbers::pi : i * (2 * std::numbers::pi / 99);
    const auto x = static_cast<int64_t>(std::trunc(cx + r * std::cos(theta)));
    const auto y = static_cast<int64_t>(std::trunc(cy + r * std::sin(theta)));
    if (x >= 0 && x < kSide && y >= 0 && y < kSide)
      expected[static_cast<size_t>(y * kSide + x)] = 1;
  }
  EXPECT_EQ(image, expected);
  EXPECT_EQ(gen.get_state().state, replay.get_state().state) << "the circle draws 3 numbers";
}

TEST(Shapes, SquareMatchesTheNotebook) {
  Range side, x1, y1;
  for_each_draw("square", [&](const Image& image) {
    ASSERT_TRUE(image.binary());
    const Box box = bounding_box(image);
    const int size = box.x_max - box.x_min;
    ASSERT_EQ(box.y_max - box.y_min, size);
    // The full outline of the box, corners included, and nothing inside it.
    for (int y = box.y_min; y <= box.y_max; ++y) {
      for (int x = box.x_min; x <= box.x_max; ++x) {
        const bool on_border = x == box.x_min || x == box.x_max || y == box.y_min || y == box.y_max;
        ASSERT_EQ(image.lit(x, y), on_border) << "(" << x << ", " << y << ")";
      }
    }
    ASSERT_EQ(image.lit_count(), 4 * size);
    // x1 = randint(2, 28 - size - 2): at least 2 pixels of margin on the top-left,
    // x2 = x1 + size <= 28 - 3 on the bottom-right.
    ASSERT_GE(box.x_min, 2);
    ASSERT_GE(box.y_min, 2);
    ASSERT_LE(box.x_max, kSide - 3);
    ASSERT_LE(box.y_max, kSide - 3);
    side.add(size);
    x1.add(box.x_min);
    y1.add(box.y_min);
  });
  EXPECT_EQ(side.low, 8);
  EXPECT_EQ(side.high, 15);
  EXPECT_EQ(x1.low, 2);
  EXPECT_EQ(x1.high, 17);  // for size 8: randint(2, 18)
  EXPECT_EQ(y1.low, 2);
  EXPECT_EQ(y1.high, 17);
}

TEST(Shapes, DenseCenterMatchesTheNotebook) {
  Range offset_x, offset_y;
  double sigma_low = 1e9, sigma_high = 0;
  for_each_draw("dense center", [&](const Image& image) {
    const auto peak = std::max_element(image.pixels.begin(), image.pixels.end());
    ASSERT_EQ(*peak, 1.0f);
    ASSERT_EQ(std::count(image.pixels.begin(), image.pixels.end(), 1.0f), 1);
    const int index = static_cast<int>(peak - image.pixels.begin());
    const int cx = index % kSide, cy = index / kSide;
    ASSERT_GT(*std::min_element(image.pixels.begin(), image.pixels.end()), 0.0f);
    // exp(-d^2 / (2 sigma^2)) is the same at equal distances and falls with distance.
    ASSERT_EQ(image.at(cx + 1, cy), image.at(cx - 1, cy));
    ASSERT_EQ(image.at(cx + 1, cy), image.at(cx, cy + 1));
    ASSERT_EQ(image.at(cx + 2, cy + 1), image.at(cx - 1, cy - 2));
    ASSERT_LT(image.at(cx + 2, cy), image.at(cx + 1, cy));
    // The neighbour's value is exp(-1 / (2 sigma^2)).
    const double sigma =
        std::sqrt(-1.0 / (2.0 * std::log(static_cast<double>(image.at(cx + 1, cy)))));
    ASSERT_GE(sigma, 3.0 - 1e-3);
    ASSERT_LE(sigma, 6.0 + 1e-3);
    const double far = std::exp(-9.0 / (2.0 * sigma * sigma));
    ASSERT_NEAR(image.at(cx + 3, cy), far, 1e-5);
    sigma_low = std::min(sigma_low, sigma);
    sigma_high = std::max(sigma_high, sigma);
    offset_x.add(cx - 14);
    offset_y.add(cy - 14);
  });
  // 14 + randint(-2, 3) on each axis, sigma uniform(3, 6).
  EXPECT_EQ(offset_x.low, -2);
  EXPECT_EQ(offset_x.high, 2);
  EXPECT_EQ(offset_y.low, -2);
  EXPECT_EQ(offset_y.high, 2);
  EXPECT_LT(sigma_low, 3.05);
  EXPECT_GT(sigma_high, 5.95);
}

TEST(Shapes, SparseDotsMatchTheNotebook) {
  Range count;
  int64_t total = 0;
  std::vector<int> hits(kImagePixels, 0);
  for_each_draw("sparse dots", [&](const Image& image) {
    ASSERT_TRUE(image.binary());
    const int lit = image.lit_count();
    ASSERT_GE(lit, 1);
    ASSERT_LE(lit, 15);  // randint(5, 16) dots, some may land on the same pixel
    count.add(lit);
    total += lit;
    for (int64_t k = 0; k < kImagePixels; ++k)
      hits[static_cast<size_t>(k)] += image.pixels[k] != 0.0f;
  });
  EXPECT_EQ(count.high, 15);
  EXPECT_LE(count.low, 5);
  // About 10 dots per image minus rare collisions (expected 9.94).
  EXPECT_NEAR(total / static_cast<double>(kDraws), 9.94, 0.25);
  // randint(0, 28) on both axes: every pixel, including row and column 27, gets dots.
  EXPECT_EQ(std::count(hits.begin(), hits.end(), 0), 0);
}

// ---- ShapeDataset -----------------------------------------------------------------------------

// All batches of one epoch, concatenated.
struct Epoch {
  std::vector<int64_t> tokens;
  std::vector<float> images;
  std::vector<int64_t> prompts;
  std::vector<int64_t> batch_sizes;
};

Epoch read_epoch(ShapeDataset& data) {
  data.start_epoch();
  Epoch epoch;
  ShapeBatch batch;
  for (int64_t b = 0; b < data.num_batches(); ++b) {
    data.fill_batch(b, batch);
    epoch.tokens.insert(epoch.tokens.end(), batch.tokens.begin(), batch.tokens.end());
    epoch.images.insert(epoch.images.end(), batch.images.begin(), batch.images.end());
    epoch.prompts.insert(epoch.prompts.end(), batch.prompt_indices.begin(),
                         batch.prompt_indices.end());
    epoch.batch_sizes.push_back(batch.size);
  }
  return epoch;
}

TEST(ShapeDataset, NotebookSettingsGive71BatchesTheLastOf20) {
  ShapeDataset data(500, 64, Generator(42));
  EXPECT_EQ(data.size(), 4500);
  EXPECT_EQ(data.num_batches(), 71);
  EXPECT_EQ(data.batch_length(0), 64);
  EXPECT_EQ(data.batch_length(70), 20);
  const Epoch epoch = read_epoch(data);
  ASSERT_EQ(epoch.batch_sizes.size(), 71u);
  EXPECT_EQ(std::count(epoch.batch_sizes.begin(), epoch.batch_sizes.end(), 64), 70);
  EXPECT_EQ(epoch.batch_sizes.back(), 20);
  EXPECT_EQ(epoch.tokens.size(), 4500u * 32u);
  EXPECT_EQ(epoch.images.size(), 4500u * 784u);

  ShapeBatch batch;
  data.fill_batch(70, batch);
  EXPECT_EQ(batch.size, 20);
  EXPECT_EQ(batch.tokens.size(), 20u * 32u);
  EXPECT_EQ(batch.images.size(), 20u * 1u * 28u * 28u);
  EXPECT_EQ(batch.prompt_indices.size(), 20u);
}

TEST(ShapeDataset, SizesThatDivideEvenlyHaveNoPartialBatch) {
  ShapeDataset data(64, 9, Generator(1));
  EXPECT_EQ(data.num_batches(), 64);
  EXPECT_EQ(data.batch_length(63), 9);
  ShapeDataset single(1, 1000, Generator(1));
  EXPECT_EQ(single.num_batches(), 1);
  EXPECT_EQ(single.batch_length(0), 9);
}

TEST(ShapeDataset, EachPromptAppearsSamplesPerPromptTimesWithItsTokensAndPicture) {
  ShapeDataset data(37, 16, Generator(3));
  const Epoch epoch = read_epoch(data);
  ASSERT_EQ(epoch.prompts.size(), 9u * 37u);
  for (int64_t p = 0; p < kNumShapePrompts; ++p) {
    EXPECT_EQ(std::count(epoch.prompts.begin(), epoch.prompts.end(), p), 37) << p;
  }
  EXPECT_EQ(epoch.prompts, data.order());
  const CharTokenizer tokenizer;
  const int64_t dense = shape_prompt_index("dense center");
  for (size_t i = 0; i < epoch.prompts.size(); ++i) {
    const std::vector<int64_t> expected =
        tokenizer.encode(kShapePrompts[static_cast<size_t>(epoch.prompts[i])]);
    ASSERT_TRUE(std::equal(expected.begin(), expected.end(),
                           epoch.tokens.begin() + static_cast<ptrdiff_t>(i * 32)));
    // Only "dense center" has grey pixels; it is a quick check that image i is of prompt i.
    const auto first = epoch.images.begin() + static_cast<ptrdiff_t>(i * 784);
    const bool grey =
        std::any_of(first, first + 784, [](float v) { return v != 0.0f && v != 1.0f; });
    ASSERT_EQ(grey, epoch.prompts[i] == dense) << "sample " << i;
  }
}

TEST(ShapeDataset, ShuffleAndPicturesChangeEveryEpoch) {
  ShapeDataset data(100, 64, Generator(42));
  const Epoch first = read_epoch(data);
  const Epoch second = read_epoch(data);
  EXPECT_EQ(data.epoch(), 2);
  EXPECT_NE(first.prompts, second.prompts);
  EXPECT_NE(first.images, second.images);
  EXPECT_FALSE(std::is_sorted(first.prompts.begin(), first.prompts.end()));
  // Shuffled over the whole epoch, not only within blocks: the first 100 samples mix prompts.
  std::set<int64_t> early(first.prompts.begin(), first.prompts.begin() + 100);
  EXPECT_GE(early.size(), 8u);
  // Fresh pictures, not last epoch's reshuffled: "dense center" has a continuous sigma, so no
  // picture of it should come back.
  const int64_t dense = shape_prompt_index("dense center");
  std::set<std::vector<float>> seen;
  for (size_t i = 0; i < first.prompts.size(); ++i) {
    const auto image = first.images.begin() + static_cast<ptrdiff_t>(i * 784);
    if (first.prompts[i] == dense) seen.emplace(image, image + 784);
  }
  ASSERT_EQ(seen.size(), 100u);
  for (size_t i = 0; i < second.prompts.size(); ++i) {
    const auto image = second.images.begin() + static_cast<ptrdiff_t>(i * 784);
    if (second.prompts[i] == dense) {
      EXPECT_EQ(seen.count(std::vector<float>(image, image + 784)), 0u) << "sample " << i;
    }
  }
}

TEST(ShapeDataset, SameSeedSameEpochsOtherSeedOtherEpochs) {
  ShapeDataset a(50, 64, Generator(9)), b(50, 64, Generator(9)), c(50, 64, Generator(10));
  for (int e = 0; e < 2; ++e) {
    const Epoch ea = read_epoch(a), eb = read_epoch(b), ec = read_epoch(c);
    EXPECT_EQ(ea.prompts, eb.prompts);
    EXPECT_EQ(ea.images, eb.images);
    EXPECT_EQ(ea.tokens, eb.tokens);
    EXPECT_NE(ea.prompts, ec.prompts);
    EXPECT_NE(ea.images, ec.images);
  }
}

TEST(ShapeDataset, ResumingFromTheSavedStateReproducesTheNextEpoch) {
  ShapeDataset run(40, 32, Generator(42));
  read_epoch(run);
  const Generator::State saved = run.generator_state();
  const Epoch expected = read_epoch(run);

  ShapeDataset resumed(40, 32, Generator(12345));
  resumed.set_generator_state(saved);
  const Epoch got = read_epoch(resumed);
  EXPECT_EQ(got.prompts, expected.prompts);
  EXPECT_EQ(got.images, expected.images);
  EXPECT_EQ(got.tokens, expected.tokens);

  // An interrupted epoch does not move the state: batches never touch the dataset's generator.
  ShapeDataset partial(40, 32, Generator(42));
  partial.start_epoch();
  ShapeBatch batch;
  partial.fill_batch(0, batch);
  partial.fill_batch(3, batch);
  EXPECT_EQ(partial.generator_state().state, saved.state);
  EXPECT_EQ(partial.generator_state().inc, saved.inc);
}

TEST(ShapeDataset, DataDoesNotDependOnBatchSizeOrReadingOrder) {
  ShapeDataset by_64(30, 64, Generator(8)), by_7(30, 7, Generator(8));
  const Epoch a = read_epoch(by_64), b = read_epoch(by_7);
  EXPECT_EQ(a.images, b.images);
  EXPECT_EQ(a.prompts, b.prompts);

  ShapeBatch forward, backward;
  by_7.fill_batch(5, forward);
  for (int64_t i = by_7.num_batches() - 1; i >= 0; --i) by_7.fill_batch(i, backward);
  by_7.fill_batch(5, backward);
  EXPECT_EQ(forward.images, backward.images);
}

TEST(ShapeDataset, BatchBuffersAreReused) {
  ShapeDataset data(500, 64, Generator(42));
  data.start_epoch();
  ShapeBatch batch;
  data.fill_batch(0, batch);
  const float* images = batch.images.data();
  const int64_t* tokens = batch.tokens.data();
  for (int64_t b = 1; b < data.num_batches(); ++b) data.fill_batch(b, batch);
  data.start_epoch();
  data.fill_batch(0, batch);
  EXPECT_EQ(batch.images.data(), images);
  EXPECT_EQ(batch.tokens.data(), tokens);
}

TEST(ShapeDataset, ArgumentsAreValidated) {
  try {
    ShapeDataset data(0, 64, Generator(1));
    FAIL() << "samples_per_prompt 0 accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("ShapeDataset: samples_per_prompt (0) and batch_size (64)"));
    EXPECT_THAT(e.what(), HasSubstr(">= 1"));
  }
  try {
    ShapeDataset data(500, -3, Generator(1));
    FAIL() << "batch_size -3 accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("samples_per_prompt (500) and batch_size (-3)"));
  }
  EXPECT_THROW(ShapeDataset(INT64_MAX, 64, Generator(1)), Error);

  ShapeDataset data(10, 64, Generator(1));
  ShapeBatch batch;
  try {
    data.fill_batch(0, batch);
    FAIL() << "fill_batch before start_epoch accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("ShapeDataset::fill_batch: call start_epoch()"));
  }
  data.start_epoch();
  try {
    data.fill_batch(2, batch);
    FAIL() << "batch index 2 of 2 accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("batch index 2 is out of range [0, 2)"));
  }
  EXPECT_THROW(data.fill_batch(-1, batch), Error);
  EXPECT_THROW(data.batch_length(2), Error);
}

}  // namespace
}  // namespace ink
