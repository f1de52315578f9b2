// Public tokenizer API: byte-level BPE (GPT-2 family) and SentencePiece-style BPE with
// byte fallback (Llama family), loaded from GGUF metadata or a Hugging Face
// tokenizer.json, plus streaming detokenization.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tokenizer/fim_tokens.h"

namespace llm {

class GgufFile;
struct TokenizerImpl;

class Tokenizer {
 public:
  // From tokenizer.ggml.* metadata (model "llama" or "gpt2").
  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& f);
  // From DIR/tokenizer.json (+ tokenizer_config.json, special_tokens_map.json,
  // generation_config.json when present).
  static std::unique_ptr<Tokenizer> from_hf_dir(const std::string& dir);
  // A .gguf file, a folder holding tokenizer.json, or a tokenizer.json path.
  static std::unique_ptr<Tokenizer> load(const std::string& model_path);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // add_special: prepend BOS / append EOS as the model's config says.
  // parse_special: recognise control tokens (e.g. "<|im_start|>") written in the text;
  // user-defined added tokens are always recognised, as in Hugging Face and llama.cpp.
  std::vector<int32_t> encode(const std::string& text, bool add_special = false,
                              bool parse_special = false) const;
  // Throws llm::Error naming the id when one is out of range. Invalid UTF-8 that the
  // tokens spell becomes U+FFFD.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // The raw vocab string of a token (e.g. "▁Hello", "Ġworld", "<0x0A>").
  std::string token_to_piece(int32_t id) const;
  // The bytes a token adds after other text (a leading space kept; one byte of a UTF-8
  // sequence for a byte token); empty for control tokens and padding ids.
  std::string token_bytes(int32_t id) const;

  int32_t vocab_size() const;
  // Models often pad their embedding past the tokenizer (Qwen2.5, Phi-3): ids from
  // vocab_size() up to model_vocab then decode to nothing instead of being errors.
  void pad_to(int32_t model_vocab);
  int32_t bos_id() const;  // -1 when none
  int32_t eos_id() const;  // -1 when none
  // Every token that ends generation: EOS, end-of-turn tokens, ...
  std::vector<int32_t> eos_ids() const;
  // Fill-in-the-middle markers (FimTokens::available() is false for models without).
  const FimTokens& fim_tokens() const;
  bool add_bos() const;
  bool add_eos() const;
  // Control/unknown tokens: dropped by decode(skip_special), matched only with parse_special.
  bool is_special(int32_t id) const;
  // GGUF: tokenizer.ggml.pre; tokenizer.json: a short description of its pre_tokenizer.
  std::string pre_tokenizer_name() const;

 private:
  friend class StreamDecoder;
  explicit Tokenizer(std::unique_ptr<TokenizerImpl> impl);
  std::unique_ptr<TokenizerImpl> impl_;
};

// Yields text token by token, never splitting a UTF-8 character; the concatenation of
// everything it returns equals Tokenizer::decode of the same ids.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = true);
  // The text that became complete with this token (possibly empty).
  std::string push(int32_t id);
  // Whatever remains; an unfinished character comes out as U+FFFD.
  std::string flush();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  bool first_ = true;
  std::string pending_;
};

}  // namespace llm
