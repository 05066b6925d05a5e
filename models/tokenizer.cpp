// CharTokenizer: a byte-level scan of UTF-8 text that keeps space and letters and drops, and
// reports, every other character without ever splitting a multi-byte character.
#include "models/tokenizer.h"

#include <algorithm>
#include <unordered_set>

#include "tensor/error.h"

namespace ink {

namespace {

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

}  // namespace ink
