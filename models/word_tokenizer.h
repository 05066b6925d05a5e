// WordTokenizer: the word-level vocabulary of the scenes prompts. Turns a prompt into a
// fixed-length row of token ids and reports the words it does not know, as CharTokenizer does
// for characters.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "models/tokenizer.h"

namespace ink {

// What this object represents: a fixed vocabulary of words. Id 0 is <pad>, id 1 is <unk>, then
// the words of the scenes grammar (articles, sizes, colours, shapes, place words, "and").
// Text is split on everything that is not an ASCII letter and lowercased; a word outside the
// vocabulary becomes <unk> (so the model sees that something was there) and is reported in
// Encoding::dropped. The row is truncated to max_length ids, then padded with <pad>.
class WordTokenizer {
 public:
  static constexpr int64_t kPad = 0;
  static constexpr int64_t kUnk = 1;
  // The longest scenes prompt has 17 words ("a large purple triangle at the bottom right and ...").
  static constexpr int64_t kDefaultMaxLength = 20;
  static constexpr int64_t kMaxMaxLength = 1 << 12;

  // Throws ink::Error unless 1 <= max_length <= kMaxMaxLength.
  explicit WordTokenizer(int64_t max_length = kDefaultMaxLength);

  int64_t vocab_size() const { return static_cast<int64_t>(vocabulary().size()); }
  int64_t max_length() const { return max_length_; }

  std::vector<int64_t> encode(std::string_view text) const;
  void encode_into(std::string_view text, int64_t* out) const;
  // length: ids written before padding (known words and <unk>); truncated: words cut off
  // beyond max_length; dropped_count / dropped: the unknown words (each distinct one once,
  // at most 64 bytes of it, in order of first appearance).
  Encoding encode_with_report(std::string_view text) const;
  // The words of `tokens`, space-separated; <pad> is skipped, <unk> shows as "<unk>".
  std::string decode(std::span<const int64_t> tokens) const;

  // "<pad>", "<unk>", "a", "an", "small", ...: position = id.
  static const std::vector<std::string_view>& vocabulary();
  // The id of a lowercase word, or -1.
  static int64_t token_of(std::string_view word);

 private:
  int64_t max_length_;
};

}  // namespace ink
