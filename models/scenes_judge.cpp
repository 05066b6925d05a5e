// The scenes judge: components, attributes, the GenEval matching rule, and the shape CNN with
// its augmented training and its file format.
#include "models/scenes_judge.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "models/judge.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "tensor/autograd.h"
#include "tensor/error.h"
#include "tensor/ops.h"

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
  return !f.oversized() && s.shape == f.shape && (!s.color || *s.color == f.color) &&
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
    o.crop.assign(static_cast<size_t>(kCropSide * kCropSide), 0.0f);
    object_crop(image, o, labels, label, o.crop.data());
    o.shape = classify ? classify(o.crop.data()) : classify_shape_by_geometry(o.crop.data());
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
      if (f.oversized()) {  // a blob: no attribute of it counts
        all_match = false;
        continue;
      }
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

// ---- ShapeNet ----

namespace {

constexpr int64_t kCropPixels = kCropSide * kCropSide;

// Each channel blurred with a normalised Gaussian of `sigma` along rows, then columns; outside
// the picture counts as 0.
void blur_scene(float* image, float sigma) {
  constexpr int kRadius = 3;
  float kernel[2 * kRadius + 1];
  float total = 0.0f;
  for (int i = -kRadius; i <= kRadius; ++i) {
    kernel[i + kRadius] = std::exp(-0.5f * static_cast<float>(i * i) / (sigma * sigma));
    total += kernel[i + kRadius];
  }
  for (float& k : kernel) k /= total;
  std::vector<float> buffer(static_cast<size_t>(kPixels));
  for (int64_t c = 0; c < kChannels; ++c) {
    float* plane = image + c * kPixels;
    for (int pass = 0; pass < 2; ++pass) {  // pass 0 along x, pass 1 along y
      const int64_t step = pass == 0 ? 1 : kSide;
      for (int64_t y = 0; y < kSide; ++y) {
        for (int64_t x = 0; x < kSide; ++x) {
          const int64_t along = pass == 0 ? x : y;
          float sum = 0.0f;
          for (int i = -kRadius; i <= kRadius; ++i) {
            if (along + i < 0 || along + i >= kSide) continue;
            sum += kernel[i + kRadius] * plane[y * kSide + x + i * step];
          }
          buffer[static_cast<size_t>(y * kSide + x)] = sum;
        }
      }
      std::copy(buffer.begin(), buffer.end(), plane);
    }
  }
}

std::string net_config_json(const ShapeNetConfig& config) {
  return fmt::format(R"({{"channels1": {}, "channels2": {}, "hidden": {}}})", config.channels1,
                     config.channels2, config.hidden);
}

ShapeNetConfig parse_net_config(const std::string& text, const std::string& path) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    ShapeNetConfig config;
    config.channels1 = j.at("channels1").get<int64_t>();
    config.channels2 = j.at("channels2").get<int64_t>();
    config.hidden = j.at("hidden").get<int64_t>();
    return config;
  } catch (const nlohmann::json::exception& error) {
    INK_FAIL("{}: the scenes judge's \"config\" metadata {} is invalid: {}", path, text,
             error.what());
  }
}

}  // namespace

ShapeNet::ShapeNet(const ShapeNetConfig& config, Generator* generator)
    : nn::Module("ShapeNet"), config_(config) {
  INK_CHECK(config.channels1 > 0 && config.channels2 > 0 && config.hidden > 0,
            "ShapeNet: channels1, channels2 and hidden must be positive, got {}, {} and {}",
            config.channels1, config.channels2, config.hidden);
  conv1 = register_module(
      "conv1", std::make_shared<nn::Conv2d>(1, config.channels1, 3, 1, 1, true, generator));
  conv2 = register_module("conv2", std::make_shared<nn::Conv2d>(config.channels1, config.channels2,
                                                                3, 1, 1, true, generator));
  const int64_t side = kCropSide / 4;
  fc1 = register_module("fc1", std::make_shared<nn::Linear>(config.channels2 * side * side,
                                                            config.hidden, true, generator));
  fc2 = register_module("fc2",
                        std::make_shared<nn::Linear>(config.hidden, kNumShapes, true, generator));
}

Tensor ShapeNet::logits(const Tensor& crops) {
  INK_CHECK(crops.defined() && crops.numel() > 0 && crops.numel() % kCropPixels == 0,
            "ShapeNet: expected crops [B, 1, {}, {}], got {}", kCropSide, kCropSide,
            crops.defined() ? shape_str(crops.shape()) : "(undefined)");
  const int64_t B = crops.numel() / kCropPixels;
  Tensor x = reshape(crops, {B, 1, kCropSide, kCropSide});
  x = avg_pool2d(relu(conv1->forward(x)), 2);  // [B, C1, 8, 8]
  x = avg_pool2d(relu(conv2->forward(x)), 2);  // [B, C2, 4, 4]
  x = relu(fc1->forward(flatten(x, 1)));       // [B, H]
  return fc2->forward(x);                      // [B, 4]
}

std::vector<ShapeKind> classify_crops(ShapeNet& net, const float* crops, int64_t n) {
  INK_CHECK(n >= 0, "classify_crops: n must be >= 0, got {}", n);
  constexpr int64_t kBatch = 256;
  const bool was_training = net.is_training();
  net.eval();
  NoGradGuard no_grad;
  std::vector<ShapeKind> shapes;
  shapes.reserve(static_cast<size_t>(n));
  for (int64_t begin = 0; begin < n; begin += kBatch) {
    const int64_t count = std::min(kBatch, n - begin);
    std::vector<float> batch(crops + begin * kCropPixels, crops + (begin + count) * kCropPixels);
    const Tensor logits = net.logits(from_vector(batch, {count, kCropPixels}));
    for (const int64_t k : max(logits, 1).indices.to_vector_i64()) {
      shapes.push_back(static_cast<ShapeKind>(k));
    }
  }
  net.train(was_training);
  return shapes;
}

ShapeClassifier shape_classifier(ShapeNet& net) {
  return [&net](const float* crop) { return classify_crops(net, crop, 1).front(); };
}

void augment_scene(float* image, Generator& gen) {
  if (gen.uniform() < 0.5f) blur_scene(image, gen.uniform(0.3f, 1.3f));
  const float scale = gen.uniform(0.55f, 1.1f);
  const float offset = gen.uniform(0.0f, 0.08f);
  const float noise = gen.uniform() < 0.5f ? gen.uniform(0.0f, 0.06f) : 0.0f;
  for (int64_t i = 0; i < kImageFloats; ++i) {
    float v = image[i] * scale + offset;
    if (noise > 0.0f) v += noise * gen.normal();
    image[i] = std::clamp(v, 0.0f, 1.0f);
  }
}

ShapeKind draw_training_crop(Generator& gen, bool augmented, float* crop) {
  std::vector<float> image(static_cast<size_t>(kImageFloats));
  for (int attempt = 0; attempt < 100; ++attempt) {
    Object o;
    o.shape = static_cast<ShapeKind>(gen.randint(0, kNumShapes));
    o.color = static_cast<Color>(gen.randint(0, kNumColors));
    o.extent = static_cast<int>(gen.randint(5, 15));
    o.size = o.extent <= 9 ? Size::small : Size::large;
    o.place = Place::from_index(static_cast<int>(gen.randint(0, kNumPlaces)));
    o.cx = cell_centre(o.place.col) + static_cast<int>(gen.randint(-2, 3));
    o.cy = cell_centre(o.place.row) + static_cast<int>(gen.randint(-2, 3));
    o.brightness = gen.uniform(0.8f, 1.0f);
    render({o}, image.data());
    if (augmented) augment_scene(image.data(), gen);
    const std::vector<FoundObject> found = find_objects(image.data());
    if (found.empty()) continue;  // blurred and dimmed below the threshold: draw another
    const auto largest = std::max_element(
        found.begin(), found.end(),
        [](const FoundObject& a, const FoundObject& b) { return a.pixels < b.pixels; });
    std::copy(largest->crop.begin(), largest->crop.end(), crop);
    return o.shape;
  }
  INK_FAIL("draw_training_crop: 100 objects in a row were lost to the augmentation");
}

std::unique_ptr<ShapeNet> train_shape_net(
    const ShapeNetTrainConfig& config,
    const std::function<void(const ShapeNetProgress&)>& on_step) {
  INK_CHECK(config.steps >= 1 && config.batch >= 1 && config.lr > 0.0,
            "train_shape_net: steps, batch and lr must be positive, got {}, {} and {}",
            config.steps, config.batch, config.lr);
  Generator init(config.seed);
  auto net = std::make_unique<ShapeNet>(config.net, &init);
  net->train();
  nn::Adam optimizer(net->named_parameters(), {.lr = config.lr});
  Generator data(config.seed ^ 0x5CE7E5ULL);
  std::vector<float> crops(static_cast<size_t>(config.batch * kCropPixels));
  std::vector<int64_t> labels(static_cast<size_t>(config.batch));
  for (int64_t step = 0; step < config.steps; ++step) {
    for (int64_t i = 0; i < config.batch; ++i) {
      labels[static_cast<size_t>(i)] =
          static_cast<int64_t>(draw_training_crop(data, true, crops.data() + i * kCropPixels));
    }
    // Cosine decay from lr to 5% of it.
    const double progress = static_cast<double>(step) / static_cast<double>(config.steps);
    optimizer.options().lr = config.lr * (0.05 + 0.95 * 0.5 * (1.0 + std::cos(M_PI * progress)));
    const Tensor loss = cross_entropy(net->logits(from_vector(crops, {config.batch, kCropPixels})),
                                      from_vector_i64(labels, {config.batch}));
    const float value = loss.item();
    INK_CHECK(std::isfinite(value), "train_shape_net: the loss is {} at step {}", value, step + 1);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    if (on_step) on_step({step + 1, config.steps, value});
  }
  net->eval();
  return net;
}

double shape_net_accuracy(ShapeNet& net, int64_t n, uint64_t seed, bool augmented) {
  INK_CHECK(n >= 1, "shape_net_accuracy: n must be at least 1, got {}", n);
  Generator gen(seed);
  std::vector<float> crops(static_cast<size_t>(n * kCropPixels));
  std::vector<ShapeKind> truth(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    truth[static_cast<size_t>(i)] =
        draw_training_crop(gen, augmented, crops.data() + i * kCropPixels);
  }
  const std::vector<ShapeKind> predicted = classify_crops(net, crops.data(), n);
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i)
    correct += predicted[static_cast<size_t>(i)] == truth[static_cast<size_t>(i)];
  return static_cast<double>(correct) / static_cast<double>(n);
}

void save_shape_net(const std::string& path, const ShapeNet& net,
                    const std::map<std::string, std::string>& extra) {
  save_judge_file(path, net, kScenesJudgeKind, net_config_json(net.config()), extra);
}

std::unique_ptr<ShapeNet> load_shape_net(const std::string& path) {
  const JudgeFile file = read_judge_file(path, kScenesJudgeKind, "scenes judge");
  Generator init(0);  // overwritten by the file
  auto net = std::make_unique<ShapeNet>(parse_net_config(file.config, path), &init);
  load_judge_weights(*net, file, path, "scenes judge");
  return net;
}

}  // namespace ink::scenes
