// Tests for the scenes judge (models/scenes_judge.h): it finds every object of ground-truth
// pictures and names their attributes, and it says "incorrect" for pictures that are wrong in
// one way (swapped colour, moved object, wrong count, wrong shape).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "models/scenes.h"
#include "models/scenes_eval.h"
#include "models/scenes_judge.h"
#include "test_util.h"

namespace ink::scenes {
namespace {

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

TEST(ScenesJudge, WrongPicturesAreIncorrect) {
  SceneSampler sampler;
  Generator gen(4);
  const SceneSpec spec =
      parse_prompt("a small red circle on the left and a blue square on the right");
  const auto objects = sampler.sample_for_prompt(spec, gen);
  ASSERT_TRUE(judge(spec, find_objects(render_objects(objects).data())).correct);

  auto swapped = objects;  // colours swapped
  std::swap(swapped[0].color, swapped[1].color);
  EXPECT_FALSE(judge(spec, find_objects(render_objects(swapped).data())).correct);

  auto moved = objects;  // the circle moved to the top left
  moved[0].place = Place{0, 0};
  moved[0].cx = 8;
  moved[0].cy = 8;
  const Verdict v = judge(spec, find_objects(render_objects(moved).data()));
  EXPECT_FALSE(v.correct);
  EXPECT_EQ(v.place_ok, 1);  // the square is still right
  EXPECT_EQ(v.color_ok, 2);

  const auto one = std::vector<Object>{objects[0]};  // the square is missing
  const Verdict missing = judge(spec, find_objects(render_objects(one).data()));
  EXPECT_FALSE(missing.count_ok);
  EXPECT_FALSE(missing.correct);
  EXPECT_EQ(missing.shape_ok, 1);

  auto reshaped = objects;  // a cross where the square should be
  reshaped[1].shape = ShapeKind::cross;
  EXPECT_FALSE(judge(spec, find_objects(render_objects(reshaped).data())).correct);

  auto resized = objects;  // a large circle where a small one was asked for
  resized[0].extent = 12;
  resized[0].size = Size::large;
  EXPECT_FALSE(judge(spec, find_objects(render_objects(resized).data())).correct);

  // An extra object: the count is wrong.
  SceneSpec single = parse_prompt("a small red circle on the left");
  EXPECT_FALSE(judge(single, find_objects(render_objects(objects).data())).correct);
  EXPECT_TRUE(judge(single, find_objects(render_objects(one).data())).correct);
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
