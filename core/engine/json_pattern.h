// JSON schema `pattern`s (ECMA-262 regular expressions, the subset without lookaround or
// backreferences) compiled to a DFA over the bytes of a string value's text, for
// constrained decoding. A pattern matches anywhere in the string unless anchored with
// ^ / $, as the JSON schema spec says. Characters are UTF-8 sequences: '.', \D, \W, \S
// and negated classes take any non-ASCII character whole.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace llm {

class PatternDfa {
 public:
  static constexpr int kMaxStates = 30000;

  // Throws llm::Error naming the unsupported construct (lookaround, backreferences, a
  // class range over non-ASCII characters, ...) or a pattern too large for kMaxStates.
  static PatternDfa compile(const std::string& pattern);

  static constexpr int kStart = 0;
  // The state after byte c, or -1 when no match can go on.
  int next(int state, uint8_t c) const {
    return trans_[static_cast<size_t>(state) * n_classes_ + byte_class_[c]];
  }
  bool accepting(int state) const { return accept_[static_cast<size_t>(state)] != 0; }
  size_t size() const { return accept_.size(); }

 private:
  // Bytes that no part of the pattern tells apart share a class and their transitions.
  std::array<uint16_t, 256> byte_class_{};
  size_t n_classes_ = 1;
  std::vector<int16_t> trans_;  // [state][class]
  std::vector<uint8_t> accept_;
};

}  // namespace llm
