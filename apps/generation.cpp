// Shared generation for `inkgrad generate` and `inkgrad serve`, and PNG text chunks.
#include "apps/generation.h"

#include <array>
#include <cstring>

#include <nlohmann/json.hpp>

#include "apps/figures.h"
#include "models/diffusion/model.h"
#include "tensor/error.h"

namespace ink::app {

bool has_sampler(const ImageModel& model) {
  return dynamic_cast<const diffusion::TextToImageDiffusion*>(&model) != nullptr;
}

Tensor generate_pictures(ImageModel& model, const GenerationSettings& settings,
                         const diffusion::StepCallback& callback) {
  Generator generator(settings.seed);
  if (auto* diffusion_model = dynamic_cast<diffusion::TextToImageDiffusion*>(&model)) {
    diffusion::GenerateOptions options;
    options.sampler = settings.sampler;
    options.steps = settings.steps;
    options.guidance = settings.guidance;
    options.negative_prompt = settings.negative_prompt;
    options.callback = callback;
    return diffusion_model->generate(settings.prompt, settings.count, generator, options);
  }
  return model.generate(settings.prompt, settings.count, generator);
}

std::string settings_json(const GenerationSettings& settings, const ImageModel& model) {
  nlohmann::ordered_json out;
  out["prompt"] = settings.prompt;
  if (has_sampler(model)) out["negative_prompt"] = settings.negative_prompt;
  out["seed"] = settings.seed;
  if (has_sampler(model)) {
    out["steps"] = settings.steps;
    out["guidance"] = settings.guidance;
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
