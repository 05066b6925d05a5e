// The quoting of quote.h: UTF-8 validation and the escapes that keep untrusted text on one line.
#include "tensor/quote.h"

#include <algorithm>

#include <fmt/format.h>

namespace ink {
namespace {

bool is_continuation(unsigned char byte) {
  return (byte & 0xC0u) == 0x80u;
}

// The code point of a well-formed UTF-8 sequence.
uint32_t decode_code_point(std::string_view character) {
  const auto lead = static_cast<unsigned char>(character[0]);
  if (character.size() == 1) return lead;
  uint32_t value = lead & (0x7Fu >> character.size());
  for (size_t k = 1; k < character.size(); ++k) {
    value = (value << 6) | (static_cast<unsigned char>(character[k]) & 0x3Fu);
  }
  return value;
}

}  // namespace

size_t utf8_sequence_length(std::string_view text, size_t i) {
  const auto byte_at = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte_at(i);
  if (lead < 0x80u) return 1;
  size_t length = 0;
  unsigned char second_low = 0x80u;
  unsigned char second_high = 0xBFu;
  if (lead >= 0xC2u && lead <= 0xDFu) {
    length = 2;
  } else if (lead >= 0xE0u && lead <= 0xEFu) {
    length = 3;
    if (lead == 0xE0u) second_low = 0xA0u;   // overlong
    if (lead == 0xEDu) second_high = 0x9Fu;  // surrogates
  } else if (lead >= 0xF0u && lead <= 0xF4u) {
    length = 4;
    if (lead == 0xF0u) second_low = 0x90u;   // overlong
    if (lead == 0xF4u) second_high = 0x8Fu;  // beyond U+10FFFF
  } else {
    return 0;  // a continuation byte on its own, C0, C1 or F5..FF
  }
  if (text.size() - i < length) return 0;
  const unsigned char second = byte_at(i + 1);
  if (second < second_low || second > second_high) return 0;
  for (size_t k = 2; k < length; ++k) {
    if (!is_continuation(byte_at(i + k))) return 0;
  }
  return length;
}

bool is_invisible_or_control(uint32_t code_point) {
  return code_point < 0x20u || (code_point >= 0x7Fu && code_point <= 0x9Fu) ||
         (code_point >= 0x200Bu && code_point <= 0x200Fu) ||
         (code_point >= 0x2028u && code_point <= 0x202Eu) ||
         (code_point >= 0x2060u && code_point <= 0x206Fu) || code_point == 0xFEFFu;
}

std::string printable_character(std::string_view character) {
  if (character.empty()) return "";
  const auto lead = static_cast<unsigned char>(character[0]);
  if (utf8_sequence_length(character, 0) != character.size()) {
    // Not one well-formed character: show its bytes.
    std::string shown;
    for (const char byte : character)
      shown += fmt::format("\\x{:02X}", static_cast<unsigned char>(byte));
    return shown;
  }
  const uint32_t code_point = character.size() == 1 ? lead : decode_code_point(character);
  if (is_invisible_or_control(code_point)) return fmt::format("U+{:04X}", code_point);
  return std::string(character);
}

std::string quoted_text(std::string_view text, size_t max_characters) {
  std::string out = "\"";
  size_t characters = 0, i = 0;
  for (; i < text.size() && characters < max_characters; ++characters) {
    const auto c = static_cast<unsigned char>(text[i]);
    const size_t length = utf8_sequence_length(text, i);
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
      // C1 controls, bidirectional overrides and invisible characters show as U+XXXX, so the
      // text can never reorder or hide what is around it on a terminal.
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
      i += std::max<size_t>(utf8_sequence_length(text, i), 1);
      ++total;
    }
    out.insert(out.size() - 1, "...");
    out += fmt::format(" ({} characters)", total);
  }
  return out;
}

std::string shown_text(std::string_view text, size_t max_characters) {
  const bool plain = !text.empty() && text.size() <= max_characters &&
                     std::all_of(text.begin(), text.end(), [](char c) {
                       return c > ' ' && c < 0x7F && c != '"' && c != '\\';
                     });
  return plain ? std::string(text) : quoted_text(text, max_characters);
}

}  // namespace ink
