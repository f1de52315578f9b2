#include "core/tokenizer/pre_tokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "core/tokenizer/normalizer.h"

namespace llm {

const char* PreTokenizer::gpt2_regex() {
  return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
}

void PreTokenizer::add_split(const std::string& regex, SplitBehavior behavior, bool invert) {
  Step s;
  s.kind = Kind::kSplit;
  s.regex = std::make_shared<Regex>(regex);
  s.behavior = behavior;
  s.invert = invert;
  steps_.push_back(std::move(s));
}

void PreTokenizer::add_byte_level(bool add_prefix_space, bool use_regex) {
  if (add_prefix_space) {
    Step s;
    s.kind = Kind::kByteLevelPrefix;
    steps_.push_back(std::move(s));
  }
  if (use_regex) add_split(gpt2_regex(), SplitBehavior::kIsolated, false);
}

void PreTokenizer::add_metaspace(const std::string& replacement, PrependScheme scheme, bool split) {
  Step s;
  s.kind = Kind::kMetaspace;
  s.replacement = replacement;
  s.scheme = scheme;
  s.split = split;
  if (split) s.regex = std::make_shared<Regex>(Regex::escape(replacement));
  steps_.push_back(std::move(s));
}

void PreTokenizer::add_digits(bool individual) {
  add_split(individual ? "\\p{N}" : "\\p{N}+", SplitBehavior::kIsolated, false);
}

void PreTokenizer::add_whitespace() { add_split("\\w+|[^\\w\\s]+", SplitBehavior::kRemoved, true); }

void PreTokenizer::add_whitespace_split() { add_split("\\s+", SplitBehavior::kRemoved, false); }

void PreTokenizer::add_punctuation(SplitBehavior behavior) {
  // HF's is_punctuation: Unicode P* plus every ASCII punctuation/symbol character.
  add_split("[\\p{P}!-/:-@\\[-`{-~]", behavior, false);
}

PreTokenizer PreTokenizer::from_regexes(const std::vector<std::string>& regexes) {
  PreTokenizer p;
  for (const std::string& re : regexes) p.add_split(re, SplitBehavior::kIsolated, false);
  return p;
}

void PreTokenizer::split_span(const Step& step, const std::string& text, uint32_t begin,
                              uint32_t end, std::vector<std::pair<uint32_t, uint32_t>>* out) {
  thread_local std::vector<std::pair<size_t, size_t>> hits;
  hits.clear();
  step.regex->find_all(std::string_view(text).substr(begin, end - begin), &hits);

  // Segments covering [begin, end): matches (possibly empty) and the gaps between them.
  struct Seg {
    uint32_t b, e;
    bool match;
  };
  thread_local std::vector<Seg> segs;
  segs.clear();
  uint32_t prev = begin;
  for (const auto& [hb, he] : hits) {
    const uint32_t mb = begin + static_cast<uint32_t>(hb);
    const uint32_t me = begin + static_cast<uint32_t>(he);
    if (mb > prev) segs.push_back({prev, mb, false});
    segs.push_back({mb, me, true});
    prev = me;
  }
  if (end > prev) segs.push_back({prev, end, false});
  if (step.invert) {
    for (Seg& s : segs) s.match = !s.match;
  }

  thread_local std::vector<Seg> merged;
  merged.clear();
  switch (step.behavior) {
    case SplitBehavior::kRemoved:
      for (const Seg& s : segs) {
        if (!s.match) merged.push_back(s);
      }
      break;
    case SplitBehavior::kIsolated:
      merged = segs;
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const Seg& s : segs) {
        if (s.match && !prev_match && !merged.empty()) {
          merged.back().e = s.e;
        } else {
          merged.push_back(s);
        }
        prev_match = s.match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev_match = false;  // walking right to left: "previous" is the one after
      for (size_t i = segs.size(); i-- > 0;) {
        const Seg& s = segs[i];
        if (s.match && !prev_match && !merged.empty()) {
          merged.back().b = s.b;
        } else {
          merged.push_back(s);
        }
        prev_match = s.match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool prev_match = false;
      for (const Seg& s : segs) {
        if (s.match == prev_match && !merged.empty()) {
          merged.back().e = s.e;
        } else {
          merged.push_back(s);
        }
        prev_match = s.match;
      }
      break;
    }
  }
  for (const Seg& s : merged) {
    if (s.e > s.b) out->emplace_back(s.b, s.e);  // empty pieces vanish, as in HF
  }
}

void PreTokenizer::run(std::string_view text, bool at_text_start, Words* out) const {
  out->text.assign(text.data(), text.size());
  out->spans.clear();
  if (!text.empty()) out->spans.emplace_back(0, static_cast<uint32_t>(text.size()));
  // Whether spans[0] still starts at offset 0 of the input (Metaspace "first").
  bool first_at_origin = at_text_start;
  std::vector<std::pair<uint32_t, uint32_t>> next;
  for (const Step& step : steps_) {
    next.clear();
    if (step.kind == Kind::kSplit) {
      const bool had_origin = first_at_origin && !out->spans.empty() && out->spans[0].first == 0;
      for (const auto& [b, e] : out->spans) split_span(step, out->text, b, e, &next);
      first_at_origin = had_origin && !next.empty() && next[0].first == 0;
      out->spans.swap(next);
      continue;
    }
    // The other steps rewrite each word, so they rebuild the buffer.
    std::string text2;
    text2.reserve(out->text.size() + out->spans.size());
    for (size_t i = 0; i < out->spans.size(); ++i) {
      const std::string_view w = out->word(i);
      const uint32_t b = static_cast<uint32_t>(text2.size());
      if (step.kind == Kind::kByteLevelPrefix) {
        if (w.empty() || w[0] != ' ') text2.push_back(' ');
        text2.append(w);
      } else {  // Metaspace
        std::string r = replace_all(w, " ", step.replacement);
        const bool starts = r.compare(0, step.replacement.size(), step.replacement) == 0;
        const bool prepend =
            !starts && (step.scheme == PrependScheme::kAlways ||
                        (step.scheme == PrependScheme::kFirst && i == 0 && first_at_origin));
        if (prepend) text2.append(step.replacement);
        text2.append(r);
      }
      next.emplace_back(b, static_cast<uint32_t>(text2.size()));
    }
    out->text.swap(text2);
    out->spans.swap(next);
    if (step.kind == Kind::kMetaspace && step.split) {
      Step cut;
      cut.regex = step.regex;
      cut.behavior = SplitBehavior::kMergedWithNext;
      next.clear();
      for (const auto& [b, e] : out->spans) split_span(cut, out->text, b, e, &next);
      out->spans.swap(next);
    }
  }
}

namespace {

// llama.cpp's regex lists (most are the Split patterns of the models' tokenizer.json;
// PCRE2 runs the originals, so no rewrites for std::regex are needed).
const char kGpt2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const char kLlama3[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char kQwen2[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// Cased letters (Lu/Ll/Lt) as DeepSeek lists them; written as escapes because several
// of its characters are NFC singletons that editors silently rewrite.
const char kDeepseekLetters[] =
    "\\s?[\\x{0041}-\\x{005A}\\x{0061}-\\x{007A}\\x{00B5}\\x{00C0}-\\x{00D6}"
    "\\x{00D8}-\\x{00F6}\\x{00F8}-\\x{01BA}\\x{01BC}-\\x{01BF}\\x{01C4}-\\x{0293}"
    "\\x{0295}-\\x{02AF}\\x{0370}-\\x{0373}\\x{0376}\\x{0377}\\x{037B}-\\x{037D}\\x{037F}"
    "\\x{0386}\\x{0388}-\\x{038A}\\x{038C}\\x{038E}-\\x{03A1}\\x{03A3}-\\x{03F5}"
    "\\x{03F7}-\\x{0481}\\x{048A}-\\x{052F}\\x{0531}-\\x{0556}\\x{10A0}-\\x{10C5}"
    "\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}"
    "\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}"
    "\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}"
    "\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}"
    "\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}"
    "\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}"
    "\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}"
    "\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}"
    "\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}"
    "\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}"
    "\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}"
    "\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}"
    "\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+";
const char kCjk[] = "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+";
const char kTekken[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char kGpt4o[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// Not whitespace nor one of ( | ) . , ! ? … 。 ， 、 । ۔ ، (the class is literal).
const char kPoro[] =
    " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{0964}\\x{06D4}\\x{060C})]+";
// ASCII punctuation and their full-width forms, curly quotes, CJK space and stops.
const char kDeepseekPunct[] =
    "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}"
    "\\x{3000}-\\x{3002}]+";

struct NameEntry {
  std::vector<const char*> names;
  std::vector<const char*> regexes;
  bool ignore_merges;
  bool add_bos;
};

const std::vector<NameEntry>& name_table() {
  // clang-format off
  static const std::vector<NameEntry> table = {
      {{"default"},
       {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"},
       false, false},
      {{"gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "jina-es", "jina-de", "gigachat",
        "jina-v1-en", "jina-v2-es", "jina-v2-de", "jina-v2-code", "roberta-bpe", "exaone4",
        "a.x-4.0", "mellum", "granite-docling"},
       {kGpt2}, false, false},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"},
       {kLlama3}, true, true},
      {{"dbrx", "smaug-bpe", "chatglm-bpe", "glm4"}, {kLlama3}, false, false},
      {{"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "hunyuan", "grok-2", "kormo"},
       {kQwen2}, false, false},
      {{"deepseek-llm"},
       {"[\\r\\n]", kDeepseekLetters, kDeepseekPunct, "\\s+$", kCjk, "\\p{N}+"},
       false, false},
      {{"deepseek-coder"},
       {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", kCjk, "\\p{N}"}, false, false},
      {{"deepseek-v3", "hunyuan-dense"},
       {"\\p{N}{1,3}", "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?"
        "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
       false, false},
      {{"falcon"}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2, "[0-9][0-9][0-9]"}, false, false},
      {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b",
        "minerva"},
       {"\\p{N}", kGpt2}, false, false},
      {{"poro-chat", "bloom", "gpt3-finnish"}, {kPoro}, false, false},
      {{"viking"}, {kPoro, "\\p{N}"}, false, false},
      {{"tekken"}, {kTekken}, true, true},
      {{"gpt-4o", "llama4", "minimax-m2"}, {kGpt4o}, false, false},
      {{"chameleon"},
       {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
        "[\\p{P}!-/:-@\\[-`{-~]", kGpt2},
       false, true},
      {{"superbpe"}, {"\\p{N}+", "(?=(\\d{3})+(?!\\d))"}, false, false},
      {{"bailingmoe", "bailingmoe2", "llada-moe"},
       {"'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}|"
        " ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
       false, false},
      {{"seed-coder"},
       {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}|"
        " ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
       false, false},
  };
  // clang-format on
  return table;
}

}  // namespace

std::vector<std::string> PreTokenizer::known_names() {
  std::vector<std::string> names;
  for (const NameEntry& e : name_table()) {
    for (const char* n : e.names) names.emplace_back(n);
  }
  return names;
}

NamedPreTokenizer PreTokenizer::named(const std::string& name) {
  for (const NameEntry& e : name_table()) {
    for (const char* n : e.names) {
      if (name != n) continue;
      NamedPreTokenizer out;
      out.regexes.assign(e.regexes.begin(), e.regexes.end());
      out.ignore_merges = e.ignore_merges;
      out.add_bos = e.add_bos;
      return out;
    }
  }
  std::string list;
  for (const std::string& n : known_names()) list += (list.empty() ? "" : ", ") + n;
  fail("unknown pre-tokenizer '%s' (known: %s)", name.c_str(), list.c_str());
}

}  // namespace llm
