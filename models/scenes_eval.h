// Measuring a scenes model: the fixed evaluation prompts (seen and held-out) and the scores the
// judge gives a set of pictures for each: picture accuracy, per-attribute accuracy, and how
// evenly the attributes a prompt leaves open are spread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
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
  // NaN when the split has no such prompt).
  double open_entropy = 0;
};

struct PromptScores {
  std::string prompt;
  bool held_out = false;
  int64_t pictures = 0;
  double picture_accuracy = 0;
  double open_entropy = -1;  // -1 when the prompt leaves nothing open
};

struct ScenesEval {
  SplitScores seen, held_out;
  std::vector<PromptScores> prompts;
};

// Draws `n` pictures of each prompt with `generate(prompt, n, images)` (images: n x kImageFloats
// floats, values in [0, 1]) and judges them; `ground_truth(prompt, n, images)` gives the
// reference pictures used for the open-attribute entropies. `classify` names shapes (the
// geometric rule when empty).
using PictureSource =
    std::function<void(const std::string& prompt, int64_t n, std::vector<float>& images)>;
ScenesEval evaluate_scenes(const std::vector<std::string>& prompts, int64_t n,
                           const PictureSource& generate, const PictureSource& ground_truth,
                           const ShapeClassifier& classify = {});

// A PictureSource of ground truth: SceneSampler::sample_for_prompt rendered, seeded.
PictureSource ground_truth_source(uint64_t seed);

}  // namespace ink::scenes
