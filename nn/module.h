// Module: the base of every layer and model, with PyTorch's registration API, dotted names,
// train/eval mode, state_dict / load_state_dict and print(model). Checkpoint files use
// safetensors with the state_dict names.
#pragma once

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "nn/safetensors.h"
#include "tensor/autograd.h"
#include "tensor/tensor.h"

namespace ink::nn {

class Module;
using NamedModules = std::vector<std::pair<std::string, std::shared_ptr<Module>>>;

// What this object represents: a node in a tree of modules. Each module owns named parameters
// (tensors that train), named buffers (state that is saved but not trained, such as BatchNorm's
// running statistics) and named child modules, all kept in the order they were registered.
// Dotted names ("image_generator.decoder.0.weight") and their order match PyTorch exactly, so a
// state_dict moves between the two by name.
//
// Tensors are handles: the member a layer keeps (Linear::weight) and the entry registered here
// are the same tensor. load_state_dict copies values into the existing storage, so those
// handles, and an optimizer's references to the parameters, stay valid.
class Module {
 public:
  // `type_name` is what print(model) shows, the class name in PyTorch ("Linear", "Sequential").
  explicit Module(std::string type_name = "Module");
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // ---- registration (names must be unique within this module, non-empty and without '.') ----
  // Registers `tensor` as a parameter and marks it as requiring grad. An undefined tensor
  // registers an absent parameter (like PyTorch's `register_parameter("bias", None)`): it is
  // skipped by every listing. Returns the same handle.
  Tensor register_parameter(const std::string& name, Tensor tensor, bool requires_grad = true);
  Tensor register_buffer(const std::string& name, Tensor tensor);
  // Registers a child and returns it with its own type, so a layer can keep a typed member:
  //   linear_ = register_module("linear", std::make_shared<Linear>(32, 128));
  template <typename ModuleType>
  std::shared_ptr<ModuleType> register_module(const std::string& name,
                                              std::shared_ptr<ModuleType> module) {
    register_module_impl(name, module);
    return module;
  }

  // ---- traversal, in PyTorch's order ----
  // Parameters of this module, then of each child in registration order (pre-order). With
  // `recurse` false, only this module's own. A tensor registered twice is listed once.
  NamedTensors named_parameters(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  // This module as "" followed by every descendant, pre-order (each module once). The pointers
  // are non-owning and live as long as this module.
  std::vector<std::pair<std::string, Module*>> named_modules();
  // The direct children, in registration order.
  const NamedModules& named_children() const { return children_; }
  // Total element count of all parameters.
  int64_t num_parameters() const;

  // Zeroes every parameter's accumulated gradient in place (no allocation).
  void zero_grad();

  // ---- mode: changes layer behaviour (BatchNorm statistics), not graph recording ----
  // Sets training mode on this module and all descendants. Virtual so that a module can extend
  // it (keep a frozen child in eval mode, say); an override should call Module::train(on).
  virtual void train(bool on = true);
  void eval() { train(false); }
  // The mode a forward should use: false while an InferenceGuard is alive on this thread, the
  // module's own mode otherwise. Layers read this, never the flag directly.
  bool is_training() const;
  // The module's own mode as set by train()/eval(), whatever thread asks.
  bool training_mode() const { return training_; }

  // ---- state ----
  // Copies the values of every parameter and buffer of `source` into this module's tensors of
  // the same name (an EMA or a second inference copy of a model). Both modules must have the
  // same names, dtypes and shapes; otherwise an ink::Error lists every difference and nothing
  // is copied. Handles into this module stay valid. Not recorded by autograd.
  void copy_values_from(const Module& source);
  // Every parameter and buffer by dotted name, in PyTorch's state_dict order: a module's own
  // parameters, then its own buffers, then each child's entries. The tensors are the module's
  // own (not copies); clone them to keep a snapshot.
  NamedTensors state_dict() const;
  // Copies `state` into this module's tensors by name. Problems are collected and reported
  // together in one ink::Error: names in `state` that the module lacks ("unexpected") and names
  // the module has that `state` lacks ("missing") when `strict`, any dtype or shape mismatch
  // (always), and values that cannot work (always): NaN or infinite values in any Float32
  // tensor, a negative BatchNorm running_var or num_batches_tracked. The module is modified only
  // when there is no problem at all.
  void load_state_dict(const NamedTensors& state, bool strict = true);
  // The same from an opened file, without a copy of it in memory: the header's names, dtypes
  // and shapes are checked against this module before any data is read (a mismatch leaves the
  // module untouched), then each tensor is read straight into the module's storage and its
  // values checked. A value problem is found only after reading, so it leaves the module
  // partly loaded: load into a fresh module, as generate and resume do.
  void load_state_dict(const SafetensorsReader& file, bool strict = true);
  // The name, dtype and shape problems load_state_dict(file) would throw, without reading data.
  void check_state_dict(const SafetensorsReader& file, bool strict = true) const;

  // ---- printing, like Python's print(model) ----
  const std::string& type_name() const { return type_name_; }
  // The hyper-parameters shown between the parentheses, e.g. "in_features=32, out_features=128,
  // bias=True". Empty by default.
  virtual std::string extra_repr() const { return ""; }
  // The module tree in PyTorch's format.
  std::string to_string() const;

 private:
  void register_module_impl(const std::string& name, std::shared_ptr<Module> module);
  void check_new_name(const std::string& name, const char* what) const;
  void collect_named_tensors(bool parameters, bool recurse, const std::string& prefix,
                             NamedTensors& out, std::unordered_set<const void*>& seen) const;
  void collect_named_modules(const std::string& prefix,
                             std::vector<std::pair<std::string, Module*>>& out,
                             std::unordered_set<const void*>& seen);
  void collect_state(const std::string& prefix, NamedTensors& out) const;

  std::string type_name_;
  bool training_ = true;
  NamedTensors parameters_;  // may hold undefined tensors (absent parameters)
  NamedTensors buffers_;
  NamedModules children_;
};

std::ostream& operator<<(std::ostream& os, const Module& module);

// What this object represents: inference on the calling thread. While a guard is alive, every
// module's is_training() is false on this thread (BatchNorm uses its running statistics and
// leaves them alone) and no graph is recorded, yet no module is changed: several threads may
// run one shared model at once, each under its own guard. Guards nest.
//
//   InferenceGuard inference;
//   Tensor images = model.forward(tokens, noise);
class InferenceGuard {
 public:
  InferenceGuard();
  ~InferenceGuard();
  InferenceGuard(const InferenceGuard&) = delete;
  InferenceGuard& operator=(const InferenceGuard&) = delete;
  // Whether a guard is alive on this thread.
  static bool active();

 private:
  NoGradGuard no_grad_;
  bool previous_;
};

// What this object represents: an ordered list of child modules named "0", "1", ...,
// torch.nn.ModuleList. It has no forward: the owner decides how to call its children (a U-Net's
// levels, a transformer's layers), including children whose forward takes several inputs.
class ModuleList : public Module {
 public:
  ModuleList() : Module("ModuleList") {}
  // Appends `module` as child str(size()) and returns it with its own type.
  template <typename ModuleType>
  std::shared_ptr<ModuleType> push_back(std::shared_ptr<ModuleType> module) {
    register_module(std::to_string(size()), module);
    return module;
  }
  size_t size() const { return named_children().size(); }
  // The child at `index`; throws ink::Error when out of range.
  Module& operator[](size_t index) const;
  // The child at `index` as its own type; throws ink::Error when out of range or not a
  // ModuleType.
  template <typename ModuleType>
  ModuleType& at(size_t index) const {
    auto* typed = dynamic_cast<ModuleType*>(&(*this)[index]);
    check_type(typed != nullptr, index);
    return *typed;
  }

 private:
  void check_type(bool ok, size_t index) const;
};

// What this object represents: a module whose forward maps one tensor to one tensor, so it can
// be chained in a Sequential. Module itself declares no forward: a layer with another signature
// (forward(x, context, mask), say) derives from Module directly and defines its own.
class UnaryModule : public Module {
 public:
  using Module::Module;
  virtual Tensor forward(const Tensor& input) = 0;
  Tensor operator()(const Tensor& input) { return forward(input); }
};

// ---- checkpoints ----
// Writes module.state_dict() to a safetensors file (atomically), with __metadata__
// {"format": "pt"} so that PyTorch's safetensors.torch.load_file reads it.
void save_state_dict(const Module& module, const std::string& path);
// Opens a safetensors file and load_state_dict()s it into `module` (header first, then the data
// straight into the module, so memory stays at the module's size whatever the file claims);
// errors name the path.
void load_state_dict_file(Module& module, const std::string& path, bool strict = true);

// Copies the bytes of `source` into `destination` in place: same dtype and shape, both
// contiguous (throws ink::Error otherwise, naming both shapes). Not recorded by autograd, like
// PyTorch's copy_ under no_grad; handles on `destination` see the new values, and its version
// counter counts the write.
void copy_values(const Tensor& destination, const Tensor& source);

// Python's repr of a float ("1e-05", "0.1", "1.0"), used by extra_repr() to print
// hyper-parameters as PyTorch does.
std::string python_float_repr(double value);

}  // namespace ink::nn
