// The judge network, its augmented training on fresh ground truth, and its file format.
#include "models/judge.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "models/shapes.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "tensor/autograd.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink {
namespace {

Generator& generator_or_default(Generator* generator) {
  return generator ? *generator : default_generator();
}

// For each output pixel (y, x) of an H x W picture and each tap (dy, dx) of the 3x3 window, the
// row of the input's [H * W + 1] pixel rows to read; row H * W is the zero padding. [H * W * 9]
Tensor patch_indices(int64_t height, int64_t width) {
  Tensor indices = empty({height * width * 9}, DType::Int64);
  int64_t* out = indices.data_i64();
  for (int64_t y = 0; y < height; ++y) {
    for (int64_t x = 0; x < width; ++x) {
      for (int64_t dy = -1; dy <= 1; ++dy) {
        for (int64_t dx = -1; dx <= 1; ++dx) {
          const int64_t sy = y + dy, sx = x + dx;
          const bool inside = sy >= 0 && sy < height && sx >= 0 && sx < width;
          *out++ = inside ? sy * width + sx : height * width;
        }
      }
    }
  }
  return indices;
}

// The picture blurred with a normalised Gaussian of `sigma` along rows, then columns; outside
// the picture counts as 0 (as for a shape drawn near the border).
void gaussian_blur(float* image, float sigma) {
  constexpr int kRadius = 4;
  float kernel[2 * kRadius + 1];
  float total = 0.0f;
  for (int i = -kRadius; i <= kRadius; ++i) {
    kernel[i + kRadius] = std::exp(-0.5f * static_cast<float>(i * i) / (sigma * sigma));
    total += kernel[i + kRadius];
  }
  for (float& k : kernel) k /= total;
  float buffer[kImagePixels];
  for (int pass = 0; pass < 2; ++pass) {
    // pass 0 blurs along x, pass 1 along y
    const int64_t step = pass == 0 ? 1 : kImageSide;
    for (int64_t y = 0; y < kImageSide; ++y) {
      for (int64_t x = 0; x < kImageSide; ++x) {
        const int64_t along = pass == 0 ? x : y;
        float sum = 0.0f;
        for (int i = -kRadius; i <= kRadius; ++i) {
          if (along + i < 0 || along + i >= kImageSide) continue;
          sum += kernel[i + kRadius] * image[y * kImageSide + x + i * step];
        }
        buffer[y * kImageSide + x] = sum;
      }
    }
    std::copy(buffer, buffer + kImagePixels, image);
  }
}

std::string config_json(const JudgeConfig& config) {
  return fmt::format(R"({{"channels1": {}, "channels2": {}, "hidden": {}}})", config.channels1,
                     config.channels2, config.hidden);
}

JudgeConfig parse_config(const std::string& text, const std::string& path) {
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    JudgeConfig config;
    config.channels1 = j.at("channels1").get<int64_t>();
    config.channels2 = j.at("channels2").get<int64_t>();
    config.hidden = j.at("hidden").get<int64_t>();
    return config;
  } catch (const nlohmann::json::exception& error) {
    INK_FAIL("{}: the judge's \"config\" metadata {} is invalid: {}", path, text, error.what());
  }
}

}  // namespace

// ---- PatchConv3x3 ----

PatchConv3x3::PatchConv3x3(int64_t in_channels, int64_t out_channels, Generator* generator)
    : UnaryModule("Conv2d"), in_channels_(in_channels), out_channels_(out_channels) {
  INK_CHECK(in_channels > 0 && out_channels > 0,
            "Conv2d: in_channels and out_channels must be positive, got {} and {}", in_channels,
            out_channels);
  // PyTorch's default: kaiming_uniform_(a=sqrt(5)) amounts to U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  Generator& gen = generator_or_default(generator);
  const float bound = static_cast<float>(1.0 / std::sqrt(static_cast<double>(in_channels * 9)));
  weight =
      register_parameter("weight", uniform({out_channels, in_channels, 3, 3}, -bound, bound, &gen));
  bias = register_parameter("bias", uniform({out_channels}, -bound, bound, &gen));
}

Tensor patch_conv3x3(const Tensor& input, const Tensor& weight, const Tensor& bias) {
  INK_CHECK(input.defined() && weight.defined() && bias.defined() && weight.dim() == 4 &&
                weight.size(2) == 3 && weight.size(3) == 3 && bias.dim() == 1 &&
                bias.size(0) == weight.size(0),
            "patch_conv3x3: expected weight [O, C, 3, 3] and bias [O], got {} and {}",
            weight.defined() ? shape_str(weight.shape()) : "(undefined)",
            bias.defined() ? shape_str(bias.shape()) : "(undefined)");
  const int64_t O = weight.size(0), C = weight.size(1);
  INK_CHECK(input.dim() == 4 && input.size(1) == C,
            "patch_conv3x3: input {} does not match weight {} (expected [B, {}, H, W])",
            input.defined() ? shape_str(input.shape()) : "(undefined)", shape_str(weight.shape()),
            C);
  const int64_t B = input.size(0), H = input.size(2), W = input.size(3);
  // The indices depend only on the picture size, and each layer sees one size.
  static std::mutex cache_mutex;
  static std::map<std::pair<int64_t, int64_t>, Tensor> cache;
  Tensor indices;
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    Tensor& cached = cache[{H, W}];
    if (!cached.defined()) cached = patch_indices(H, W);
    indices = cached;
  }
  Tensor pixels = reshape(permute(input, {2, 3, 0, 1}), {H * W, B * C});  // [HW, BC]
  Tensor padded = cat({pixels, zeros({1, B * C}, input.dtype())}, 0);     // [HW + 1, BC]
  Tensor taps = reshape(embedding(padded, indices), {H * W, 9, B, C});    // [HW, 9, B, C]
  Tensor patches = reshape(permute(taps, {2, 0, 3, 1}), {B * H * W, C * 9});
  Tensor out = linear(patches, reshape(weight, {O, C * 9}), bias);  // [BHW, O]
  return permute(reshape(out, {B, H, W, O}), {0, 3, 1, 2});
}

Tensor PatchConv3x3::forward(const Tensor& input) {
  return patch_conv3x3(input, weight, bias);
}

std::string PatchConv3x3::extra_repr() const {
  return fmt::format("{}, {}, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)", in_channels_,
                     out_channels_);
}

Tensor average_pool_2x2(const Tensor& x) {
  INK_CHECK(x.dim() == 4 && x.size(2) % 2 == 0 && x.size(3) % 2 == 0,
            "average_pool_2x2: expected [B, C, H, W] with even H and W, got {}",
            shape_str(x.shape()));
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor blocks = reshape(x, {B * C * H / 2, 2, W / 2, 2});
  return reshape(mean(blocks, {1, 3}), {B, C, H / 2, W / 2});
}

// ---- Judge ----

Judge::Judge(const JudgeConfig& config, Generator* generator)
    : nn::Module("Judge"), config_(config) {
  INK_CHECK(config.channels1 > 0 && config.channels2 > 0 && config.hidden > 0,
            "Judge: channels1, channels2 and hidden must be positive, got {}, {} and {}",
            config.channels1, config.channels2, config.hidden);
  conv1 = register_module("conv1", std::make_shared<PatchConv3x3>(1, config.channels1, generator));
  conv2 = register_module(
      "conv2", std::make_shared<PatchConv3x3>(config.channels1, config.channels2, generator));
  const int64_t side = kImageSide / 4;
  fc1 = register_module("fc1", std::make_shared<nn::Linear>(config.channels2 * side * side,
                                                            config.hidden, true, generator));
  fc2 = register_module(
      "fc2", std::make_shared<nn::Linear>(config.hidden, kNumShapePrompts, true, generator));
}

Tensor Judge::features(const Tensor& images) {
  INK_CHECK(images.defined() && images.numel() % kImagePixels == 0 && images.numel() > 0,
            "Judge: expected pictures [B, 1, 28, 28], got {}",
            images.defined() ? shape_str(images.shape()) : "(undefined)");
  const int64_t B = images.numel() / kImagePixels;
  Tensor x = reshape(images, {B, 1, kImageSide, kImageSide});
  x = average_pool_2x2(relu(conv1->forward(x)));  // [B, C1, 14, 14]
  x = average_pool_2x2(relu(conv2->forward(x)));  // [B, C2, 7, 7]
  return relu(fc1->forward(flatten(x, 1)));       // [B, H]
}

Tensor Judge::logits(const Tensor& images) {
  return fc2->forward(features(images));
}

Judgement judge_pictures(Judge& judge, const Tensor& images) {
  INK_CHECK(
      images.defined() && images.dtype() == DType::Float32 && images.numel() % kImagePixels == 0,
      "judge_pictures: expected Float32 pictures [N, 1, 28, 28], got {}",
      images.defined() ? shape_str(images.shape()) : "(undefined)");
  constexpr int64_t kBatch = 256;
  const int64_t n = images.numel() / kImagePixels;
  const bool was_training = judge.is_training();
  judge.eval();
  NoGradGuard no_grad;
  Judgement result;
  result.dim = judge.config().hidden;
  result.predicted.reserve(static_cast<size_t>(n));
  result.features.reserve(static_cast<size_t>(n * result.dim));
  const float* pixels = images.data();
  for (int64_t begin = 0; begin < n; begin += kBatch) {
    const int64_t count = std::min(kBatch, n - begin);
    std::vector<float> batch(pixels + begin * kImagePixels,
                             pixels + (begin + count) * kImagePixels);
    const Tensor features = judge.features(from_vector(batch, {count, kImagePixels}));
    const Tensor logits = judge.fc2->forward(features);
    result.features.insert(result.features.end(), features.data(),
                           features.data() + features.numel());
    const std::vector<int64_t> best = max(logits, 1).indices.to_vector_i64();
    result.predicted.insert(result.predicted.end(), best.begin(), best.end());
  }
  judge.train(was_training);
  return result;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& labels) {
  INK_CHECK(logits.defined() && logits.dim() == 2 && labels.defined() &&
                labels.dtype() == DType::Int64 && labels.dim() == 1 &&
                labels.size(0) == logits.size(0),
            "cross_entropy: expected logits [B, K] and Int64 labels [B], got {} and {}",
            logits.defined() ? shape_str(logits.shape()) : "(undefined)",
            labels.defined() ? shape_str(labels.shape()) : "(undefined)");
  const int64_t B = logits.size(0), K = logits.size(1);
  Tensor one_hot = zeros({B, K});
  const int64_t* label = labels.data_i64();
  for (int64_t i = 0; i < B; ++i) {
    INK_CHECK(label[i] >= 0 && label[i] < K,
              "cross_entropy: label {} of sample {} is not in [0, {})", label[i], i, K);
    one_hot.data()[i * K + label[i]] = 1.0f;
  }
  // log_softmax(x) = (x - m) - log(sum(exp(x - m))); the row maximum m only keeps exp finite and
  // cancels from the gradient, so it is taken as a constant.
  Tensor shifted = logits - max(logits, 1, /*keepdim=*/true).values.detach();
  Tensor log_probs = shifted - log(sum(exp(shifted), {1}, /*keepdim=*/true));
  return -sum(log_probs * one_hot) / static_cast<float>(B);
}

void augment_picture(float* image, Generator& gen) {
  if (gen.uniform() < 0.5f) gaussian_blur(image, gen.uniform(0.3f, 1.6f));
  const float contrast = gen.uniform(0.1f, 1.0f);
  const bool stretch = gen.uniform() < 0.5f;
  float peak = 0.0f;
  for (int64_t i = 0; i < kImagePixels; ++i) peak = std::max(peak, image[i]);
  const float scale = stretch && peak > 0.01f ? 1.0f / peak : contrast;
  const float offset = gen.uniform(0.0f, 0.15f);
  const float noise = gen.uniform() < 0.5f ? gen.uniform(0.0f, 0.08f) : 0.0f;
  for (int64_t i = 0; i < kImagePixels; ++i) {
    float v = image[i] * scale + offset;
    if (noise > 0.0f) v += noise * gen.normal();
    image[i] = std::clamp(v, 0.0f, 1.0f);
  }
}

std::unique_ptr<Judge> train_judge(const JudgeTrainConfig& config,
                                   const std::function<void(const JudgeProgress&)>& on_step) {
  INK_CHECK(config.steps >= 1 && config.pictures_per_prompt >= 1 && config.lr > 0.0,
            "train_judge: steps, pictures_per_prompt and lr must be positive, got {}, {} and {}",
            config.steps, config.pictures_per_prompt, config.lr);
  Generator init(config.seed);
  auto judge = std::make_unique<Judge>(config.judge, &init);
  judge->train();
  nn::Adam optimizer(judge->named_parameters(), {.lr = config.lr});
  Generator data(config.seed ^ 0xDA7AULL);
  const int64_t batch = config.pictures_per_prompt * kNumShapePrompts;
  std::vector<float> pictures(static_cast<size_t>(batch * kImagePixels));
  std::vector<int64_t> labels(static_cast<size_t>(batch));
  for (int64_t step = 0; step < config.steps; ++step) {
    for (int64_t i = 0; i < batch; ++i) {
      labels[i] = i % kNumShapePrompts;
      float* picture = pictures.data() + i * kImagePixels;
      draw_shape(labels[i], data, picture);
      augment_picture(picture, data);
    }
    // Cosine decay from lr to 5% of it.
    const double progress = static_cast<double>(step) / static_cast<double>(config.steps);
    optimizer.options().lr = config.lr * (0.05 + 0.95 * 0.5 * (1.0 + std::cos(M_PI * progress)));
    const Tensor loss = cross_entropy(judge->logits(from_vector(pictures, {batch, kImagePixels})),
                                      from_vector_i64(labels, {batch}));
    const float value = loss.item();
    INK_CHECK(std::isfinite(value), "train_judge: the loss is {} at step {}", value, step + 1);
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    if (on_step) on_step({step + 1, config.steps, value});
  }
  judge->eval();
  return judge;
}

double judge_accuracy(Judge& judge, int64_t per_prompt, uint64_t seed, bool augmented) {
  INK_CHECK(per_prompt >= 1, "judge_accuracy: per_prompt must be at least 1, got {}", per_prompt);
  Generator gen(seed);
  const int64_t n = per_prompt * kNumShapePrompts;
  std::vector<float> pictures(static_cast<size_t>(n * kImagePixels));
  for (int64_t i = 0; i < n; ++i) {
    float* picture = pictures.data() + i * kImagePixels;
    draw_shape(i % kNumShapePrompts, gen, picture);
    if (augmented) augment_picture(picture, gen);
  }
  const Judgement judgement = judge_pictures(judge, from_vector(pictures, {n, kImagePixels}));
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) correct += judgement.predicted[i] == i % kNumShapePrompts;
  return static_cast<double>(correct) / static_cast<double>(n);
}

// ---- files ----

void save_judge_file(const std::string& path, const nn::Module& net, const char* kind,
                     const std::string& config, const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> metadata = extra;
  metadata["format"] = "pt";
  metadata["kind"] = kind;
  metadata["config"] = config;
  save_safetensors(path, net.state_dict(), metadata);
}

JudgeFile read_judge_file(const std::string& path, const char* kind, const std::string& what) {
  SafetensorsFile file = load_safetensors(path);
  const auto found = file.metadata.find("kind");
  INK_CHECK(found != file.metadata.end(),
            "{} is not a {} file (its metadata has no \"kind\"; a {} has \"kind\": \"{}\")", path,
            what, what, kind);
  INK_CHECK(found->second == kind, "{} is a \"{}\" file, not a {}", path, found->second, what);
  const auto config = file.metadata.find("config");
  INK_CHECK(config != file.metadata.end(), "{}: the {} file has no \"config\" metadata", path,
            what);
  return {std::move(file.tensors), config->second};
}

void load_judge_weights(nn::Module& net, const JudgeFile& file, const std::string& path,
                        const std::string& what) {
  try {
    net.load_state_dict(file.tensors, /*strict=*/true);
  } catch (const Error& error) {
    INK_FAIL("{}: the {}'s parameters do not match its config {}: {}", path, what, file.config,
             error.what());
  }
  net.eval();
}

void save_judge(const std::string& path, const Judge& judge,
                const std::map<std::string, std::string>& extra) {
  save_judge_file(path, judge, kJudgeKind, config_json(judge.config()), extra);
}

std::unique_ptr<Judge> load_judge(const std::string& path) {
  const JudgeFile file = read_judge_file(path, kJudgeKind, "judge");
  Generator init(0);  // overwritten by the file
  auto judge = std::make_unique<Judge>(parse_config(file.config, path), &init);
  load_judge_weights(*judge, file, path, "judge");
  return judge;
}

}  // namespace ink
