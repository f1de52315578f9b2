// Finds added/special tokens in raw text before normal tokenization, the way
// Hugging Face's AddedVocabulary and llama.cpp's special-token partition do.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llm {

struct AddedToken {
  int32_t id = -1;
  std::string text;
  bool special = false;      // matched only when parse_special is on
  bool lstrip = false;       // swallows whitespace on its left
  bool rstrip = false;       // swallows whitespace on its right
  bool single_word = false;  // only matched when not inside a word
};

// A piece of the input: either raw text to tokenize or an already-known token.
struct Fragment {
  int32_t token = -1;         // >= 0: this fragment is that token
  size_t begin = 0, end = 0;  // byte range of raw text (token == -1)
};

class SpecialTokenMatcher {
 public:
  void add(const AddedToken& tok);
  bool empty() const { return tokens_.empty(); }

  // Splits `text` on the added tokens (leftmost, then longest match). Tokens marked
  // special take part only when parse_special is set. Raw fragments are never empty.
  void partition(std::string_view text, bool parse_special, std::vector<Fragment>* out) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> next;  // byte -> child node
    int32_t token = -1;                             // index into tokens_
  };
  int32_t child(int32_t node, uint8_t b) const;
  // Index into tokens_ of the longest usable token starting at text[pos], or -1.
  int32_t match_at(std::string_view text, size_t pos, bool parse_special, size_t* len) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_;
  bool first_byte_[256] = {};
};

}  // namespace llm
