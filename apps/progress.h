// The training progress display of `inkgrad train`: epoch, loss, samples/s and ETA, as one
// line updated in place on a terminal, or one plain line per epoch when output is a file or pipe.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace ink::app {

// "0.4s", "12s", "3m05s", "1h02m": short, for progress lines.
std::string format_duration(double seconds);

// What this object represents: the display for one training session (from the first epoch it
// trains to the last). Epoch numbers given to it are 0-based; it shows them 1-based.
class TrainingProgress {
 public:
  // `interactive`: rewrite one line with '\r' (use for a terminal). `quiet`: print nothing.
  TrainingProgress(std::FILE* out, bool interactive, bool quiet, int64_t first_epoch,
                   int64_t total_epochs, int64_t samples_per_epoch);

  // After every optimisation step. Redraws the line at most ~10 times a second.
  void step(int64_t epoch, int64_t step, int64_t steps, int64_t samples, float loss);
  // After an epoch and its checkpoint: one line, kept on screen.
  void end_epoch(int64_t epoch, float loss);
  // Erases a half-drawn line so that a message can be printed.
  void clear_line();

  double elapsed_seconds() const;
  // A wall-clock budget (train --minutes): the run ends at the first epoch end after it, so the
  // ETA is the budget's remainder plus the rest of that epoch, and the epoch count is shown
  // without a total (which is only an upper bound then).
  void set_time_budget(double seconds) { budget_seconds_ = seconds; }

 private:
  using Clock = std::chrono::steady_clock;
  double seconds_since(Clock::time_point t) const;
  // Seconds left for the whole run, from this session's average speed; < 0 when unknown.
  double eta_seconds(int64_t epoch, double epoch_fraction) const;
  void write_line(const std::string& text, bool keep);

  std::FILE* out_;
  bool interactive_;
  bool quiet_;
  int64_t first_epoch_;
  int64_t total_epochs_;
  int64_t samples_per_epoch_;
  Clock::time_point start_;
  Clock::time_point epoch_start_;  // end of the previous epoch (its checkpoint included)
  Clock::time_point last_step_;
  Clock::time_point last_draw_;
  int64_t epoch_samples_ = 0;
  int64_t current_epoch_ = -1;
  double loss_sum_ = 0.0;
  int64_t loss_steps_ = 0;
  size_t drawn_width_ = 0;       // characters of the line on screen, to erase it
  double budget_seconds_ = 0.0;  // 0: none
  // "4/100", or "4" when the time budget decides the end.
  std::string epoch_label(int64_t epoch_1_based, int width) const;
};

}  // namespace ink::app
