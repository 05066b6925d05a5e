// The scenes judge: reads the objects out of a 32x32 RGB picture (connected components of bright
// pixels) and says, GenEval-style, whether the picture is what its prompt asked for.
//
// For each object found: the shape comes from a classifier of its crop (a small CNN in practice,
// any function here), the colour is the nearest palette colour after normalising brightness,
// the size is small or large by the extent of its box, and the place is the grid cell of its
// box's centre (the box centre is the object's centre for every shape, where the pixel
// centroid of a triangle sits low).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "models/scenes.h"

namespace ink::scenes {

// A component of bright pixels.
struct FoundObject {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // box, ends exclusive
  int pixels = 0;
  std::array<float, 3> mean_rgb = {0, 0, 0};
  ShapeKind shape = ShapeKind::square;
  Color color = Color::white;
  Size size = Size::small;
  Place place;
  int extent() const { return std::max(x1 - x0, y1 - y0); }
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
  // Per attribute, over the prompted objects matched in the best assignment: how many of the
  // named ones were right, and how many were named.
  int shape_ok = 0, shape_named = 0;
  int color_ok = 0, color_named = 0;
  int size_ok = 0, size_named = 0;
  int place_ok = 0, place_named = 0;
  std::vector<FoundObject> found;
};

Verdict judge(const SceneSpec& spec, const std::vector<FoundObject>& found);

}  // namespace ink::scenes
