#include "core/tokenizer/special_tokens.h"

namespace llm {

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// Word characters for single_word tokens: ASCII alphanumerics, '_' and any
// non-ASCII byte (letters of other scripts).
bool is_word_byte(char c) {
  const unsigned char u = static_cast<unsigned char>(c);
  return u >= 0x80 || (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') ||
         u == '_';
}

}  // namespace

void SpecialTokenMatcher::add(const AddedToken& tok) {
  if (tok.text.empty()) return;
  if (nodes_.empty()) nodes_.emplace_back();
  int32_t node = 0;
  for (char c : tok.text) {
    const uint8_t b = static_cast<uint8_t>(c);
    int32_t next = child(node, b);
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_[node].next.emplace_back(b, next);
      nodes_.emplace_back();
    }
    node = next;
  }
  if (nodes_[node].token >= 0) return;  // same text added twice: keep the first
  nodes_[node].token = static_cast<int32_t>(tokens_.size());
  tokens_.push_back(tok);
  first_byte_[static_cast<uint8_t>(tok.text[0])] = true;
}

int32_t SpecialTokenMatcher::child(int32_t node, uint8_t b) const {
  for (const auto& [byte, idx] : nodes_[node].next) {
    if (byte == b) return idx;
  }
  return -1;
}

int32_t SpecialTokenMatcher::match_at(std::string_view text, size_t pos, bool parse_special,
                                      size_t* len) const {
  int32_t best = -1;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    node = child(node, static_cast<uint8_t>(text[i]));
    if (node < 0) break;
    const int32_t t = nodes_[node].token;
    if (t < 0) continue;
    const AddedToken& tok = tokens_[t];
    if (tok.special && !parse_special) continue;
    if (tok.single_word) {
      const bool left_ok = pos == 0 || !is_word_byte(text[pos - 1]);
      const bool right_ok = i + 1 >= text.size() || !is_word_byte(text[i + 1]);
      if (!left_ok || !right_ok) continue;
    }
    best = t;
    *len = i + 1 - pos;
  }
  return best;
}

void SpecialTokenMatcher::partition(std::string_view text, bool parse_special,
                                    std::vector<Fragment>* out) const {
  size_t raw_begin = 0;  // start of the pending raw text
  size_t pos = 0;
  const size_t n = text.size();
  while (pos < n) {
    const uint8_t b = static_cast<uint8_t>(text[pos]);
    size_t len = 0;
    // Only try at character starts, and only where some token can begin.
    const int32_t t = (tokens_.empty() || !first_byte_[b] || (b & 0xC0) == 0x80)
                          ? -1
                          : match_at(text, pos, parse_special, &len);
    if (t < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = tokens_[t];
    size_t raw_end = pos;
    if (tok.lstrip) {
      while (raw_end > raw_begin && is_space(text[raw_end - 1])) --raw_end;
    }
    if (raw_end > raw_begin) out->push_back(Fragment{-1, raw_begin, raw_end});
    out->push_back(Fragment{tok.id, pos, pos + len});
    pos += len;
    if (tok.rstrip) {
      while (pos < n && is_space(text[pos])) ++pos;
    }
    raw_begin = pos;
  }
  if (n > raw_begin) out->push_back(Fragment{-1, raw_begin, n});
}

}  // namespace llm
