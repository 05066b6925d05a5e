// Scenes evaluation: the prompt list and the aggregation of the judge's verdicts.
#include "models/scenes_eval.h"

#include <cmath>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "tensor/error.h"

namespace ink::scenes {

const std::vector<std::string>& eval_prompts() {
  static const std::vector<std::string> prompts = {
      // single objects, fully named
      "a small red circle on the left",
      "a large blue square at the bottom",
      "a small white triangle at the top right",
      "a large yellow cross in the center",
      "a small purple square at the bottom left",
      "a large green triangle on the right",
      "a small blue circle at the top",
      "a large white cross at the bottom right",
      // single objects with attributes left open
      "a circle",
      "a square",
      "a triangle",
      "a cross",
      "a red square",
      "a large circle",
      "a small cross on the left",
      "a purple triangle",
      "a white circle at the top",
      "a green cross in the center",
      // two objects
      "a red circle on the left and a blue square on the right",
      "a small yellow triangle at the top and a large white circle at the bottom",
      "a green square at the top left and a purple cross at the bottom right",
      "a large blue triangle on the left and a small red cross at the top right",
      "a white square in the center and a yellow circle at the bottom left",
      "a purple circle at the top and a green triangle at the bottom",
      // held-out combinations, several times each
      "a red triangle",
      "a small red triangle on the right",
      "a green circle",
      "a large green circle at the top",
      "a blue cross",
      "a small blue cross at the bottom",
      "a yellow square",
      "a large yellow square on the left",
      "a square at the top right",
      "a small white square at the top right",
      "a circle at the bottom left",
      "a large purple circle at the bottom left",
      "a red triangle on the left and a blue circle on the right",
      "a yellow square at the top and a white cross at the bottom",
  };
  return prompts;
}

namespace {

double entropy(const std::map<int, int64_t>& counts) {
  int64_t total = 0;
  for (const auto& [value, c] : counts) total += c;
  if (total == 0) return 0.0;
  double h = 0.0;
  for (const auto& [value, c] : counts) {
    if (c == 0) continue;
    const double p = static_cast<double>(c) / static_cast<double>(total);
    h -= p * std::log(p);
  }
  return h;
}

// The open attributes of a single-object prompt, as histograms of the judged values.
struct OpenHistograms {
  std::map<int, int64_t> color, size, place;
};

void add_open(const ObjectSpec& spec, const FoundObject& f, OpenHistograms& h) {
  if (!spec.color) ++h.color[static_cast<int>(f.color)];
  if (!spec.size) ++h.size[static_cast<int>(f.size)];
  if (!spec.place) ++h.place[f.place.index()];
}

// Ground-truth draws of n pictures whose entropies are averaged into the reference: the plug-in
// entropy of n samples is biased low, so the reference is the mean entropy of n ground-truth
// pictures (not one noisy draw of it, nor the exact entropy of the distribution).
constexpr int64_t kReferenceDraws = 8;

struct OpenEntropies {
  double color = 0, size = 0, place = 0;
};

OpenEntropies entropies_of(const OpenHistograms& h) {
  return {entropy(h.color), entropy(h.size), entropy(h.place)};
}

// entropy(samples) / reference entropy per open attribute (-1 when named, or when ground truth
// has a single value), and their mean in ps.open_entropy.
void open_ratios(const ObjectSpec& spec, const OpenHistograms& model,
                 const OpenEntropies& reference, PromptScores& ps) {
  const OpenEntropies m = entropies_of(model);
  double sum = 0;
  int n = 0;
  const auto ratio = [&](double model_entropy, double reference_entropy) {
    if (reference_entropy <= 0) return -1.0;
    const double r = model_entropy / reference_entropy;
    sum += r;
    ++n;
    return r;
  };
  if (!spec.color) ps.color_entropy = ratio(m.color, reference.color);
  if (!spec.size) ps.size_entropy = ratio(m.size, reference.size);
  if (!spec.place) ps.place_entropy = ratio(m.place, reference.place);
  ps.open_entropy = n == 0 ? -1.0 : sum / n;
}

// A mean of the values that are >= 0 (the -1 of "not open" left out), NaN when there is none.
struct OpenMean {
  double sum = 0;
  int64_t count = 0;
  void add(double value) {
    if (value < 0) return;
    sum += value;
    ++count;
  }
  double mean() const { return count == 0 ? std::nan("") : sum / static_cast<double>(count); }
};

struct SplitSums {
  int64_t pictures = 0, correct = 0, count_ok = 0;
  int64_t shape_ok = 0, shape_named = 0, color_ok = 0, color_named = 0;
  int64_t size_ok = 0, size_named = 0, place_ok = 0, place_named = 0;
  int64_t prompts = 0;
  OpenMean open, color, size, place;

  SplitScores scores() const {
    const auto frac = [](int64_t a, int64_t b) {
      return b == 0 ? std::nan("") : static_cast<double>(a) / static_cast<double>(b);
    };
    SplitScores s;
    s.pictures = pictures;
    s.picture_accuracy = frac(correct, pictures);
    s.count_accuracy = frac(count_ok, pictures);
    s.shape_accuracy = frac(shape_ok, shape_named);
    s.color_accuracy = frac(color_ok, color_named);
    s.size_accuracy = frac(size_ok, size_named);
    s.place_accuracy = frac(place_ok, place_named);
    s.open_entropy = open.mean();
    s.color_entropy = color.mean();
    s.size_entropy = size.mean();
    s.place_entropy = place.mean();
    s.prompts = prompts;
    return s;
  }
};

}  // namespace

ScenesEval evaluate_scenes(const std::vector<std::string>& prompts, int64_t n,
                           const PictureSource& generate, const PictureSource& ground_truth,
                           const ShapeClassifier& classify) {
  INK_CHECK(n >= 1, "scenes eval: n must be >= 1, got {}", n);
  ScenesEval out;
  SplitSums seen, held;
  std::vector<float> images, truth;
  for (const std::string& prompt : prompts) {
    const SceneSpec spec = parse_prompt(prompt);
    const bool held_out = names_held_out(spec);
    SplitSums& sums = held_out ? held : seen;
    generate(prompt, n, images);
    INK_CHECK(static_cast<int64_t>(images.size()) == n * kImageFloats,
              "scenes eval: the model gave {} floats for {} pictures of \"{}\" (expected {})",
              images.size(), n, prompt, n * kImageFloats);
    PromptScores ps;
    ps.prompt = prompt;
    ps.held_out = held_out;
    ps.pictures = n;
    int64_t correct = 0, count_ok = 0;
    ++sums.prompts;
    OpenHistograms model_open;
    for (int64_t i = 0; i < n; ++i) {
      const Verdict v = judge(spec, find_objects(images.data() + i * kImageFloats, classify));
      ++sums.pictures;
      correct += v.correct;
      count_ok += v.count_ok;
      sums.shape_ok += v.shape_ok;
      sums.shape_named += v.shape_named;
      sums.color_ok += v.color_ok;
      sums.color_named += v.color_named;
      sums.size_ok += v.size_ok;
      sums.size_named += v.size_named;
      sums.place_ok += v.place_ok;
      sums.place_named += v.place_named;
      if (spec.size() == 1 && v.found.size() == 1) add_open(spec[0], v.found[0], model_open);
    }
    sums.correct += correct;
    sums.count_ok += count_ok;
    ps.picture_accuracy = static_cast<double>(correct) / static_cast<double>(n);
    ps.count_accuracy = static_cast<double>(count_ok) / static_cast<double>(n);
    if (spec.size() == 1 && (!spec[0].color || !spec[0].size || !spec[0].place)) {
      // Colour, size and place do not depend on the shape classifier: the geometric rule is
      // enough here.
      ground_truth(prompt, n * kReferenceDraws, truth);
      OpenEntropies reference;
      for (int64_t d = 0; d < kReferenceDraws; ++d) {
        OpenHistograms truth_open;
        for (int64_t i = d * n; i < (d + 1) * n; ++i) {
          const auto found = find_objects(truth.data() + i * kImageFloats);
          if (found.size() == 1) add_open(spec[0], found[0], truth_open);
        }
        const OpenEntropies e = entropies_of(truth_open);
        reference.color += e.color / kReferenceDraws;
        reference.size += e.size / kReferenceDraws;
        reference.place += e.place / kReferenceDraws;
      }
      open_ratios(spec[0], model_open, reference, ps);
      sums.open.add(ps.open_entropy);
      sums.color.add(ps.color_entropy);
      sums.size.add(ps.size_entropy);
      sums.place.add(ps.place_entropy);
    }
    out.prompts.push_back(ps);
  }
  out.seen = seen.scores();
  out.held_out = held.scores();
  return out;
}

PictureSource ground_truth_source(uint64_t seed) {
  auto gen = std::make_shared<Generator>(seed);
  return [gen](const std::string& prompt, int64_t n, std::vector<float>& images) {
    SceneSampler sampler;
    const SceneSpec spec = parse_prompt(prompt);
    images.assign(static_cast<size_t>(n * kImageFloats), 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      render(sampler.sample_for_prompt(spec, *gen), images.data() + i * kImageFloats);
    }
  };
}

ScenesReport evaluate_scenes_report(const std::vector<std::string>& prompts, int64_t n,
                                    uint64_t seed, const PictureSource& generate,
                                    const ShapeClassifier& classify) {
  ScenesReport report;
  report.pictures_per_prompt = n;
  report.seed = seed;
  // Three ground-truth streams: the ceiling's pictures and the two entropy references.
  const uint64_t base = seed * 0x9E3779B97F4A7C15ULL;
  report.model =
      evaluate_scenes(prompts, n, generate, ground_truth_source(base ^ 0x51ULL), classify);
  report.ceiling = evaluate_scenes(prompts, n, ground_truth_source(base ^ 0xC0ULL),
                                   ground_truth_source(base ^ 0xC1ULL), classify);
  return report;
}

namespace {

nlohmann::json number_or_null(double value) {
  if (std::isnan(value) || value < 0) return nullptr;
  return value;
}

nlohmann::json split_json(const SplitScores& s) {
  return {{"prompts", s.prompts},
          {"pictures", s.pictures},
          {"picture_accuracy", number_or_null(s.picture_accuracy)},
          {"count_accuracy", number_or_null(s.count_accuracy)},
          {"shape_accuracy", number_or_null(s.shape_accuracy)},
          {"color_accuracy", number_or_null(s.color_accuracy)},
          {"size_accuracy", number_or_null(s.size_accuracy)},
          {"place_accuracy", number_or_null(s.place_accuracy)},
          {"open_entropy", number_or_null(s.open_entropy)},
          {"color_entropy", number_or_null(s.color_entropy)},
          {"size_entropy", number_or_null(s.size_entropy)},
          {"place_entropy", number_or_null(s.place_entropy)}};
}

nlohmann::json eval_json_of(const ScenesEval& e) {
  nlohmann::json prompts = nlohmann::json::array();
  for (const PromptScores& p : e.prompts) {
    prompts.push_back({{"prompt", p.prompt},
                       {"held_out", p.held_out},
                       {"pictures", p.pictures},
                       {"picture_accuracy", p.picture_accuracy},
                       {"count_accuracy", p.count_accuracy},
                       {"open_entropy", number_or_null(p.open_entropy)},
                       {"color_entropy", number_or_null(p.color_entropy)},
                       {"size_entropy", number_or_null(p.size_entropy)},
                       {"place_entropy", number_or_null(p.place_entropy)}});
  }
  return {{"seen", split_json(e.seen)}, {"held_out", split_json(e.held_out)}, {"prompts", prompts}};
}

// "0.912 (1.000)", or "-" for a score the split does not have.
std::string cell(double model, double ceiling) {
  if (std::isnan(model) || model < 0) return "    -        ";
  return fmt::format("{:.3f} ({:.3f})", model, ceiling);
}

}  // namespace

std::string scenes_eval_json(const ScenesReport& report,
                             const std::vector<std::pair<std::string, std::string>>& extra) {
  nlohmann::ordered_json j;
  for (const auto& [key, value] : extra) j[key] = nlohmann::ordered_json::parse(value);
  j["dataset"] = "scenes";
  j["pictures_per_prompt"] = report.pictures_per_prompt;
  j["seed"] = report.seed;
  j["model"] = eval_json_of(report.model);
  j["ceiling"] = eval_json_of(report.ceiling);
  return j.dump(2) + "\n";
}

std::string scenes_eval_table(const ScenesReport& report) {
  std::string out =
      fmt::format("{:<9} {:>7} {:>8}  {:<13}  {:<13}  {:<13}  {:<13}  {:<13}  {:<13}\n", "split",
                  "prompts", "pictures", "picture", "count", "shape", "color", "size", "place");
  const auto row = [&](const char* name, const SplitScores& m, const SplitScores& c) {
    out += fmt::format(
        "{:<9} {:>7} {:>8}  {}  {}  {}  {}  {}  {}\n", name, m.prompts, m.pictures,
        cell(m.picture_accuracy, c.picture_accuracy), cell(m.count_accuracy, c.count_accuracy),
        cell(m.shape_accuracy, c.shape_accuracy), cell(m.color_accuracy, c.color_accuracy),
        cell(m.size_accuracy, c.size_accuracy), cell(m.place_accuracy, c.place_accuracy));
  };
  row("seen", report.model.seen, report.ceiling.seen);
  row("held-out", report.model.held_out, report.ceiling.held_out);
  out += fmt::format("\nopen attributes, normalised entropy (1 = as even as the data)\n");
  out += fmt::format("{:<9} {:<13}  {:<13}  {:<13}  {:<13}\n", "split", "mean", "color", "size",
                     "place");
  const auto entropy_row = [&](const char* name, const SplitScores& m, const SplitScores& c) {
    out += fmt::format("{:<9} {}  {}  {}  {}\n", name, cell(m.open_entropy, c.open_entropy),
                       cell(m.color_entropy, c.color_entropy), cell(m.size_entropy, c.size_entropy),
                       cell(m.place_entropy, c.place_entropy));
  };
  entropy_row("seen", report.model.seen, report.ceiling.seen);
  entropy_row("held-out", report.model.held_out, report.ceiling.held_out);
  out +=
      fmt::format("\n{:<72} {:<8}  {:<13}  {:<13}\n", "prompt", "split", "picture", "open entropy");
  for (size_t i = 0; i < report.model.prompts.size(); ++i) {
    const PromptScores& m = report.model.prompts[i];
    const PromptScores& c = report.ceiling.prompts[i];
    out += fmt::format("{:<72} {:<8}  {}  {}\n", m.prompt, m.held_out ? "held-out" : "seen",
                       cell(m.picture_accuracy, c.picture_accuracy),
                       cell(m.open_entropy, c.open_entropy));
  }
  return out;
}

}  // namespace ink::scenes
