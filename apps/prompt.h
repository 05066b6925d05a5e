// Prompt handling for the inkgrad program: what to refuse, what to warn about, and how to show
// untrusted text (any bytes, any length) in a one-line message.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "models/tokenizer.h"

namespace ink::app {

// The nine trained prompts, quoted and comma separated: "horizontal line", "vertical line", ...
std::string trained_prompts_list();

// `text` in double quotes, safe for a terminal and one line: valid UTF-8 is kept, quotes and
// backslashes are escaped, control characters become \n, \t or \xNN, invalid bytes \xNN.
// Longer text is cut after `max_characters` characters and followed by its full length.
std::string quoted_text(std::string_view text, size_t max_characters = 40);

// Checks a prompt before generating from it. Throws ink::Error when no picture can be made
// from it (empty, only spaces, or no character the tokenizer knows). Otherwise returns the
// warnings to show: dropped characters, truncation, and a prompt the model was not trained on.
std::vector<std::string> check_prompt(std::string_view prompt, const CharTokenizer& tokenizer);

}  // namespace ink::app
