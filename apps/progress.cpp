// The progress display of progress.h.
#include "apps/progress.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace ink::app {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0.0) return "?";
  if (seconds < 10.0) return fmt::format("{:.1f}s", seconds);
  const auto total = static_cast<int64_t>(std::llround(seconds));
  if (total < 60) return fmt::format("{}s", total);
  if (total < 3600) return fmt::format("{}m{:02d}s", total / 60, total % 60);
  return fmt::format("{}h{:02d}m", total / 3600, (total % 3600) / 60);
}

TrainingProgress::TrainingProgress(std::FILE* out, bool interactive, bool quiet,
                                   int64_t first_epoch, int64_t total_epochs,
                                   int64_t samples_per_epoch)
    : out_(out),
      interactive_(interactive),
      quiet_(quiet),
      first_epoch_(first_epoch),
      total_epochs_(total_epochs),
      samples_per_epoch_(samples_per_epoch),
      start_(Clock::now()),
      epoch_start_(start_),
      last_step_(start_),
      last_draw_(start_) {}

double TrainingProgress::seconds_since(Clock::time_point t) const {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double TrainingProgress::elapsed_seconds() const {
  return seconds_since(start_);
}

double TrainingProgress::eta_seconds(int64_t epoch, double epoch_fraction) const {
  const double done = static_cast<double>(epoch - first_epoch_) + epoch_fraction;
  if (done <= 0.0) return -1.0;
  const double left = static_cast<double>(total_epochs_ - epoch) - epoch_fraction;
  const double by_epochs = elapsed_seconds() / done * std::max(left, 0.0);
  if (budget_seconds_ <= 0.0) return by_epochs;
  // The budget ends at an epoch boundary: what remains of it, rounded up to whole epochs.
  const double per_epoch = elapsed_seconds() / done;
  const double budget_left = std::max(budget_seconds_ - elapsed_seconds(), 0.0);
  const double epochs_left = std::ceil(budget_left / per_epoch + epoch_fraction) - epoch_fraction;
  return std::min(by_epochs, std::max(epochs_left, 0.0) * per_epoch);
}

std::string TrainingProgress::epoch_label(int64_t epoch_1_based, int width) const {
  if (budget_seconds_ > 0.0) return fmt::format("{:>{}}", epoch_1_based, width);
  return fmt::format("{:>{}}/{}", epoch_1_based, width, total_epochs_);
}

void TrainingProgress::step(int64_t epoch, int64_t step, int64_t steps, int64_t samples,
                            float loss) {
  last_step_ = Clock::now();
  if (epoch != current_epoch_) {
    current_epoch_ = epoch;
    epoch_samples_ = 0;
    loss_sum_ = 0.0;
    loss_steps_ = 0;
  }
  epoch_samples_ += samples;
  loss_sum_ += loss;
  ++loss_steps_;
  if (quiet_ || !interactive_) return;
  const bool last = step + 1 == steps;
  if (!last && seconds_since(last_draw_) < 0.1) return;
  last_draw_ = Clock::now();

  const double fraction = steps > 0 ? static_cast<double>(step + 1) / steps : 1.0;
  constexpr int kBar = 20;
  const int filled = static_cast<int>(fraction * kBar);
  const double rate = epoch_samples_ / std::max(seconds_since(epoch_start_), 1e-9);
  write_line(fmt::format("epoch {} [{}{}] {}/{}  loss {:.6f}  {:.0f} samples/s  ETA {}",
                         epoch_label(epoch + 1, 0), std::string(filled, '#'),
                         std::string(kBar - filled, '.'), step + 1, steps, loss_sum_ / loss_steps_,
                         rate, format_duration(eta_seconds(epoch, fraction))),
             false);
}

void TrainingProgress::end_epoch(int64_t epoch, float loss) {
  // Speed over the optimisation steps only; the next epoch starts after this one's checkpoint.
  const double seconds = current_epoch_ == epoch
                             ? std::chrono::duration<double>(last_step_ - epoch_start_).count()
                             : 0.0;
  const double rate = seconds > 0.0 ? samples_per_epoch_ / seconds : 0.0;
  epoch_start_ = Clock::now();
  if (quiet_) return;
  const int width =
      budget_seconds_ > 0.0 ? 4 : static_cast<int>(std::to_string(total_epochs_).size());
  // On a terminal the line stays on screen for the first epoch, every tenth and the last (as the
  // notebook prints); the others are overwritten by the next epoch.
  const bool keep =
      !interactive_ || epoch == first_epoch_ || (epoch + 1) % 10 == 0 || epoch + 1 == total_epochs_;
  write_line(fmt::format("epoch {}  loss {:.6f}  {:.0f} samples/s  {:>6}  ETA {}",
                         epoch_label(epoch + 1, width), loss, rate, format_duration(seconds),
                         format_duration(eta_seconds(epoch + 1, 0.0))),
             keep);
}

void TrainingProgress::clear_line() {
  if (drawn_width_ == 0) return;
  fmt::print(out_, "\r{}\r", std::string(drawn_width_, ' '));
  std::fflush(out_);
  drawn_width_ = 0;
}

void TrainingProgress::write_line(const std::string& text, bool keep) {
  if (interactive_) {
    // Pad over a longer previous line, then either stay on it or move on.
    const size_t pad = drawn_width_ > text.size() ? drawn_width_ - text.size() : 0;
    fmt::print(out_, "\r{}{}", text, std::string(pad, ' '));
    if (keep) {
      fmt::print(out_, "\n");
      drawn_width_ = 0;
    } else {
      drawn_width_ = text.size();
    }
  } else {
    fmt::print(out_, "{}\n", text);
  }
  std::fflush(out_);
}

}  // namespace ink::app
