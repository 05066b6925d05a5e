// Tests for CharTokenizer (models/tokenizer.h): the notebook's vocabulary, what is dropped and
// reported, UTF-8 handling, truncation and padding, and robustness on arbitrary bytes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "models/shapes.h"
#include "models/tokenizer.h"
#include "tensor/error.h"
#include "tensor/random.h"

namespace ink {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ids padded with PAD to 32
std::vector<int64_t> padded(std::vector<int64_t> ids, size_t length = 32) {
  ids.resize(length, CharTokenizer::kPad);
  return ids;
}

TEST(CharTokenizer, VocabularyIsPadSpaceThenLetters) {
  const CharTokenizer tokenizer;
  EXPECT_EQ(tokenizer.vocab_size(), 28);
  EXPECT_EQ(tokenizer.max_length(), 32);
  EXPECT_EQ(CharTokenizer::kPad, 0);
  EXPECT_EQ(tokenizer.encode("a z"), padded({2, 1, 27}));
  EXPECT_EQ(tokenizer.encode("abcdefghijklmnopqrstuvwxyz"),
            padded({2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14,
                    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27}));
  EXPECT_EQ(tokenizer.encode("circle"), padded({4, 10, 19, 4, 13, 6}));
}

TEST(CharTokenizer, UppercaseAsciiIsFolded) {
  const CharTokenizer tokenizer;
  EXPECT_EQ(tokenizer.encode("CIRCLE"), tokenizer.encode("circle"));
  EXPECT_EQ(tokenizer.encode("Two Vertical LINES"), tokenizer.encode("two vertical lines"));
  EXPECT_EQ(tokenizer.encode("AZ"), padded({2, 27}));
  // The neighbours of A-Z and a-z in ASCII are not letters.
  EXPECT_EQ(tokenizer.encode_with_report("@[`{").length, 0);
}

TEST(CharTokenizer, UnknownCharactersAreDroppedAndReported) {
  const CharTokenizer tokenizer;
  const Encoding encoding = tokenizer.encode_with_report("circle #2!!");
  EXPECT_EQ(encoding.tokens, tokenizer.encode("circle "));
  EXPECT_EQ(encoding.length, 7);
  EXPECT_EQ(encoding.truncated, 0);
  EXPECT_EQ(encoding.dropped_count, 4);
  EXPECT_THAT(encoding.dropped, ElementsAre("#", "2", "!"));  // distinct, first seen first
  // The plain encode drops them silently, as the notebook does.
  EXPECT_EQ(tokenizer.encode("c1i2r3c4l5e6"), tokenizer.encode("circle"));
}

TEST(CharTokenizer, MultiByteCharactersAreDroppedWhole) {
  const CharTokenizer tokenizer;
  // é (2 bytes), 円 (3 bytes), 🙂 (4 bytes): each dropped as one character.
  const Encoding encoding =
      tokenizer.encode_with_report("caf\xC3\xA9 \xE5\x86\x86 \xF0\x9F\x99\x82 ok");
  EXPECT_EQ(tokenizer.decode(encoding.tokens), "caf   ok");
  EXPECT_EQ(encoding.dropped_count, 3);
  EXPECT_THAT(encoding.dropped, ElementsAre("\xC3\xA9", "\xE5\x86\x86", "\xF0\x9F\x99\x82"));
  // Non-ASCII capitals are not folded into letters: À is dropped, not read as 'a'.
  EXPECT_EQ(tokenizer.encode_with_report("\xC3\x80").length, 0);
  // A continuation byte that happens to look like a letter cannot appear: its top bit is set.
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("na\xC3\xAFve")), "nave");
}

TEST(CharTokenizer, InvalidUtf8IsDroppedOneByteAtATimeWithoutSwallowingLetters) {
  const CharTokenizer tokenizer;
  // A lead byte followed by ASCII: the lead byte goes, the 'a' stays.
  Encoding encoding = tokenizer.encode_with_report(
      "\xC3"
      "ab");
  EXPECT_EQ(tokenizer.decode(encoding.tokens), "ab");
  EXPECT_THAT(encoding.dropped, ElementsAre("\xC3"));
  // Truncated sequence at the end, lone continuation byte, bytes never valid in UTF-8.
  encoding = tokenizer.encode_with_report("ab\xE5\x86");
  EXPECT_EQ(tokenizer.decode(encoding.tokens), "ab");
  EXPECT_EQ(encoding.dropped_count, 2);
  EXPECT_THAT(encoding.dropped, ElementsAre("\xE5", "\x86"));
  encoding = tokenizer.encode_with_report("\x80x\xFFy\xFE");
  EXPECT_EQ(tokenizer.decode(encoding.tokens), "xy");
  EXPECT_THAT(encoding.dropped, ElementsAre("\x80", "\xFF", "\xFE"));
  // Overlong '/' (C0 AF) and a UTF-16 surrogate (ED A0 80) are not well-formed characters.
  encoding = tokenizer.encode_with_report("\xC0\xAF\xED\xA0\x80");
  EXPECT_EQ(encoding.dropped_count, 5);
  EXPECT_EQ(encoding.length, 0);
}

TEST(CharTokenizer, ControlCharactersAndNulAreDropped) {
  const CharTokenizer tokenizer;
  constexpr char kText[] = "cir\tcle\n\r\x1b[31m\0x\x7f";
  const std::string text(kText, sizeof(kText) - 1);  // keeps the NUL
  const Encoding encoding = tokenizer.encode_with_report(text);
  EXPECT_EQ(tokenizer.decode(encoding.tokens), "circlemx");
  EXPECT_THAT(encoding.dropped,
              ElementsAre("\t", "\n", "\r", "\x1b", "[", "3", "1", std::string(1, '\0'), "\x7f"));
}

TEST(CharTokenizer, TruncatesTo32KnownCharactersThenPads) {
  const CharTokenizer tokenizer;
  const std::string exactly_32(32, 'b');
  Encoding encoding = tokenizer.encode_with_report(exactly_32);
  EXPECT_EQ(encoding.tokens, std::vector<int64_t>(32, 3));
  EXPECT_EQ(encoding.length, 32);
  EXPECT_EQ(encoding.truncated, 0);

  encoding = tokenizer.encode_with_report(std::string(31, 'b') + "cd");
  EXPECT_EQ(encoding.tokens.back(), 4);  // 'c' is the 32nd, 'd' is cut
  EXPECT_EQ(encoding.truncated, 1);
  // Dropped characters do not count toward the 32, only known ones do.
  std::string mixed;
  for (int i = 0; i < 40; ++i) mixed += "a1";
  encoding = tokenizer.encode_with_report(mixed);
  EXPECT_EQ(encoding.tokens, std::vector<int64_t>(32, 2));
  EXPECT_EQ(encoding.truncated, 8);
  EXPECT_EQ(encoding.dropped_count, 40);
}

TEST(CharTokenizer, OtherMaxLengthsAndTheirLimits) {
  const CharTokenizer short_rows(4);
  EXPECT_EQ(short_rows.encode("circle"), (std::vector<int64_t>{4, 10, 19, 4}));
  EXPECT_EQ(short_rows.encode("a"), (std::vector<int64_t>{2, 0, 0, 0}));
  try {
    CharTokenizer tokenizer(0);
    FAIL() << "max_length 0 accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("CharTokenizer: max_length must be in [1, 65536], got 0"));
  }
  EXPECT_THROW(CharTokenizer(-5), Error);
  EXPECT_THROW(CharTokenizer(int64_t{1} << 40), Error);
}

TEST(CharTokenizer, EmptyAndOnlyUnknownPromptsHaveLengthZero) {
  const CharTokenizer tokenizer;
  Encoding encoding = tokenizer.encode_with_report("");
  EXPECT_EQ(encoding.tokens, std::vector<int64_t>(32, 0));
  EXPECT_EQ(encoding.length, 0);
  EXPECT_EQ(encoding.dropped_count, 0);
  EXPECT_TRUE(encoding.dropped.empty());

  encoding = tokenizer.encode_with_report("123?!\xE2\x9C\x93");
  EXPECT_EQ(encoding.tokens, std::vector<int64_t>(32, 0));
  EXPECT_EQ(encoding.length, 0);
  EXPECT_EQ(encoding.dropped_count, 6);
  EXPECT_EQ(tokenizer.decode(encoding.tokens), "");

  // A space is a known character, so "   " is not empty to the model.
  EXPECT_EQ(tokenizer.encode_with_report("   ").length, 3);
}

TEST(CharTokenizer, TenThousandCharacterPrompts) {
  const CharTokenizer tokenizer;
  Encoding encoding = tokenizer.encode_with_report(std::string(10000, 'x'));
  EXPECT_EQ(encoding.tokens, std::vector<int64_t>(32, 25));
  EXPECT_EQ(encoding.truncated, 10000 - 32);

  std::string accents;
  for (int i = 0; i < 10000; ++i) accents += "\xC3\xA9";
  encoding = tokenizer.encode_with_report(accents);
  EXPECT_EQ(encoding.length, 0);
  EXPECT_EQ(encoding.dropped_count, 10000);
  EXPECT_THAT(encoding.dropped, ElementsAre("\xC3\xA9"));

  // 10,000 different characters (U+4E00..): reported once each, in order.
  std::string distinct;
  for (uint32_t cp = 0x4E00; cp < 0x4E00 + 10000; ++cp) {
    distinct += static_cast<char>(0xE0 | (cp >> 12));
    distinct += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    distinct += static_cast<char>(0x80 | (cp & 0x3F));
  }
  encoding = tokenizer.encode_with_report(distinct);
  ASSERT_EQ(encoding.dropped.size(), 10000u);
  EXPECT_EQ(encoding.dropped.front(), "\xE4\xB8\x80");
  EXPECT_EQ(encoding.dropped_count, 10000);
}

TEST(CharTokenizer, DecodeRoundTripsThePromptsAndSkipsPadAndUnknownIds) {
  const CharTokenizer tokenizer;
  for (const std::string_view prompt : kShapePrompts) {
    EXPECT_EQ(tokenizer.decode(tokenizer.encode(prompt)), prompt);
  }
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("Hello, World!")), "hello world");
  const std::vector<int64_t> odd = {0, 2, -1, 28, 1, 1000, INT64_MIN, INT64_MAX, 27, 0, 3};
  EXPECT_EQ(tokenizer.decode(odd), "a zb");
  EXPECT_EQ(tokenizer.decode({}), "");
}

TEST(CharTokenizer, EncodeIntoWritesTheSameIdsAndNothingMore) {
  const CharTokenizer tokenizer;
  std::vector<int64_t> buffer(34, -9);
  tokenizer.encode_into("Square!", buffer.data() + 1);
  EXPECT_EQ(buffer.front(), -9);
  EXPECT_EQ(buffer.back(), -9);
  EXPECT_EQ(std::vector<int64_t>(buffer.begin() + 1, buffer.end() - 1), tokenizer.encode("square"));
}

TEST(CharTokenizer, ArbitraryBytesNeverBreakTheInvariants) {
  // Random byte strings, biased toward the interesting bytes, with a fixed seed.
  const CharTokenizer tokenizer;
  const std::string interesting = "aZ \t\n\x1b\x7f\x80\xBF\xC2\xC3\xE0\xED\xEF\xF0\xF4\xF5\xFF";
  Generator gen(2024);
  for (int trial = 0; trial < 3000; ++trial) {
    const auto length = static_cast<size_t>(gen.randint(0, 80));
    std::string text;
    for (size_t i = 0; i < length; ++i) {
      text += gen.randint(0, 2) == 0 ? interesting[static_cast<size_t>(gen.randint(
                                           0, static_cast<int64_t>(interesting.size())))]
                                     : static_cast<char>(gen.randint(0, 256));
    }
    const Encoding encoding = tokenizer.encode_with_report(text);
    ASSERT_EQ(encoding.tokens, tokenizer.encode(text));
    ASSERT_EQ(encoding.tokens.size(), 32u);
    ASSERT_GE(encoding.length, 0);
    ASSERT_LE(encoding.length, 32);
    for (int64_t k = 0; k < 32; ++k) {
      const int64_t id = encoding.tokens[static_cast<size_t>(k)];
      ASSERT_EQ(id == 0, k >= encoding.length);
      ASSERT_TRUE(id >= 0 && id < 28);
    }
    ASSERT_EQ(static_cast<int64_t>(tokenizer.decode(encoding.tokens).size()), encoding.length);
    // Every byte is either a known character or part of exactly one dropped character.
    size_t dropped_bytes_at_least = 0;
    for (const std::string& character : encoding.dropped) {
      ASSERT_FALSE(character.empty());
      ASSERT_LE(character.size(), 4u);
      dropped_bytes_at_least += character.size();
      for (const char byte : printable_character(character)) {
        const auto b = static_cast<unsigned char>(byte);
        ASSERT_TRUE(b >= 0x20 && b != 0x7F) << "control byte in a printable character";
      }
    }
    ASSERT_LE(static_cast<size_t>(encoding.length + encoding.truncated) + dropped_bytes_at_least,
              text.size());
    ASSERT_LE(static_cast<int64_t>(encoding.dropped.size()), encoding.dropped_count);
  }
}

TEST(PrintableCharacter, MakesDroppedCharactersSafeToShow) {
  EXPECT_EQ(printable_character("#"), "#");
  EXPECT_EQ(printable_character("\xC3\xA9"), "\xC3\xA9");
  EXPECT_EQ(printable_character("\xF0\x9F\x99\x82"), "\xF0\x9F\x99\x82");
  EXPECT_EQ(printable_character("\x1b"), "U+001B");
  EXPECT_EQ(printable_character(std::string(1, '\0')), "U+0000");
  EXPECT_EQ(printable_character("\x7f"), "U+007F");
  EXPECT_EQ(printable_character("\xC2\x85"), "U+0085");      // C1 control (next line)
  EXPECT_EQ(printable_character("\xE2\x80\xAE"), "U+202E");  // right-to-left override
  EXPECT_EQ(printable_character("\xEF\xBB\xBF"), "U+FEFF");  // byte order mark
  EXPECT_EQ(printable_character("\xFF"), "\\xFF");
  EXPECT_EQ(printable_character("\xC3"), "\\xC3");
  EXPECT_EQ(printable_character(""), "");
}

}  // namespace
}  // namespace ink
