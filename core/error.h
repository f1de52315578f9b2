// Error type used across llmrt: every user-facing failure is an llm::Error
// carrying a one-line message that names the problem.
#pragma once

#include <stdexcept>
#include <string>

namespace llm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Throws llm::Error with a printf-style message.
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// A printf-style message as a string (for check() results that are returned, not thrown).
std::string format_message(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace llm
