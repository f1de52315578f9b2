#include "core/tokenizer/fim_tokens.h"

#include <initializer_list>

#include "core/tokenizer/vocab.h"

namespace llm {

namespace {

int32_t first_found(const Vocab& vocab, std::initializer_list<const char*> texts) {
  for (const char* t : texts) {
    const int32_t id = vocab.find(t);
    if (id >= 0) return id;
  }
  return -1;
}

}  // namespace

std::vector<int32_t> FimTokens::end_ids() const {
  std::vector<int32_t> ids;
  for (int32_t id : {pad, repo, file_sep, eot})
    if (id >= 0) ids.push_back(id);
  return ids;
}

FimTokens find_fim_tokens(const Vocab& vocab, FimTokens named) {
  FimTokens f = named;
  auto fill = [&](int32_t* id, std::initializer_list<const char*> texts) {
    if (*id < 0) *id = first_found(vocab, texts);
  };
  // "▁<PRE>": CodeLlama's GGUF files spell its markers with SentencePiece's space.
  fill(&f.prefix, {"<|fim_prefix|>", "<fim_prefix>", "<fim-prefix>", "<｜fim▁begin｜>",
                   "\xE2\x96\x81<PRE>", "<PRE>"});
  fill(&f.suffix, {"<|fim_suffix|>", "<fim_suffix>", "<fim-suffix>", "<｜fim▁hole｜>",
                   "\xE2\x96\x81<SUF>", "<SUF>"});
  fill(&f.middle, {"<|fim_middle|>", "<fim_middle>", "<fim-middle>", "<｜fim▁end｜>",
                   "\xE2\x96\x81<MID>", "<MID>"});
  fill(&f.pad, {"<|fim_pad|>", "<fim_pad>", "<fim-pad>"});
  fill(&f.repo, {"<|fim_repo|>", "<|repo_name|>", "<repo_name>", "<reponame>", "<fim-repo>"});
  fill(&f.file_sep, {"<|file_sep|>", "<file_sep>", "<fim-sep>"});
  fill(&f.eot, {"\xE2\x96\x81<EOT>", "<EOT>"});
  if (f.prefix < 0 && f.suffix < 0 && f.middle < 0) {
    // Codestral: [SUFFIX] S [PREFIX] P, and the model writes the middle.
    const int32_t pre = vocab.find("[PREFIX]"), suf = vocab.find("[SUFFIX]");
    if (pre >= 0 && suf >= 0) {
      f.prefix = pre;
      f.suffix = suf;
      f.suffix_first = true;
    }
  }
  return f;
}

}  // namespace llm
