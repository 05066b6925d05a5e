// `inkgrad train`: the notebook's training recipe with checkpoints every epoch, a progress
// display, pictures of the result, resume, and a clean stop on Ctrl-C or SIGTERM.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "apps/commands.h"
#include "apps/figures.h"
#include "apps/progress.h"
#include "apps/run_dir.h"
#include "models/shapes.h"
#include "models/trainer.h"
#include "tensor/autograd.h"
#include "tensor/error.h"
#include "tensor/parallel.h"

namespace ink::app {
namespace {

namespace fs = std::filesystem;

// Streams for the pictures drawn after training, apart from the training streams so that
// drawing them never changes what is trained.
constexpr uint64_t kSamplesStream = 0x5A17E5ULL;
constexpr uint64_t kCompareStream = 0xC0FFA2EULL;
constexpr int64_t kSamplesPerRow = 8;
constexpr int64_t kCompareColumns = 3;
// How often losses.csv, loss.png and config.json are refreshed during training.
constexpr std::chrono::seconds kExtrasInterval{3};

struct TrainFlags {
  TrainConfig config;
  int threads = 0;
  std::string out = "runs/latest";
  std::string resume;
  bool force = false;
  bool detect_anomaly = false;
  bool quiet = false;
  CLI::Option* epochs_option = nullptr;
  CLI::Option* threads_option = nullptr;
  CLI::Option* resume_option = nullptr;
  std::vector<CLI::Option*> fixed_by_resume;  // settings a resumed run takes from config.json
};

// ---- stopping on a signal: the handler only records it; training checks between steps ----

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void record_stop_signal(int signal) {
  g_stop_signal = signal;
}

// Thrown from the step callback to leave Trainer::train_epoch. Not an std::exception, so no
// error handler on the way mistakes it for a failure.
struct StopRequested {};

// What this object represents: SIGINT and SIGTERM handling for the lifetime of a training loop.
// The first signal asks for a stop at the next step; SA_RESETHAND makes a second one act as
// usual (terminate), which is safe because every file is written atomically.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction action {};
    action.sa_handler = record_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND | SA_RESTART;
    sigaction(SIGINT, &action, &previous_int_);
    sigaction(SIGTERM, &action, &previous_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &previous_int_, nullptr);
    sigaction(SIGTERM, &previous_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction previous_int_ {};
  struct sigaction previous_term_ {};
};

// What this object represents: exclusive use of a run folder by one training process, with an
// flock on <dir>/.inkgrad.lock. The kernel drops the lock when the process ends, even on
// SIGKILL, so a stale lock can never block a resume.
class RunLock {
 public:
  explicit RunLock(const std::string& dir) {
    const std::string path = (fs::path(dir) / ".inkgrad.lock").string();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    INK_CHECK(fd_ >= 0, "cannot write into {}: {}", dir, std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      INK_FAIL("{} is in use by another inkgrad train; wait for it or stop it first", dir);
    }
  }
  ~RunLock() { ::close(fd_); }
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// ---- settings ----

std::string with_commas(int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) digits.insert(i, ",");
  return value < 0 ? fmt::format("-{}", digits) : digits;
}

// Quotes a path for a command the user may paste into a shell.
std::string shell_word(const std::string& text) {
  if (!text.empty() && text.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                              "0123456789_-./+=:,@") == std::string::npos) {
    return text;
  }
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Checks the settings before anything is written, naming each by where it came from: `name`
// maps a TrainConfig field ("epochs") to a flag ("--epochs") or a config.json entry.
void check_settings(const TrainConfig& c, const std::function<std::string(const char*)>& name) {
  INK_CHECK(c.epochs >= 1 && c.epochs <= TrainConfig::kMaxEpochs,
            "{} must be between 1 and {}, got {}", name("epochs"), TrainConfig::kMaxEpochs,
            c.epochs);
  INK_CHECK(c.samples_per_prompt >= 1 && c.samples_per_prompt <= TrainConfig::kMaxSamplesPerPrompt,
            "{} must be between 1 and {}, got {}", name("samples_per_prompt"),
            TrainConfig::kMaxSamplesPerPrompt, c.samples_per_prompt);
  INK_CHECK(c.batch_size != 1,
            "{} must be at least 2: BatchNorm1d cannot train on batches of 1 sample",
            name("batch_size"));
  INK_CHECK(
      c.batch_size >= TrainConfig::kMinBatchSize && c.batch_size <= TrainConfig::kMaxBatchSize,
      "{} must be between {} and {}, got {}", name("batch_size"), TrainConfig::kMinBatchSize,
      TrainConfig::kMaxBatchSize, c.batch_size);
  INK_CHECK(std::isfinite(c.lr) && c.lr > 0.0 && c.lr <= TrainConfig::kMaxLr,
            "{} must be a number in (0, {}], got {}", name("lr"), TrainConfig::kMaxLr, c.lr);
  const int64_t total = c.samples_per_prompt * kNumShapePrompts;
  INK_CHECK(total % c.batch_size != 1,
            "{} {} with {} {} leaves a last batch of 1 sample ({} = {} x {} + 1), which "
            "BatchNorm1d cannot train on; choose another batch size",
            name("batch_size"), c.batch_size, name("samples_per_prompt"), c.samples_per_prompt,
            total, total / c.batch_size, c.batch_size);
}

std::string flag_name(const char* field) {
  std::string flag = std::string("--") + field;
  for (char& c : flag) c = c == '_' ? '-' : c;
  return flag;
}

// ---- the run folder ----

std::string in_dir(const std::string& dir, std::string_view file) {
  return (fs::path(dir) / file).string();
}

void write_text(const std::string& path, const std::string& text) {
  write_file_atomic(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// Prepares --out for a new run: refuses to mix with a previous run unless --force. Returns the
// files of the previous run, to be removed once the folder is locked.
std::vector<std::string> prepare_new_run_folder(const std::string& dir, bool force) {
  std::error_code ec;
  INK_CHECK(!fs::exists(dir, ec) || fs::is_directory(dir, ec), "--out {} is a file, not a folder",
            dir);
  std::vector<std::string> existing = run_files_in(dir);
  INK_CHECK(existing.empty() || force,
            "--out {} already holds a run ({}); add --force to replace it, continue it with "
            "`inkgrad train --resume {}`, or choose another --out",
            dir, fmt::join(existing, ", "), shell_word(dir));
  fs::create_directories(dir, ec);
  INK_CHECK(!ec, "cannot create the output folder {}: {}", dir, ec.message());
  return existing;
}

// --force: removes only the files of the previous run, never anything else in the folder.
void remove_run_files(const std::string& dir, const std::vector<std::string>& files) {
  for (const std::string& file : files) {
    std::error_code ec;
    fs::remove(fs::path(dir) / file, ec);
    INK_CHECK(!ec, "--force: cannot remove {}: {}", in_dir(dir, file), ec.message());
  }
}

std::vector<float> picture(const Tensor& images, int64_t index) {
  const float* begin = images.data() + index * kImagePixels;
  return {begin, begin + kImagePixels};
}

// samples.png and compare.png from the trained model.
void write_pictures(const std::string& dir, Trainer& trainer) {
  TextToImageModel& model = trainer.model();
  const TrainConfig& config = trainer.config();
  const std::string after =
      fmt::format("after {} epoch{}, loss {:.4f}", trainer.epoch(), trainer.epoch() == 1 ? "" : "s",
                  trainer.losses().empty() ? 0.0f : trainer.losses().back());

  Generator sample_generator(config.seed ^ kSamplesStream);
  std::vector<GridRow> samples;
  for (std::string_view prompt : kShapePrompts) {
    const Tensor images = model.generate(std::string(prompt), kSamplesPerRow, sample_generator);
    GridRow row{std::string(prompt), {}};
    for (int64_t i = 0; i < kSamplesPerRow; ++i) row.pictures.push_back(picture(images, i));
    samples.push_back(std::move(row));
  }
  GridStyle samples_style;
  samples_style.title = "generated " + after + " (brightness stretched)";
  samples_style.stretch = true;
  write_png(in_dir(dir, kSamplesFile), render_grid(samples, samples_style));

  Generator data_generator(config.seed ^ kCompareStream);
  std::vector<GridRow> compare;
  for (std::string_view prompt : kShapePrompts) {
    GridRow row{std::string(prompt), {}};
    for (int64_t i = 0; i < kCompareColumns; ++i) {
      row.pictures.push_back(make_shape(prompt, data_generator));
    }
    const Tensor images = model.generate(std::string(prompt), kCompareColumns, sample_generator);
    for (int64_t i = 0; i < kCompareColumns; ++i) row.pictures.push_back(picture(images, i));
    compare.push_back(std::move(row));
  }
  GridStyle compare_style;
  compare_style.title = "ground truth vs generated, " + after;
  compare_style.group_headers = {"ground truth", "generated"};
  compare_style.group_size = kCompareColumns;
  write_png(in_dir(dir, kCompareFile), render_grid(compare, compare_style));
}

void write_loss_files(const std::string& dir, const Trainer& trainer) {
  write_text(in_dir(dir, kLossesFile), losses_csv(trainer.losses()));
  write_png(in_dir(dir, kLossPlotFile), render_loss_plot(trainer.losses()));
}

// ---- the command ----

int run_train(TrainFlags& flags) {
  if (flags.threads_option->count() > 0) {
    check_range("--threads", flags.threads, 1, 1024);
    set_num_threads(flags.threads);
  }
  set_detect_anomaly(flags.detect_anomaly);

  const bool resuming = flags.resume_option->count() > 0;
  INK_CHECK(!resuming || !flags.resume.empty(), "--resume needs the folder of a run, got \"\"");
  INK_CHECK(!flags.out.empty(), "--out needs a folder, got \"\"");
  const std::string dir = resuming ? flags.resume : flags.out;
  RunRecord record;
  TrainConfig config = flags.config;
  std::unique_ptr<RunLock> lock;
  if (resuming) {
    for (CLI::Option* option : flags.fixed_by_resume) {
      INK_CHECK(option->count() == 0,
                "{} cannot be combined with --resume: a resumed run keeps the settings in its "
                "config.json (only --epochs, --threads, --detect-anomaly and --quiet apply)",
                option->get_name());
    }
    record = read_run_record(dir);
    lock = std::make_unique<RunLock>(dir);
    config = record.config;
    const bool new_epochs = flags.epochs_option->count() > 0;
    if (new_epochs) config.epochs = flags.config.epochs;
    const std::string config_path = in_dir(dir, kConfigFile);
    check_settings(config, [&](const char* field) {
      return new_epochs && std::string_view(field) == "epochs"
                 ? flag_name(field)
                 : fmt::format("\"{}\" in {}", field, config_path);
    });
  } else {
    check_settings(config, flag_name);
    const std::vector<std::string> previous = prepare_new_run_folder(dir, flags.force);
    lock = std::make_unique<RunLock>(dir);
    remove_run_files(dir, previous);
  }
  remove_stale_temporaries(dir);

  Trainer trainer(config);
  if (resuming) {
    std::error_code ec;
    if (fs::exists(in_dir(dir, kOptimizerFile), ec)) {
      trainer.resume(dir);
    } else {
      INK_CHECK(!fs::exists(in_dir(dir, kModelFile), ec),
                "{} has {} but no {}, so the run cannot continue exactly; start a new run with "
                "--out",
                dir, kModelFile, kOptimizerFile);
    }
    INK_CHECK(trainer.epoch() <= config.epochs,
              "{} {} is fewer than the {} epochs {} has already trained; pass a larger --epochs",
              flags.epochs_option->count() > 0 ? "--epochs" : "\"epochs\" in config.json",
              config.epochs, trainer.epoch(), dir);
  } else {
    record.started_at = utc_now();
  }
  record.config = config;
  record.threads = get_num_threads();
  record.version = INK_VERSION;
  record.parameters = trainer.model().num_parameters();
  record.epochs_completed = trainer.epoch();
  if (!trainer.losses().empty()) record.final_loss = trainer.losses().back();
  record.status = "running";
  record.updated_at = utc_now();
  write_run_record(dir, record);  // also proves early that the folder is writable

  const int64_t steps = trainer.dataset().num_batches();
  fmt::print("inkgrad {}: the text-to-image model, {} parameters\n", INK_VERSION,
             with_commas(record.parameters));
  fmt::print(
      "  data      {} samples per prompt x {} prompts = {} per epoch, batches of {} ({} "
      "steps)\n",
      with_commas(config.samples_per_prompt), kNumShapePrompts,
      with_commas(trainer.dataset().size()), config.batch_size, steps);
  fmt::print("  training  {} epochs, Adam lr {}, MSE loss, seed {}, {} thread{}{}\n", config.epochs,
             config.lr, config.seed, record.threads, record.threads == 1 ? "" : "s",
             flags.detect_anomaly ? ", anomaly detection on" : "");
  if (resuming) {
    if (trainer.epoch() > 0) {
      fmt::print("  resuming  {} after epoch {} (loss {:.6f}); {} to go\n", dir, trainer.epoch(),
                 trainer.losses().back(), config.epochs - trainer.epoch());
    } else {
      fmt::print("  resuming  {}: no checkpoint yet, so starting from epoch 1\n", dir);
    }
  } else {
    fmt::print("  output    {}\n", dir);
  }
  std::fflush(stdout);

  const int64_t first_epoch = trainer.epoch();
  const double seconds_before = record.train_seconds;
  TrainingProgress progress(stdout, isatty(fileno(stdout)) != 0, flags.quiet, first_epoch,
                            config.epochs, trainer.dataset().size());
  const auto save_record = [&](const char* status) {
    record.status = status;
    record.epochs_completed = trainer.epoch();
    if (!trainer.losses().empty()) record.final_loss = trainer.losses().back();
    record.train_seconds = seconds_before + progress.elapsed_seconds();
    record.updated_at = utc_now();
    write_run_record(dir, record);
  };
  const auto saved_text = [&]() {
    return trainer.epoch() > 0
               ? fmt::format("epoch {} is saved in {}", trainer.epoch(), dir)
               : std::string("no epoch was completed, so there is no checkpoint yet");
  };
  // Leaves the loop on a signal: the checkpoint on disk is the last completed epoch.
  const auto stop = [&](const char* when) {
    progress.clear_line();
    trainer.wait_for_checkpoint();  // the last epoch's files are complete before we say so
    const int signal = g_stop_signal;
    try {
      write_loss_files(dir, trainer);
      save_record("interrupted");
    } catch (const std::exception& error) {
      warn(one_line(error.what()));
    }
    fmt::print(stderr, "inkgrad: stopped by {} {}; {}. Resume with: inkgrad train --resume {}\n",
               signal == SIGTERM ? "SIGTERM" : "SIGINT", when, saved_text(), shell_word(dir));
    return 128 + signal;
  };

  {
    StopSignals signals;
    const auto on_step = [&](const StepInfo& info) {
      progress.step(info.epoch, info.step, info.steps, info.samples, info.loss);
      if (g_stop_signal != 0) throw StopRequested{};
    };
    auto last_extras = std::chrono::steady_clock::now();
    while (trainer.epoch() < config.epochs) {
      const int64_t epoch = trainer.epoch();
      float loss = 0.0f;
      try {
        loss = trainer.train_epoch(on_step);
      } catch (const StopRequested&) {
        return stop(fmt::format("during epoch {}", epoch + 1).c_str());
      } catch (const std::exception& error) {
        // A non-finite loss (or an anomaly): the model in memory is suspect, so it is not saved.
        progress.clear_line();
        const std::string message = one_line(error.what());
        try {
          trainer.wait_for_checkpoint();
          write_loss_files(dir, trainer);
          save_record("failed");
        } catch (const std::exception&) {
          // Reporting the training failure matters more than the record of it.
        }
        INK_FAIL("{}; {} (the failed epoch was not saved)", message, saved_text());
      }
      // Written by a background thread while the next epoch trains (each file atomically).
      trainer.save_checkpoint_async(dir);
      // The checkpoint is what resume needs; the other files follow it at most every few
      // seconds, since each atomic write waits for the disk.
      const auto now = std::chrono::steady_clock::now();
      if (now - last_extras >= kExtrasInterval && trainer.epoch() < config.epochs) {
        write_loss_files(dir, trainer);
        save_record("running");
        last_extras = now;
      }
      progress.end_epoch(epoch, loss);
      if (g_stop_signal != 0) return stop(fmt::format("after epoch {}", epoch + 1).c_str());
    }
  }

  if (trainer.epoch() == first_epoch) {
    fmt::print("{} has already trained {} epochs; pass a larger --epochs to train further\n", dir,
               trainer.epoch());
  }
  // The checkpoint of the last epoch was saved inside the loop: nothing changed since.
  trainer.wait_for_checkpoint();
  write_loss_files(dir, trainer);
  write_pictures(dir, trainer);
  save_record("complete");

  const std::vector<float>& losses = trainer.losses();
  size_t best = 0;
  for (size_t i = 1; i < losses.size(); ++i) best = losses[i] < losses[best] ? i : best;
  fmt::print("done: {} epochs in {}; final loss {:.6f} (best {:.6f} at epoch {})\n",
             trainer.epoch() - first_epoch, format_duration(progress.elapsed_seconds()),
             losses.back(), losses[best], best + 1);
  write_run_eval(dir, trainer.model(), config.seed);
  fmt::print("wrote {}: {}, {}, {}, {}, {}, {}, {}\n", dir, kModelFile, kOptimizerFile, kConfigFile,
             kLossesFile, kLossPlotFile, kSamplesFile, kCompareFile);
  fmt::print("next: look at {}, or inkgrad generate --checkpoint {} --prompt circle\n",
             in_dir(dir, kSamplesFile), shell_word(in_dir(dir, kModelFile)));
  return 0;
}

}  // namespace

Command add_train_command(CLI::App& app) {
  auto flags = std::make_shared<TrainFlags>();
  CLI::App* sub = app.add_subcommand(
      "train",
      "Train the model. With no flags: the notebook's recipe (100 epochs, 500 samples per "
      "prompt, batch 64, Adam lr 1e-3, MSE, seed 42) into runs/latest.");
  TrainConfig& c = flags->config;
  flags->epochs_option =
      sub->add_option("--epochs", c.epochs, "Epochs to train (with --resume: the new total)")
          ->capture_default_str();
  flags->fixed_by_resume = {
      sub->add_option("--samples-per-prompt", c.samples_per_prompt,
                      "Fresh pictures of each of the 9 prompts per epoch")
          ->capture_default_str(),
      sub->add_option("--batch-size", c.batch_size, "Samples per optimisation step (at least 2)")
          ->capture_default_str(),
      sub->add_option("--lr", c.lr, "Adam learning rate")->capture_default_str(),
      sub->add_option("--seed", c.seed, "Seed of every random stream of the run")
          ->capture_default_str(),
      sub->add_option("--out", flags->out, "Folder for the run's files")->capture_default_str(),
      sub->add_flag("--force", flags->force, "Replace the run already in --out"),
  };
  flags->threads_option =
      sub->add_option("--threads", flags->threads,
                      "Threads for the kernels (default: INK_NUM_THREADS or the number of cores)");
  flags->resume_option =
      sub->add_option("--resume", flags->resume,
                      "Continue the run in this folder, with the settings of its config.json");
  sub->add_flag("--detect-anomaly", flags->detect_anomaly,
                "Check every op for NaN/Inf and name the first that makes one (slow)");
  sub->add_flag("--quiet,-q", flags->quiet, "No per-epoch progress, only the header and summary");
  return [flags] { return run_train(*flags); };
}

}  // namespace ink::app
