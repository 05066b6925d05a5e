// `inkgrad generate`: pictures from a trained checkpoint for one prompt, as an upscaled PNG grid
// and optionally one PNG per picture.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "apps/commands.h"
#include "apps/figures.h"
#include "apps/prompt.h"
#include "apps/run_dir.h"
#include "models/shapes.h"
#include "models/text_to_image.h"
#include "nn/safetensors.h"
#include "tensor/error.h"

namespace ink::app {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kPicturesPerRow = 8;

struct GenerateFlags {
  std::string checkpoint;
  std::string prompt;
  int64_t count = 8;
  uint64_t seed = 0;
  std::string out = "generated.png";
  int64_t scale = 4;
  std::string each;
  bool stretch = false;
  CLI::Option* seed_option = nullptr;
};

// Loads a model checkpoint with strict names and shapes; every failure names the file.
void load_checkpoint(TextToImageModel& model, const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path inside = fs::path(path) / kModelFile;
    INK_FAIL("--checkpoint {} is a folder, not a checkpoint file{}", path,
             fs::exists(inside, ec) ? fmt::format("; did you mean {}?", inside.string()) : "");
  }
  const SafetensorsFile file = load_safetensors(path);
  try {
    model.load_state_dict(file.tensors, /*strict=*/true);
  } catch (const Error& error) {
    bool training_state = false;
    for (const auto& [name, tensor] : file.tensors) {
      training_state = training_state || name.starts_with("model.text_encoder.");
    }
    INK_FAIL("{} is not a checkpoint of the text-to-image model{}: {}", path,
             training_state
                 ? fmt::format(" (it is a training state; use the {} beside it)", kModelFile)
                 : "",
             one_line(error.what(), 4));
  }
}

// "two vertical lines" -> "two_vertical_lines", for file names.
std::string file_stem(const std::string& text) {
  std::string stem;
  for (char c : text) {
    if (c >= 'a' && c <= 'z') {
      stem += c;
    } else if (!stem.empty() && stem.back() != '_') {
      stem += '_';
    }
  }
  while (!stem.empty() && stem.back() == '_') stem.pop_back();
  return stem.empty() ? "sample" : stem.substr(0, 40);
}

int run_generate(const GenerateFlags& flags) {
  INK_CHECK(!flags.checkpoint.empty(), "--checkpoint needs a file, got \"\"");
  INK_CHECK(!flags.out.empty(), "--out needs a file name, got \"\"");
  check_range("-n", flags.count, 1, 4096);
  check_range("--scale", flags.scale, 1, 64);
  Generator init_generator(0);  // overwritten by the checkpoint
  TextToImageModel model(TextToImageConfig{}, &init_generator);
  // The prompt first: its errors do not need the checkpoint, and a file is only read for a
  // prompt that can be used.
  const std::vector<std::string> warnings = check_prompt(flags.prompt, model.tokenizer());
  load_checkpoint(model, flags.checkpoint);
  for (const std::string& warning : warnings) warn(warning);

  const uint64_t seed = flags.seed_option->count() > 0 ? flags.seed : fresh_seed();
  Generator generator(seed);
  const Tensor images = model.generate(flags.prompt, flags.count, generator);

  std::vector<GridRow> rows;
  for (int64_t i = 0; i < flags.count; ++i) {
    if (i % kPicturesPerRow == 0) rows.emplace_back();
    const float* begin = images.data() + i * kImagePixels;
    rows.back().pictures.emplace_back(begin, begin + kImagePixels);
  }
  GridStyle style;
  style.title = quoted_text(flags.prompt, 30);
  style.scale = static_cast<int>(flags.scale);
  style.stretch = flags.stretch;
  make_parent_folder(flags.out);
  write_png(flags.out, render_grid(rows, style));

  if (!flags.each.empty()) {
    std::error_code ec;
    fs::create_directories(flags.each, ec);
    INK_CHECK(!ec, "--each: cannot create the folder {}: {}", flags.each, ec.message());
    const std::string stem =
        file_stem(model.tokenizer().decode(model.tokenizer().encode(flags.prompt)));
    for (int64_t i = 0; i < flags.count; ++i) {
      const float* begin = images.data() + i * kImagePixels;
      std::vector<float> values(begin, begin + kImagePixels);
      if (flags.stretch) values = stretched(std::move(values));
      write_png((fs::path(flags.each) / fmt::format("{}_{:03d}.png", stem, i + 1)).string(),
                gray_image(values, kImageSide, kImageSide, static_cast<int>(flags.scale)));
    }
  }
  std::FILE* messages = writes_to_stdout(flags.out) ? stderr : stdout;
  fmt::print(messages, "wrote {}: {} picture{} of {} (seed {}; pass --seed {} to repeat)\n",
             flags.out, flags.count, flags.count == 1 ? "" : "s", quoted_text(flags.prompt), seed,
             seed);
  if (!flags.each.empty()) {
    fmt::print(messages, "wrote {} PNG files into {}\n", flags.count, flags.each);
  }
  return 0;
}

}  // namespace

Command add_generate_command(CLI::App& app) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* sub = app.add_subcommand(
      "generate", "Generate pictures for a prompt from a trained model checkpoint.");
  sub->add_option("--checkpoint,-c", flags->checkpoint,
                  "A model.safetensors written by inkgrad train (or by the PyTorch notebook)")
      ->required();
  sub->add_option("--prompt,-p", flags->prompt,
                  "Text prompt; the model knows: " + trained_prompts_list())
      ->required();
  sub->add_option("-n,--count", flags->count, "Number of pictures")->capture_default_str();
  flags->seed_option =
      sub->add_option("--seed", flags->seed, "Seed of the noise (default: a random one, printed)");
  sub->add_option("--out,-o", flags->out, "PNG file for the grid")->capture_default_str();
  sub->add_option("--scale", flags->scale, "Upscaling of each 28x28 picture (nearest neighbour)")
      ->capture_default_str();
  sub->add_option("--each", flags->each, "Also write one PNG per picture into this folder");
  sub->add_flag("--stretch", flags->stretch,
                "Show each picture divided by its own maximum, so faint ones are visible");
  return [flags] { return run_generate(*flags); };
}

}  // namespace ink::app
