// `inkgrad eval`: scores a trained checkpoint per prompt (fidelity, diversity, Fréchet distance,
// precision, recall) beside the ground-truth ceiling, into eval.json and eval.png; a scenes model
// gets the scenes judge's accuracies (seen and held-out prompts) and open-attribute entropies; and
// `inkgrad judge`: trains the judge network those scores come from.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include <fmt/format.h>

#include "apps/commands.h"
#include "apps/figures.h"
#include "apps/generation.h"
#include "apps/image.h"
#include "apps/run_dir.h"
#include "models/diffusion/model.h"
#include "models/eval_report.h"
#include "models/judge.h"
#include "models/registry.h"
#include "models/scenes.h"
#include "models/scenes_eval.h"
#include "models/scenes_judge.h"
#include "models/shapes.h"
#include "models/text_to_image.h"
#include "nn/safetensors.h"
#include "tensor/error.h"
#include "tensor/quote.h"

namespace ink::app {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kEvalJson = kEvalFile;
constexpr std::string_view kEvalPng = "eval.png";
constexpr int64_t kMaxSamplesPerPrompt = 4096;
constexpr int64_t kNeighbours = 3;
// Fresh ground-truth pictures per prompt that a new judge's accuracy is measured on.
constexpr int64_t kAccuracyPictures = 1000;

// ---- where the judge comes from ----

// The cache folder for a judge trained on first use: $XDG_CACHE_HOME/inkgrad, else
// ~/.cache/inkgrad, else .cache/inkgrad in the current folder.
fs::path judge_cache_file() {
  fs::path base;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    base = xdg;
  } else if (const char* home = std::getenv("HOME"); home && *home) {
    base = fs::path(home) / ".cache";
  } else {
    base = ".cache";
  }
  return base / "inkgrad" / "judge.safetensors";
}

// The judge committed with the sources (made by `inkgrad judge --out models/judge.safetensors`).
fs::path committed_judge_file() {
  return INK_JUDGE_FILE;
}

struct JudgeSource {
  std::unique_ptr<Judge> judge;
  std::string path;
};

// Runs `inkgrad judge`'s recipe with progress (one line rewritten in place on a terminal, else a
// line every 10%), and returns the judge with its accuracy on fresh ground truth.
std::unique_ptr<Judge> train_judge_with_progress(const JudgeTrainConfig& config, bool quiet,
                                                 double& accuracy) {
  const bool interactive = isatty(fileno(stdout)) != 0;
  const int64_t every = interactive ? 10 : std::max<int64_t>(1, config.steps / 10);
  auto judge = train_judge(config, [&](const JudgeProgress& p) {
    if (quiet || (p.step % every != 0 && p.step != p.steps)) return;
    fmt::print("{}  judge step {}/{}, loss {:.4f}{}", interactive ? "\r" : "", p.step, p.steps,
               p.loss, interactive ? "" : "\n");
    std::fflush(stdout);
  });
  if (interactive && !quiet) fmt::print("\n");
  accuracy = judge_accuracy(*judge, kAccuracyPictures, config.seed ^ 0xACCULL);
  return judge;
}

std::map<std::string, std::string> judge_metadata(const JudgeTrainConfig& config, double accuracy) {
  return {{"recipe", fmt::format("inkgrad judge --steps {} --seed {}", config.steps, config.seed)},
          {"accuracy", fmt::format("{:.4f}", accuracy)}};
}

// ---- the scenes judge ----

// Held-out ground-truth crops a new scenes judge's shape accuracy is measured on.
constexpr int64_t kScenesAccuracyCrops = 4000;

std::unique_ptr<scenes::ShapeNet> train_shape_net_with_progress(
    const scenes::ShapeNetTrainConfig& config, bool quiet, double& accuracy,
    double& augmented_accuracy) {
  const bool interactive = isatty(fileno(stdout)) != 0;
  const int64_t every = interactive ? 10 : std::max<int64_t>(1, config.steps / 10);
  auto net = scenes::train_shape_net(config, [&](const scenes::ShapeNetProgress& p) {
    if (quiet || (p.step % every != 0 && p.step != p.steps)) return;
    fmt::print("{}  scenes judge step {}/{}, loss {:.4f}{}", interactive ? "\r" : "", p.step,
               p.steps, p.loss, interactive ? "" : "\n");
    std::fflush(stdout);
  });
  if (interactive && !quiet) fmt::print("\n");
  accuracy = scenes::shape_net_accuracy(*net, kScenesAccuracyCrops, config.seed ^ 0xACCULL);
  augmented_accuracy =
      scenes::shape_net_accuracy(*net, kScenesAccuracyCrops, config.seed ^ 0xA06ULL, true);
  return net;
}

std::map<std::string, std::string> scenes_judge_metadata(const scenes::ShapeNetTrainConfig& config,
                                                         double accuracy,
                                                         double augmented_accuracy) {
  return {{"recipe", fmt::format("inkgrad judge --dataset scenes --steps {} --seed {}",
                                 config.steps, config.seed)},
          {"accuracy", fmt::format("{:.4f}", accuracy)},
          {"augmented_accuracy", fmt::format("{:.4f}", augmented_accuracy)}};
}

// --judge FILE, else the committed judge, else the cached one. With `train_if_missing`, a judge
// is trained into the cache (a few minutes, with progress); otherwise a missing judge gives
// an undefined result.
JudgeSource find_judge(const std::string& flag, bool train_if_missing) {
  if (!flag.empty()) return {load_judge(flag), flag};
  std::error_code ec;
  for (const fs::path& path : {committed_judge_file(), judge_cache_file()}) {
    if (fs::is_regular_file(path, ec)) return {load_judge(path.string()), path.string()};
  }
  if (!train_if_missing) return {};
  const fs::path cache = judge_cache_file();
  fmt::print("no judge found; training one into {} (once)\n", cache.string());
  std::fflush(stdout);
  const JudgeTrainConfig config;
  double accuracy = 0.0;
  auto judge = train_judge_with_progress(config, false, accuracy);
  make_parent_folder(cache.string());
  save_judge(cache.string(), *judge, judge_metadata(config, accuracy));
  fmt::print("judge: {:.2f}% accurate on fresh ground truth, saved in {}\n", 100.0 * accuracy,
             cache.string());
  return {std::move(judge), cache.string()};
}

// ---- the model ----

// Builds the model a checkpoint names (its kind and config are in its metadata) and loads it
// with strict names and shapes; every failure names the file.
std::unique_ptr<ImageModel> load_eval_model(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path inside = fs::path(path) / kModelFile;
    INK_FAIL("--checkpoint {} is a folder, not a checkpoint file{}", path,
             fs::exists(inside, ec) ? fmt::format("; did you mean {}?", inside.string()) : "");
  }
  {
    const SafetensorsReader header(path);
    if (const auto kind = header.metadata().find("kind"); kind != header.metadata().end()) {
      INK_CHECK(kind->second != kJudgeKind,
                "{} is the judge network, not a model to evaluate; pass a model.safetensors "
                "written by inkgrad train",
                path);
    }
    for (const SafetensorsEntry& entry : header.entries()) {
      INK_CHECK(!entry.name.starts_with("state.") && !entry.name.starts_with("model."),
                "{} is not a checkpoint of a model inkgrad can evaluate (it is a training "
                "state; use the {} beside it)",
                path, kModelFile);
    }
  }
  try {
    return ink::load_model(path);
  } catch (const Error& error) {
    INK_FAIL("{} is not a checkpoint of a model inkgrad can evaluate: {}", path,
             one_line(error.what(), 3));
  }
}

// How a model with a sampler draws its eval samples: the settings of `inkgrad generate` (the
// MLP ignores them). Defaults are generate's defaults, so that eval scores what users get.
struct SamplerFlags {
  double guidance = diffusion::GenerateOptions{}.guidance;
  std::string guidance_interval =
      guidance_interval_text(diffusion::GenerateOptions{}.guidance_interval);
  int64_t steps = diffusion::GenerateOptions{}.steps;
  std::string sampler = diffusion::GenerateOptions{}.sampler;
};

PromptSampler text_to_image_sampler(ImageModel& model, const SamplerFlags& flags = {}) {
  auto* diffusion_model = dynamic_cast<diffusion::TextToImageDiffusion*>(&model);
  if (diffusion_model == nullptr) {
    return [&model](int64_t prompt, int64_t n, Generator& generator) {
      return model.generate(std::string(kShapePrompts[prompt]), n, generator);
    };
  }
  diffusion::GenerateOptions options;
  options.guidance = flags.guidance;
  options.guidance_interval =
      parse_guidance_interval(flags.guidance_interval, "--guidance-interval");
  options.steps = flags.steps;
  options.sampler = flags.sampler;
  options.validate();
  return [diffusion_model, options](int64_t prompt, int64_t n, Generator& generator) {
    return diffusion_model->generate(std::string(kShapePrompts[prompt]), n, generator, options);
  };
}

// "diffusion (ddim, 50 steps, guidance 3 at sigma in (0.28,5.42])" or "mlp": what produced the
// samples.
std::string sampled_by(const ImageModel& model, const SamplerFlags& flags) {
  if (dynamic_cast<const diffusion::TextToImageDiffusion*>(&model) == nullptr) return model.kind();
  return fmt::format("{} ({}, {} steps, guidance {:g} at sigma in ({}])", model.kind(),
                     flags.sampler, flags.steps, flags.guidance, flags.guidance_interval);
}

// ---- the figure ----

constexpr Color kPaper{246, 246, 246};
constexpr Color kInk{34, 34, 34};
constexpr Color kMuted{120, 120, 120};
constexpr Color kFidelityColor{52, 101, 164};
constexpr Color kDiversityColor{230, 145, 56};

void blit(Image& target, const Image& source, int x0, int y0) {
  for (int y = 0; y < source.height(); ++y) {
    for (int x = 0; x < source.width(); ++x) target.set(x0 + x, y0 + y, source.at(x, y));
  }
}

// One row per prompt: a fidelity bar and a diversity bar on a common 0..1 axis (diversity is
// clipped at 1.2), each with a black tick at the ground-truth ceiling.
Image render_bars(const EvalResult& result) {
  constexpr int kScale = 2;
  constexpr int kBar = 9 * kScale;
  constexpr int kRow = 2 * kBar + 6 * kScale;
  constexpr int kAxis = 360;  // pixels for the value 1
  constexpr double kMaxValue = 1.2;
  int label_width = 0;
  for (std::string_view prompt : kShapePrompts) {
    label_width = std::max(label_width, text_width(std::string(prompt), kScale));
  }
  const int left = 12 + label_width + 10;
  const int top = 12 + 2 * text_height(kScale) + 12;
  const int rows = static_cast<int>(result.model.prompts.size());
  const int width = left + static_cast<int>(kAxis * kMaxValue) + 80;
  Image image(width, top + rows * kRow + text_height(kScale) + 20, kPaper);
  draw_text(image, 12, 12,
            fmt::format("fidelity and diversity per prompt ({} samples each)",
                        result.options.samples_per_prompt),
            kScale, kInk);
  const int legend_y = 12 + text_height(kScale) + 6;
  fill_rect(image, 12, legend_y, 14, 14, kFidelityColor);
  draw_text(image, 32, legend_y, "fidelity", kScale, kInk);
  fill_rect(image, 160, legend_y, 14, 14, kDiversityColor);
  draw_text(image, 180, legend_y, "diversity", kScale, kInk);
  draw_text(image, 330, legend_y, "| ground truth", kScale, kInk);
  for (int tick = 0; tick <= 6; ++tick) {
    const int x = left + tick * kAxis / 5;
    fill_rect(image, x, top - 4, 1, rows * kRow + 4, Color{215, 215, 215});
    draw_text(image, x - 2 * kGlyphAdvance * kScale / 2, top + rows * kRow + 4,
              fmt::format("{:.1f}", tick * 0.2), kScale, kMuted);
  }
  const auto bar = [&](int y, double value, double ceiling, Color color) {
    const double clipped = std::clamp(value, 0.0, kMaxValue);
    fill_rect(image, left, y, std::max(1, static_cast<int>(clipped * kAxis)), kBar, color);
    const int tick_x = left + static_cast<int>(std::clamp(ceiling, 0.0, kMaxValue) * kAxis);
    fill_rect(image, tick_x - 1, y - 2, 3, kBar + 4, kInk);
    draw_text(image, left + static_cast<int>(kMaxValue * kAxis) + 8, y + (kBar - 7 * kScale) / 2,
              fmt::format("{:.3f}", value), kScale, kInk);
  };
  for (int r = 0; r < rows; ++r) {
    const PromptScores& m = result.model.prompts[r];
    const PromptScores& c = result.ceiling.prompts[r];
    const int y = top + r * kRow;
    draw_text(image, 12 + label_width - text_width(m.prompt, kScale), y + kBar - 4 * kScale,
              m.prompt, kScale, kInk);
    bar(y, m.fidelity, c.fidelity, kFidelityColor);
    bar(y + kBar, m.diversity, c.diversity, kDiversityColor);
  }
  return image;
}

// The prompts with the lowest fidelity (ties: the larger FD first).
std::vector<size_t> worst_prompts(const ScoreTable& table, size_t count) {
  std::vector<size_t> order(table.prompts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const PromptScores &x = table.prompts[a], &y = table.prompts[b];
    if (x.fidelity != y.fidelity) return x.fidelity < y.fidelity;
    return x.frechet_distance > y.frechet_distance;
  });
  order.resize(std::min(count, order.size()));
  return order;
}

Image render_eval_figure(const EvalResult& result) {
  const Image bars = render_bars(result);
  std::vector<GridRow> rows;
  const int64_t kept = static_cast<int64_t>(result.kept_samples.front().size()) / kImagePixels;
  for (size_t p : worst_prompts(result.model, 3)) {
    const PromptScores& scores = result.model.prompts[p];
    // "prompt -> what the judge mostly saw" when that differs.
    GridRow row{scores.judged_as == scores.prompt
                    ? scores.prompt
                    : fmt::format("{} -> {}", scores.prompt, scores.judged_as),
                {}};
    for (const auto* set : {&result.kept_samples[p], &result.kept_ground_truth[p]}) {
      for (int64_t i = 0; i < kept; ++i) {
        row.pictures.emplace_back(set->begin() + i * kImagePixels,
                                  set->begin() + (i + 1) * kImagePixels);
      }
    }
    rows.push_back(std::move(row));
  }
  GridStyle style;
  style.title = "lowest fidelity (prompt -> judged as): generated vs ground truth, stretched";
  style.stretch = true;
  style.group_headers = {"generated", "ground truth"};
  style.group_size = static_cast<int>(kept);
  style.scale = 2;
  const Image grid = render_grid(rows, style);
  Image figure(std::max(bars.width(), grid.width()), bars.height() + grid.height(), kPaper);
  blit(figure, bars, 0, 0);
  blit(figure, grid, 0, bars.height());
  return figure;
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<int>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

void write_text(const std::string& path, const std::string& text) {
  write_file_atomic(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// Creates `dir` (and its parents) or explains why it cannot be written.
void prepare_out_folder(const std::string& dir) {
  std::error_code ec;
  INK_CHECK(!fs::exists(dir, ec) || fs::is_directory(dir, ec), "--out {} is a file, not a folder",
            dir);
  fs::create_directories(dir, ec);
  INK_CHECK(!ec, "cannot create the output folder {}: {}", dir, ec.message());
  // Proves that the folder is writable before minutes of work.
  const std::string probe = (fs::path(dir) / ".inkgrad-eval-probe").string();
  write_text(probe, "");
  fs::remove(probe, ec);
}

// ---- inkgrad eval ----

struct EvalFlags {
  std::string checkpoint;
  int64_t samples_per_prompt = 256;
  uint64_t seed = 0;
  std::string out;
  std::string judge;
  SamplerFlags sampling;
  bool sampling_given = false;  // any of --guidance(-interval), --steps, --sampler given
  CLI::Option* samples_option = nullptr;
};

// ---- inkgrad eval on a scenes model ----

// The scenes judge committed with the sources (made by `inkgrad judge --dataset scenes`).
fs::path committed_scenes_judge_file() {
  return INK_SCENES_JUDGE_FILE;
}

struct ScenesJudgeSource {
  std::unique_ptr<scenes::ShapeNet> net;
  std::string path;
};

// --judge FILE, else the committed scenes judge, else the cached one, else one trained into the
// cache (about a minute).
ScenesJudgeSource find_scenes_judge(const std::string& flag) {
  if (!flag.empty()) return {scenes::load_shape_net(flag), flag};
  const fs::path cache = judge_cache_file().parent_path() / "scenes_judge.safetensors";
  std::error_code ec;
  for (const fs::path& path : {committed_scenes_judge_file(), cache}) {
    if (fs::is_regular_file(path, ec))
      return {scenes::load_shape_net(path.string()), path.string()};
  }
  fmt::print("no scenes judge found; training one into {} (once)\n", cache.string());
  std::fflush(stdout);
  const scenes::ShapeNetTrainConfig config;
  double accuracy = 0.0, augmented_accuracy = 0.0;
  auto net = train_shape_net_with_progress(config, false, accuracy, augmented_accuracy);
  make_parent_folder(cache.string());
  scenes::save_shape_net(cache.string(), *net,
                         scenes_judge_metadata(config, accuracy, augmented_accuracy));
  return {std::move(net), cache.string()};
}

bool is_scenes_model(const ImageModel& model) {
  return model.image_format() == (ImageFormat{scenes::kChannels, scenes::kSide, scenes::kSide}) &&
         model.tokenizer().kind() == "word";
}

// Pictures per prompt in the scenes eval unless -n says otherwise, and how many of them (and of
// ground truth) eval.png shows per held-out prompt.
constexpr int64_t kScenesDefaultSamples = 32;
constexpr int64_t kScenesFigurePictures = 4;

// n pictures of a scenes prompt; a diffusion model samples with the --guidance, --steps and
// --sampler settings (generate's defaults unless given).
scenes::PictureSource scenes_model_source(ImageModel& model, const SamplerFlags& flags,
                                          Generator& generator) {
  auto* diffusion_model = dynamic_cast<diffusion::TextToImageDiffusion*>(&model);
  diffusion::GenerateOptions options;
  options.guidance = flags.guidance;
  options.steps = flags.steps;
  options.sampler = flags.sampler;
  if (diffusion_model) {
    options.guidance_interval =
        parse_guidance_interval(flags.guidance_interval, "--guidance-interval");
    options.validate();
  }
  return [&model, diffusion_model, options, &generator](const std::string& prompt, int64_t n,
                                                        std::vector<float>& images) {
    const Tensor pictures = diffusion_model
                                ? diffusion_model->generate(prompt, n, generator, options)
                                : model.generate(prompt, n, generator);
    images.assign(pictures.data(), pictures.data() + pictures.numel());
  };
}

// eval.png of a scenes run: every held-out prompt, the model's first pictures beside ground truth.
Image render_scenes_figure(const scenes::ScenesReport& report,
                           const std::map<std::string, std::vector<float>>& kept) {
  std::vector<GridRow> rows;
  scenes::SceneSampler sampler;
  Generator truth(report.seed ^ 0xF16ULL);
  std::vector<float> picture(static_cast<size_t>(scenes::kImageFloats));
  for (const scenes::PromptScores& p : report.model.prompts) {
    if (!p.held_out) continue;
    GridRow row{fmt::format("{} ({:.2f})", p.prompt, p.picture_accuracy), {}};
    const std::vector<float>& model_pictures = kept.at(p.prompt);
    const int64_t count = static_cast<int64_t>(model_pictures.size()) / scenes::kImageFloats;
    for (int64_t i = 0; i < kScenesFigurePictures; ++i) {
      if (i < count) {
        row.pictures.emplace_back(model_pictures.begin() + i * scenes::kImageFloats,
                                  model_pictures.begin() + (i + 1) * scenes::kImageFloats);
      } else {
        row.pictures.emplace_back(static_cast<size_t>(scenes::kImageFloats), 0.0f);
      }
    }
    for (int64_t i = 0; i < kScenesFigurePictures; ++i) {
      scenes::render(sampler.sample_for_prompt(scenes::parse_prompt(p.prompt), truth),
                     picture.data());
      row.pictures.push_back(picture);
    }
    rows.push_back(std::move(row));
  }
  GridStyle style = grid_style_for({scenes::kChannels, scenes::kSide, scenes::kSide});
  style.title = "held-out prompts (picture accuracy): generated vs ground truth";
  style.group_headers = {"generated", "ground truth"};
  style.group_size = static_cast<int>(kScenesFigurePictures);
  style.scale = 2;
  return render_grid(rows, style);
}

int run_scenes_eval(const EvalFlags& flags, ImageModel& model, const std::string& out_dir) {
  const int64_t n =
      flags.samples_option->count() > 0 ? flags.samples_per_prompt : kScenesDefaultSamples;
  check_range("-n", n, 1, kMaxSamplesPerPrompt);
  Generator generator(flags.seed);
  const scenes::PictureSource generate = scenes_model_source(model, flags.sampling, generator);
  prepare_out_folder(out_dir);
  const std::string json_path = (fs::path(out_dir) / kEvalJson).string();
  const std::string png_path = (fs::path(out_dir) / kEvalPng).string();
  ScenesJudgeSource judge = find_scenes_judge(flags.judge);
  const std::vector<std::string>& prompts = scenes::eval_prompts();
  fmt::print("evaluating {} ({}) on scenes: {} prompts, {} pictures each, seed {}, judge {}\n",
             flags.checkpoint, sampled_by(model, flags.sampling), prompts.size(), n, flags.seed,
             judge.path);
  std::fflush(stdout);
  std::map<std::string, std::vector<float>> kept;
  size_t done = 0;
  const bool interactive = isatty(fileno(stdout)) != 0;
  const scenes::PictureSource source = [&](const std::string& prompt, int64_t count,
                                           std::vector<float>& images) {
    generate(prompt, count, images);
    const int64_t keep = std::min(count, kScenesFigurePictures) * scenes::kImageFloats;
    kept[prompt].assign(images.begin(), images.begin() + std::min<int64_t>(keep, images.size()));
    ++done;
    if (interactive) {
      fmt::print("\r  prompt {}/{}", done, prompts.size());
      std::fflush(stdout);
    }
  };
  const scenes::ScenesReport report = scenes::evaluate_scenes_report(
      prompts, n, flags.seed, source, scenes::shape_classifier(*judge.net));
  if (interactive) fmt::print("\n");
  fmt::print("\neach cell: the model (the ground-truth ceiling)\n{}",
             scenes::scenes_eval_table(report));
  std::vector<std::pair<std::string, std::string>> extra = {
      {"checkpoint", json_string(flags.checkpoint)},
      {"model_kind", json_string(model.kind())},
      {"sampling", json_string(sampled_by(model, flags.sampling))},
      {"judge", json_string(judge.path)}};
  write_text(json_path, scenes::scenes_eval_json(report, extra));
  write_png(png_path, render_scenes_figure(report, kept));
  fmt::print("\nwrote {} and {}\n", json_path, png_path);
  return 0;
}

int run_eval(const EvalFlags& flags) {
  INK_CHECK(!flags.checkpoint.empty(), "--checkpoint needs a file, got \"\"");
  const std::string out =
      flags.out.empty() ? fs::path(flags.checkpoint).parent_path().string() : flags.out;
  const std::string out_dir = out.empty() ? "." : out;
  const std::unique_ptr<ImageModel> loaded = load_eval_model(flags.checkpoint);
  ImageModel& model = *loaded;
  INK_CHECK(!flags.sampling_given || has_sampler(model),
            "--guidance, --steps and --sampler set how a diffusion model samples; {} holds a {} "
            "model, which has no sampler",
            flags.checkpoint, model.kind());
  if (is_scenes_model(model)) return run_scenes_eval(flags, model, out_dir);
  INK_CHECK(
      flags.samples_per_prompt > kNeighbours && flags.samples_per_prompt <= kMaxSamplesPerPrompt,
      "-n must be between {} and {} (precision and recall compare {} nearest neighbours), "
      "got {}",
      kNeighbours + 1, kMaxSamplesPerPrompt, kNeighbours, flags.samples_per_prompt);
  INK_CHECK(model.image_format() == (ImageFormat{1, 28, 28}),
            "{} holds a {} model of {}x{}x{} pictures; the judges know the nine 28x28 shapes and "
            "the 3x32x32 scenes",
            flags.checkpoint, model.kind(), model.image_format().channels,
            model.image_format().height, model.image_format().width);
  const PromptSampler sampler = text_to_image_sampler(model, flags.sampling);
  prepare_out_folder(out_dir);
  const std::string json_path = (fs::path(out_dir) / kEvalJson).string();
  const std::string png_path = (fs::path(out_dir) / kEvalPng).string();

  JudgeSource judge = find_judge(flags.judge, /*train_if_missing=*/true);
  EvalOptions options;
  options.samples_per_prompt = flags.samples_per_prompt;
  options.seed = flags.seed;
  options.k = kNeighbours;
  fmt::print("evaluating {} ({}): {} samples per prompt, seed {}, judge {}\n", flags.checkpoint,
             sampled_by(model, flags.sampling), options.samples_per_prompt, options.seed,
             judge.path);
  std::fflush(stdout);
  const EvalResult result = evaluate(sampler, *judge.judge, options);

  fmt::print("\neach cell: the model (the ground-truth ceiling)\n{}", eval_table(result));
  write_text(json_path,
             eval_json(result, {{"checkpoint", json_string(flags.checkpoint)},
                                {"model_kind", json_string(model.kind())},
                                {"sampling", json_string(sampled_by(model, flags.sampling))},
                                {"judge", json_string(judge.path)}}));
  write_png(png_path, render_eval_figure(result));
  fmt::print("\nwrote {} and {}\n", json_path, png_path);
  return 0;
}

// ---- inkgrad judge ----

struct JudgeFlags {
  std::string dataset = "shapes";
  std::string out;    // default: models/judge.safetensors or models/scenes_judge.safetensors
  int64_t steps = 0;  // default: the dataset's recipe
  uint64_t seed = JudgeTrainConfig{}.seed;
  bool quiet = false;
  CLI::Option* out_option = nullptr;
  CLI::Option* steps_option = nullptr;
};

int run_scenes_judge(const JudgeFlags& flags) {
  scenes::ShapeNetTrainConfig config;
  if (flags.steps_option->count() > 0) config.steps = flags.steps;
  config.seed = flags.seed;
  const std::string out =
      flags.out_option->count() > 0 ? flags.out : "models/scenes_judge.safetensors";
  INK_CHECK(!out.empty(), "--out needs a file name, got \"\"");
  make_parent_folder(out);
  fmt::print("training the scenes judge's shape CNN: {} steps of {} augmented crops, seed {}\n",
             config.steps, config.batch, config.seed);
  std::fflush(stdout);
  double accuracy = 0.0, augmented_accuracy = 0.0;
  auto net = train_shape_net_with_progress(config, flags.quiet, accuracy, augmented_accuracy);
  scenes::save_shape_net(out, *net, scenes_judge_metadata(config, accuracy, augmented_accuracy));
  fmt::print(
      "scenes judge: shapes {:.2f}% right on {} held-out ground-truth crops ({:.2f}% on augmented "
      "ones); wrote {}\n",
      100.0 * accuracy, kScenesAccuracyCrops, 100.0 * augmented_accuracy, out);
  return 0;
}

int run_judge(const JudgeFlags& flags) {
  INK_CHECK(flags.dataset == "shapes" || flags.dataset == "scenes",
            "--dataset must be shapes or scenes, got {}", quoted_text(flags.dataset));
  if (flags.steps_option->count() > 0) check_range("--steps", flags.steps, 1, 1'000'000);
  if (flags.dataset == "scenes") return run_scenes_judge(flags);
  const std::string out = flags.out_option->count() > 0 ? flags.out : "models/judge.safetensors";
  INK_CHECK(!out.empty(), "--out needs a file name, got \"\"");
  make_parent_folder(out);
  JudgeTrainConfig config;
  if (flags.steps_option->count() > 0) config.steps = flags.steps;
  config.seed = flags.seed;
  fmt::print("training the judge: {} steps of {} augmented pictures, seed {}\n", config.steps,
             config.pictures_per_prompt * kNumShapePrompts, config.seed);
  std::fflush(stdout);
  double accuracy = 0.0;
  auto judge = train_judge_with_progress(config, flags.quiet, accuracy);
  save_judge(out, *judge, judge_metadata(config, accuracy));
  fmt::print("judge: {:.2f}% accurate on {} fresh ground-truth pictures; wrote {}\n",
             100.0 * accuracy, kAccuracyPictures * kNumShapePrompts, out);
  return 0;
}

}  // namespace

namespace {

void run_eval_into(const std::string& dir, ImageModel& model, uint64_t seed,
                   int64_t samples_per_prompt, int64_t steps) {
  JudgeSource judge = find_judge("", /*train_if_missing=*/false);
  if (!judge.judge) {
    warn(fmt::format("no judge network found, so no {}; `inkgrad eval --checkpoint {}` trains one",
                     kEvalJson, (fs::path(dir) / kModelFile).string()));
    return;
  }
  EvalOptions options;
  options.samples_per_prompt = samples_per_prompt;
  options.seed = seed;
  options.k = kNeighbours;
  SamplerFlags sampling;
  if (steps > 0) sampling.steps = steps;
  const EvalResult result = evaluate(text_to_image_sampler(model, sampling), *judge.judge, options);
  write_text((fs::path(dir) / kEvalJson).string(),
             eval_json(result, {{"model_kind", json_string(model.kind())},
                                {"sampling", json_string(sampled_by(model, sampling))},
                                {"judge", json_string(judge.path)}}));
  const PromptScores& m = result.model.overall;
  const PromptScores& c = result.ceiling.overall;
  fmt::print(
      "{} ({}, {} samples per prompt; ground truth in brackets): fidelity {:.3f} ({:.3f}), "
      "diversity {:.3f} ({:.3f}), FD {:.2f} ({:.2f}), precision {:.3f} ({:.3f}), recall {:.3f} "
      "({:.3f})\n",
      kEvalJson, sampled_by(model, sampling), samples_per_prompt, m.fidelity, c.fidelity,
      m.diversity, c.diversity, m.frechet_distance, c.frechet_distance, m.precision, c.precision,
      m.recall, c.recall);
}

}  // namespace

void write_run_eval(const std::string& dir, ImageModel& model, uint64_t seed,
                    int64_t samples_per_prompt, int64_t steps) {
  if (samples_per_prompt == 0) return;
  try {
    run_eval_into(dir, model, seed, samples_per_prompt, steps);
  } catch (const std::exception& error) {
    // The run itself is complete and saved; a failed eval must not turn it into a failure.
    warn(fmt::format("the eval at the end of training failed, so there is no {}: {}", kEvalJson,
                     one_line(error.what())));
  }
}

Command add_eval_command(CLI::App& app) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* sub = app.add_subcommand(
      "eval",
      "Score a trained model per prompt: fidelity, diversity, Frechet distance, precision and "
      "recall, beside the ground-truth ceiling; for a scenes model, picture and attribute "
      "accuracy on seen and held-out prompts and the spread of open attributes. Writes eval.json "
      "and eval.png.");
  sub->add_option("--checkpoint,-c", flags->checkpoint,
                  "A model.safetensors written by inkgrad train")
      ->required();
  flags->samples_option =
      sub->add_option("-n,--samples", flags->samples_per_prompt, "Samples per prompt")
          ->default_str(fmt::format("256, or {} for a scenes model", kScenesDefaultSamples));
  sub->add_option("--seed", flags->seed, "Seed of the samples and the ground truth")
      ->capture_default_str();
  sub->add_option("--out,-o", flags->out,
                  "Folder for eval.json and eval.png (default: the checkpoint's folder)");
  sub->add_option("--judge", flags->judge,
                  "A judge file (default: the committed models/judge.safetensors, or "
                  "models/scenes_judge.safetensors for a scenes model, else the cache)");
  CLI::Option* guidance = sub->add_option("--guidance", flags->sampling.guidance,
                                          "diffusion: classifier-free guidance scale w (1 = none)")
                              ->capture_default_str();
  CLI::Option* interval =
      sub->add_option(
             "--guidance-interval", flags->sampling.guidance_interval,
             "diffusion: guide only at noise levels sigma in (LOW, HIGH] (0,inf: every step)")
          ->capture_default_str();
  CLI::Option* steps = sub->add_option("--steps", flags->sampling.steps, "diffusion: sampler steps")
                           ->capture_default_str();
  CLI::Option* sampler = sub->add_option("--sampler", flags->sampling.sampler,
                                         "diffusion: ddim, ddpm, euler or dpmpp2m")
                             ->capture_default_str();
  return [flags, guidance, interval, steps, sampler] {
    flags->sampling_given =
        guidance->count() + interval->count() + steps->count() + sampler->count() > 0;
    return run_eval(*flags);
  };
}

Command add_judge_command(CLI::App& app) {
  auto flags = std::make_shared<JudgeFlags>();
  CLI::App* sub = app.add_subcommand(
      "judge", "Train the judge network that inkgrad eval scores with (deterministic per seed).");
  sub->add_option("--dataset", flags->dataset,
                  "Which judge: shapes (the nine prompts) or scenes (the scenes judge's shape CNN)")
      ->capture_default_str();
  flags->out_option =
      sub->add_option("--out,-o", flags->out, "File for the judge")
          ->default_str("models/judge.safetensors, or models/scenes_judge.safetensors");
  flags->steps_option =
      sub->add_option("--steps", flags->steps, "Training steps")
          ->default_str(fmt::format("{} (shapes), {} (scenes)", JudgeTrainConfig{}.steps,
                                    scenes::ShapeNetTrainConfig{}.steps));
  sub->add_option("--seed", flags->seed, "Seed of the data and the initial weights")
      ->capture_default_str();
  sub->add_flag("--quiet,-q", flags->quiet, "No progress line");
  return [flags] { return run_judge(*flags); };
}

}  // namespace ink::app
