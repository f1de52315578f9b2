// Tokenizer for Jinja templates with Hugging Face's environment: trim_blocks and lstrip_blocks
// on, `-`/`+` whitespace control, comments dropped, {% raw %} passed through, and one trailing
// newline of the source removed (keep_trailing_newline=False). Whitespace decisions are made
// here, so the parser only sees final text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llm::jinja {

enum class TokenType {
  kText,        // literal output
  kVarBegin,    // {{
  kVarEnd,      // }}
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kName,
  kString,
  kInt,
  kFloat,
  kOp,  // punctuation / operator, in `text`
  kEof,
};

struct Token {
  TokenType type = TokenType::kEof;
  std::string text;  // text, name, decoded string literal or operator
  int line = 1;
  int64_t int_value = 0;
  double float_value = 0.0;
};

// Throws llm::Error("template line N: ...") on malformed input.
std::vector<Token> tokenize(std::string_view source);

}  // namespace llm::jinja
