// Tests of the training layer: the loop/recipe split (the MLP recipe through the generic
// interfaces), the model registry and the kind/config a checkpoint records, phase 1 files, the
// settings a resume cross-checks, resuming in place, and generation from several threads.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <thread>

#include "models/diffusion/model.h"
#include "models/mlp_recipe.h"
#include "models/registry.h"
#include "models/shapes.h"
#include "models/trainer.h"
#include "models/word_tokenizer.h"
#include "nn/safetensors.h"
#include "tensor/inkgrad.h"
#include "tests/test_util.h"

namespace ink {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using testing_util::error_of;

fs::path temp_dir(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("inkgrad_test_training_layer_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TrainConfig tiny_config() {
  TrainConfig c;
  c.epochs = 3;
  c.samples_per_prompt = 24;
  c.batch_size = 32;
  c.seed = 7;
  return c;
}

// The tiny diffusion recipe on 18 pictures (2 per prompt): 3 batches of 6 per epoch.
TrainConfig tiny_diffusion_config() {
  TrainConfig c;
  c.model = "diffusion";
  c.model_config = "tiny";
  c.samples_per_prompt = 2;
  c.batch_size = 6;
  return c;
}

std::vector<float> all_values(const nn::Module& module) {
  std::vector<float> out;
  for (const auto& [name, tensor] : module.state_dict()) {
    if (tensor.dtype() != DType::Float32) continue;
    const auto v = tensor.to_vector();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

// Rewrites a training state as phase 1 wrote it: the same tensors, no model identity.
void strip_model_identity(const fs::path& file) {
  SafetensorsFile state = load_safetensors(file.string());
  state.metadata.erase(kModelKindKey);
  state.metadata.erase(kModelConfigKey);
  save_safetensors(file.string(), state.tensors, state.metadata);
}

// ---- the generic interfaces, seen through the MLP recipe ----

TEST(TrainingLayer, TheMlpRecipeIsSeenThroughTheGenericInterfaces) {
  Trainer trainer(tiny_config());
  Recipe& recipe = trainer.recipe();
  EXPECT_EQ(recipe.name(), "mlp");
  EXPECT_EQ(&recipe.inference_model(), &recipe.model());
  ImageModel& model = trainer.model();
  EXPECT_EQ(model.kind(), "mlp");
  EXPECT_EQ(model.image_format(), (ImageFormat{1, 28, 28}));
  EXPECT_EQ(model.num_parameters(), 573520);

  Dataset& data = trainer.dataset();
  EXPECT_EQ(data.image_format(), (ImageFormat{1, 28, 28}));
  EXPECT_EQ(data.prompts().size(), 9u);
  EXPECT_EQ(data.prompts()[0], std::string(kShapePrompts[0]));
  EXPECT_EQ(data.num_batches(), 7);
  data.start_epoch();
  DataBatch batch;
  data.fill_batch(6, batch);  // the last, partial batch
  EXPECT_EQ(batch.tokens_tensor().shape(), (Shape{24, 32}));
  EXPECT_EQ(batch.tokens_tensor().dtype(), DType::Int64);
  EXPECT_EQ(batch.images_tensor().shape(), (Shape{24, 1, 28, 28}));
  Generator gen(1);
  EXPECT_EQ(data.example(3, gen).size(), 784u);
  EXPECT_THAT(error_of([&] { data.example(9, gen); }), HasSubstr("prompt index 9 is out of range"));

  const Tokenizer& tokenizer = model.tokenizer();
  EXPECT_EQ(tokenizer.kind(), "char");
  EXPECT_EQ(tokenizer.vocab_size(), 28);
  EXPECT_EQ(tokenizer.max_length(), 32);
  EXPECT_EQ(tokenizer.pad_id(), 0);
  const std::unique_ptr<Tokenizer> copy = tokenizer.clone();
  EXPECT_EQ(copy->encode("two circles"), tokenizer.encode("two circles"));
  EXPECT_EQ(copy->decode(copy->encode("Cross!")), "cross");
  EXPECT_EQ(copy->encode_with_report("x1").dropped_count, 1);
}

TEST(TrainingLayer, TheWordTokenizerFitsTheTokenizerInterface) {
  const WordTokenizer words;
  const Tokenizer& tokenizer = words;
  EXPECT_EQ(tokenizer.kind(), "word");
  EXPECT_EQ(tokenizer.pad_id(), WordTokenizer::kPad);
  EXPECT_EQ(tokenizer.max_length(), WordTokenizer::kDefaultMaxLength);
  EXPECT_GT(tokenizer.vocab_size(), 10);
  const std::unique_ptr<Tokenizer> copy = tokenizer.clone();
  EXPECT_EQ(copy->encode("a red circle"), words.encode("a red circle"));
  EXPECT_EQ(copy->decode(copy->encode("a red circle")), "a red circle");
  std::vector<int64_t> row(static_cast<size_t>(tokenizer.max_length()), -1);
  tokenizer.encode_into("a blue square", row.data());
  EXPECT_EQ(row, words.encode("a blue square"));
}

TEST(TrainingLayer, OneStepOfTheLoopIsTheRecipesLossAndAdamStep) {
  // The loop's first step must equal the recipe's loss followed by an Adam step, done by hand
  // with the same streams.
  Trainer trainer(tiny_config());
  std::vector<float> step_losses;
  trainer.train_epoch([&](const StepInfo& s) { step_losses.push_back(s.loss); });
  EXPECT_EQ(trainer.step(), 7);

  TrainingStreams streams(tiny_config().seed);
  MlpRecipe recipe(tiny_config(), streams);
  recipe.model().train();
  recipe.dataset().start_epoch();
  DataBatch batch;
  recipe.dataset().fill_batch(0, batch);
  Tensor loss = recipe.loss(batch, streams.noise);
  EXPECT_EQ(loss.item(), step_losses[0]);
}

// Min-SNR-gamma: each sample's squared error is weighted by min(SNR_t, gamma) / SNR_t.
TEST(TrainingLayer, MinSnrWeightingScalesEachSamplesError) {
  TrainConfig c = tiny_diffusion_config();
  const auto loss_with = [&](double gamma) {
    c.snr_gamma = gamma;
    TrainingStreams streams(c.seed);
    const std::unique_ptr<Recipe> recipe = make_recipe(c, streams);
    recipe->model().train();
    recipe->dataset().start_epoch();
    DataBatch batch;
    recipe->dataset().fill_batch(0, batch);
    Generator noise(5);  // the same timesteps, noise and dropped prompts for every gamma
    return recipe->loss(batch, noise).item();
  };
  const float plain = loss_with(0.0);
  // A gamma above every SNR (at most about 1e4, at t = 0) weights every sample by 1.
  EXPECT_EQ(loss_with(1e9), plain);
  // A gamma below every SNR (at least about 4e-5, at t = T - 1) weights sample b by
  // gamma / SNR_b: the loss is then linear in gamma, and below the plain one.
  const float small = loss_with(1e-6);
  EXPECT_NEAR(loss_with(2e-6) / small, 2.0, 1e-4);
  EXPECT_LT(small, plain);
  // v-prediction: the target is v, and the Min-SNR weight min(SNR, gamma) / (SNR + 1) is below 1
  // even for a gamma above every SNR.
  c.prediction = "v";
  const float v_plain = loss_with(0.0);
  EXPECT_TRUE(std::isfinite(v_plain));
  EXPECT_NE(v_plain, plain);
  EXPECT_LT(loss_with(1e9), v_plain);
  c.prediction = "x0";
  EXPECT_THAT(error_of([&] { c.validate(); }), HasSubstr("prediction must be eps or v"));
  c.prediction = "eps";
  c.snr_gamma = -1.0;
  EXPECT_THAT(error_of([&] { c.validate(); }), HasSubstr("snr_gamma must be >= 0"));
}

// --lr-decay cosine: after the warm-up the rate follows half a cosine to 0 at the run's last
// update, and the resume check names the length it decays over.
TEST(TrainingLayer, CosineDecayEndsTheRunAtZero) {
  TrainConfig c = tiny_diffusion_config();
  c.epochs = 2;
  c.warmup_steps = 1;
  c.lr_decay = "cosine";
  Trainer trainer(c);
  std::vector<double> rates;  // the rate each update used (set by before_step)
  for (int e = 0; e < 2; ++e)
    trainer.train_epoch(
        [&](const StepInfo&) { rates.push_back(trainer.recipe().optimizer().lr()); });
  ASSERT_EQ(rates.size(), 6u);
  // Update s >= 1 uses lr * (1 + cos(pi * (s - 1) / 5)) / 2.
  for (size_t s = 1; s < rates.size(); ++s) {
    const double expected = c.lr * (1.0 + std::cos(M_PI * static_cast<double>(s - 1) / 5.0)) / 2.0;
    EXPECT_NEAR(rates[s], expected, 1e-12) << "update " << s;
  }
  EXPECT_EQ(trainer.recipe().resume_settings().at("diffusion.lr_decay"), "cosine over 6 updates");
  c.lr_decay = "constant";
  EXPECT_EQ(Trainer(c).recipe().resume_settings().count("diffusion.lr_decay"), 0u);
  c.lr_decay = "linear";
  EXPECT_THAT(error_of([&] { c.validate(); }),
              HasSubstr("lr_decay must be constant or cosine, got \"linear\""));
  // A run that ends inside its warm-up has nothing to decay: its rates are the warm-up's.
  c.lr_decay = "cosine";
  c.warmup_steps = 8;
  Trainer short_run(c);
  rates.clear();
  short_run.train_epoch(
      [&](const StepInfo&) { rates.push_back(short_run.recipe().optimizer().lr()); });
  EXPECT_EQ(rates, (std::vector<double>{c.lr / 8, 2 * c.lr / 8, 3 * c.lr / 8}));
}

// --noise-schedule: the model the recipe trains (and its checkpoint, through its config) uses the
// schedule named, so the samplers run on the same betas it was trained on.
TEST(TrainingLayer, NoiseScheduleReachesTheModelAndItsConfig) {
  TrainConfig c = tiny_diffusion_config();
  const auto schedule_of = [&](const std::string& name) {
    c.noise_schedule = name;
    TrainingStreams streams(c.seed);
    const std::unique_ptr<Recipe> recipe = make_recipe(c, streams);
    const auto& model = dynamic_cast<const diffusion::TextToImageDiffusion&>(recipe->model());
    EXPECT_EQ(model.config().schedule, name);
    EXPECT_THAT(recipe->resume_settings().at("diffusion.config"),
                HasSubstr("\"schedule\":\"" + name + "\""));
    return model.schedule().alpha_bar(500);
  };
  EXPECT_EQ(schedule_of("linear"), diffusion::NoiseSchedule::linear().alpha_bar(500));
  EXPECT_EQ(schedule_of("cosine"), diffusion::NoiseSchedule::cosine().alpha_bar(500));
  EXPECT_NE(diffusion::NoiseSchedule::linear().alpha_bar(500),
            diffusion::NoiseSchedule::cosine().alpha_bar(500));
  c.noise_schedule = "sigmoid";
  EXPECT_THAT(error_of([&] { c.validate(); }),
              HasSubstr("noise_schedule must be linear or cosine, got \"sigmoid\""));
}

// --text-layers and --query-positions: the model the recipe trains has them, its config (and so
// its checkpoint and the resume check) records them, and a resume with other values is refused.
TEST(TrainingLayer, TextLayersAndQueryPositionsReachTheModelAndItsConfig) {
  TrainConfig c = tiny_diffusion_config();
  const auto model_config = [&](Recipe& recipe) {
    return dynamic_cast<const diffusion::TextToImageDiffusion&>(recipe.model()).config();
  };
  {
    TrainingStreams streams(c.seed);
    const std::unique_ptr<Recipe> recipe = make_recipe(c, streams);
    EXPECT_EQ(model_config(*recipe).text_layers, 2);
    EXPECT_FALSE(model_config(*recipe).query_positions);
    EXPECT_EQ(recipe->resume_settings().at("diffusion.config").find("query_positions"),
              std::string::npos);
  }
  c.text_layers = 1;
  c.query_positions = true;
  TrainingStreams streams(c.seed);
  const std::unique_ptr<Recipe> recipe = make_recipe(c, streams);
  EXPECT_EQ(model_config(*recipe).text_layers, 1);
  EXPECT_TRUE(model_config(*recipe).query_positions);
  EXPECT_THAT(recipe->resume_settings().at("diffusion.config"),
              AllOf(HasSubstr("\"text_layers\":1"), HasSubstr("\"query_positions\":true")));
  int64_t first_layer = 0, second_layer = 0;
  for (const auto& [name, p] : recipe->model().named_parameters()) {
    first_layer += name.rfind("text_encoder.layers.0.", 0) == 0;
    second_layer += name.rfind("text_encoder.layers.1.", 0) == 0;
  }
  EXPECT_GT(first_layer, 0);
  EXPECT_EQ(second_layer, 0);

  // A run saved with query positions cannot continue without them.
  const auto dir = temp_dir("query_positions");
  {
    Trainer first(c);
    first.train_epoch();
    first.save_checkpoint(dir.string());
  }
  TrainConfig without = c;
  without.query_positions = false;
  Trainer refused(without);
  EXPECT_THAT(error_of([&] { refused.resume(dir.string()); }),
              AllOf(HasSubstr("was trained with the model config"), HasSubstr("query_positions"),
                    HasSubstr("but this run uses")));
  fs::remove_all(dir);

  c.text_layers = 9;
  EXPECT_THAT(error_of([&] { c.validate(); }), HasSubstr("text_layers must be in [1, 8], got 9"));
  c.text_layers = 0;
  EXPECT_THAT(error_of([&] { c.validate(); }), HasSubstr("text_layers must be in [1, 8], got 0"));
}

TEST(TrainConfigRules, OneImplementationWithTheCommandLinesNames) {
  TrainConfig c;
  c.batch_size = 1;
  const auto flag = [](const char* field) { return std::string("--") + field; };
  EXPECT_THAT(error_of([&] { c.validate(flag); }),
              AllOf(HasSubstr("--batch_size must be between 2 and 100000"),
                    HasSubstr("BatchNorm1d cannot train on batches of 1 sample")));
  EXPECT_THAT(error_of([&] { c.validate(); }),
              AllOf(HasSubstr("train: batch_size must be in [2, 100000]"),
                    HasSubstr("BatchNorm1d cannot train on batches of 1 sample")));
  c = {};
  c.samples_per_prompt = 7;
  c.batch_size = 62;
  EXPECT_THAT(error_of([&] { c.validate(flag); }),
              AllOf(HasSubstr("--batch_size 62 with --samples_per_prompt 7 leaves a last batch"),
                    HasSubstr("BatchNorm1d cannot train on batches of 1 sample")));
  c = {};
  c.model = "unet\x1b[2J";
  EXPECT_THAT(error_of([&] { c.validate(flag); }),
              HasSubstr("--model must be one of mlp, diffusion, got \"unet\\x1"));
  EXPECT_EQ(recipe_names(), (std::vector<std::string>{"mlp", "diffusion"}));
}

// ---- the model registry and checkpoint metadata ----

TEST(ModelRegistry, BuildsAModelFromItsKindAndConfig) {
  EXPECT_EQ(model_kinds(), (std::vector<std::string>{"mlp", "diffusion"}));
  Generator gen(2);
  auto model = make_model("mlp", "", &gen);
  EXPECT_EQ(model->kind(), "mlp");
  EXPECT_EQ(model->num_parameters(), 573520);
  EXPECT_EQ(model->config_json(),
            R"({"vocab_size":28,"embed_dim":32,"hidden_dim":128,"latent_dim":64,)"
            R"("noise_dim":32,"max_length":32,"image_size":28})");
  // A config round-trips, and a smaller one builds a smaller model.
  auto small = make_model("mlp", R"({"embed_dim": 8, "latent_dim": 16})", &gen);
  EXPECT_LT(small->num_parameters(), model->num_parameters());
  auto again = make_model(small->kind(), small->config_json(), &gen);
  EXPECT_EQ(again->num_parameters(), small->num_parameters());

  EXPECT_THAT(error_of([&] { make_model("gan", "", &gen); }),
              HasSubstr("unknown model kind \"gan\" (known: mlp, diffusion)"));
  EXPECT_THAT(error_of([&] { make_model("mlp", "[1, 2]", &gen); }),
              HasSubstr("mlp config: expected a JSON object"));
  EXPECT_THAT(error_of([&] { make_model("mlp", R"({"depth": 3})", &gen); }),
              HasSubstr("mlp config: unknown field \"depth\""));
  EXPECT_THAT(error_of([&] { make_model("mlp", R"({"embed_dim": 1e9})", &gen); }),
              HasSubstr("\"embed_dim\" must be an integer in [1, 16384]"));
  EXPECT_THAT(error_of([&] { make_model("mlp", R"({"latent_dim": -4})", &gen); }),
              HasSubstr("\"latent_dim\" must be an integer in [1, 16384], got \"-4\""));
}

TEST(ModelRegistry, ACheckpointRecordsItsKindAndConfigAndLoadsFromTheFileAlone) {
  const auto dir = temp_dir("registry");
  Generator gen(3);
  auto small = make_model("mlp", R"({"hidden_dim": 16, "noise_dim": 8})", &gen);
  const std::string path = (dir / "small.safetensors").string();
  save_model(*small, path);

  const SafetensorsFile file = load_safetensors(path);
  EXPECT_EQ(file.metadata.at("format"), "pt");
  EXPECT_EQ(file.metadata.at(kModelKindKey), "mlp");
  EXPECT_EQ(file.metadata.at(kModelConfigKey), small->config_json());
  const ModelIdentity identity = model_identity(file.metadata);
  EXPECT_TRUE(identity.recorded);

  auto loaded = load_model(path);
  EXPECT_EQ(loaded->config_json(), small->config_json());
  EXPECT_EQ(all_values(*loaded), all_values(*small));

  // A file with an unknown kind names the file and the kind.
  save_safetensors((dir / "other.safetensors").string(), small->state_dict(),
                   {{"format", "pt"}, {kModelKindKey, "gan"}});
  EXPECT_THAT(error_of([&] { load_model((dir / "other.safetensors").string()); }),
              AllOf(HasSubstr("other.safetensors"), HasSubstr("unknown model kind \"gan\"")));
  fs::remove_all(dir);
}

TEST(ModelRegistry, PhaseOneFilesWithoutMetadataLoadAsTheMlp) {
  const auto dir = temp_dir("phase1");
  Generator gen(4);
  TextToImageModel model(TextToImageConfig{}, &gen);
  const std::string path = (dir / "model.safetensors").string();
  save_state_dict(model, path);  // phase 1's writer: {"format": "pt"} only
  const ModelIdentity identity = model_identity(load_safetensors(path).metadata);
  EXPECT_FALSE(identity.recorded);
  EXPECT_EQ(identity.kind, "mlp");
  auto loaded = load_model(path);
  EXPECT_EQ(loaded->kind(), "mlp");
  EXPECT_EQ(all_values(*loaded), all_values(model));
  // The PyTorch model's initial weights (from the golden file), saved as PyTorch saves them.
  const SafetensorsFile golden =
      load_safetensors(std::string(INK_TEST_DATA_DIR) + "/model_golden.safetensors");
  NamedTensors torch_state;
  for (const auto& [name, tensor] : golden.tensors) {
    if (name.starts_with("init.")) torch_state.emplace_back(name.substr(5), tensor);
  }
  const std::string torch_path = (dir / "torch.safetensors").string();
  save_safetensors(torch_path, torch_state, {{"format", "pt"}});
  EXPECT_EQ(load_model(torch_path)->num_parameters(), 573520);
  fs::remove_all(dir);
}

TEST(ModelRegistry, TheTrainersModelFileRecordsTheModel) {
  const auto dir = temp_dir("trainer_file");
  Trainer trainer(tiny_config());
  trainer.train_epoch();
  trainer.save_checkpoint(dir.string());
  auto loaded = load_model((dir / kModelFileName).string());
  EXPECT_EQ(all_values(*loaded), all_values(trainer.model()));
  const auto state = load_safetensors((dir / kTrainingStateFileName).string());
  EXPECT_EQ(state.metadata.at(kModelKindKey), "mlp");
  fs::remove_all(dir);
}

// ---- resume ----

TEST(TrainerResume, LoadsInPlaceSoEarlierReferencesStayValid) {
  const auto dir = temp_dir("in_place");
  Trainer straight(tiny_config());
  straight.train_epoch();
  straight.train_epoch();
  {
    Trainer first(tiny_config());
    first.train_epoch();
    first.save_checkpoint(dir.string());
  }
  Trainer resumed(tiny_config());
  ImageModel& model = resumed.model();
  nn::Optimizer& optimizer = resumed.optimizer();
  Tensor weight = resumed.model().named_parameters()[0].second;
  resumed.resume(dir.string());
  EXPECT_EQ(&resumed.model(), &model);
  EXPECT_EQ(&resumed.optimizer(), &optimizer);
  EXPECT_EQ(optimizer.step_count(), 7);
  EXPECT_EQ(resumed.step(), 7);
  EXPECT_EQ(resumed.saved_epoch(), 1);
  resumed.train_epoch();
  EXPECT_EQ(resumed.losses(), straight.losses());
  // The handle taken before resume is the parameter that was trained.
  EXPECT_EQ(weight.to_vector(), straight.model().named_parameters()[0].second.to_vector());
  fs::remove_all(dir);
}

TEST(TrainerResume, APhaseOneTrainingStateResumesBitForBit) {
  const auto dir = temp_dir("phase1_state");
  Trainer straight(tiny_config());
  for (int e = 0; e < 3; ++e) straight.train_epoch();
  {
    Trainer first(tiny_config());
    first.train_epoch();
    first.train_epoch();
    first.save_checkpoint(dir.string());
  }
  strip_model_identity(dir / kTrainingStateFileName);
  Trainer resumed(tiny_config());
  resumed.resume(dir.string());
  resumed.train_epoch();
  EXPECT_EQ(resumed.losses(), straight.losses());
  EXPECT_EQ(all_values(resumed.model()), all_values(straight.model()));
  fs::remove_all(dir);
}

// A diffusion run saved during its learning-rate warm-up (the optimizer's lr is then a fraction
// of the configured one) resumes, and continues bit for bit: found by the kill loop, which
// resumed such a run and was refused with "trained with lr = 3e-05, but this run uses 0.001".
TEST(TrainerResume, ADiffusionRunSavedDuringWarmUpResumesBitForBit) {
  const auto dir = temp_dir("diffusion_warmup");
  TrainConfig c = tiny_diffusion_config();
  c.epochs = 2;
  c.seed = 11;
  c.warmup_steps = 100;  // every step of this test is inside the warm-up
  Trainer straight(c);
  straight.train_epoch();
  straight.train_epoch();
  {
    Trainer first(c);
    first.train_epoch();
    first.save_checkpoint(dir.string());
  }
  Trainer resumed(c);
  resumed.resume(dir.string());
  resumed.train_epoch();
  EXPECT_EQ(resumed.losses(), straight.losses());
  EXPECT_EQ(all_values(resumed.model()), all_values(straight.model()));
  // The base lr is still cross-checked.
  TrainConfig other = c;
  other.lr = 0.5;
  Trainer refused(other);
  EXPECT_THAT(error_of([&] { refused.resume(dir.string()); }),
              HasSubstr("was trained with diffusion.lr = 0.001, but this run uses 0.5"));
  fs::remove_all(dir);
}

TEST(TrainerResume, EveryOptimizerSettingIsCrossCheckedAndAFailureChangesNothing) {
  const auto dir = temp_dir("settings");
  {
    Trainer first(tiny_config());
    first.train_epoch();
    first.save_checkpoint(dir.string());
  }
  TrainConfig edited = tiny_config();
  edited.lr = 0.5;  // as if config.json had been edited
  Trainer trainer(edited);
  const auto before = all_values(trainer.model());
  EXPECT_THAT(error_of([&] { trainer.resume(dir.string()); }),
              HasSubstr("was trained with lr = 0.001, but this run uses 0.5"));
  EXPECT_EQ(trainer.epoch(), 0);
  EXPECT_EQ(all_values(trainer.model()), before);
  EXPECT_EQ(trainer.optimizer().state_dict().metadata.at("lr"), "0.5");

  // Any other hyper-parameter in the file is checked the same way.
  const fs::path state_path = dir / kTrainingStateFileName;
  SafetensorsFile state = load_safetensors(state_path.string());
  state.metadata["beta2"] = "0.99";
  save_safetensors(state_path.string(), state.tensors, state.metadata);
  Trainer same(tiny_config());
  EXPECT_THAT(error_of([&] { same.resume(dir.string()); }),
              HasSubstr("was trained with beta2 = 0.99, but this run uses 0.999"));
  fs::remove_all(dir);
}

TEST(TrainerResume, RefusesAnotherModelAndUnknownTensorsAndRollsBack) {
  const auto dir = temp_dir("identity");
  {
    Trainer first(tiny_config());
    first.train_epoch();
    first.save_checkpoint(dir.string());
  }
  const fs::path state_path = dir / kTrainingStateFileName;
  const SafetensorsFile original = load_safetensors(state_path.string());

  SafetensorsFile state = original;
  state.metadata[kModelKindKey] = "diffusion";
  save_safetensors(state_path.string(), state.tensors, state.metadata);
  Trainer trainer(tiny_config());
  const auto before = all_values(trainer.model());
  EXPECT_THAT(error_of([&] { trainer.resume(dir.string()); }),
              HasSubstr("is a training state of the \"diffusion\" model, but this run trains "
                        "\"mlp\""));

  state = original;
  state.metadata[kModelConfigKey] = R"({"embed_dim":8})";
  save_safetensors(state_path.string(), state.tensors, state.metadata);
  EXPECT_THAT(error_of([&] { trainer.resume(dir.string()); }),
              HasSubstr("was trained with the model config \"{\\\"embed_dim\\\":8}\""));

  // The model and optimizer tensors are fine, but the file has one the recipe does not know:
  // the model was already loaded when that is found, so it must be rolled back.
  state = original;
  state.tensors.emplace_back("ema.weight", zeros({2}));
  save_safetensors(state_path.string(), state.tensors, state.metadata);
  EXPECT_THAT(error_of([&] { trainer.resume(dir.string()); }),
              HasSubstr("unexpected \"ema.weight\" in the training state of the mlp recipe"));
  EXPECT_EQ(all_values(trainer.model()), before);
  EXPECT_EQ(trainer.optimizer().step_count(), 0);
  EXPECT_EQ(trainer.epoch(), 0);
  fs::remove_all(dir);
}

TEST(TrainerCheckpoint, SavedEpochCountsOnlyCheckpointsThatReachedTheDisk) {
  const auto dir = temp_dir("saved_epoch");
  Trainer trainer(tiny_config());
  EXPECT_EQ(trainer.saved_epoch(), 0);
  trainer.train_epoch();
  trainer.save_checkpoint_async(dir.string());
  trainer.wait_for_checkpoint();
  EXPECT_EQ(trainer.saved_epoch(), 1);
  trainer.train_epoch();
  trainer.save_checkpoint_async("/proc/inkgrad-cannot-write-here");
  EXPECT_THROW(trainer.wait_for_checkpoint(), Error);
  EXPECT_EQ(trainer.epoch(), 2);
  EXPECT_EQ(trainer.saved_epoch(), 1);  // epoch 2 never reached the disk
  trainer.save_checkpoint(dir.string());
  EXPECT_EQ(trainer.saved_epoch(), 2);
  fs::remove_all(dir);
}

// ---- inference without shared state ----

TEST(Generation, TwoThreadsWithOneModelGiveWhatOneThreadGives) {
  Trainer trainer(tiny_config());
  trainer.train_epoch();  // running statistics that differ from the initial ones
  ImageModel& model = trainer.model();
  model.train();
  const auto state_before = all_values(model);
  const auto tracked_before =
      model.state_dict()[11].second.to_vector_i64();  // decoder.1.num_batches_tracked

  const auto generate_all = [&](uint64_t seed) {
    Generator generator(seed);
    std::vector<float> out;
    for (int round = 0; round < 4; ++round) {
      for (std::string_view prompt : kShapePrompts) {
        const auto v = model.generate(std::string(prompt), 3, generator).to_vector();
        out.insert(out.end(), v.begin(), v.end());
      }
    }
    return out;
  };
  const std::vector<float> alone_a = generate_all(11);
  const std::vector<float> alone_b = generate_all(12);
  std::vector<float> together_a, together_b;
  std::thread first([&] { together_a = generate_all(11); });
  std::thread second([&] { together_b = generate_all(12); });
  first.join();
  second.join();
  EXPECT_EQ(together_a, alone_a);
  EXPECT_EQ(together_b, alone_b);
  EXPECT_NE(alone_a, alone_b);
  // Nothing about the model changed: not its mode, not a buffer.
  EXPECT_TRUE(model.training_mode());
  EXPECT_EQ(all_values(model), state_before);
  EXPECT_EQ(model.state_dict()[11].second.to_vector_i64(), tracked_before);
}

}  // namespace
}  // namespace ink
