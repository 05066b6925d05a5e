// Optimizers over named parameters: Adam and SGD with exactly PyTorch's update rules, each step a
// fused loop over raw floats that allocates nothing, and their state saved as safetensors so that
// training resumes bit for bit.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

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
//   __metadata__: {"format": "pt", "optimizer": "Adam" | "SGD", and every hyper-parameter by its
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

 private:
  std::vector<Slot> slots() override;
  std::map<std::string, std::string> hyperparameters() const override;
  void read_hyperparameters(const std::map<std::string, std::string>& metadata,
                            std::vector<std::string>& problems, bool apply) override;

  AdamOptions options_;
  std::vector<Tensor> exp_avg_;     // per parameter, its shape, zeros at start
  std::vector<Tensor> exp_avg_sq_;  // per parameter, its shape, zeros at start
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

 private:
  std::vector<Slot> slots() override;
  std::map<std::string, std::string> hyperparameters() const override;
  void read_hyperparameters(const std::map<std::string, std::string>& metadata,
                            std::vector<std::string>& problems, bool apply) override;

  SGDOptions options_;
  std::vector<Tensor> momentum_buffer_;  // per parameter, undefined until its first step
};

}  // namespace ink::nn
