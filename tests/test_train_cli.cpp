// Tests of the training layer's command line: --model, --seed checks in every command, resume's
// cross-check of config.json against the saved state, --force's all-or-nothing removal, the
// record a failed write leaves, and grids of RGB and non-square pictures.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "apps/figures.h"
#include "apps/replace_run.h"
#include "apps/run_dir.h"
#include "tests/test_util.h"

namespace ink::app {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using testing_util::error_of;

struct Result {
  int code = -1;
  std::string out, err;
};

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

class TrainCli : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("inkgrad_test_train_cli_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string path(const std::string& name) const { return (root_ / name).string(); }

  // Runs inkgrad with `args` through the shell, after `shell_prefix` (e.g. a ulimit).
  Result run(const std::vector<std::string>& args, const std::string& shell_prefix = "") const {
    std::string command = shell_prefix + quote(INKGRAD_BINARY);
    for (const std::string& arg : args) command.append(" ").append(quote(arg));
    command.append(" >").append(quote(path(".out")));
    command.append(" 2>").append(quote(path(".err"))).append(" </dev/null");
    std::string shell = "sh -c ";
    shell.append(quote(command));
    const int status = std::system(shell.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : 1000, read_text(path(".out")),
            read_text(path(".err"))};
  }
  static std::vector<std::string> tiny(const std::string& out) {
    return {"train", "--model",
            "mlp",   "--epochs",
            "2",     "--samples-per-prompt",
            "8",     "--batch-size",
            "16",    "--seed",
            "7",     "--out",
            out,     "-q"};
  }

  fs::path root_;
};

TEST_F(TrainCli, DiffusionIsTheDefaultAndTheMlpIsOneFlagAway) {
  // No --model: seed 002's diffusion model, with the ten-minute recipe's U-Net and batch.
  const Result plain =
      run({"train", "--epochs", "1", "--samples-per-prompt", "2", "--eval-samples", "0",
           "--preview-every", "0", "--sample-steps", "2", "--out", path("plain"), "-q"});
  ASSERT_EQ(plain.code, 0) << plain.err;
  const RunRecord diffusion = read_run_record(path("plain"));
  EXPECT_EQ(diffusion.config.model, "diffusion");
  EXPECT_EQ(diffusion.config.model_config, "tiny");
  EXPECT_EQ(diffusion.config.batch_size, 16);
  EXPECT_TRUE(fs::exists(path("plain/samples.png")));
  // --model mlp: the notebook's recipe, batch 64 unless given.
  const Result mlp = run({"train", "--model", "mlp", "--epochs", "1", "--samples-per-prompt", "8",
                          "--out", path("mlp"), "-q"});
  ASSERT_EQ(mlp.code, 0) << mlp.err;
  EXPECT_EQ(read_run_record(path("mlp")).config.model, "mlp");
  EXPECT_EQ(read_run_record(path("mlp")).config.batch_size, 64);
  EXPECT_THAT(read_text(path("mlp/config.json")), HasSubstr("\"model\": \"mlp\""));

  const Result unknown = run({"train", "--model", "gan", "--out", path("gan")});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_THAT(unknown.err, HasSubstr("--model must be one of mlp, diffusion, got \"gan\""));
  EXPECT_FALSE(fs::exists(path("gan/config.json")));
  const Result resumed = run({"train", "--resume", path("mlp"), "--model", "mlp"});
  EXPECT_EQ(resumed.code, 1);
  EXPECT_THAT(resumed.err, HasSubstr("--model cannot be combined with --resume"));
}

TEST_F(TrainCli, ANegativeSeedIsAnErrorInEveryCommand) {
  const std::vector<std::vector<std::string>> commands = {
      {"train", "--model", "mlp", "--out", path("t"), "--seed", "-1"},
      {"generate", "-c", path("m.safetensors"), "-p", "circle", "--seed", "-1"},
      {"data", "--prompt", "all", "-o", path("d.png"), "--seed", "-1"},
      {"graph", "-o", path("g.dot"), "--seed", "-1"},
      {"graph", "-o", path("g.dot"), "--seed", "1e3"},
  };
  for (const auto& args : commands) {
    const Result result = run(args);
    EXPECT_EQ(result.code, 2) << args[0];
    EXPECT_THAT(result.err, HasSubstr("must be an integer in [0, 18446744073709551615], got"))
        << args[0];
  }
  EXPECT_FALSE(fs::exists(path("t")));
  const Result largest = run({"graph", "-o", path("g.dot"), "--seed", "18446744073709551615"});
  EXPECT_EQ(largest.code, 0) << largest.err;
}

TEST_F(TrainCli, AResumedMinutesRunKeepsWhatIsLeftOfItsBudget) {
  // A --minutes run records its budget; stopped early (here: config.json as an interrupted run
  // leaves it, with no time used yet), a resume trains on until the rest of the budget is spent
  // instead of for the placeholder million epochs.
  const std::string dir = path("budget");
  const std::vector<std::string> quick = {
      "--eval-samples", "0", "--preview-every", "0", "--sample-steps", "2", "-q"};
  std::vector<std::string> args = {
      "train", "--samples-per-prompt", "2", "--minutes", "0.0001", "--out", dir};
  args.insert(args.end(), quick.begin(), quick.end());
  const Result first = run(args);
  ASSERT_EQ(first.code, 0) << first.err;
  RunRecord record = read_run_record(dir);
  EXPECT_DOUBLE_EQ(record.minutes, 0.0001);
  EXPECT_EQ(record.config.epochs, 1);
  record.config.epochs = TrainConfig::kMaxEpochs;
  record.status = "interrupted";
  record.train_seconds = 0.0;
  write_run_record(dir, record);
  std::vector<std::string> resume = {"train", "--resume", dir};
  resume.insert(resume.end(), quick.begin(), quick.end());
  const Result resumed = run(resume);
  ASSERT_EQ(resumed.code, 0) << resumed.err << resumed.out;
  const RunRecord after = read_run_record(dir);
  EXPECT_EQ(after.config.epochs, 2);
  EXPECT_EQ(after.epochs_completed, 2);
  EXPECT_EQ(after.status, "complete");
}

TEST_F(TrainCli, ACosineDecayNeedsAKnownLengthAndKeepsIt) {
  const std::string dir = path("cosine");
  const std::vector<std::string> quick = {
      "--eval-samples", "0",      "--preview-every", "0", "--sample-steps", "2", "-q",
      "--lr-decay",     "cosine", "--warmup-steps",  "1", "--out",          dir};
  std::vector<std::string> minutes = {"train", "--samples-per-prompt", "2", "--minutes", "0.0001"};
  minutes.insert(minutes.end(), quick.begin(), quick.end());
  const Result refused = run(minutes);
  EXPECT_NE(refused.code, 0);
  EXPECT_THAT(refused.err, HasSubstr("--lr-decay cosine falls to 0 at the run's last step"));
  EXPECT_FALSE(fs::exists(dir + "/config.json"));

  std::vector<std::string> args = {"train", "--samples-per-prompt", "2", "--images", "18"};
  args.insert(args.end(), quick.begin(), quick.end());
  const Result first = run(args);
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_EQ(read_run_record(dir).config.lr_decay, "cosine");
  // Training on past the end would change the decay of the updates already made.
  const Result longer = run({"train", "--resume", dir, "--epochs", "2", "-q"});
  EXPECT_EQ(longer.code, 1);
  EXPECT_THAT(longer.err, HasSubstr("--epochs 2: the run in " + dir +
                                    " decays its learning rate (cosine) to 0 over its 1 epochs"));
}

TEST_F(TrainCli, TextLayersAndQueryPositionsAreRecordedAndKeptByAResume) {
  const std::string dir = path("positions");
  const Result first = run({"train", "--samples-per-prompt", "2", "--images", "18", "--text-layers",
                            "1", "--query-positions", "--eval-samples", "0", "--preview-every", "0",
                            "--sample-steps", "2", "--out", dir});
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_THAT(first.out, HasSubstr(", 1 text layer, query positions"));
  const RunRecord record = read_run_record(dir);
  EXPECT_EQ(record.config.text_layers, 1);
  EXPECT_TRUE(record.config.query_positions);
  // The checkpoint's model config (what generate and the twin rebuild the model from).
  EXPECT_THAT(read_text(dir + "/model.safetensors"),
              AllOf(HasSubstr(R"(\"query_positions\":true)"), HasSubstr(R"(\"text_layers\":1)")));

  for (const std::vector<std::string>& flag :
       {std::vector<std::string>{"--query-positions"}, {"--text-layers", "2"}}) {
    std::vector<std::string> args = {"train", "--resume", dir};
    args.insert(args.end(), flag.begin(), flag.end());
    const Result combined = run(args);
    EXPECT_EQ(combined.code, 1);
    EXPECT_THAT(combined.err, HasSubstr(flag[0] + " cannot be combined with --resume"));
  }
  // config.json edited to turn the positions off: the saved model config disagrees.
  std::string config = read_text(dir + "/config.json");
  const std::string on = "\"query_positions\": true";
  ASSERT_NE(config.find(on), std::string::npos) << config;
  config.replace(config.find(on), on.size(), "\"query_positions\": false");
  std::ofstream(dir + "/config.json") << config;
  const Result edited = run({"train", "--resume", dir, "-q"});
  EXPECT_EQ(edited.code, 1);
  EXPECT_THAT(edited.err, AllOf(HasSubstr("was trained with the model config"),
                                HasSubstr(dir + "/config.json: was it edited?")));
}

TEST_F(TrainCli, PhraseAttentionIsRecordedAndNeedsTheScenes) {
  // On by default on the scenes, with the query positions.
  const std::string dir = path("phrases");
  const std::vector<std::string> scenes = {
      "train", "--dataset",      "scenes", "--samples-per-prompt", "2", "--images",
      "18",    "--eval-samples", "0",      "--preview-every",      "0", "--sample-steps",
      "2"};
  std::vector<std::string> args = scenes;
  args.insert(args.end(), {"--out", dir});
  const Result first = run(args);
  ASSERT_EQ(first.code, 0) << first.err;
  EXPECT_THAT(first.out, HasSubstr(", query positions, phrase attention, seed"));
  EXPECT_TRUE(read_run_record(dir).config.phrase_attention);
  EXPECT_TRUE(read_run_record(dir).config.query_positions);
  EXPECT_THAT(read_text(dir + "/model.safetensors"), HasSubstr(R"(\"phrase_attention\":true)"));
  // Both can be turned off.
  const std::string plain = path("phrases_off");
  args = scenes;
  args.insert(args.end(), {"--no-phrase-attention", "--no-query-positions", "--out", plain});
  const Result off = run(args);
  ASSERT_EQ(off.code, 0) << off.err;
  EXPECT_FALSE(read_run_record(plain).config.phrase_attention);
  EXPECT_FALSE(read_run_record(plain).config.query_positions);
  EXPECT_EQ(read_text(plain + "/model.safetensors").find("phrase_attention"), std::string::npos);
  const Result combined = run({"train", "--resume", dir, "--phrase-attention"});
  EXPECT_EQ(combined.code, 1);
  EXPECT_THAT(combined.err, HasSubstr("--phrase-attention cannot be combined with --resume"));
  // The nine prompts have no phrases: refused before the run folder is touched, even with
  // --force over an existing run.
  const Result refused =
      run({"train", "--images", "16", "--phrase-attention", "--force", "--out", dir});
  EXPECT_EQ(refused.code, 1);
  EXPECT_THAT(refused.err, HasSubstr("--phrase-attention needs the scenes dataset (its phrases "
                                     "are joined by the word \"and\"), not \"shapes\""));
  EXPECT_TRUE(read_run_record(dir).config.phrase_attention) << "the run was replaced";
  EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors"));
}

TEST_F(TrainCli, ResumeRefusesAConfigJsonThatDisagreesWithTheSavedState) {
  const std::string dir = path("edited");
  ASSERT_EQ(run(tiny(dir)).code, 0);
  std::string config = read_text(dir + "/config.json");
  const size_t lr = config.find("\"lr\": 0.001");
  ASSERT_NE(lr, std::string::npos) << config;
  config.replace(lr, std::string("\"lr\": 0.001").size(), "\"lr\": 0.5");
  std::ofstream(dir + "/config.json") << config;
  const Result result = run({"train", "--resume", dir, "--epochs", "3"});
  EXPECT_EQ(result.code, 1);
  EXPECT_THAT(result.err, AllOf(HasSubstr("was trained with lr = 0.001, but this run uses 0.5"),
                                HasSubstr(dir + "/config.json: was it edited?")));
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
}

TEST_F(TrainCli, ForceRemovesAllOfThePreviousRunOrNothing) {
  const std::string dir = path("run");
  fs::create_directories(dir);
  for (const char* name : {"model.safetensors", "losses.csv", "samples.png", "notes.txt"}) {
    std::ofstream(dir + "/" + name) << name;
  }
  // The second file cannot be moved (it vanished): the first is put back, nothing is lost.
  EXPECT_THAT(error_of([&] {
                remove_run_files(dir, {"model.safetensors", "config.json", "losses.csv"});
              }),
              AllOf(HasSubstr("--force: cannot remove " + dir + "/config.json"),
                    HasSubstr("nothing was removed")));
  EXPECT_EQ(read_text(dir + "/model.safetensors"), "model.safetensors");
  EXPECT_TRUE(fs::exists(dir + "/losses.csv"));
  size_t entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) ++entries;
  EXPECT_EQ(entries, 4u);  // no hidden folder left behind

  remove_run_files(dir, {"model.safetensors", "losses.csv", "samples.png"});
  entries = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir)) ++entries;
  EXPECT_EQ(entries, 1u);
  EXPECT_TRUE(fs::exists(dir + "/notes.txt"));  // never anything but run files

  // End to end: --force over a finished run.
  const std::string again = path("again");
  ASSERT_EQ(run(tiny(again)).code, 0);
  std::vector<std::string> forced = tiny(again);
  forced.push_back("--force");
  const Result result = run(forced);
  EXPECT_EQ(result.code, 0) << result.err;
  EXPECT_EQ(read_run_record(again).status, "complete");
}

TEST_F(TrainCli, AFailedCheckpointWriteLeavesARecordAndAResumeHint) {
  const std::string dir = path("full");
  // Files above 64 KiB cannot be written (as on a full disk); SIGXFSZ is ignored, so the write
  // fails with an error instead of killing the process.
  const Result result = run(tiny(dir), "trap '' XFSZ; ulimit -f 64; ");
  EXPECT_EQ(result.code, 1) << result.out << result.err;
  EXPECT_THAT(result.err,
              AllOf(HasSubstr("inkgrad: error: "), HasSubstr("no checkpoint was written yet"),
                    HasSubstr("resume with: inkgrad train --resume " + dir)));
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << result.err;
  const RunRecord record = read_run_record(dir);
  EXPECT_EQ(record.status, "failed");
  EXPECT_EQ(record.epochs_completed, 0);
}

// ---- pictures of any size and channel count ----

TEST(Grids, DrawRgbAndNonSquarePicturesOfAnyFormat) {
  // A fake batch [2, 3, 32, 32]: a pure red picture and a pure green one.
  const ImageFormat rgb{3, 32, 32};
  std::vector<float> values(2 * 3 * 32 * 32, 0.0f);
  std::fill_n(values.begin(), 32 * 32, 1.0f);                          // picture 0, red
  std::fill_n(values.begin() + 3 * 32 * 32 + 32 * 32, 32 * 32, 1.0f);  // picture 1, green
  const Tensor batch = from_vector(values, {2, 3, 32, 32});
  GridStyle style = grid_style_for(rgb);
  style.scale = 2;
  const std::vector<GridRow> rows = {{"rgb", {picture_values(batch, 0), picture_values(batch, 1)}}};
  const Image grid = render_grid(rows, style);
  int64_t red = 0, green = 0;
  for (int y = 0; y < grid.height(); ++y) {
    for (int x = 0; x < grid.width(); ++x) {
      red += grid.at(x, y) == Color{255, 0, 0};
      green += grid.at(x, y) == Color{0, 255, 0};
    }
  }
  EXPECT_EQ(red, 64 * 64);
  EXPECT_EQ(green, 64 * 64);

  const Image one = picture_image(picture_values(batch, 1), rgb, 3);
  EXPECT_EQ(one.width(), 96);
  EXPECT_EQ(one.at(50, 50), (Color{0, 255, 0}));

  // A gray picture 8 high and 20 wide: the grid is wider than it is tall.
  const ImageFormat wide{1, 8, 20};
  GridStyle wide_style = grid_style_for(wide);
  wide_style.scale = 1;
  const Image strip = render_grid({{"", {std::vector<float>(160, 1.0f)}}}, wide_style);
  EXPECT_GT(strip.width() - strip.height(), 8);

  EXPECT_THAT(error_of([&] {
                render_grid({{"x", {std::vector<float>(32 * 32, 0.0f)}}}, style);
              }),
              HasSubstr("has 1024 values, expected 3x32x32"));
  EXPECT_THAT(error_of([&] { picture_values(batch, 2); }),
              HasSubstr("picture_values: expected images [N, C, H, W] and an index in [0, N), "
                        "got [2, 3, 32, 32] and 2"));
}

}  // namespace
}  // namespace ink::app
