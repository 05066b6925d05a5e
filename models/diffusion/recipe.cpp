// DiffusionRecipe: the diffusion model's data, loss, optimiser, warm-up, clipping and EMA.
#include "models/diffusion/recipe.h"

#include <algorithm>
#include <cmath>

#include "models/scenes_dataset.h"
#include "nn/functional.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink::diffusion {

namespace {

// The share of a logit-normal run's timesteps drawn uniformly (see loss()).
constexpr float kUniformShare = 0.1f;

// The model's architecture for a run: the preset the run names, sized for its dataset.
DiffusionConfig config_for(const TrainConfig& config) {
  DiffusionConfig c = DiffusionConfig::preset(config.model_config);
  c.schedule = config.noise_schedule;
  c.prediction = config.prediction;
  c.text_layers = config.text_layers;
  c.query_positions = config.query_positions;
  c.phrase_attention = config.phrase_attention;
  if (config.dataset == "scenes") {
    c.in_channels = scenes::kChannels;
    c.image_size = scenes::kSide;
    c.tokenizer = "word";
    c.vocab_size = WordTokenizer().vocab_size();
    c.max_length = WordTokenizer::kDefaultMaxLength;
  } else {
    c.in_channels = 1;
    c.image_size = 28;
    c.tokenizer = "char";
    c.vocab_size = CharTokenizer::kVocabSize;
    c.max_length = CharTokenizer::kDefaultMaxLength;
  }
  c.validate();
  return c;
}

std::unique_ptr<Dataset> make_dataset(const TrainConfig& config, const Tokenizer& tokenizer,
                                      Generator data) {
  if (config.dataset == "scenes") {
    return std::make_unique<ScenesDataset>(config.samples_per_prompt * 9, config.batch_size, data);
  }
  return std::make_unique<ShapeDataset>(config.samples_per_prompt, config.batch_size, data,
                                        dynamic_cast<const CharTokenizer&>(tokenizer));
}

// Scales every gradient so that their global L2 norm is at most max_norm (as
// torch.nn.utils.clip_grad_norm_). Returns the norm before clipping.
double clip_grad_norm(const NamedTensors& params, double max_norm) {
  double sum = 0.0;
  for (const auto& [name, p] : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const float* v = std::as_const(g).data();
    for (int64_t i = 0; i < g.numel(); ++i) sum += static_cast<double>(v[i]) * v[i];
  }
  const double norm = std::sqrt(sum);
  if (max_norm > 0.0 && norm > max_norm) {
    const auto scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (const auto& [name, p] : params) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
      float* v = g.data();
      for (int64_t i = 0; i < g.numel(); ++i) v[i] *= scale;
    }
  }
  return norm;
}

}  // namespace

DiffusionRecipe::DiffusionRecipe(const TrainConfig& config, TrainingStreams& streams)
    : config_(config) {
  const DiffusionConfig model_config = config_for(config);
  model_ = std::make_unique<TextToImageDiffusion>(model_config, &streams.init);
  ema_model_ = std::make_unique<TextToImageDiffusion>(model_config, &streams.init);
  nn::AdamWOptions options;
  options.lr = config.lr;
  options.weight_decay = config.weight_decay;
  optimizer_ = std::make_unique<nn::AdamW>(model_->named_parameters(), options);
  nn::LRSchedule::Options lr_options;
  lr_options.base_lr = config.lr;
  lr_options.warmup_steps = config.warmup_steps;
  ema_ = std::make_unique<nn::EMA>(*model_, config.ema_decay);
  dataset_ = make_dataset(config, model_->tokenizer(), streams.data);
  if (config.lr_decay == "cosine") {
    // Down to 0 at the run's last update (config.epochs whole epochs). A run that ends inside
    // its warm-up has nothing to decay.
    lr_options.total_steps = config.epochs * dataset_->num_batches();
    if (lr_options.total_steps > config.warmup_steps)
      lr_options.decay = nn::LRSchedule::Decay::Cosine;
  }
  schedule_ = std::make_unique<nn::LRSchedule>(lr_options);
}

Tensor DiffusionRecipe::loss(const DataBatch& batch, Generator& noise) {
  const int64_t b = batch.size;
  const NoiseSchedule& schedule = model_->schedule();
  Tensor x0 = batch.images_tensor();  // [B, C, H, W] in [0, 1]
  {
    float* p = x0.data();
    for (int64_t i = 0; i < x0.numel(); ++i) p[i] = p[i] * 2.0f - 1.0f;
  }
  Tensor t = empty({b}, DType::Int64);
  Tensor t_float = empty({b});
  for (int64_t i = 0; i < b; ++i) {
    // logit-normal: with probability 0.9, t = floor(T sigmoid(z)), z ~ N(0, 1) (Esser et al.
    // 2024), which puts the updates on the middle noise levels where the shape is decided; else
    // uniform, so that the nearly clean steps (which clean the background) are still learned.
    if (config_.timesteps == "logit-normal" && noise.uniform() >= kUniformShare) {
      const double u = 1.0 / (1.0 + std::exp(-static_cast<double>(noise.normal())));
      t.data_i64()[i] = std::min<int64_t>(schedule.num_timesteps() - 1,
                                          static_cast<int64_t>(u * schedule.num_timesteps()));
    } else {
      t.data_i64()[i] = noise.randint(0, schedule.num_timesteps());
    }
    t_float.data()[i] = static_cast<float>(t.data_i64()[i]);
  }
  const Tensor eps = randn(x0.shape(), &noise);
  Tensor tokens = batch.tokens_tensor();  // [B, L]
  {
    int64_t* ids = tokens.data_i64();
    const int64_t length = tokens.size(1), pad = model_->tokenizer().pad_id();
    for (int64_t i = 0; i < b; ++i) {
      if (noise.uniform() < config_.cond_dropout)
        std::fill(ids + i * length, ids + (i + 1) * length, pad);
    }
  }
  Tensor x_t;
  {
    NoGradGuard no_grad;
    x_t = schedule.add_noise(x0, eps, t);
  }
  const bool v_prediction = model_->config().prediction == "v";
  Tensor target = eps;
  if (v_prediction) {
    // v = sqrt(abar) eps - sqrt(1 - abar) x0: add_noise's formula with eps and -x0.
    NoGradGuard no_grad;
    target = schedule.add_noise(eps, neg(x0), t);
  }
  const Tensor pred = model_->forward(x_t, t_float, tokens);
  if (config_.snr_gamma <= 0.0) return nn::functional::mse_loss(pred, target);
  // Min-SNR: mean_b w_b * mean((pred_b - target_b)^2), as the MSE of both sides scaled by
  // sqrt(w_b) (broadcast over C, H, W). Both aim at min(SNR, gamma) |x0_hat - x0|^2: the eps
  // error is SNR |x0_hat - x0|^2, so w = min(SNR, gamma) / SNR, and the v error is
  // (SNR + 1) |x0_hat - x0|^2, so w = min(SNR, gamma) / (SNR + 1) (Hang et al. 2023).
  Tensor scale = empty({b, 1, 1, 1});
  for (int64_t i = 0; i < b; ++i) {
    const double abar = schedule.alpha_bar(t.data_i64()[i]);
    const double snr = abar / (1.0 - abar);
    const double w = std::min(snr, config_.snr_gamma) / (v_prediction ? snr + 1.0 : snr);
    scale.data()[i] = static_cast<float>(std::sqrt(w));
  }
  return nn::functional::mse_loss(pred * scale, target * scale);
}

void DiffusionRecipe::before_step(int64_t step) {
  if (config_.clip_grad_norm > 0.0)
    clip_grad_norm(model_->named_parameters(), config_.clip_grad_norm);
  schedule_->apply(*optimizer_);
}

void DiffusionRecipe::after_step(int64_t step) {
  // A warm-up of the decay, min(decay, (1 + n) / (10 + n)) after n updates: with 0.999 from the
  // start, the average would hold mostly the random initial weights for thousands of steps.
  const auto n = static_cast<double>(ema_->num_updates());
  ema_->update(*model_, std::min(config_.ema_decay, (1.0 + n) / (10.0 + n)));
}

TextToImageDiffusion& DiffusionRecipe::inference_model() {
  if (ema_copied_at_ != ema_->num_updates()) {
    ema_->copy_to(*ema_model_);
    ema_copied_at_ = ema_->num_updates();
  }
  return *ema_model_;
}

std::map<std::string, std::string> DiffusionRecipe::resume_settings() {
  std::map<std::string, std::string> settings = Recipe::resume_settings();
  // The optimizer's own lr is the warm-up's value at the step it was saved (the schedule sets
  // it before every step, so a resume re-derives it); the setting to cross-check is the base.
  settings.erase("lr");
  settings["diffusion.lr"] = fmt::format("{}", config_.lr);
  settings["diffusion.ema_decay"] = fmt::format("{}", config_.ema_decay);
  settings["diffusion.cond_dropout"] = fmt::format("{}", config_.cond_dropout);
  settings["diffusion.warmup_steps"] = std::to_string(config_.warmup_steps);
  settings["diffusion.clip_grad_norm"] = fmt::format("{}", config_.clip_grad_norm);
  // Recorded only when on, so that the states written before the option existed still resume.
  if (config_.snr_gamma > 0) settings["diffusion.snr_gamma"] = fmt::format("{}", config_.snr_gamma);
  // Recorded only when on, for the same reason; it names the length, so that a resume which
  // changes the run's length (and so the decay) is refused.
  if (config_.lr_decay != "constant") settings["diffusion.lr_decay"] = lr_decay_text();
  if (config_.timesteps != "uniform") settings["diffusion.timesteps"] = config_.timesteps;
  settings["diffusion.config"] = model_->config_json();
  return settings;
}

void DiffusionRecipe::save_extra_state(SafetensorsFile& state) const {
  const SafetensorsFile ema = ema_->state_dict();
  for (const auto& [name, tensor] : ema.tensors) state.tensors.emplace_back("ema." + name, tensor);
  for (const auto& [key, value] : ema.metadata) {
    if (key != "format") state.metadata["ema." + key] = value;
  }
  state.metadata["diffusion.lr"] = fmt::format("{}", config_.lr);
  state.metadata["diffusion.ema_decay"] = fmt::format("{}", config_.ema_decay);
  state.metadata["diffusion.cond_dropout"] = fmt::format("{}", config_.cond_dropout);
  state.metadata["diffusion.warmup_steps"] = std::to_string(config_.warmup_steps);
  state.metadata["diffusion.clip_grad_norm"] = fmt::format("{}", config_.clip_grad_norm);
  if (config_.snr_gamma > 0)
    state.metadata["diffusion.snr_gamma"] = fmt::format("{}", config_.snr_gamma);
  if (config_.lr_decay != "constant") state.metadata["diffusion.lr_decay"] = lr_decay_text();
  if (config_.timesteps != "uniform") state.metadata["diffusion.timesteps"] = config_.timesteps;
  state.metadata["diffusion.config"] = model_->config_json();
}

std::string DiffusionRecipe::lr_decay_text() const {
  return fmt::format("{} over {} updates", config_.lr_decay, schedule_->options().total_steps);
}

void DiffusionRecipe::load_extra_state(const SafetensorsFile& state) {
  SafetensorsFile ema;
  ema.metadata["format"] = "pt";
  for (const auto& [name, tensor] : state.tensors) {
    INK_CHECK(name.rfind("ema.", 0) == 0,
              "resume: the training state holds an unexpected tensor {}",
              fmt::format("\"{}\"", name.substr(0, 60)));
    ema.tensors.emplace_back(name.substr(4), tensor);
  }
  for (const auto& [key, value] : state.metadata) {
    if (key.rfind("ema.", 0) == 0) ema.metadata[key.substr(4)] = value;
  }
  ema_->load_state_dict(ema);  // checks everything before changing anything
  ema_copied_at_ = -1;
}

}  // namespace ink::diffusion
