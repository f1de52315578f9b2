// Prompt-lookup drafts for speculative decoding: the tokens that followed the last
// earlier occurrence of a sequence's latest n-gram (code being edited, a document being
// quoted or a loop repeat their text, so the model's next tokens often are those). The
// step then checks the draft in one pass and keeps the tokens the model agrees with.
#pragma once

#include <cstdint>
#include <vector>

namespace llm {

// Up to max_draft tokens that followed the latest earlier occurrence of the longest
// suffix of tokens of max_ngram down to min_ngram tokens; empty when none occurs.
std::vector<int32_t> lookup_draft(const std::vector<int32_t>& tokens, int max_draft,
                                  int max_ngram = 3, int min_ngram = 1);

}  // namespace llm
