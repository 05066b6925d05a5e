// libFuzzer target for CharTokenizer and the prompt handling of the inkgrad program: any bytes
// must encode without failing, agree across encode / encode_into / encode_with_report, decode to
// [a-z ] only; every dropped character must print as one safe, valid UTF-8 line fragment; and
// app::check_prompt / app::quoted_text must give bounded one-line messages or ink::Error.
//
// Input layout: byte 0 picks max_length (so truncation is exercised at small and large lengths),
// the rest is the prompt.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "apps/prompt.h"
#include "models/tokenizer.h"
#include "tensor/error.h"

namespace {

// Fails the run with a message (libFuzzer saves the input as a crash artifact).
void require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz_tokenizer: invariant broken: %s\n", what);
    std::abort();
  }
}

int64_t max_length_for(uint8_t selector) {
  // 1..32 covers the default and short rows; a few larger values reach long prompts.
  if (selector < 224) return 1 + selector % 32;
  static constexpr int64_t kLarger[] = {33,   64,   100,   255,
                                        1000, 4096, 10000, ink::CharTokenizer::kMaxMaxLength};
  return kLarger[selector % 8];
}

// The reference: every ASCII space or letter byte is a known character, every other byte is not
// (UTF-8 multi-byte sequences and invalid bytes all have the top bit set or are not letters).
int64_t reference_id(unsigned char byte) {
  if (byte == ' ') return 1;
  if (byte >= 'a' && byte <= 'z') return 2 + (byte - 'a');
  if (byte >= 'A' && byte <= 'Z') return 2 + (byte - 'A');
  return -1;
}

// An independent UTF-8 decoder: the code points of `text`, or false if it is not well formed.
bool decode_utf8(std::string_view text, std::vector<uint32_t>& code_points) {
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    size_t length = 0;
    uint32_t value = 0;
    uint32_t minimum = 0;
    if (lead < 0x80) {
      length = 1, value = lead;
    } else if ((lead & 0xE0) == 0xC0) {
      length = 2, value = lead & 0x1F, minimum = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3, value = lead & 0x0F, minimum = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4, value = lead & 0x07, minimum = 0x10000;
    } else {
      return false;
    }
    if (text.size() - i < length) return false;
    for (size_t k = 1; k < length; ++k) {
      const auto byte = static_cast<unsigned char>(text[i + k]);
      if ((byte & 0xC0) != 0x80) return false;
      value = (value << 6) | (byte & 0x3F);
    }
    if (value < minimum || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return false;
    code_points.push_back(value);
    i += length;
  }
  return true;
}

// Code points that must never reach a terminal from printable_character: C0, DEL, C1, and the
// zero-width / bidirectional / invisible formatting characters.
bool unsafe_to_print(uint32_t c) {
  return c < 0x20 || (c >= 0x7F && c <= 0x9F) || (c >= 0x200B && c <= 0x200F) ||
         (c >= 0x2028 && c <= 0x202E) || (c >= 0x2060 && c <= 0x206F) || c == 0xFEFF;
}

void check_printable(const std::string& dropped) {
  const std::string shown = ink::printable_character(dropped);
  require(!shown.empty(), "printable_character of a dropped character is empty");
  std::vector<uint32_t> code_points;
  require(decode_utf8(shown, code_points), "printable_character returned invalid UTF-8");
  for (const uint32_t c : code_points) {
    require(!unsafe_to_print(c), "printable_character returned a control or invisible character");
  }
  std::vector<uint32_t> original;
  if (shown != dropped) {
    // Replaced: must be U+XXXX (a well-formed but unsafe character) or \xNN per byte.
    const bool escaped_code_point = shown.rfind("U+", 0) == 0;
    const bool escaped_bytes = shown.size() == 4 * dropped.size() && shown.rfind("\\x", 0) == 0;
    require(escaped_code_point || escaped_bytes,
            "printable_character replacement has no U+/\\x form");
    if (escaped_code_point) {
      require(
          decode_utf8(dropped, original) && original.size() == 1 && unsafe_to_print(original[0]),
          "printable_character escaped a safe, well-formed character");
    }
  } else {
    require(decode_utf8(dropped, original) && original.size() == 1,
            "printable_character kept bytes that are not one well-formed character");
  }
}

// A message shown to the user: valid UTF-8, one line, no C0 control character or DEL.
// quoted_text keeps C1 controls and bidirectional/zero-width characters as they are (unlike
// printable_character), so those are not checked here.
void check_one_line(const std::string& message, const char* what) {
  std::vector<uint32_t> code_points;
  require(decode_utf8(message, code_points), what);
  for (const uint32_t c : code_points) require(c >= 0x20 && c != 0x7F, what);
}

// app::quoted_text: quoted, one line, and at most max_characters characters of `text` (each
// shown in at most 4 bytes) plus the "... (N characters)" suffix.
void check_quoted(std::string_view text, size_t max_characters) {
  const std::string quoted = ink::app::quoted_text(text, max_characters);
  check_one_line(quoted, "quoted_text is not one line of valid UTF-8 without control characters");
  require(quoted.size() >= 2 && quoted.front() == '"', "quoted_text does not start with a quote");
  require(quoted.size() <= 2 + 4 * max_characters + 3 + 32, "quoted_text is not bounded");
  const bool cut = quoted.back() != '"';
  if (!cut) require(text.size() <= 4 * max_characters, "quoted_text kept too much without cutting");
}

void check_app_prompt(std::string_view text, const ink::CharTokenizer& tokenizer,
                      const ink::Encoding& encoding) {
  const bool usable = !text.empty() && std::any_of(encoding.tokens.begin(), encoding.tokens.end(),
                                                   [](int64_t t) { return t > 1; });
  std::vector<std::string> warnings;
  try {
    warnings = ink::app::check_prompt(text, tokenizer);
  } catch (const ink::Error& error) {
    require(!usable, "check_prompt refused a prompt with a known letter");
    check_one_line(error.what(), "check_prompt's error is not one safe line");
    return;
  }
  require(usable, "check_prompt accepted a prompt without a known letter");
  require(warnings.size() <= 3, "check_prompt gave more than 3 warnings");
  for (const std::string& warning : warnings) {
    check_one_line(warning, "a check_prompt warning is not one safe line");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int64_t max_length = max_length_for(data[0]);
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const ink::CharTokenizer tokenizer(max_length);
  const auto n = static_cast<size_t>(max_length);

  const ink::Encoding encoding = tokenizer.encode_with_report(text);

  // The ids: the reference's known characters, truncated to max_length, then PAD.
  std::vector<int64_t> expected;
  int64_t known = 0;
  for (const char byte : text) {
    const int64_t id = reference_id(static_cast<unsigned char>(byte));
    if (id < 0) continue;
    ++known;
    if (expected.size() < n) expected.push_back(id);
  }
  require(encoding.tokens.size() == n, "tokens.size() != max_length");
  require(encoding.length >= 0 && encoding.length <= max_length, "length outside [0, max_length]");
  require(encoding.length == static_cast<int64_t>(expected.size()),
          "length != known characters kept");
  require(encoding.truncated == known - encoding.length, "truncated != known characters cut off");
  for (size_t i = 0; i < n; ++i) {
    const int64_t id = encoding.tokens[i];
    require(id >= 0 && id < ink::CharTokenizer::kVocabSize, "token id outside [0, 28)");
    if (i < expected.size()) {
      require(id == expected[i], "token differs from the reference");
    } else {
      require(id == ink::CharTokenizer::kPad, "padding is not PAD");
    }
  }

  // encode and encode_into agree, and encode_into writes exactly max_length ids.
  require(tokenizer.encode(text) == encoding.tokens, "encode != encode_with_report");
  constexpr int64_t kCanary = 0x5A5A5A5A5A5A5A5A;
  std::vector<int64_t> buffer(n + 2, kCanary);
  tokenizer.encode_into(text, buffer.data() + 1);
  require(buffer.front() == kCanary && buffer.back() == kCanary, "encode_into wrote out of bounds");
  require(std::vector<int64_t>(buffer.begin() + 1, buffer.end() - 1) == encoding.tokens,
          "encode_into != encode_with_report");

  // decode(encode(x)) holds only [a-z ], one character per kept id.
  const std::string decoded = tokenizer.decode(encoding.tokens);
  require(static_cast<int64_t>(decoded.size()) == encoding.length, "decode length != length");
  for (const char c : decoded) require(c == ' ' || (c >= 'a' && c <= 'z'), "decode outside [a-z ]");
  require(tokenizer.encode(decoded) == encoding.tokens, "encode(decode(encode(x))) != encode(x)");

  // Dropped characters: distinct, 1..4 bytes each, together accounting for every unknown byte.
  const int64_t unknown_bytes = static_cast<int64_t>(text.size()) - known;
  require(encoding.dropped_count <= unknown_bytes, "more dropped characters than unknown bytes");
  require(4 * encoding.dropped_count >= unknown_bytes, "unknown bytes not accounted for by drops");
  require((encoding.dropped_count == 0) == encoding.dropped.empty(), "dropped_count vs dropped");
  require(static_cast<int64_t>(encoding.dropped.size()) <= encoding.dropped_count,
          "more distinct dropped characters than drops");
  std::unordered_set<std::string> distinct;
  for (const std::string& character : encoding.dropped) {
    require(!character.empty() && character.size() <= 4, "dropped character of 0 or > 4 bytes");
    // (Bounded, as a search per distinct character is quadratic on long inputs.)
    if (text.size() <= 1024) {
      require(text.find(character) != std::string_view::npos, "dropped character not in the text");
    }
    require(distinct.insert(character).second, "dropped character listed twice");
    if (character.size() == 1) {
      require(reference_id(static_cast<unsigned char>(character[0])) < 0, "dropped a known byte");
    }
    check_printable(character);
  }

  // printable_character must be safe on any short byte string, not only on what scan() drops.
  if (!text.empty() && text.size() <= 8) check_printable(std::string(text));

  // The program's prompt checks and quoting (the default and a short quote length).
  check_app_prompt(text, tokenizer, encoding);
  check_quoted(text, 40);
  check_quoted(text, 1 + data[0] % 8);
  return 0;
}
