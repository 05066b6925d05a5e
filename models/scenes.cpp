// The scenes world: rendering, the prompt grammar (both ways) and the training distribution.
#include "models/scenes.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "tensor/error.h"

namespace ink::scenes {

namespace {

constexpr std::array<std::string_view, 9> kPlacePhrases = {
    "at the top left",    "at the top",    "at the top right",
    "on the left",        "in the center", "on the right",
    "at the bottom left", "at the bottom", "at the bottom right",
};

// Splits on anything that is not an ASCII letter and lowercases.
std::vector<std::string> words_of(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalpha(c) && c < 0x80) {
      word.push_back(static_cast<char>(std::tolower(c)));
    } else if (!word.empty()) {
      words.push_back(std::move(word));
      word.clear();
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

template <size_t N>
std::optional<int> find_name(const std::array<std::string_view, N>& names, std::string_view w) {
  for (size_t i = 0; i < N; ++i) {
    if (names[i] == w) return static_cast<int>(i);
  }
  return std::nullopt;
}

// True when pixel centre (px, py) lies inside the object's shape.
bool inside(const Object& o, double px, double py) {
  const double s = o.extent;
  const double x0 = o.x0(), y0 = o.y0();
  const double ccx = x0 + s / 2.0, ccy = y0 + s / 2.0;
  const bool in_box = px >= x0 && px < x0 + s && py >= y0 && py < y0 + s;
  switch (o.shape) {
    case ShapeKind::square:
      return in_box;
    case ShapeKind::circle: {
      const double dx = px - ccx, dy = py - ccy;
      return dx * dx + dy * dy <= (s / 2.0) * (s / 2.0);
    }
    case ShapeKind::triangle: {
      if (!in_box) return false;
      const double half_width = (s / 2.0) * ((py - y0) / s);  // 0 at the apex, s/2 at the base
      return std::abs(px - ccx) <= half_width;
    }
    case ShapeKind::cross: {
      if (!in_box) return false;
      // Each bar is t whole pixels thick, starting (s - t) / 2 pixels into the box.
      const int t = std::max(2, static_cast<int>(std::lround(s / 4.0)));
      const int first = (o.extent - t) / 2;
      const int row = static_cast<int>(py - y0), col = static_cast<int>(px - x0);
      return (row >= first && row < first + t) || (col >= first && col < first + t);
    }
  }
  return false;
}

int extent_for(Size size, Generator& gen) {
  return size == Size::small ? static_cast<int>(gen.randint(6, 9))
                             : static_cast<int>(gen.randint(11, 14));
}

// Every held-out combination the object contains is one the spec names.
bool acceptable(const Object& o, const ObjectSpec& spec, bool allow_held_out) {
  if (is_held_out_color_shape(o.color, o.shape) && !(allow_held_out && spec.color)) return false;
  if (is_held_out_shape_place(o.shape, o.place) && !(allow_held_out && spec.place)) return false;
  return true;
}

// Redraws the jitter of `b` (then the caller redraws cells) until the boxes are apart.
bool place_apart(const Object& a, Object& b, Generator& gen) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    b.cx = cell_centre(b.place.col) + static_cast<int>(gen.randint(-2, 3));
    b.cy = cell_centre(b.place.row) + static_cast<int>(gen.randint(-2, 3));
    if (boxes_apart(a, b)) return true;
  }
  return false;
}

// A new cell (not a held-out one for the object's shape) and a new jitter.
void redraw_place(Object& o, Generator& gen) {
  do {
    o.place = Place::from_index(static_cast<int>(gen.randint(0, kNumPlaces)));
  } while (is_held_out_shape_place(o.shape, o.place));
  o.cx = cell_centre(o.place.col) + static_cast<int>(gen.randint(-2, 3));
  o.cy = cell_centre(o.place.row) + static_cast<int>(gen.randint(-2, 3));
}

}  // namespace

std::string_view place_phrase(Place place) {
  INK_CHECK(place.col >= 0 && place.col < 3 && place.row >= 0 && place.row < 3,
            "scenes: place (col {}, row {}) is outside the 3 x 3 grid", place.col, place.row);
  return kPlacePhrases[static_cast<size_t>(place.index())];
}

std::string prompt_text(const SceneSpec& spec, bool article) {
  std::string text;
  for (size_t i = 0; i < spec.size(); ++i) {
    const ObjectSpec& o = spec[i];
    if (i > 0) text += " and ";
    if (article) text += "a ";
    if (o.size) text += std::string(kSizeNames[static_cast<size_t>(*o.size)]) + " ";
    if (o.color) text += std::string(kColorNames[static_cast<size_t>(*o.color)]) + " ";
    text += kShapeNames[static_cast<size_t>(o.shape)];
    if (o.place) text += " " + std::string(place_phrase(*o.place));
  }
  return text;
}

SceneSpec parse_prompt(std::string_view prompt) {
  const std::vector<std::string> words = words_of(prompt);
  INK_CHECK(!words.empty(), "scenes: the prompt has no words; expected e.g. \"a red circle\"");
  SceneSpec spec;
  size_t i = 0;
  const auto at = [&](size_t k) -> std::string_view {
    return k < words.size() ? std::string_view(words[k]) : std::string_view();
  };
  const auto fail = [&](std::string_view expected) {
    INK_FAIL("scenes: unexpected {} at word {} of \"{}\"; expected {}",
             i < words.size() ? "\"" + words[i] + "\"" : std::string("end of prompt"), i + 1,
             prompt.substr(0, 200), expected);
  };
  while (true) {
    ObjectSpec o;
    if (at(i) == "a" || at(i) == "an") ++i;
    if (auto s = find_name(kSizeNames, at(i))) {
      o.size = static_cast<Size>(*s);
      ++i;
    }
    if (auto c = find_name(kColorNames, at(i))) {
      o.color = static_cast<Color>(*c);
      ++i;
    }
    auto shape = find_name(kShapeNames, at(i));
    if (!shape) fail("a shape (square, circle, triangle, cross)");
    o.shape = static_cast<ShapeKind>(*shape);
    ++i;
    // A place phrase: the longest of the nine that matches here.
    for (int p = 0; p < kNumPlaces; ++p) {
      const std::vector<std::string> phrase = words_of(kPlacePhrases[static_cast<size_t>(p)]);
      bool match = i + phrase.size() <= words.size();
      for (size_t k = 0; match && k < phrase.size(); ++k) match = words[i + k] == phrase[k];
      const bool longer_follows =
          match && i + phrase.size() < words.size() &&
          (words[i + phrase.size()] == "left" || words[i + phrase.size()] == "right");
      if (match && !longer_follows) {
        o.place = Place::from_index(p);
        i += phrase.size();
        break;
      }
    }
    spec.push_back(o);
    if (i == words.size()) break;
    if (at(i) != "and") fail("\"and\", a place (e.g. \"on the left\") or the end of the prompt");
    ++i;
    if (spec.size() == 2) fail("the end of the prompt (at most two objects)");
  }
  if (spec.size() == 2) {
    INK_CHECK(spec[0].place && spec[1].place,
              "scenes: \"{}\" has two objects; each needs its place (e.g. \"a circle on the left "
              "and a square on the right\")",
              prompt.substr(0, 200));
    INK_CHECK(!(*spec[0].place == *spec[1].place),
              "scenes: \"{}\" puts both objects in the same place", prompt.substr(0, 200));
  }
  return spec;
}

bool is_held_out_color_shape(Color color, ShapeKind shape) {
  return (color == Color::red && shape == ShapeKind::triangle) ||
         (color == Color::green && shape == ShapeKind::circle) ||
         (color == Color::blue && shape == ShapeKind::cross) ||
         (color == Color::yellow && shape == ShapeKind::square);
}

bool is_held_out_shape_place(ShapeKind shape, Place place) {
  return (shape == ShapeKind::square && place == Place{2, 0}) ||
         (shape == ShapeKind::circle && place == Place{0, 2});
}

bool is_held_out(const Object& object) {
  return is_held_out_color_shape(object.color, object.shape) ||
         is_held_out_shape_place(object.shape, object.place);
}

bool names_held_out(const SceneSpec& spec) {
  for (const ObjectSpec& o : spec) {
    if (o.color && is_held_out_color_shape(*o.color, o.shape)) return true;
    if (o.place && is_held_out_shape_place(o.shape, *o.place)) return true;
  }
  return false;
}

bool boxes_apart(const Object& a, const Object& b) {
  const int ax1 = a.x0() + a.extent, ay1 = a.y0() + a.extent;  // exclusive ends
  const int bx1 = b.x0() + b.extent, by1 = b.y0() + b.extent;
  // A gap of at least one pixel along x or along y.
  return b.x0() >= ax1 + 1 || a.x0() >= bx1 + 1 || b.y0() >= ay1 + 1 || a.y0() >= by1 + 1;
}

void render(const std::vector<Object>& objects, float* image) {
  std::fill(image, image + kImageFloats, 0.0f);
  for (const Object& o : objects) {
    const auto& rgb = kPalette[static_cast<size_t>(o.color)];
    const int x_begin = std::max(0, o.x0()), x_end = std::min<int>(kSide, o.x0() + o.extent);
    const int y_begin = std::max(0, o.y0()), y_end = std::min<int>(kSide, o.y0() + o.extent);
    for (int y = y_begin; y < y_end; ++y) {
      for (int x = x_begin; x < x_end; ++x) {
        if (!inside(o, x + 0.5, y + 0.5)) continue;
        for (int c = 0; c < 3; ++c) image[c * kPixels + y * kSide + x] = rgb[c] * o.brightness;
      }
    }
  }
}

Object SceneSampler::draw_object(const ObjectSpec& spec, bool allow_held_out,
                                 Generator& gen) const {
  // A spec that itself names a forbidden combination can never be met: fail, don't loop.
  INK_CHECK(allow_held_out || !names_held_out({spec}),
            "scenes: \"{}\" names a held-out combination, which training never draws",
            prompt_text({spec}));
  Object o;
  o.shape = spec.shape;
  do {
    o.color = spec.color ? *spec.color : static_cast<Color>(gen.randint(0, kNumColors));
    o.place =
        spec.place ? *spec.place : Place::from_index(static_cast<int>(gen.randint(0, kNumPlaces)));
  } while (!acceptable(o, spec, allow_held_out));
  o.size = spec.size ? *spec.size : static_cast<Size>(gen.randint(0, kNumSizes));
  o.extent = extent_for(o.size, gen);
  o.cx = cell_centre(o.place.col) + static_cast<int>(gen.randint(-2, 3));
  o.cy = cell_centre(o.place.row) + static_cast<int>(gen.randint(-2, 3));
  o.brightness = gen.uniform(0.8f, 1.0f);
  return o;
}

std::vector<Object> SceneSampler::sample_for_prompt(const SceneSpec& spec, Generator& gen) const {
  INK_CHECK(spec.size() == 1 || spec.size() == 2,
            "scenes: a scene holds one or two objects, the spec has {}", spec.size());
  std::vector<Object> objects = {draw_object(spec[0], true, gen)};
  if (spec.size() == 1) return objects;
  INK_CHECK(spec[0].place && spec[1].place && !(*spec[0].place == *spec[1].place),
            "scenes: two objects need two different named places");
  // Both places are fixed: redraw the objects (their open sizes and their jitter) until the
  // boxes are apart. Two large objects in neighbouring cells never are: give up with an error.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    Object second = draw_object(spec[1], true, gen);
    if (place_apart(objects[0], second, gen)) {
      objects.push_back(second);
      return objects;
    }
    objects[0] = draw_object(spec[0], true, gen);
  }
  INK_FAIL("scenes: \"{}\": the two objects could not be drawn 1 px apart in those places",
           prompt_text(spec));
}

SceneSampler::Sample SceneSampler::sample_training(Generator& gen) const {
  Sample sample;
  const bool two = gen.uniform() >= 0.5f;
  const auto open_spec = [&gen] {
    ObjectSpec s;
    s.shape = static_cast<ShapeKind>(gen.randint(0, kNumShapes));
    return s;
  };
  if (!two) {
    const Object o = draw_object(open_spec(), false, gen);
    ObjectSpec named;
    named.shape = o.shape;
    if (gen.uniform() >= 0.4f) named.size = o.size;
    if (gen.uniform() >= 0.3f) named.color = o.color;
    if (gen.uniform() >= 0.3f) named.place = o.place;
    sample.objects = {o};
    sample.spec = {named};
  } else {
    // The objects keep their shape, colour and size; their jitter is redrawn, then their cells,
    // until they sit in different cells with boxes 1 px apart.
    Object a = draw_object(open_spec(), false, gen);
    Object b = draw_object(open_spec(), false, gen);
    while (a.place == b.place || !place_apart(a, b, gen)) {
      redraw_place(a, gen);
      redraw_place(b, gen);
    }
    sample.objects = {a, b};
    for (const Object& o : sample.objects) {
      ObjectSpec named;
      named.shape = o.shape;
      named.color = o.color;
      named.place = o.place;
      if (gen.uniform() >= 0.4f) named.size = o.size;
      sample.spec.push_back(named);
    }
  }
  sample.prompt = prompt_text(sample.spec, gen.uniform() < 0.5f);
  return sample;
}

}  // namespace ink::scenes
