// Scoring a text-to-image model per prompt: draws samples and ground truth, asks the judge about
// both, and computes the metrics of models/eval_metrics.h for the model's samples and, as the
// ceiling, for a fresh draw of ground truth. Independent of any network class: the model comes
// in as a sampling function.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/judge.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace ink {

// n pictures of prompt `prompt_index` (into kShapePrompts): Float32 [n, 1, 28, 28] or [n, 784],
// values in [0, 1], drawing its randomness from `generator`.
using PromptSampler = std::function<Tensor(int64_t prompt_index, int64_t n, Generator& generator)>;

// One row of the table.
struct PromptScores {
  std::string prompt;             // "overall" for the summary row
  double fidelity = 0.0;          // share of samples the judge names as the prompt
  double diversity = 0.0;         // mean pairwise pixel distance / that of ground truth
  double frechet_distance = 0.0;  // between Gaussian fits of judge features
  double precision = 0.0;         // share of samples on the ground truth's feature manifold
  double recall = 0.0;            // share of ground truth on the samples' feature manifold
  std::string judged_as;          // the judge's most frequent answer for the samples
  std::vector<int64_t> votes;     // per kShapePrompts entry, how many samples were judged it
};

// The nine prompt rows in kShapePrompts order, then the overall row: fidelity and diversity
// averaged over the prompts; FD, precision and recall over all pictures pooled.
struct ScoreTable {
  std::vector<PromptScores> prompts;
  PromptScores overall;
};

struct EvalOptions {
  int64_t samples_per_prompt = 256;
  uint64_t seed = 0;
  int64_t k = 3;              // neighbours for precision and recall
  int64_t kept_pictures = 8;  // per prompt, kept in EvalResult for figures
};

struct EvalResult {
  EvalOptions options;
  ScoreTable model;    // the model's samples against ground truth
  ScoreTable ceiling;  // a fresh draw of ground truth against the same ground truth
  // Per prompt, the first kept_pictures samples and ground-truth pictures, each
  // [kept_pictures * 784] row-major.
  std::vector<std::vector<float>> kept_samples;
  std::vector<std::vector<float>> kept_ground_truth;
};

// The streams drawn from options.seed: the samples, the reference ground truth, and the fresh
// ground truth of the ceiling are independent of each other.
// Throws ink::Error when samples_per_prompt <= k (precision and recall need more points than
// neighbours), when the sampler returns the wrong shape, or a sample is NaN or infinite.
EvalResult evaluate(const PromptSampler& sampler, Judge& judge, const EvalOptions& options);

// The result as JSON text: {"samples_per_prompt", "seed", "k", "model": {"prompts": [...],
// "overall": {...}}, "ceiling": {...}} with every score by its name above, plus the entries of
// `extra` (JSON values, e.g. {"checkpoint": "\"runs/latest/model.safetensors\""}).
std::string eval_json(const EvalResult& result,
                      const std::vector<std::pair<std::string, std::string>>& extra = {});

// The table as text, the model's number with the ceiling beside it in each column.
std::string eval_table(const EvalResult& result);

}  // namespace ink
