// Generation as `inkgrad generate` and `inkgrad serve` both run it: one settings struct, one
// seeding rule (Generator(seed), then the model draws everything from it), and PNGs that carry
// their settings in a tEXt chunk. Sharing this is what makes a served picture pixel-identical to
// the command line's for the same settings and seed.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "apps/image.h"
#include "models/diffusion/model.h"
#include "models/diffusion/samplers.h"
#include "models/image_model.h"
#include "models/tokenizer.h"
#include "tensor/tensor.h"

namespace ink::app {

// What one generation asks for. steps, guidance, sampler and negative_prompt are used only by
// models with a sampler (the diffusion model); the MLP draws from the same seeded Generator and
// ignores them.
struct GenerationSettings {
  std::string prompt;
  std::string negative_prompt;
  double guidance = 3.0;
  // The noise levels that are guided (diffusion::GuidanceInterval; the model's default).
  diffusion::GuidanceInterval guidance_interval = diffusion::GenerateOptions{}.guidance_interval;
  int64_t steps = 50;
  std::string sampler = "ddim";
  uint64_t seed = 0;
  int64_t count = 1;
};

// A guidance interval as the command line writes it: "LOW,HIGH", two noise levels sigma, HIGH
// may be "inf" ("0,inf" guides every step). Throws ink::Error naming `flag` and the text.
diffusion::GuidanceInterval parse_guidance_interval(std::string_view text, std::string_view flag);
// The same text back: "0.28,5.42", "0,inf".
std::string guidance_interval_text(const diffusion::GuidanceInterval& interval);

// Whether `model` takes steps, guidance, a sampler and a negative prompt (the diffusion model).
bool has_sampler(const ImageModel& model);

// [count, C, H, W] in [0, 1]: Generator(settings.seed), then model.generate with the settings.
// `callback` (diffusion only, may be empty) sees every sampler step; returning false cancels,
// and this throws ink::Error "generate: cancelled ...".
// `attention` (diffusion only, may be null) receives the cross-attention maps (see
// diffusion::AttentionMaps); the pictures are the same with or without it.
Tensor generate_pictures(ImageModel& model, const GenerationSettings& settings,
                         const diffusion::StepCallback& callback = {},
                         diffusion::AttentionMaps* attention = nullptr);

// ---- the attention view ----

// One entry of the attention view of a picture: the null token or a word of the prompt, with the
// sum of its tokens' maps.
struct WordAttention {
  std::string text;         // the word as the tokenizer reads it; "(null)" for the null token
  bool null_token = false;  // the learned null token at context position 0
  std::vector<float> map;   // H x W, row-major: the share of attention at each pixel
  double share = 0.0;       // the mean of `map`: the word's share of all cross-attention
  float low = 0.0f;         // the smallest value of `map`
  float peak = 0.0f;        // the largest value of `map`
};

// The null token, then the prompt's words, for picture `index` of `maps`: with a character
// tokenizer a word is a run of characters between spaces (its map is the sum of theirs; the
// spaces themselves are left out), with any other tokenizer each token is a word. The null
// token's and the words' maps sum to at most 1 at each pixel (exactly 1 without spaces).
std::vector<WordAttention> attention_words(const diffusion::AttentionMaps& maps, int64_t index,
                                           const Tokenizer& tokenizer);

// A colour ramp for heat maps, black through purple, red and orange to pale yellow: t in [0, 1]
// (clamped; NaN is black).
Color heat_color(float t);
// `map` (width x height values) stretched from its smallest to its largest value onto [0, 1]
// (so that the contrast of a nearly even map still shows; an even map is all 0.5), coloured with
// heat_color and upscaled by `scale`.
Image heat_image(std::span<const float> map, int width, int height, int scale = 1);
// The picture (C x H x W values in [0, 1], gray or RGB as in picture_image) with the heat of `map`
// (stretched as in heat_image) laid over it at opacity `alpha`, as 3 x H x W values for an RGB
// grid.
std::vector<float> heat_overlay(std::span<const float> picture, const ImageFormat& format,
                                std::span<const float> map, float alpha = 0.65f);

// The settings as a JSON object with the model's kind, in ASCII (non-ASCII prompt characters are
// \u escapes), for the PNG text chunk and the API: {"prompt", "negative_prompt", "seed",
// "steps", "guidance", "guidance_interval", "sampler", "count", "model"} (the sampler fields only
// for a sampler model).
std::string settings_json(const GenerationSettings& settings, const ImageModel& model);

// The tEXt keyword under which inkgrad stores settings_json in its PNGs.
inline constexpr const char* kPngSettingsKey = "inkgrad.settings";

// PNG bytes with tEXt chunks (keyword, Latin-1 text) inserted right after IHDR, each with its
// CRC-32. Throws ink::Error for bytes that are not a PNG or a keyword that PNG does not allow
// (1-79 printable Latin-1 characters, no leading, trailing or double spaces).
std::vector<uint8_t> png_with_text(const std::vector<uint8_t>& png,
                                   const std::vector<std::pair<std::string, std::string>>& text);
// The tEXt chunks of PNG bytes, in file order (chunks with a bad CRC are skipped).
std::vector<std::pair<std::string, std::string>> png_text(std::string_view png);
// CRC-32 as PNG uses it (ISO 3309, polynomial 0xedb88320), over `bytes`.
uint32_t png_crc32(std::string_view bytes);

// Picture `index` of images [N, C, H, W] in [0, 1], upscaled by `scale`, as PNG bytes with
// `settings_text` (settings_json) under kPngSettingsKey.
std::vector<uint8_t> picture_png(const Tensor& images, int64_t index, const ImageFormat& format,
                                 int scale, const std::string& settings_text);

}  // namespace ink::app
