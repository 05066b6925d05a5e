// Shared generation for `inkgrad generate` and `inkgrad serve`, and PNG text chunks.
#include "apps/generation.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "apps/figures.h"
#include "models/diffusion/model.h"
#include "tensor/error.h"
#include "tensor/quote.h"

namespace ink::app {

diffusion::GuidanceInterval parse_guidance_interval(std::string_view text, std::string_view flag) {
  const auto fail = [&]() -> diffusion::GuidanceInterval {
    INK_FAIL(
        "{}: expected LOW,HIGH, two noise levels sigma with 0 <= LOW < HIGH (HIGH may be "
        "inf; 0,inf guides every step), got {}",
        flag, quoted_text(text, 40));
  };
  const size_t comma = text.find(',');
  if (comma == std::string_view::npos) return fail();
  const auto number = [&](std::string_view part, double& value) {
    if (part == "inf") {
      value = std::numeric_limits<double>::infinity();
      return true;
    }
    const std::string copy(part);
    char* end = nullptr;
    value = std::strtod(copy.c_str(), &end);
    return !copy.empty() && end == copy.c_str() + copy.size() && std::isfinite(value);
  };
  diffusion::GuidanceInterval interval;
  if (!number(text.substr(0, comma), interval.sigma_low) ||
      !number(text.substr(comma + 1), interval.sigma_high) || !interval.valid()) {
    return fail();
  }
  return interval;
}

std::string guidance_interval_text(const diffusion::GuidanceInterval& interval) {
  return fmt::format("{:g},{}", interval.sigma_low,
                     std::isfinite(interval.sigma_high) ? fmt::format("{:g}", interval.sigma_high)
                                                        : std::string("inf"));
}

bool has_sampler(const ImageModel& model) {
  return dynamic_cast<const diffusion::TextToImageDiffusion*>(&model) != nullptr;
}

Tensor generate_pictures(ImageModel& model, const GenerationSettings& settings,
                         const diffusion::StepCallback& callback,
                         diffusion::AttentionMaps* attention) {
  Generator generator(settings.seed);
  if (auto* diffusion_model = dynamic_cast<diffusion::TextToImageDiffusion*>(&model)) {
    diffusion::GenerateOptions options;
    options.sampler = settings.sampler;
    options.steps = settings.steps;
    options.guidance = settings.guidance;
    options.guidance_interval = settings.guidance_interval;
    options.negative_prompt = settings.negative_prompt;
    options.callback = callback;
    options.attention = attention;
    return diffusion_model->generate(settings.prompt, settings.count, generator, options);
  }
  INK_CHECK(attention == nullptr, "generate: attention maps need a diffusion model, not the {}",
            model.kind());
  return model.generate(settings.prompt, settings.count, generator);
}

std::vector<WordAttention> attention_words(const diffusion::AttentionMaps& maps, int64_t index,
                                           const Tokenizer& tokenizer) {
  const Tensor& all = maps.maps;
  const auto positions = static_cast<int64_t>(maps.tokens.size()) + 1;
  INK_CHECK(all.defined() && all.dim() == 4 && all.size(1) == positions && index >= 0 &&
                index < all.size(0),
            "attention_words: maps {} for {} tokens and picture {}",
            all.defined() ? shape_str(all.shape()) : "undefined", maps.tokens.size(), index);
  const int64_t pixels = all.size(2) * all.size(3);
  const float* picture = all.data() + index * positions * pixels;
  std::vector<WordAttention> out;
  const auto add_position = [&](WordAttention& word, int64_t position) {
    if (word.map.empty()) word.map.assign(static_cast<size_t>(pixels), 0.0f);
    const float* m = picture + position * pixels;
    for (int64_t p = 0; p < pixels; ++p) word.map[static_cast<size_t>(p)] += m[p];
  };
  WordAttention null_word;
  null_word.text = "(null)";
  null_word.null_token = true;
  add_position(null_word, 0);
  out.push_back(std::move(null_word));
  const bool characters = tokenizer.kind() == "char";
  bool in_word = false;
  for (size_t t = 0; t < maps.tokens.size(); ++t) {
    const int64_t id = maps.tokens[t];
    const std::string piece = tokenizer.decode(std::span<const int64_t>(&id, 1));
    const bool blank = piece.find_first_not_of(" \t") == std::string::npos;
    if (characters && blank) {
      in_word = false;
      continue;
    }
    if (!characters || !in_word) out.emplace_back();
    out.back().text += piece;
    add_position(out.back(), static_cast<int64_t>(t) + 1);
    in_word = characters;
  }
  for (WordAttention& word : out) {
    double total = 0.0;
    word.low = word.map.empty() ? 0.0f : word.map.front();
    for (float v : word.map) {
      total += v;
      word.low = std::min(word.low, v);
      word.peak = std::max(word.peak, v);
    }
    word.share = total / static_cast<double>(std::max<int64_t>(pixels, 1));
  }
  return out;
}

Color heat_color(float t) {
  // Stops of a perceptually increasing ramp (dark to bright), linearly interpolated.
  static constexpr std::array<Color, 5> kStops = {Color{0, 0, 4}, Color{87, 16, 110},
                                                  Color{188, 55, 84}, Color{249, 142, 9},
                                                  Color{252, 255, 164}};
  if (!(t > 0.0f)) return kStops[0];
  t = std::min(t, 1.0f) * static_cast<float>(kStops.size() - 1);
  const auto i = std::min(static_cast<size_t>(t), kStops.size() - 2);
  const float f = t - static_cast<float>(i);
  const auto mix = [f](uint8_t a, uint8_t b) {
    return static_cast<uint8_t>(std::lround(static_cast<float>(a) + (b - a) * f));
  };
  return {mix(kStops[i].r, kStops[i + 1].r), mix(kStops[i].g, kStops[i + 1].g),
          mix(kStops[i].b, kStops[i + 1].b)};
}

namespace {
// map's values stretched from [min, max] onto [0, 1] (0.5 where max - min is negligible).
std::vector<float> stretched_map(std::span<const float> map) {
  float low = INFINITY, high = -INFINITY;
  for (float v : map) {
    low = std::min(low, v);
    high = std::max(high, v);
  }
  std::vector<float> out(map.size(), 0.5f);
  if (high - low > 1e-7f * std::max(1.0f, std::abs(high))) {
    for (size_t i = 0; i < map.size(); ++i) out[i] = (map[i] - low) / (high - low);
  }
  return out;
}
}  // namespace

Image heat_image(std::span<const float> map, int width, int height, int scale) {
  INK_CHECK(width >= 1 && height >= 1 && map.size() == static_cast<size_t>(width) * height,
            "heat_image: {} values for a {}x{} map", map.size(), width, height);
  const std::vector<float> level = stretched_map(map);
  Image image(width, height, kBlack);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.set(x, y, heat_color(level[static_cast<size_t>(y) * width + x]));
    }
  }
  return scale == 1 ? image : upscale_nearest(image, scale);
}

std::vector<float> heat_overlay(std::span<const float> picture, const ImageFormat& format,
                                std::span<const float> map, float alpha) {
  const auto plane = static_cast<size_t>(format.height * format.width);
  INK_CHECK(static_cast<int64_t>(picture.size()) == format.pixels() && map.size() == plane,
            "heat_overlay: {} picture values and {} map values for a {}x{}x{} picture",
            picture.size(), map.size(), format.channels, format.height, format.width);
  const std::vector<float> level = stretched_map(map);
  std::vector<float> out(3 * plane);
  for (size_t i = 0; i < plane; ++i) {
    const Color heat = heat_color(level[i]);
    const std::array<uint8_t, 3> rgb = {heat.r, heat.g, heat.b};
    for (size_t c = 0; c < 3; ++c) {
      const float under = picture[(format.channels >= 3 ? c : 0) * plane + i];
      out[c * plane + i] = (1.0f - alpha) * under + alpha * static_cast<float>(rgb[c]) / 255.0f;
    }
  }
  return out;
}

std::string settings_json(const GenerationSettings& settings, const ImageModel& model) {
  nlohmann::ordered_json out;
  out["prompt"] = settings.prompt;
  if (has_sampler(model)) out["negative_prompt"] = settings.negative_prompt;
  out["seed"] = settings.seed;
  if (has_sampler(model)) {
    out["steps"] = settings.steps;
    out["guidance"] = settings.guidance;
    out["guidance_interval"] = guidance_interval_text(settings.guidance_interval);
    out["sampler"] = settings.sampler;
  }
  out["count"] = settings.count;
  out["model"] = model.kind();
  // ensure_ascii: tEXt is Latin-1, so every non-ASCII character becomes a \u escape; invalid
  // UTF-8 (refused earlier by the server, possible from a command line) becomes U+FFFD.
  return out.dump(-1, ' ', /*ensure_ascii=*/true, nlohmann::json::error_handler_t::replace);
}

uint32_t png_crc32(std::string_view bytes) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; ++n) {
      uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  uint32_t crc = 0xffffffffu;
  for (unsigned char byte : bytes) crc = table[(crc ^ byte) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

namespace {

constexpr std::string_view kPngSignature("\x89PNG\r\n\x1a\n", 8);

void append_u32(std::vector<uint8_t>& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(value >> shift));
}

uint32_t read_u32(std::string_view bytes, size_t at) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) value = value << 8 | static_cast<unsigned char>(bytes[at + i]);
  return value;
}

bool valid_keyword(std::string_view keyword) {
  if (keyword.empty() || keyword.size() > 79) return false;
  if (keyword.front() == ' ' || keyword.back() == ' ') return false;
  if (keyword.find("  ") != std::string_view::npos) return false;
  for (unsigned char c : keyword) {
    if (!((c >= 32 && c <= 126) || c >= 161)) return false;
  }
  return true;
}

}  // namespace

std::vector<uint8_t> png_with_text(const std::vector<uint8_t>& png,
                                   const std::vector<std::pair<std::string, std::string>>& text) {
  const std::string_view bytes(reinterpret_cast<const char*>(png.data()), png.size());
  // The signature, then IHDR: length 13, "IHDR", 13 bytes, CRC.
  constexpr size_t kAfterIhdr = 8 + 4 + 4 + 13 + 4;
  INK_CHECK(bytes.size() > kAfterIhdr && bytes.starts_with(kPngSignature) &&
                bytes.substr(12, 4) == "IHDR",
            "png_with_text: {} bytes are not a PNG starting with IHDR", bytes.size());
  std::vector<uint8_t> out(png.begin(), png.begin() + kAfterIhdr);
  for (const auto& [keyword, value] : text) {
    INK_CHECK(valid_keyword(keyword), "png_with_text: \"{}\" is not a valid tEXt keyword", keyword);
    INK_CHECK(value.find('\0') == std::string::npos,
              "png_with_text: the text of \"{}\" contains a NUL byte", keyword);
    std::string chunk = "tEXt" + keyword + '\0' + value;
    append_u32(out, static_cast<uint32_t>(chunk.size() - 4));
    out.insert(out.end(), chunk.begin(), chunk.end());
    append_u32(out, png_crc32(chunk));
  }
  out.insert(out.end(), png.begin() + kAfterIhdr, png.end());
  return out;
}

std::vector<std::pair<std::string, std::string>> png_text(std::string_view png) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!png.starts_with(kPngSignature)) return out;
  size_t at = kPngSignature.size();
  while (at + 12 <= png.size()) {
    const uint32_t length = read_u32(png, at);
    if (length > png.size() - at - 12) break;
    const std::string_view typed = png.substr(at + 4, 4 + length);  // type and data
    const uint32_t crc = read_u32(png, at + 8 + length);
    if (typed.starts_with("tEXt") && crc == png_crc32(typed)) {
      const std::string_view data = typed.substr(4);
      const size_t nul = data.find('\0');
      if (nul != std::string_view::npos) {
        out.emplace_back(std::string(data.substr(0, nul)), std::string(data.substr(nul + 1)));
      }
    }
    if (typed.starts_with("IEND")) break;
    at += 12 + length;
  }
  return out;
}

std::vector<uint8_t> picture_png(const Tensor& images, int64_t index, const ImageFormat& format,
                                 int scale, const std::string& settings_text) {
  const std::vector<float> values = picture_values(images, index);
  return png_with_text(encode_png(picture_image(values, format, scale)),
                       {{kPngSettingsKey, settings_text}});
}

}  // namespace ink::app
