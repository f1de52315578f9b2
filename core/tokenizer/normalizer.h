// Text normalisation applied to each raw fragment before pre-tokenization
// (tokenizer.json "normalizer"; for GGUF SentencePiece vocabs the space prefix and
// the space -> U+2581 escape).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/tokenizer/regex.h"

namespace llm {

class Normalizer {
 public:
  void add_prepend(const std::string& prefix);
  // Replaces every occurrence of a literal string, or of a regex when `is_regex`.
  void add_replace(const std::string& pattern, const std::string& content, bool is_regex);
  void add_strip(bool left, bool right);
  void add_lowercase();  // ASCII letters only (see lowercase_ascii in the .cpp)

  bool empty() const { return steps_.empty(); }
  std::string apply(std::string_view text) const;

 private:
  enum class Kind { kPrepend, kReplace, kStrip, kLowercase };
  struct Step {
    Kind kind;
    std::string a, b;  // prepend text / replace pattern and content
    std::shared_ptr<Regex> regex;
    bool left = false, right = false;
  };
  std::vector<Step> steps_;
};

// Replaces every occurrence of `from` with `to`.
std::string replace_all(std::string_view s, std::string_view from, std::string_view to);

}  // namespace llm
