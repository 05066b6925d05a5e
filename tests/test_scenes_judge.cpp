// Tests for the scenes judge (models/scenes_judge.h): it finds every object of ground-truth
// pictures and names their attributes, and it says "incorrect" for pictures that are wrong in
// one way (swapped colour, moved object, wrong count, wrong shape); with the geometric shape rule
// and with the committed shape CNN (models/scenes_judge.safetensors). Then the CNN's training,
// augmentation and file format, and the scenes eval (models/scenes_eval.h).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/judge.h"
#include "models/scenes.h"
#include "models/scenes_eval.h"
#include "models/scenes_judge.h"
#include "nn/safetensors.h"
#include "tensor/ops.h"
#include "tensor/parallel.h"
#include "test_util.h"

namespace ink::scenes {
namespace {

using ink::testing_util::expect_error;

std::string committed_scenes_judge() {
  return std::string(INK_SOURCE_DIR) + "/models/scenes_judge.safetensors";
}

ShapeNet& shared_net() {
  static std::unique_ptr<ShapeNet> net = load_shape_net(committed_scenes_judge());
  return *net;
}

ShapeClassifier cnn() {
  return shape_classifier(shared_net());
}

std::vector<float> render_objects(const std::vector<Object>& objects) {
  std::vector<float> image(kImageFloats);
  render(objects, image.data());
  return image;
}

TEST(ScenesJudge, GroundTruthIsJudgedCorrect) {
  SceneSampler sampler;
  Generator gen(21);
  int correct = 0, shape_ok = 0, objects = 0;
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    const auto sample = sampler.sample_training(gen);
    const auto image = render_objects(sample.objects);
    const Verdict v = judge(sample.spec, find_objects(image.data()));
    correct += v.correct;
    shape_ok += v.shape_ok;
    objects += v.shape_named;
    EXPECT_TRUE(v.count_ok) << sample.prompt;
  }
  EXPECT_GE(correct, 0.99 * n) << correct << " of " << n;
  EXPECT_GE(shape_ok, 0.99 * objects);
}

TEST(ScenesJudge, NamesEveryAttributeOfOneObject) {
  Object o;
  o.shape = ShapeKind::triangle;
  o.color = Color::purple;
  o.size = Size::large;
  o.extent = 12;
  o.place = Place{2, 2};
  o.cx = 24;
  o.cy = 25;
  o.brightness = 0.85f;
  const auto image = render_objects({o});
  const auto found = find_objects(image.data());
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].shape, ShapeKind::triangle);
  EXPECT_EQ(found[0].color, Color::purple);
  EXPECT_EQ(found[0].size, Size::large);
  EXPECT_EQ(found[0].place, (Place{2, 2}));
}

void expect_wrong_pictures_incorrect(const ShapeClassifier& classify) {
  SceneSampler sampler;
  Generator gen(4);
  const SceneSpec spec =
      parse_prompt("a small red circle on the left and a blue square on the right");
  const auto objects = sampler.sample_for_prompt(spec, gen);
  ASSERT_TRUE(judge(spec, find_objects(render_objects(objects).data(), classify)).correct);

  auto swapped = objects;  // colours swapped
  std::swap(swapped[0].color, swapped[1].color);
  EXPECT_FALSE(judge(spec, find_objects(render_objects(swapped).data(), classify)).correct);

  auto moved = objects;  // the circle moved to the top left
  moved[0].place = Place{0, 0};
  moved[0].cx = 8;
  moved[0].cy = 8;
  const Verdict v = judge(spec, find_objects(render_objects(moved).data(), classify));
  EXPECT_FALSE(v.correct);
  EXPECT_EQ(v.place_ok, 1);  // the square is still right
  EXPECT_EQ(v.color_ok, 2);

  const auto one = std::vector<Object>{objects[0]};  // the square is missing
  const Verdict missing = judge(spec, find_objects(render_objects(one).data(), classify));
  EXPECT_FALSE(missing.count_ok);
  EXPECT_FALSE(missing.correct);
  EXPECT_EQ(missing.shape_ok, 1);

  auto reshaped = objects;  // a cross where the square should be
  reshaped[1].shape = ShapeKind::cross;
  EXPECT_FALSE(judge(spec, find_objects(render_objects(reshaped).data(), classify)).correct);

  auto resized = objects;  // a large circle where a small one was asked for
  resized[0].extent = 12;
  resized[0].size = Size::large;
  EXPECT_FALSE(judge(spec, find_objects(render_objects(resized).data(), classify)).correct);

  // An extra object: the count is wrong.
  SceneSpec single = parse_prompt("a small red circle on the left");
  EXPECT_FALSE(judge(single, find_objects(render_objects(objects).data(), classify)).correct);
  EXPECT_TRUE(judge(single, find_objects(render_objects(one).data(), classify)).correct);
}

TEST(ScenesJudge, WrongPicturesAreIncorrect) {
  expect_wrong_pictures_incorrect({});
}

TEST(ScenesJudgeCnn, WrongPicturesAreIncorrect) {
  expect_wrong_pictures_incorrect(cnn());
}

TEST(ScenesJudge, SpecksAndABlackPictureHoldNoObjects) {
  std::vector<float> image(kImageFloats, 0.0f);
  EXPECT_TRUE(find_objects(image.data()).empty());
  image[5 * kSide + 5] = 1.0f;  // a lone bright pixel
  image[20 * kSide + 7] = 0.9f;
  EXPECT_TRUE(find_objects(image.data()).empty());
  const Verdict v = judge(parse_prompt("a circle"), find_objects(image.data()));
  EXPECT_FALSE(v.count_ok);
  EXPECT_FALSE(v.correct);
}

TEST(ScenesJudge, ABlobLargerThanAnyObjectMatchesNothing) {
  // A picture lit all over by noise is one component: one "object", but no circle.
  std::vector<float> noise(kImageFloats);
  Generator gen(8);
  for (float& v : noise) v = gen.uniform(0.2f, 1.0f);
  const auto found = find_objects(noise.data(), cnn());
  ASSERT_EQ(found.size(), 1u);
  EXPECT_TRUE(found[0].oversized());
  for (const char* prompt : {"a circle", "a square", "a triangle", "a cross"}) {
    const Verdict v = judge(parse_prompt(prompt), found);
    EXPECT_TRUE(v.count_ok);
    EXPECT_FALSE(v.correct) << prompt;
    EXPECT_EQ(v.shape_ok, 0) << prompt;
  }
  // A 17 px square is a blob; a 13 px one (the largest object) is not.
  Object big;
  big.shape = ShapeKind::square;
  big.extent = 17;
  EXPECT_FALSE(
      judge(parse_prompt("a large white square"), find_objects(render_objects({big}).data()))
          .correct);
  big.extent = 13;
  EXPECT_TRUE(
      judge(parse_prompt("a large white square"), find_objects(render_objects({big}).data()))
          .correct);
}

// ---- the shape CNN ----

TEST(ScenesJudgeCnn, CommittedNetIsAccurateOnHeldOutCrops) {
  // Seeds its recipe never drew from: clean ground truth, and augmented.
  EXPECT_GE(shape_net_accuracy(shared_net(), 2000, 0x5EED1), 0.995);
  EXPECT_GE(shape_net_accuracy(shared_net(), 1000, 0x5EED2, /*augmented=*/true), 0.97);
  const SafetensorsReader header(committed_scenes_judge());
  EXPECT_EQ(header.metadata().at("kind"), kScenesJudgeKind);
  EXPECT_THAT(header.metadata().at("recipe"),
              ::testing::HasSubstr("inkgrad judge --dataset scenes"));
}

TEST(ScenesJudgeCnn, BeatsTheGeometricRuleOnSoftPictures) {
  // The same augmented crops (blurred, dimmed, noisy: what generations look like) through both.
  Generator gen(0x50F7);
  const int64_t n = 1000;
  std::vector<float> crops(static_cast<size_t>(n * kCropSide * kCropSide));
  std::vector<ShapeKind> truth;
  for (int64_t i = 0; i < n; ++i) {
    truth.push_back(draw_training_crop(gen, true, crops.data() + i * kCropSide * kCropSide));
  }
  const std::vector<ShapeKind> by_cnn = classify_crops(shared_net(), crops.data(), n);
  int64_t cnn_ok = 0, geometry_ok = 0;
  for (int64_t i = 0; i < n; ++i) {
    cnn_ok += by_cnn[static_cast<size_t>(i)] == truth[static_cast<size_t>(i)];
    geometry_ok += classify_shape_by_geometry(crops.data() + i * kCropSide * kCropSide) ==
                   truth[static_cast<size_t>(i)];
  }
  std::cout << "augmented crops: CNN " << cnn_ok << " / " << n << ", geometric rule " << geometry_ok
            << " / " << n << "\n";
  EXPECT_GE(cnn_ok, 0.97 * n);
  EXPECT_GT(cnn_ok, geometry_ok);
}

TEST(ScenesJudgeCnn, GroundTruthIsJudgedCorrect) {
  SceneSampler sampler;
  Generator gen(22);
  const ShapeClassifier classify = cnn();
  int correct = 0, shape_ok = 0, objects = 0;
  const int n = 1000;
  for (int i = 0; i < n; ++i) {
    const auto sample = sampler.sample_training(gen);
    const Verdict v =
        judge(sample.spec, find_objects(render_objects(sample.objects).data(), classify));
    correct += v.correct;
    shape_ok += v.shape_ok;
    objects += v.shape_named;
  }
  EXPECT_GE(correct, 0.99 * n) << correct << " of " << n;
  EXPECT_GE(shape_ok, 0.995 * objects);
}

TEST(ScenesJudgeCnn, NamesEveryShapeOfAHeldOutCombination) {
  // The judge is trained on every combination, held-out ones included.
  for (const ShapeKind shape :
       {ShapeKind::square, ShapeKind::circle, ShapeKind::triangle, ShapeKind::cross}) {
    for (const int extent : {6, 8, 11, 13}) {
      Object o;
      o.shape = shape;
      o.color = Color::red;
      o.extent = extent;
      o.place = Place{2, 0};
      o.cx = 24;
      o.cy = 8;
      const auto found = find_objects(render_objects({o}).data(), cnn());
      ASSERT_EQ(found.size(), 1u);
      EXPECT_EQ(found[0].shape, shape) << kShapeNames[static_cast<size_t>(shape)] << " " << extent;
    }
  }
}

TEST(ScenesJudgeCnn, AugmentationIsDeterministicAndInRange) {
  SceneSampler sampler;
  Generator scene_gen(5);
  const auto picture = render_objects(sampler.sample_training(scene_gen).objects);
  auto a = picture, b = picture;
  Generator g1(9), g2(9);
  for (int i = 0; i < 20; ++i) {
    augment_scene(a.data(), g1);
    augment_scene(b.data(), g2);
  }
  EXPECT_EQ(a, b);
  for (const float v : a) {
    EXPECT_GE(v, 0.0f);
    EXPECT_LE(v, 1.0f);
  }
  EXPECT_NE(a, picture);
  std::vector<float> crop(kCropSide * kCropSide);
  Generator g3(3);
  const ShapeKind shape = draw_training_crop(g3, true, crop.data());
  EXPECT_LT(static_cast<int>(shape), kNumShapes);
  float peak = 0.0f;
  for (const float v : crop) peak = std::max(peak, v);
  EXPECT_FLOAT_EQ(peak, 1.0f);  // crops are scaled to a peak of 1
}

TEST(ScenesJudgeCnn, TrainingOnATinyBudgetIsDeterministicAndLearns) {
  ShapeNetTrainConfig config;
  config.net = {4, 8, 16};
  config.steps = 60;
  config.batch = 32;
  config.lr = 5e-3;
  config.seed = 77;
  std::vector<float> losses;
  const auto first =
      train_shape_net(config, [&](const ShapeNetProgress& p) { losses.push_back(p.loss); });
  ASSERT_EQ(losses.size(), 60u);
  const int threads = get_num_threads();
  set_num_threads(threads == 1 ? 2 : 1);
  const auto second = train_shape_net(config);
  set_num_threads(threads);
  const NamedTensors a = first->state_dict();
  const NamedTensors b = second->state_dict();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].second.to_vector(), b[i].second.to_vector());
  // Well above chance (1/4) after 60 small steps.
  EXPECT_GT(shape_net_accuracy(*first, 200, 5), 0.6);
  float early = 0.0f, late = 0.0f;
  for (size_t i = 0; i < 10; ++i) {
    early += losses[i];
    late += losses[losses.size() - 1 - i];
  }
  EXPECT_LT(late, early);
}

TEST(ScenesJudgeCnn, FilesRoundTripAndRefuseOtherFiles) {
  const std::string dir = ::testing::TempDir();
  Generator gen(1);
  ShapeNet net({4, 6, 10}, &gen);
  save_shape_net(dir + "/scenes_judge.safetensors", net, {{"accuracy", "0.5"}});
  const auto loaded = load_shape_net(dir + "/scenes_judge.safetensors");
  EXPECT_EQ(loaded->config(), (ShapeNetConfig{4, 6, 10}));
  EXPECT_EQ(loaded->fc2->weight.to_vector(), net.fc2->weight.to_vector());

  expect_error([&] { load_shape_net(std::string(INK_SOURCE_DIR) + "/models/judge.safetensors"); },
               "judge.safetensors is a \"judge\" file, not a scenes judge");
  save_safetensors(dir + "/plain.safetensors", net.state_dict());
  expect_error([&] { load_shape_net(dir + "/plain.safetensors"); },
               "plain.safetensors is not a scenes judge file (its metadata has no \"kind\"");
  save_safetensors(dir + "/wrong.safetensors", net.state_dict(),
                   {{"kind", kScenesJudgeKind},
                    {"config", R"({"channels1": 4, "channels2": 6, "hidden": 12})"}});
  expect_error([&] { load_shape_net(dir + "/wrong.safetensors"); },
               "the scenes judge's parameters do not match its config");
  expect_error([&] { load_shape_net(dir + "/missing.safetensors"); }, "missing.safetensors");
  expect_error([&] { net.logits(zeros({2, 10})); }, "ShapeNet: expected crops [B, 1, 16, 16]");
}

}  // namespace
}  // namespace ink::scenes

namespace ink::scenes {
namespace {

TEST(ScenesEvalTest, GroundTruthIsTheCeilingAndCollapseShows) {
  const auto& prompts = eval_prompts();
  int held = 0;
  for (const auto& p : prompts) held += names_held_out(parse_prompt(p));
  EXPECT_GE(held, 12);
  EXPECT_GE(static_cast<int>(prompts.size()) - held, 20);

  const ScenesEval truth =
      evaluate_scenes(prompts, 64, ground_truth_source(1), ground_truth_source(2));
  EXPECT_GE(truth.seen.picture_accuracy, 0.99);
  EXPECT_GE(truth.held_out.picture_accuracy, 0.99);
  EXPECT_GE(truth.seen.open_entropy, 0.9);
  EXPECT_LE(truth.seen.open_entropy, 1.1);

  // A "model" that always draws the same picture of the prompt: still correct where everything
  // is named, but open attributes collapse.
  const PictureSource gt = ground_truth_source(3);
  const PictureSource collapsed = [&](const std::string& prompt, int64_t n,
                                      std::vector<float>& images) {
    std::vector<float> one;
    gt(prompt, 1, one);
    images.clear();
    for (int64_t i = 0; i < n; ++i) images.insert(images.end(), one.begin(), one.end());
  };
  const ScenesEval c = evaluate_scenes(prompts, 32, collapsed, ground_truth_source(4));
  EXPECT_GE(c.seen.picture_accuracy, 0.99);
  EXPECT_LE(c.seen.open_entropy, 0.05);

  // Black pictures: nothing is right.
  const PictureSource black = [](const std::string&, int64_t n, std::vector<float>& images) {
    images.assign(static_cast<size_t>(n * kImageFloats), 0.0f);
  };
  const ScenesEval b = evaluate_scenes(prompts, 4, black, ground_truth_source(5));
  EXPECT_EQ(b.seen.picture_accuracy, 0.0);
  EXPECT_EQ(b.held_out.count_accuracy, 0.0);
}

}  // namespace
}  // namespace ink::scenes

namespace ink::scenes {
namespace {

TEST(ScenesEvalTest, ReportWithTheCnnHasTheCeilingAndEveryField) {
  // Ground truth as the "model": it scores like the ceiling, which is >= 0.99 on both splits.
  const ScenesReport r =
      evaluate_scenes_report(eval_prompts(), 32, 7, ground_truth_source(8), cnn());
  EXPECT_EQ(r.pictures_per_prompt, 32);
  for (const ScenesEval* e : {&r.model, &r.ceiling}) {
    EXPECT_GE(e->seen.picture_accuracy, 0.99);
    EXPECT_GE(e->held_out.picture_accuracy, 0.99);
    EXPECT_EQ(e->seen.prompts + e->held_out.prompts, static_cast<int64_t>(eval_prompts().size()));
    EXPECT_EQ(e->seen.pictures, 32 * e->seen.prompts);
    for (const SplitScores* s : {&e->seen, &e->held_out}) {
      for (const double v : {s->count_accuracy, s->shape_accuracy, s->color_accuracy,
                             s->size_accuracy, s->place_accuracy}) {
        EXPECT_GE(v, 0.99);
        EXPECT_LE(v, 1.0);
      }
      // Each open attribute about as even as the data (the reference averages 8 draws).
      for (const double v :
           {s->open_entropy, s->color_entropy, s->size_entropy, s->place_entropy}) {
        EXPECT_GT(v, 0.8);
        EXPECT_LT(v, 1.2);
      }
    }
  }
  // Per prompt: open entropies only where the prompt leaves something open.
  for (const PromptScores& p : r.model.prompts) {
    const SceneSpec spec = parse_prompt(p.prompt);
    const bool open = spec.size() == 1 && (!spec[0].color || !spec[0].size || !spec[0].place);
    EXPECT_EQ(p.open_entropy >= 0, open) << p.prompt;
    if (spec.size() == 1) {
      EXPECT_EQ(p.color_entropy >= 0, !spec[0].color) << p.prompt;
    }
    EXPECT_EQ(p.held_out, names_held_out(spec));
  }

  const nlohmann::json j = nlohmann::json::parse(scenes_eval_json(r, {{"checkpoint", "\"x\""}}));
  EXPECT_EQ(j.at("dataset"), "scenes");
  EXPECT_EQ(j.at("checkpoint"), "x");
  EXPECT_EQ(j.at("pictures_per_prompt"), 32);
  for (const char* split : {"seen", "held_out"}) {
    for (const char* key :
         {"picture_accuracy", "count_accuracy", "shape_accuracy", "color_accuracy", "size_accuracy",
          "place_accuracy", "open_entropy", "color_entropy", "size_entropy", "place_entropy"}) {
      EXPECT_TRUE(j.at("model").at(split).at(key).is_number()) << split << " " << key;
      EXPECT_TRUE(j.at("ceiling").at(split).at(key).is_number()) << split << " " << key;
    }
  }
  EXPECT_EQ(j.at("model").at("prompts").size(), eval_prompts().size());
  EXPECT_TRUE(j.at("model").at("prompts").at(0).at("open_entropy").is_null());  // fully named

  const std::string table = scenes_eval_table(r);
  EXPECT_THAT(table, ::testing::HasSubstr("held-out"));
  EXPECT_THAT(table, ::testing::HasSubstr("open attributes, normalised entropy"));
  EXPECT_THAT(table, ::testing::HasSubstr("a small red circle on the left"));
  EXPECT_THAT(table, ::testing::HasSubstr("1.000 (1.000)"));
}

TEST(ScenesEvalTest, WrongModelsScoreBadlyOnTheRightAttribute) {
  // A "model" that paints every object blue: colour accuracy falls, shape and count do not.
  const PictureSource gt = ground_truth_source(11);
  const PictureSource blue = [&](const std::string& prompt, int64_t n, std::vector<float>& images) {
    gt(prompt, n, images);
    for (int64_t i = 0; i < n; ++i) {
      float* picture = images.data() + i * kImageFloats;
      for (int64_t p = 0; p < kPixels; ++p) {
        const float v = std::max({picture[p], picture[kPixels + p], picture[2 * kPixels + p]});
        for (int64_t c = 0; c < 3; ++c) picture[c * kPixels + p] = v * kPalette[2][c];
      }
    }
  };
  const ScenesReport r = evaluate_scenes_report(eval_prompts(), 8, 1, blue, cnn());
  EXPECT_LT(r.model.seen.color_accuracy, 0.4);
  EXPECT_GE(r.model.seen.shape_accuracy, 0.99);
  EXPECT_GE(r.model.seen.count_accuracy, 0.99);
  EXPECT_LT(r.model.seen.picture_accuracy, 0.5);
  EXPECT_LT(r.model.seen.color_entropy, 0.05);  // every open colour is blue
  EXPECT_GE(r.ceiling.held_out.picture_accuracy, 0.99);
  expect_error([&] { evaluate_scenes(eval_prompts(), 0, blue, gt); }, "n must be >= 1, got 0");
  const PictureSource short_source = [](const std::string&, int64_t, std::vector<float>& images) {
    images.assign(10, 0.0f);
  };
  expect_error([&] { evaluate_scenes({"a circle"}, 2, short_source, gt); },
               "the model gave 10 floats for 2 pictures of \"a circle\"");
}

}  // namespace
}  // namespace ink::scenes
