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

namespace {
thread_local bool t_inference = false;
}  // namespace

bool Module::is_training() const {
  return training_ && !t_inference;
}

InferenceGuard::InferenceGuard() : previous_(t_inference) {
  t_inference = true;
}

InferenceGuard::~InferenceGuard() {
  t_inference = previous_;
}

bool InferenceGuard::active() {
  return t_inference;
}

// ---- ModuleList ----

Module& ModuleList::operator[](size_t index) const {
  INK_CHECK(index < size(), "ModuleList: index {} is out of range for {} modules", index, size());
  return *named_children()[index].second;
}

void ModuleList::check_type(bool ok, size_t index) const {
  INK_CHECK(ok, "ModuleList::at: module {} is a {}, not the requested type", index,
            (*this)[index].type_name());
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

std::string describe(DType dtype, const Shape& shape) {
  return fmt::format("{} {}", dtype_name(dtype), shape_str(shape));
}

std::string describe(const Tensor& t) {
  return describe(t.dtype(), t.shape());
}

// A tensor offered for loading: from memory (a NamedTensors entry) or from a file's header.
struct Offered {
  std::string_view name;
  bool defined = true;
  DType dtype = DType::Float32;
  const Shape* shape = nullptr;
};

// Matches `offered` to the module's `expected` tensors by name. Returns every problem
// (duplicates; missing and unexpected names when `strict`; dtype and shape mismatches) and puts
// the (expected index, offered index) of each tensor to load into `matches`.
std::vector<std::string> match_state(const NamedTensors& expected,
                                     const std::vector<Offered>& offered, bool strict,
                                     std::vector<std::pair<size_t, size_t>>& matches) {
  std::vector<std::string> problems;
  std::unordered_map<std::string_view, size_t> given;
  for (size_t i = 0; i < offered.size(); ++i) {
    if (!given.emplace(offered[i].name, i).second) {
      problems.push_back(fmt::format("{} appears more than once", shown(offered[i].name)));
    } else if (!offered[i].defined) {
      problems.push_back(fmt::format("{} is an undefined tensor", shown(offered[i].name)));
    }
  }
  std::unordered_set<std::string_view> expected_names;
  for (size_t t = 0; t < expected.size(); ++t) {
    const auto& [name, target] = expected[t];
    expected_names.insert(name);
    auto found = given.find(name);
    if (found == given.end()) {
      if (strict) {
        problems.push_back(fmt::format("missing {} (expected {})", shown(name), describe(target)));
      }
      continue;
    }
    const Offered& source = offered[found->second];
    if (!source.defined) continue;  // already reported
    if (source.dtype != target.dtype()) {
      problems.push_back(fmt::format("{} expected {}, file has {}", shown(name), describe(target),
                                     describe(source.dtype, *source.shape)));
    } else if (*source.shape != target.shape()) {
      problems.push_back(fmt::format("{} expected {}, file has {}", shown(name),
                                     shape_str(target.shape()), shape_str(*source.shape)));
    } else {
      matches.emplace_back(t, found->second);
    }
  }
  if (strict) {
    for (const Offered& source : offered) {
      if (!expected_names.contains(source.name)) {
        problems.push_back(source.defined ? fmt::format("unexpected {} ({})", shown(source.name),
                                                        describe(source.dtype, *source.shape))
                                          : fmt::format("unexpected {}", shown(source.name)));
      }
    }
  }
  return problems;
}

void throw_problems(const std::vector<std::string>& problems, const std::string& type_name) {
  if (problems.size() == 1) INK_FAIL("load_state_dict: {}", problems[0]);
  if (!problems.empty()) {
    INK_FAIL("load_state_dict: {} problems loading into {}:\n  {}", problems.size(), type_name,
             fmt::join(problems, "\n  "));
  }
}

// Why loaded values cannot work, or "" when they can. Weights that are NaN or infinite give
// black or saturated pictures with no other sign, and BatchNorm's running statistics (found by
// their PyTorch names) have values no data can produce: a negative or NaN variance, a negative
// count of batches.
std::string value_problem(std::string_view name, const Tensor& t) {
  const std::string_view leaf = name.substr(name.rfind('.') + 1);  // npos + 1 == 0
  if (t.dtype() == DType::Int64) {
    if (leaf != "num_batches_tracked") return "";
    const int64_t* values = t.data_i64();
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (values[i] < 0) {
        return fmt::format("{} is {}, but a count of batches cannot be negative", shown(name),
                           values[i]);
      }
    }
    return "";
  }
  if (t.dtype() != DType::Float32) return "";
  const float* values = t.data();
  int64_t nans = 0, infinities = 0, first = -1;
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (std::isfinite(values[i])) continue;
    (std::isnan(values[i]) ? nans : infinities) += 1;
    if (first < 0) first = i;
  }
  if (first >= 0) {
    return fmt::format(
        "{} holds {} non-finite value{} ({} NaN, {} infinite; the first at index {}): a model "
        "with these weights cannot work",
        shown(name), nans + infinities, nans + infinities == 1 ? "" : "s", nans, infinities, first);
  }
  if (leaf == "running_var") {
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (values[i] < 0.0f) {
        return fmt::format("{} holds a negative variance {} at index {}", shown(name), values[i],
                           i);
      }
    }
  }
  return "";
}

}  // namespace

void copy_values(const Tensor& destination, const Tensor& source) {
  INK_CHECK(destination.defined() && source.defined(), "copy_values: undefined tensor");
  INK_CHECK(destination.dtype() == source.dtype() && destination.shape() == source.shape(),
            "copy_values: destination {} and source {} differ", describe(destination),
            describe(source));
  const size_t element = dtype_size(destination.dtype());
  auto* to = static_cast<uint8_t*>(destination.impl()->storage->data()) +
             destination.impl()->offset * element;
  const auto* from =
      static_cast<const uint8_t*>(source.impl()->storage->data()) + source.impl()->offset * element;
  if (to == from) return;
  std::memmove(to, from, static_cast<size_t>(destination.numel()) * element);
  destination.bump_version();  // a write, as far as a pending backward that saved it knows
}

void Module::copy_values_from(const Module& source) {
  // Strict loading checks every name, dtype and shape before anything is written.
  load_state_dict(source.state_dict(), /*strict=*/true);
}

void Module::load_state_dict(const NamedTensors& state, bool strict) {
  std::vector<Offered> offered;
  offered.reserve(state.size());
  for (const auto& [name, tensor] : state) {
    offered.push_back(tensor.defined() ? Offered{name, true, tensor.dtype(), &tensor.shape()}
                                       : Offered{name, false});
  }
  const NamedTensors expected = state_dict();
  std::vector<std::pair<size_t, size_t>> matches;
  std::vector<std::string> problems = match_state(expected, offered, strict, matches);
  for (const auto& [target, source] : matches) {
    std::string problem = value_problem(expected[target].first, state[source].second);
    if (!problem.empty()) problems.push_back(std::move(problem));
  }
  throw_problems(problems, type_name_);
  for (const auto& [target, source] : matches) {
    copy_values(expected[target].second, state[source].second);
  }
}

namespace {

std::vector<Offered> offered_by(const SafetensorsReader& file) {
  std::vector<Offered> offered;
  offered.reserve(file.entries().size());
  for (const SafetensorsEntry& e : file.entries())
    offered.push_back({e.name, true, e.dtype, &e.shape});
  return offered;
}

}  // namespace

void Module::check_state_dict(const SafetensorsReader& file, bool strict) const {
  std::vector<std::pair<size_t, size_t>> matches;
  throw_problems(match_state(state_dict(), offered_by(file), strict, matches), type_name_);
}

void Module::load_state_dict(const SafetensorsReader& file, bool strict) {
  const NamedTensors expected = state_dict();
  std::vector<std::pair<size_t, size_t>> matches;
  throw_problems(match_state(expected, offered_by(file), strict, matches), type_name_);
  // The header matches this module, so no data was read yet and each tensor's bytes are known to
  // fit: read them straight into the module's own storage.
  std::vector<std::string> problems;
  for (const auto& [target, source] : matches) {
    file.read_into(source, expected[target].second);
    std::string problem = value_problem(expected[target].first, expected[target].second);
    if (!problem.empty()) problems.push_back(std::move(problem));
  }
  throw_problems(problems, type_name_);
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
  const SafetensorsReader file(path);  // reads and checks only the header
  try {
    module.load_state_dict(file, strict);
  } catch (const Error& e) {
    throw Error(fmt::format("{}\n  (while loading {})", e.what(), path));
  }
}

}  // namespace ink::nn
