// The scenes judge: components, attributes and the GenEval matching rule.
#include "models/scenes_judge.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tensor/error.h"

namespace ink::scenes {

namespace {

float brightness_at(const float* image, int64_t p) {
  return std::max({image[p], image[kPixels + p], image[2 * kPixels + p]});
}

Color nearest_color(const std::array<float, 3>& rgb) {
  const float peak = std::max({rgb[0], rgb[1], rgb[2], 1e-6f});
  int best = 0;
  float best_distance = std::numeric_limits<float>::max();
  for (int c = 0; c < kNumColors; ++c) {
    const auto& p = kPalette[static_cast<size_t>(c)];
    const float p_peak = std::max({p[0], p[1], p[2]});
    float d = 0.0f;
    for (int k = 0; k < 3; ++k) {
      const float diff = rgb[k] / peak - p[k] / p_peak;
      d += diff * diff;
    }
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return static_cast<Color>(best);
}

int cell_of(double centre) {
  return centre < 12.0 ? 0 : (centre < 20.0 ? 1 : 2);
}

bool matches(const ObjectSpec& s, const FoundObject& f) {
  return s.shape == f.shape && (!s.color || *s.color == f.color) &&
         (!s.size || *s.size == f.size) && (!s.place || *s.place == f.place);
}

}  // namespace

void object_crop(const float* image, const FoundObject& object, const std::vector<int>& labels,
                 int label, float* crop) {
  std::fill(crop, crop + kCropSide * kCropSide, 0.0f);
  const int w = object.x1 - object.x0, h = object.y1 - object.y0;
  const int side = std::max(w, h);
  float peak = 1e-6f;
  for (int y = object.y0; y < object.y1; ++y) {
    for (int x = object.x0; x < object.x1; ++x) {
      if (labels[static_cast<size_t>(y * kSide + x)] == label) {
        peak = std::max(peak, brightness_at(image, y * kSide + x));
      }
    }
  }
  // The box sits centred in a side x side square, which is scaled onto the crop.
  const double ox = object.x0 - (side - w) / 2.0, oy = object.y0 - (side - h) / 2.0;
  for (int64_t cy = 0; cy < kCropSide; ++cy) {
    for (int64_t cx = 0; cx < kCropSide; ++cx) {
      const int x = static_cast<int>(std::floor(ox + (cx + 0.5) * side / kCropSide));
      const int y = static_cast<int>(std::floor(oy + (cy + 0.5) * side / kCropSide));
      if (x < object.x0 || x >= object.x1 || y < object.y0 || y >= object.y1) continue;
      if (labels[static_cast<size_t>(y * kSide + x)] != label) continue;
      crop[cy * kCropSide + cx] = brightness_at(image, y * kSide + x) / peak;
    }
  }
}

ShapeKind classify_shape_by_geometry(const float* crop) {
  // Fill of the top and bottom quarters and of the four corner cells (q x q each). Measured on
  // clean renderings: a square fills >= 0.75 of its corners, a circle 0.25..0.5, a triangle
  // 0.3..0.4 and a cross none; a triangle fills <= 0.28 of its top and >= 0.69 of its bottom,
  // a circle >= 0.5 of both.
  const int64_t n = kCropSide, q = kCropSide / 4;
  double top = 0, bottom = 0, corners = 0;
  for (int64_t y = 0; y < n; ++y) {
    for (int64_t x = 0; x < n; ++x) {
      const bool on = crop[y * n + x] > 0.5f;
      if (y < q) top += on;
      if (y >= n - q) bottom += on;
      const bool corner = (x < q || x >= n - q) && (y < q || y >= n - q);
      if (corner) corners += on;
    }
  }
  top /= static_cast<double>(q * n);
  bottom /= static_cast<double>(q * n);
  corners /= static_cast<double>(4 * q * q);
  if (corners >= 0.65) return ShapeKind::square;
  if (corners <= 0.12) return ShapeKind::cross;
  if (top <= 0.4 && bottom >= 0.6) return ShapeKind::triangle;
  return ShapeKind::circle;
}

std::vector<FoundObject> find_objects(const float* image, const ShapeClassifier& classify,
                                      const JudgeOptions& options) {
  std::vector<int> labels(static_cast<size_t>(kPixels), -1);
  std::vector<FoundObject> found;
  std::vector<int> stack;
  int next_label = 0;
  for (int64_t start = 0; start < kPixels; ++start) {
    if (labels[static_cast<size_t>(start)] != -1 ||
        brightness_at(image, start) <= options.threshold) {
      continue;
    }
    // Flood fill over 8-neighbours.
    const int label = next_label++;
    FoundObject o;
    o.x0 = o.y0 = std::numeric_limits<int>::max();
    o.x1 = o.y1 = std::numeric_limits<int>::min();
    stack.assign(1, static_cast<int>(start));
    labels[static_cast<size_t>(start)] = label;
    while (!stack.empty()) {
      const int p = stack.back();
      stack.pop_back();
      const int x = p % kSide, y = p / kSide;
      ++o.pixels;
      for (int c = 0; c < 3; ++c) o.mean_rgb[c] += image[c * kPixels + p];
      o.x0 = std::min(o.x0, x);
      o.y0 = std::min(o.y0, y);
      o.x1 = std::max(o.x1, x + 1);
      o.y1 = std::max(o.y1, y + 1);
      for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
          const int nx = x + dx, ny = y + dy;
          if (nx < 0 || ny < 0 || nx >= kSide || ny >= kSide) continue;
          const int q = ny * static_cast<int>(kSide) + nx;
          if (labels[static_cast<size_t>(q)] != -1 ||
              brightness_at(image, q) <= options.threshold) {
            continue;
          }
          labels[static_cast<size_t>(q)] = label;
          stack.push_back(q);
        }
      }
    }
    if (o.pixels < options.min_pixels) continue;
    for (float& v : o.mean_rgb) v /= static_cast<float>(o.pixels);
    o.color = nearest_color(o.mean_rgb);
    o.size = o.extent() <= 9 ? Size::small : Size::large;
    o.place = Place{cell_of((o.x0 + o.x1) / 2.0), cell_of((o.y0 + o.y1) / 2.0)};
    std::vector<float> crop(static_cast<size_t>(kCropSide * kCropSide));
    object_crop(image, o, labels, label, crop.data());
    o.shape = classify ? classify(crop.data()) : classify_shape_by_geometry(crop.data());
    found.push_back(o);
  }
  return found;
}

Verdict judge(const SceneSpec& spec, const std::vector<FoundObject>& found) {
  INK_CHECK(spec.size() == 1 || spec.size() == 2,
            "scenes judge: a prompt names 1 or 2 objects, "
            "got {}",
            spec.size());
  Verdict v;
  v.found = found;
  v.count_ok = found.size() == spec.size();
  for (const ObjectSpec& s : spec) {
    ++v.shape_named;
    v.color_named += s.color.has_value();
    v.size_named += s.size.has_value();
    v.place_named += s.place.has_value();
  }
  // The assignment of found objects to prompted ones (each found object used once) that gets
  // the most attributes right; -1 stands for "no object", so a missing one still lets the rest
  // count. At most two objects are prompted, so trying every pair is cheap.
  const int n = static_cast<int>(found.size());
  const auto score_of = [&](const std::vector<int>& pick) {
    Verdict c = v;
    bool all_match = v.count_ok;
    for (size_t k = 0; k < spec.size(); ++k) {
      if (pick[k] < 0) {
        all_match = false;
        continue;
      }
      const ObjectSpec& s = spec[k];
      const FoundObject& f = found[static_cast<size_t>(pick[k])];
      c.shape_ok += s.shape == f.shape;
      c.color_ok += s.color && *s.color == f.color;
      c.size_ok += s.size && *s.size == f.size;
      c.place_ok += s.place && *s.place == f.place;
      all_match = all_match && matches(s, f);
    }
    c.correct = all_match;
    return c;
  };
  int best_score = -1;
  Verdict best = v;
  const auto consider = [&](const std::vector<int>& pick) {
    const Verdict c = score_of(pick);
    const int score = c.shape_ok + c.color_ok + c.size_ok + c.place_ok + (c.correct ? 100 : 0);
    if (score > best_score) {
      best_score = score;
      best = c;
    }
  };
  for (int i = -1; i < n; ++i) {
    if (spec.size() == 1) {
      consider({i});
      continue;
    }
    for (int j = -1; j < n; ++j) {
      if (i >= 0 && i == j) continue;
      consider({i, j});
    }
  }
  return best;
}

}  // namespace ink::scenes
