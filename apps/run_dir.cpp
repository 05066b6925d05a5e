// The run folder helpers of run_dir.h: config.json with nlohmann-json, losses.csv, messages.
#include "apps/run_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "nn/safetensors.h"
#include "tensor/error.h"
#include "tensor/quote.h"

namespace ink::app {

namespace fs = std::filesystem;
using nlohmann::json;

std::string run_record_json(const RunRecord& r) {
  nlohmann::ordered_json j;  // keeps the fields in this reading order
  j["model"] = r.config.model;
  j["epochs"] = r.config.epochs;
  j["samples_per_prompt"] = r.config.samples_per_prompt;
  j["batch_size"] = r.config.batch_size;
  j["lr"] = r.config.lr;
  j["seed"] = r.config.seed;
  if (r.config.model == "diffusion") {
    j["dataset"] = r.config.dataset;
    j["config"] = r.config.model_config;
    j["weight_decay"] = r.config.weight_decay;
    j["warmup_steps"] = r.config.warmup_steps;
    j["ema_decay"] = r.config.ema_decay;
    j["cond_dropout"] = r.config.cond_dropout;
    j["clip_grad_norm"] = r.config.clip_grad_norm;
    j["snr_gamma"] = r.config.snr_gamma;
    j["lr_decay"] = r.config.lr_decay;
    j["timesteps"] = r.config.timesteps;
    j["noise_schedule"] = r.config.noise_schedule;
    j["prediction"] = r.config.prediction;
    j["text_layers"] = r.config.text_layers;
    j["query_positions"] = r.config.query_positions;
    j["phrase_attention"] = r.config.phrase_attention;
    j["optimizer"] = "AdamW";
    j["loss"] = r.config.prediction + (r.config.snr_gamma > 0 ? "-MSE, Min-SNR weighted" : "-MSE");
  } else {
    j["optimizer"] = "Adam";
    j["loss"] = "MSE";
  }
  j["threads"] = r.threads;
  j["parameters"] = r.parameters;
  j["inkgrad_version"] = r.version;
  j["started_at"] = r.started_at;
  j["updated_at"] = r.updated_at;
  j["status"] = r.status;
  j["epochs_completed"] = r.epochs_completed;
  if (r.final_loss) {
    j["final_loss"] = *r.final_loss;
  } else {
    j["final_loss"] = nullptr;
  }
  j["train_seconds"] = r.train_seconds;
  if (r.minutes > 0) j["minutes"] = r.minutes;
  return j.dump(2) + "\n";
}

namespace {

// A config.json value in a message. It comes from a file anyone may have edited, so strings are
// quoted and bounded like any file content, and arrays or objects are only described.
std::string shown(const json& value) {
  if (value.is_string()) return quoted_text(value.get_ref<const std::string&>(), 60);
  if (value.is_array() || value.is_object()) {
    return fmt::format("an {} of {} element{}", value.type_name(), value.size(),
                       value.size() == 1 ? "" : "s");
  }
  return value.dump();  // a number, a boolean or null: short and plain ASCII
}

// The largest config.json read. The record inkgrad writes is under 1 KB; anything this big was
// not written by it, and is refused before it is read into memory.
constexpr uintmax_t kMaxRunRecordBytes = 1 << 20;

}  // namespace

RunRecord parse_run_record(std::string_view text, const std::string& source) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  INK_CHECK(j.is_object(), "{} is not a valid JSON object (not written by inkgrad train?)", source);
  auto field = [&](const char* name) -> const json& {
    INK_CHECK(j.contains(name), "{} has no \"{}\" field", source, name);
    return j.at(name);
  };
  auto integer = [&](const char* name) {
    const json& v = field(name);
    INK_CHECK(v.is_number_integer(), "{}: \"{}\" must be an integer, got {}", source, name,
              shown(v));
    return v.get<int64_t>();
  };
  RunRecord r;
  if (j.contains("model")) {  // absent in phase 1 records, which are all of the MLP
    INK_CHECK(j.at("model").is_string(), "{}: \"model\" must be a string, got {}", source,
              shown(j.at("model")));
    r.config.model = j.at("model").get<std::string>();
  }
  r.config.epochs = integer("epochs");
  r.config.samples_per_prompt = integer("samples_per_prompt");
  r.config.batch_size = integer("batch_size");
  const json& lr = field("lr");
  INK_CHECK(lr.is_number(), "{}: \"lr\" must be a number, got {}", source, shown(lr));
  r.config.lr = lr.get<double>();
  const json& seed = field("seed");
  INK_CHECK(seed.is_number_unsigned() || (seed.is_number_integer() && seed.get<int64_t>() >= 0),
            "{}: \"seed\" must be a non-negative integer, got {}", source, shown(seed));
  r.config.seed = seed.get<uint64_t>();
  if (r.config.model == "diffusion") {  // the diffusion recipe's settings, all required
    const auto string_field = [&](const char* name) {
      const json& v = field(name);
      INK_CHECK(v.is_string(), "{}: \"{}\" must be a string, got {}", source, name,
                v.dump().substr(0, 60));
      return v.get<std::string>();
    };
    const auto number = [&](const char* name) {
      const json& v = field(name);
      INK_CHECK(v.is_number(), "{}: \"{}\" must be a number, got {}", source, name,
                v.dump().substr(0, 60));
      return v.get<double>();
    };
    r.config.dataset = string_field("dataset");
    r.config.model_config = string_field("config");
    r.config.weight_decay = number("weight_decay");
    r.config.warmup_steps = integer("warmup_steps");
    r.config.ema_decay = number("ema_decay");
    r.config.cond_dropout = number("cond_dropout");
    r.config.clip_grad_norm = number("clip_grad_norm");
    // Absent from the runs written before the weighting existed, which trained without it.
    r.config.snr_gamma = j.contains("snr_gamma") ? number("snr_gamma") : 0.0;
    // Likewise: those runs kept the learning rate constant after the warm-up.
    r.config.lr_decay = j.contains("lr_decay") ? string_field("lr_decay") : "constant";
    r.config.timesteps = j.contains("timesteps") ? string_field("timesteps") : "uniform";
    r.config.noise_schedule =
        j.contains("noise_schedule") ? string_field("noise_schedule") : "linear";
    r.config.prediction = j.contains("prediction") ? string_field("prediction") : "eps";
    // Absent from the runs written before they were settings: 2 layers, no query positions.
    r.config.text_layers = j.contains("text_layers") ? integer("text_layers") : 2;
    for (auto [key, flag] : {std::pair{"query_positions", &r.config.query_positions},
                             std::pair{"phrase_attention", &r.config.phrase_attention}}) {
      if (!j.contains(key)) continue;
      const json& v = field(key);
      INK_CHECK(v.is_boolean(), "{}: \"{}\" must be true or false, got {}", source, key, shown(v));
      *flag = v.get<bool>();
    }
  }
  // The rest is informational: tolerate its absence.
  if (j.contains("threads") && j.at("threads").is_number_integer())
    r.threads = j.at("threads").get<int>();
  if (j.contains("parameters") && j.at("parameters").is_number_integer()) {
    r.parameters = j.at("parameters").get<int64_t>();
  }
  if (j.contains("inkgrad_version") && j.at("inkgrad_version").is_string()) {
    r.version = j.at("inkgrad_version").get<std::string>();
  }
  if (j.contains("started_at") && j.at("started_at").is_string())
    r.started_at = j.at("started_at").get<std::string>();
  if (j.contains("updated_at") && j.at("updated_at").is_string())
    r.updated_at = j.at("updated_at").get<std::string>();
  if (j.contains("status") && j.at("status").is_string())
    r.status = j.at("status").get<std::string>();
  if (j.contains("epochs_completed") && j.at("epochs_completed").is_number_integer()) {
    r.epochs_completed = j.at("epochs_completed").get<int64_t>();
  }
  if (j.contains("final_loss") && j.at("final_loss").is_number()) {
    r.final_loss = j.at("final_loss").get<double>();
  }
  if (j.contains("train_seconds") && j.at("train_seconds").is_number()) {
    r.train_seconds = j.at("train_seconds").get<double>();
  }
  if (j.contains("minutes") && j.at("minutes").is_number()) {
    const double minutes = j.at("minutes").get<double>();
    INK_CHECK(std::isfinite(minutes) && minutes >= 0,
              "{}: \"minutes\" must be a non-negative number of minutes, got {}", source,
              shown(j.at("minutes")));
    r.minutes = minutes;
  }
  return r;
}

RunRecord read_run_record(const std::string& dir) {
  const fs::path path = fs::path(dir) / kConfigFile;
  std::error_code ec;
  INK_CHECK(fs::is_directory(dir, ec), "{} is not a folder", dir);
  INK_CHECK(fs::is_regular_file(path, ec),
            "{} not found: {} does not look like a folder written by inkgrad train", path.string(),
            dir);
  const uintmax_t size = fs::file_size(path, ec);
  INK_CHECK(ec || size <= kMaxRunRecordBytes,
            "{} is {} bytes, too large to be a run record written by inkgrad train (at most {})",
            path.string(), size, kMaxRunRecordBytes);
  std::ifstream in(path, std::ios::binary);
  INK_CHECK(in.good(), "cannot read {}", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  INK_CHECK(!in.bad(), "cannot read {}", path.string());
  return parse_run_record(text.str(), path.string());
}

void write_run_record(const std::string& dir, const RunRecord& record) {
  const std::string text = run_record_json(record);
  write_file_atomic((fs::path(dir) / kConfigFile).string(),
                    {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

std::vector<std::string> run_files_in(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (std::string_view name : kRunFiles) {
    if (fs::exists(fs::path(dir) / name, ec)) found.emplace_back(name);
  }
  return found;
}

int remove_stale_temporaries(const std::string& dir,
                             const std::function<bool(std::string_view)>& is_ours) {
  int removed = 0;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    // ".<file>.tmp-<pid>-<counter>", as write_file_atomic names them.
    const std::string name = entry.path().filename().string();
    const size_t tmp = name.rfind(".tmp-");
    if (name.size() < 2 || name[0] != '.' || tmp == std::string::npos || tmp < 2) continue;
    if (!is_ours(std::string_view(name).substr(1, tmp - 1))) continue;
    const std::string rest = name.substr(tmp + 5);  // "<pid>-<counter>"
    char* end = nullptr;
    const long pid = std::strtol(rest.c_str(), &end, 10);
    if (end == rest.c_str() || *end != '-' || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // still running
    std::error_code remove_error;
    if (fs::remove(entry.path(), remove_error)) ++removed;
  }
  return removed;
}

int remove_stale_temporaries(const std::string& dir) {
  return remove_stale_temporaries(dir, [](std::string_view file) {
    return std::find(std::begin(kRunFiles), std::end(kRunFiles), file) != std::end(kRunFiles);
  });
}

void open_standard_descriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    // open() returns the lowest free descriptor, which is `fd` itself.
    const int null = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (null >= 0 && null != fd) {
      ::dup2(null, fd);
      ::close(null);
    }
  }
}

std::string losses_csv(std::span<const float> losses) {
  std::string out = "epoch,loss\n";
  for (size_t i = 0; i < losses.size(); ++i) out += fmt::format("{},{:.9g}\n", i + 1, losses[i]);
  return out;
}

bool writes_to_stdout(const std::string& path) {
  struct stat out {
  }, target{};
  return ::fstat(1, &out) == 0 && ::stat(path.c_str(), &target) == 0 &&
         out.st_dev == target.st_dev && out.st_ino == target.st_ino;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  gmtime_r(&now, &parts);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%SZ", &parts);
  return buffer;
}

std::string one_line(std::string_view message, size_t max_lines) {
  std::vector<std::string_view> lines;
  while (!message.empty()) {
    const size_t end = message.find('\n');
    std::string_view line = message.substr(0, end);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.remove_suffix(1);
    if (!line.empty()) lines.push_back(line);
    if (end == std::string_view::npos) break;
    message.remove_prefix(end + 1);
  }
  std::string out;
  for (size_t i = 0; i < lines.size() && i < max_lines; ++i) {
    if (i > 0) out += out.back() == ':' ? " " : "; ";
    out += lines[i];
  }
  if (lines.size() > max_lines) out += fmt::format("; (and {} more)", lines.size() - max_lines);
  return out;
}

}  // namespace ink::app
