// Optimizers over named parameters: Adam, AdamW and SGD with exactly PyTorch's update rules, each
// step a fused loop over raw floats that allocates nothing, and their state saved as safetensors
// so that training resumes bit for bit. Also a learning-rate schedule (linear warm-up, then
// constant or cosine) and an exponential moving average of a model's weights (EMA).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"
#include "nn/safetensors.h"
#include "tensor/tensor.h"

namespace ink::nn {

// What this object represents: the update rule for a fixed set of parameters, addressed by name
// (normally module.named_parameters()). The optimizer keeps handles on the parameters and
// updates their values in place; parameters whose grad is undefined are skipped in a step.
//
// State files (save / load) are safetensors with this layout:
//   "state.step"                      I64 []  optimizer steps taken so far
//   "state.<parameter name>.<slot>"   F32, the parameter's shape; Adam's slots are "exp_avg" and
//                                     "exp_avg_sq", SGD's is "momentum_buffer" (present only once
//                                     the parameter has one)
//   __metadata__: {"format": "pt", "optimizer": "Adam" | "AdamW" | "SGD", and every hyper-parameter
//   by its
//                  PyTorch name ("lr", "beta1", "beta2", "eps", "weight_decay", "momentum",
//                  "dampening", "nesterov") as a decimal that round-trips exactly}
// Loading restores the hyper-parameters too, as PyTorch's Optimizer.load_state_dict does.
class Optimizer {
 public:
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
  virtual ~Optimizer() = default;

  // Applies one update to every parameter that has a gradient.
  virtual void step() = 0;
  // Zeroes every parameter's accumulated gradient in place (no allocation).
  void zero_grad();

  const NamedTensors& named_parameters() const { return params_; }
  const std::string& type_name() const { return type_name_; }
  // The number of step() calls so far (restored by load).
  int64_t step_count() const { return step_; }
  // The learning rate the next step() uses (what a schedule sets).
  virtual double lr() const = 0;
  virtual void set_lr(double lr) = 0;

  // The state as named tensors plus metadata, in the layout above. The tensors are the
  // optimizer's own (not copies).
  SafetensorsFile state_dict() const;
  // Replaces the state with `state`. Every problem (wrong optimizer type, missing, unexpected or
  // mis-shaped tensors, missing or malformed hyper-parameters) is reported together in one
  // ink::Error, and nothing changes unless the whole state is valid.
  void load_state_dict(const SafetensorsFile& state);
  // state_dict() to a safetensors file (written atomically) / load_state_dict() from one.
  void save(const std::string& path) const;
  void load(const std::string& path);

 protected:
  // One per-parameter state tensor, e.g. Adam's exp_avg. `tensors` has one entry per parameter
  // (undefined when that parameter has no such state yet, which only an optional slot allows).
  struct Slot {
    std::string name;
    bool required;
    std::vector<Tensor>* tensors;
  };

  Optimizer(std::string type_name, NamedTensors params);

  virtual std::vector<Slot> slots() = 0;
  // The hyper-parameters as metadata strings.
  virtual std::map<std::string, std::string> hyperparameters() const = 0;
  // Parses `metadata` into the optimizer's options, appending a message to `problems` for each
  // missing or malformed entry; applies them only when `apply` is true.
  virtual void read_hyperparameters(const std::map<std::string, std::string>& metadata,
                                    std::vector<std::string>& problems, bool apply) = 0;

  // Throws ink::Error when the grad of parameter `index` does not match its shape.
  void check_grad(size_t index, const Tensor& grad) const;

  std::string type_name_;
  NamedTensors params_;
  int64_t step_ = 0;
};

// Metadata helpers for read_hyperparameters: a double written by format_number reads back
// exactly.
std::string format_number(double value);
double parse_number(const std::map<std::string, std::string>& metadata, const std::string& key,
                    std::vector<std::string>& problems);

struct AdamOptions {
  double lr = 1e-3;
  std::pair<double, double> betas{0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.0;  // L2 penalty added to the gradient (Adam, not AdamW)
};

// What this object represents: torch.optim.Adam (amsgrad=False, maximize=False). With t the step
// count and g the gradient (+ weight_decay * param):
//   exp_avg    = beta1 * exp_avg    + (1 - beta1) * g
//   exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
//   param     -= lr / (1 - beta1^t) * exp_avg / (sqrt(exp_avg_sq) / sqrt(1 - beta2^t) + eps)
// t counts the optimizer's steps (PyTorch counts per parameter; the two agree whenever every
// parameter has a gradient at every step).
class Adam : public Optimizer {
 public:
  explicit Adam(NamedTensors params, AdamOptions options = {});
  void step() override;
  AdamOptions& options() { return options_; }
  const AdamOptions& options() const { return options_; }
  double lr() const override { return options_.lr; }
  void set_lr(double lr) override;

 protected:
  // For AdamW: the same update with the weight decay applied to the parameter, not the gradient.
  Adam(std::string type_name, NamedTensors params, AdamOptions options, bool decoupled_decay);

 private:
  std::vector<Slot> slots() override;
  std::map<std::string, std::string> hyperparameters() const override;
  void read_hyperparameters(const std::map<std::string, std::string>& metadata,
                            std::vector<std::string>& problems, bool apply) override;

  AdamOptions options_;
  bool decoupled_decay_ = false;    // AdamW
  std::vector<Tensor> exp_avg_;     // per parameter, its shape, zeros at start
  std::vector<Tensor> exp_avg_sq_;  // per parameter, its shape, zeros at start
};

struct AdamWOptions {
  double lr = 1e-3;
  std::pair<double, double> betas{0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 1e-2;  // decoupled: the parameter shrinks by lr * weight_decay per step
};

// What this object represents: torch.optim.AdamW (amsgrad=False, maximize=False), Adam with
// decoupled weight decay (Loshchilov & Hutter). Each step first shrinks the parameter,
//   param *= 1 - lr * weight_decay
// and then applies Adam's update with the plain gradient g (no decay term in g). Same state
// slots and file layout as Adam, with "optimizer": "AdamW"; options().weight_decay is the
// decoupled decay.
class AdamW : public Adam {
 public:
  explicit AdamW(NamedTensors params, AdamWOptions options = {});
};

struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

// What this object represents: torch.optim.SGD (maximize=False). With g the gradient
// (+ weight_decay * param):
//   buf = g on a parameter's first step, then buf = momentum * buf + (1 - dampening) * g
//   g   = g + momentum * buf (nesterov) or buf (otherwise), when momentum != 0
//   param -= lr * g
class SGD : public Optimizer {
 public:
  explicit SGD(NamedTensors params, SGDOptions options = {});
  void step() override;
  SGDOptions& options() { return options_; }
  const SGDOptions& options() const { return options_; }
  double lr() const override { return options_.lr; }
  void set_lr(double lr) override;

 private:
  std::vector<Slot> slots() override;
  std::map<std::string, std::string> hyperparameters() const override;
  void read_hyperparameters(const std::map<std::string, std::string>& metadata,
                            std::vector<std::string>& problems, bool apply) override;

  SGDOptions options_;
  std::vector<Tensor> momentum_buffer_;  // per parameter, undefined until its first step
};

// What this object represents: a learning-rate schedule, linear warm-up then constant or cosine
// decay, as a function of the update count. With s the index of the update (0 for the first),
// W = warmup_steps and T = total_steps:
//   s < W:              lr = base_lr * (s + 1) / W
//   constant, s >= W:   lr = base_lr
//   cosine,   s >= W:   lr = final_lr + (base_lr - final_lr) * (1 + cos(pi * p)) / 2,
//                       p = min(1, (s - W) / max(1, T - W))
// The trainer calls apply(optimizer) before each optimizer.step(); the schedule reads the
// optimizer's step count, so it resumes with the optimizer's state and keeps no state itself.
class LRSchedule {
 public:
  enum class Decay { Constant, Cosine };

  struct Options {
    double base_lr = 1e-3;
    int64_t warmup_steps = 0;
    Decay decay = Decay::Constant;
    int64_t total_steps = 0;  // cosine: the update at which lr reaches final_lr
    double final_lr = 0.0;
  };

  // Throws ink::Error for a negative or non-finite rate, negative step counts, or a cosine
  // schedule whose total_steps does not exceed warmup_steps.
  explicit LRSchedule(Options options);

  // The learning rate of update `step` (0-based).
  double lr_at(int64_t step) const;
  // Sets optimizer's learning rate for its next step: lr_at(optimizer.step_count()).
  void apply(Optimizer& optimizer) const;

  const Options& options() const { return options_; }

 private:
  Options options_;
};

// What this object represents: an exponential moving average of a model's weights, kept as a
// shadow copy keyed by state_dict name. Every Float32 entry of the model's state_dict
// (parameters and running statistics alike) is averaged,
//   shadow = decay * shadow + (1 - decay) * value      (in float32, decay rounded to float)
// and any other entry (such as num_batches_tracked) is copied. Sampling from the averaged
// weights: copy_to(a second instance of the model).
//
// State files (save / load) are safetensors holding the shadow under the model's own names, so
// an EMA file also loads as the model's weights; __metadata__: {"format": "pt", "ema_decay",
// "ema_updates"}.
class EMA {
 public:
  // Starts the shadow as a copy of model's current state_dict.
  explicit EMA(const Module& model, double decay = 0.999);

  // Moves the shadow toward model's current values. Throws ink::Error when model's state_dict
  // names or shapes differ from the shadow's.
  void update(const Module& model);
  // The same with this update's own decay (for a warm-up that starts lower than decay()).
  void update(const Module& model, double decay);
  // Writes the shadow values into model (its state_dict must match, as for update).
  void copy_to(Module& model) const;

  double decay() const { return decay_; }
  int64_t num_updates() const { return num_updates_; }
  const NamedTensors& shadow() const { return shadow_; }

  SafetensorsFile state_dict() const;
  // Replaces the shadow and the decay; every problem (missing, unexpected or mis-shaped
  // entries, bad metadata) is reported together and nothing changes unless all is valid.
  void load_state_dict(const SafetensorsFile& state);
  void save(const std::string& path) const;
  void load(const std::string& path);

 private:
  void check_matches(const NamedTensors& state, const char* what) const;

  double decay_;
  int64_t num_updates_ = 0;
  NamedTensors shadow_;  // own copies, in the model's state_dict order
};

}  // namespace ink::nn
