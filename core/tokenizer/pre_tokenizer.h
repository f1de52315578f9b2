// Pre-tokenization: cutting a normalised fragment into words that BPE handles one at a
// time. Built either from tokenizer.json's "pre_tokenizer" or from a llama.cpp
// pre-tokenizer name (GGUF tokenizer.ggml.pre), which stands for a list of regexes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tokenizer/regex.h"

namespace llm {

// What happens to the pieces a Split pattern matches (Hugging Face's names).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// When Metaspace puts the replacement character in front of a word.
enum class PrependScheme { kAlways, kFirst, kNever };

// Words as byte ranges of one buffer (no string per word).
struct Words {
  std::string text;
  std::vector<std::pair<uint32_t, uint32_t>> spans;  // [begin, end) into text
  std::string_view word(size_t i) const {
    return std::string_view(text).substr(spans[i].first, spans[i].second - spans[i].first);
  }
};

// Settings a llama.cpp pre-tokenizer name implies besides its regexes.
struct NamedPreTokenizer {
  std::vector<std::string> regexes;
  bool ignore_merges = false;  // whole words found in the vocab skip BPE (llama3, tekken)
  bool add_bos = false;        // default for tokenizer.ggml.add_bos_token
};

class PreTokenizer {
 public:
  void add_split(const std::string& regex, SplitBehavior behavior, bool invert);
  // GPT-2's ByteLevel: optional leading space, optional split with the GPT-2 regex.
  // (The byte -> unicode mapping itself is done by the BPE model.)
  void add_byte_level(bool add_prefix_space, bool use_regex);
  void add_metaspace(const std::string& replacement, PrependScheme scheme, bool split);
  void add_digits(bool individual);
  void add_whitespace();        // HF Whitespace: \w+ and runs of other non-space chars
  void add_whitespace_split();  // HF WhitespaceSplit: cut on whitespace, dropped
  void add_punctuation(SplitBehavior behavior);

  bool empty() const { return steps_.empty(); }
  // Cuts `text` into words. `at_text_start` says the fragment begins the input
  // (Metaspace's "first" scheme only prepends there).
  void run(std::string_view text, bool at_text_start, Words* out) const;

  // The regex list and flags for a llama.cpp name; throws llm::Error listing the
  // known names when `name` is not one of them.
  static NamedPreTokenizer named(const std::string& name);
  static std::vector<std::string> known_names();
  static PreTokenizer from_regexes(const std::vector<std::string>& regexes);

  // The GPT-2 regex (Hugging Face ByteLevel's).
  static const char* gpt2_regex();

 private:
  enum class Kind { kSplit, kByteLevelPrefix, kMetaspace };
  struct Step {
    Kind kind = Kind::kSplit;
    std::shared_ptr<Regex> regex;
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    std::string replacement;  // Metaspace
    PrependScheme scheme = PrependScheme::kAlways;
    bool split = false;
  };
  static void split_span(const Step& step, const std::string& text, uint32_t begin, uint32_t end,
                         std::vector<std::pair<uint32_t, uint32_t>>* out);
  std::vector<Step> steps_;
};

}  // namespace llm
