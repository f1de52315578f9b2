// Tokenizer from GGUF metadata (tokenizer.ggml.*), following llama.cpp's reading of it.
#include <algorithm>

#include "core/error.h"
#include "core/formats/gguf.h"
#include "core/tokenizer/tokenizer.h"
#include "core/tokenizer/tokenizer_impl.h"

namespace llm {

namespace {

const char kMetaspace[] = "\xE2\x96\x81";

int32_t token_id_or(const GgufFile& f, const std::string& key, const Vocab& vocab) {
  const int64_t id = f.get_int_or(key, -1);
  // An id outside the vocab is ignored (llama.cpp warns and keeps its default).
  return id >= 0 && id < vocab.size() ? static_cast<int32_t>(id) : -1;
}

TokenType token_type_from(int64_t v) {
  return v >= 0 && v <= 6 ? static_cast<TokenType>(v) : TokenType::kUndefined;
}

std::string lowercase(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& f) {
  const std::string model = f.get_string_or("tokenizer.ggml.model", "");
  if (model.empty() || model == "none") {
    fail("GGUF '%s' has no tokenizer (tokenizer.ggml.model is %s)", f.path().c_str(),
         model.empty() ? "missing" : "'none'");
  }
  if (model != "llama" && model != "gpt2") {
    fail("GGUF '%s': unsupported tokenizer model '%s' (supported: llama, gpt2)", f.path().c_str(),
         model.c_str());
  }

  auto impl = std::make_unique<TokenizerImpl>();
  Vocab& v = impl->vocab;
  v.text = f.get_string_array("tokenizer.ggml.tokens");
  const size_t n = v.text.size();
  if (n == 0) fail("GGUF '%s': tokenizer.ggml.tokens is empty", f.path().c_str());
  if (f.find("tokenizer.ggml.scores") != nullptr) {
    v.score = f.get_float_array("tokenizer.ggml.scores");
    if (v.score.size() != n) {
      fail("GGUF '%s': %zu scores for %zu tokens", f.path().c_str(), v.score.size(), n);
    }
  }
  if (f.find("tokenizer.ggml.token_type") != nullptr) {
    const std::vector<int64_t> types = f.get_int_array("tokenizer.ggml.token_type");
    if (types.size() != n) {
      fail("GGUF '%s': %zu token types for %zu tokens", f.path().c_str(), types.size(), n);
    }
    v.type.reserve(n);
    for (int64_t t : types) v.type.push_back(token_type_from(t));
  }
  v.finalize();

  impl->bos = token_id_or(f, "tokenizer.ggml.bos_token_id", v);
  impl->eos = token_id_or(f, "tokenizer.ggml.eos_token_id", v);
  v.unk_id = token_id_or(f, "tokenizer.ggml.unknown_token_id", v);
  impl->pre_name = f.get_string_or("tokenizer.ggml.pre", "default");

  bool add_bos = false;
  if (model == "llama") {
    // SentencePiece: the text gets a leading space and spaces become U+2581.
    impl->model = TokenizerImpl::Model::kSpm;
    const bool space_prefix = f.get_int_or("tokenizer.ggml.add_space_prefix", 1) != 0;
    if (space_prefix) impl->normalizer.add_prepend(kMetaspace);
    impl->normalizer.add_replace(" ", kMetaspace, false);
    impl->decoder.add_byte_fallback();
    impl->decoder.add_metaspace(kMetaspace, space_prefix);
    impl->metaspace_cut = v.metaspace_cut_safe();
    add_bos = true;
  } else {
    impl->model = TokenizerImpl::Model::kBpe;
    const NamedPreTokenizer named = PreTokenizer::named(impl->pre_name);
    impl->pre = PreTokenizer::from_regexes(named.regexes);
    impl->bpe.byte_level = true;
    impl->bpe.ignore_merges = named.ignore_merges;
    add_bos = named.add_bos;
    const std::vector<std::string> merges = f.get_string_array("tokenizer.ggml.merges");
    v.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const std::string& m = merges[i];
      const size_t sp = m.find(' ', 1);  // a part may itself be " " in odd vocabs
      if (sp == std::string::npos) continue;
      v.add_merge(std::string_view(m).substr(0, sp), std::string_view(m).substr(sp + 1),
                  static_cast<int32_t>(i));
    }
    if (v.merges.size() == 0) {
      fail("GGUF '%s': none of the %zu merges refer to vocab tokens", f.path().c_str(),
           merges.size());
    }
    impl->decoder.add_byte_level();
  }

  add_bos = f.get_int_or("tokenizer.ggml.add_bos_token", add_bos) != 0;
  const bool add_eos = f.get_int_or("tokenizer.ggml.add_eos_token", 0) != 0;
  if (add_bos && impl->bos >= 0) impl->prefix.push_back(impl->bos);
  if (add_eos && impl->eos >= 0) impl->suffix.push_back(impl->eos);

  // Phi-3's chat tokens swallow the whitespace after them (llama.cpp does the same).
  const std::string name = lowercase(f.get_string_or("general.name", ""));
  const bool phi3 =
      name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos;
  impl->add_typed_specials(phi3);
  impl->collect_eos_ids({token_id_or(f, "tokenizer.ggml.eot_token_id", v),
                         token_id_or(f, "tokenizer.ggml.eom_token_id", v)});
  // The FIM markers llama.cpp's converter names (older files: prefix/suffix/middle).
  auto named = [&](const char* key, const char* old_key) {
    const int32_t id = token_id_or(f, std::string("tokenizer.ggml.") + key, v);
    return id >= 0 ? id : token_id_or(f, std::string("tokenizer.ggml.") + old_key, v);
  };
  FimTokens fim;
  fim.prefix = named("fim_pre_token_id", "prefix_token_id");
  fim.suffix = named("fim_suf_token_id", "suffix_token_id");
  fim.middle = named("fim_mid_token_id", "middle_token_id");
  fim.pad = named("fim_pad_token_id", "fim_pad_token_id");
  fim.repo = named("fim_rep_token_id", "fim_rep_token_id");
  fim.file_sep = named("fim_sep_token_id", "fim_sep_token_id");
  impl->fim = find_fim_tokens(v, fim);
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

}  // namespace llm
