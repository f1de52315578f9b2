// The prompt of a fill-in-the-middle request (code completion at a cursor): the code
// before and after the cursor, and optionally other files of the project, arranged with
// the model's FIM markers (core/tokenizer/fim_tokens.h) the way llama.cpp's /infill
// arranges them, cut to fit the context.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tokenizer/tokenizer.h"

namespace llm {

struct InfillFile {
  std::string name;
  std::string text;
};

struct InfillInput {
  std::string prefix;  // the text before the cursor
  std::string suffix;  // the text after it
  // Other files for context, most relevant last (the first are dropped when space runs out).
  std::vector<InfillFile> extra;
};

struct InfillPrompt {
  std::vector<int32_t> tokens;
  // Tokens that end the middle besides the tokenizer's end-of-sequence ones (FIM padding,
  // file and repo separators, CodeLlama's <EOT>).
  std::vector<int32_t> stop_ids;
  int prefix_tokens_dropped = 0;  // from the prefix's start, to fit `budget`
  int suffix_tokens_dropped = 0;  // from the suffix's end
  int extra_tokens_dropped = 0;
};

// PSM: [repo name \n] [file_sep NAME \n TEXT ...] [file_sep] [BOS] prefix P suffix S middle;
// SPM (no middle marker): suffix S prefix P. Of `budget` tokens, the prefix's end takes up
// to three quarters, the suffix's start what is left, the extra files what those two leave.
// Throws llm::Error when the model has no FIM markers or `budget` cannot hold them.
InfillPrompt build_infill_prompt(const Tokenizer& tok, const InfillInput& in, int budget);

}  // namespace llm
