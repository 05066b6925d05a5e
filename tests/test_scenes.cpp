// Tests for the scenes world (models/scenes.h) and its word tokenizer (models/word_tokenizer.h):
// the geometry of each shape, the training distribution (ranges, omission rates, no held-out
// combination, no overlap), the prompt grammar both ways, and the tokenizer's reports.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "models/scenes.h"
#include "models/word_tokenizer.h"
#include "test_util.h"

namespace ink::scenes {
namespace {

using ink::testing_util::expect_error;
using ::testing::HasSubstr;

std::vector<float> draw(const Object& o) {
  std::vector<float> image(kImageFloats);
  render({o}, image.data());
  return image;
}

// Lit pixels of channel 0 as (x, y) pairs.
std::set<std::pair<int, int>> lit(const std::vector<float>& image) {
  std::set<std::pair<int, int>> out;
  for (int y = 0; y < kSide; ++y) {
    for (int x = 0; x < kSide; ++x) {
      if (image[y * kSide + x] > 0.0f) out.insert({x, y});
    }
  }
  return out;
}

Object object(ShapeKind shape, int extent, int cx = 16, int cy = 16) {
  Object o;
  o.shape = shape;
  o.extent = extent;
  o.cx = cx;
  o.cy = cy;
  o.color = Color::white;
  return o;
}

TEST(ScenesRender, SquareFillsItsBoxExactly) {
  const auto pixels = lit(draw(object(ShapeKind::square, 7)));
  EXPECT_EQ(pixels.size(), 49u);
  EXPECT_TRUE(pixels.count({13, 13}));  // x0 = 16 - 7 / 2 = 13
  EXPECT_TRUE(pixels.count({19, 19}));
  EXPECT_FALSE(pixels.count({20, 19}));
}

TEST(ScenesRender, CircleIsADiscOfDiameterS) {
  for (int s : {6, 7, 8, 11, 12, 13}) {
    const auto pixels = lit(draw(object(ShapeKind::circle, s)));
    const double area = M_PI * s * s / 4.0;
    EXPECT_NEAR(static_cast<double>(pixels.size()), area, 0.25 * area) << "s = " << s;
    // Symmetric left-right and top-bottom about the box centre.
    const int x0 = 16 - s / 2, y0 = 16 - s / 2;
    for (const auto& [x, y] : pixels) {
      EXPECT_TRUE(pixels.count({2 * x0 + s - 1 - x, y})) << s;
      EXPECT_TRUE(pixels.count({x, 2 * y0 + s - 1 - y})) << s;
    }
  }
}

TEST(ScenesRender, TrianglePointsUpWithItsBaseAtTheBottom) {
  const int s = 12;
  const auto pixels = lit(draw(object(ShapeKind::triangle, s)));
  const int y0 = 16 - s / 2;
  std::vector<int> width(static_cast<size_t>(s), 0);
  for (const auto& [x, y] : pixels) ++width[static_cast<size_t>(y - y0)];
  for (int r = 1; r < s; ++r) EXPECT_GE(width[r], width[r - 1]) << "row " << r;
  EXPECT_GE(width[s - 1], s - 1);  // the base spans (nearly) the whole box
  EXPECT_LE(width[0], 2);          // the apex is narrow
}

TEST(ScenesRender, CrossHasArmsOfLengthSAndThicknessQuarterS) {
  const int s = 12;  // thickness max(2, round(3)) = 3
  const auto image = draw(object(ShapeKind::cross, s));
  const auto pixels = lit(image);
  EXPECT_EQ(pixels.size(), static_cast<size_t>(2 * s * 3 - 3 * 3));
  const auto small = lit(draw(object(ShapeKind::cross, 6)));  // thickness max(2, round(1.5)) = 2
  EXPECT_EQ(small.size(), static_cast<size_t>(2 * 6 * 2 - 2 * 2));
}

TEST(ScenesRender, ColourTimesBrightnessOnBlack) {
  Object o = object(ShapeKind::square, 6);
  o.color = Color::blue;
  o.brightness = 0.9f;
  const auto image = draw(o);
  const int p = 16 * kSide + 16;
  EXPECT_FLOAT_EQ(image[p], 0.15f * 0.9f);
  EXPECT_FLOAT_EQ(image[kPixels + p], 0.35f * 0.9f);
  EXPECT_FLOAT_EQ(image[2 * kPixels + p], 1.0f * 0.9f);
  EXPECT_EQ(image[0], 0.0f);
  EXPECT_EQ(image[2 * kPixels], 0.0f);
}

TEST(ScenesRender, ClipsAtTheBorder) {
  Object o = object(ShapeKind::square, 13, 26, 26);  // box [20, 33) would pass the edge
  const auto pixels = lit(draw(o));
  EXPECT_EQ(pixels.size(), 12u * 12u);
}

// ---- the training distribution ----

struct Stats {
  int samples = 0, single = 0;
  int single_size_named = 0, single_color_named = 0, single_place_named = 0;
  std::map<int, int> shapes, colors, sizes, places;
};

TEST(ScenesTraining, AttributesStayInRangeAndHeldOutNeverAppears) {
  SceneSampler sampler;
  Generator gen(7);
  Stats st;
  for (int i = 0; i < 20000; ++i) {
    const auto sample = sampler.sample_training(gen);
    ASSERT_TRUE(sample.objects.size() == 1 || sample.objects.size() == 2);
    ASSERT_EQ(sample.spec.size(), sample.objects.size());
    ++st.samples;
    for (size_t k = 0; k < sample.objects.size(); ++k) {
      const Object& o = sample.objects[k];
      ASSERT_FALSE(is_held_out(o)) << sample.prompt;
      ASSERT_GE(o.brightness, 0.8f);
      ASSERT_LE(o.brightness, 1.0f);
      const bool extent_ok = o.size == Size::small ? (o.extent >= 6 && o.extent <= 8)
                                                   : (o.extent >= 11 && o.extent <= 13);
      ASSERT_TRUE(extent_ok) << o.extent;
      ASSERT_LE(std::abs(o.cx - cell_centre(o.place.col)), 2);
      ASSERT_LE(std::abs(o.cy - cell_centre(o.place.row)), 2);
      // The prompt never contradicts the picture.
      const ObjectSpec& s = sample.spec[k];
      ASSERT_EQ(s.shape, o.shape);
      ASSERT_TRUE(!s.size || *s.size == o.size);
      ASSERT_TRUE(!s.color || *s.color == o.color);
      ASSERT_TRUE(!s.place || *s.place == o.place);
      ++st.shapes[static_cast<int>(o.shape)];
      ++st.colors[static_cast<int>(o.color)];
      ++st.sizes[static_cast<int>(o.size)];
      ++st.places[o.place.index()];
    }
    if (sample.objects.size() == 2) {
      ASSERT_FALSE(sample.objects[0].place == sample.objects[1].place);
      ASSERT_TRUE(boxes_apart(sample.objects[0], sample.objects[1])) << sample.prompt;
      ASSERT_TRUE(sample.spec[0].place && sample.spec[1].place && sample.spec[0].color &&
                  sample.spec[1].color);
    } else {
      ++st.single;
      st.single_size_named += sample.spec[0].size.has_value();
      st.single_color_named += sample.spec[0].color.has_value();
      st.single_place_named += sample.spec[0].place.has_value();
    }
    ASSERT_FALSE(names_held_out(sample.spec)) << sample.prompt;
  }
  EXPECT_NEAR(st.single / 20000.0, 0.5, 0.02);
  EXPECT_NEAR(st.single_size_named / static_cast<double>(st.single), 0.6, 0.02);
  EXPECT_NEAR(st.single_color_named / static_cast<double>(st.single), 0.7, 0.02);
  EXPECT_NEAR(st.single_place_named / static_cast<double>(st.single), 0.7, 0.02);
  EXPECT_EQ(st.shapes.size(), 4u);
  EXPECT_EQ(st.colors.size(), 6u);
  EXPECT_EQ(st.sizes.size(), 2u);
  EXPECT_EQ(st.places.size(), 9u);
  for (const auto& [size, n] : st.sizes) EXPECT_NEAR(n, st.sizes[0], 0.05 * n) << size;
}

TEST(ScenesTraining, SameSeedSameScenes) {
  SceneSampler sampler;
  Generator a(3), b(3);
  for (int i = 0; i < 200; ++i) {
    const auto x = sampler.sample_training(a);
    const auto y = sampler.sample_training(b);
    ASSERT_EQ(x.prompt, y.prompt);
    std::vector<float> ix(kImageFloats), iy(kImageFloats);
    render(x.objects, ix.data());
    render(y.objects, iy.data());
    ASSERT_EQ(ix, iy);
  }
}

// ---- the grammar ----

TEST(ScenesPrompt, TextAndParseAreInverse) {
  SceneSampler sampler;
  Generator gen(11);
  for (int i = 0; i < 2000; ++i) {
    const auto sample = sampler.sample_training(gen);
    EXPECT_EQ(parse_prompt(sample.prompt), sample.spec) << sample.prompt;
  }
  const SceneSpec spec =
      parse_prompt("A Large RED circle at the top right and a cross on the left");
  ASSERT_EQ(spec.size(), 2u);
  EXPECT_EQ(spec[0].shape, ShapeKind::circle);
  EXPECT_EQ(*spec[0].size, Size::large);
  EXPECT_EQ(*spec[0].color, Color::red);
  EXPECT_EQ(spec[0].place->index(), 2);
  EXPECT_FALSE(spec[1].color.has_value());
  EXPECT_EQ(spec[1].place->index(), 3);
  EXPECT_EQ(parse_prompt("square at the top")[0].place->index(), 1);
  EXPECT_EQ(parse_prompt("square at the bottom left")[0].place->index(), 6);
}

TEST(ScenesPrompt, BadPromptsSayWhatWasExpected) {
  expect_error([] { parse_prompt("a red"); }, "expected a shape");
  expect_error([] { parse_prompt("a red dog"); }, "unexpected \"dog\" at word 3");
  expect_error([] { parse_prompt("circle somewhere"); }, "\"and\", a place");
  expect_error([] { parse_prompt("a circle and a square"); }, "each needs its place");
  expect_error([] { parse_prompt("a circle on the left and a square on the left"); }, "same place");
  expect_error([] { parse_prompt("a circle on the left and a square on the right and a cross"); },
               "at most two objects");
  expect_error([] { parse_prompt("  "); }, "no words");
}

TEST(ScenesPrompt, HeldOutCombinations) {
  EXPECT_TRUE(names_held_out(parse_prompt("a red triangle")));
  EXPECT_TRUE(names_held_out(parse_prompt("a small green circle on the left")));
  EXPECT_TRUE(names_held_out(parse_prompt("a blue cross")));
  EXPECT_TRUE(names_held_out(parse_prompt("yellow square")));
  EXPECT_TRUE(names_held_out(parse_prompt("a square at the top right")));
  EXPECT_TRUE(names_held_out(parse_prompt("a circle at the bottom left")));
  EXPECT_TRUE(
      names_held_out(parse_prompt("a white cross in the center and a red triangle at the bottom")));
  EXPECT_FALSE(names_held_out(parse_prompt("a triangle")));
  EXPECT_FALSE(names_held_out(parse_prompt("a red circle at the top right")));
  EXPECT_FALSE(names_held_out(parse_prompt("a circle at the top right")));
}

TEST(ScenesForPrompt, NamedAttributesAreHonouredAndOpenOnesFollowTraining) {
  SceneSampler sampler;
  Generator gen(5);
  std::set<int> colors, places;
  for (int i = 0; i < 3000; ++i) {
    const auto objects = sampler.sample_for_prompt(parse_prompt("a circle"), gen);
    ASSERT_EQ(objects.size(), 1u);
    ASSERT_EQ(objects[0].shape, ShapeKind::circle);
    ASSERT_FALSE(is_held_out(objects[0]));  // no green circle, none at the bottom left
    colors.insert(static_cast<int>(objects[0].color));
    places.insert(objects[0].place.index());
  }
  EXPECT_EQ(colors.size(), 5u);
  EXPECT_EQ(places.size(), 8u);
  for (int i = 0; i < 200; ++i) {
    const auto o = sampler.sample_for_prompt(parse_prompt("a small green circle"), gen)[0];
    ASSERT_EQ(o.color, Color::green);
    ASSERT_EQ(o.size, Size::small);
    ASSERT_FALSE(o.place == (Place{0, 2}));  // the place is open: not the held-out one
    const auto two = sampler.sample_for_prompt(
        parse_prompt("a square at the top right and a large red triangle at the bottom"), gen);
    ASSERT_EQ(two.size(), 2u);
    ASSERT_EQ(two[0].place, (Place{2, 0}));
    ASSERT_EQ(two[1].color, Color::red);
    ASSERT_TRUE(boxes_apart(two[0], two[1]));
  }
}

// ---- the word tokenizer ----

TEST(WordTokenizerTest, EncodesKnownWordsAndReportsUnknownOnes) {
  WordTokenizer tok;
  EXPECT_EQ(tok.max_length(), 20);
  const auto& vocab = WordTokenizer::vocabulary();
  EXPECT_EQ(vocab[0], "<pad>");
  EXPECT_EQ(vocab[1], "<unk>");
  EXPECT_EQ(tok.vocab_size(), static_cast<int64_t>(vocab.size()));
  const auto ids = tok.encode("A red circle, on the LEFT!");
  EXPECT_EQ(tok.decode(ids), "a red circle on the left");
  EXPECT_EQ(ids[6], WordTokenizer::kPad);
  const Encoding e = tok.encode_with_report("a purple dog and a dog at the moon");
  EXPECT_EQ(e.dropped_count, 3);
  EXPECT_EQ(e.dropped, (std::vector<std::string>{"dog", "moon"}));
  EXPECT_EQ(e.length, 9);
  EXPECT_EQ(e.tokens[2], WordTokenizer::kUnk);
  EXPECT_EQ(tok.decode(e.tokens), "a purple <unk> and a <unk> at the <unk>");
  // Every word the grammar uses is known.
  SceneSampler sampler;
  Generator gen(1);
  for (int i = 0; i < 500; ++i) {
    const auto report = tok.encode_with_report(sampler.sample_training(gen).prompt);
    ASSERT_EQ(report.dropped_count, 0);
    ASSERT_EQ(report.truncated, 0);
  }
}

TEST(WordTokenizerTest, TruncatesAndRejectsBadLengths) {
  WordTokenizer tok(3);
  const Encoding e = tok.encode_with_report("a small red circle");
  EXPECT_EQ(e.length, 3);
  EXPECT_EQ(e.truncated, 1);
  expect_error([] { WordTokenizer bad(0); }, "max_length must be in [1, 4096], got 0");
}

}  // namespace
}  // namespace ink::scenes
