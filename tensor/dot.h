// to_dot: the graph that produced a tensor, as Graphviz DOT text (micrograd's draw_dot).
// Render it with: dot -Tpng graph.dot -o graph.png
#pragma once

#include <string>

#include "tensor/tensor.h"

namespace ink {

// Op nodes show their name and output shape; leaves show their name (if set) and shape.
// Edges point from inputs to the op that consumed them, in the direction of the forward pass.
std::string to_dot(const Tensor& root);

}  // namespace ink
