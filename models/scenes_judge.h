// The scenes judge: reads the objects out of a 32x32 RGB picture (connected components of bright
// pixels) and says, GenEval-style, whether the picture is what its prompt asked for.
//
// For each object found: the shape comes from a classifier of its crop (the small CNN ShapeNet
// below in eval, any function here), the colour is the nearest palette colour after normalising
// brightness, the size is small or large by the extent of its box, and the place is the grid cell
// of its box's centre (the box centre is the object's centre for every shape, where the pixel
// centroid of a triangle sits low).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/scenes.h"
#include "nn/conv.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace ink::scenes {

// The largest extent of a component that can be one object (see FoundObject::oversized).
inline constexpr int kMaxObjectExtent = 16;

// A component of bright pixels.
struct FoundObject {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // box, ends exclusive
  int pixels = 0;
  std::array<float, 3> mean_rgb = {0, 0, 0};
  ShapeKind shape = ShapeKind::square;
  Color color = Color::white;
  Size size = Size::small;
  Place place;
  std::vector<float> crop;  // [kCropSide * kCropSide], what the shape classifier saw
  int extent() const { return std::max(x1 - x0, y1 - y0); }
  // Wider or taller than any object of the scenes world (13 px, about 15 blurred): a blob (a
  // noisy picture lit all over, two objects run together). It counts as an object but matches no
  // prompted one, whatever its attributes.
  bool oversized() const { return extent() > kMaxObjectExtent; }
};

// The crop of one object, for the shape classifier: the object's box in a kCropSide x kCropSide
// grayscale square (brightness = max over channels, scaled to a peak of 1), the box centred and
// scaled to fill the crop along its longer side (nearest-neighbour), other pixels of the picture
// masked out.
inline constexpr int64_t kCropSide = 16;
void object_crop(const float* image, const FoundObject& object, const std::vector<int>& labels,
                 int label, float* crop);

using ShapeClassifier = std::function<ShapeKind(const float* crop)>;

struct JudgeOptions {
  float threshold = 0.3f;  // a pixel is bright when its largest channel exceeds this
  int min_pixels = 8;      // smaller components are specks, ignored
};

// Finds the objects of `image` ([3, 32, 32], channel-major) and names their attributes.
// With no classifier, shapes are told apart by their box fill (a geometric rule that is exact on
// clean renderings; the CNN is what eval uses).
std::vector<FoundObject> find_objects(const float* image, const ShapeClassifier& classify = {},
                                      const JudgeOptions& options = {});

// The geometric shape rule on a crop: fill of the whole box, of its bottom rows and of its
// corners.
ShapeKind classify_shape_by_geometry(const float* crop);

// What the judge says of one picture against its prompt.
struct Verdict {
  bool count_ok = false;  // as many objects as the prompt names
  bool correct = false;   // count_ok and each prompted object matched, every named attribute
                          // (an oversized component matches nothing and scores no attribute)
  // Per attribute, over the prompted objects matched in the best assignment: how many of the
  // named ones were right, and how many were named.
  int shape_ok = 0, shape_named = 0;
  int color_ok = 0, color_named = 0;
  int size_ok = 0, size_named = 0;
  int place_ok = 0, place_named = 0;
  std::vector<FoundObject> found;
};

Verdict judge(const SceneSpec& spec, const std::vector<FoundObject>& found);

// ---- the shape classifier: a small CNN on the crops ----

// Legend: B = batch, C1, C2 = conv channels, H = hidden width, S = kCropSide (16).
struct ShapeNetConfig {
  int64_t channels1 = 16;  // C1
  int64_t channels2 = 32;  // C2
  int64_t hidden = 64;     // H
  bool operator==(const ShapeNetConfig&) const = default;
};

// What this object represents: the judge's shape classifier.
//   conv1 3x3 pad 1 (1 -> C1), ReLU, 2x2 average pool   [B, C1, 8, 8]
//   conv2 3x3 pad 1 (C1 -> C2), ReLU, 2x2 average pool  [B, C2, 4, 4]
//   flatten, fc1 Linear(C2 * 16, H), ReLU               [B, H]
//   fc2 Linear(H, 4)                                    [B, 4] logits in kShapeNames order
class ShapeNet : public nn::Module {
 public:
  explicit ShapeNet(const ShapeNetConfig& config = {}, Generator* generator = nullptr);
  Tensor logits(const Tensor& crops);  // [B, 1, S, S] or [B, S * S] -> [B, 4]
  const ShapeNetConfig& config() const { return config_; }

  std::shared_ptr<nn::Conv2d> conv1;
  std::shared_ptr<nn::Conv2d> conv2;
  std::shared_ptr<nn::Linear> fc1;
  std::shared_ptr<nn::Linear> fc2;

 private:
  ShapeNetConfig config_;
};

// The shapes of n crops (n * kCropSide^2 floats), in batches, in eval mode under no-grad
// (the net's train/eval mode is restored).
std::vector<ShapeKind> classify_crops(ShapeNet& net, const float* crops, int64_t n);
// A ShapeClassifier that asks `net` (which must outlive it) about one crop at a time.
ShapeClassifier shape_classifier(ShapeNet& net);

// The augmentation the classifier is trained with, in place on one picture (kImageFloats, values
// in [0, 1]) before its objects are found: half the time a Gaussian blur (sigma in [0.3, 1.3]:
// soft generations), a brightness scale in [0.55, 1.1], a background offset in [0, 0.08] and,
// half the time, Gaussian noise (sigma up to 0.06), clamped to [0, 1].
void augment_scene(float* image, Generator& gen);

// One training crop: a single object with every attribute uniform (extent uniform in 5..14, all
// colours, shapes and places, held-out combinations included: this is the judge, not the model)
// rendered, augmented when `augmented`, and cut out as find_objects does (the largest
// component). Returns its shape; the crop is kCropSide^2 floats.
ShapeKind draw_training_crop(Generator& gen, bool augmented, float* crop);

struct ShapeNetTrainConfig {
  ShapeNetConfig net;
  int64_t steps = 1500;
  int64_t batch = 64;
  double lr = 2e-3;  // Adam, cosine decay to 5% over the steps
  uint64_t seed = 1234;
};

struct ShapeNetProgress {
  int64_t step = 0;  // 1-based
  int64_t steps = 0;
  float loss = 0.0f;
};

// Trains a ShapeNet from scratch on fresh augmented crops drawn from `seed`: the same config gives
// the same weights (at any thread count).
std::unique_ptr<ShapeNet> train_shape_net(
    const ShapeNetTrainConfig& config,
    const std::function<void(const ShapeNetProgress&)>& on_step = {});

// The share of `n` fresh crops from `seed` (a stream training never uses) that `net` names
// right; clean ground truth, or augmented when `augmented`.
double shape_net_accuracy(ShapeNet& net, int64_t n, uint64_t seed, bool augmented = false);

// Scenes judge files: safetensors with the ShapeNet parameters and the metadata
//   {"format": "pt", "kind": "scenes_judge", "config": {"channels1", "channels2", "hidden"} as
//    JSON, and any `extra` entries (the recipe, the accuracy)}.
inline constexpr const char* kScenesJudgeKind = "scenes_judge";
void save_shape_net(const std::string& path, const ShapeNet& net,
                    const std::map<std::string, std::string>& extra = {});
// Throws ink::Error naming the path when the file is missing, is not a scenes judge, or does not
// match its config.
std::unique_ptr<ShapeNet> load_shape_net(const std::string& path);

}  // namespace ink::scenes
