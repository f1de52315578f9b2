// The fill-in-the-middle (FIM) control tokens of code models: the prompt shows the code
// before and after the cursor between these markers, and the model writes the middle.
#pragma once

#include <cstdint>
#include <vector>

namespace llm {

struct Vocab;

struct FimTokens {
  // PSM order (StarCoder, Qwen2.5-Coder, CodeLlama, DeepSeek-Coder, CodeGemma):
  //   prefix P suffix S middle -> the middle.
  int32_t prefix = -1, suffix = -1, middle = -1;
  // SPM order without a middle marker (Mistral's Codestral): suffix S prefix P -> the middle.
  bool suffix_first = false;
  // Repo-level context (Qwen2.5-Coder, StarCoder2): repo NAME \n, then file_sep NAME \n TEXT
  // per file. Both end an infill when the model writes them, as do pad and eot.
  int32_t repo = -1, file_sep = -1, pad = -1, eot = -1;

  bool available() const { return prefix >= 0 && suffix >= 0 && (middle >= 0 || suffix_first); }
  // Tokens that end an infill besides the tokenizer's end-of-sequence tokens.
  std::vector<int32_t> end_ids() const;
};

// Completes `named` (ids from GGUF metadata, -1 where absent) with the well-known texts of
// each marker in the vocab, as llama.cpp does for files that name none.
FimTokens find_fim_tokens(const Vocab& vocab, FimTokens named = {});

}  // namespace llm
