// Tests of the inkgrad program: its picture code (canvas, font, PNG, grids, loss plot), prompt
// checks and run folder helpers, then the built binary end to end on tiny settings, including
// every user mistake we promise a one-line error for, resume, and Ctrl-C.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "apps/figures.h"
#include "apps/image.h"
#include "apps/progress.h"
#include "apps/prompt.h"
#include "apps/run_dir.h"
#include "models/shapes.h"
#include "models/text_to_image.h"
#include "nn/safetensors.h"
#include "tensor/error.h"

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_PNG
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wshadow"
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

namespace ink::app {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

// ---- helpers ----

struct DecodedPng {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

// Decodes PNG bytes with stb_image (an independent decoder), as RGB.
DecodedPng decode_png(const std::vector<uint8_t>& bytes) {
  DecodedPng out;
  int channels = 0;
  stbi_uc* pixels = stbi_load_from_memory(bytes.data(), static_cast<int>(bytes.size()), &out.width,
                                          &out.height, &channels, 3);
  if (pixels == nullptr) return {};
  out.rgb.assign(pixels, pixels + static_cast<size_t>(out.width) * out.height * 3);
  stbi_image_free(pixels);
  return out;
}

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

uint32_t big_endian(const std::vector<uint8_t>& bytes, size_t offset) {
  return uint32_t{bytes[offset]} << 24 | uint32_t{bytes[offset + 1]} << 16 |
         uint32_t{bytes[offset + 2]} << 8 | bytes[offset + 3];
}

// Checks the PNG signature and the IHDR chunk's width and height.
void expect_png_header(const std::vector<uint8_t>& bytes, int width, int height) {
  const std::vector<uint8_t> signature = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  ASSERT_GE(bytes.size(), 33u);
  EXPECT_EQ(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 8), signature);
  EXPECT_EQ(std::string(bytes.begin() + 12, bytes.begin() + 16), "IHDR");
  EXPECT_EQ(big_endian(bytes, 16), static_cast<uint32_t>(width));
  EXPECT_EQ(big_endian(bytes, 20), static_cast<uint32_t>(height));
}

// Pixels that are neither the paper nor black nor white: ink of the given colour.
int64_t count_color(const Image& image, Color color) {
  int64_t n = 0;
  for (int y = 0; y < image.height(); ++y) {
    for (int x = 0; x < image.width(); ++x) n += image.at(x, y) == color ? 1 : 0;
  }
  return n;
}

// ---- canvas ----

TEST(AppImage, ConstructsAndClips) {
  Image image(4, 3, Color{1, 2, 3});
  EXPECT_EQ(image.width(), 4);
  EXPECT_EQ(image.height(), 3);
  EXPECT_EQ(image.rgb().size(), 36u);
  EXPECT_EQ(image.at(3, 2), (Color{1, 2, 3}));
  image.set(-1, 0, kBlack);  // clipped, no crash
  image.set(4, 0, kBlack);
  fill_rect(image, -10, -10, 100, 100, kWhite);
  EXPECT_EQ(count_color(image, kWhite), 12);
  image.blend(0, 0, kBlack, 0.5f);
  EXPECT_EQ(image.at(0, 0), (Color{128, 128, 128}));
}

TEST(AppImage, RejectsBadSizes) {
  EXPECT_THAT([] { Image(0, 5); }, ::testing::ThrowsMessage<Error>(HasSubstr("at least 1x1")));
  EXPECT_THAT([] { Image(1 << 14, 1 << 14); },
              ::testing::ThrowsMessage<Error>(HasSubstr("too large")));
}

TEST(AppImage, GrayLevelsAndNearestNeighbourUpscale) {
  const std::vector<float> values = {0.0f, 0.5f, 1.0f, NAN, -1.0f, 2.0f};
  const Image image = gray_image(values, 3, 2, 1);
  EXPECT_EQ(image.at(0, 0), (Color{0, 0, 0}));
  EXPECT_EQ(image.at(1, 0), (Color{128, 128, 128}));
  EXPECT_EQ(image.at(2, 0), (Color{255, 255, 255}));
  EXPECT_EQ(image.at(0, 1), (Color{0, 0, 0}));  // NaN shows black
  EXPECT_EQ(image.at(1, 1), (Color{0, 0, 0}));
  EXPECT_EQ(image.at(2, 1), (Color{255, 255, 255}));

  const Image big = upscale_nearest(image, 3);
  ASSERT_EQ(big.width(), 9);
  ASSERT_EQ(big.height(), 6);
  for (int y = 0; y < 6; ++y) {
    for (int x = 0; x < 9; ++x) EXPECT_EQ(big.at(x, y), image.at(x / 3, y / 3)) << x << "," << y;
  }
  EXPECT_EQ(gray_image(values, 3, 2, 4).at(11, 7), image.at(2, 1));
  EXPECT_THAT([&] { gray_image(values, 4, 2, 1); },
              ::testing::ThrowsMessage<Error>(HasSubstr("6 values do not make a 4x2 picture")));
}

TEST(AppImage, LineCoversItsPixels) {
  Image image(20, 20, kWhite);
  draw_line(image, 2.0f, 10.5f, 18.0f, 10.5f, 1.0f, kBlack);
  EXPECT_EQ(image.at(10, 10), kBlack);
  EXPECT_EQ(image.at(10, 5), kWhite);
  draw_line(image, -50.0f, -50.0f, 100.0f, 100.0f, 3.0f, kBlack);  // clipped
}

TEST(AppImage, PngEncodesAndDecodes) {
  Image image(7, 5, kWhite);
  image.set(0, 0, Color{255, 0, 0});
  image.set(6, 4, Color{0, 0, 255});
  const std::vector<uint8_t> png = encode_png(image);
  expect_png_header(png, 7, 5);
  const DecodedPng decoded = decode_png(png);
  ASSERT_EQ(decoded.width, 7);
  ASSERT_EQ(decoded.height, 5);
  EXPECT_EQ(decoded.rgb, image.rgb());
}

TEST(AppImage, WritePngFailsWithTheReason) {
  EXPECT_THAT([] { write_png("/nonexistent-folder-of-inkgrad/x.png", Image(2, 2)); },
              ::testing::ThrowsMessage<Error>(HasSubstr("/nonexistent-folder-of-inkgrad/x.png")));
}

// ---- font ----

TEST(AppFont, EveryPrintableCharacterHasADistinctGlyph) {
  std::set<std::vector<bool>> seen;
  for (char c = 33; c < 127; ++c) {
    std::vector<bool> bits;
    int lit = 0;
    for (int row = 0; row < kGlyphHeight; ++row) {
      for (int column = 0; column < 5; ++column) {
        bits.push_back(glyph_pixel(c, column, row));
        lit += bits.back() ? 1 : 0;
      }
    }
    EXPECT_GT(lit, 0) << "glyph of '" << c << "' is empty";
    EXPECT_TRUE(seen.insert(bits).second) << "glyph of '" << c << "' repeats another";
  }
  for (int row = 0; row < kGlyphHeight; ++row) {
    for (int column = 0; column < 5; ++column) EXPECT_FALSE(glyph_pixel(' ', column, row));
  }
  // A known shape: 'T' is a full top row and a centre stem.
  for (int column = 0; column < 5; ++column) EXPECT_TRUE(glyph_pixel('T', column, 0));
  EXPECT_TRUE(glyph_pixel('T', 2, 6));
  EXPECT_FALSE(glyph_pixel('T', 0, 6));
  EXPECT_TRUE(glyph_pixel('g', 1, 8));  // a descender
}

TEST(AppFont, DrawsInsideItsBox) {
  const std::string text = "loss 0.039 AZ az";
  EXPECT_EQ(text_width(text, 2), (16 * kGlyphAdvance - 1) * 2);
  EXPECT_EQ(text_width("", 3), 0);
  EXPECT_EQ(text_width("\xC3\xA9", 1), 5);  // one UTF-8 character, one box
  Image image(200, 40, kWhite);
  draw_text(image, 10, 10, text, 2, kBlack);
  int64_t inside = 0, outside = 0;
  for (int y = 0; y < image.height(); ++y) {
    for (int x = 0; x < image.width(); ++x) {
      const bool in_box =
          x >= 10 && x < 10 + text_width(text, 2) && y >= 10 && y < 10 + text_height(2);
      if (image.at(x, y) == kBlack) ++(in_box ? inside : outside);
    }
  }
  EXPECT_GT(inside, 100);
  EXPECT_EQ(outside, 0);
  draw_text(image, 190, 35, "clipped \x01\xFF", 3, kBlack);  // off the edge, odd bytes: no crash
}

// ---- figures ----

TEST(AppFigures, GridHasThePlannedLayout) {
  std::vector<GridRow> rows(2);
  rows[0].label = "circle";
  rows[1].label = "two vertical lines";
  Generator generator(1);
  for (GridRow& row : rows) {
    for (int i = 0; i < 6; ++i) row.pictures.push_back(make_shape(row.label, generator));
  }
  GridStyle style;
  style.title = "ground truth vs generated";
  style.group_headers = {"ground truth", "generated"};
  style.group_size = 3;
  style.scale = 3;
  const Image image = render_grid(rows, style);
  EXPECT_GT(image.width(), 6 * 84 + text_width("two vertical lines", 2));
  EXPECT_GT(image.height(), 2 * 84);
  EXPECT_LT(image.height(), 2 * 84 + 200);
  // The pictures are there: white shape pixels on black.
  EXPECT_GT(count_color(image, kWhite), 9 * 6 * 20);
  expect_png_header(encode_png(image), image.width(), image.height());

  rows[1].pictures[2].resize(10);
  EXPECT_THAT([&] { render_grid(rows, style); },
              ::testing::ThrowsMessage<Error>(HasSubstr("has 10 values, expected 28x28")));
  EXPECT_NO_THROW(render_grid({}, GridStyle{}));  // nothing to show is still a picture
}

TEST(AppFigures, StretchDividesByTheMaximum) {
  EXPECT_THAT(stretched({0.0f, 0.1f, 0.2f}), ::testing::ElementsAre(0.0f, 0.5f, 1.0f));
  EXPECT_THAT(stretched({0.0f, 0.005f}), ::testing::ElementsAre(0.0f, 0.005f));  // too faint
  const std::vector<float> with_nan = stretched({NAN, 0.5f});
  EXPECT_TRUE(std::isnan(with_nan[0]));
  EXPECT_EQ(with_nan[1], 1.0f);
}

TEST(AppFigures, NiceTicks) {
  EXPECT_THAT(nice_ticks(0.0, 1.0, 5),
              ::testing::ElementsAre(0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0));
  EXPECT_THAT(nice_ticks(1.0, 100.0, 8), ::testing::ElementsAre(20.0, 40.0, 60.0, 80.0, 100.0));
  EXPECT_THAT(nice_ticks(3.0, 3.0, 5), ::testing::ElementsAre(3.0));
  EXPECT_TRUE(nice_ticks(NAN, 1.0, 5).empty());
}

TEST(AppFigures, LossPlotHandlesEdgeCases) {
  const Color line{31, 119, 180};
  std::vector<float> decreasing;
  for (int i = 0; i < 100; ++i) decreasing.push_back(0.04f + 0.1f * std::exp(-i / 10.0f));
  std::vector<float> wide_range;
  for (int i = 0; i < 50; ++i) wide_range.push_back(std::pow(10.0f, -i / 10.0f));
  const std::vector<std::vector<float>> cases = {
      {},                                    // no epoch yet
      {0.07f},                               // one point
      {0.05f, 0.05f, 0.05f},                 // constant
      {0.0f, 0.0f},                          // zero
      {0.08f, NAN, 0.06f, INFINITY, 0.05f},  // non-finite values are skipped
      decreasing,
      wide_range,  // log scale
      std::vector<float>(5000, 1e6f),
  };
  for (const std::vector<float>& losses : cases) {
    const Image image = render_loss_plot(losses);
    EXPECT_EQ(image.width(), 640);
    EXPECT_EQ(image.height(), 360);
    if (!losses.empty()) {
      EXPECT_GT(count_color(image, line), 10) << losses.size() << " points";
    }
  }
  LossPlotStyle small;
  small.width = 200;
  small.height = 150;
  EXPECT_EQ(render_loss_plot(decreasing, small).width(), 200);
  if (const char* dir = std::getenv("INK_APP_TEST_PICTURES")) {  // to look at them
    write_png(std::string(dir) + "/loss_decreasing.png", render_loss_plot(decreasing));
    write_png(std::string(dir) + "/loss_log.png", render_loss_plot(wide_range));
    write_png(std::string(dir) + "/loss_one.png", render_loss_plot(cases[1]));
  }
}

// ---- progress, prompts, run folder ----

TEST(AppProgress, FormatsDurations) {
  EXPECT_EQ(format_duration(0.42), "0.4s");
  EXPECT_EQ(format_duration(12.4), "12s");
  EXPECT_EQ(format_duration(185.0), "3m05s");
  EXPECT_EQ(format_duration(3725.0), "1h02m");
  EXPECT_EQ(format_duration(-1.0), "?");
  EXPECT_EQ(format_duration(NAN), "?");
}

TEST(AppProgress, PlainLinesWhenNotATerminal) {
  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  TrainingProgress progress(file, /*interactive=*/false, /*quiet=*/false, 0, 2, 100);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    for (int64_t step = 0; step < 4; ++step) progress.step(epoch, step, 4, 25, 0.5f);
    progress.end_epoch(epoch, 0.5f);
  }
  std::rewind(file);
  std::string text(4096, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), file));
  std::fclose(file);
  EXPECT_THAT(text, HasSubstr("epoch 1/2  loss 0.500000"));
  EXPECT_THAT(text, HasSubstr("epoch 2/2  loss 0.500000"));
  EXPECT_THAT(text, HasSubstr("samples/s"));
  EXPECT_THAT(text, HasSubstr("ETA"));
  EXPECT_THAT(text, Not(HasSubstr("\r")));
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
}

TEST(AppPrompt, QuotesUntrustedText) {
  EXPECT_EQ(quoted_text("circle"), "\"circle\"");
  EXPECT_EQ(quoted_text("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(quoted_text("a\nb\x1b\xff"), "\"a\\nb\\x1B\\xFF\"");
  EXPECT_EQ(quoted_text("caf\xC3\xA9"), "\"caf\xC3\xA9\"");
  EXPECT_EQ(quoted_text("\xC0\xAF"), "\"\\xC0\\xAF\"");  // overlong encoding is invalid
  EXPECT_EQ(quoted_text(std::string(10000, 'a'), 5), "\"aaaaa...\" (10000 characters)");
}

TEST(AppPrompt, RefusesPromptsThatCannotWork) {
  const CharTokenizer tokenizer;
  EXPECT_THAT([&] { check_prompt("", tokenizer); },
              ::testing::ThrowsMessage<Error>(HasSubstr("the prompt is empty")));
  EXPECT_THAT([&] { check_prompt("123!?", tokenizer); },
              ::testing::ThrowsMessage<Error>(
                  AllOf(HasSubstr("has no letter the model knows"), HasSubstr("'1'"))));
  EXPECT_THAT([&] { check_prompt("\xF0\x9F\x98\x80\x01", tokenizer); },
              ::testing::ThrowsMessage<Error>(HasSubstr("has no letter the model knows")));
  EXPECT_THAT([&] { check_prompt("   ", tokenizer); },
              ::testing::ThrowsMessage<Error>(HasSubstr("\"   \" has no letter")));
  EXPECT_THAT([&] { check_prompt(std::string(40, ' ') + "circle", tokenizer); },
              ::testing::ThrowsMessage<Error>(HasSubstr("only the first 32 characters")));
}

TEST(AppPrompt, WarnsAboutDroppedTruncatedAndUntrained) {
  const CharTokenizer tokenizer;
  EXPECT_TRUE(check_prompt("circle", tokenizer).empty());
  EXPECT_TRUE(check_prompt("Two Vertical LINES", tokenizer).empty());  // lowercased: trained
  const auto dropped = check_prompt("circle!!", tokenizer);
  ASSERT_EQ(dropped.size(), 1u);
  EXPECT_THAT(dropped[0], HasSubstr("dropped 2 characters"));
  EXPECT_THAT(dropped[0], HasSubstr("'!'"));
  const auto untrained = check_prompt("triangle", tokenizer);
  ASSERT_EQ(untrained.size(), 1u);
  EXPECT_THAT(untrained[0], AllOf(HasSubstr("\"triangle\""), HasSubstr("\"sparse dots\"")));
  const auto long_prompt = check_prompt(std::string(10000, 'a'), tokenizer);
  EXPECT_THAT(long_prompt[0], HasSubstr("longer than 32 characters"));
  for (const std::string& warning : long_prompt) EXPECT_LT(warning.size(), 400u);
}

TEST(AppRunDir, RecordRoundTripsAndRejectsBadFiles) {
  RunRecord record;
  record.config.epochs = 7;
  record.config.lr = 0.002;
  record.config.seed = 123456789012345ULL;
  record.threads = 3;
  record.final_loss = 0.0399;
  record.status = "complete";
  const RunRecord back = parse_run_record(run_record_json(record), "config.json");
  EXPECT_EQ(back.config.epochs, 7);
  EXPECT_EQ(back.config.samples_per_prompt, 500);
  EXPECT_EQ(back.config.lr, 0.002);
  EXPECT_EQ(back.config.seed, 123456789012345ULL);
  EXPECT_EQ(back.threads, 3);
  EXPECT_EQ(back.final_loss, 0.0399);
  EXPECT_EQ(back.status, "complete");

  EXPECT_THAT([] { parse_run_record("{not json", "x/config.json"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("x/config.json is not a valid JSON")));
  EXPECT_THAT([] { parse_run_record(R"({"epochs": 3})", "c.json"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("c.json has no \"samples_per_prompt\"")));
  EXPECT_THAT(
      [] {
        parse_run_record(
            R"({"epochs": "3", "samples_per_prompt": 1, "batch_size": 2, "lr": 1, "seed": 1})",
            "c.json");
      },
      ::testing::ThrowsMessage<Error>(HasSubstr("\"epochs\" must be an integer")));
  EXPECT_EQ(losses_csv(std::vector<float>{0.5f, 0.25f}), "epoch,loss\n1,0.5\n2,0.25\n");

  // A record as written before a field existed: the field's whole line (comma included) removed.
  const auto without = [](std::string text, const std::string& field) {
    const size_t key = text.find("\"" + field + "\"");
    EXPECT_NE(key, std::string::npos) << field << " in " << text;
    if (key != std::string::npos) text.erase(key, text.find('\n', key) + 1 - key);
    return text;
  };

  // A diffusion record keeps its Min-SNR gamma; one written before the weighting existed has no
  // "snr_gamma" and trained without it, so it reads as 0 (not as today's default).
  RunRecord diffusion;
  diffusion.config.model = "diffusion";
  diffusion.config.snr_gamma = 2.5;
  const std::string text = run_record_json(diffusion);
  EXPECT_EQ(parse_run_record(text, "c.json").config.snr_gamma, 2.5);
  EXPECT_EQ(parse_run_record(without(text, "snr_gamma"), "c.json").config.snr_gamma, 0.0);
  EXPECT_EQ(TrainConfig{}.snr_gamma, 5.0);

  // The same for the learning-rate decay: kept, and "constant" when the record predates it.
  diffusion.config.lr_decay = "cosine";
  const std::string decayed = run_record_json(diffusion);
  EXPECT_EQ(parse_run_record(decayed, "c.json").config.lr_decay, "cosine");
  EXPECT_EQ(parse_run_record(without(decayed, "lr_decay"), "c.json").config.lr_decay, "constant");

  // And the noise schedule and the prediction: kept, and "linear" and "eps" (the only ones there
  // were) when the record predates them.
  diffusion.config.noise_schedule = "cosine";
  diffusion.config.prediction = "v";
  const std::string cosine_v = run_record_json(diffusion);
  EXPECT_EQ(parse_run_record(cosine_v, "c.json").config.noise_schedule, "cosine");
  EXPECT_EQ(parse_run_record(cosine_v, "c.json").config.prediction, "v");
  EXPECT_EQ(parse_run_record(without(cosine_v, "noise_schedule"), "c.json").config.noise_schedule,
            "linear");
  EXPECT_EQ(parse_run_record(without(cosine_v, "prediction"), "c.json").config.prediction, "eps");

  // The text encoder's layers and the query positions: kept, and 2 and off (all there were)
  // when the record predates them; a "query_positions" that is not a boolean is refused.
  diffusion.config.text_layers = 3;
  diffusion.config.query_positions = true;
  const std::string positions = run_record_json(diffusion);
  EXPECT_EQ(parse_run_record(positions, "c.json").config.text_layers, 3);
  EXPECT_TRUE(parse_run_record(positions, "c.json").config.query_positions);
  EXPECT_EQ(parse_run_record(without(positions, "text_layers"), "c.json").config.text_layers, 2);
  EXPECT_FALSE(
      parse_run_record(without(positions, "query_positions"), "c.json").config.query_positions);
  std::string quoted = positions;
  const std::string on = "\"query_positions\": true";
  ASSERT_NE(quoted.find(on), std::string::npos) << quoted;
  quoted.replace(quoted.find(on), on.size(), "\"query_positions\": \"yes\"");
  EXPECT_THAT([&] { parse_run_record(quoted, "c.json"); },
              ::testing::ThrowsMessage<Error>(
                  HasSubstr("c.json: \"query_positions\" must be true or false, got \"yes\"")));
  // phrase_attention: the same rules.
  diffusion.config.phrase_attention = true;
  const std::string phrases = run_record_json(diffusion);
  EXPECT_TRUE(parse_run_record(phrases, "c.json").config.phrase_attention);
  EXPECT_FALSE(
      parse_run_record(without(phrases, "phrase_attention"), "c.json").config.phrase_attention);
  std::string number = phrases;
  const std::string phrase_on = "\"phrase_attention\": true";
  ASSERT_NE(number.find(phrase_on), std::string::npos) << number;
  number.replace(number.find(phrase_on), phrase_on.size(), "\"phrase_attention\": 1");
  EXPECT_THAT([&] { parse_run_record(number, "c.json"); },
              ::testing::ThrowsMessage<Error>(
                  HasSubstr("c.json: \"phrase_attention\" must be true or false, got 1")));
}

TEST(AppRunDir, OneLineMessages) {
  EXPECT_EQ(one_line("plain"), "plain");
  EXPECT_EQ(one_line("load_state_dict: 2 problems:\n  a\n  b\n"),
            "load_state_dict: 2 problems: a; b");
  EXPECT_EQ(one_line("x\n\n  (while loading f)"), "x; (while loading f)");
  EXPECT_EQ(one_line("1\n2\n3\n4", 2), "1; 2; (and 2 more)");
}

// Issue 15 §5: a hostile config.json value is quoted and bounded; a huge config.json is refused
// before it is read.
TEST(AppRunDir, HostileRecordValuesGiveShortMessages) {
  const std::string huge(50'000'000, '7');
  const std::string text =
      R"({"epochs": ")" + huge + R"(\u001b[2J", "samples_per_prompt": 1, "batch_size": 2, "lr": 1,
          "seed": 1})";
  std::string error;
  try {
    parse_run_record(text, "c.json");
  } catch (const Error& e) {
    error = e.what();
  }
  EXPECT_THAT(error, HasSubstr("c.json: \"epochs\" must be an integer, got \"7777"));
  EXPECT_THAT(error, HasSubstr("(50000004 characters)"));
  EXPECT_LT(error.size(), 300u);
  EXPECT_EQ(error.find('\x1b'), std::string::npos);
  EXPECT_THAT(
      [] {
        parse_run_record(R"({"epochs": [1, 2, 3], "samples_per_prompt": 1, "batch_size": 2,
                             "lr": 1, "seed": 1})",
                         "c.json");
      },
      ::testing::ThrowsMessage<Error>(HasSubstr("must be an integer, got an array of 3 elements")));

  char pattern[] = "/tmp/inkgrad_record_XXXXXX";
  ASSERT_NE(::mkdtemp(pattern), nullptr);
  const std::string dir = pattern;
  {
    std::ofstream out(dir + "/config.json");
    out << "{\"epochs\": \"" << std::string(2 << 20, 'x') << "\"}";
  }
  EXPECT_THAT([&] { read_run_record(dir); },
              ::testing::ThrowsMessage<Error>(HasSubstr("too large to be a run record")));
  fs::remove_all(dir);
}

// ---- the program, end to end ----

struct Result {
  int code = -1;
  std::string out, err;
};

std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

class InkgradCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char pattern[] = "/tmp/inkgrad_test_app_XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    root_ = pattern;
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    if (!std::getenv("INK_APP_TEST_KEEP")) fs::remove_all(root_, ec);
  }

  // One tiny training run shared by the tests that read it, made on first use (ctest runs each
  // test in its own process, so a run made up front would be repeated for every test).
  static std::string run_dir() {
    const std::string dir = root_ + "/run";
    if (!fs::exists(dir + "/compare.png")) {
      const Result result = run({"train", "--model", "mlp", "--epochs", "2", "--samples-per-prompt",
                                 "8", "--batch-size", "16", "--seed", "7", "--out", dir});
      EXPECT_EQ(result.code, 0) << result.err;
    }
    return dir;
  }
  static std::string path(const std::string& name) { return root_ + "/" + name; }

  // Runs the inkgrad binary with `args`, capturing its exit code, stdout and stderr.
  static Result run(const std::vector<std::string>& args) {
    static int counter = 0;
    const std::string out = root_ + "/.out" + std::to_string(counter);
    const std::string err = root_ + "/.err" + std::to_string(counter++);
    std::string command = shell_quote(INKGRAD_BINARY);
    for (const std::string& arg : args) command.append(" ").append(shell_quote(arg));
    command.append(" >").append(shell_quote(out)).append(" 2>").append(shell_quote(err));
    command.append(" </dev/null");
    const int status = std::system(command.c_str());
    Result result;
    result.code = WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
    result.out = read_text(out);
    result.err = read_text(err);
    return result;
  }

  // A failure: non-zero, exactly one line on stderr, in our format, naming the problem.
  static void expect_error(const std::vector<std::string>& args, const std::string& problem,
                           int code = 1) {
    const Result result = run(args);
    std::string command;
    for (const std::string& arg : args) command.append(" ").append(arg.substr(0, 60));
    EXPECT_EQ(result.code, code) << command << "\n" << result.err;
    EXPECT_THAT(result.err, ::testing::StartsWith("inkgrad: error: ")) << command;
    EXPECT_THAT(result.err, HasSubstr(problem)) << command;
    EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << command << "\n"
                                                                         << result.err;
  }

  static std::string root_;
};

std::string InkgradCli::root_;

TEST_F(InkgradCli, HelpForEveryCommand) {
  for (const char* command : {"train", "generate", "data", "graph"}) {
    const Result result = run({command, "--help"});
    EXPECT_EQ(result.code, 0) << command;
    EXPECT_THAT(result.out, HasSubstr("Usage: inkgrad " + std::string(command))) << command;
  }
  EXPECT_THAT(run({"--help"}).out, HasSubstr("generate"));
  EXPECT_EQ(run({"--version"}).code, 0);
}

TEST_F(InkgradCli, TrainWritesTheWholeRun) {
  for (std::string_view file : kRunFiles) {
    EXPECT_TRUE(fs::is_regular_file(fs::path(run_dir()) / file)) << file;
  }
  for (const char* png : {"loss.png", "samples.png", "compare.png"}) {
    const DecodedPng decoded = decode_png(read_bytes(fs::path(run_dir()) / png));
    EXPECT_GT(decoded.width, 300) << png;
    EXPECT_GT(decoded.height, 300) << png;
  }
  const RunRecord record = read_run_record(run_dir());
  EXPECT_EQ(record.status, "complete");
  EXPECT_EQ(record.epochs_completed, 2);
  EXPECT_EQ(record.config.samples_per_prompt, 8);
  EXPECT_EQ(record.config.seed, 7u);
  EXPECT_EQ(record.parameters, 573520);
  ASSERT_TRUE(record.final_loss.has_value());
  const std::string csv = read_text(fs::path(run_dir()) / "losses.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3) << csv;
  EXPECT_THAT(csv, ::testing::StartsWith("epoch,loss\n1,"));
  // The model file is a plain state_dict that loads strictly.
  TextToImageModel model;
  EXPECT_NO_THROW(
      model.load_state_dict(load_safetensors(run_dir() + "/model.safetensors").tensors));
}

TEST_F(InkgradCli, ResumeGivesTheLossesOfAnUninterruptedRun) {
  const std::vector<std::string> settings = {
      "--samples-per-prompt", "8", "--batch-size", "16", "--seed", "3", "-q"};
  auto train = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"train", "--model", "mlp"});
    args.insert(args.end(), settings.begin(), settings.end());
    return run(args);
  };
  ASSERT_EQ(train({"--epochs", "3", "--out", path("straight")}).code, 0);
  ASSERT_EQ(train({"--epochs", "2", "--out", path("resumed")}).code, 0);
  const Result resumed = run({"train", "--resume", path("resumed"), "--epochs", "3", "-q"});
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_THAT(resumed.out, HasSubstr("after epoch 2"));
  EXPECT_EQ(read_text(path("resumed/losses.csv")), read_text(path("straight/losses.csv")));
  EXPECT_EQ(read_bytes(path("resumed/model.safetensors")),
            read_bytes(path("straight/model.safetensors")));
  EXPECT_EQ(read_run_record(path("resumed")).epochs_completed, 3);

  // Resuming a finished run trains nothing, rewrites the pictures, and clears the temporaries
  // of writers that were killed (but not those of a live process).
  const fs::path dead = fs::path(path("resumed")) / ".model.safetensors.tmp-999999999-0";
  const fs::path live = fs::path(path("resumed")) / fmt::format(".loss.png.tmp-{}-0", ::getpid());
  std::ofstream(dead) << "partial";
  std::ofstream(live) << "partial";
  const Result again = run({"train", "--resume", path("resumed"), "-q"});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_THAT(again.out, HasSubstr("has already trained 3 epochs"));
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));
  EXPECT_EQ(read_text(path("resumed/losses.csv")), read_text(path("straight/losses.csv")));

  // A resumed run keeps its settings, and cannot go backwards.
  expect_error({"train", "--resume", path("resumed"), "--lr", "0.1"},
               "--lr cannot be combined with --resume");
  expect_error({"train", "--resume", path("resumed"), "--epochs", "2"},
               "--epochs 2 is fewer than the 3 epochs");
  expect_error({"train", "--resume", path("nothing-here")}, "is not a folder");
  expect_error({"train", "--resume", ""}, "--resume needs the folder of a run");
  expect_error({"train", "--model", "mlp", "--out", ""}, "--out needs a folder");
  fs::create_directories(path("not-a-run"));
  expect_error({"train", "--resume", path("not-a-run")}, "config.json not found");
}

// A kill between the two writes of the first checkpoint leaves the epoch-1 model without a
// training state (found by scripts/kill_loop.sh): that run starts over and ends as if never
// stopped. A later model without its state cannot continue exactly and is refused.
TEST_F(InkgradCli, ResumeWithOnlyTheFirstModelStartsOverAndLaterOnesAreRefused) {
  const std::vector<std::string> settings = {
      "--model", "mlp", "--samples-per-prompt", "8", "--batch-size", "16", "--seed", "5", "-q"};
  auto train = [&](const std::string& epochs, const std::string& out) {
    std::vector<std::string> args = {"train", "--epochs", epochs, "--out", out};
    args.insert(args.end(), settings.begin(), settings.end());
    return run(args);
  };
  ASSERT_EQ(train("2", path("first_straight")).code, 0);
  ASSERT_EQ(train("1", path("first_cut")).code, 0);
  fs::remove(path("first_cut/optimizer.safetensors"));
  const Result resumed = run({"train", "--resume", path("first_cut"), "--epochs", "2", "-q"});
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_THAT(resumed.out, HasSubstr("no checkpoint yet, so starting from epoch 1"));
  EXPECT_EQ(read_text(path("first_cut/losses.csv")), read_text(path("first_straight/losses.csv")));
  EXPECT_EQ(read_bytes(path("first_cut/model.safetensors")),
            read_bytes(path("first_straight/model.safetensors")));

  // The model of epoch 2 without its state: refused, and the model is left as it was.
  fs::remove(path("first_straight/optimizer.safetensors"));
  const std::vector<uint8_t> model = read_bytes(path("first_straight/model.safetensors"));
  expect_error({"train", "--resume", path("first_straight"), "--epochs", "3"},
               "has model.safetensors but no optimizer.safetensors, so the run cannot continue "
               "exactly");
  EXPECT_EQ(read_bytes(path("first_straight/model.safetensors")), model);
}

TEST_F(InkgradCli, TrainRefusesToOverwriteARunWithoutForce) {
  expect_error({"train", "--model", "mlp", "--epochs", "1", "--out", run_dir()},
               "already holds a run");
  const std::string dir = path("forced");
  fs::create_directories(dir);
  std::ofstream(dir + "/config.json") << "{}";
  std::ofstream(dir + "/notes.txt") << "mine";
  const Result result = run({"train", "--model", "mlp", "--epochs", "1", "--samples-per-prompt",
                             "8", "--batch-size", "16", "--out", dir, "--force", "-q"});
  EXPECT_EQ(result.code, 0) << result.err;
  EXPECT_EQ(read_run_record(dir).status, "complete");
  EXPECT_EQ(read_text(dir + "/notes.txt"), "mine");  // --force removes only run files
}

TEST_F(InkgradCli, TrainRejectsBadFlags) {
  expect_error({"train", "--model", "mlp", "--batch-size", "1", "--out", path("x")}, "BatchNorm1d");
  expect_error({"train", "--model", "mlp", "--epochs", "0", "--out", path("x")},
               "--epochs must be between 1 and 1000000, got 0");
  expect_error({"train", "--model", "mlp", "--epochs", "-5", "--out", path("x")},
               "--epochs must be between");
  expect_error({"train", "--model", "mlp", "--samples-per-prompt", "2000000", "--out", path("x")},
               "--samples-per-prompt must be between 1 and 1000000");
  expect_error({"train", "--model", "mlp", "--batch-size", "1000000", "--out", path("x")},
               "--batch-size must be between 2 and 100000");
  expect_error({"train", "--model", "mlp", "--lr", "0", "--out", path("x")},
               "--lr must be a number in (0, 10]");
  expect_error({"train", "--model", "mlp", "--lr", "nan", "--out", path("x")}, "--lr");
  expect_error({"train", "--model", "mlp", "--samples-per-prompt", "8", "--batch-size", "71",
                "--out", path("x")},
               "leaves a last batch of 1 sample");
  expect_error({"train", "--model", "mlp", "--threads", "0", "--out", path("x")},
               "--threads must be between 1");
  expect_error({"train", "--text-layers", "0", "--out", path("x")},
               "--text-layers must be between 1 and 8, got 0");
  expect_error({"train", "--text-layers", "9", "--out", path("x")},
               "--text-layers must be between 1 and 8, got 9");
  EXPECT_FALSE(fs::exists(path("x")));  // nothing is created for a refused run
  // Usage errors come from the parser: exit code 2, still one line.
  expect_error({"train", "--model", "mlp", "--epochs", "many"}, "--epochs", 2);
  expect_error({"train", "--model", "mlp", "--no-such-flag"}, "--no-such-flag", 2);
  expect_error({"train", "--model", "mlp", "--epochs"}, "--epochs", 2);
  expect_error({}, "subcommand", 2);
}

TEST_F(InkgradCli, TrainReportsAnUnwritableOutput) {
  std::ofstream(path("a-file")) << "x";
  expect_error({"train", "--model", "mlp", "--epochs", "1", "--out", path("a-file")},
               "is a file, not a folder");
  expect_error({"train", "--model", "mlp", "--epochs", "1", "--out", path("a-file/run")},
               "cannot create the output folder");
}

TEST_F(InkgradCli, GenerateWritesAGridAndOnePngPerPicture) {
  const Result result = run({"generate", "--checkpoint", run_dir() + "/model.safetensors",
                             "--prompt", "circle", "-n", "5", "--seed", "1", "--scale", "2",
                             "--out", path("gen/grid.png"), "--each", path("gen/each")});
  ASSERT_EQ(result.code, 0) << result.err;
  EXPECT_EQ(result.err, "");  // a trained prompt: no warning
  EXPECT_THAT(result.out, HasSubstr("seed 1"));
  const DecodedPng grid = decode_png(read_bytes(path("gen/grid.png")));
  EXPECT_GT(grid.width, 5 * 56);
  for (int i = 1; i <= 5; ++i) {
    const std::vector<uint8_t> bytes =
        read_bytes(path("gen/each/circle_00" + std::to_string(i) + ".png"));
    expect_png_header(bytes, 56, 56);
  }
  const Result stretched_run =
      run({"generate", "-c", run_dir() + "/model.safetensors", "-p", "cross", "-n", "2",
           "--stretch", "-o", path("gen/stretched.png"), "--each", path("gen/stretched")});
  EXPECT_EQ(stretched_run.code, 0) << stretched_run.err;
  const DecodedPng single = decode_png(read_bytes(path("gen/stretched/cross_001.png")));
  ASSERT_EQ(single.width, 4 * 28);
  EXPECT_EQ(*std::max_element(single.rgb.begin(), single.rgb.end()), 255);
  // The same seed gives the same pictures.
  ASSERT_EQ(run({"generate", "-c", run_dir() + "/model.safetensors", "-p", "circle", "-n", "5",
                 "--seed", "1", "--scale", "2", "-o", path("gen/again.png")})
                .code,
            0);
  EXPECT_EQ(read_bytes(path("gen/again.png")), read_bytes(path("gen/grid.png")));
}

TEST_F(InkgradCli, GenerateWarnsAboutOddPrompts) {
  const std::string model = run_dir() + "/model.safetensors";
  const Result result = run(
      {"generate", "-c", model, "-p", "Triangle #1 \xC3\xA9", "-n", "2", "-o", path("odd.png")});
  EXPECT_EQ(result.code, 0) << result.err;
  EXPECT_THAT(result.err, HasSubstr("inkgrad: warning: dropped 3 characters"));
  EXPECT_THAT(result.err, HasSubstr("'\xC3\xA9'"));
  EXPECT_THAT(result.err, HasSubstr("trained only on these prompts"));
  const Result huge = run({"generate", "-c", model, "-p", std::string(10000, 'x') + "\x01", "-n",
                           "1", "-o", path("huge.png")});
  EXPECT_EQ(huge.code, 0) << huge.err;
  EXPECT_THAT(huge.err, HasSubstr("longer than 32 characters"));
  EXPECT_LT(huge.err.size(), 1500u);
}

TEST_F(InkgradCli, GenerateRejectsBadPromptsAndCheckpoints) {
  const std::string model = run_dir() + "/model.safetensors";
  expect_error({"generate", "-c", model, "-p", "", "-o", path("e.png")}, "the prompt is empty");
  expect_error({"generate", "-c", model, "-p", "1234 !?", "-o", path("e.png")},
               "has no letter the model knows");
  expect_error({"generate", "-c", model, "-p", "\x1b[0;31", "-o", path("e.png")},
               "has no letter the model knows");
  expect_error({"generate", "-c", model, "-p", "circle", "-n", "0"}, "-n must be between 1");
  expect_error({"generate", "-c", model, "-p", "circle", "--scale", "1000"},
               "--scale must be between 1 and 64");
  expect_error({"generate", "-c", path("missing.safetensors"), "-p", "circle"},
               "missing.safetensors: cannot open the file");
  expect_error({"generate", "-c", run_dir(), "-p", "circle"}, "is a folder, not a checkpoint");

  const std::vector<uint8_t> bytes = read_bytes(model);
  std::ofstream(path("truncated.safetensors"), std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), 5000);
  expect_error({"generate", "-c", path("truncated.safetensors"), "-p", "circle"},
               "truncated.safetensors");
  std::ofstream(path("empty.safetensors"), std::ios::binary).flush();
  expect_error({"generate", "-c", path("empty.safetensors"), "-p", "circle"}, "empty.safetensors");

  // Another model's file: one tensor with the wrong shape.
  NamedTensors state = load_safetensors(model).tensors;
  for (auto& [name, tensor] : state) {
    if (name == "image_generator.decoder.0.weight") tensor = zeros({256, 64});
  }
  save_safetensors(path("wrong.safetensors"), state);
  expect_error({"generate", "-c", path("wrong.safetensors"), "-p", "circle"},
               "\"image_generator.decoder.0.weight\" expected [256, 96], file has [256, 64]");
  expect_error({"generate", "-c", run_dir() + "/optimizer.safetensors", "-p", "circle"},
               "it is a training state");
  std::ofstream(path("a-file")) << "x";
  expect_error({"generate", "-c", model, "-p", "circle", "-o", path("a-file/x/y.png")},
               "cannot create the folder");
}

TEST_F(InkgradCli, DataAndGraph) {
  const Result all = run({"data", "--prompt", "all", "--seed", "2", "-o", path("data/all.png")});
  ASSERT_EQ(all.code, 0) << all.err;
  const DecodedPng grid = decode_png(read_bytes(path("data/all.png")));
  EXPECT_GT(grid.height, 9 * 84);
  const Result one =
      run({"data", "--prompt", "cross", "-n", "3", "--scale", "1", "-o", path("data/cross.png")});
  ASSERT_EQ(one.code, 0) << one.err;
  EXPECT_GT(decode_png(read_bytes(path("data/cross.png"))).width, 3 * 28);
  expect_error({"data", "--prompt", "triangle", "-o", path("t.png")},
               "--prompt \"triangle\" is not one of the nine prompts");
  expect_error({"data", "--prompt", "all", "-n", "0", "-o", path("t.png")}, "-n must be between");

  const Result graph = run({"graph", "--out", path("graph/step.dot")});
  ASSERT_EQ(graph.code, 0) << graph.err;
  const std::string dot = read_text(path("graph/step.dot"));
  EXPECT_THAT(dot, HasSubstr("digraph"));
  EXPECT_THAT(dot, HasSubstr("mse_loss"));
  EXPECT_THAT(dot, HasSubstr("text_encoder.embedding.weight"));
  EXPECT_THAT(dot, HasSubstr("image_generator.decoder.6.bias"));
  expect_error({"graph", "--out", path("g.dot"), "--batch-size", "1"}, "--batch-size");
}

// Issue 15 §5: a training state whose metadata holds escapes and 50 MB gives one short line.
TEST_F(InkgradCli, ResumeQuotesHostileMetadataBriefly) {
  const std::string dir = path("hostile_state");
  fs::copy(run_dir(), dir, fs::copy_options::recursive);
  const std::string state_path = dir + "/" + std::string(kOptimizerFile);
  SafetensorsFile state = load_safetensors(state_path);
  state.metadata["trainer.epoch"] = "\x1b]0;owned\x07" + std::string(50'000'000, '9');
  save_safetensors(state_path, state.tensors, state.metadata);
  const Result result = run({"train", "--resume", dir, "--epochs", "3", "-q"});
  EXPECT_EQ(result.code, 1);
  EXPECT_THAT(result.err, HasSubstr("\"trainer.epoch\" is malformed: \"\\x1B]0;owned\\x07999"));
  EXPECT_THAT(result.err, HasSubstr("(50000010 characters)"));
  EXPECT_LT(result.err.size(), 400u);
  EXPECT_EQ(result.err.find('\x1b'), std::string::npos);
  fs::remove_all(dir);
}

// Issue 15 §4: a checkpoint with NaN weights is refused naming the tensor, not turned into
// black pictures.
TEST_F(InkgradCli, GenerateRefusesWeightsThatCannotWork) {
  NamedTensors state = load_safetensors(run_dir() + "/model.safetensors").tensors;
  for (auto& [name, tensor] : state) {
    if (name == "image_generator.decoder.0.weight") tensor.data()[5] = std::nanf("");
  }
  const std::string bad = path("nan_model.safetensors");
  save_safetensors(bad, state);
  expect_error({"generate", "-c", bad, "-p", "circle", "-o", path("nan.png")},
               "cannot be used: load_state_dict: \"image_generator.decoder.0.weight\" holds 1 "
               "non-finite value (1 NaN, 0 infinite; the first at index 5)");
  EXPECT_FALSE(fs::exists(path("nan.png")));
}

// Issue 15, smaller ones: the temporaries of an interrupted `generate --each` are removed by the
// next run; with stdout closed, nothing is written into the run folder's lock file.
TEST_F(InkgradCli, GenerateRemovesStaleTemporariesAndClosedStdoutIsHarmless) {
  const std::string each = path("each_stale");
  fs::create_directories(each);
  const fs::path dead = fs::path(each) / ".circle_001.png.tmp-999999999-0";
  const fs::path live = fs::path(each) / fmt::format(".circle_002.png.tmp-{}-0", ::getpid());
  const fs::path other = fs::path(each) / ".notes.txt.tmp-999999999-0";
  std::ofstream(dead) << "partial";
  std::ofstream(live) << "partial";
  std::ofstream(other) << "partial";
  const Result result =
      run({"generate", "-c", run_dir() + "/model.safetensors", "-p", "circle", "-n", "2", "--seed",
           "1", "-o", path("each_grid.png"), "--each", each});
  ASSERT_EQ(result.code, 0) << result.err;
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live));   // its writer may still be running
  EXPECT_TRUE(fs::exists(other));  // not a file generate writes

  const std::string dir = path("closed_stdout");
  const std::string command =
      shell_quote(INKGRAD_BINARY) +
      " train --model mlp --epochs 1 --samples-per-prompt 8 --batch-size 16 --out " +
      shell_quote(dir) + " >&- 2>" + shell_quote(path("closed.err"));
  ASSERT_EQ(std::system(command.c_str()), 0) << read_text(path("closed.err"));
  EXPECT_EQ(read_text(fs::path(dir) / ".inkgrad.lock"), "");
  EXPECT_EQ(read_run_record(dir).status, "complete");
}

// Issue 15 §1: outputs that are not regular files are written in place, never replaced.
TEST_F(InkgradCli, OutputsToDevicesAndStdoutAreWrittenInPlace) {
  const Result graph = run({"graph", "--out", "/dev/stdout"});
  ASSERT_EQ(graph.code, 0) << graph.err;
  EXPECT_THAT(graph.out, ::testing::StartsWith("digraph"));
  EXPECT_THAT(graph.out, ::testing::EndsWith("}\n"));  // the messages went to stderr
  EXPECT_THAT(graph.err, HasSubstr("wrote /dev/stdout"));
  EXPECT_TRUE(fs::is_symlink("/dev/stdout"));

  const std::string model = run_dir() + "/model.safetensors";
  const Result null_png =
      run({"generate", "-c", model, "-p", "circle", "--seed", "1", "-n", "2", "-o", "/dev/null"});
  EXPECT_EQ(null_png.code, 0) << null_png.err;
  struct stat info {};
  ASSERT_EQ(::lstat("/dev/null", &info), 0);
  EXPECT_TRUE(S_ISCHR(info.st_mode));
  if (::lstat("/dev/full", &info) == 0 && S_ISCHR(info.st_mode)) {
    expect_error({"generate", "-c", model, "-p", "circle", "--seed", "1", "-o", "/dev/full"},
                 "cannot write \"/dev/full\": write failed: No space left on device");
  }
}

// Starts inkgrad in the background with stdout and stderr going to files.
pid_t spawn_inkgrad(const std::vector<std::string>& args, const std::string& out,
                    const std::string& err) {
  std::vector<std::string> argv_strings = {INKGRAD_BINARY};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : argv_strings) argv.push_back(arg.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int failed = posix_spawn(&pid, INKGRAD_BINARY, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return failed == 0 ? pid : -1;
}

// Trains in the background, waits for the first checkpoint, sends `signal`, and checks that
// the program stops cleanly with the expected exit code and leaves a run that resumes.
void stop_with_signal(const std::string& dir, int signal, int expected_code,
                      const char* signal_name) {
  const pid_t pid =
      spawn_inkgrad({"train", "--model", "mlp", "--epochs", "1000", "--samples-per-prompt", "40",
                     "--batch-size", "16", "--out", dir},
                    dir + ".out", dir + ".err");
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!fs::exists(dir + "/optimizer.safetensors") &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // The folder belongs to the running process.
  if (signal == SIGINT) {
    const std::string err_file = dir + ".second.err";
    const pid_t second = spawn_inkgrad({"train", "--resume", dir}, dir + ".second.out", err_file);
    int second_status = 0;
    ASSERT_EQ(::waitpid(second, &second_status, 0), second);
    EXPECT_EQ(WEXITSTATUS(second_status), 1);
    EXPECT_THAT(read_text(err_file), HasSubstr("is in use by another inkgrad train"));
  }
  ASSERT_EQ(::kill(pid, signal), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), expected_code);
  const std::string err = read_text(dir + ".err");
  EXPECT_THAT(err, HasSubstr(std::string("inkgrad: stopped by ") + signal_name));
  EXPECT_THAT(err, HasSubstr("is saved in " + dir));
  EXPECT_THAT(err, HasSubstr("inkgrad train --resume " + dir));
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;

  const RunRecord record = read_run_record(dir);
  EXPECT_EQ(record.status, "interrupted");
  EXPECT_GE(record.epochs_completed, 1);
  TextToImageModel model;
  EXPECT_NO_THROW(model.load_state_dict(load_safetensors(dir + "/model.safetensors").tensors));
}

TEST_F(InkgradCli, CtrlCStopsCleanlyAndTheRunResumes) {
  const std::string dir = path("interrupted");
  stop_with_signal(dir, SIGINT, 130, "SIGINT");
  const int64_t saved = read_run_record(dir).epochs_completed;
  const Result resumed =
      run({"train", "--resume", dir, "--epochs", std::to_string(saved + 1), "-q"});
  EXPECT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_EQ(read_run_record(dir).epochs_completed, saved + 1);
  EXPECT_EQ(read_run_record(dir).status, "complete");
}

TEST_F(InkgradCli, SigtermStopsCleanly) {
  stop_with_signal(path("terminated"), SIGTERM, 143, "SIGTERM");
}

}  // namespace
}  // namespace ink::app
