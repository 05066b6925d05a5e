// `inkgrad serve`: the web demo. Loads a checkpoint, binds (127.0.0.1 unless told otherwise),
// prints the address and serves until SIGINT or SIGTERM. The server itself is apps/server.h.
#include <pthread.h>
#include <csignal>
#include <memory>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "apps/commands.h"
#include "apps/server.h"
#include "models/registry.h"
#include "tensor/error.h"

namespace ink::app {
namespace {

struct ServeFlags {
  std::string checkpoint;
  std::string host = "127.0.0.1";
  int port = 8080;
  int64_t threads = 0;  // 0: one per core
  int64_t queue = 8;
};

int run_serve(const ServeFlags& flags) {
  INK_CHECK(!flags.checkpoint.empty(), "--checkpoint needs a file, got \"\"");
  check_range("--port", flags.port, 0, 65535);
  ServerLimits limits;
  limits.threads =
      flags.threads > 0 ? flags.threads : std::max<int64_t>(1, std::thread::hardware_concurrency());
  check_range("--threads", limits.threads, 1, 256);
  check_range("--queue", flags.queue, 0, 4096);
  limits.queue = flags.queue;
  const std::unique_ptr<ImageModel> model = load_model(flags.checkpoint);

  // SIGINT and SIGTERM go to one thread that waits for them (blocked everywhere else, so
  // httplib's threads inherit the mask) and stops the server: no work in a signal handler.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  Server server(*model, limits);
  const int port = server.bind(flags.host, flags.port);
  const std::string shown_host = flags.host.find(':') != std::string::npos
                                     ? "[" + flags.host + "]"
                                     : (flags.host == "0.0.0.0" ? "127.0.0.1" : flags.host);
  fmt::print("inkgrad serve: the {} model from {}, {} generation{} at a time, queue {}\n",
             model->kind(), flags.checkpoint, limits.threads, limits.threads == 1 ? "" : "s",
             limits.queue);
  fmt::print("open http://{}:{}/   (Ctrl-C stops)\n", shown_host, port);
  std::fflush(stdout);

  std::thread waiter([&] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    if (signal_number != 0) server.stop();
  });
  server.run();
  // run() also returns when listening fails; wake the waiter with a signal it takes.
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  fmt::print("inkgrad serve: stopped\n");
  return 0;
}

}  // namespace

Command add_serve_command(CLI::App& app) {
  auto flags = std::make_shared<ServeFlags>();
  CLI::App* sub = app.add_subcommand(
      "serve", "Serve a web page and a JSON API that generate pictures from a checkpoint.");
  sub->add_option("--checkpoint,-c", flags->checkpoint,
                  "A model.safetensors written by inkgrad train")
      ->required();
  sub->add_option("--host", flags->host, "Address to listen on (0.0.0.0: every interface)")
      ->capture_default_str();
  sub->add_option("--port", flags->port, "Port (0: any free port)")->capture_default_str();
  sub->add_option("--threads", flags->threads,
                  "Generations running at once (default: one per core)");
  sub->add_option("--queue", flags->queue, "Requests that may wait beyond those (then 503)")
      ->capture_default_str();
  return [flags] { return run_serve(*flags); };
}

}  // namespace ink::app
