// The run folder of `inkgrad train`: which files make a run, its config.json record (settings,
// progress, outcome), losses.csv, and one-line user messages.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "models/trainer.h"

namespace ink::app {

// Every file `inkgrad train` writes into its folder.
inline constexpr std::string_view kModelFile = kModelFileName;  // defined in models/trainer.h
inline constexpr std::string_view kOptimizerFile = kTrainingStateFileName;
inline constexpr std::string_view kConfigFile = "config.json";
inline constexpr std::string_view kLossesFile = "losses.csv";
inline constexpr std::string_view kLossPlotFile = "loss.png";
inline constexpr std::string_view kSamplesFile = "samples.png";
inline constexpr std::string_view kCompareFile = "compare.png";
inline constexpr std::string_view kEvalFile = "eval.json";  // written by the eval at the end
inline constexpr std::string_view kRunFiles[] = {kModelFile,   kOptimizerFile, kConfigFile,
                                                 kLossesFile,  kLossPlotFile,  kSamplesFile,
                                                 kCompareFile, kEvalFile};

// What this represents: config.json, the record of one run. The settings are what --resume
// reads back; the rest says how far the run got and how it ended.
struct RunRecord {
  TrainConfig config;
  int threads = 0;
  std::string version;               // of inkgrad
  std::string started_at;            // ISO 8601 UTC, when the run began (kept across resumes)
  std::string updated_at;            // ISO 8601 UTC, last write
  int64_t epochs_completed = 0;      // as saved in the checkpoint
  std::optional<double> final_loss;  // loss of the last completed epoch
  std::string status = "running";    // running, complete, interrupted, failed
  double train_seconds = 0.0;        // training time over all sessions
  double minutes = 0.0;              // diffusion: the --minutes budget over all sessions (0: none)
  int64_t parameters = 0;
};

std::string run_record_json(const RunRecord& record);
// Parses config.json text; throws ink::Error naming `source` and the bad or missing field.
RunRecord parse_run_record(std::string_view text, const std::string& source);
// Reads <dir>/config.json; throws ink::Error when it is missing or invalid.
RunRecord read_run_record(const std::string& dir);
// Writes <dir>/config.json atomically.
void write_run_record(const std::string& dir, const RunRecord& record);

// The names of the run files (kRunFiles) present in `dir`; empty when it holds no run.
std::vector<std::string> run_files_in(const std::string& dir);

// Removes the hidden temporaries (".model.safetensors.tmp-<pid>-<n>") that write_file_atomic
// leaves behind when a process is killed mid-write, for run files only and only when that
// process is gone. Returns how many were removed.
int remove_stale_temporaries(const std::string& dir);
// The same for the temporaries of any file in `dir` for which `is_ours(file name)` is true
// (generate uses it for the PNGs it writes).
int remove_stale_temporaries(const std::string& dir,
                             const std::function<bool(std::string_view)>& is_ours);

// Opens /dev/null on any of descriptors 0, 1 and 2 that is closed. Call it first in main: with
// stdout closed, the next file opened (the run folder's lock) would become descriptor 1 and
// receive everything printed.
void open_standard_descriptors();

// "epoch,loss" then one line per epoch (1-based), losses with 9 significant digits.
std::string losses_csv(std::span<const float> losses);

// True when writing `path` reaches this process's standard output (`-o /dev/stdout`, or a path
// that names the file stdout is redirected to). Messages then go to stderr, so that they do not
// end up inside the output.
bool writes_to_stdout(const std::string& path);

// The current time as "2024-05-01T12:34:56Z".
std::string utc_now();

// A message made into one line: newlines become "; ", and after `max_lines` lines the rest is
// summarised as "(and N more)". For errors that list several problems.
std::string one_line(std::string_view message, size_t max_lines = 5);

}  // namespace ink::app
