// Adam, AdamW and SGD: PyTorch's update rules as fused loops over raw floats, the optimizer
// state file (layout documented in optim.h), the learning-rate schedule and the EMA of weights.
//
// The loops follow PyTorch's order of float32 operations (each hyper-parameter is a double
// rounded to float, as PyTorch does with a Python scalar; bias corrections are computed in
// double), so results agree with torch.optim to rounding. Each element is updated
// independently, so splitting the loop across threads does not change any bit.
#include "nn/optim.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <numbers>
#include <unordered_map>
#include <unordered_set>

#include "nn/module.h"  // copy_values
#include "tensor/autograd.h"
#include "tensor/error.h"
#include "tensor/parallel.h"

namespace ink::nn {

namespace {

// Elements per thread below which a parameter is updated on the calling thread.
constexpr int64_t kUpdateGrain = 1 << 15;

// Runs update(i, begin, end) over elements [0, numel[i]) of every tensor i as ONE parallel job,
// cut into pieces of at most kUpdatePiece elements. A model is mostly small tensors (biases,
// norms, 16-channel kernels), each far below kUpdateGrain: updated one parallel_for per tensor,
// they would all run on the calling thread while the others wait. Each element is updated on
// its own, so the cut changes no bit.
constexpr int64_t kUpdatePiece = 1 << 13;
template <class Update>
void update_all(const std::vector<int64_t>& numel, const Update& update) {
  struct Piece {
    size_t tensor;
    int64_t begin, end;
  };
  std::vector<Piece> pieces;
  for (size_t i = 0; i < numel.size(); ++i) {
    for (int64_t b = 0; b < numel[i]; b += kUpdatePiece) {
      pieces.push_back({i, b, std::min(numel[i], b + kUpdatePiece)});
    }
  }
  parallel_for(0, static_cast<int64_t>(pieces.size()), kUpdateGrain / kUpdatePiece,
               [&](int64_t lo, int64_t hi) {
                 for (int64_t k = lo; k < hi; ++k) {
                   const Piece& piece = pieces[static_cast<size_t>(k)];
                   update(piece.tensor, piece.begin, piece.end);
                 }
               });
}

Tensor copy_of(const Tensor& src) {
  Tensor out = empty(src.shape());
  copy_values(out, src);
  return out;
}

void throw_problems(const std::string& what, const std::vector<std::string>& problems) {
  if (problems.size() == 1) INK_FAIL("{}: {}", what, problems[0]);
  if (!problems.empty()) {
    INK_FAIL("{}: {} problems:\n  {}", what, problems.size(), fmt::join(problems, "\n  "));
  }
}

}  // namespace

// ---- metadata numbers ----

std::string format_number(double value) {
  return fmt::format("{}", value);
}

double parse_number(const std::map<std::string, std::string>& metadata, const std::string& key,
                    std::vector<std::string>& problems) {
  auto found = metadata.find(key);
  if (found == metadata.end()) {
    problems.push_back(fmt::format("metadata lacks \"{}\"", key));
    return 0.0;
  }
  const std::string& text = found->second;
  double value = 0.0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
    problems.push_back(fmt::format("metadata \"{}\" is \"{}\", not a finite number", key, text));
  }
  return value;
}

// ---- Optimizer ----

Optimizer::Optimizer(std::string type_name, NamedTensors params)
    : type_name_(std::move(type_name)), params_(std::move(params)) {
  std::unordered_set<std::string> names;
  std::unordered_set<const void*> tensors;
  for (const auto& [name, param] : params_) {
    INK_CHECK(!name.empty(), "{}: a parameter has an empty name", type_name_);
    INK_CHECK(names.insert(name).second, "{}: parameter name \"{}\" appears more than once",
              type_name_, name);
    INK_CHECK(param.defined() && param.dtype() == DType::Float32,
              "{}: parameter \"{}\" must be a defined Float32 tensor", type_name_, name);
    INK_CHECK(tensors.insert(param.impl()).second,
              "{}: parameter \"{}\" is the same tensor as an earlier parameter", type_name_, name);
  }
}

void Optimizer::zero_grad() {
  for (auto& [name, param] : params_) {
    if (param.grad().defined()) param.zero_grad();
  }
}

void Optimizer::check_grad(size_t index, const Tensor& grad) const {
  const auto& [name, param] = params_[index];
  INK_CHECK(grad.dtype() == DType::Float32 && grad.shape() == param.shape(),
            "{}: the grad of \"{}\" is {} {}, expected Float32 {}", type_name_, name,
            dtype_name(grad.dtype()), shape_str(grad.shape()), shape_str(param.shape()));
}

SafetensorsFile Optimizer::state_dict() const {
  SafetensorsFile state;
  state.metadata = hyperparameters();
  state.metadata["format"] = "pt";
  state.metadata["optimizer"] = type_name_;
  state.tensors.emplace_back("state.step", from_vector_i64({step_}, {}));
  // slots() hands out pointers for load_state_dict to write through; here they are only read.
  const std::vector<Slot> slot_list = const_cast<Optimizer*>(this)->slots();
  for (size_t i = 0; i < params_.size(); ++i) {
    for (const Slot& slot : slot_list) {
      const Tensor& tensor = (*slot.tensors)[i];
      if (tensor.defined()) {
        state.tensors.emplace_back("state." + params_[i].first + "." + slot.name, tensor);
      }
    }
  }
  return state;
}

void Optimizer::load_state_dict(const SafetensorsFile& state) {
  std::vector<std::string> problems;
  auto type = state.metadata.find("optimizer");
  if (type == state.metadata.end()) {
    problems.push_back(fmt::format("metadata lacks \"optimizer\" (expected \"{}\")", type_name_));
  } else if (type->second != type_name_) {
    problems.push_back(
        fmt::format("the state is for optimizer \"{}\", not \"{}\"", type->second, type_name_));
  }
  read_hyperparameters(state.metadata, problems, /*apply=*/false);

  std::unordered_map<std::string, const Tensor*> given;
  for (const auto& [name, tensor] : state.tensors) {
    if (!given.emplace(name, &tensor).second) {
      problems.push_back(fmt::format("\"{}\" appears more than once", name));
    }
  }
  std::unordered_set<std::string> known{"state.step"};
  int64_t step = 0;
  auto step_entry = given.find("state.step");
  if (step_entry == given.end()) {
    problems.push_back("missing \"state.step\"");
  } else {
    const Tensor& t = *step_entry->second;
    if (t.dtype() != DType::Int64 || t.dim() != 0 || t.item_i64() < 0) {
      problems.push_back(fmt::format("\"state.step\" must be a non-negative I64 scalar, got {} {}",
                                     dtype_name(t.dtype()), shape_str(t.shape())));
    } else {
      step = t.item_i64();
    }
  }

  // (slot, parameter index) -> source tensor, or null when the file has none.
  std::vector<Slot> slot_list = slots();
  std::vector<std::vector<const Tensor*>> sources(slot_list.size());
  for (size_t s = 0; s < slot_list.size(); ++s) {
    sources[s].assign(params_.size(), nullptr);
    for (size_t i = 0; i < params_.size(); ++i) {
      const auto& [param_name, param] = params_[i];
      const std::string name = "state." + param_name + "." + slot_list[s].name;
      known.insert(name);
      auto found = given.find(name);
      if (found == given.end()) {
        if (slot_list[s].required) problems.push_back(fmt::format("missing \"{}\"", name));
        continue;
      }
      const Tensor& t = *found->second;
      if (t.dtype() != DType::Float32 || t.shape() != param.shape()) {
        problems.push_back(fmt::format("\"{}\" expected Float32 {}, file has {} {}", name,
                                       shape_str(param.shape()), dtype_name(t.dtype()),
                                       shape_str(t.shape())));
        continue;
      }
      sources[s][i] = &t;
    }
  }
  for (const auto& [name, tensor] : state.tensors) {
    if (!known.contains(name)) {
      problems.push_back(
          fmt::format("unexpected \"{}\" (no parameter or slot of that name)", name));
    }
  }
  throw_problems(type_name_ + ".load_state_dict", problems);

  read_hyperparameters(state.metadata, problems, /*apply=*/true);
  step_ = step;
  for (size_t s = 0; s < slot_list.size(); ++s) {
    std::vector<Tensor>& tensors = *slot_list[s].tensors;
    for (size_t i = 0; i < params_.size(); ++i) {
      const Tensor* source = sources[s][i];
      if (source == nullptr) {
        tensors[i] = Tensor();
      } else if (tensors[i].defined()) {
        copy_values(tensors[i], *source);
      } else {
        tensors[i] = copy_of(*source);
      }
    }
  }
}

void Optimizer::save(const std::string& path) const {
  SafetensorsFile state = state_dict();
  save_safetensors(path, state.tensors, state.metadata);
}

void Optimizer::load(const std::string& path) {
  SafetensorsFile state = load_safetensors(path);
  try {
    load_state_dict(state);
  } catch (const Error& e) {
    throw Error(fmt::format("{}\n  (while loading {})", e.what(), path));
  }
}

// ---- Adam ----

namespace {

void check_adam_options(const AdamOptions& o, std::vector<std::string>& problems) {
  if (!(o.lr >= 0.0)) problems.push_back(fmt::format("invalid learning rate: {}", o.lr));
  if (!(o.eps >= 0.0)) problems.push_back(fmt::format("invalid epsilon value: {}", o.eps));
  if (!(o.betas.first >= 0.0 && o.betas.first < 1.0)) {
    problems.push_back(fmt::format("invalid beta parameter at index 0: {}", o.betas.first));
  }
  if (!(o.betas.second >= 0.0 && o.betas.second < 1.0)) {
    problems.push_back(fmt::format("invalid beta parameter at index 1: {}", o.betas.second));
  }
  if (!(o.weight_decay >= 0.0)) {
    problems.push_back(fmt::format("invalid weight_decay value: {}", o.weight_decay));
  }
}

// The per-tensor Adam update; see the formula in optim.h. Plain data, so the parallel_for
// closure holds one pointer and std::function does not allocate.
struct AdamUpdate {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float weight_decay, eps;
  float bias_correction2_sqrt;
  float neg_step_size;  // -lr / bias_correction1

  void run(int64_t begin, int64_t end) const;
};

// The update loop, compiled for AVX-512, AVX2 and the baseline; the loader picks the best one
// for this CPU. Restrict-qualified locals and no branch in the loop let each clone vectorise.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define INK_ADAM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define INK_ADAM_CLONES
#endif
INK_ADAM_CLONES void adam_update(float* __restrict p, const float* __restrict gr,
                                 float* __restrict m, float* __restrict v, int64_t begin,
                                 int64_t end, float beta1, float one_minus_beta1, float beta2,
                                 float one_minus_beta2, float wd, float eps,
                                 float bias_correction2_sqrt, float neg_step_size) {
  for (int64_t i = begin; i < end; ++i) {
    const float g = gr[i] + wd * p[i];  // L2 weight decay; exact when wd == 0
    const float mi = m[i] * beta1 + one_minus_beta1 * g;
    const float vi = v[i] * beta2 + one_minus_beta2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / bias_correction2_sqrt + eps;
    p[i] = p[i] + neg_step_size * mi / denom;
  }
}

void AdamUpdate::run(int64_t begin, int64_t end) const {
  adam_update(param, grad, exp_avg, exp_avg_sq, begin, end, beta1, one_minus_beta1, beta2,
              one_minus_beta2, weight_decay, eps, bias_correction2_sqrt, neg_step_size);
}

// AdamW's decoupled decay, param *= 1 - lr * weight_decay, rounded to float before the Adam
// update as PyTorch's separate param.mul_ is (a separate loop, so it is never fused into one
// multiply-add with the update).
void scale_in_place(float* p, int64_t begin, int64_t end, float factor) {
  for (int64_t i = begin; i < end; ++i) p[i] = p[i] * factor;
}

}  // namespace

Adam::Adam(NamedTensors params, AdamOptions options)
    : Adam("Adam", std::move(params), options, false) {}

Adam::Adam(std::string type_name, NamedTensors params, AdamOptions options, bool decoupled_decay)
    : Optimizer(std::move(type_name), std::move(params)),
      options_(options),
      decoupled_decay_(decoupled_decay) {
  std::vector<std::string> problems;
  check_adam_options(options_, problems);
  throw_problems(type_name_, problems);
  for (const auto& [name, param] : params_) {
    exp_avg_.push_back(zeros(param.shape()));
    exp_avg_sq_.push_back(zeros(param.shape()));
  }
}

void Adam::set_lr(double lr) {
  INK_CHECK(lr >= 0.0 && std::isfinite(lr), "{}: invalid learning rate: {}", type_name_, lr);
  options_.lr = lr;
}

void Adam::step() {
  ++step_;
  const auto [beta1, beta2] = options_.betas;
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step_));
  const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step_));
  std::vector<AdamUpdate> updates;
  std::vector<int64_t> numel;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& param = params_[i].second;
    Tensor grad = param.grad();
    if (!grad.defined()) continue;
    check_grad(i, grad);
    numel.push_back(param.numel());
    updates.push_back({
        param.data(),
        std::as_const(grad).data(),
        exp_avg_[i].data(),
        exp_avg_sq_[i].data(),
        static_cast<float>(beta1),
        static_cast<float>(1.0 - beta1),
        static_cast<float>(beta2),
        static_cast<float>(1.0 - beta2),
        static_cast<float>(decoupled_decay_ ? 0.0 : options_.weight_decay),
        static_cast<float>(options_.eps),
        static_cast<float>(std::sqrt(bias_correction2)),
        static_cast<float>(-(options_.lr / bias_correction1)),
    });
  }
  const auto shrink = static_cast<float>(1.0 - options_.lr * options_.weight_decay);
  update_all(numel, [&](size_t i, int64_t begin, int64_t end) {
    if (decoupled_decay_) scale_in_place(updates[i].param, begin, end, shrink);
    updates[i].run(begin, end);
  });
}

std::vector<Optimizer::Slot> Adam::slots() {
  return {{"exp_avg", true, &exp_avg_}, {"exp_avg_sq", true, &exp_avg_sq_}};
}

std::map<std::string, std::string> Adam::hyperparameters() const {
  return {{"lr", format_number(options_.lr)},
          {"beta1", format_number(options_.betas.first)},
          {"beta2", format_number(options_.betas.second)},
          {"eps", format_number(options_.eps)},
          {"weight_decay", format_number(options_.weight_decay)}};
}

void Adam::read_hyperparameters(const std::map<std::string, std::string>& metadata,
                                std::vector<std::string>& problems, bool apply) {
  AdamOptions o;
  o.lr = parse_number(metadata, "lr", problems);
  o.betas.first = parse_number(metadata, "beta1", problems);
  o.betas.second = parse_number(metadata, "beta2", problems);
  o.eps = parse_number(metadata, "eps", problems);
  o.weight_decay = parse_number(metadata, "weight_decay", problems);
  check_adam_options(o, problems);
  if (apply) options_ = o;
}

// ---- AdamW ----

AdamW::AdamW(NamedTensors params, AdamWOptions options)
    : Adam("AdamW", std::move(params),
           AdamOptions{.lr = options.lr,
                       .betas = options.betas,
                       .eps = options.eps,
                       .weight_decay = options.weight_decay},
           /*decoupled_decay=*/true) {}

// ---- SGD ----

namespace {

void check_sgd_options(const SGDOptions& o, std::vector<std::string>& problems) {
  if (!(o.lr >= 0.0)) problems.push_back(fmt::format("invalid learning rate: {}", o.lr));
  if (!(o.momentum >= 0.0))
    problems.push_back(fmt::format("invalid momentum value: {}", o.momentum));
  if (!(o.weight_decay >= 0.0)) {
    problems.push_back(fmt::format("invalid weight_decay value: {}", o.weight_decay));
  }
  if (o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0)) {
    problems.push_back("nesterov momentum requires a momentum and zero dampening");
  }
}

struct SGDUpdate {
  float* param;
  const float* grad;
  float* buffer;  // null without momentum
  bool first;     // the buffer is initialised to g on a parameter's first step
  float weight_decay, momentum, one_minus_dampening, neg_lr;
  bool nesterov;

  void run(int64_t begin, int64_t end) const {
    for (int64_t i = begin; i < end; ++i) {
      float g = grad[i];
      if (weight_decay != 0.0f) g = g + weight_decay * param[i];
      if (buffer) {
        const float b = first ? g : buffer[i] * momentum + one_minus_dampening * g;
        buffer[i] = b;
        g = nesterov ? g + momentum * b : b;
      }
      param[i] = param[i] + neg_lr * g;
    }
  }
};

}  // namespace

SGD::SGD(NamedTensors params, SGDOptions options)
    : Optimizer("SGD", std::move(params)), options_(options), momentum_buffer_(params_.size()) {
  std::vector<std::string> problems;
  check_sgd_options(options_, problems);
  throw_problems("SGD", problems);
}

void SGD::step() {
  ++step_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& param = params_[i].second;
    Tensor grad = param.grad();
    if (!grad.defined()) continue;
    check_grad(i, grad);
    bool first = false;
    if (options_.momentum != 0.0 && !momentum_buffer_[i].defined()) {
      momentum_buffer_[i] = empty(param.shape());  // the one allocation, on the first step
      first = true;
    }
    const SGDUpdate update{
        param.data(),
        std::as_const(grad).data(),
        options_.momentum != 0.0 ? momentum_buffer_[i].data() : nullptr,
        first,
        static_cast<float>(options_.weight_decay),
        static_cast<float>(options_.momentum),
        static_cast<float>(1.0 - options_.dampening),
        static_cast<float>(-options_.lr),
        options_.nesterov,
    };
    const SGDUpdate* u = &update;
    parallel_for(0, param.numel(), kUpdateGrain,
                 [u](int64_t begin, int64_t end) { u->run(begin, end); });
  }
}

void SGD::set_lr(double lr) {
  INK_CHECK(lr >= 0.0 && std::isfinite(lr), "SGD: invalid learning rate: {}", lr);
  options_.lr = lr;
}

std::vector<Optimizer::Slot> SGD::slots() {
  return {{"momentum_buffer", false, &momentum_buffer_}};
}

std::map<std::string, std::string> SGD::hyperparameters() const {
  return {{"lr", format_number(options_.lr)},
          {"momentum", format_number(options_.momentum)},
          {"dampening", format_number(options_.dampening)},
          {"weight_decay", format_number(options_.weight_decay)},
          {"nesterov", options_.nesterov ? "true" : "false"}};
}

void SGD::read_hyperparameters(const std::map<std::string, std::string>& metadata,
                               std::vector<std::string>& problems, bool apply) {
  SGDOptions o;
  o.lr = parse_number(metadata, "lr", problems);
  o.momentum = parse_number(metadata, "momentum", problems);
  o.dampening = parse_number(metadata, "dampening", problems);
  o.weight_decay = parse_number(metadata, "weight_decay", problems);
  auto nesterov = metadata.find("nesterov");
  if (nesterov == metadata.end() || (nesterov->second != "true" && nesterov->second != "false")) {
    problems.push_back("metadata \"nesterov\" must be \"true\" or \"false\"");
  } else {
    o.nesterov = nesterov->second == "true";
  }
  check_sgd_options(o, problems);
  if (apply) options_ = o;
}

// ---- LRSchedule ----

LRSchedule::LRSchedule(Options options) : options_(options) {
  const Options& o = options_;
  INK_CHECK(o.base_lr >= 0.0 && std::isfinite(o.base_lr), "LRSchedule: invalid base_lr: {}",
            o.base_lr);
  INK_CHECK(o.final_lr >= 0.0 && std::isfinite(o.final_lr), "LRSchedule: invalid final_lr: {}",
            o.final_lr);
  INK_CHECK(o.warmup_steps >= 0, "LRSchedule: warmup_steps must be >= 0, got {}", o.warmup_steps);
  INK_CHECK(o.decay != Decay::Cosine || o.total_steps > o.warmup_steps,
            "LRSchedule: a cosine schedule needs total_steps ({}) > warmup_steps ({})",
            o.total_steps, o.warmup_steps);
}

double LRSchedule::lr_at(int64_t step) const {
  const Options& o = options_;
  INK_CHECK(step >= 0, "LRSchedule::lr_at: step must be >= 0, got {}", step);
  if (step < o.warmup_steps) {
    return o.base_lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  }
  if (o.decay == Decay::Constant) return o.base_lr;
  const double progress =
      std::min(1.0, static_cast<double>(step - o.warmup_steps) /
                        static_cast<double>(std::max<int64_t>(1, o.total_steps - o.warmup_steps)));
  return o.final_lr +
         (o.base_lr - o.final_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

void LRSchedule::apply(Optimizer& optimizer) const {
  optimizer.set_lr(lr_at(optimizer.step_count()));
}

// ---- EMA ----

namespace {

// shadow = decay * shadow + one_minus_decay * value, elementwise.
struct EmaUpdate {
  float* shadow;
  const float* value;
  float decay, one_minus_decay;
  void run(int64_t begin, int64_t end) const {
    for (int64_t i = begin; i < end; ++i) {
      shadow[i] = shadow[i] * decay + value[i] * one_minus_decay;
    }
  }
};

// A detached copy of any dtype (parameters and buffers alike).
Tensor detached_copy(const Tensor& value) {
  NoGradGuard no_grad;
  return value.detach().clone();
}

}  // namespace

EMA::EMA(const Module& model, double decay) : decay_(decay) {
  INK_CHECK(decay >= 0.0 && decay <= 1.0, "EMA: decay must be in [0, 1], got {}", decay);
  for (const auto& [name, value] : model.state_dict()) {
    shadow_.emplace_back(name, detached_copy(value));
  }
}

void EMA::check_matches(const NamedTensors& state, const char* what) const {
  std::vector<std::string> problems;
  std::unordered_map<std::string, const Tensor*> given;
  for (const auto& [name, tensor] : state) given.emplace(name, &tensor);
  for (const auto& [name, shadow] : shadow_) {
    auto found = given.find(name);
    if (found == given.end()) {
      problems.push_back(fmt::format("the model has no \"{}\"", name));
    } else if (found->second->shape() != shadow.shape() ||
               found->second->dtype() != shadow.dtype()) {
      problems.push_back(fmt::format("\"{}\" is {} {} in the model, {} {} in the average", name,
                                     dtype_name(found->second->dtype()),
                                     shape_str(found->second->shape()), dtype_name(shadow.dtype()),
                                     shape_str(shadow.shape())));
    }
  }
  if (state.size() != shadow_.size() && problems.empty()) {
    problems.push_back(
        fmt::format("the model has {} entries, the average {}", state.size(), shadow_.size()));
  }
  throw_problems(std::string("EMA.") + what, problems);
}

void EMA::update(const Module& model) {
  update(model, decay_);
}

void EMA::update(const Module& model, double decay) {
  INK_CHECK(std::isfinite(decay) && decay >= 0.0 && decay <= 1.0,
            "EMA: decay must be in [0, 1], got {}", decay);
  const NamedTensors state = model.state_dict();
  check_matches(state, "update");
  std::unordered_map<std::string, const Tensor*> by_name;
  for (const auto& [name, tensor] : state) by_name.emplace(name, &tensor);
  std::vector<EmaUpdate> updates;
  std::vector<int64_t> numel;
  for (auto& [name, shadow] : shadow_) {
    const Tensor& value = *by_name.at(name);
    if (shadow.dtype() != DType::Float32) {
      shadow = detached_copy(value);  // counts such as num_batches_tracked are not averaged
      continue;
    }
    updates.push_back(
        {shadow.data(), value.data(), static_cast<float>(decay), static_cast<float>(1.0 - decay)});
    numel.push_back(shadow.numel());
  }
  update_all(numel, [&](size_t i, int64_t begin, int64_t end) { updates[i].run(begin, end); });
  ++num_updates_;
}

void EMA::copy_to(Module& model) const {
  check_matches(model.state_dict(), "copy_to");
  model.load_state_dict(shadow_);
}

SafetensorsFile EMA::state_dict() const {
  SafetensorsFile state;
  state.metadata = {{"format", "pt"},
                    {"ema_decay", format_number(decay_)},
                    {"ema_updates", std::to_string(num_updates_)}};
  state.tensors = shadow_;
  return state;
}

void EMA::load_state_dict(const SafetensorsFile& state) {
  std::vector<std::string> problems;
  const double decay = parse_number(state.metadata, "ema_decay", problems);
  if (problems.empty() && !(decay >= 0.0 && decay <= 1.0)) {
    problems.push_back(fmt::format("metadata \"ema_decay\" is {}, not in [0, 1]", decay));
  }
  const double updates = parse_number(state.metadata, "ema_updates", problems);
  if (problems.empty() && !(updates >= 0.0 && updates == std::floor(updates))) {
    problems.push_back(fmt::format("metadata \"ema_updates\" is {}, not a count", updates));
  }
  std::unordered_map<std::string, const Tensor*> given;
  for (const auto& [name, tensor] : state.tensors) {
    if (!given.emplace(name, &tensor).second) {
      problems.push_back(fmt::format("\"{}\" appears more than once", name));
    }
  }
  std::unordered_set<std::string> known;
  for (const auto& [name, shadow] : shadow_) {
    known.insert(name);
    auto found = given.find(name);
    if (found == given.end()) {
      problems.push_back(fmt::format("missing \"{}\"", name));
    } else if (found->second->shape() != shadow.shape() ||
               found->second->dtype() != shadow.dtype()) {
      problems.push_back(fmt::format("\"{}\" expected {} {}, file has {} {}", name,
                                     dtype_name(shadow.dtype()), shape_str(shadow.shape()),
                                     dtype_name(found->second->dtype()),
                                     shape_str(found->second->shape())));
    }
  }
  for (const auto& [name, tensor] : state.tensors) {
    if (!known.contains(name)) problems.push_back(fmt::format("unexpected \"{}\"", name));
  }
  throw_problems("EMA.load_state_dict", problems);
  decay_ = decay;
  num_updates_ = static_cast<int64_t>(updates);
  for (auto& [name, shadow] : shadow_) shadow = detached_copy(*given.at(name));
}

void EMA::save(const std::string& path) const {
  const SafetensorsFile state = state_dict();
  save_safetensors(path, state.tensors, state.metadata);
}

void EMA::load(const std::string& path) {
  SafetensorsFile state = load_safetensors(path);
  try {
    load_state_dict(state);
  } catch (const Error& e) {
    throw Error(fmt::format("{}\n  (while loading {})", e.what(), path));
  }
}

}  // namespace ink::nn
