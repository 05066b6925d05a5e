// remove_run_files: move everything aside first, then delete.
#include "apps/replace_run.h"

#include <unistd.h>

#include <filesystem>

#include <fmt/format.h>

#include "tensor/error.h"

namespace ink::app {

namespace fs = std::filesystem;

void remove_run_files(const std::string& dir, const std::vector<std::string>& files) {
  if (files.empty()) return;
  const fs::path trash = fs::path(dir) / fmt::format(".inkgrad-replaced-{}", ::getpid());
  std::error_code ec;
  fs::remove_all(trash, ec);
  fs::create_directory(trash, ec);
  INK_CHECK(!ec, "--force: cannot remove the previous run's files from {}: {}; nothing was removed",
            dir, ec.message());
  std::vector<std::string> moved;
  for (const std::string& file : files) {
    fs::rename(fs::path(dir) / file, trash / file, ec);
    if (ec) {
      const std::string reason = ec.message();
      for (const std::string& back : moved) fs::rename(trash / back, fs::path(dir) / back, ec);
      fs::remove(trash, ec);
      INK_FAIL("--force: cannot remove {}: {}; nothing was removed",
               (fs::path(dir) / file).string(), reason);
    }
    moved.push_back(file);
  }
  fs::remove_all(trash, ec);
  // What is left is hidden and no run file; a later --force of this process id clears it.
}

}  // namespace ink::app
