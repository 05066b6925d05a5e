// Prompt handling for the inkgrad program: what to refuse, what to warn about, and how to show
// untrusted text (any bytes, any length) in a one-line message.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "models/tokenizer.h"
#include "tensor/quote.h"

namespace ink::app {

// The nine trained prompts, quoted and comma separated: "horizontal line", "vertical line", ...
std::string trained_prompts_list();

// ink::quoted_text (tensor/quote.h), the one quoting function for untrusted text.
using ink::quoted_text;

// Checks a prompt before generating from it. Throws ink::Error when no picture can be made
// from it (empty, only spaces, or no character the tokenizer knows). Otherwise returns the
// warnings to show: dropped characters, truncation, and a prompt the model was not trained on.
std::vector<std::string> check_prompt(std::string_view prompt, const CharTokenizer& tokenizer);

}  // namespace ink::app
