// inkgrad serve: request validation, the JSON API and the event stream against a Server on a free
// loopback port in-process, the queue bound (503), cancellation, the PNG text chunk, and the
// same pixels as `inkgrad generate` for the same settings and seed.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#include <stb/stb_image.h>

#include "apps/generation.h"
#include "apps/server.h"
#include "models/diffusion/model.h"
#include "models/registry.h"
#include "models/tokenizer.h"
#include "tensor/error.h"
#include "tests/test_util.h"

extern char** environ;

namespace ink::app {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using testing_util::error_of;
namespace fs = std::filesystem;

// ---- helpers ----

std::string decode_base64(const std::string& text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (char c : text) {
    const int v = value(c);
    if (v < 0) continue;
    bits = bits << 6 | static_cast<uint32_t>(v);
    count += 6;
    if (count >= 8) {
      count -= 8;
      out += static_cast<char>((bits >> count) & 0xff);
    }
  }
  return out;
}

struct Decoded {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

// PNG bytes -> RGB pixels (stb_image), or width 0 when they do not decode.
Decoded decode_png(const std::string& png) {
  Decoded out;
  int channels = 0;
  unsigned char* pixels =
      stbi_load_from_memory(reinterpret_cast<const unsigned char*>(png.data()),
                            static_cast<int>(png.size()), &out.width, &out.height, &channels, 3);
  if (pixels == nullptr) return {};
  out.rgb.assign(pixels, pixels + out.width * out.height * 3);
  stbi_image_free(pixels);
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string settings_of(const std::string& png) {
  for (const auto& [key, value] : png_text(png)) {
    if (key == kPngSettingsKey) return value;
  }
  return "";
}

// A Server over `model` on a free loopback port, serving from its own thread.
class RunningServer {
 public:
  RunningServer(ImageModel& model, ServerLimits limits) : server_(model, limits) {
    port_ = server_.bind("127.0.0.1", 0);
    thread_ = std::thread([this] { server_.run(); });
  }
  ~RunningServer() {
    server_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  Server& server() { return server_; }
  httplib::Client client() const {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(60);
    return client;
  }

 private:
  Server server_;
  int port_ = 0;
  std::thread thread_;
};

// Polls `condition` for up to 20 s.
template <typename Fn>
bool eventually(Fn&& condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return condition();
}

// The events of a server-sent event stream: (event name, data JSON).
std::vector<std::pair<std::string, json>> parse_events(const std::string& stream) {
  std::vector<std::pair<std::string, json>> out;
  size_t at = 0;
  while (at < stream.size()) {
    const size_t end = stream.find("\n\n", at);
    const std::string block = stream.substr(at, end == std::string::npos ? end : end - at);
    at = end == std::string::npos ? stream.size() : end + 2;
    std::string event, data;
    size_t line_start = 0;
    while (line_start < block.size()) {
      size_t line_end = block.find('\n', line_start);
      if (line_end == std::string::npos) line_end = block.size();
      const std::string line = block.substr(line_start, line_end - line_start);
      if (line.starts_with("event: ")) event = line.substr(7);
      if (line.starts_with("data: ")) data += line.substr(6);
      line_start = line_end + 1;
    }
    if (!event.empty()) out.emplace_back(event, json::parse(data));
  }
  return out;
}

// The tiny diffusion model (untrained, fixed seed), saved once and loaded back as the CLI
// would load it, so the server and `inkgrad generate` use the same weights.
class ServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(
        (fs::temp_directory_path() / ("inkgrad_serve_test_" + std::to_string(getpid()))).string());
    fs::create_directories(*dir_);
    Generator generator(1234);
    const diffusion::TextToImageDiffusion model(diffusion::DiffusionConfig::preset("tiny"),
                                                &generator);
    save_model(model, checkpoint());
    model_ = load_model(checkpoint()).release();
    ServerLimits limits;
    limits.threads = 2;
    limits.queue = 4;
    server_ = new RunningServer(*model_, limits);
  }
  static void TearDownTestSuite() {
    delete server_;
    delete model_;
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string checkpoint() { return *dir_ + "/tiny.safetensors"; }

  static httplib::Result post(const std::string& body, const std::string& path = "/api/generate") {
    static httplib::Client client = server_->client();
    return client.Post(path.c_str(), body, "application/json");
  }

  static std::string* dir_;
  static ImageModel* model_;
  static RunningServer* server_;
};
std::string* ServeTest::dir_ = nullptr;
ImageModel* ServeTest::model_ = nullptr;
RunningServer* ServeTest::server_ = nullptr;

// ---- pure parts ----

TEST(PngText, ChunkHasACorrectCrcAndRoundTrips) {
  EXPECT_EQ(png_crc32("IEND"), 0xae426082u);  // the CRC every PNG ends with
  const std::vector<uint8_t> png = encode_png(Image(3, 2, Color{10, 20, 30}));
  const std::vector<uint8_t> with_text =
      png_with_text(png, {{"inkgrad.settings", R"({"prompt":"circle"})"}, {"Software", "inkgrad"}});
  const std::string bytes(with_text.begin(), with_text.end());
  const auto chunks = png_text(bytes);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].first, "inkgrad.settings");
  EXPECT_EQ(chunks[0].second, R"({"prompt":"circle"})");
  EXPECT_EQ(chunks[1].second, "inkgrad");
  // Still a PNG with the same pixels (stb checks every CRC? it needs the chunks well formed).
  const Decoded decoded = decode_png(bytes);
  ASSERT_EQ(decoded.width, 3);
  EXPECT_EQ(decoded.rgb[0], 10);
  EXPECT_EQ(decoded.rgb[2], 30);
  // A flipped byte in the text breaks its CRC: the chunk is no longer reported.
  std::string corrupt = bytes;
  corrupt[33 + 8 + 2] ^= 1;
  EXPECT_TRUE(png_text(corrupt).empty() || png_text(corrupt)[0].first != "inkgrad.settings");
  EXPECT_THAT(error_of([&] {
                png_with_text(png, {{" bad", "x"}});
              }),
              HasSubstr("not a valid tEXt keyword"));
  EXPECT_THAT(error_of([&] { png_with_text({1, 2, 3}, {}); }), HasSubstr("not a PNG"));
}

TEST(ServeParts, Base64AndUtf8) {
  EXPECT_EQ(base64(""), "");
  EXPECT_EQ(base64("f"), "Zg==");
  EXPECT_EQ(base64("fo"), "Zm8=");
  EXPECT_EQ(base64("foobar"), "Zm9vYmFy");
  EXPECT_TRUE(valid_utf8("caf\xc3\xa9 \xf0\x9f\x98\x80"));
  EXPECT_FALSE(valid_utf8("\xff"));
  EXPECT_FALSE(valid_utf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(valid_utf8("\xed\xa0\x80"));      // a surrogate
  EXPECT_FALSE(valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(valid_utf8("\xe2\x82"));          // cut short
}

TEST_F(ServeTest, ParseFillsDefaultsAndKeepsExactSeeds) {
  const ServerLimits limits;
  const GenerateRequest defaults = parse_generate_request("{}", *model_, limits, 99);
  EXPECT_EQ(defaults.settings.prompt, "horizontal line");
  EXPECT_EQ(defaults.settings.seed, 99u);
  EXPECT_FALSE(defaults.seed_given);
  EXPECT_EQ(defaults.settings.steps, 50);
  EXPECT_EQ(defaults.settings.sampler, "ddim");
  EXPECT_EQ(defaults.settings.count, 4);
  EXPECT_EQ(guidance_interval_text(defaults.settings.guidance_interval), "0.28,5.42");
  EXPECT_FALSE(defaults.stream);
  const GenerateRequest exact = parse_generate_request(
      R"({"seed": "18446744073709551615", "steps": 20.0, "stream": true, "sampler": "euler"})",
      *model_, limits, 0);
  EXPECT_EQ(exact.settings.seed, 18446744073709551615u);
  EXPECT_EQ(exact.settings.steps, 20);
  EXPECT_TRUE(exact.stream);
  // The interval reaches the settings generate_pictures samples with (the untrained model's
  // cross-attention outputs start at zero, so no picture of it could show guidance at all).
  const GenerateRequest interval =
      parse_generate_request(R"({"guidance_interval": "0.5,20"})", *model_, limits, 0);
  EXPECT_EQ(interval.settings.guidance_interval.sigma_low, 0.5);
  EXPECT_EQ(interval.settings.guidance_interval.sigma_high, 20.0);
  EXPECT_EQ(
      parse_generate_request(R"({"seed": 18446744073709551615})", *model_, limits, 0).settings.seed,
      18446744073709551615u);
}

// ---- the API ----

TEST_F(ServeTest, InfoNamesTheModelPromptsSamplersAndLimits) {
  httplib::Client client = server_->client();
  const auto result = client.Get("/api/info");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200);
  const json info = json::parse(result->body);
  EXPECT_EQ(info["kind"], "diffusion");
  EXPECT_EQ(info["prompts"].size(), 9u);
  EXPECT_EQ(info["prompts"][0], "horizontal line");
  EXPECT_EQ(info["samplers"], json({"ddim", "ddpm", "euler", "dpmpp2m"}));
  EXPECT_EQ(info["limits"]["steps"], json({1, 100}));
  EXPECT_EQ(info["limits"]["count"], json({1, 16}));
  EXPECT_EQ(info["image"]["width"], 28);
  EXPECT_EQ(info["attention"], true);
  EXPECT_EQ(info["defaults"]["guidance_interval"], "0.28,5.42");
}

TEST_F(ServeTest, GenerateAnswersPngsWithTheirSettings) {
  const auto result = post(
      R"({"prompt": "circle", "negative_prompt": "square", "guidance": 2.5, "steps": 4,
          "guidance_interval": "0.5,inf", "sampler": "euler", "seed": 7, "count": 3})");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  EXPECT_EQ(result->get_header_value("Content-Type"), "application/json");
  const json answer = json::parse(result->body);
  EXPECT_EQ(answer["seed"], 7);
  ASSERT_EQ(answer["images"].size(), 3u);
  for (const auto& image : answer["images"]) {
    const std::string png = decode_base64(image.get<std::string>());
    const Decoded decoded = decode_png(png);
    EXPECT_EQ(decoded.width, 28);
    EXPECT_EQ(decoded.height, 28);
    const json settings = json::parse(settings_of(png));
    EXPECT_EQ(settings["prompt"], "circle");
    EXPECT_EQ(settings["negative_prompt"], "square");
    EXPECT_EQ(settings["seed"], 7);
    EXPECT_EQ(settings["steps"], 4);
    EXPECT_EQ(settings["guidance"], 2.5);
    EXPECT_EQ(settings["guidance_interval"], "0.5,inf");
    EXPECT_EQ(settings["sampler"], "euler");
    EXPECT_EQ(settings["model"], "diffusion");
  }
  EXPECT_EQ(answer["settings"]["count"], 3);
}

TEST_F(ServeTest, MissingFieldsGetDefaultsAndARandomSeed) {
  const auto result = post(R"({"steps": 2, "count": 1})");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const json answer = json::parse(result->body);
  EXPECT_EQ(answer["settings"]["prompt"], "horizontal line");
  EXPECT_EQ(answer["settings"]["sampler"], "ddim");
  EXPECT_EQ(answer["seed_string"], std::to_string(answer["seed"].get<uint64_t>()));
  EXPECT_EQ(answer["images"].size(), 1u);
}

TEST_F(ServeTest, BadRequestsAre400WithAClearError) {
  const std::string long_prompt(201, 'a');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"steps": "10"})", "steps must be an integer in [1, 100], got a string"},
      {R"({"prompt": 5})", "prompt must be a string, got a number"},
      {R"({"count": true})", "count must be an integer in [1, 16], got a boolean"},
      {R"({"guidance": "high"})", "guidance must be a number"},
      {R"({"steps": NaN})", "not valid JSON"},
      {R"({"guidance": 1e400})", "not valid JSON"},
      {R"({"steps": 1e30})", "steps must be in [1, 100], got 1e+30"},
      {R"({"steps": 99999999999999999999})", "steps must be in [1, 100]"},
      {R"({"count": -9223372036854775808})", "count must be in [1, 16]"},
      {R"({"steps": 0})", "steps must be in [1, 100], got 0"},
      {R"({"steps": 101})", "steps must be in [1, 100], got 101"},
      {R"({"steps": 2.5})", "steps must be an integer in [1, 100], got 2.5"},
      {R"({"count": 17})", "count must be in [1, 16], got 17"},
      {R"({"guidance": -1})", "guidance must be in [0, 20], got -1"},
      {R"({"guidance": 21})", "guidance must be in [0, 20], got 21"},
      {R"({"guidance_interval": [0, 1]})",
       "guidance_interval must be a string \"LOW,HIGH\", got a array"},
      {R"({"guidance_interval": "5,1"})", "guidance_interval: expected LOW,HIGH"},
      {R"({"guidance_interval": "-1,inf"})", "guidance_interval: expected LOW,HIGH"},
      {R"({"guidance_interval": "0.3"})", "guidance_interval: expected LOW,HIGH"},
      {R"({"seed": -1})", "seed must be an integer in [0, 18446744073709551615], got -1"},
      {R"({"seed": "12a"})", "seed must be an integer"},
      {R"({"seed": 1e300})", "seed must be an integer"},
      {R"({"sampler": "plms"})", "sampler must be one of ddim, ddpm, euler, dpmpp2m, got \"plms\""},
      {R"({"stream": 1})", "stream must be true or false"},
      {R"({"attention": 1})", "attention must be true or false, got a number"},
      {R"({"attention": "yes"})", "attention must be true or false, got a string"},
      {R"({"promt": "circle"})", "unknown field \"promt\""},
      {R"({"checkpoint": "/etc/passwd"})", "unknown field \"checkpoint\""},
      {R"({"prompt": ")" + long_prompt + R"("})", "prompt is 201 bytes long; the limit is 200"},
      {R"({"prompt": "12345"})", "prompt"},
      {R"({"prompt": ""})", "prompt"},
      {"{\"prompt\": \"circle \xff\"}", "not valid UTF-8"},
      {"{\"prompt\": \"\xed\xa0\x80\"}", "not valid UTF-8"},
      {R"({"prompt": "\ud800"})", "not valid JSON"},  // a lone surrogate escape
      {R"([1, 2])", "must be a JSON object, got a array"},
      {"", "not valid JSON"},
      {"{", "not valid JSON"},
  };
  for (const auto& [body, message] : cases) {
    const auto result = post(body);
    ASSERT_TRUE(result) << body;
    EXPECT_EQ(result->status, 400) << body;
    EXPECT_EQ(result->get_header_value("Content-Type"), "application/json") << body;
    const json answer = json::parse(result->body);
    EXPECT_THAT(answer["error"].get<std::string>(), HasSubstr(message)) << body;
  }
}

TEST_F(ServeTest, HugeBodyIsRefusedAndTheServerStillAnswers) {
  const std::string body = R"({"prompt": ")" + std::string(10 << 20, 'a') + R"("})";
  const auto result = post(body);
  // httplib refuses it from the Content-Length (413); a client may also see the connection
  // closed before it finished sending.
  if (result) {
    EXPECT_TRUE(result->status == 413 || result->status == 400) << result->status;
    EXPECT_THAT(result->body, HasSubstr("too large"));
  }
  httplib::Client client = server_->client();
  const auto info = client.Get("/api/info");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->status, 200);
}

TEST_F(ServeTest, SameSeedGivesTheSamePixelsAsInkgradGenerate) {
  const std::string each = *dir_ + "/each";
  const std::string command =
      std::string(INKGRAD_BINARY) + " generate -c " + checkpoint() +
      " -p 'two vertical lines' --negative-prompt circle --guidance 2 --steps 6 --sampler dpmpp2m"
      " --guidance-interval 0.5,20 --seed 77 -n 2 --scale 1 --each " +
      each + " -o " + *dir_ + "/grid.png >/dev/null 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const auto result = post(
      R"({"prompt": "two vertical lines", "negative_prompt": "circle", "guidance": 2,
          "guidance_interval": "0.5,20", "steps": 6, "sampler": "dpmpp2m", "seed": 77,
          "count": 2})");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const json answer = json::parse(result->body);
  for (int i = 0; i < 2; ++i) {
    const std::string cli_png =
        read_file(each + "/two_vertical_lines_00" + std::to_string(i + 1) + ".png");
    const std::string api_png = decode_base64(answer["images"][i].get<std::string>());
    const Decoded cli = decode_png(cli_png);
    const Decoded api = decode_png(api_png);
    ASSERT_EQ(cli.width, 28);
    EXPECT_EQ(cli.rgb, api.rgb) << "picture " << i;
    EXPECT_EQ(settings_of(cli_png), settings_of(api_png));
  }
  // Not vacuous: another seed gives other pixels.
  const auto other = post(
      R"({"prompt": "two vertical lines", "negative_prompt": "circle", "guidance": 2,
          "steps": 6, "sampler": "dpmpp2m", "seed": 78, "count": 1})");
  ASSERT_TRUE(other);
  EXPECT_NE(decode_png(decode_base64(json::parse(other->body)["images"][0])).rgb,
            decode_png(decode_base64(answer["images"][0].get<std::string>())).rgb);
  // The grid the command line writes carries the settings too.
  const json grid_settings = json::parse(settings_of(read_file(*dir_ + "/grid.png")));
  EXPECT_EQ(grid_settings["seed"], 77);
  EXPECT_EQ(grid_settings["sampler"], "dpmpp2m");
  EXPECT_EQ(grid_settings["guidance_interval"], "0.5,20");
}

TEST_F(ServeTest, StreamSendsPreviewsBeforeTheImages) {
  httplib::Client client = server_->client();
  const auto result = client.Post("/api/generate/stream",
                                  R"({"prompt": "circle", "steps": 20, "count": 2, "seed": 3})",
                                  "application/json");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200);
  EXPECT_EQ(result->get_header_value("Content-Type"), "text/event-stream");
  const auto events = parse_events(result->body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.front().first, "job");
  EXPECT_EQ(events.back().first, "done");
  int progress = 0, previews = 0;
  for (const auto& [event, data] : events) {
    if (event != "progress") continue;
    ++progress;
    EXPECT_EQ(data["step"], progress);
    EXPECT_EQ(data["steps"], 20);
    if (data.contains("previews")) {
      ++previews;
      ASSERT_EQ(data["previews"].size(), 2u);
      EXPECT_EQ(decode_png(decode_base64(data["previews"][0])).width, 28);
    }
  }
  EXPECT_EQ(progress, 20);
  EXPECT_GE(previews, 5);
  const json& done = events.back().second;
  ASSERT_EQ(done["images"].size(), 2u);
  // The stream's final images are the plain request's.
  const auto plain = post(R"({"prompt": "circle", "steps": 20, "count": 2, "seed": 3})");
  ASSERT_TRUE(plain);
  EXPECT_EQ(json::parse(plain->body)["images"], done["images"]);
}

TEST_F(ServeTest, ClosedStreamStopsAtTheNextStep) {
  const ServerStats before = server_->server().stats();
  httplib::Client client = server_->client();
  httplib::Request request;
  request.method = "POST";
  request.path = "/api/generate";
  request.body = R"({"prompt": "circle", "steps": 100, "count": 16, "seed": 1, "stream": true})";
  request.set_header("Content-Type", "application/json");
  std::string received;
  request.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    received.append(data, size);
    return received.find("event: progress") == std::string::npos;  // close after the first step
  };
  client.send(request);
  ASSERT_TRUE(eventually([&] { return server_->server().stats().cancelled > before.cancelled; }));
  const ServerStats after = server_->server().stats();
  EXPECT_EQ(after.completed, before.completed);
  EXPECT_GE(after.last_cancelled_steps, 1);
  EXPECT_LT(after.last_cancelled_steps, 20);
  EXPECT_EQ(after.running, 0);
}

TEST_F(ServeTest, DeleteJobCancelsAStream) {
  const ServerStats before = server_->server().stats();
  httplib::Client client = server_->client();
  httplib::Request request;
  request.method = "POST";
  request.path = "/api/generate/stream";
  request.body = R"({"prompt": "circle", "steps": 100, "count": 16, "seed": 1})";
  request.set_header("Content-Type", "application/json");
  std::string received;
  bool deleted = false;
  int delete_status = 0;
  request.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    received.append(data, size);
    if (!deleted && received.find("event: progress") != std::string::npos) {
      const auto events = parse_events(received.substr(0, received.find("\n\n") + 2));
      const std::string id = events.at(0).second["id"];
      httplib::Client other = server_->client();
      const auto answer = other.Delete(("/api/jobs/" + id).c_str());
      delete_status = answer ? answer->status : -1;
      deleted = true;
    }
    return true;
  };
  const auto result = client.send(request);
  ASSERT_TRUE(result);
  EXPECT_EQ(delete_status, 200);
  const auto events = parse_events(received);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().first, "error");
  EXPECT_THAT(events.back().second["error"].get<std::string>(), HasSubstr("cancelled"));
  const ServerStats after = server_->server().stats();
  EXPECT_EQ(after.cancelled, before.cancelled + 1);
  EXPECT_LT(after.last_cancelled_steps, 100);
  // A job that does not exist (any more).
  httplib::Client other = server_->client();
  const auto gone = other.Delete("/api/jobs/123456");
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 404);
}

TEST_F(ServeTest, CommandLineServesAndStopsCleanlyOnSigint) {
  const std::string out = *dir_ + "/serve.out";
  std::vector<std::string> args = {INKGRAD_BINARY, "serve", "-c",        checkpoint(),
                                   "--port",       "0",     "--threads", "1"};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  ASSERT_EQ(posix_spawn(&pid, INKGRAD_BINARY, &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  int port = 0;
  const bool listening = eventually([&] {
    const std::string text = read_file(out);
    const size_t at = text.find("http://127.0.0.1:");
    if (at == std::string::npos) return false;
    port = std::atoi(text.c_str() + at + 17);
    return port > 0;
  });
  if (listening) {
    httplib::Client client("127.0.0.1", port);
    const auto info = client.Get("/api/info");
    EXPECT_TRUE(info && info->status == 200);
  }
  ASSERT_EQ(kill(pid, SIGINT), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(listening) << read_file(out);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_THAT(read_file(out), HasSubstr("inkgrad serve: stopped"));
}

TEST_F(ServeTest, ServesTheEmbeddedPageAndNoFiles) {
  httplib::Client client = server_->client();
  const auto page = client.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_THAT(page->body, HasSubstr("<html"));
  EXPECT_THAT(page->get_header_value("Content-Type"), HasSubstr("text/html"));
  for (const char* path : {"/app.js", "/style.css"}) {
    const auto asset = client.Get(path);
    ASSERT_TRUE(asset);
    EXPECT_EQ(asset->status, 200) << path;
  }
  for (const char* path : {"/../../etc/passwd", "/etc/passwd", "/tiny.safetensors", "/api/nope"}) {
    const auto missing = client.Get(path);
    ASSERT_TRUE(missing);
    EXPECT_EQ(missing->status, 404) << path;
    EXPECT_THAT(missing->body, HasSubstr("error")) << path;
  }
}

// A model whose generate blocks until released, to hold the generation slots deterministically.
class BlockingModel : public ImageModel {
 public:
  BlockingModel() : ImageModel("BlockingModel"), tokenizer_(32) {}
  std::string kind() const override { return "blocking"; }
  std::string config_json() const override { return "{}"; }
  const Tokenizer& tokenizer() const override { return tokenizer_; }
  ImageFormat image_format() const override { return {1, 28, 28}; }
  Tensor generate(const std::string&, int64_t n, Generator&) override {
    std::unique_lock lock(mutex_);
    released_.wait(lock, [this] { return open_; });
    return zeros({n, 1, 28, 28});
  }
  void release() {
    {
      const std::lock_guard lock(mutex_);
      open_ = true;
    }
    released_.notify_all();
  }

 private:
  CharTokenizer tokenizer_;
  std::mutex mutex_;
  std::condition_variable released_;
  bool open_ = false;
};

TEST(ServeQueue, FullQueueAnswers503WithRetryAfter) {
  BlockingModel model;
  ServerLimits limits;
  limits.threads = 1;
  limits.queue = 1;
  RunningServer running(model, limits);
  const std::string body = R"({"prompt": "circle", "count": 1})";
  std::vector<int> statuses(2, 0);
  std::vector<std::thread> clients;
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&, i] {
      httplib::Client client = running.client();
      const auto result = client.Post("/api/generate", body, "application/json");
      statuses[i] = result ? result->status : -1;
    });
    // The first one runs, the second one waits.
    ASSERT_TRUE(eventually([&] {
      const ServerStats s = running.server().stats();
      return s.running + s.waiting == i + 1;
    }));
  }
  httplib::Client client = running.client();
  const auto busy = client.Post("/api/generate", body, "application/json");
  ASSERT_TRUE(busy);
  EXPECT_EQ(busy->status, 503);
  EXPECT_EQ(busy->get_header_value("Retry-After"), "5");
  EXPECT_THAT(json::parse(busy->body)["error"].get<std::string>(), HasSubstr("busy"));
  // Info still answers while the generations are busy.
  const auto info = client.Get("/api/info");
  ASSERT_TRUE(info);
  EXPECT_EQ(info->status, 200);
  EXPECT_EQ(json::parse(info->body)["has_sampler"], false);
  model.release();
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(statuses, std::vector<int>({200, 200}));
  const ServerStats s = running.server().stats();
  EXPECT_EQ(s.completed, 2);
  EXPECT_EQ(s.rejected_busy, 1);
}

TEST_F(ServeTest, AttentionAnswersOneMapPerWordAndTheSamePictures) {
  const std::string settings =
      R"("prompt": "two vertical lines", "steps": 3, "count": 2, "seed": 5, "sampler": "euler")";
  const auto result = post("{" + settings + R"(, "attention": true})");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const json answer = json::parse(result->body);
  ASSERT_TRUE(answer.contains("attention"));
  const json& attention = answer["attention"];
  EXPECT_EQ(attention["steps"], 3);
  EXPECT_EQ(attention["layers"], 5);
  ASSERT_EQ(attention["pictures"].size(), 2u);
  const std::vector<std::string> words = {"(null)", "two", "vertical", "lines"};
  for (const json& picture : attention["pictures"]) {
    ASSERT_EQ(picture.size(), words.size());
    double shares = 0.0;
    for (size_t w = 0; w < words.size(); ++w) {
      const json& word = picture[w];
      EXPECT_EQ(word["text"], words[w]);
      EXPECT_EQ(word["null"], w == 0);
      const double share = word["share"].get<double>();
      EXPECT_GT(share, 0.0);
      EXPECT_LE(word["min"].get<double>(), share);
      EXPECT_GE(word["max"].get<double>(), share);
      shares += share;
      const Decoded map = decode_png(decode_base64(word["map"].get<std::string>()));
      EXPECT_EQ(map.width, 28);
      EXPECT_EQ(map.height, 28);
    }
    // Every key but the two spaces': a little under 1.
    EXPECT_LT(shares, 1.0);
    EXPECT_GT(shares, 0.5);
  }
  // The pictures are those of the same request without attention, and the maps those the model
  // collects itself.
  const auto plain = post("{" + settings + "}");
  ASSERT_TRUE(plain);
  const json plain_answer = json::parse(plain->body);
  EXPECT_FALSE(plain_answer.contains("attention"));
  EXPECT_EQ(plain_answer["images"], answer["images"]);
  GenerationSettings direct;
  direct.prompt = "two vertical lines";
  direct.steps = 3;
  direct.count = 2;
  direct.seed = 5;
  direct.sampler = "euler";
  diffusion::AttentionMaps maps;
  generate_pictures(*model_, direct, {}, &maps);
  EXPECT_EQ(json::parse(attention_json(maps, model_->tokenizer())), attention);
}

TEST_F(ServeTest, StreamCarriesTheAttentionInItsLastEvent) {
  httplib::Client client = server_->client();
  const auto result =
      client.Post("/api/generate/stream",
                  R"({"prompt": "circle", "steps": 4, "count": 1, "seed": 3, "attention": true})",
                  "application/json");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200);
  const auto events = parse_events(result->body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().first, "done");
  const json& done = events.back().second;
  ASSERT_EQ(done["attention"]["pictures"].size(), 1u);
  ASSERT_EQ(done["attention"]["pictures"][0].size(), 2u);  // the null token and "circle"
  EXPECT_EQ(done["attention"]["pictures"][0][1]["text"], "circle");
}

TEST(ServeMlp, ThePhaseOneModelServesWithoutSteps) {
  Generator generator(5);
  const std::unique_ptr<ImageModel> model = make_model("mlp", "", &generator);
  RunningServer running(*model, ServerLimits{});
  httplib::Client client = running.client();
  const json info = json::parse(client.Get("/api/info")->body);
  EXPECT_EQ(info["kind"], "mlp");
  EXPECT_EQ(info["has_sampler"], false);
  EXPECT_TRUE(info["samplers"].empty());
  EXPECT_EQ(info["prompts"].size(), 9u);
  const auto result = client.Post("/api/generate", R"({"prompt": "circle", "seed": 4, "count": 2})",
                                  "application/json");
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const json answer = json::parse(result->body);
  ASSERT_EQ(answer["images"].size(), 2u);
  const std::string png = decode_base64(answer["images"][0]);
  EXPECT_EQ(decode_png(png).width, 28);
  const json settings = json::parse(settings_of(png));
  EXPECT_EQ(settings["model"], "mlp");
  EXPECT_FALSE(settings.contains("steps"));
  EXPECT_EQ(info["attention"], false);
  const auto attention = client.Post("/api/generate", R"({"prompt": "circle", "attention": true})",
                                     "application/json");
  ASSERT_TRUE(attention);
  EXPECT_EQ(attention->status, 400);
  EXPECT_THAT(json::parse(attention->body)["error"].get<std::string>(),
              HasSubstr("attention maps need a model with cross-attention; this server holds "
                        "the mlp model"));
}

}  // namespace
}  // namespace ink::app
