// Prompt checks and safe quoting of prompt.h.
#include "apps/prompt.h"

#include <algorithm>
#include <cstdint>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "models/shapes.h"
#include "tensor/error.h"

namespace ink::app {
namespace {

// Length of the valid UTF-8 sequence starting at text[i] (1 for ASCII), or 0 when the bytes
// there are not valid UTF-8 (bad lead byte, missing continuation, overlong, surrogate, too big).
size_t utf8_length(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return 1;
  size_t length;
  uint32_t code;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2, code = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3, code = lead & 0x0F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4, code = lead & 0x07;
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    code = (code << 6) | (byte(i + k) & 0x3F);
  }
  if ((length == 3 && code < 0x800) || (length == 4 && code < 0x10000)) return 0;  // overlong
  if (code >= 0xD800 && code <= 0xDFFF) return 0;                                  // surrogate
  if (code > 0x10FFFF) return 0;
  return length;
}

std::string all_dropped(const Encoding& encoding) {
  std::vector<std::string> shown;
  for (const std::string& character : encoding.dropped) {
    shown.push_back(fmt::format("'{}'", printable_character(character)));
    if (shown.size() == 20 && encoding.dropped.size() > 20) {
      shown.push_back(fmt::format("and {} more", encoding.dropped.size() - 20));
      break;
    }
  }
  return fmt::format("{}", fmt::join(shown, " "));
}

}  // namespace

std::string trained_prompts_list() {
  std::vector<std::string> names;
  for (std::string_view prompt : kShapePrompts) names.push_back(fmt::format("\"{}\"", prompt));
  return fmt::format("{}", fmt::join(names, ", "));
}

std::string quoted_text(std::string_view text, size_t max_characters) {
  std::string out = "\"";
  size_t characters = 0, i = 0;
  for (; i < text.size() && characters < max_characters; ++characters) {
    const auto c = static_cast<unsigned char>(text[i]);
    const size_t length = utf8_length(text, i);
    if (length == 0 || c < 0x20 || c == 0x7F) {
      if (c == '\n') {
        out += "\\n";
      } else if (c == '\t') {
        out += "\\t";
      } else {
        out += fmt::format("\\x{:02X}", c);
      }
      i += 1;
    } else if (length > 1) {
      // C1 controls, bidirectional overrides and invisible characters show as U+XXXX, so a
      // prompt can never reorder or hide the text around it on a terminal.
      out += printable_character(text.substr(i, length));
      i += length;
    } else {
      if (c == '"' || c == '\\') out += '\\';
      out += static_cast<char>(c);
      i += 1;
    }
  }
  out += '"';
  if (i < text.size()) {
    // Count the rest the same way, so the total is in characters, not bytes.
    size_t total = characters;
    while (i < text.size()) {
      i += std::max<size_t>(utf8_length(text, i), 1);
      ++total;
    }
    out.insert(out.size() - 1, "...");
    out += fmt::format(" ({} characters)", total);
  }
  return out;
}

std::vector<std::string> check_prompt(std::string_view prompt, const CharTokenizer& tokenizer) {
  INK_CHECK(!prompt.empty(), "the prompt is empty; try one of: {}", trained_prompts_list());
  const Encoding encoding = tokenizer.encode_with_report(prompt);
  // Spaces alone carry no meaning: the model needs at least one letter.
  const bool has_letter = std::any_of(encoding.tokens.begin(), encoding.tokens.end(),
                                      [](int64_t t) { return t > CharTokenizer::kSpace; });
  INK_CHECK(has_letter,
            "the prompt {} has no letter the model knows (it reads only a-z and space{}){}; try "
            "one of: {}",
            quoted_text(prompt),
            encoding.truncated > 0
                ? fmt::format(", and only the first {} characters", tokenizer.max_length())
                : "",
            encoding.dropped.empty() ? "" : "; dropped: " + all_dropped(encoding),
            trained_prompts_list());

  std::vector<std::string> warnings;
  if (encoding.dropped_count > 0) {
    warnings.push_back(fmt::format(
        "dropped {} character{} the model does not know (it reads only a-z and space): {}",
        encoding.dropped_count, encoding.dropped_count == 1 ? "" : "s", all_dropped(encoding)));
  }
  if (encoding.truncated > 0) {
    warnings.push_back(fmt::format(
        "the prompt is longer than {} characters; only the first {} are used ({} cut off)",
        tokenizer.max_length(), tokenizer.max_length(), encoding.truncated));
  }
  const std::string seen = tokenizer.decode(encoding.tokens);
  if (!is_shape_prompt(seen)) {
    warnings.push_back(fmt::format(
        "the model reads {} and was trained only on these prompts, so expect a blur: {}",
        quoted_text(seen), trained_prompts_list()));
  }
  return warnings;
}

}  // namespace ink::app
