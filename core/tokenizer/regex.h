// A compiled PCRE2 pattern (UTF + Unicode properties, JIT when available) used by the
// pre-tokenizers and normalizers. Patterns are written in the Oniguruma/PCRE dialect
// that tokenizer.json files and llama.cpp use (\p{L}, (?i:...), lookaheads).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llm {

class Regex {
 public:
  // Throws llm::Error naming the pattern and the offset of a syntax error.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Byte ranges [begin, end) of the successive non-overlapping matches in `text`,
  // scanning left to right as Perl does (an empty match is reported, then the scan
  // moves on by one character). Invalid UTF-8 in `text` never matches.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* out) const;

  // A regex that matches `literal` exactly.
  static std::string escape(std::string_view literal);

  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
};

}  // namespace llm
