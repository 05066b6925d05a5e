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
  auto leaf_box = [&out](int id, const std::string& name, const Shape& shape, bool needs_grad) {
    const char* color = needs_grad ? "#f7e3c8" : "#eeeeee";
    const std::string label = name.empty() ? (needs_grad ? "leaf" : "input") : name;
    out += fmt::format("  t{} [shape=box, style=filled, fillcolor=\"{}\", label=\"{}\\n{}\"];\n",
                       id, color, escape(label), shape_str(shape));
  };
  std::shared_ptr<Node> root_node = root.grad_fn();
  if (!root_node) {  // a leaf: the graph is one box
    leaf_box(0, root.name(), root.shape(), root.requires_grad());
    return out + "}\n";
  }
  // Walks the nodes (ops and leaf accumulators); an input that needs no gradient has no node,
  // so it is drawn as a grey box of its own for each use.
  std::unordered_map<Node*, int> ids;
  std::vector<Node*> stack = {root_node.get()};
  ids[root_node.get()] = 0;
  int next_id = 1;
  std::string edges;
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    const int id = ids.at(node);
    if (node->is_accumulator()) {
      leaf_box(id, node->leaf->name, node->leaf->shape, true);
      continue;
    }
    out += fmt::format(
        "  t{} [shape=ellipse, style=filled, fillcolor=\"#dde8f7\", label=\"{}\\n{}\"];\n", id,
        escape(node->op_name), shape_str(node->output_shape));
    for (const Node::Edge& edge : node->edges) {
      if (edge.node) {
        auto [it, inserted] = ids.try_emplace(edge.node.get(), next_id);
        if (inserted) {
          ++next_id;
          stack.push_back(edge.node.get());
        }
        edges += fmt::format("  t{} -> t{};\n", it->second, id);
      } else if (edge.defined) {
        const int input_id = next_id++;
        leaf_box(input_id, edge.name, edge.shape, false);
        edges += fmt::format("  t{} -> t{};\n", input_id, id);
      }
    }
  }
  out += edges;
  out += "}\n";
  return out;
}

}  // namespace ink
