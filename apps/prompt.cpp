// Prompt checks and safe quoting of prompt.h.
#include "apps/prompt.h"

#include <algorithm>
#include <cstdint>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "models/shapes.h"
#include "tensor/error.h"

namespace ink::app {
namespace {

std::string all_dropped(const Encoding& encoding) {
  std::vector<std::string> shown;
  for (const std::string& character : encoding.dropped) {
    shown.push_back(fmt::format("'{}'", printable_character(character)));
    if (shown.size() == 20 && encoding.dropped.size() > 20) {
      shown.push_back(fmt::format("and {} more", encoding.dropped.size() - 20));
      break;
    }
  }
  return fmt::format("{}", fmt::join(shown, " "));
}

}  // namespace

std::string trained_prompts_list() {
  std::vector<std::string> names;
  for (std::string_view prompt : kShapePrompts) names.push_back(fmt::format("\"{}\"", prompt));
  return fmt::format("{}", fmt::join(names, ", "));
}

std::vector<std::string> check_prompt(std::string_view prompt, const CharTokenizer& tokenizer) {
  INK_CHECK(!prompt.empty(), "the prompt is empty; try one of: {}", trained_prompts_list());
  const Encoding encoding = tokenizer.encode_with_report(prompt);
  // Spaces alone carry no meaning: the model needs at least one letter.
  const bool has_letter = std::any_of(encoding.tokens.begin(), encoding.tokens.end(),
                                      [](int64_t t) { return t > CharTokenizer::kSpace; });
  INK_CHECK(has_letter,
            "the prompt {} has no letter the model knows (it reads only a-z and space{}){}; try "
            "one of: {}",
            quoted_text(prompt),
            encoding.truncated > 0
                ? fmt::format(", and only the first {} characters", tokenizer.max_length())
                : "",
            encoding.dropped.empty() ? "" : "; dropped: " + all_dropped(encoding),
            trained_prompts_list());

  std::vector<std::string> warnings;
  if (encoding.dropped_count > 0) {
    warnings.push_back(fmt::format(
        "dropped {} character{} the model does not know (it reads only a-z and space): {}",
        encoding.dropped_count, encoding.dropped_count == 1 ? "" : "s", all_dropped(encoding)));
  }
  if (encoding.truncated > 0) {
    warnings.push_back(fmt::format(
        "the prompt is longer than {} characters; only the first {} are used ({} cut off)",
        tokenizer.max_length(), tokenizer.max_length(), encoding.truncated));
  }
  const std::string seen = tokenizer.decode(encoding.tokens);
  if (!is_shape_prompt(seen)) {
    warnings.push_back(fmt::format(
        "the model reads {} and was trained only on these prompts, so expect a blur: {}",
        quoted_text(seen), trained_prompts_list()));
  }
  return warnings;
}

}  // namespace ink::app
