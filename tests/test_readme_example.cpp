// The worked autograd example shown in README.md, compiled and run as a test. A second test
// checks that the README shows exactly the code between the markers below.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tensor/inkgrad.h"

namespace {

// README-EXAMPLE-BEGIN
TEST(ReadmeExample, FitALineWithAutograd) {
  using namespace ink;
  Generator gen(0);
  Tensor x = randn({64, 1}, &gen);  // inputs
  Tensor y = x * 3.0f + 0.5f;       // targets: y = 3x + 0.5
  Tensor w = zeros({1, 1}).set_requires_grad(true).set_name("w");
  Tensor b = zeros({1}).set_requires_grad(true).set_name("b");

  for (int step = 0; step < 200; ++step) {
    Tensor prediction = matmul(x, w) + b;  // [64, 1], b is broadcast
    Tensor loss = mean(pow(prediction - y, 2.0f));
    w.zero_grad();
    b.zero_grad();
    loss.backward();      // fills w.grad() and b.grad()
    NoGradGuard no_grad;  // ops here record no graph (writes through data() never do)
    w.data()[0] -= 0.1f * w.grad().item();
    b.data()[0] -= 0.1f * b.grad().item();
  }
  EXPECT_NEAR(w.item(), 3.0f, 1e-3);
  EXPECT_NEAR(b.item(), 0.5f, 1e-3);

  // The graph of one more step, as Graphviz DOT (render: dot -Tpng graph.dot -o graph.png).
  std::string dot = to_dot(mean(pow(matmul(x, w) + b - y, 2.0f)));
  EXPECT_NE(dot.find("matmul"), std::string::npos);
}
// README-EXAMPLE-END

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string between(const std::string& text, const std::string& begin, const std::string& end) {
  const size_t b = text.find(begin);
  const size_t e = text.find(end, b == std::string::npos ? 0 : b);
  if (b == std::string::npos || e == std::string::npos) return "";
  const size_t start = text.find('\n', b) + 1;
  return text.substr(start, text.rfind('\n', e) + 1 - start);
}

TEST(ReadmeExample, ReadmeShowsThisExactCode) {
  const std::string source = read_file(INK_SOURCE_DIR "/tests/test_readme_example.cpp");
  const std::string readme = read_file(INK_SOURCE_DIR "/README.md");
  const std::string code = between(source,
                                   "// README-EXAMPLE-"
                                   "BEGIN",
                                   "// README-EXAMPLE-"
                                   "END");
  ASSERT_FALSE(code.empty());
  EXPECT_NE(readme.find(code), std::string::npos)
      << "README.md must contain the example between the markers of this file verbatim";
}

}  // namespace
