// Writes an untrained diffusion checkpoint of the "tiny" preset (fixed seed) for the serve
// tests: make_tiny_checkpoint OUT.safetensors [mlp]. Untrained is enough to test the API and the
// page; it is fast where `inkgrad train` takes minutes.
#include <cstdio>
#include <exception>
#include <string>

#include "models/diffusion/model.h"
#include "models/registry.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_tiny_checkpoint OUT.safetensors [mlp]\n");
    return 2;
  }
  try {
    ink::Generator generator(1234);
    if (argc > 2 && std::string(argv[2]) == "mlp") {
      ink::save_model(*ink::make_model("mlp", "", &generator), argv[1]);
    } else {
      const ink::diffusion::TextToImageDiffusion model(
          ink::diffusion::DiffusionConfig::preset("tiny"), &generator);
      ink::save_model(model, argv[1]);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "make_tiny_checkpoint: %s\n", error.what());
    return 1;
  }
  return 0;
}
