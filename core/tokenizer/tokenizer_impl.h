// Internal state of a Tokenizer, filled in by the GGUF and tokenizer.json loaders.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/tokenizer/bpe.h"
#include "core/tokenizer/decoder.h"
#include "core/tokenizer/fim_tokens.h"
#include "core/tokenizer/normalizer.h"
#include "core/tokenizer/pre_tokenizer.h"
#include "core/tokenizer/special_tokens.h"
#include "core/tokenizer/vocab.h"

namespace llm {

class WordCache;

struct TokenizerImpl {
  enum class Model { kSpm, kBpe };

  Vocab vocab;
  Model model = Model::kBpe;
  BpeOptions bpe;
  // Without a pre-tokenizer: cut the text in front of U+2581 before BPE (see
  // Vocab::metaspace_cut_safe), which lets repeated words be cached.
  bool metaspace_cut = false;
  SpecialTokenMatcher added;
  Normalizer normalizer;
  PreTokenizer pre;
  Decoder decoder;
  std::vector<int32_t> prefix, suffix;  // added around the ids when add_special
  int32_t bos = -1, eos = -1;
  std::vector<int32_t> eos_ids;
  FimTokens fim;
  int32_t padded_size = 0;  // ids in [vocab.size(), padded_size) decode to nothing
  std::string pre_name;

  // Tokenizes one raw fragment (no added tokens in it).
  void encode_fragment(std::string_view text, bool at_text_start, WordCache* cache,
                       std::vector<int32_t>* out) const;
  // Appends the bytes of token `id`; `first` is true until something was output.
  void append_token_bytes(int32_t id, bool skip_special, bool* first, std::string* out) const;
  bool is_special(int32_t id) const {
    const TokenType t = vocab.type[id];
    return t == TokenType::kControl || t == TokenType::kUnknown;
  }
  // Fills eos_ids from eos, the given extra ids and well-known end-of-turn texts.
  void collect_eos_ids(const std::vector<int32_t>& extra);
  // Registers control / unknown / user-defined vocab tokens as added tokens
  // (the GGUF way; tokenizer.json lists its added tokens explicitly).
  void add_typed_specials(bool rstrip_specials);
};

}  // namespace llm
