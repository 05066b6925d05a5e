// The judge of `inkgrad eval`: a small CNN that names the prompt of a 28x28 picture, trained
// with inkgrad on augmented ground truth from the shape generators, so that it judges the
// shape and not the sharpness. Its penultimate features are the feature space of the Fréchet
// distance and of precision/recall (the FID recipe on a small network).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/module.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace ink {

// Legend used below: B = batch, C1, C2 = conv channels, H = hidden (feature) width,
// P = kNumShapePrompts.
struct JudgeConfig {
  int64_t channels1 = 16;  // C1
  int64_t channels2 = 32;  // C2
  int64_t hidden = 64;     // H, the feature width
  bool operator==(const JudgeConfig&) const = default;
};

// What this object represents: a 3x3 convolution with padding 1 and stride 1, with the
// parameters of torch.nn.Conv2d(in, out, 3, padding=1) (weight [out, in, 3, 3], bias [out], the
// same default initialisation), built from existing differentiable ops: the 3x3 patches are
// gathered with `embedding` (whose backward scatter-adds) and multiplied with `linear`.
// It stands in for nn::Conv2d until the conv2d op exists; the names and layout are the same, so
// a judge file loads into either.
class PatchConv3x3 : public nn::UnaryModule {
 public:
  PatchConv3x3(int64_t in_channels, int64_t out_channels, Generator* generator = nullptr);
  Tensor forward(const Tensor& input) override;  // [B, in, H, W] -> [B, out, H, W]
  std::string extra_repr() const override;

  Tensor weight;  // [out, in, 3, 3]
  Tensor bias;    // [out]

 private:
  int64_t in_channels_;
  int64_t out_channels_;
};

// The convolution PatchConv3x3 computes, as a function: input [B, C, H, W], weight [O, C, 3, 3],
// bias [O] -> [B, O, H, W] (stride 1, padding 1), as torch.nn.functional.conv2d.
Tensor patch_conv3x3(const Tensor& input, const Tensor& weight, const Tensor& bias);

// 2x2 average pooling with stride 2 from reshape and mean: [B, C, H, W] -> [B, C, H/2, W/2].
// H and W must be even.
Tensor average_pool_2x2(const Tensor& x);

// What this object represents: the judge network.
//   conv1 3x3 (1 -> C1), ReLU, 2x2 average pool   [B, C1, 14, 14]
//   conv2 3x3 (C1 -> C2), ReLU, 2x2 average pool  [B, C2, 7, 7]
//   flatten, fc1 Linear(C2 * 49, H), ReLU         [B, H]  = features()
//   fc2 Linear(H, P)                              [B, P]  = logits()
class Judge : public nn::Module {
 public:
  explicit Judge(const JudgeConfig& config = {}, Generator* generator = nullptr);

  Tensor features(const Tensor& images);  // [B, 1, 28, 28] -> [B, H]
  Tensor logits(const Tensor& images);    // [B, 1, 28, 28] -> [B, P]

  const JudgeConfig& config() const { return config_; }

  std::shared_ptr<PatchConv3x3> conv1;
  std::shared_ptr<PatchConv3x3> conv2;
  std::shared_ptr<nn::Linear> fc1;
  std::shared_ptr<nn::Linear> fc2;

 private:
  JudgeConfig config_;
};

// What the judge says about a set of pictures, computed in batches in eval mode under no-grad.
struct Judgement {
  std::vector<int64_t> predicted;  // [N] prompt index of the largest logit
  std::vector<float> features;     // [N, H] row-major
  int64_t dim = 0;                 // H
};
// images: [N, 1, 28, 28] (or [N, 784]) Float32. Restores the judge's train/eval mode.
Judgement judge_pictures(Judge& judge, const Tensor& images);

// Cross-entropy of logits [B, K] against class indices (Int64 [B]), averaged over the batch, as
// torch.nn.functional.cross_entropy. Computed as a numerically stable log-softmax from
// differentiable ops.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels);

// The augmentation the judge is trained with, in place on one 28x28 picture in [0, 1]:
// a Gaussian blur (half the time, sigma in [0.3, 1.6]: soft renderings), a contrast change
// (scale in [0.1, 1], or half the time stretched so that the maximum is 1), a background
// offset in [0, 0.15], Gaussian noise (half the time, sigma up to 0.08), clamped to [0, 1].
void augment_picture(float* image, Generator& gen);

struct JudgeTrainConfig {
  JudgeConfig judge;
  int64_t steps = 2000;
  int64_t pictures_per_prompt = 8;  // each batch: this many fresh pictures of every prompt
  double lr = 2e-3;                 // Adam, cosine decay to 5% over the steps
  uint64_t seed = 1234;
};

struct JudgeProgress {
  int64_t step = 0;  // 1-based
  int64_t steps = 0;
  float loss = 0.0f;
};

// Trains a judge from scratch: every step draws fresh augmented pictures from `seed`, so the
// result is the same for the same config (and at any thread count).
std::unique_ptr<Judge> train_judge(const JudgeTrainConfig& config,
                                   const std::function<void(const JudgeProgress&)>& on_step = {});

// The judge's accuracy on `per_prompt` fresh pictures of every prompt drawn from `seed`
// (augmented when `augmented`).
double judge_accuracy(Judge& judge, int64_t per_prompt, uint64_t seed, bool augmented = false);

// Judge files: safetensors with the parameters and the metadata
//   {"format": "pt", "kind": "judge", "config": {"channels1": .., "channels2": .., "hidden": ..}
//    as JSON, and any `extra` entries (the recipe, the accuracy)}.
inline constexpr const char* kJudgeKind = "judge";
void save_judge(const std::string& path, const Judge& judge,
                const std::map<std::string, std::string>& extra = {});
// Throws ink::Error naming the path when the file is missing, is not a judge (another kind of
// checkpoint), or does not match its config.
std::unique_ptr<Judge> load_judge(const std::string& path);

// What both judges' files share (this one and the scenes judge's shape net): "format": "pt",
// "kind" and "config" metadata beside the parameters. `what` names the kind in messages
// ("judge", "scenes judge").
void save_judge_file(const std::string& path, const nn::Module& net, const char* kind,
                     const std::string& config, const std::map<std::string, std::string>& extra);
// The config text of a judge file of `kind`; throws ink::Error naming the path when the file is
// missing, has another kind or no config.
struct JudgeFile {
  NamedTensors tensors;
  std::string config;  // the "config" metadata, JSON text
};
JudgeFile read_judge_file(const std::string& path, const char* kind, const std::string& what);
// Loads the file's tensors strictly into `net` (an error names the config) and sets eval mode.
void load_judge_weights(nn::Module& net, const JudgeFile& file, const std::string& path,
                        const std::string& what);

}  // namespace ink
