// Generation as `inkgrad generate` and `inkgrad serve` both run it: one settings struct, one
// seeding rule (Generator(seed), then the model draws everything from it), and PNGs that carry
// their settings in a tEXt chunk. Sharing this is what makes a served picture pixel-identical to
// the command line's for the same settings and seed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "apps/image.h"
#include "models/diffusion/samplers.h"
#include "models/image_model.h"
#include "tensor/tensor.h"

namespace ink::app {

// What one generation asks for. steps, guidance, sampler and negative_prompt are used only by
// models with a sampler (the diffusion model); the MLP draws from the same seeded Generator and
// ignores them.
struct GenerationSettings {
  std::string prompt;
  std::string negative_prompt;
  double guidance = 3.0;
  int64_t steps = 50;
  std::string sampler = "ddim";
  uint64_t seed = 0;
  int64_t count = 1;
};

// Whether `model` takes steps, guidance, a sampler and a negative prompt (the diffusion model).
bool has_sampler(const ImageModel& model);

// [count, C, H, W] in [0, 1]: Generator(settings.seed), then model.generate with the settings.
// `callback` (diffusion only, may be empty) sees every sampler step; returning false cancels,
// and this throws ink::Error "generate: cancelled ...".
Tensor generate_pictures(ImageModel& model, const GenerationSettings& settings,
                         const diffusion::StepCallback& callback = {});

// The settings as a JSON object with the model's kind, in ASCII (non-ASCII prompt characters are
// \u escapes), for the PNG text chunk and the API: {"prompt", "negative_prompt", "seed",
// "steps", "guidance", "sampler", "count", "model"} (the sampler fields only for a sampler model).
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
