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
#include "apps/replace_run.h"
#include "apps/run_dir.h"
#include "models/diffusion/model.h"
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

// `inkgrad train` with no flags trains the diffusion model with the recipe that learned the most
// in ten minutes on the 2-core development machine (README, "The diffusion model"): the tiny
// U-Net in batches of 16, for 150,000 pictures when neither --epochs nor --images nor --minutes
// is given, with a cosine decay of the learning rate over the run and logit-normal timesteps. Seed
// 002's settings are `--config small --batch-size 64`; the notebook's MLP recipe is `--model mlp`
// (batch 64, 100 epochs).
constexpr const char* kDefaultModel = "diffusion";
constexpr const char* kDefaultDiffusionConfig = "tiny";
constexpr int64_t kDefaultDiffusionBatch = 16;
constexpr int64_t kDefaultDiffusionImages = 150'000;
constexpr const char* kDefaultDiffusionLrDecay = "cosine";
constexpr const char* kDefaultDiffusionTimesteps = "logit-normal";
// Preview grids (samples_NNNNNN.png, N = images trained on) during a diffusion run: a few
// prompts, a few pictures each, fewer sampler steps than the final pictures.
constexpr int64_t kPreviewPrompts = 9;
constexpr int64_t kPreviewPictures = 4;
constexpr int64_t kPreviewSteps = 20;

// Sampler steps of the diffusion model's eval at the end of training: a quick check (inkgrad
// eval scores with generate's defaults, 50 steps).
constexpr int64_t kRunEvalSteps = 20;

struct TrainFlags {
  TrainConfig config;
  int64_t images = 0;    // diffusion: a budget in training images (0: use --epochs)
  double minutes = 0.0;  // diffusion: stop at the first epoch end after this long (0: no limit)
  int64_t preview_every = 2;  // diffusion: a preview grid every this many epochs (0: none)
  int64_t sample_steps = 0;   // diffusion: sampler steps of samples.png and compare.png (0: 50)
  // The eval at the end (samples per prompt; 0: none). The MLP's samples are cheap; a diffusion
  // model's cost a sampler run each, so it gets fewer, at kRunEvalSteps steps.
  int64_t eval_samples = -1;  // -1: 128 for the mlp, 64 for diffusion
  CLI::Option* images_option = nullptr;
  CLI::Option* batch_option = nullptr;
  CLI::Option* config_option = nullptr;
  CLI::Option* lr_decay_option = nullptr;
  CLI::Option* timesteps_option = nullptr;
  CLI::Option* query_positions_option = nullptr;
  CLI::Option* phrase_attention_option = nullptr;
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

// samples.png and compare.png from the recipe's inference model, for every prompt of its data.
// A diffusion model samples with `steps` sampler steps (0: generate's default).
void write_pictures(const std::string& dir, Trainer& trainer, int64_t steps) {
  ImageModel& model = trainer.recipe().inference_model();
  auto* diffusion_model = dynamic_cast<diffusion::TextToImageDiffusion*>(&model);
  diffusion::GenerateOptions options;
  if (steps > 0) options.steps = steps;
  const auto generate = [&](const std::string& prompt, int64_t n, Generator& gen) {
    return diffusion_model ? diffusion_model->generate(prompt, n, gen, options)
                           : model.generate(prompt, n, gen);
  };
  const Dataset& data = trainer.dataset();
  const TrainConfig& config = trainer.config();
  const std::string after =
      fmt::format("after {} epoch{}, loss {:.4f}", trainer.epoch(), trainer.epoch() == 1 ? "" : "s",
                  trainer.losses().empty() ? 0.0f : trainer.losses().back());
  const std::vector<std::string> prompts = data.prompts();

  Generator sample_generator(config.seed ^ kSamplesStream);
  std::vector<GridRow> samples;
  for (const std::string& prompt : prompts) {
    const Tensor images = generate(prompt, kSamplesPerRow, sample_generator);
    GridRow row{prompt, {}};
    for (int64_t i = 0; i < kSamplesPerRow; ++i) row.pictures.push_back(picture_values(images, i));
    samples.push_back(std::move(row));
  }
  GridStyle samples_style = grid_style_for(model.image_format());
  samples_style.title = "generated " + after + " (brightness stretched)";
  samples_style.stretch = true;
  write_png(in_dir(dir, kSamplesFile), render_grid(samples, samples_style));

  Generator data_generator(config.seed ^ kCompareStream);
  std::vector<GridRow> compare;
  for (size_t p = 0; p < prompts.size(); ++p) {
    GridRow row{prompts[p], {}};
    for (int64_t i = 0; i < kCompareColumns; ++i) {
      row.pictures.push_back(data.example(static_cast<int64_t>(p), data_generator));
    }
    const Tensor images = generate(prompts[p], kCompareColumns, sample_generator);
    for (int64_t i = 0; i < kCompareColumns; ++i) row.pictures.push_back(picture_values(images, i));
    compare.push_back(std::move(row));
  }
  GridStyle compare_style = grid_style_for(model.image_format());
  compare_style.title = "ground truth vs generated, " + after;
  compare_style.group_headers = {"ground truth", "generated"};
  compare_style.group_size = kCompareColumns;
  write_png(in_dir(dir, kCompareFile), render_grid(compare, compare_style));
}

// samples_NNNNNN.png (N = images trained on so far): a quick look at the EMA model mid-run.
void write_preview(const std::string& dir, Trainer& trainer) {
  auto* model = dynamic_cast<diffusion::TextToImageDiffusion*>(&trainer.recipe().inference_model());
  if (model == nullptr) return;
  const std::vector<std::string> prompts = trainer.dataset().prompts();
  const int64_t images = trainer.epoch() * trainer.dataset().size();
  diffusion::GenerateOptions options;
  options.steps = kPreviewSteps;
  Generator gen(trainer.config().seed ^ kSamplesStream);
  std::vector<GridRow> rows;
  for (size_t p = 0; p < prompts.size() && static_cast<int64_t>(p) < kPreviewPrompts; ++p) {
    const Tensor pictures = model->generate(prompts[p], kPreviewPictures, gen, options);
    GridRow row{prompts[p], {}};
    for (int64_t i = 0; i < kPreviewPictures; ++i)
      row.pictures.push_back(picture_values(pictures, i));
    rows.push_back(std::move(row));
  }
  GridStyle style = grid_style_for(model->image_format());
  style.title = fmt::format("preview after {} images (EMA, {} DDIM steps)", with_commas(images),
                            kPreviewSteps);
  write_png(in_dir(dir, fmt::format("samples_{:06d}.png", images / 1000)),
            render_grid(rows, style));
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
  INK_CHECK(flags.eval_samples == -1 || flags.eval_samples == 0 ||
                (flags.eval_samples >= 4 && flags.eval_samples <= 4096),
            "--eval-samples must be 0 (no eval) or between 4 and 4096, got {}", flags.eval_samples);

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
    INK_CHECK(config.lr_decay != "cosine" || config.epochs == record.config.epochs,
              "--epochs {}: the run in {} decays its learning rate (cosine) to 0 over its {} "
              "epochs, so it cannot train for a different number; start a new run for {} epochs",
              config.epochs, dir, record.config.epochs, config.epochs);
    // A --minutes run continues with what is left of its budget (--epochs replaces it).
    if (record.minutes > 0 && !new_epochs) {
      flags.minutes = std::max(record.minutes - record.train_seconds / 60.0, 1e-6);
    }
    const std::string config_path = in_dir(dir, kConfigFile);
    config.validate([&](const char* field) {
      return new_epochs && std::string_view(field) == "epochs"
                 ? flag_name(field)
                 : fmt::format("\"{}\" in {}", field, config_path);
    });
  } else {
    if (config.model == "diffusion") {
      if (flags.batch_option->count() == 0) config.batch_size = kDefaultDiffusionBatch;
      if (flags.config_option->count() == 0) config.model_config = kDefaultDiffusionConfig;
      if (flags.timesteps_option->count() == 0) config.timesteps = kDefaultDiffusionTimesteps;
      // The scenes recipe binds each object's words to its place (README, issue 13): on unless
      // --no-query-positions / --no-phrase-attention say otherwise.
      if (config.dataset == "scenes") {
        if (flags.query_positions_option->count() == 0) config.query_positions = true;
        if (flags.phrase_attention_option->count() == 0) config.phrase_attention = true;
      }
      INK_CHECK(flags.images_option->count() == 0 || flags.epochs_option->count() == 0,
                "--images and --epochs both set the length of the run; give one of them");
      const bool images_given = flags.images_option->count() > 0;
      if (images_given) check_range("--images", flags.images, 1, int64_t{1} << 40);
      if (!images_given && flags.epochs_option->count() == 0 && flags.minutes <= 0) {
        flags.images = kDefaultDiffusionImages;
      }
      if (images_given || flags.epochs_option->count() == 0) {
        const int64_t per_epoch = config.samples_per_prompt * kNumShapePrompts;
        config.epochs = std::max<int64_t>(1, (flags.images + per_epoch - 1) / per_epoch);
        if (flags.minutes > 0 && !images_given) config.epochs = TrainConfig::kMaxEpochs;
      }
      // Cosine when the run's length is known (the default recipe: README), else constant.
      if (flags.lr_decay_option->count() == 0) {
        config.lr_decay =
            config.epochs == TrainConfig::kMaxEpochs ? "constant" : kDefaultDiffusionLrDecay;
      }
      INK_CHECK(config.lr_decay != "cosine" || config.epochs != TrainConfig::kMaxEpochs,
                "--lr-decay cosine falls to 0 at the run's last step, and a run with only a "
                "--minutes budget has no last step known in advance; give --images or --epochs");
    } else {
      INK_CHECK(flags.images_option->count() == 0 && flags.minutes <= 0,
                "--images and --minutes are budgets of the diffusion recipe; the mlp trains for "
                "--epochs");
    }
    config.validate(flag_name);
    const std::vector<std::string> previous = prepare_new_run_folder(dir, flags.force);
    lock = std::make_unique<RunLock>(dir);
    remove_run_files(dir, previous);
  }
  remove_stale_temporaries(dir);

  Trainer trainer(config);
  if (resuming) {
    std::error_code ec;
    if (fs::exists(in_dir(dir, kOptimizerFile), ec)) {
      try {
        trainer.resume(dir);
      } catch (const Error& error) {
        const std::string message = error.what();
        if (message.find("but this run uses") == std::string::npos) throw;
        INK_FAIL(
            "{} (the run's settings come from {}: was it edited? A resumed run must keep "
            "the settings it was trained with)",
            message, in_dir(dir, kConfigFile));
      }
    } else if (!is_unfinished_first_checkpoint(dir)) {
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
    record.minutes = flags.minutes;
  }
  record.config = config;
  record.threads = get_num_threads();
  record.version = INK_VERSION;
  record.parameters = trainer.model().num_parameters();
  record.epochs_completed = trainer.saved_epoch();
  if (!trainer.losses().empty()) record.final_loss = trainer.losses().back();
  record.status = "running";
  record.updated_at = utc_now();
  write_run_record(dir, record);  // also proves early that the folder is writable

  const int64_t steps = trainer.dataset().num_batches();
  fmt::print("inkgrad {}: the {} model, {} parameters\n", INK_VERSION,
             config.model == "mlp" ? std::string("text-to-image") : config.model,
             with_commas(record.parameters));
  if (config.dataset == "scenes") {
    fmt::print("  data      scenes: {} fresh pictures per epoch, batches of {} ({} steps)\n",
               with_commas(trainer.dataset().size()), config.batch_size, steps);
  } else {
    fmt::print(
        "  data      {} samples per prompt x {} prompts = {} per epoch, batches of {} ({} "
        "steps)\n",
        with_commas(config.samples_per_prompt), kNumShapePrompts,
        with_commas(trainer.dataset().size()), config.batch_size, steps);
  }
  if (config.model == "diffusion") {
    fmt::print(
        "  training  {}, config {}, AdamW lr {} (warm-up {} steps{}, weight "
        "decay {}), EMA {}, CFG dropout {}{}{}{}{}{}{}{}{}, seed {}, {} thread{}{}\n",
        config.epochs == TrainConfig::kMaxEpochs
            ? std::string("until the time budget")
            : fmt::format("{} epochs ({} images)", config.epochs,
                          with_commas(config.epochs * trainer.dataset().size())),
        config.model_config, config.lr, config.warmup_steps,
        config.lr_decay == "constant" ? "" : ", then " + config.lr_decay + " decay to 0",
        config.weight_decay, config.ema_decay, config.cond_dropout,
        config.clip_grad_norm > 0 ? fmt::format(", clip {}", config.clip_grad_norm) : "",
        config.snr_gamma > 0 ? fmt::format(", Min-SNR {}", config.snr_gamma) : "",
        config.timesteps == "uniform" ? "" : ", " + config.timesteps + " timesteps",
        config.noise_schedule == "linear" ? "" : ", " + config.noise_schedule + " noise schedule",
        config.prediction == "eps" ? "" : ", " + config.prediction + "-prediction",
        config.text_layers == 2 ? ""
                                : fmt::format(", {} text layer{}", config.text_layers,
                                              config.text_layers == 1 ? "" : "s"),
        config.query_positions ? ", query positions" : "",
        config.phrase_attention ? ", phrase attention" : "", config.seed, record.threads,
        record.threads == 1 ? "" : "s", flags.detect_anomaly ? ", anomaly detection on" : "");
    if (flags.minutes > 0) {
      fmt::print("  budget    at most {:.4g} minutes{}\n", flags.minutes,
                 resuming ? " (what is left of the run's)" : "");
    }
  } else {
    fmt::print("  training  {} epochs, Adam lr {}, MSE loss, seed {}, {} thread{}{}\n",
               config.epochs, config.lr, config.seed, record.threads,
               record.threads == 1 ? "" : "s",
               flags.detect_anomaly ? ", anomaly detection on" : "");
  }
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
  if (flags.minutes > 0) progress.set_time_budget(flags.minutes * 60.0);
  // The record describes the newest checkpoint on disk, which is what a resume continues from.
  const auto save_record = [&](const char* status) {
    record.status = status;
    record.epochs_completed = trainer.saved_epoch();
    if (trainer.saved_epoch() > 0) {
      record.final_loss = trainer.losses()[static_cast<size_t>(trainer.saved_epoch() - 1)];
    }
    record.train_seconds = seconds_before + progress.elapsed_seconds();
    record.updated_at = utc_now();
    write_run_record(dir, record);
  };
  const auto saved_text = [&]() {
    if (trainer.saved_epoch() > 0) {
      return fmt::format("epoch {} is saved in {}", trainer.saved_epoch(), dir);
    }
    return std::string(trainer.epoch() > 0
                           ? "no checkpoint was written yet"
                           : "no epoch was completed, so there is no checkpoint yet");
  };
  // A run file could not be written (a full disk, say): records how far the checkpoint on disk
  // got, and says how to continue from it.
  const auto write_failed = [&](const std::exception& error) {
    progress.clear_line();
    const std::string message = one_line(error.what());
    try {
      trainer.wait_for_checkpoint();
    } catch (const std::exception&) {
      // The write that failed; saved_epoch() still names the newest complete checkpoint.
    }
    std::string record_note;
    try {
      write_loss_files(dir, trainer);
      save_record("failed");
    } catch (const std::exception&) {
      record_note = fmt::format(" ({} could not be updated either)", kConfigFile);
    }
    INK_FAIL("{}; {}{}. Once it can be written again, resume with: inkgrad train --resume {}",
             message, saved_text(), record_note, shell_word(dir));
  };
  // Leaves the loop on a signal: the checkpoint on disk is the last completed epoch.
  const auto stop = [&](const char* when) {
    progress.clear_line();
    try {
      trainer.wait_for_checkpoint();  // the last epoch's files are complete before we say so
    } catch (const std::exception& error) {
      write_failed(error);
    }
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
      try {
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
      } catch (const std::exception& error) {
        write_failed(error);
      }
      progress.end_epoch(epoch, loss);
      if (g_stop_signal != 0) return stop(fmt::format("after epoch {}", epoch + 1).c_str());
      if (config.model == "diffusion" && flags.preview_every > 0 &&
          trainer.epoch() % flags.preview_every == 0 && trainer.epoch() < config.epochs) {
        try {
          write_preview(dir, trainer);
        } catch (const std::exception& error) {
          write_failed(error);
        }
      }
      if (flags.minutes > 0 && progress.elapsed_seconds() >= flags.minutes * 60.0) {
        config.epochs = trainer.epoch();  // the budget is spent: this run is complete
        record.config.epochs = config.epochs;
        break;
      }
    }
  }

  if (trainer.epoch() == first_epoch) {
    fmt::print("{} has already trained {} epochs; pass a larger --epochs to train further\n", dir,
               trainer.epoch());
  }
  try {
    // The checkpoint of the last epoch was saved inside the loop: nothing changed since.
    trainer.wait_for_checkpoint();
    write_loss_files(dir, trainer);
    write_pictures(dir, trainer, flags.sample_steps);
    save_record("complete");
  } catch (const std::exception& error) {
    write_failed(error);
  }

  const std::vector<float>& losses = trainer.losses();
  size_t best = 0;
  for (size_t i = 1; i < losses.size(); ++i) best = losses[i] < losses[best] ? i : best;
  fmt::print("done: {} epochs in {}; final loss {:.6f} (best {:.6f} at epoch {})\n",
             trainer.epoch() - first_epoch, format_duration(progress.elapsed_seconds()),
             losses.back(), losses[best], best + 1);
  if (config.dataset == "shapes") {
    const bool diffusion = config.model == "diffusion";
    const int64_t samples = flags.eval_samples >= 0 ? flags.eval_samples : diffusion ? 64 : 128;
    write_run_eval(dir, trainer.recipe().inference_model(), config.seed, samples,
                   diffusion ? kRunEvalSteps : 0);
  }
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
      fmt::format("Train a model. With no flags: seed 002's diffusion model (the {} U-Net, "
                  "batch {}, {} pictures: about ten minutes on two cores) into runs/latest. "
                  "--model mlp: the notebook's recipe (100 epochs, 500 samples per prompt, "
                  "batch 64, Adam lr 1e-3, MSE, seed 42).",
                  kDefaultDiffusionConfig, kDefaultDiffusionBatch,
                  with_commas(kDefaultDiffusionImages)));
  TrainConfig& c = flags->config;
  c.model = kDefaultModel;
  flags->epochs_option =
      sub->add_option("--epochs", c.epochs,
                      fmt::format("Epochs to train (default {} for the mlp; diffusion counts "
                                  "--images instead; with --resume: the new total)",
                                  TrainConfig{}.epochs));
  flags->fixed_by_resume = {
      sub->add_option(
             "--model", c.model,
             fmt::format("What to train (the recipe): {}", fmt::join(recipe_names(), ", ")))
          ->capture_default_str(),
      sub->add_option("--samples-per-prompt", c.samples_per_prompt,
                      "Fresh pictures of each of the 9 prompts per epoch")
          ->capture_default_str(),
      flags->batch_option = sub->add_option(
          "--batch-size", c.batch_size,
          fmt::format("Samples per optimisation step, {} to {} (default {} for diffusion, {} for "
                      "the mlp; the mlp's memory grows by about 46 KB per sample)",
                      TrainConfig::kMinBatchSize, TrainConfig::kMaxBatchSize,
                      kDefaultDiffusionBatch, TrainConfig{}.batch_size)),
      sub->add_option("--lr", c.lr, "Learning rate (Adam for the mlp, AdamW for diffusion)")
          ->capture_default_str(),
      sub->add_option("--dataset", c.dataset,
                      "diffusion: the data, shapes (the nine prompts) or scenes")
          ->capture_default_str(),
      flags->config_option =
          sub->add_option("--config", c.model_config,
                          fmt::format("diffusion: the U-Net size, tiny, small or base (default {})",
                                      kDefaultDiffusionConfig)),
      sub->add_option("--warmup-steps", c.warmup_steps, "diffusion: linear learning-rate warm-up")
          ->capture_default_str(),
      sub->add_option("--weight-decay", c.weight_decay, "diffusion: AdamW's decoupled weight decay")
          ->capture_default_str(),
      sub->add_option("--ema-decay", c.ema_decay, "diffusion: decay of the weights' moving average")
          ->capture_default_str(),
      sub->add_option("--cond-dropout", c.cond_dropout,
                      "diffusion: share of prompts replaced by the empty prompt (for guidance)")
          ->capture_default_str(),
      sub->add_option("--clip-grad-norm", c.clip_grad_norm,
                      "diffusion: clip the gradients' global norm (0: off)")
          ->capture_default_str(),
      sub->add_option("--snr-gamma", c.snr_gamma,
                      "diffusion: Min-SNR loss weighting min(SNR, gamma) / SNR per sample (0: off, "
                      "plain eps-MSE)")
          ->capture_default_str(),
      flags->lr_decay_option = sub->add_option(
          "--lr-decay", c.lr_decay,
          fmt::format("diffusion: the learning rate after the warm-up, constant or cosine (to 0 at "
                      "the run's last step; needs --images or --epochs). Default {}, or constant "
                      "for a run with only a --minutes budget",
                      kDefaultDiffusionLrDecay)),
      flags->timesteps_option = sub->add_option(
          "--timesteps", c.timesteps,
          fmt::format("diffusion: how training timesteps are drawn, uniform or logit-normal (90% "
                      "on the middle noise levels, 10% uniform). Default {}",
                      kDefaultDiffusionTimesteps)),
      sub->add_option("--noise-schedule", c.noise_schedule,
                      "diffusion: the betas of the noise, linear (1e-4 to 0.02) or cosine (Nichol "
                      "& Dhariwal 2021); the checkpoint records it for sampling")
          ->capture_default_str(),
      sub->add_option("--prediction", c.prediction,
                      "diffusion: what the U-Net predicts, eps (the noise) or v = sqrt(abar) eps - "
                      "sqrt(1 - abar) x0 (Salimans & Ho 2022); the checkpoint records it")
          ->capture_default_str(),
      sub->add_option("--text-layers", c.text_layers,
                      "diffusion: transformer layers of the text encoder, 1 to 8; the checkpoint "
                      "records it")
          ->capture_default_str(),
      flags->query_positions_option = sub->add_flag(
          "--query-positions,!--no-query-positions", c.query_positions,
          "diffusion: add a fixed 2-D position code to the cross-attention queries (each place "
          "in the picture can then ask for the words that name it); on by default with --dataset "
          "scenes; the checkpoint records it"),
      flags->phrase_attention_option = sub->add_flag(
          "--phrase-attention,!--no-phrase-attention", c.phrase_attention,
          "diffusion: the text encoder attends only within each phrase joined by \"and\" (each "
          "object's words see each other, not the other object's); scenes only, and on by "
          "default there; the checkpoint records it"),
      flags->images_option = sub->add_option(
          "--images", flags->images,
          fmt::format("diffusion: train on this many images (rounded up to whole epochs; default "
                      "{} when no --epochs or --minutes is given)",
                      with_commas(kDefaultDiffusionImages))),
      sub->add_option("--minutes", flags->minutes,
                      "diffusion: stop at the end of the first epoch after this many minutes"),
      add_seed_option(sub, c.seed, "Seed of every random stream of the run")->capture_default_str(),
      sub->add_option("--out", flags->out, "Folder for the run's files")->capture_default_str(),
      sub->add_flag("--force", flags->force, "Replace the run already in --out"),
  };
  flags->threads_option =
      sub->add_option("--threads", flags->threads,
                      "Threads for the kernels (default: INK_NUM_THREADS or the number of cores)");
  flags->resume_option =
      sub->add_option("--resume", flags->resume,
                      "Continue the run in this folder, with the settings of its config.json");
  sub->add_option("--eval-samples", flags->eval_samples,
                  "Samples per prompt of the eval at the end (default 128 for the mlp, 64 at 20 "
                  "DDIM steps for diffusion; 0: no eval)");
  sub->add_flag("--detect-anomaly", flags->detect_anomaly,
                "Check every op for NaN/Inf and name the first that makes one (slow)");
  sub->add_flag("--quiet,-q", flags->quiet, "No per-epoch progress, only the header and summary");
  sub->add_option("--sample-steps", flags->sample_steps,
                  "diffusion: DDIM steps for the final samples.png and compare.png (default: "
                  "generate's 50)")
      ->check(CLI::Range(int64_t{1}, int64_t{1000}));
  sub->add_option("--preview-every", flags->preview_every,
                  "diffusion: write samples_NNNNNN.png every this many epochs (0: never)")
      ->capture_default_str();
  return [flags] { return run_train(*flags); };
}

}  // namespace ink::app
