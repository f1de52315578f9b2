// The token table shared by both BPE flavours: texts, scores, types, a fast text -> id
// index and the merge table.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llm {

// Numbered as GGUF's tokenizer.ggml.token_type.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Open-addressing hash from a token text to its id. Keys are the vocab's own strings,
// so lookups take a string_view without building a std::string.
class TokenIndex {
 public:
  void build(const std::vector<std::string>* texts);
  int32_t find(std::string_view text) const;

 private:
  static uint64_t hash(std::string_view s);
  const std::vector<std::string>* texts_ = nullptr;
  std::vector<int32_t> slots_;  // token id, -1 when empty
  uint64_t mask_ = 0;
};

// (left id, right id) -> merge rank and merged id, open addressing on a 64-bit key.
class MergeTable {
 public:
  struct Entry {
    uint64_t key = ~0ull;
    int32_t rank = 0;
    int32_t result = -1;
  };
  void reserve(size_t n);
  // Keeps the first (lowest-rank) entry when a pair is added twice.
  void add(int32_t left, int32_t right, int32_t rank, int32_t result);
  const Entry* find(int32_t left, int32_t right) const;
  size_t size() const { return count_; }

 private:
  static uint64_t key(int32_t l, int32_t r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
  }
  void grow();
  std::vector<Entry> slots_;
  size_t count_ = 0;
};

struct Vocab {
  std::vector<std::string> text;
  std::vector<float> score;
  std::vector<TokenType> type;
  TokenIndex index;
  MergeTable merges;
  std::array<int32_t, 256> byte_token{};        // <0xNN> tokens (byte fallback), -1 if none
  std::array<int32_t, 256> byte_level_token{};  // token of GPT-2's char for byte b, -1 if none
  int32_t unk_id = -1;

  int32_t size() const { return static_cast<int32_t>(text.size()); }
  int32_t find(std::string_view s) const { return index.find(s); }
  bool valid(int32_t id) const { return id >= 0 && id < size(); }
  // Tokens that ordinary text may be merged into (not control, byte or unknown tokens).
  bool mergeable(int32_t id) const {
    const TokenType t = type[id];
    return t == TokenType::kNormal || t == TokenType::kUserDefined || t == TokenType::kUndefined;
  }

  // Builds the index and the byte tables once text/score/type are filled in.
  void finalize();
  // Adds a merge "left right" by texts; false when a part or the result is not a token.
  bool add_merge(std::string_view left, std::string_view right, int32_t rank);
  // True when no mergeable token has U+2581 right after another character; then text
  // can be cut in front of every U+2581 that follows a non-U+2581 character without
  // changing the result of BPE (the cut pieces can never merge).
  bool metaspace_cut_safe() const;
};

// Parses "<0xNN>" into a byte; -1 when `s` is not of that form.
int parse_byte_token(std::string_view s);

}  // namespace llm
