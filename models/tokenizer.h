// CharTokenizer: turns a prompt into a fixed-length row of token ids for the text encoder,
// and reports what it had to drop, so a program can warn about (or reject) a prompt.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/quote.h"  // printable_character, for the dropped characters

namespace ink {

// What one call of CharTokenizer::encode_with_report found.
struct Encoding {
  std::vector<int64_t> tokens;  // (max_length) token ids, padded with CharTokenizer::kPad
  int64_t length = 0;           // known characters kept in `tokens` (0: nothing to encode)
  int64_t truncated = 0;        // known characters cut off beyond max_length
  int64_t dropped_count = 0;    // characters outside the vocabulary, counting repeats
  // The distinct dropped characters in order of first appearance, each as its raw bytes: a whole
  // UTF-8 sequence for a multi-byte character, one byte for a byte that is not valid UTF-8.
  // Use printable_character() before showing one to a person.
  std::vector<std::string> dropped;
};

// What this object represents: the notebook's character vocabulary. PAD = 0, space = 1,
// a..z = 2..27. Input is read as UTF-8 bytes; ASCII A-Z are lowercased, every other character
// outside the vocabulary (digits, punctuation, control characters, any non-ASCII character,
// invalid bytes) is dropped. The result is truncated to max_length ids, then padded with PAD.
// Encoding never fails, whatever the input.
class CharTokenizer {
 public:
  static constexpr int64_t kPad = 0;
  static constexpr int64_t kSpace = 1;
  static constexpr int64_t kVocabSize = 28;
  static constexpr int64_t kDefaultMaxLength = 32;
  // Longer rows than this are surely a mistake (and would allocate a lot per prompt).
  static constexpr int64_t kMaxMaxLength = 1 << 16;

  // Throws ink::Error unless 1 <= max_length <= kMaxMaxLength.
  explicit CharTokenizer(int64_t max_length = kDefaultMaxLength);

  int64_t vocab_size() const { return kVocabSize; }
  int64_t max_length() const { return max_length_; }

  // The max_length token ids of `text`, silently dropping unknown characters like the notebook.
  std::vector<int64_t> encode(std::string_view text) const;
  // Same ids, written to out[0 .. max_length), with no allocation.
  void encode_into(std::string_view text, int64_t* out) const;
  // The ids plus what was dropped or truncated.
  Encoding encode_with_report(std::string_view text) const;

  // The text of `tokens`: PAD and ids outside [0, kVocabSize) are skipped, as in the notebook.
  std::string decode(std::span<const int64_t> tokens) const;

  // The id of one byte of text after lowercasing, or -1 when it is not in the vocabulary.
  static int64_t token_of(unsigned char byte);

 private:
  int64_t max_length_;
};

}  // namespace ink
