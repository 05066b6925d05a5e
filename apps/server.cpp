// `inkgrad serve`: request validation, the generation gate (running + waiting, bounded) and the
// HTTP routes.
#include "apps/server.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "apps/figures.h"
#include "apps/prompt.h"
#include "apps/run_dir.h"
#include "apps/web_assets.h"
#include "models/shapes.h"
#include "tensor/error.h"

namespace ink::app {

using nlohmann::json;

void ServerLimits::validate() const {
  INK_CHECK(threads >= 1 && threads <= 256, "serve: threads must be in [1, 256], got {}", threads);
  INK_CHECK(queue >= 0 && queue <= 4096, "serve: queue must be in [0, 4096], got {}", queue);
  INK_CHECK(max_body_bytes >= 1024, "serve: max_body_bytes must be at least 1024, got {}",
            max_body_bytes);
  INK_CHECK(max_steps >= 1 && max_steps <= 1000, "serve: max_steps must be in [1, 1000], got {}",
            max_steps);
  INK_CHECK(max_count >= 1 && max_count <= 256, "serve: max_count must be in [1, 256], got {}",
            max_count);
  INK_CHECK(std::isfinite(max_guidance) && max_guidance >= 1.0 && max_guidance <= 100.0,
            "serve: max_guidance must be in [1, 100], got {}", max_guidance);
}

std::vector<std::string> trained_prompts(const ImageModel& model) {
  const ImageFormat format = model.image_format();
  if (model.tokenizer().kind() != "char" || format != ImageFormat{1, 28, 28}) return {};
  return {kShapePrompts.begin(), kShapePrompts.end()};
}

std::vector<std::string> sampler_names() {
  return {"ddim", "ddpm", "euler", "dpmpp2m"};
}

bool valid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int length = 0;
    uint32_t code = 0;
    if (c >= 0xc2 && c <= 0xdf) {
      length = 2, code = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      length = 3, code = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      length = 4, code = c & 0x07;
    } else {
      return false;  // a continuation byte, an overlong lead (c0, c1) or beyond U+10FFFF
    }
    if (i + length > text.size()) return false;
    for (int k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      code = code << 6 | (next & 0x3f);
    }
    const uint32_t smallest = length == 2 ? 0x80 : length == 3 ? 0x800 : 0x10000;
    if (code < smallest || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return false;
    i += length;
  }
  return true;
}

std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = static_cast<unsigned char>(bytes[i]) << 16 |
                       static_cast<unsigned char>(bytes[i + 1]) << 8 |
                       static_cast<unsigned char>(bytes[i + 2]);
    for (int shift = 18; shift >= 0; shift -= 6) out += kAlphabet[(v >> shift) & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

namespace {

[[noreturn]] void bad_request(const std::string& message) {
  throw RequestError(400, message);
}

const char* type_name(const json& value) {
  return value.type_name();
}

// An integer field: a JSON integer, or a float with an integral value, inside [low, high].
int64_t integer_field(const json& value, const char* name, int64_t low, int64_t high) {
  if (!value.is_number()) {
    bad_request(fmt::format("{} must be an integer in [{}, {}], got a {}", name, low, high,
                            type_name(value)));
  }
  double as_double = value.get<double>();
  if (value.is_number_integer() || value.is_number_unsigned()) {
    // Exact for any int64/uint64, so 2^63 and beyond are refused, not wrapped.
    if (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(high)) {
      bad_request(fmt::format("{} must be in [{}, {}], got {}", name, low, high, value.dump()));
    }
    const int64_t v = value.get<int64_t>();
    if (v < low || v > high) {
      bad_request(fmt::format("{} must be in [{}, {}], got {}", name, low, high, v));
    }
    return v;
  }
  if (!std::isfinite(as_double) || as_double != std::floor(as_double)) {
    bad_request(
        fmt::format("{} must be an integer in [{}, {}], got {}", name, low, high, value.dump()));
  }
  if (as_double < static_cast<double>(low) || as_double > static_cast<double>(high)) {
    bad_request(fmt::format("{} must be in [{}, {}], got {}", name, low, high, value.dump()));
  }
  return static_cast<int64_t>(as_double);
}

std::string text_field(const json& value, const char* name, size_t max_bytes) {
  if (!value.is_string()) {
    bad_request(fmt::format("{} must be a string, got a {}", name, type_name(value)));
  }
  std::string text = value.get<std::string>();
  if (text.size() > max_bytes) {
    bad_request(fmt::format("{} is {} bytes long; the limit is {}", name, text.size(), max_bytes));
  }
  return text;
}

uint64_t seed_field(const json& value) {
  constexpr const char* kRange = "seed must be an integer in [0, 18446744073709551615]";
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer()) bad_request(fmt::format("{}, got {}", kRange, value.dump()));
  if (value.is_number_float()) {
    // Floats above 2^53 have lost their low digits: refuse rather than run another seed.
    const double v = value.get<double>();
    if (std::isfinite(v) && v >= 0 && v == std::floor(v) && v <= 9007199254740992.0) {
      return static_cast<uint64_t>(v);
    }
    bad_request(fmt::format("{} (as a string of digits above 2^53), got {}", kRange, value.dump()));
  }
  if (value.is_string()) {
    const std::string text = value.get<std::string>();
    const bool digits = !text.empty() && text.size() <= 20 &&
                        text.find_first_not_of("0123456789") == std::string::npos;
    if (digits) {
      try {
        size_t used = 0;
        const unsigned long long v = std::stoull(text, &used);
        if (used == text.size()) return v;
      } catch (const std::exception&) {
      }
    }
    bad_request(fmt::format("{}, got {}", kRange, quoted_text(text, 30)));
  }
  bad_request(fmt::format("{}, got a {}", kRange, type_name(value)));
}

}  // namespace

GenerateRequest parse_generate_request(std::string_view body, const ImageModel& model,
                                       const ServerLimits& limits, uint64_t random_seed) {
  if (body.size() > limits.max_body_bytes) {
    throw RequestError(413, fmt::format("the request body is {} bytes; the limit is {}",
                                        body.size(), limits.max_body_bytes));
  }
  if (!valid_utf8(body)) bad_request("the request body is not valid UTF-8");
  json request;
  try {
    request = json::parse(body);
  } catch (const json::exception& error) {
    bad_request(fmt::format("the request body is not valid JSON: {}", one_line(error.what())));
  }
  if (!request.is_object()) {
    bad_request(
        fmt::format("the request body must be a JSON object, got a {}", type_name(request)));
  }
  static const std::vector<std::string> kFields = {
      "prompt", "negative_prompt", "guidance", "guidance_interval", "steps", "sampler",
      "seed",   "count",           "stream",   "attention"};
  for (const auto& [key, value] : request.items()) {
    if (std::find(kFields.begin(), kFields.end(), key) == kFields.end()) {
      bad_request(
          fmt::format("unknown field {}; the fields are prompt, negative_prompt, guidance, "
                      "guidance_interval, steps, sampler, seed, count, stream and attention",
                      quoted_text(key, 30)));
    }
  }

  GenerateRequest out;
  GenerationSettings& s = out.settings;
  const std::vector<std::string> prompts = trained_prompts(model);
  if (request.contains("prompt")) {
    s.prompt = text_field(request["prompt"], "prompt", limits.max_prompt_bytes);
  } else if (!prompts.empty()) {
    s.prompt = prompts.front();
  } else {
    bad_request("prompt is required");
  }
  if (request.contains("negative_prompt")) {
    s.negative_prompt =
        text_field(request["negative_prompt"], "negative_prompt", limits.max_prompt_bytes);
  }
  if (request.contains("guidance")) {
    const json& g = request["guidance"];
    if (!g.is_number()) {
      bad_request(fmt::format("guidance must be a number in [0, {}], got a {}", limits.max_guidance,
                              type_name(g)));
    }
    s.guidance = g.get<double>();
    if (!std::isfinite(s.guidance) || s.guidance < 0.0 || s.guidance > limits.max_guidance) {
      bad_request(
          fmt::format("guidance must be in [0, {}], got {}", limits.max_guidance, g.dump()));
    }
  }
  if (request.contains("guidance_interval")) {
    // The command line's form, "LOW,HIGH" (e.g. "0.28,5.42"; "0,inf" guides every step).
    const json& interval = request["guidance_interval"];
    if (!interval.is_string()) {
      bad_request(fmt::format("guidance_interval must be a string \"LOW,HIGH\", got a {}",
                              type_name(interval)));
    }
    try {
      s.guidance_interval =
          parse_guidance_interval(interval.get<std::string>(), "guidance_interval");
    } catch (const Error& error) {
      bad_request(one_line(error.what()));
    }
  }
  if (request.contains("steps")) {
    s.steps = integer_field(request["steps"], "steps", 1, limits.max_steps);
  }
  s.steps = std::min(s.steps, limits.max_steps);
  if (request.contains("count")) {
    s.count = integer_field(request["count"], "count", 1, limits.max_count);
  } else {
    s.count = std::min<int64_t>(4, limits.max_count);
  }
  if (request.contains("sampler")) {
    const json& sampler = request["sampler"];
    const std::vector<std::string> names = sampler_names();
    if (!sampler.is_string() ||
        std::find(names.begin(), names.end(), sampler.get<std::string>()) == names.end()) {
      bad_request(fmt::format("sampler must be one of ddim, ddpm, euler, dpmpp2m, got {}",
                              sampler.is_string() ? quoted_text(sampler.get<std::string>(), 30)
                                                  : std::string("a ") + type_name(sampler)));
    }
    s.sampler = sampler.get<std::string>();
  }
  if (request.contains("seed") && !request["seed"].is_null()) {
    s.seed = seed_field(request["seed"]);
    out.seed_given = true;
  } else {
    s.seed = random_seed;
  }
  if (request.contains("stream")) {
    if (!request["stream"].is_boolean()) {
      bad_request(
          fmt::format("stream must be true or false, got a {}", type_name(request["stream"])));
    }
    out.stream = request["stream"].get<bool>();
  }
  if (request.contains("attention")) {
    if (!request["attention"].is_boolean()) {
      bad_request(fmt::format("attention must be true or false, got a {}",
                              type_name(request["attention"])));
    }
    out.attention = request["attention"].get<bool>();
    if (out.attention && !has_sampler(model)) {
      bad_request(fmt::format(
          "attention maps need a model with cross-attention; this server holds the {} model",
          model.kind()));
    }
  }
  // The prompt's own checks: the same as the command line's (nothing the tokenizer knows is a 400).
  if (const auto* characters = dynamic_cast<const CharTokenizer*>(&model.tokenizer())) {
    try {
      out.warnings = check_prompt(s.prompt, *characters);
    } catch (const Error& error) {
      bad_request(one_line(error.what()));
    }
  } else if (s.prompt.find_first_not_of(" \t\r\n") == std::string::npos) {
    bad_request("prompt is empty");
  }
  return out;
}

std::string info_json(const ImageModel& model, const ServerLimits& limits) {
  const ImageFormat format = model.image_format();
  const bool sampler = has_sampler(model);
  json info;
  info["kind"] = model.kind();
  info["config"] = json::parse(model.config_json());
  info["image"] = {
      {"channels", format.channels}, {"height", format.height}, {"width", format.width}};
  info["has_sampler"] = sampler;
  info["attention"] = sampler;
  info["prompts"] = trained_prompts(model);
  info["samplers"] = sampler ? sampler_names() : std::vector<std::string>{};
  const GenerationSettings defaults;
  info["defaults"] = {{"guidance", defaults.guidance},
                      {"guidance_interval", guidance_interval_text(defaults.guidance_interval)},
                      {"steps", std::min(defaults.steps, limits.max_steps)},
                      {"sampler", defaults.sampler},
                      {"count", std::min<int64_t>(4, limits.max_count)}};
  info["limits"] = {{"max_prompt_bytes", limits.max_prompt_bytes},
                    {"steps", {1, limits.max_steps}},
                    {"count", {1, limits.max_count}},
                    {"guidance", {0, limits.max_guidance}},
                    {"max_body_bytes", limits.max_body_bytes},
                    {"threads", limits.threads},
                    {"queue", limits.queue}};
  return info.dump();
}

namespace {
json attention_value(const diffusion::AttentionMaps& maps, const Tokenizer& tokenizer) {
  INK_CHECK(maps.maps.defined() && maps.maps.dim() == 4, "attention_json: no maps were collected");
  const int height = static_cast<int>(maps.maps.size(2)),
            width = static_cast<int>(maps.maps.size(3));
  json pictures = json::array();
  for (int64_t i = 0; i < maps.maps.size(0); ++i) {
    json words = json::array();
    for (const WordAttention& word : attention_words(maps, i, tokenizer)) {
      const std::vector<uint8_t> png = encode_png(heat_image(word.map, width, height));
      words.push_back({{"text", word.text},
                       {"null", word.null_token},
                       {"share", word.share},
                       {"min", word.low},
                       {"max", word.peak},
                       {"map", base64({reinterpret_cast<const char*>(png.data()), png.size()})}});
    }
    pictures.push_back(std::move(words));
  }
  return {{"steps", maps.steps}, {"layers", maps.layers}, {"pictures", pictures}};
}
}  // namespace

std::string attention_json(const diffusion::AttentionMaps& maps, const Tokenizer& tokenizer) {
  return attention_value(maps, tokenizer).dump(-1, ' ', false, json::error_handler_t::replace);
}

// ---------------------------------------------------------------------------------------------

namespace {

uint64_t random_seed() {
  static std::mutex mutex;
  static std::random_device device;
  const std::lock_guard lock(mutex);
  return (uint64_t{device()} << 32 | device()) & ((uint64_t{1} << 53) - 1);  // fits a double
}

std::string error_body(const std::string& message) {
  return json{{"error", message}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

// One generation the server has admitted: running or waiting for a turn.
struct Job {
  std::string id;
  std::atomic<bool> cancelled{false};
};

}  // namespace

struct Server::Impl {
  ImageModel& model;
  ServerLimits limits;
  httplib::Server http;

  mutable std::mutex mutex;
  std::condition_variable turn;  // a generation finished, a job was cancelled, or stopping
  int64_t running = 0;
  int64_t waiting = 0;
  bool stopping = false;
  // run() has decided to listen (under mutex) / httplib's listen has returned.
  bool listen_started = false;
  std::atomic<bool> listen_returned{false};
  uint64_t next_job = 1;
  std::map<std::string, std::shared_ptr<Job>> jobs;
  ServerStats counts;

  Impl(ImageModel& m, ServerLimits l) : model(m), limits(l) {}

  // Admits a job (it counts as waiting) or returns null when running + waiting is at the bound.
  std::shared_ptr<Job> admit() {
    const std::lock_guard lock(mutex);
    if (stopping || running + waiting >= limits.threads + limits.queue) {
      ++counts.rejected_busy;
      return nullptr;
    }
    ++waiting;
    auto job = std::make_shared<Job>();
    job->id = fmt::format("{}", next_job++);
    jobs[job->id] = job;
    return job;
  }

  // Waits until the job may run. `still_wanted` is called about every 250 ms while waiting (it
  // writes a heartbeat, so a client that went away is noticed). False: give up (the job was
  // cancelled, its client is gone, or the server stops); the job is then no longer waiting.
  bool wait_turn(Job& job, const std::function<bool()>& still_wanted) {
    std::unique_lock lock(mutex);
    while (true) {
      if (stopping || job.cancelled) break;
      if (running < limits.threads) {
        --waiting;
        ++running;
        return true;
      }
      turn.wait_for(lock, std::chrono::milliseconds(250));
      if (stopping || job.cancelled) break;
      lock.unlock();
      const bool wanted = still_wanted();
      lock.lock();
      if (!wanted) break;
    }
    --waiting;
    ++counts.cancelled;
    counts.last_cancelled_steps = 0;
    return false;
  }

  // The end of a job that ran (its slot is free again) or was given up while waiting.
  void finish(const Job& job, bool ran, bool completed, int64_t steps_done) {
    {
      const std::lock_guard lock(mutex);
      jobs.erase(job.id);
      if (ran) {
        --running;
        if (completed) {
          ++counts.completed;
        } else {
          ++counts.cancelled;
          counts.last_cancelled_steps = steps_done;
        }
      }
    }
    turn.notify_all();
  }

  bool cancel(const std::string& id) {
    std::shared_ptr<Job> job;
    {
      const std::lock_guard lock(mutex);
      const auto it = jobs.find(id);
      if (it == jobs.end()) return false;
      job = it->second;
    }
    job->cancelled = true;
    turn.notify_all();
    return true;
  }

  void handle_generate(const httplib::Request& request, httplib::Response& response,
                       bool force_stream);
  // Runs an admitted job inside the response's content provider: waits for a turn, generates
  // and writes the answer through `sink`.
  void run_job(const std::shared_ptr<Job>& job, const GenerateRequest& parsed,
               httplib::DataSink& sink);
};

namespace {

bool write(httplib::DataSink& sink, const std::string& text) {
  return sink.write(text.data(), text.size());
}

std::string sse_event(const char* event, const json& data) {
  return fmt::format("event: {}\ndata: {}\n\n", event,
                     data.dump(-1, ' ', false, json::error_handler_t::replace));
}

// Pictures [B, C, H, W] in [0, 1] as base64 PNGs, with the settings chunk unless it is empty
// (previews go without: they are not the result).
std::vector<std::string> base64_pngs(const Tensor& images, const ImageFormat& format,
                                     const std::string& settings_text) {
  std::vector<std::string> out;
  for (int64_t i = 0; i < images.size(0); ++i) {
    const std::vector<uint8_t> png =
        settings_text.empty() ? encode_png(picture_image(picture_values(images, i), format))
                              : picture_png(images, i, format, 1, settings_text);
    out.push_back(base64({reinterpret_cast<const char*>(png.data()), png.size()}));
  }
  return out;
}

// x0_hat [B, C, H, W] in [-1, 1] as pictures in [0, 1].
Tensor to_unit_range(const Tensor& x) {
  Tensor out = empty(x.shape());
  const float* in = x.data();
  float* o = out.data();
  for (int64_t i = 0; i < x.numel(); ++i) o[i] = std::clamp((in[i] + 1.0f) * 0.5f, 0.0f, 1.0f);
  return out;
}

}  // namespace

void Server::Impl::run_job(const std::shared_ptr<Job>& job, const GenerateRequest& parsed,
                           httplib::DataSink& sink) {
  const GenerationSettings& settings = parsed.settings;
  const bool stream = parsed.stream;
  const std::string settings_text = settings_json(settings, model);
  if (stream) write(sink, sse_event("job", {{"id", job->id}, {"seed", settings.seed}}));
  // A write while waiting and at every step: the only way to notice a client that went away.
  const auto heartbeat = [&] { return write(sink, stream ? ": waiting\n\n" : " "); };
  if (!wait_turn(*job, heartbeat)) {
    finish(*job, false, false, 0);
    if (stream) write(sink, sse_event("error", {{"error", "cancelled before it started"}}));
    sink.done();
    return;
  }
  const ImageFormat format = model.image_format();
  const int64_t preview_every = std::max<int64_t>(1, settings.steps / 10);
  int64_t steps_done = 0;
  bool client_gone = false;
  const diffusion::StepCallback callback = [&](const diffusion::StepInfo& info) {
    steps_done = info.step + 1;
    bool ok = true;
    if (stream) {
      json event = {{"step", info.step + 1}, {"steps", info.num_steps}};
      const bool last = info.step + 1 == info.num_steps;
      if (!last && (info.step % preview_every == 0)) {
        event["previews"] = base64_pngs(to_unit_range(info.x0_hat), format, "");
      }
      ok = write(sink, sse_event("progress", event));
    } else {
      ok = heartbeat();
    }
    client_gone = !ok;
    return ok && !job->cancelled && !stopping;
  };
  try {
    diffusion::AttentionMaps attention;
    const Tensor images =
        generate_pictures(model, settings, callback, parsed.attention ? &attention : nullptr);
    finish(*job, true, true, steps_done);
    json answer = {
        {"seed", settings.seed},
        {"seed_string", std::to_string(settings.seed)},
        {"images", base64_pngs(images, format, settings_text)},
        {"settings", json::parse(settings_text)},
        {"warnings", parsed.warnings},
        {"image",
         {{"channels", format.channels}, {"height", format.height}, {"width", format.width}}}};
    if (parsed.attention) answer["attention"] = attention_value(attention, model.tokenizer());
    write(sink, stream ? sse_event("done", answer)
                       : answer.dump(-1, ' ', false, json::error_handler_t::replace));
  } catch (const Error& error) {
    // A cancellation (or a model error after the 200 was sent): the body says what happened.
    finish(*job, true, false, steps_done);
    if (!client_gone) {
      const std::string message = one_line(error.what());
      write(sink, stream ? sse_event("error", {{"error", message}}) : error_body(message));
    }
  }
  sink.done();
}

void Server::Impl::handle_generate(const httplib::Request& request, httplib::Response& response,
                                   bool force_stream) {
  GenerateRequest parsed;
  try {
    parsed = parse_generate_request(request.body, model, limits, random_seed());
  } catch (const RequestError& error) {
    response.status = error.status();
    response.set_content(error_body(error.what()), "application/json");
    return;
  }
  parsed.stream = parsed.stream || force_stream;
  std::shared_ptr<Job> job = admit();
  if (!job) {
    response.status = 503;
    response.set_header("Retry-After", "5");
    response.set_content(
        error_body(fmt::format("busy: {} generation{} running and {} waiting; try again shortly",
                               limits.threads, limits.threads == 1 ? "" : "s", limits.queue)),
        "application/json");
    return;
  }
  response.set_header("X-Job-Id", job->id);
  response.set_header("Cache-Control", "no-store");
  auto started = std::make_shared<bool>(false);
  response.set_chunked_content_provider(
      parsed.stream ? "text/event-stream" : "application/json",
      [this, job, parsed, started](size_t, httplib::DataSink& sink) {
        *started = true;
        run_job(job, parsed, sink);
        return true;
      },
      [this, job, started](bool) {
        // The provider never ran (the connection failed first): the job still waits; drop it.
        if (*started) return;
        {
          const std::lock_guard lock(mutex);
          --waiting;
          jobs.erase(job->id);
        }
        turn.notify_all();
      });
}

Server::Server(ImageModel& model, ServerLimits limits)
    : impl_(std::make_unique<Impl>(model, limits)) {
  limits.validate();
  Impl& s = *impl_;
  // Enough HTTP threads for every admitted job plus a few to answer 503s, info and the page.
  const auto pool = static_cast<size_t>(limits.threads + limits.queue + 4);
  s.http.new_task_queue = [pool] { return new httplib::ThreadPool(pool); };
  s.http.set_payload_max_length(limits.max_body_bytes);
  s.http.set_read_timeout(10);
  s.http.set_write_timeout(10);
  s.http.set_keep_alive_max_count(20);

  s.http.Get("/api/info", [&s](const httplib::Request&, httplib::Response& response) {
    response.set_content(info_json(s.model, s.limits), "application/json");
  });
  s.http.Post("/api/generate", [&s](const httplib::Request& request, httplib::Response& response) {
    s.handle_generate(request, response, false);
  });
  s.http.Post("/api/generate/stream",
              [&s](const httplib::Request& request, httplib::Response& response) {
                s.handle_generate(request, response, true);
              });
  s.http.Delete(R"(/api/jobs/(\d{1,20}))", [&s](const httplib::Request& request,
                                                httplib::Response& response) {
    const std::string id = request.matches[1];
    if (s.cancel(id)) {
      response.set_content(json{{"cancelled", id}}.dump(), "application/json");
    } else {
      response.status = 404;
      response.set_content(error_body("no running or waiting job " + id), "application/json");
    }
  });
  // The page: only the embedded files, looked up by exact path (no file system access).
  s.http.Get(R"(/[a-z._-]*)", [](const httplib::Request& request, httplib::Response& response) {
    const std::string path = request.path == "/" ? "/index.html" : request.path;
    for (const WebAsset& asset : web_assets()) {
      if (path == asset.path) {
        response.set_content(asset.bytes.data(), asset.bytes.size(), asset.content_type);
        response.set_header("Cache-Control", "no-cache");
        return;
      }
    }
    response.status = 404;
    response.set_content(error_body("not found: " + request.path), "application/json");
  });
  // httplib's own refusals (413 for a large body, 404, 400 for a bad request line) in JSON.
  s.http.set_error_handler([](const httplib::Request&, httplib::Response& response) {
    if (!response.body.empty()) return;
    std::string message = fmt::format("HTTP {}", response.status);
    if (response.status == 413) message = "the request body is too large";
    if (response.status == 404) message = "not found";
    response.set_content(error_body(message), "application/json");
  });
  s.http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& response, std::exception_ptr error) {
        std::string message = "internal error";
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          message = one_line(e.what());
        } catch (...) {
        }
        response.status = 500;
        response.set_content(error_body(message), "application/json");
      });
}

Server::~Server() {
  stop();
}

int Server::bind(const std::string& host, int port) {
  INK_CHECK(port >= 0 && port <= 65535, "serve: port must be in [0, 65535], got {}", port);
  const int bound = port == 0 ? impl_->http.bind_to_any_port(host)
                              : (impl_->http.bind_to_port(host, port) ? port : -1);
  INK_CHECK(bound > 0, "serve: cannot listen on {}:{} (in use, or not an address of this machine)",
            host, port);
  return bound;
}

void Server::run() {
  {
    const std::lock_guard lock(impl_->mutex);
    if (impl_->stopping) return;  // stop() came first: never start listening
    impl_->listen_started = true;
  }
  impl_->http.listen_after_bind();
  impl_->listen_returned = true;
}

void Server::stop() {
  {
    const std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
    for (auto& [id, job] : impl_->jobs) job->cancelled = true;
  }
  impl_->turn.notify_all();
  // httplib's stop() does nothing until its listen loop is running, so a stop() that lands
  // between run() deciding to listen and the loop starting would be lost, and the listener
  // would then block in accept() for ever (seen as a hung test teardown under load). Wait for
  // the loop to be up (or to have ended) before stopping it.
  bool started = false;
  {
    const std::lock_guard lock(impl_->mutex);
    started = impl_->listen_started;
  }
  while (started && !impl_->listen_returned && !impl_->http.is_running()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  impl_->http.stop();
}

ServerStats Server::stats() const {
  const std::lock_guard lock(impl_->mutex);
  ServerStats out = impl_->counts;
  out.running = impl_->running;
  out.waiting = impl_->waiting;
  return out;
}

}  // namespace ink::app
