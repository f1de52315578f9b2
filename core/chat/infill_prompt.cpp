#include "core/chat/infill_prompt.h"

#include <algorithm>

#include "core/error.h"

namespace llm {

InfillPrompt build_infill_prompt(const Tokenizer& tok, const InfillInput& in, int budget) {
  const FimTokens& f = tok.fim_tokens();
  if (!f.available())
    fail(
        "this model has no fill-in-the-middle tokens (such as <|fim_prefix|>, <fim_prefix> or "
        "<PRE>), so it cannot complete between a prefix and a suffix");
  const bool bos = tok.add_bos() && tok.bos_id() >= 0;
  const int markers = 2 + (f.middle >= 0 ? 1 : 0) + (bos ? 1 : 0);
  const int room = budget - markers;
  if (room < 0)
    fail("a fill-in-the-middle prompt needs at least %d tokens of context, %d are left", markers,
         budget);

  // Plain text on both sides of the cursor: markers written in the code stay text.
  std::vector<int32_t> prefix = tok.encode(in.prefix, false, false);
  std::vector<int32_t> suffix = tok.encode(in.suffix, false, false);
  // Other files: the repo-level layout of Qwen2.5-Coder and StarCoder2 where the model
  // has its separators, plain separator lines otherwise.
  std::vector<int32_t> extra;
  auto append = [&](const std::string& text) {
    const std::vector<int32_t> ids = tok.encode(text, false, false);
    extra.insert(extra.end(), ids.begin(), ids.end());
  };
  if (!in.extra.empty()) {
    if (f.repo >= 0) {
      extra.push_back(f.repo);
      append("project\n");
    }
    for (const InfillFile& file : in.extra) {
      if (f.file_sep >= 0) {
        extra.push_back(f.file_sep);
        append(file.name + "\n" + file.text);
      } else {
        append("\n\n--- " + file.name + " ---\n\n" + file.text);
      }
      if (file.text.empty() || file.text.back() != '\n') append("\n");
    }
    if (f.file_sep >= 0) extra.push_back(f.file_sep);
  }

  // The code nearest the cursor matters most: the prefix's end gets up to three quarters,
  // the suffix's start the rest (and the prefix what the suffix leaves), then the files.
  InfillPrompt out;
  int take_prefix = std::min<int>(static_cast<int>(prefix.size()), room * 3 / 4);
  const int take_suffix = std::min<int>(static_cast<int>(suffix.size()), room - take_prefix);
  take_prefix = std::min<int>(static_cast<int>(prefix.size()), room - take_suffix);
  const int take_extra =
      std::min<int>(static_cast<int>(extra.size()), room - take_prefix - take_suffix);
  out.prefix_tokens_dropped = static_cast<int>(prefix.size()) - take_prefix;
  out.suffix_tokens_dropped = static_cast<int>(suffix.size()) - take_suffix;
  out.extra_tokens_dropped = static_cast<int>(extra.size()) - take_extra;
  prefix.erase(prefix.begin(), prefix.begin() + out.prefix_tokens_dropped);
  suffix.resize(static_cast<size_t>(take_suffix));
  extra.erase(extra.begin(), extra.begin() + out.extra_tokens_dropped);

  std::vector<int32_t>& t = out.tokens;
  if (bos) t.push_back(tok.bos_id());
  t.insert(t.end(), extra.begin(), extra.end());
  auto part = [&](int32_t marker, const std::vector<int32_t>& ids) {
    t.push_back(marker);
    t.insert(t.end(), ids.begin(), ids.end());
  };
  if (f.suffix_first) {
    part(f.suffix, suffix);
    part(f.prefix, prefix);
  } else {
    part(f.prefix, prefix);
    part(f.suffix, suffix);
  }
  if (f.middle >= 0) t.push_back(f.middle);
  out.stop_ids = f.end_ids();
  return out;
}

}  // namespace llm
