// Measuring a scenes model: the fixed evaluation prompts (seen and held-out) and the scores the
// judge gives a set of pictures for each: picture accuracy, per-attribute accuracy, and how
// evenly the attributes a prompt leaves open are spread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "models/scenes.h"
#include "models/scenes_judge.h"

namespace ink::scenes {

// The evaluation prompts, fixed and committed here: single objects fully named, single objects
// with attributes left open, two-object prompts, and every held-out combination several times.
// A prompt is "held-out" when it names a held-out combination (names_held_out).
const std::vector<std::string>& eval_prompts();

struct SplitScores {
  int64_t pictures = 0;
  double picture_accuracy = 0;  // GenEval: right count and every named attribute right
  double count_accuracy = 0;
  double shape_accuracy = 0, color_accuracy = 0, size_accuracy = 0, place_accuracy = 0;
  // Over prompts that leave an attribute open: the entropy of that attribute among the judged
  // samples divided by its entropy in ground truth for the same prompt (1 = as even as the data;
  // NaN when the split has no such prompt). open_entropy is the mean over prompts of each
  // prompt's mean over its open attributes; the others are per attribute, over the prompts that
  // leave it open.
  double open_entropy = 0;
  double color_entropy = 0, size_entropy = 0, place_entropy = 0;
  int64_t prompts = 0;
};

struct PromptScores {
  std::string prompt;
  bool held_out = false;
  int64_t pictures = 0;
  double picture_accuracy = 0;
  double count_accuracy = 0;
  double open_entropy = -1;  // -1 when the prompt leaves nothing open
  // Per open attribute, -1 when the prompt names it (or it is a two-object prompt).
  double color_entropy = -1, size_entropy = -1, place_entropy = -1;
};

struct ScenesEval {
  SplitScores seen, held_out;
  std::vector<PromptScores> prompts;
};

// Draws `n` pictures of each prompt with `generate(prompt, n, images)` (images: n x kImageFloats
// floats, values in [0, 1]) and judges them; `ground_truth(prompt, 8 n, images)` gives the
// reference pictures of the open-attribute entropies (the reference is the mean entropy of its
// eight draws of n, so that it has the same small-sample bias as the model's n pictures).
// `classify` names shapes (the geometric rule when empty).
using PictureSource =
    std::function<void(const std::string& prompt, int64_t n, std::vector<float>& images)>;
ScenesEval evaluate_scenes(const std::vector<std::string>& prompts, int64_t n,
                           const PictureSource& generate, const PictureSource& ground_truth,
                           const ShapeClassifier& classify = {});

// A PictureSource of ground truth: SceneSampler::sample_for_prompt rendered, seeded.
PictureSource ground_truth_source(uint64_t seed);

// The model's scores beside the ground-truth ceiling (the same prompts, real pictures through the
// same judge).
struct ScenesReport {
  int64_t pictures_per_prompt = 0;
  uint64_t seed = 0;
  ScenesEval model;
  ScenesEval ceiling;
};

// Scores `generate` and the ceiling on `prompts` with `n` pictures each. The streams drawn from
// `seed` (ceiling pictures, and the two ground-truth references of the entropies) are
// independent of each other and of `generate`'s.
ScenesReport evaluate_scenes_report(const std::vector<std::string>& prompts, int64_t n,
                                    uint64_t seed, const PictureSource& generate,
                                    const ShapeClassifier& classify = {});

// The entries of `extra` (JSON values in text, e.g. {"checkpoint",
// "\"runs/x/model.safetensors\""}), then {"dataset": "scenes", "pictures_per_prompt", "seed",
// "model": {"seen": {...}, "held_out": {...}, "prompts": [...]}, "ceiling": {...}} with every score
// by its name in SplitScores and PromptScores (NaN and the -1 of "nothing open" as null); these
// keys win over `extra`'s.
std::string scenes_eval_json(const ScenesReport& report,
                             const std::vector<std::pair<std::string, std::string>>& extra = {});

// The tables as text: per split, picture accuracy, count, shape, colour, size and place accuracy
// and the open attributes' normalised entropies, each as "model (ceiling)"; then per prompt.
std::string scenes_eval_table(const ScenesReport& report);

}  // namespace ink::scenes
