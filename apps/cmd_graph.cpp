// `inkgrad graph`: the autograd graph of one training step (a small batch forward plus the MSE
// loss) as Graphviz DOT, with the parameters named, for people learning how autograd works.
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "apps/commands.h"
#include "apps/run_dir.h"
#include "models/shapes.h"
#include "models/text_to_image.h"
#include "nn/functional.h"
#include "nn/safetensors.h"
#include "tensor/dot.h"
#include "tensor/error.h"

namespace ink::app {
namespace {

struct GraphFlags {
  std::string out;
  int64_t batch_size = 4;
  uint64_t seed = 42;
};

int run_graph(const GraphFlags& flags) {
  INK_CHECK(!flags.out.empty(), "--out needs a file name, got \"\"");
  check_range("--batch-size", flags.batch_size, 2, 64);  // BatchNorm1d trains on 2 or more
  Generator generator(flags.seed);
  TextToImageModel model(TextToImageConfig{}, &generator);
  for (auto& [name, parameter] : model.named_parameters()) parameter.set_name(name);
  model.train();

  // A batch cycling through the prompts: token ids [B, L], targets [B, 1, 28, 28].
  const int64_t batch = flags.batch_size;
  const int64_t length = model.tokenizer().max_length();
  std::vector<int64_t> token_ids;
  std::vector<float> pixels(static_cast<size_t>(batch * kImagePixels));
  for (int64_t i = 0; i < batch; ++i) {
    const std::vector<int64_t> row = model.tokenizer().encode(kShapePrompts[i % kNumShapePrompts]);
    token_ids.insert(token_ids.end(), row.begin(), row.end());
    draw_shape(i % kNumShapePrompts, generator, pixels.data() + i * kImagePixels);
  }
  Tensor tokens = from_vector_i64(token_ids, {batch, length}).set_name("token_ids");
  Tensor targets = from_vector(pixels, {batch, 1, kImageSide, kImageSide}).set_name("target");
  Tensor noise = model.sample_noise(batch, generator).set_name("noise");
  Tensor loss = nn::functional::mse_loss(model.forward(tokens, noise), targets);

  const std::string dot = to_dot(loss);
  make_parent_folder(flags.out);
  write_file_atomic(flags.out, {reinterpret_cast<const uint8_t*>(dot.data()), dot.size()});
  std::FILE* messages = writes_to_stdout(flags.out) ? stderr : stdout;
  fmt::print(messages,
             "wrote {}: the autograd graph of one training step (batch {}, loss {:.4f})\n",
             flags.out, batch, loss.item());
  fmt::print(messages, "render it with: dot -Tsvg {} -o graph.svg\n", flags.out);
  return 0;
}

}  // namespace

Command add_graph_command(CLI::App& app) {
  auto flags = std::make_shared<GraphFlags>();
  CLI::App* sub = app.add_subcommand(
      "graph",
      "Write the autograd graph of one training step (forward and MSE loss) as Graphviz DOT.");
  sub->add_option("--out,-o", flags->out, "DOT file to write")->required();
  sub->add_option("--batch-size", flags->batch_size, "Samples in the step")->capture_default_str();
  sub->add_option("--seed", flags->seed, "Seed of the weights, data and noise")
      ->capture_default_str();
  return [flags] { return run_graph(*flags); };
}

}  // namespace ink::app
