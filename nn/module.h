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
  // Sets training mode on this module and all descendants.
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // ---- state ----
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

// What this object represents: a module whose forward maps one tensor to one tensor, so it can
// be chained in a Sequential. Layers with other signatures derive from Module directly.
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

// Python's repr of a float ("1e-05", "0.1", "1.0"), used by extra_repr() to print
// hyper-parameters as PyTorch does.
std::string python_float_repr(double value);

}  // namespace ink::nn
