// WordTokenizer: a split on non-letters, a lookup per word, <unk> for the rest.
#include "models/word_tokenizer.h"

#include <algorithm>
#include <cctype>

#include "tensor/error.h"

namespace ink {

namespace {

// Calls on_word(word) for each maximal run of ASCII letters, lowercased.
template <typename OnWord>
void for_each_word(std::string_view text, OnWord&& on_word) {
  std::string word;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x80 && std::isalpha(c)) {
      word.push_back(static_cast<char>(std::tolower(c)));
    } else if (!word.empty()) {
      on_word(std::string_view(word));
      word.clear();
    }
  }
  if (!word.empty()) on_word(std::string_view(word));
}

}  // namespace

const std::vector<std::string_view>& WordTokenizer::vocabulary() {
  static const std::vector<std::string_view> words = {
      "<pad>",  "<unk>",  "a",     "an",     "small",  "large",    "red",    "green", "blue",
      "yellow", "purple", "white", "square", "circle", "triangle", "cross",  "at",    "the",
      "top",    "bottom", "left",  "right",  "on",     "in",       "center", "and",
  };
  return words;
}

int64_t WordTokenizer::token_of(std::string_view word) {
  const auto& words = vocabulary();
  // <pad> and <unk> are not words a prompt can contain.
  for (size_t i = 2; i < words.size(); ++i) {
    if (words[i] == word) return static_cast<int64_t>(i);
  }
  return -1;
}

WordTokenizer::WordTokenizer(int64_t max_length) : max_length_(max_length) {
  INK_CHECK(max_length >= 1 && max_length <= kMaxMaxLength,
            "WordTokenizer: max_length must be in [1, {}], got {}", kMaxMaxLength, max_length);
}

std::vector<int64_t> WordTokenizer::encode(std::string_view text) const {
  std::vector<int64_t> ids(static_cast<size_t>(max_length_));
  encode_into(text, ids.data());
  return ids;
}

void WordTokenizer::encode_into(std::string_view text, int64_t* out) const {
  int64_t n = 0;
  for_each_word(text, [&](std::string_view word) {
    if (n < max_length_) {
      const int64_t id = token_of(word);
      out[n++] = id >= 0 ? id : kUnk;
    }
  });
  std::fill(out + n, out + max_length_, kPad);
}

Encoding WordTokenizer::encode_with_report(std::string_view text) const {
  Encoding e;
  e.tokens.assign(static_cast<size_t>(max_length_), kPad);
  for_each_word(text, [&](std::string_view word) {
    const int64_t id = token_of(word);
    if (id < 0) {
      ++e.dropped_count;
      const std::string shown(word.substr(0, 64));
      if (e.dropped.size() < 64 &&
          std::find(e.dropped.begin(), e.dropped.end(), shown) == e.dropped.end()) {
        e.dropped.push_back(shown);
      }
    }
    if (e.length < max_length_) {
      e.tokens[static_cast<size_t>(e.length++)] = id >= 0 ? id : kUnk;
    } else {
      ++e.truncated;
    }
  });
  return e;
}

std::string WordTokenizer::decode(std::span<const int64_t> tokens) const {
  const auto& words = vocabulary();
  std::string text;
  for (const int64_t id : tokens) {
    if (id == kPad || id < 0 || id >= static_cast<int64_t>(words.size())) continue;
    if (!text.empty()) text += ' ';
    text += words[static_cast<size_t>(id)];
  }
  return text;
}

}  // namespace ink
