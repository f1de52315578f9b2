// Turns one vocab piece back into bytes (tokenizer.json "decoder"; for GGUF the
// equivalent of llama.cpp's token_to_piece). Works token by token so that streaming
// and whole-sequence decoding agree.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace llm {

class Decoder {
 public:
  void add_replace(const std::string& from, const std::string& to);
  void add_byte_fallback();  // "<0xNN>" -> that byte
  void add_byte_level();     // GPT-2 table characters -> bytes
  // U+2581-style replacement -> space; with strip_first the first token loses one
  // leading space (SentencePiece's dummy prefix).
  void add_metaspace(const std::string& replacement, bool strip_first);
  void add_fuse();
  // Removes up to `start` leading / `stop` trailing `content` characters. After a Fuse
  // the pieces form one string, so only the first token's start is affected; the
  // trailing part is not applied in that case (it would need the whole output).
  void add_strip(const std::string& content, int start, int stop);

  bool empty() const { return steps_.empty(); }
  // Appends the bytes of `piece`; `first` says it starts the decoded output.
  void decode_piece(std::string_view piece, bool first, std::string* out) const;

 private:
  enum class Kind { kReplace, kByteFallback, kByteLevel, kMetaspace, kStrip };
  struct Step {
    Kind kind;
    std::string a, b;
    bool strip_first = false;
    int start = 0, stop = 0;
    bool after_fuse = false;
  };
  std::vector<Step> steps_;
  bool fused_ = false;
};

}  // namespace llm
