// The subcommands of the inkgrad program. Each add_*_command registers its flags on the CLI11
// app and returns the function that runs it once the command line has been parsed; that
// function returns the exit code and reports failures by throwing ink::Error.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace ink {
class ImageModel;
}  // namespace ink

namespace ink::app {

using Command = std::function<int()>;

Command add_train_command(CLI::App& app);
Command add_generate_command(CLI::App& app);
Command add_data_command(CLI::App& app);
Command add_graph_command(CLI::App& app);
Command add_eval_command(CLI::App& app);
Command add_judge_command(CLI::App& app);
Command add_serve_command(CLI::App& app);

// Shared by the commands: a random 64-bit seed when the user gave none.
uint64_t fresh_seed();
// Prints "inkgrad: warning: <message>" on stderr.
void warn(const std::string& message);
// Creates the folder that will hold `file` (if any), with a clear error when it cannot.
void make_parent_folder(const std::string& file);
// Adds --seed (a uint64) to `command`, refusing anything but decimal digits: "-1" is an error
// rather than 2^64 - 1.
CLI::Option* add_seed_option(CLI::App* command, uint64_t& seed, const std::string& description);
// Throws ink::Error "<flag> must be between <low> and <high>, got <value>" when out of range.
void check_range(const char* flag, int64_t value, int64_t low, int64_t high);

// The short eval at the end of `inkgrad train` (cmd_eval.cpp): scores `model` with the judge and
// writes <dir>/eval.json, printing one summary line; only warns when no judge is available.
// A diffusion model samples with `steps` sampler steps (0: generate's default) and the default
// guidance; samples_per_prompt 0 skips the eval.
void write_run_eval(const std::string& dir, ImageModel& model, uint64_t seed,
                    int64_t samples_per_prompt, int64_t steps = 0);

}  // namespace ink::app
