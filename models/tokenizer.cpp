// CharTokenizer: a byte-level scan of UTF-8 text that keeps space and letters and drops, and
// reports, every other character without ever splitting a multi-byte character.
#include "models/tokenizer.h"

#include <algorithm>
#include <unordered_set>

#include "tensor/error.h"

namespace ink {

namespace {

bool is_continuation(unsigned char byte) {
  return (byte & 0xC0u) == 0x80u;
}

// The length (1..4) of the well-formed UTF-8 sequence starting at text[i], or 0 when the bytes
// there are not one (Unicode Table 3-7: no overlong forms, no surrogates, nothing past U+10FFFF).
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

// Calls on_known(id) for each character in the vocabulary and on_dropped(bytes) for each other
// character, in order. An invalid byte is dropped alone so the scan resynchronizes right after.
template <typename OnKnown, typename OnDropped>
void scan(std::string_view text, OnKnown&& on_known, OnDropped&& on_dropped) {
  size_t i = 0;
  while (i < text.size()) {
    const size_t length = utf8_sequence_length(text, i);
    if (length == 1) {
      const int64_t id = CharTokenizer::token_of(static_cast<unsigned char>(text[i]));
      if (id >= 0) {
        on_known(id);
      } else {
        on_dropped(text.substr(i, 1));
      }
      i += 1;
    } else {
      const size_t consumed = length == 0 ? 1 : length;
      on_dropped(text.substr(i, consumed));
      i += consumed;
    }
  }
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

// Characters that would change how a terminal shows the rest of the line.
bool is_invisible_or_control(uint32_t code_point) {
  return code_point < 0x20u || (code_point >= 0x7Fu && code_point <= 0x9Fu) ||
         (code_point >= 0x200Bu && code_point <= 0x200Fu) ||
         (code_point >= 0x2028u && code_point <= 0x202Eu) ||
         (code_point >= 0x2060u && code_point <= 0x206Fu) || code_point == 0xFEFFu;
}

}  // namespace

CharTokenizer::CharTokenizer(int64_t max_length) : max_length_(max_length) {
  INK_CHECK(max_length >= 1 && max_length <= kMaxMaxLength,
            "CharTokenizer: max_length must be in [1, {}], got {}", kMaxMaxLength, max_length);
}

int64_t CharTokenizer::token_of(unsigned char byte) {
  if (byte == ' ') return kSpace;
  if (byte >= 'A' && byte <= 'Z') byte = static_cast<unsigned char>(byte - 'A' + 'a');
  if (byte >= 'a' && byte <= 'z') return 2 + (byte - 'a');
  return -1;
}

void CharTokenizer::encode_into(std::string_view text, int64_t* out) const {
  int64_t length = 0;
  scan(
      text,
      [&](int64_t id) {
        if (length < max_length_) out[length++] = id;
      },
      [](std::string_view) {});
  std::fill(out + length, out + max_length_, kPad);
}

std::vector<int64_t> CharTokenizer::encode(std::string_view text) const {
  std::vector<int64_t> tokens(static_cast<size_t>(max_length_));
  encode_into(text, tokens.data());
  return tokens;
}

Encoding CharTokenizer::encode_with_report(std::string_view text) const {
  Encoding result;
  result.tokens.assign(static_cast<size_t>(max_length_), kPad);
  std::unordered_set<std::string_view> seen;  // views into `text`, valid for this call
  std::vector<std::string_view> dropped;
  scan(
      text,
      [&](int64_t id) {
        if (result.length < max_length_) {
          result.tokens[static_cast<size_t>(result.length++)] = id;
        } else {
          ++result.truncated;
        }
      },
      [&](std::string_view character) {
        ++result.dropped_count;
        if (seen.insert(character).second) dropped.push_back(character);
      });
  result.dropped.assign(dropped.begin(), dropped.end());
  return result;
}

std::string CharTokenizer::decode(std::span<const int64_t> tokens) const {
  std::string text;
  for (const int64_t id : tokens) {
    if (id == kSpace) {
      text += ' ';
    } else if (id >= 2 && id < kVocabSize) {
      text += static_cast<char>('a' + (id - 2));
    }
  }
  return text;
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

}  // namespace ink
