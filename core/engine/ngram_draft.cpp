#include "core/engine/ngram_draft.h"

#include <algorithm>

namespace llm {

std::vector<int32_t> lookup_draft(const std::vector<int32_t>& tokens, int max_draft, int max_ngram,
                                  int min_ngram) {
  const int n = static_cast<int>(tokens.size());
  if (max_draft <= 0) return {};
  for (int g = std::min(max_ngram, n - 1); g >= std::max(min_ngram, 1); g--) {
    const int32_t* suffix = tokens.data() + (n - g);
    // The latest occurrence that ends before the suffix itself, newest first.
    for (int start = n - g - 1; start >= 0; start--) {
      if (!std::equal(suffix, suffix + g, tokens.data() + start)) continue;
      const int from = start + g;
      const int count = std::min(max_draft, n - from);
      return std::vector<int32_t>(tokens.begin() + from, tokens.begin() + from + count);
    }
  }
  return {};
}

}  // namespace llm
