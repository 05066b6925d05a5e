// to_dot: writes the autograd graph below a tensor as Graphviz DOT.
#include "tensor/dot.h"

#include <unordered_map>
#include <vector>

#include "tensor/autograd.h"
#include "tensor/error.h"

namespace ink {

namespace {
std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}
}  // namespace

std::string to_dot(const Tensor& root) {
  INK_CHECK(root.defined(), "to_dot: the tensor is undefined");
  std::string out =
      "digraph autograd {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=10];\n";
  std::unordered_map<TensorImpl*, int> ids;
  std::vector<Tensor> stack = {root};
  ids[root.impl()] = 0;
  std::string edges;
  while (!stack.empty()) {
    Tensor t = stack.back();
    stack.pop_back();
    const int id = ids.at(t.impl());
    const std::string shape = shape_str(t.shape());
    const auto& node = t.grad_fn();
    if (node) {
      out += fmt::format(
          "  t{} [shape=ellipse, style=filled, fillcolor=\"#dde8f7\", label=\"{}\\n{}\"];\n", id,
          escape(node->op_name), shape);
      for (const Tensor& input : node->inputs) {
        if (!input.defined()) continue;
        auto [it, inserted] = ids.try_emplace(input.impl(), static_cast<int>(ids.size()));
        if (inserted) stack.push_back(input);
        edges += fmt::format("  t{} -> t{};\n", it->second, id);
      }
    } else {
      const std::string name = t.name().empty() ? (t.requires_grad() ? "leaf" : "input") : t.name();
      const char* color = t.requires_grad() ? "#f7e3c8" : "#eeeeee";
      out += fmt::format("  t{} [shape=box, style=filled, fillcolor=\"{}\", label=\"{}\\n{}\"];\n",
                         id, color, escape(name), shape);
    }
  }
  out += edges;
  out += "}\n";
  return out;
}

}  // namespace ink
