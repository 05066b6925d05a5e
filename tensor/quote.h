// Untrusted text (a tensor name or metadata value from a file, a config.json field, a prompt)
// made safe to show in a one-line message: the one quoting function every such message uses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ink {

// `text` in double quotes, safe for a terminal and one line: valid UTF-8 is kept, quotes and
// backslashes are escaped, newline and tab become \n and \t, other C0 controls, DEL (and so
// every terminal escape sequence, which starts with ESC) and invalid bytes become \xNN, and C1
// controls, bidirectional overrides and invisible characters become U+XXXX. Longer text is cut
// after `max_characters` characters and followed by its full length:
//   "aaaaa..." (10000 characters)
// so the result is at most about 6 * max_characters bytes whatever the input.
std::string quoted_text(std::string_view text, size_t max_characters = 40);

// `text` as it is when it is short and plain (at most `max_characters` printable ASCII
// characters, no space, quote or backslash), otherwise quoted_text(text, max_characters). For
// values that are normally a number or a word, so that "batch_size = 32" reads naturally.
std::string shown_text(std::string_view text, size_t max_characters = 40);

// One character made safe to print: printable ASCII and valid multi-byte UTF-8 are kept,
// controls and invisible characters become "U+001B" style, bytes that are not one well-formed
// character become "\xFF" style.
std::string printable_character(std::string_view character);

// The length (1..4) of the well-formed UTF-8 sequence starting at text[i], or 0 when the bytes
// there are not one (Unicode Table 3-7: no overlong forms, no surrogates, nothing past U+10FFFF).
size_t utf8_sequence_length(std::string_view text, size_t i);

// Characters that would change how a terminal shows the rest of the line: C0, DEL, C1,
// zero-width and bidirectional controls, line and paragraph separators, the byte order mark.
bool is_invisible_or_control(uint32_t code_point);

}  // namespace ink
