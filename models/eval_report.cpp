// evaluate(): samples, ground truth and the judge's view of both, turned into the score table.
#include "models/eval_report.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "models/eval_metrics.h"
#include "models/shapes.h"
#include "tensor/error.h"

namespace ink {
namespace {

// Independent streams drawn from the seed.
constexpr uint64_t kSampleStream = 0x5A3B1E5ULL;
constexpr uint64_t kReferenceStream = 0x2EFE2E9CEULL;
constexpr uint64_t kFreshStream = 0xF2E54ULL;

// The pictures and judge features of one set of pictures of one prompt.
struct PictureSet {
  std::vector<float> pixels;  // [N, 784]
  Judgement judgement;        // predicted [N], features [N, H]
  int64_t count = 0;
  FeatureRows pixel_rows() const { return {pixels.data(), count, kImagePixels}; }
  FeatureRows feature_rows() const { return {judgement.features.data(), count, judgement.dim}; }
};

PictureSet ground_truth(Judge& judge, int64_t prompt, int64_t n, Generator& gen) {
  PictureSet set;
  set.count = n;
  set.pixels.resize(static_cast<size_t>(n * kImagePixels));
  for (int64_t i = 0; i < n; ++i) draw_shape(prompt, gen, set.pixels.data() + i * kImagePixels);
  set.judgement = judge_pictures(judge, from_vector(set.pixels, {n, kImagePixels}));
  return set;
}

PictureSet model_samples(const PromptSampler& sampler, Judge& judge, int64_t prompt, int64_t n,
                         Generator& gen) {
  const Tensor images = sampler(prompt, n, gen);
  const std::string name(kShapePrompts[prompt]);
  INK_CHECK(
      images.defined() && images.dtype() == DType::Float32 && images.numel() == n * kImagePixels,
      "evaluate: the model returned {} for {} samples of \"{}\", expected Float32 [{}, 1, "
      "28, 28]",
      images.defined() ? shape_str(images.shape()) : "an undefined tensor", n, name, n);
  PictureSet set;
  set.count = n;
  set.pixels.assign(images.data(), images.data() + images.numel());
  for (size_t i = 0; i < set.pixels.size(); ++i) {
    INK_CHECK(std::isfinite(set.pixels[i]), "evaluate: sample {} of \"{}\" has a {} pixel",
              static_cast<int64_t>(i) / kImagePixels + 1, name, set.pixels[i]);
  }
  set.judgement = judge_pictures(judge, images);
  return set;
}

PromptScores score(const std::string& prompt, int64_t prompt_index, const PictureSet& samples,
                   const PictureSet& reference, int64_t k) {
  PromptScores s;
  s.prompt = prompt;
  s.fidelity = fidelity(samples.judgement.predicted, prompt_index);
  std::vector<int64_t> votes(kNumShapePrompts, 0);
  for (int64_t answer : samples.judgement.predicted) ++votes[answer];
  s.judged_as = kShapePrompts[std::max_element(votes.begin(), votes.end()) - votes.begin()];
  s.votes = votes;
  s.diversity = diversity(samples.pixel_rows(), reference.pixel_rows());
  s.frechet_distance = frechet_distance(reference.feature_rows(), samples.feature_rows());
  const PrecisionRecall pr = precision_recall(reference.feature_rows(), samples.feature_rows(), k);
  s.precision = pr.precision;
  s.recall = pr.recall;
  return s;
}

// The overall row: fidelity and diversity averaged over the prompt rows, the feature-space
// metrics over every picture pooled.
PromptScores overall(const std::vector<PromptScores>& rows, const std::vector<PictureSet>& samples,
                     const std::vector<PictureSet>& reference, int64_t k) {
  PromptScores s;
  s.prompt = "overall";
  for (const PromptScores& row : rows) {
    s.fidelity += row.fidelity / static_cast<double>(rows.size());
    s.diversity += row.diversity / static_cast<double>(rows.size());
  }
  const auto pool = [](const std::vector<PictureSet>& sets) {
    std::vector<float> features;
    for (const PictureSet& set : sets) {
      features.insert(features.end(), set.judgement.features.begin(), set.judgement.features.end());
    }
    return features;
  };
  const std::vector<float> pooled_samples = pool(samples);
  const std::vector<float> pooled_reference = pool(reference);
  const int64_t dim = samples.front().judgement.dim;
  const FeatureRows sample_rows{pooled_samples.data(),
                                static_cast<int64_t>(pooled_samples.size()) / dim, dim};
  const FeatureRows reference_rows{pooled_reference.data(),
                                   static_cast<int64_t>(pooled_reference.size()) / dim, dim};
  s.frechet_distance = frechet_distance(reference_rows, sample_rows);
  const PrecisionRecall pr = precision_recall(reference_rows, sample_rows, k);
  s.precision = pr.precision;
  s.recall = pr.recall;
  return s;
}

nlohmann::ordered_json scores_json(const PromptScores& s) {
  nlohmann::ordered_json j;
  j["prompt"] = s.prompt;
  j["fidelity"] = s.fidelity;
  j["diversity"] = s.diversity;
  j["frechet_distance"] = s.frechet_distance;
  j["precision"] = s.precision;
  j["recall"] = s.recall;
  if (!s.judged_as.empty()) j["judged_as"] = s.judged_as;
  if (!s.votes.empty()) {  // what the samples were taken for, most often first
    std::vector<size_t> order(s.votes.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return s.votes[a] > s.votes[b]; });
    nlohmann::ordered_json judged = nlohmann::ordered_json::object();
    for (size_t i : order) {
      if (s.votes[i] > 0) judged[std::string(kShapePrompts[i])] = s.votes[i];
    }
    j["judged"] = judged;
  }
  return j;
}

nlohmann::ordered_json table_json(const ScoreTable& table) {
  nlohmann::ordered_json j;
  j["prompts"] = nlohmann::ordered_json::array();
  for (const PromptScores& row : table.prompts) j["prompts"].push_back(scores_json(row));
  j["overall"] = scores_json(table.overall);
  return j;
}

}  // namespace

EvalResult evaluate(const PromptSampler& sampler, Judge& judge, const EvalOptions& options) {
  const int64_t n = options.samples_per_prompt;
  INK_CHECK(options.k >= 1 && n > options.k,
            "evaluate: {} samples per prompt are too few; precision and recall with k = {} "
            "neighbours need at least {}",
            n, options.k, options.k + 1);
  Generator sample_gen(options.seed ^ kSampleStream);
  Generator reference_gen(options.seed ^ kReferenceStream);
  Generator fresh_gen(options.seed ^ kFreshStream);
  EvalResult result;
  result.options = options;
  std::vector<PictureSet> samples, references, fresh;
  const int64_t kept = std::min(options.kept_pictures, n);
  for (int64_t p = 0; p < kNumShapePrompts; ++p) {
    const std::string prompt(kShapePrompts[p]);
    samples.push_back(model_samples(sampler, judge, p, n, sample_gen));
    references.push_back(ground_truth(judge, p, n, reference_gen));
    fresh.push_back(ground_truth(judge, p, n, fresh_gen));
    result.model.prompts.push_back(score(prompt, p, samples.back(), references.back(), options.k));
    result.ceiling.prompts.push_back(score(prompt, p, fresh.back(), references.back(), options.k));
    const auto first = [&](const PictureSet& set) {
      return std::vector<float>(set.pixels.begin(), set.pixels.begin() + kept * kImagePixels);
    };
    result.kept_samples.push_back(first(samples.back()));
    result.kept_ground_truth.push_back(first(references.back()));
  }
  result.model.overall = overall(result.model.prompts, samples, references, options.k);
  result.ceiling.overall = overall(result.ceiling.prompts, fresh, references, options.k);
  return result;
}

std::string eval_json(const EvalResult& result,
                      const std::vector<std::pair<std::string, std::string>>& extra) {
  nlohmann::ordered_json j;
  for (const auto& [key, value] : extra) j[key] = nlohmann::ordered_json::parse(value);
  j["samples_per_prompt"] = result.options.samples_per_prompt;
  j["seed"] = result.options.seed;
  j["k"] = result.options.k;
  j["model"] = table_json(result.model);
  j["ceiling"] = table_json(result.ceiling);
  return j.dump(2) + "\n";
}

std::string eval_table(const EvalResult& result) {
  std::string out = fmt::format("{:<20} {:>13} {:>13} {:>15} {:>13} {:>13}\n", "prompt", "fidelity",
                                "diversity", "FD", "precision", "recall");
  const auto line = [&](const PromptScores& m, const PromptScores& c) {
    out += fmt::format(
        "{:<20} {:>5.3f} ({:.3f}) {:>5.3f} ({:.3f}) {:>7.2f} ({:>5.2f}) {:>5.3f} "
        "({:.3f}) {:>5.3f} ({:.3f})\n",
        m.prompt, m.fidelity, c.fidelity, m.diversity, c.diversity, m.frechet_distance,
        c.frechet_distance, m.precision, c.precision, m.recall, c.recall);
  };
  for (size_t i = 0; i < result.model.prompts.size(); ++i) {
    line(result.model.prompts[i], result.ceiling.prompts[i]);
  }
  line(result.model.overall, result.ceiling.overall);
  return out;
}

}  // namespace ink
