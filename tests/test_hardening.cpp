// Tests for issue 15, "what a hostile probe found": writing onto files that are not regular
// files (devices, FIFOs, sockets, symlinks), reading checkpoints without trusting their size,
// refusing weights that load but cannot work, and quoting file content in messages.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "nn/layers.h"
#include "nn/safetensors.h"
#include "tensor/error.h"
#include "tests/test_util.h"

namespace ink {
namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;
using testing_util::error_of;

std::vector<uint8_t> some_bytes(size_t n = 100000) {
  std::vector<uint8_t> bytes(n);
  for (size_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 3);
  return bytes;
}

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

mode_t file_type(const fs::path& path, bool follow = true) {
  struct stat info {};
  const int result = follow ? ::stat(path.c_str(), &info) : ::lstat(path.c_str(), &info);
  return result == 0 ? (info.st_mode & S_IFMT) : 0;
}

class Hardening : public testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        fs::temp_directory_path() / ("inkgrad_hardening_" + std::to_string(::getpid()) + "_" +
                                     testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
};

// ---- §1: write_file_atomic onto something that is not a regular file ----

TEST_F(Hardening, WriteOntoAFifoWritesThroughItAndKeepsIt) {
  const fs::path fifo = dir_ / "out.png";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // The reader opens first (non-blocking), so a writer that replaced the FIFO instead of
  // writing into it makes the test fail rather than hang.
  const int fd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(fd, 0);
  const std::vector<uint8_t> bytes = some_bytes();
  std::vector<uint8_t> received;
  std::atomic<bool> writer_done{false};
  std::thread reader([&] {
    uint8_t buffer[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buffer, sizeof(buffer));
      if (n > 0) {
        received.insert(received.end(), buffer, buffer + n);
      } else if (writer_done) {
        break;  // nothing left and nobody writing
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  });
  const std::string error = error_of([&] { write_file_atomic(fifo.string(), bytes); });
  writer_done = true;
  reader.join();
  ::close(fd);
  EXPECT_EQ(error, "(no ink::Error thrown)");
  EXPECT_EQ(received, bytes);
  EXPECT_EQ(file_type(fifo, false), S_IFIFO);
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"out.png"});
}

TEST_F(Hardening, WriteOntoACharacterDeviceWritesThroughItAndKeepsIt) {
  // A private copy of /dev/null (mknod needs root) shows that the node itself is kept.
  const fs::path node = dir_ / "null";
  if (::mknod(node.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0) {
    GTEST_SKIP() << "mknod needs root: " << std::strerror(errno);
  }
  EXPECT_NO_THROW(write_file_atomic(node.string(), some_bytes()));
  EXPECT_EQ(file_type(node, false), S_IFCHR);
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"null"});
}

TEST_F(Hardening, WriteOntoAFullDeviceReportsNoSpace) {
  const fs::path node = dir_ / "full";
  if (::mknod(node.c_str(), S_IFCHR | 0666, makedev(1, 7)) != 0) {
    GTEST_SKIP() << "mknod needs root: " << std::strerror(errno);
  }
  const std::string error = error_of([&] { write_file_atomic(node.string(), some_bytes()); });
  EXPECT_THAT(error, HasSubstr("cannot write \"" + node.string() +
                               "\": write failed: No space "
                               "left on device"));
  EXPECT_EQ(file_type(node, false), S_IFCHR);
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"full"});
}

TEST_F(Hardening, WriteOntoTheSystemsDevNullAndDevFull) {
  // Only safe once the writer never renames over a device: the earlier writer replaced
  // /dev/null itself when run as root.
  ASSERT_EQ(file_type("/dev/null", false), S_IFCHR);
  EXPECT_NO_THROW(write_file_atomic("/dev/null", some_bytes()));
  EXPECT_EQ(file_type("/dev/null", false), S_IFCHR);
  if (file_type("/dev/full", false) == S_IFCHR) {
    EXPECT_THAT(error_of([] { write_file_atomic("/dev/full", some_bytes()); }),
                HasSubstr("No space left on device"));
    EXPECT_EQ(file_type("/dev/full", false), S_IFCHR);
  }
}

TEST_F(Hardening, WriteOntoABlockDeviceOrASocketIsRefused) {
  const fs::path socket_path = dir_ / "socket";
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  ASSERT_LT(socket_path.string().size(), sizeof(address.sun_path));
  std::strcpy(address.sun_path, socket_path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  EXPECT_THAT(error_of([&] { write_file_atomic(socket_path.string(), some_bytes()); }),
              HasSubstr("it is a socket, not a file"));
  ::close(fd);
  EXPECT_EQ(file_type(socket_path, false), S_IFSOCK);

  const fs::path disk = dir_ / "disk";
  if (::mknod(disk.c_str(), S_IFBLK | 0600, makedev(7, 200)) != 0) {
    GTEST_SKIP() << "mknod needs root: " << std::strerror(errno);
  }
  EXPECT_THAT(error_of([&] { write_file_atomic(disk.string(), some_bytes()); }),
              HasSubstr("it is a block device (a disk or partition); refusing to write onto it"));
  EXPECT_EQ(file_type(disk, false), S_IFBLK);
  EXPECT_EQ(entries(dir_), (std::vector<std::string>{"disk", "socket"}));
}

TEST_F(Hardening, WriteThroughASymlinkReplacesItsTargetAndKeepsTheLink) {
  fs::create_directory(dir_ / "real");
  const fs::path target = dir_ / "real" / "model.safetensors";
  const fs::path link = dir_ / "model.safetensors";
  write_file_atomic(target.string(), some_bytes(10));
  fs::create_symlink("real/model.safetensors", link);  // relative, resolved from the link
  write_file_atomic(link.string(), some_bytes(20));
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(fs::read_symlink(link), "real/model.safetensors");
  EXPECT_EQ(read_bytes(target), some_bytes(20));
  EXPECT_EQ(entries(dir_ / "real"), std::vector<std::string>{"model.safetensors"});

  // A link to a file that does not exist yet: the file is created where the link points.
  const fs::path dangling = dir_ / "new.png";
  fs::create_symlink(dir_ / "real" / "new.png", dangling);
  write_file_atomic(dangling.string(), some_bytes(30));
  EXPECT_TRUE(fs::is_symlink(dangling));
  EXPECT_EQ(read_bytes(dir_ / "real" / "new.png"), some_bytes(30));
}

TEST_F(Hardening, WriteThroughASymlinkToADeviceKeepsBoth) {
  const fs::path link = dir_ / "out.png";
  fs::create_symlink("/dev/null", link);
  EXPECT_NO_THROW(write_file_atomic(link.string(), some_bytes()));
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(file_type("/dev/null", false), S_IFCHR);
  EXPECT_EQ(entries(dir_), std::vector<std::string>{"out.png"});
}

// Runs write_file_atomic(path) in a child whose stdout is `stdout_fd`; returns its exit code
// (0 when the write succeeded).
int write_in_child_with_stdout(const std::string& path, int stdout_fd,
                               const std::vector<uint8_t>& bytes) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(stdout_fd, 1);
    try {
      write_file_atomic(path, bytes);
    } catch (...) {
      ::_exit(1);
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST_F(Hardening, WriteToDevStdoutWritesToTheStandardOutput) {
  ASSERT_TRUE(fs::is_symlink("/dev/stdout"));
  const std::vector<uint8_t> bytes = some_bytes(5000);

  // Standard output redirected to a file, as in `inkgrad graph --out /dev/stdout > graph.dot`.
  const fs::path file = dir_ / "graph.dot";
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(write_in_child_with_stdout("/dev/stdout", fd, bytes), 0);
  ::close(fd);
  EXPECT_EQ(read_bytes(file), bytes);
  EXPECT_TRUE(fs::is_symlink("/dev/stdout"));

  // Standard output a pipe, as in `inkgrad graph --out /dev/stdout | dot -Tsvg`.
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  std::vector<uint8_t> received;
  std::thread reader([&] {
    uint8_t buffer[4096];
    for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof(buffer))) > 0;) {
      received.insert(received.end(), buffer, buffer + n);
    }
  });
  EXPECT_EQ(write_in_child_with_stdout("/dev/stdout", pipe_fds[1], bytes), 0);
  ::close(pipe_fds[1]);
  reader.join();
  ::close(pipe_fds[0]);
  EXPECT_EQ(received, bytes);
  EXPECT_TRUE(fs::is_symlink("/dev/stdout"));
  EXPECT_TRUE(entries(dir_) == std::vector<std::string>{"graph.dot"});
}

// ---- §5: file content in messages is quoted, escaped and bounded ----

TEST(HardeningQuote, EscapesTerminalSequencesControlsAndInvalidUtf8) {
  EXPECT_EQ(quoted_text("\x1b]0;pwned\x07title"), "\"\\x1B]0;pwned\\x07title\"");
  EXPECT_EQ(quoted_text("\x1b[2J\x1b[H"), "\"\\x1B[2J\\x1B[H\"");
  EXPECT_EQ(quoted_text("a\rb\nc\td"), "\"a\\x0Db\\nc\\td\"");
  EXPECT_EQ(quoted_text("\xC2\x9B"
                        "31m"),
            "\"U+009B31m\"");                                                // C1 CSI
  EXPECT_EQ(quoted_text("abc\xE2\x80\xAEgpj.exe"), "\"abcU+202Egpj.exe\"");  // RLO
  EXPECT_EQ(quoted_text("\xff\xfe\xED\xA0\x80"), "\"\\xFF\\xFE\\xED\\xA0\\x80\"");
  EXPECT_EQ(quoted_text("caf\xC3\xA9 \"x\""), "\"caf\xC3\xA9 \\\"x\\\"\"");
  EXPECT_EQ(quoted_text(std::string_view("a\0b", 3)), "\"a\\x00b\"");
}

TEST(HardeningQuote, ShownTextKeepsPlainValuesBare) {
  EXPECT_EQ(shown_text("32"), "32");
  EXPECT_EQ(shown_text("3 2"), "\"3 2\"");
  EXPECT_EQ(shown_text("\x1b[2J"), "\"\\x1B[2J\"");
  EXPECT_EQ(shown_text(""), "\"\"");
  EXPECT_EQ(shown_text(std::string(100, '1'), 5), "\"11111...\" (100 characters)");
}

TEST(HardeningQuote, BoundsTheLength) {
  const std::string huge(50'000'000, 'v');
  const std::string shown = quoted_text(huge, 40);
  EXPECT_EQ(shown, "\"" + std::string(40, 'v') + "...\" (50000000 characters)");
  // Whatever the bytes, the output stays within a few bytes per character shown.
  const std::string escapes(1'000'000, '\x1b');
  EXPECT_LT(quoted_text(escapes, 40).size(), 4 * 40 + 40u);
  EXPECT_LT(quoted_text(std::string(1000, '\xE2') + "\x80\xAE", 120).size(), 4 * 120 + 40u);
}

// A safetensors header whose metadata and names are hostile.
std::vector<uint8_t> file_with_header(const std::string& header) {
  std::vector<uint8_t> bytes(8 + header.size());
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  return bytes;
}

TEST(HardeningQuote, SafetensorsErrorsQuoteNamesAndMetadataBriefly) {
  const std::string huge(40'000'000, 'm');
  const std::string header = "{\"__metadata__\":{\"" + huge + "\":\"1\",\"" + huge + "\":\"2\"}}";
  const std::string error = error_of([&] { parse_safetensors(file_with_header(header), "f"); });
  EXPECT_THAT(error, HasSubstr("duplicate key \"mmmm"));
  EXPECT_THAT(error, HasSubstr("(40000000 characters)"));
  EXPECT_LT(error.size(), 400u);

  const std::string escape_name =
      R"({"\u001b]0;owned\u0007":{"dtype":"F16","shape":[],"data_offsets":[0,2]}})";
  const std::string named =
      error_of([&] { parse_safetensors(file_with_header(escape_name), "f"); });
  EXPECT_THAT(named, HasSubstr("tensor \"\\x1B]0;owned\\x07\": dtype \"F16\" is not supported"));
  EXPECT_EQ(named.find('\x1b'), std::string::npos);
}

TEST(HardeningQuote, LoadStateDictQuotesNamesBriefly) {
  nn::Linear layer(2, 3);
  NamedTensors state = layer.state_dict();
  state.emplace_back("\x1b[2J\x1b[Hevil", zeros({1}));
  state.emplace_back(std::string(50'000'000, 'n'), zeros({1}));
  const std::string error = error_of([&] { layer.load_state_dict(state); });
  EXPECT_THAT(error, HasSubstr("unexpected \"\\x1B[2J\\x1B[Hevil\" (Float32 [1])"));
  EXPECT_THAT(error, HasSubstr("...\" (50000000 characters)"));
  EXPECT_EQ(error.find('\x1b'), std::string::npos);
  EXPECT_LT(error.size(), 800u);
}

}  // namespace
}  // namespace ink
