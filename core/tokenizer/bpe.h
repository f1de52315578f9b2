// The two BPE algorithms. Both append token ids for one piece of text to *out.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "core/tokenizer/vocab.h"

namespace llm {

// SentencePiece-style BPE (llama.cpp's llm_tokenizer_spm): start from UTF-8 characters,
// repeatedly join the adjacent pair whose concatenation is the vocab piece with the
// highest score (leftmost on ties); pieces left that are not tokens fall back to
// <0xNN> byte tokens (or <unk> when the vocab has none). `text` is already escaped
// (spaces as U+2581).
void spm_tokenize(const Vocab& vocab, std::string_view text, std::vector<int32_t>* out);

struct BpeOptions {
  bool byte_level = false;     // symbols are bytes mapped through GPT-2's table
  bool byte_fallback = false;  // unknown characters become <0xNN> tokens
  bool ignore_merges = false;  // a word that is itself a token is not split
  bool fuse_unk = false;       // consecutive unknown characters give one <unk>
};

// Merge-rank BPE on one pre-tokenized word (GPT-2 / Hugging Face BPE): repeatedly
// apply the lowest-rank merge among adjacent symbols, leftmost on ties.
void bpe_tokenize_word(const Vocab& vocab, const BpeOptions& opt, std::string_view word,
                       std::vector<int32_t>* out);

}  // namespace llm
