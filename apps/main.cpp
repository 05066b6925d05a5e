// The inkgrad program: train the text-to-image model of the notebook, generate pictures from a
// checkpoint, draw the training data, and export the autograd graph. Errors are one line on
// stderr with a non-zero exit code, never a crash.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <random>

#include <fmt/format.h>

#include "apps/commands.h"
#include "apps/run_dir.h"
#include "tensor/error.h"
#include "tensor/quote.h"

namespace ink::app {

uint64_t fresh_seed() {
  std::random_device device;
  return (uint64_t{device()} << 32 | device()) & ((uint64_t{1} << 53) - 1);  // fits a double
}

void warn(const std::string& message) {
  fmt::print(stderr, "inkgrad: warning: {}\n", message);
}

void make_parent_folder(const std::string& file) {
  const std::filesystem::path parent = std::filesystem::path(file).parent_path();
  if (parent.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  INK_CHECK(!ec, "cannot create the folder {} for {}: {}", parent.string(), file, ec.message());
}

CLI::Option* add_seed_option(CLI::App* command, uint64_t& seed, const std::string& description) {
  const CLI::Validator digits_only(
      [](std::string& text) -> std::string {
        if (!text.empty() && text.find_first_not_of("0123456789") == std::string::npos) return "";
        return fmt::format("must be an integer in [0, 18446744073709551615], got {}",
                           quoted_text(text, 30));
      },
      "UINT64");
  return command->add_option("--seed", seed, description)->check(digits_only);
}

void check_range(const char* flag, int64_t value, int64_t low, int64_t high) {
  INK_CHECK(value >= low && value <= high, "{} must be between {} and {}, got {}", flag, low, high,
            value);
}

}  // namespace ink::app

int main(int argc, char** argv) {
  using namespace ink::app;
  open_standard_descriptors();  // before anything opens a file
  CLI::App app{
      "inkgrad: a text-to-image model trained from scratch on synthetic shapes.\n"
      "Start with `inkgrad train`, then look at runs/latest/samples.png.",
      "inkgrad"};
  app.require_subcommand(1);
  app.set_version_flag("--version", INK_VERSION);
  // CLI11's parse errors, as one line in the same style as ours.
  app.failure_message([](const CLI::App* top, const CLI::Error& error) {
    std::string usage = "inkgrad --help";
    for (const CLI::App* sub : top->get_subcommands())
      usage = "inkgrad " + sub->get_name() + " --help";
    return fmt::format("inkgrad: error: {} (see {})\n", one_line(error.what()), usage);
  });

  const std::pair<const char*, Command> commands[] = {
      {"train", add_train_command(app)},
      {"generate", add_generate_command(app)},
      {"data", add_data_command(app)},
      {"graph", add_graph_command(app)},
      {"eval", add_eval_command(app)},
      {"judge", add_judge_command(app)},  // eval and judge: cmd_eval.cpp
      {"serve", add_serve_command(app)},
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? 0 : 2;  // --help and --version succeed; usage errors are 2, as in getopt
  }

  try {
    for (const auto& [name, run] : commands) {
      if (app.got_subcommand(name)) return run();
    }
    return 2;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "inkgrad: error: out of memory\n");
  } catch (const std::exception& error) {
    fmt::print(stderr, "inkgrad: error: {}\n", one_line(error.what()));
  }
  return 1;
}
