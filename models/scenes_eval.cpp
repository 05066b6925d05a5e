// Scenes evaluation: the prompt list and the aggregation of the judge's verdicts.
#include "models/scenes_eval.h"

#include <cmath>
#include <map>
#include <memory>

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

// Mean over the open attributes of entropy(samples) / entropy(ground truth).
double open_ratio(const ObjectSpec& spec, const OpenHistograms& model,
                  const OpenHistograms& truth) {
  double sum = 0;
  int n = 0;
  const auto ratio = [&](const std::map<int, int64_t>& m, const std::map<int, int64_t>& t) {
    const double ht = entropy(t);
    if (ht <= 0) return;
    sum += entropy(m) / ht;
    ++n;
  };
  if (!spec.color) ratio(model.color, truth.color);
  if (!spec.size) ratio(model.size, truth.size);
  if (!spec.place) ratio(model.place, truth.place);
  return n == 0 ? -1.0 : sum / n;
}

struct SplitSums {
  int64_t pictures = 0, correct = 0, count_ok = 0;
  int64_t shape_ok = 0, shape_named = 0, color_ok = 0, color_named = 0;
  int64_t size_ok = 0, size_named = 0, place_ok = 0, place_named = 0;
  double entropy_sum = 0;
  int64_t entropy_prompts = 0;

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
    s.open_entropy = entropy_prompts == 0 ? std::nan("") : entropy_sum / entropy_prompts;
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
    int64_t correct = 0;
    OpenHistograms model_open, truth_open;
    for (int64_t i = 0; i < n; ++i) {
      const Verdict v = judge(spec, find_objects(images.data() + i * kImageFloats, classify));
      ++sums.pictures;
      correct += v.correct;
      sums.count_ok += v.count_ok;
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
    ps.picture_accuracy = static_cast<double>(correct) / static_cast<double>(n);
    if (spec.size() == 1 && (!spec[0].color || !spec[0].size || !spec[0].place)) {
      ground_truth(prompt, n, truth);
      for (int64_t i = 0; i < n; ++i) {
        const auto found = find_objects(truth.data() + i * kImageFloats, classify);
        if (found.size() == 1) add_open(spec[0], found[0], truth_open);
      }
      ps.open_entropy = open_ratio(spec[0], model_open, truth_open);
      if (ps.open_entropy >= 0) {
        sums.entropy_sum += ps.open_entropy;
        ++sums.entropy_prompts;
      }
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

}  // namespace ink::scenes
