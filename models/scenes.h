// The "scenes" world: 32x32 RGB pictures of one or two coloured objects on black, with prompts
// that compose (shape, colour, size, place), and combinations held out of training so that a
// model can be asked to draw what it has never seen.
//
// Geometry. The picture is a 3 x 3 grid of cells; column c and row r have centres 8, 16, 24.
// An object of extent s centred at pixel (cx, cy) owns the box [x0, x0 + s) x [y0, y0 + s) with
// x0 = cx - s / 2 (integer division), and its continuous centre is (x0 + s / 2, y0 + s / 2).
// Pixel (x, y) is inside a shape when its centre (x + 0.5, y + 0.5) is:
//   square    anywhere in the box;
//   circle    within s / 2 of the centre (a disc of diameter s);
//   triangle  in the isosceles triangle with its apex at the top middle of the box and its base
//             s wide along the bottom (height s, pointing up);
//   cross     in the horizontal or the vertical bar through the middle of the box, each s long
//             and t = max(2, round(s / 4)) whole pixels thick, starting (s - t) / 2 pixels in.
// Pixels outside the picture are clipped. A pixel of an object has its colour times the
// object's brightness; the background is 0.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/random.h"

namespace ink::scenes {

inline constexpr int64_t kSide = 32;
inline constexpr int64_t kChannels = 3;
inline constexpr int64_t kPixels = kSide * kSide;             // per channel
inline constexpr int64_t kImageFloats = kChannels * kPixels;  // (3, 32, 32), channel-major

enum class ShapeKind : uint8_t { square, circle, triangle, cross };
enum class Color : uint8_t { red, green, blue, yellow, purple, white };
enum class Size : uint8_t { small, large };

inline constexpr std::array<std::string_view, 4> kShapeNames = {"square", "circle", "triangle",
                                                                "cross"};
inline constexpr std::array<std::string_view, 6> kColorNames = {"red",    "green",  "blue",
                                                                "yellow", "purple", "white"};
inline constexpr std::array<std::string_view, 2> kSizeNames = {"small", "large"};
// RGB of each colour before brightness, in kColorNames order.
inline constexpr std::array<std::array<float, 3>, 6> kPalette = {{
    {1.0f, 0.1f, 0.1f},    // red
    {0.1f, 0.9f, 0.1f},    // green
    {0.15f, 0.35f, 1.0f},  // blue
    {1.0f, 0.9f, 0.1f},    // yellow
    {0.7f, 0.2f, 1.0f},    // purple
    {1.0f, 1.0f, 1.0f},    // white
}};
inline constexpr int kNumShapes = 4;
inline constexpr int kNumColors = 6;
inline constexpr int kNumSizes = 2;
inline constexpr int kNumPlaces = 9;

// A grid cell: column 0..2 (left, center, right) and row 0..2 (top, middle, bottom).
struct Place {
  int col = 1;
  int row = 1;
  int index() const { return row * 3 + col; }
  static Place from_index(int index) { return {index % 3, index / 3}; }
  friend bool operator==(const Place&, const Place&) = default;
};
// "at the top left", "on the left", "in the center", ... for a cell.
std::string_view place_phrase(Place place);
// Cell centre in pixels along one axis: 8, 16 or 24.
inline int cell_centre(int col_or_row) {
  return 8 + 8 * col_or_row;
}

// One drawn object: every attribute is concrete.
struct Object {
  ShapeKind shape = ShapeKind::square;
  Color color = Color::white;
  Size size = Size::small;
  Place place;
  int cx = 16, cy = 16;                       // centre pixel (the cell centre plus jitter)
  int extent = 6;                             // s, in pixels
  float brightness = 1.0f;                    // in [0.8, 1.0]
  int x0() const { return cx - extent / 2; }  // the box [x0, x0 + s) x [y0, y0 + s)
  int y0() const { return cy - extent / 2; }
};

// What a prompt says about one object: the shape always, the rest may be left open.
struct ObjectSpec {
  ShapeKind shape = ShapeKind::square;
  std::optional<Size> size;
  std::optional<Color> color;
  std::optional<Place> place;
  friend bool operator==(const ObjectSpec&, const ObjectSpec&) = default;
};

// A prompt, parsed: one or two objects (two-object prompts name both places).
using SceneSpec = std::vector<ObjectSpec>;

// The prompt text of a spec: "[a] [small|large] [color] <shape> [<place>]" per object, the two
// joined by " and ". `article` puts "a " before each object.
std::string prompt_text(const SceneSpec& spec, bool article = true);
// Parses a prompt written in this grammar (lower or upper case, any spacing). Throws ink::Error
// saying which word was unexpected and what was expected there.
SceneSpec parse_prompt(std::string_view prompt);

// ---- held-out combinations: never drawn in training, named or not ----
// Colour x shape: red triangle, green circle, blue cross, yellow square.
bool is_held_out_color_shape(Color color, ShapeKind shape);
// Shape x place: square at the top right, circle at the bottom left.
bool is_held_out_shape_place(ShapeKind shape, Place place);
bool is_held_out(const Object& object);
// True when every object the spec can produce contains a held-out combination it names
// explicitly (e.g. "a red triangle", "a circle at the bottom left").
bool names_held_out(const SceneSpec& spec);

// Draws `objects` into image (kImageFloats floats, overwritten).
void render(const std::vector<Object>& objects, float* image);

// Bounding boxes at least 1 pixel apart (no overlap, no touching).
bool boxes_apart(const Object& a, const Object& b);

// What this object represents: the training distribution of the scenes world, and the
// conditional distribution of a prompt for ground truth.
//
// Training draws (sample_training): one object with p = 0.5, else two; each object's shape,
// colour, size and cell uniform (two objects in different cells), centre jitter uniform in
// [-2, 2] on each axis, extent uniform in {6, 7, 8} (small) or {11, 12, 13} (large), brightness
// uniform in [0.8, 1.0]; an object with a held-out combination is redrawn; two objects whose
// boxes are not 1 px apart are redrawn (the jitter up to 8 times, then the cells). The prompt of
// a single object leaves out its size with p = 0.4, its colour with p = 0.3 and its place with
// p = 0.3; a two-object prompt names every place and colour, and leaves out each size with
// p = 0.4. "a " precedes each object with p = 0.5. Two objects keep their shape, colour and
// size while their jitter (8 tries), then their cells, are redrawn until the boxes are apart.
//
// sample_for_prompt draws a picture of a given spec: named attributes as named, open ones from
// the training distribution (so "a circle" never gives a green circle, the training data has
// none), held-out combinations only where the spec names them.
class SceneSampler {
 public:
  struct Sample {
    std::vector<Object> objects;
    SceneSpec spec;      // what the prompt says (a subset of the objects' attributes)
    std::string prompt;  // its text
  };

  Sample sample_training(Generator& gen) const;
  std::vector<Object> sample_for_prompt(const SceneSpec& spec, Generator& gen) const;

 private:
  Object draw_object(const ObjectSpec& spec, bool allow_held_out, Generator& gen) const;
};

}  // namespace ink::scenes
