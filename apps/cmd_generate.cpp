// `inkgrad generate`: pictures from a trained checkpoint for one prompt, as an upscaled PNG grid
// and optionally one PNG per picture.
#include <algorithm>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "apps/commands.h"
#include "apps/figures.h"
#include "apps/generation.h"
#include "apps/prompt.h"
#include "apps/run_dir.h"
#include "models/diffusion/model.h"
#include "models/registry.h"
#include "models/shapes.h"
#include "nn/safetensors.h"
#include "tensor/error.h"

namespace ink::app {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kPicturesPerRow = 8;

struct GenerateFlags {
  std::string checkpoint;
  std::string prompt;
  std::string negative_prompt;
  double guidance = 3.0;
  std::string guidance_interval =
      guidance_interval_text(diffusion::GenerateOptions{}.guidance_interval);
  int64_t steps = 50;
  std::string sampler = "ddim";
  int64_t count = 8;
  uint64_t seed = 0;
  std::string out = "generated.png";
  int64_t scale = 4;
  std::string each;
  bool stretch = false;
  CLI::Option* seed_option = nullptr;
  // Diffusion sampling (other models refuse these flags).
  std::string film;
  std::string attention;
  std::vector<CLI::Option*> diffusion_options;
};

// Frames in a --film strip: the sampler's steps at this many evenly spaced points (and the last).
constexpr int64_t kFilmFrames = 10;
constexpr int64_t kFilmPictures = 4;

// [B, C, H, W] in [-1, 1] -> picture i's values in [0, 1].
std::vector<float> unit_picture(const Tensor& x, int64_t i) {
  std::vector<float> values = picture_values(x, i);
  for (float& v : values) v = std::clamp((v + 1.0f) * 0.5f, 0.0f, 1.0f);
  return values;
}

// Builds the model a checkpoint describes (its kind and config are in its metadata; a phase 1
// file is the MLP) and loads it with strict names and shapes; every failure names the file.
// `check` runs once the model's tokenizer is known, before the weights are loaded.
std::unique_ptr<ImageModel> load_checkpoint(const std::string& path,
                                            const std::function<void(const ImageModel&)>& check) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path inside = fs::path(path) / kModelFile;
    INK_FAIL("--checkpoint {} is a folder, not a checkpoint file{}", path,
             fs::exists(inside, ec) ? fmt::format("; did you mean {}?", inside.string()) : "");
  }
  // The header first: names, dtypes and shapes are checked against the model before any data
  // is read, so a file of any size that is not this model's checkpoint costs only its header.
  const SafetensorsReader file(path);
  const ModelIdentity identity = model_identity(file.metadata());
  std::unique_ptr<ImageModel> model;
  try {
    Generator scratch(0);  // every value is overwritten by the checkpoint
    model = make_model(identity.kind, identity.config_json, &scratch);
  } catch (const Error& error) {
    INK_FAIL("{} records a model inkgrad cannot build: {}", path, one_line(error.what(), 4));
  }
  check(*model);
  try {
    model->check_state_dict(file, /*strict=*/true);
  } catch (const Error& error) {
    bool training_state = false;
    for (const SafetensorsEntry& entry : file.entries()) {
      training_state = training_state || entry.name.starts_with("model.");
    }
    INK_FAIL("{} is not a checkpoint of the {} model{}: {}", path,
             identity.kind == "mlp" ? std::string("text-to-image") : identity.kind,
             training_state
                 ? fmt::format(" (it is a training state; use the {} beside it)", kModelFile)
                 : "",
             one_line(error.what(), 4));
  }
  try {
    model->load_state_dict(file, /*strict=*/true);
  } catch (const Error& error) {
    INK_FAIL("{} cannot be used: {}", path, one_line(error.what(), 4));
  }
  return model;
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
  std::vector<std::string> warnings;
  std::unique_ptr<ImageModel> model = load_checkpoint(flags.checkpoint, [&](const ImageModel& m) {
    // The prompt before the weights: its errors do not need them. (check_prompt knows the
    // character vocabulary; a model with another tokenizer relies on generate's own check.)
    if (const auto* characters = dynamic_cast<const CharTokenizer*>(&m.tokenizer())) {
      warnings = check_prompt(flags.prompt, *characters);
    }
  });
  for (const std::string& warning : warnings) warn(warning);

  GenerationSettings settings;
  settings.prompt = flags.prompt;
  settings.negative_prompt = flags.negative_prompt;
  settings.guidance = flags.guidance;
  settings.guidance_interval =
      parse_guidance_interval(flags.guidance_interval, "--guidance-interval");
  settings.steps = flags.steps;
  settings.sampler = flags.sampler;
  settings.count = flags.count;
  settings.seed = flags.seed_option->count() > 0 ? flags.seed : fresh_seed();
  const uint64_t seed = settings.seed;
  if (!has_sampler(*model)) {
    for (const CLI::Option* option : flags.diffusion_options) {
      INK_CHECK(option->count() == 0, "{} applies to diffusion models; {} holds the {} model",
                option->get_name(), flags.checkpoint, model->kind());
    }
  }
  const ImageFormat format = model->image_format();
  std::vector<GridRow> film_rows;
  diffusion::StepCallback film_callback;
  const int64_t film_pictures = std::min(flags.count, kFilmPictures);
  if (!flags.film.empty()) {
    film_rows.resize(static_cast<size_t>(2 * film_pictures));
    for (int64_t i = 0; i < film_pictures; ++i) {
      film_rows[static_cast<size_t>(2 * i)].label = fmt::format("#{} x_t", i + 1);
      film_rows[static_cast<size_t>(2 * i + 1)].label = fmt::format("#{} x0-hat", i + 1);
    }
    const int64_t every = std::max<int64_t>(1, flags.steps / kFilmFrames);
    auto chunk = std::make_shared<int64_t>(-1);  // generate samples in chunks: film the first
    film_callback = [&film_rows, chunk, every, film_pictures](const diffusion::StepInfo& step) {
      if (step.step == 0) ++*chunk;
      const bool frame = step.step % every == 0 || step.step + 1 == step.num_steps;
      if (*chunk != 0 || !frame) return true;
      for (int64_t i = 0; i < film_pictures && i < step.x_t.size(0); ++i) {
        film_rows[static_cast<size_t>(2 * i)].pictures.push_back(unit_picture(step.x_t, i));
        film_rows[static_cast<size_t>(2 * i + 1)].pictures.push_back(unit_picture(step.x0_hat, i));
      }
      return true;
    };
  }
  // The attention maps are held for every picture; a strip shows the first few.
  constexpr int64_t kMaxAttentionPictures = 256;
  if (!flags.attention.empty()) {
    INK_CHECK(flags.count <= kMaxAttentionPictures,
              "--attention keeps maps for at most {} pictures, got -n {}", kMaxAttentionPictures,
              flags.count);
  }
  diffusion::AttentionMaps attention;
  const Tensor images = generate_pictures(*model, settings, film_callback,
                                          flags.attention.empty() ? nullptr : &attention);
  const std::string settings_text = settings_json(settings, *model);

  std::vector<GridRow> rows;
  for (int64_t i = 0; i < flags.count; ++i) {
    if (i % kPicturesPerRow == 0) rows.emplace_back();
    rows.back().pictures.push_back(picture_values(images, i));
  }
  GridStyle style = grid_style_for(format);
  style.title = quoted_text(flags.prompt, 30);
  style.scale = static_cast<int>(flags.scale);
  style.stretch = flags.stretch;
  make_parent_folder(flags.out);
  // Temporaries that an interrupted generate left behind (write_file_atomic's hidden
  // ".<name>.png.tmp-<pid>-<n>" files of processes that are gone).
  const auto is_png = [](std::string_view file) { return file.ends_with(".png"); };
  const fs::path out_folder = fs::path(flags.out).parent_path();
  remove_stale_temporaries(out_folder.empty() ? "." : out_folder.string(), is_png);
  write_file_atomic(flags.out, png_with_text(encode_png(render_grid(rows, style)),
                                             {{kPngSettingsKey, settings_text}}));

  if (!flags.each.empty()) {
    std::error_code ec;
    fs::create_directories(flags.each, ec);
    INK_CHECK(!ec, "--each: cannot create the folder {}: {}", flags.each, ec.message());
    remove_stale_temporaries(flags.each, is_png);
    const std::string stem =
        file_stem(model->tokenizer().decode(model->tokenizer().encode(flags.prompt)));
    for (int64_t i = 0; i < flags.count; ++i) {
      std::vector<float> values = picture_values(images, i);
      if (flags.stretch) values = stretched(std::move(values));
      write_file_atomic(
          (fs::path(flags.each) / fmt::format("{}_{:03d}.png", stem, i + 1)).string(),
          png_with_text(encode_png(picture_image(values, format, static_cast<int>(flags.scale))),
                        {{kPngSettingsKey, settings_text}}));
    }
  }
  if (!flags.film.empty()) {
    GridStyle film_style = grid_style_for(format);
    film_style.title =
        fmt::format("{}: denoising, {} {} steps, guidance {}", quoted_text(flags.prompt, 30),
                    flags.sampler, flags.steps, flags.guidance);
    film_style.scale = static_cast<int>(flags.scale);
    make_parent_folder(flags.film);
    write_png(flags.film, render_grid(film_rows, film_style));
  }
  if (!flags.attention.empty()) {
    // One row per picture: the picture, then the null token's and each word's map over it.
    std::vector<GridRow> attention_rows;
    std::vector<std::string> headers = {"picture"};
    for (int64_t i = 0; i < std::min(flags.count, kFilmPictures); ++i) {
      const std::vector<float> picture = picture_values(images, i);
      GridRow row;
      row.label = fmt::format("#{}", i + 1);
      const auto plane = static_cast<size_t>(format.height * format.width);
      std::vector<float> rgb(3 * plane);
      for (size_t c = 0; c < 3; ++c) {
        const size_t from = format.channels >= 3 ? c : 0;  // gray: its one channel three times
        std::copy_n(picture.begin() + static_cast<std::ptrdiff_t>(from * plane), plane,
                    rgb.begin() + static_cast<std::ptrdiff_t>(c * plane));
      }
      row.pictures.push_back(std::move(rgb));
      for (const WordAttention& word : attention_words(attention, i, model->tokenizer())) {
        row.pictures.push_back(heat_overlay(picture, format, word.map));
        if (i == 0) headers.push_back(fmt::format("{} {:.0f}%", word.text, 100.0 * word.share));
      }
      attention_rows.push_back(std::move(row));
    }
    GridStyle attention_style = grid_style_for(format);
    attention_style.channels = 3;
    attention_style.title =
        fmt::format("{}: attention per word ({} steps, {} layers)", quoted_text(flags.prompt, 30),
                    attention.steps, attention.layers);
    attention_style.group_headers = headers;
    attention_style.group_size = 1;
    attention_style.scale = static_cast<int>(flags.scale);
    make_parent_folder(flags.attention);
    write_file_atomic(flags.attention,
                      png_with_text(encode_png(render_grid(attention_rows, attention_style)),
                                    {{kPngSettingsKey, settings_text}}));
  }
  std::FILE* messages = writes_to_stdout(flags.out) ? stderr : stdout;
  fmt::print(messages, "wrote {}: {} picture{} of {} (seed {}; pass --seed {} to repeat)\n",
             flags.out, flags.count, flags.count == 1 ? "" : "s", quoted_text(flags.prompt), seed,
             seed);
  if (!flags.each.empty()) {
    fmt::print(messages, "wrote {} PNG files into {}\n", flags.count, flags.each);
  }
  if (!flags.attention.empty()) {
    fmt::print(messages, "wrote {}: the cross-attention map of each word\n", flags.attention);
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
  sub->add_option("--negative-prompt", flags->negative_prompt,
                  "Diffusion: the prompt to steer away from (replaces the empty prompt in CFG)");
  sub->add_option("--guidance,--cfg-scale", flags->guidance,
                  "Diffusion: classifier-free guidance scale (1 = none)")
      ->capture_default_str();
  sub->add_option("--steps", flags->steps, "Diffusion: sampler steps")->capture_default_str();
  sub->add_option("--sampler", flags->sampler, "Diffusion: ddim, ddpm, euler or dpmpp2m")
      ->capture_default_str();
  sub->add_option("-n,--count", flags->count, "Number of pictures")->capture_default_str();
  flags->seed_option =
      add_seed_option(sub, flags->seed, "Seed of the noise (default: a random one, printed)");
  sub->add_option("--out,-o", flags->out, "PNG file for the grid")->capture_default_str();
  sub->add_option("--scale", flags->scale, "Upscaling of each 28x28 picture (nearest neighbour)")
      ->capture_default_str();
  sub->add_option("--each", flags->each, "Also write one PNG per picture into this folder");
  sub->add_flag("--stretch", flags->stretch,
                "Show each picture divided by its own maximum, so faint ones are visible");
  flags->diffusion_options = {
      sub->get_option("--negative-prompt"),
      sub->get_option("--guidance"),
      sub->add_option("--guidance-interval", flags->guidance_interval,
                      "Diffusion: guide only at noise levels sigma in (LOW, HIGH]; the other steps "
                      "use the prompt alone, at half the cost (0,inf: every step)")
          ->capture_default_str(),
      sub->get_option("--steps"),
      sub->get_option("--sampler"),
      sub->add_option("--film", flags->film,
                      "Diffusion: also write the denoising as a strip (x_t and x0-hat every few "
                      "steps) to this PNG"),
      sub->add_option("--attention", flags->attention,
                      "Diffusion: also write each prompt word's cross-attention map (averaged "
                      "over heads, steps and layers) over the first pictures to this PNG"),
  };
  return [flags] { return run_generate(*flags); };
}

}  // namespace ink::app
