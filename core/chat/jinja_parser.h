// Recursive-descent parser for the Jinja subset used by chat templates. Operator precedence
// follows jinja2's parser exactly (e.g. `~` binds tighter than `+`, filters and `is` tests
// bind to the unary operand), since templates rely on it.
#pragma once

#include <vector>

#include "core/chat/jinja_ast.h"
#include "core/chat/jinja_lexer.h"

namespace llm::jinja {

// Throws llm::Error("template line N: ...") on syntax errors.
Body parse_template(const std::vector<Token>& tokens);

}  // namespace llm::jinja
