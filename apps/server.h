// The library part of `inkgrad serve`: request validation (pure functions from a request body to
// generation settings or a 4xx error) and Server, an HTTP server over one loaded ImageModel with
// a bounded number of generations at a time and a bounded queue. The CLI glue (flags, signals)
// is in cmd_serve.cpp; tests start a Server on a free loopback port in-process.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "apps/generation.h"
#include "models/image_model.h"

namespace ink::app {

// What a request may ask for and how many may run or wait.
struct ServerLimits {
  int64_t threads = 1;  // generations running at once
  int64_t queue = 8;    // requests waiting for a free generation beyond those (then 503)
  size_t max_body_bytes = 64 * 1024;
  size_t max_prompt_bytes = 200;  // each of prompt and negative_prompt, in UTF-8 bytes
  int64_t max_steps = 100;        // steps in [1, max_steps]
  int64_t max_count = 16;         // count in [1, max_count]
  double max_guidance = 20.0;     // guidance in [0, max_guidance]
  // Throws ink::Error naming the first limit out of its sane range.
  void validate() const;
};

// A request the server refuses, with its HTTP status (400, 413, 404, 503) and a message for the
// {"error": "..."} body.
class RequestError : public std::runtime_error {
 public:
  RequestError(int status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

struct GenerateRequest {
  GenerationSettings settings;
  bool stream = false;      // answer with server-sent events (progress, previews, then images)
  bool attention = false;   // also answer each picture's per-word cross-attention maps
  bool seed_given = false;  // false: settings.seed was drawn at random
  std::vector<std::string> warnings;  // dropped characters, an untrained prompt, ...
};

// The "attention" member of an answer: {"steps", "layers", "pictures": one list per picture of
// {"text", "null", "share", "min", "max", "map"}: the null token first, then each word of the
// prompt (attention_words), with its map as a base64 PNG of the picture's size coloured by
// heat_image (stretched from min to max).
std::string attention_json(const diffusion::AttentionMaps& maps, const Tokenizer& tokenizer);

// The prompts `model` was trained on: the nine shapes for a model on the shapes data (a character
// tokenizer and 1 x 28 x 28 pictures), otherwise none known.
std::vector<std::string> trained_prompts(const ImageModel& model);
// The sampler names a request may give ("ddim", "ddpm", "euler", "dpmpp2m").
std::vector<std::string> sampler_names();

// Parses and checks a POST /api/generate body: a JSON object with the optional fields prompt,
// negative_prompt (strings), guidance (number), steps, count (integers), sampler (string), seed
// (a non-negative integer or a string of digits), stream and attention (booleans; attention
// only for a model with a sampler). Missing fields get the
// defaults (prompt: the first trained prompt; seed: `random_seed`). Throws RequestError 400 for
// invalid UTF-8, malformed JSON, unknown fields, wrong types, non-integral or non-finite numbers
// and values outside `limits`, and 413 for a body over limits.max_body_bytes.
GenerateRequest parse_generate_request(std::string_view body, const ImageModel& model,
                                       const ServerLimits& limits, uint64_t random_seed);

// GET /api/info: {"kind", "config", "image": {channels, height, width}, "has_sampler",
// "attention" (whether requests may ask for attention maps), "prompts", "samplers", "defaults",
// "limits"}.
std::string info_json(const ImageModel& model, const ServerLimits& limits);

// Standard base64 (with padding) of `bytes`.
std::string base64(std::string_view bytes);
// Whether `text` is well-formed UTF-8 (no overlong forms, surrogates or code points > U+10FFFF).
bool valid_utf8(std::string_view text);

// Counts a Server keeps, for tests and the load check.
struct ServerStats {
  int64_t completed = 0;              // generations that finished
  int64_t cancelled = 0;              // stopped by DELETE /api/jobs/ID or a client that went away
  int64_t rejected_busy = 0;          // 503 answers
  int64_t last_cancelled_steps = -1;  // sampler steps the last cancelled generation ran
  int64_t running = 0;
  int64_t waiting = 0;
};

// What this object represents: the HTTP server of `inkgrad serve` over one model that outlives
// it. Routes: GET / (the page and its files, embedded in the binary), GET /api/info,
// POST /api/generate (JSON, or server-sent events with "stream": true), POST
// /api/generate/stream (the same as stream: true) and DELETE /api/jobs/ID. At most
// limits.threads generations run at once; up to limits.queue more wait; beyond that the answer
// is 503 with Retry-After. A generation stops at its next sampler step when its job is deleted
// or its client went away (noticed when a write fails: the server writes while it works, a
// space before the JSON answer or an event on the stream). No request names a file.
class Server {
 public:
  Server(ImageModel& model, ServerLimits limits);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds to host:port (port 0: a free port) and returns the port. Throws ink::Error naming the
  // address when it cannot.
  int bind(const std::string& host, int port);
  // Serves until stop(); call bind first.
  void run();
  // Stops run() from any thread; running generations are cancelled at their next step.
  void stop();
  ServerStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ink::app
