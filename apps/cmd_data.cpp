// `inkgrad data`: ground-truth pictures from the synthetic data generators, for one prompt or as
// the notebook's grid of all nine.
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "apps/commands.h"
#include "apps/figures.h"
#include "apps/prompt.h"
#include "models/shapes.h"
#include "tensor/error.h"

namespace ink::app {
namespace {

constexpr int64_t kPicturesPerRow = 8;

struct DataFlags {
  std::string prompt;
  int64_t count = 16;
  uint64_t seed = 0;
  std::string out;
  int64_t scale = 4;
  CLI::Option* seed_option = nullptr;
  CLI::Option* count_option = nullptr;
  CLI::Option* scale_option = nullptr;
};

int run_data(const DataFlags& flags) {
  INK_CHECK(!flags.out.empty(), "--out needs a file name, got \"\"");
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
                  "One of the nine prompts, or \"all\" for a grid of every prompt")
      ->required();
  flags->count_option =
      sub->add_option("-n,--count", flags->count, "Pictures (per prompt with --prompt all)")
          ->default_str("16, or 8 per prompt with --prompt all");
  flags->seed_option =
      add_seed_option(sub, flags->seed, "Seed of the generators (default: a random one)");
  sub->add_option("--out,-o", flags->out, "PNG file to write")->required();
  flags->scale_option = sub->add_option("--scale", flags->scale,
                                        "Upscaling of each 28x28 picture (nearest neighbour)")
                            ->default_str("4, or 3 with --prompt all");
  return [flags] { return run_data(*flags); };
}

}  // namespace ink::app
