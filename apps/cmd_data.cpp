// `inkgrad data`: ground-truth pictures from the synthetic data generators, for one prompt or as
// the notebook's grid of all nine; with --dataset scenes, the scenes world's.
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "apps/commands.h"
#include "apps/figures.h"
#include "apps/prompt.h"
#include "apps/run_dir.h"
#include "models/scenes.h"
#include "models/scenes_dataset.h"
#include "models/shapes.h"
#include "tensor/error.h"
#include "tensor/quote.h"

namespace ink::app {
namespace {

constexpr int64_t kPicturesPerRow = 8;

struct DataFlags {
  std::string dataset = "shapes";
  std::string prompt;
  int64_t count = 16;
  uint64_t seed = 0;
  std::string out;
  int64_t scale = 4;
  CLI::Option* seed_option = nullptr;
  CLI::Option* count_option = nullptr;
  CLI::Option* scale_option = nullptr;
};

// The scenes world's pictures as C x H x W values.
std::vector<float> scene_picture(const std::vector<scenes::Object>& objects) {
  std::vector<float> picture(static_cast<size_t>(scenes::kImageFloats));
  scenes::render(objects, picture.data());
  return picture;
}

// `inkgrad data --dataset scenes`: --prompt all (a row per sample prompt of the dataset, seen
// and held-out), --prompt training (training draws, each labelled with its own prompt), or one
// scenes prompt.
int run_scenes_data(const DataFlags& flags) {
  const bool all = flags.prompt == "all";
  const bool training = flags.prompt == "training";
  const int64_t count = flags.count_option->count() > 0 ? flags.count : (all ? 8 : 16);
  const int64_t scale = flags.scale_option->count() > 0 ? flags.scale : 3;
  check_range("-n", count, 1, all ? 256 : (training ? 1024 : 4096));
  check_range("--scale", scale, 1, 64);
  scenes::SceneSpec spec;
  if (!all && !training) {
    try {
      spec = scenes::parse_prompt(flags.prompt);
    } catch (const Error& error) {
      INK_FAIL("--prompt {} is not a scenes prompt ({}); or use --prompt all or --prompt training",
               quoted_text(flags.prompt), one_line(error.what()));
    }
  }
  const uint64_t seed = flags.seed_option->count() > 0 ? flags.seed : fresh_seed();
  Generator generator(seed);
  const scenes::SceneSampler sampler;
  std::vector<GridRow> rows;
  std::string title;
  if (all) {
    const ScenesDataset data(1, 1, Generator(0));
    for (const std::string& prompt : data.prompts()) {
      const scenes::SceneSpec row_spec = scenes::parse_prompt(prompt);
      GridRow row{scenes::names_held_out(row_spec) ? prompt + " (held out)" : prompt, {}};
      for (int64_t i = 0; i < count; ++i) {
        row.pictures.push_back(scene_picture(sampler.sample_for_prompt(row_spec, generator)));
      }
      rows.push_back(std::move(row));
    }
    title = fmt::format("scenes ground truth, {} per prompt", count);
  } else if (training) {
    for (int64_t i = 0; i < count; ++i) {
      const scenes::SceneSampler::Sample sample = sampler.sample_training(generator);
      rows.push_back({sample.prompt, {scene_picture(sample.objects)}});
      // The grid shortens long labels; the prompts in full:
      fmt::print("{:>4}  {}\n", i + 1, sample.prompt);
    }
    title = "scenes training data";
  } else {
    for (int64_t i = 0; i < count; ++i) {
      if (i % kPicturesPerRow == 0) rows.emplace_back();
      rows.back().pictures.push_back(scene_picture(sampler.sample_for_prompt(spec, generator)));
    }
    title = fmt::format("scenes ground truth: \"{}\"", flags.prompt);
  }
  make_parent_folder(flags.out);
  GridStyle style = grid_style_for({scenes::kChannels, scenes::kSide, scenes::kSide});
  style.title = title;
  style.scale = static_cast<int>(scale);
  write_png(flags.out, render_grid(rows, style));
  fmt::print(
      "wrote {}: {} scenes picture{} of {} (seed {}; pass --seed {} to repeat)\n", flags.out,
      all ? count * static_cast<int64_t>(rows.size()) : count, count == 1 && !all ? "" : "s",
      all ? std::string("every sample prompt")
          : (training ? std::string("the training distribution") : quoted_text(flags.prompt)),
      seed, seed);
  return 0;
}

int run_data(const DataFlags& flags) {
  INK_CHECK(!flags.out.empty(), "--out needs a file name, got \"\"");
  INK_CHECK(flags.dataset == "shapes" || flags.dataset == "scenes",
            "--dataset must be shapes or scenes, got {}", quoted_text(flags.dataset));
  if (flags.dataset == "scenes") return run_scenes_data(flags);
  const bool all = flags.prompt == "all";
  // A grid of all nine prompts shows one row each, 8 pictures per row unless -n says otherwise.
  const int64_t count = flags.count_option->count() > 0 ? flags.count : (all ? 8 : 16);
  const int64_t scale = flags.scale_option->count() > 0 ? flags.scale : (all ? 3 : 4);
  check_range("-n", count, 1, all ? 256 : 4096);
  check_range("--scale", scale, 1, 64);
  INK_CHECK(all || is_shape_prompt(flags.prompt),
            "--prompt {} is not one of the nine prompts of the data: {} (or use --prompt all)",
            quoted_text(flags.prompt), trained_prompts_list());

  const uint64_t seed = flags.seed_option->count() > 0 ? flags.seed : fresh_seed();
  Generator generator(seed);
  std::vector<GridRow> rows;
  std::string title;
  if (all) {
    for (std::string_view prompt : kShapePrompts) {
      GridRow row{std::string(prompt), {}};
      for (int64_t i = 0; i < count; ++i) row.pictures.push_back(make_shape(prompt, generator));
      rows.push_back(std::move(row));
    }
    title = fmt::format("training data, {} per prompt", count);
  } else {
    for (int64_t i = 0; i < count; ++i) {
      if (i % kPicturesPerRow == 0) rows.emplace_back();
      rows.back().pictures.push_back(make_shape(flags.prompt, generator));
    }
    title = fmt::format("training data: \"{}\"", flags.prompt);
  }
  make_parent_folder(flags.out);
  GridStyle style;
  style.title = title;
  style.scale = static_cast<int>(scale);
  write_png(flags.out, render_grid(rows, style));
  fmt::print("wrote {}: {} picture{} of {} (seed {}; pass --seed {} to repeat)\n", flags.out,
             all ? count * kNumShapePrompts : count, count == 1 && !all ? "" : "s",
             all ? std::string("every prompt") : quoted_text(flags.prompt), seed, seed);
  return 0;
}

}  // namespace

Command add_data_command(CLI::App& app) {
  auto flags = std::make_shared<DataFlags>();
  CLI::App* sub = app.add_subcommand(
      "data", "Draw ground-truth pictures from the synthetic training data generators.");
  sub->add_option("--prompt,-p", flags->prompt,
                  "One of the nine prompts, or \"all\" for a grid of every prompt; with "
                  "--dataset scenes a scenes prompt, \"all\" or \"training\"")
      ->required();
  sub->add_option("--dataset", flags->dataset,
                  "shapes (the nine prompts) or scenes (coloured objects, 3x32x32)")
      ->capture_default_str();
  flags->count_option =
      sub->add_option("-n,--count", flags->count, "Pictures (per prompt with --prompt all)")
          ->default_str("16, or 8 per prompt with --prompt all");
  flags->seed_option =
      add_seed_option(sub, flags->seed, "Seed of the generators (default: a random one)");
  sub->add_option("--out,-o", flags->out, "PNG file to write")->required();
  flags->scale_option =
      sub->add_option("--scale", flags->scale, "Upscaling of each picture (nearest neighbour)")
          ->default_str("4, or 3 with --prompt all or --dataset scenes");
  return [flags] { return run_data(*flags); };
}

}  // namespace ink::app
