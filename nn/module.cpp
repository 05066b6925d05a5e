// Module: registration, PyTorch-ordered traversal, state_dict / load_state_dict, print(model),
// and safetensors checkpoint helpers.
#include "nn/module.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <sstream>
#include <unordered_map>

#include "tensor/error.h"
#include "tensor/quote.h"

namespace ink::nn {

Module::Module(std::string type_name) : type_name_(std::move(type_name)) {}

// ---- registration ----

void Module::check_new_name(const std::string& name, const char* what) const {
  INK_CHECK(!name.empty(), "{}: {} name must not be empty (in {})", what, what, type_name_);
  INK_CHECK(name.find('.') == std::string::npos, "{}: {} name \"{}\" must not contain '.'", what,
            what, name);
  auto taken = [&](const auto& list) {
    for (const auto& entry : list) {
      if (entry.first == name) return true;
    }
    return false;
  };
  INK_CHECK(!taken(parameters_) && !taken(buffers_) && !taken(children_),
            "{}: \"{}\" is already registered in {}", what, name, type_name_);
}

Tensor Module::register_parameter(const std::string& name, Tensor tensor, bool requires_grad) {
  check_new_name(name, "register_parameter");
  if (tensor.defined()) {
    INK_CHECK(tensor.dtype() == DType::Float32,
              "register_parameter: \"{}\" must be Float32, got {}", name,
              dtype_name(tensor.dtype()));
    INK_CHECK(tensor.is_leaf(), "register_parameter: \"{}\" must be a leaf tensor (detach it)",
              name);
    tensor.set_requires_grad(requires_grad);
  }
  parameters_.emplace_back(name, tensor);
  return tensor;
}

Tensor Module::register_buffer(const std::string& name, Tensor tensor) {
  check_new_name(name, "register_buffer");
  buffers_.emplace_back(name, tensor);
  return tensor;
}

void Module::register_module_impl(const std::string& name, std::shared_ptr<Module> module) {
  check_new_name(name, "register_module");
  INK_CHECK(module != nullptr, "register_module: \"{}\" is null", name);
  INK_CHECK(module.get() != this, "register_module: \"{}\" cannot be the module itself", name);
  children_.emplace_back(name, std::move(module));
}

// ---- traversal ----

void Module::collect_named_tensors(bool parameters, bool recurse, const std::string& prefix,
                                   NamedTensors& out, std::unordered_set<const void*>& seen) const {
  for (const auto& [name, tensor] : parameters ? parameters_ : buffers_) {
    if (!tensor.defined() || !seen.insert(tensor.impl()).second) continue;
    out.emplace_back(prefix + name, tensor);
  }
  if (!recurse) return;
  for (const auto& [name, child] : children_) {
    child->collect_named_tensors(parameters, recurse, prefix + name + ".", out, seen);
  }
}

NamedTensors Module::named_parameters(bool recurse) const {
  NamedTensors out;
  std::unordered_set<const void*> seen;
  collect_named_tensors(true, recurse, "", out, seen);
  return out;
}

NamedTensors Module::named_buffers(bool recurse) const {
  NamedTensors out;
  std::unordered_set<const void*> seen;
  collect_named_tensors(false, recurse, "", out, seen);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& entry : named_parameters(recurse)) out.push_back(std::move(entry.second));
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& entry : named_buffers(recurse)) out.push_back(std::move(entry.second));
  return out;
}

void Module::collect_named_modules(const std::string& prefix,
                                   std::vector<std::pair<std::string, Module*>>& out,
                                   std::unordered_set<const void*>& seen) {
  if (!seen.insert(this).second) return;
  out.emplace_back(prefix, this);
  for (const auto& [name, child] : children_) {
    child->collect_named_modules(prefix.empty() ? name : prefix + "." + name, out, seen);
  }
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out;
  std::unordered_set<const void*> seen;
  collect_named_modules("", out, seen);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t total = 0;
  for (const auto& [name, tensor] : named_parameters()) total += tensor.numel();
  return total;
}

void Module::zero_grad() {
  for (auto& [name, tensor] : named_parameters()) {
    if (tensor.grad().defined()) tensor.zero_grad();
  }
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

// ---- state ----

void Module::collect_state(const std::string& prefix, NamedTensors& out) const {
  for (const auto& [name, tensor] : parameters_) {
    if (tensor.defined()) out.emplace_back(prefix + name, tensor);
  }
  for (const auto& [name, tensor] : buffers_) {
    if (tensor.defined()) out.emplace_back(prefix + name, tensor);
  }
  for (const auto& [name, child] : children_) child->collect_state(prefix + name + ".", out);
}

NamedTensors Module::state_dict() const {
  NamedTensors out;
  collect_state("", out);
  return out;
}

namespace {

// A tensor name from a file, quoted for a message (it may hold anything, at any length).
std::string shown(std::string_view name) {
  return quoted_text(name, kMaxQuotedCharacters);
}

std::string describe(const Tensor& t) {
  return fmt::format("{} {}", dtype_name(t.dtype()), shape_str(t.shape()));
}

// Copies the raw bytes of `src` into `dst` (same dtype and shape, both contiguous). Not recorded
// by autograd: this is an in-place assignment of a leaf's value, like torch.no_grad() copy_.
void copy_values(const Tensor& dst, const Tensor& src) {
  const size_t element = dtype_size(dst.dtype());
  auto* to = static_cast<uint8_t*>(dst.impl()->storage->data()) + dst.impl()->offset * element;
  const auto* from =
      static_cast<const uint8_t*>(src.impl()->storage->data()) + src.impl()->offset * element;
  std::memmove(to, from, static_cast<size_t>(dst.numel()) * element);
}

}  // namespace

void Module::load_state_dict(const NamedTensors& state, bool strict) {
  std::vector<std::string> problems;
  std::unordered_map<std::string, size_t> given;
  for (size_t i = 0; i < state.size(); ++i) {
    const auto& [name, tensor] = state[i];
    if (!given.emplace(name, i).second) {
      problems.push_back(fmt::format("{} appears more than once", shown(name)));
    } else if (!tensor.defined()) {
      problems.push_back(fmt::format("{} is an undefined tensor", shown(name)));
    }
  }

  const NamedTensors expected = state_dict();
  std::unordered_set<std::string> expected_names;
  std::vector<std::pair<Tensor, Tensor>> copies;  // (destination, source)
  for (const auto& [name, target] : expected) {
    expected_names.insert(name);
    auto found = given.find(name);
    if (found == given.end()) {
      if (strict) {
        problems.push_back(fmt::format("missing {} (expected {})", shown(name), describe(target)));
      }
      continue;
    }
    const Tensor& source = state[found->second].second;
    if (!source.defined()) continue;  // already reported
    if (source.dtype() != target.dtype()) {
      problems.push_back(fmt::format("{} expected {}, file has {}", shown(name), describe(target),
                                     describe(source)));
    } else if (source.shape() != target.shape()) {
      problems.push_back(fmt::format("{} expected {}, file has {}", shown(name),
                                     shape_str(target.shape()), shape_str(source.shape())));
    } else {
      copies.emplace_back(target, source);
    }
  }
  if (strict) {
    for (const auto& [name, tensor] : state) {
      if (!expected_names.contains(name)) {
        problems.push_back(tensor.defined()
                               ? fmt::format("unexpected {} ({})", shown(name), describe(tensor))
                               : fmt::format("unexpected {}", shown(name)));
      }
    }
  }

  if (problems.size() == 1) INK_FAIL("load_state_dict: {}", problems[0]);
  if (!problems.empty()) {
    INK_FAIL("load_state_dict: {} problems loading into {}:\n  {}", problems.size(), type_name_,
             fmt::join(problems, "\n  "));
  }
  for (const auto& [target, source] : copies) copy_values(target, source);
}

// ---- printing ----

namespace {

// Indents every line after the first by two spaces, as PyTorch's _addindent does.
std::string add_indent(const std::string& text) {
  std::string out;
  for (char c : text) {
    out += c;
    if (c == '\n') out += "  ";
  }
  return out;
}

}  // namespace

std::string Module::to_string() const {
  std::vector<std::string> extra_lines;
  const std::string extra = extra_repr();
  if (!extra.empty()) {
    std::istringstream lines(extra);
    for (std::string line; std::getline(lines, line);) extra_lines.push_back(line);
  }
  std::vector<std::string> lines = extra_lines;
  for (const auto& [name, child] : children_) {
    lines.push_back("(" + name + "): " + add_indent(child->to_string()));
  }
  std::string out = type_name_ + "(";
  if (extra_lines.size() == 1 && children_.empty()) {
    out += extra_lines[0];
  } else if (!lines.empty()) {
    out += fmt::format("\n  {}\n", fmt::join(lines, "\n  "));
  }
  return out + ")";
}

std::ostream& operator<<(std::ostream& os, const Module& module) {
  return os << module.to_string();
}

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // The shortest digits that round-trip, as "d.ddde±XX"; then Python's layout rule: scientific
  // when the decimal exponent is below -4 or at least 16, otherwise positional with ".0" added
  // to whole numbers.
  char buffer[64];
  auto [end, error] =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  std::string text(buffer, end);
  const size_t e = text.find('e');
  std::string mantissa = text.substr(0, e);
  const int exponent = std::stoi(text.substr(e + 1));
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits += c;
  }
  std::string out;
  if (exponent < -4 || exponent >= 16) {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+', std::abs(exponent));
  } else if (exponent < 0) {
    out = "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
  } else {
    const size_t whole = static_cast<size_t>(exponent) + 1;
    if (digits.size() <= whole) {
      out = digits + std::string(whole - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, whole) + "." + digits.substr(whole);
    }
  }
  return negative ? "-" + out : out;
}

// ---- checkpoints ----

void save_state_dict(const Module& module, const std::string& path) {
  save_safetensors(path, module.state_dict(), {{"format", "pt"}});
}

void load_state_dict_file(Module& module, const std::string& path, bool strict) {
  SafetensorsFile file = load_safetensors(path);
  try {
    module.load_state_dict(file.tensors, strict);
  } catch (const Error& e) {
    throw Error(fmt::format("{}\n  (while loading {})", e.what(), path));
  }
}

}  // namespace ink::nn
