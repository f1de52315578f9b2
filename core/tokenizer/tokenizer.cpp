#include "core/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <unordered_map>

#include "core/error.h"
#include "core/formats/gguf.h"
#include "core/tokenizer/tokenizer_impl.h"
#include "core/tokenizer/unicode.h"

namespace llm {

// Results of BPE per distinct word within one encode() call: prose repeats its words
// a lot, and a per-call cache needs no locking when encode runs on several threads.
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 64;  // longer words rarely repeat

  bool lookup(std::string_view word, std::vector<int32_t>* out) {
    key_.assign(word.data(), word.size());
    const auto it = map_.find(key_);
    if (it == map_.end()) return false;
    out->insert(out->end(), pool_.begin() + it->second.first,
                pool_.begin() + it->second.first + it->second.second);
    return true;
  }
  void store(std::string_view word, const int32_t* ids, size_t n) {
    const uint32_t at = static_cast<uint32_t>(pool_.size());
    pool_.insert(pool_.end(), ids, ids + n);
    map_.emplace(std::string(word), std::make_pair(at, static_cast<uint32_t>(n)));
  }

 private:
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>> map_;
  std::vector<int32_t> pool_;
  std::string key_;
};

namespace {

const char kMetaspace[] = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

template <class Fn>
void encode_cached(std::string_view word, WordCache* cache, std::vector<int32_t>* out, Fn fn) {
  if (word.size() > WordCache::kMaxWordBytes) {
    fn(word, out);
    return;
  }
  if (cache->lookup(word, out)) return;
  const size_t before = out->size();
  fn(word, out);
  cache->store(word, out->data() + before, out->size() - before);
}

}  // namespace

void TokenizerImpl::encode_fragment(std::string_view text, bool at_text_start, WordCache* cache,
                                    std::vector<int32_t>* out) const {
  std::string normalized;
  if (!normalizer.empty()) {
    normalized = normalizer.apply(text);
    text = normalized;
  }
  auto spm = [this](std::string_view w, std::vector<int32_t>* o) { spm_tokenize(vocab, w, o); };
  auto bpe_word = [this](std::string_view w, std::vector<int32_t>* o) {
    bpe_tokenize_word(vocab, bpe, w, o);
  };
  if (model == Model::kSpm || pre.empty()) {
    // No pre-tokenizer: the fragment is one sequence, cut in front of U+2581 when that
    // cannot change the result (pieces start at a U+2581 that follows another
    // character, never inside a run) so that repeated words hit the cache.
    auto run = [&](std::string_view piece) {
      if (model == Model::kSpm) {
        encode_cached(piece, cache, out, spm);
      } else {
        encode_cached(piece, cache, out, bpe_word);
      }
    };
    if (!metaspace_cut) {
      run(text);
      return;
    }
    size_t start = 0;
    for (size_t pos = text.find(kMetaspace, 1); pos != std::string_view::npos;
         pos = text.find(kMetaspace, pos + 3)) {
      if (pos >= 3 && text.compare(pos - 3, 3, kMetaspace) == 0) continue;
      run(text.substr(start, pos - start));
      start = pos;
    }
    run(text.substr(start));
    return;
  }
  thread_local Words words;
  pre.run(text, at_text_start, &words);
  for (size_t i = 0; i < words.spans.size(); ++i) {
    encode_cached(words.word(i), cache, out, bpe_word);
  }
}

void TokenizerImpl::append_token_bytes(int32_t id, bool skip_special, bool* first,
                                       std::string* out) const {
  if (!vocab.valid(id)) {
    if (id >= 0 && id < padded_size) return;  // a padding row of the model's embedding
    fail("token id %d is out of range (vocab size %d)", id, vocab.size());
  }
  const TokenType t = vocab.type[id];
  if (t == TokenType::kControl || t == TokenType::kUnknown || t == TokenType::kUserDefined) {
    // Added tokens are shown verbatim, not run through the decoder.
    if (skip_special && t != TokenType::kUserDefined) return;
    out->append(vocab.text[id]);
  } else {
    decoder.decode_piece(vocab.text[id], *first, out);
  }
  *first = false;
}

void TokenizerImpl::collect_eos_ids(const std::vector<int32_t>& extra) {
  // End-of-turn tokens by their text, as llama.cpp does: many configs only name the
  // EOS of the base model.
  static const char* const kEndTexts[] = {
      "<|eot_id|>", "<|im_end|>", "<|end|>",         "<end_of_turn>",      "<|endoftext|>",
      "<|eom_id|>", "<EOT>",      "<|end_of_text|>", "<end_of_utterance>", "<｜end▁of▁sentence｜>",
  };
  eos_ids.clear();
  if (eos >= 0) eos_ids.push_back(eos);
  std::vector<int32_t> rest;
  for (int32_t id : extra) {
    if (vocab.valid(id)) rest.push_back(id);
  }
  for (const char* text : kEndTexts) {
    const int32_t id = vocab.find(text);
    if (id >= 0 && vocab.type[id] == TokenType::kControl) rest.push_back(id);
  }
  std::sort(rest.begin(), rest.end());
  for (int32_t id : rest) {
    if (std::find(eos_ids.begin(), eos_ids.end(), id) == eos_ids.end()) eos_ids.push_back(id);
  }
}

void TokenizerImpl::add_typed_specials(bool rstrip_specials) {
  for (int32_t id = 0; id < vocab.size(); ++id) {
    const TokenType t = vocab.type[id];
    if (t != TokenType::kControl && t != TokenType::kUnknown && t != TokenType::kUserDefined) {
      continue;
    }
    AddedToken tok;
    tok.id = id;
    tok.text = vocab.text[id];
    tok.special = t != TokenType::kUserDefined;
    if (rstrip_specials) {
      tok.rstrip = tok.text != "<unk>" && tok.text != "<s>" && tok.text != "<|endoftext|>";
    }
    added.add(tok);
  }
}

Tokenizer::Tokenizer(std::unique_ptr<TokenizerImpl> impl) : impl_(std::move(impl)) {}

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_special,
                                       bool parse_special) const {
  const TokenizerImpl& m = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special) out.insert(out.end(), m.prefix.begin(), m.prefix.end());
  std::vector<Fragment> frags;
  if (m.added.empty()) {
    if (!text.empty()) frags.push_back(Fragment{-1, 0, text.size()});
  } else {
    m.added.partition(text, parse_special, &frags);
  }
  WordCache cache;
  const std::string_view all(text);
  for (const Fragment& f : frags) {
    if (f.token >= 0) {
      out.push_back(f.token);
    } else {
      m.encode_fragment(all.substr(f.begin, f.end - f.begin), f.begin == 0, &cache, &out);
    }
  }
  if (add_special) out.insert(out.end(), m.suffix.begin(), m.suffix.end());
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string bytes;
  bool first = true;
  for (int32_t id : ids) impl_->append_token_bytes(id, skip_special, &first, &bytes);
  return unicode::take_valid_utf8(&bytes, true);
}

std::string Tokenizer::token_bytes(int32_t id) const {
  std::string bytes;
  bool first = false;
  impl_->append_token_bytes(id, /*skip_special=*/true, &first, &bytes);
  return bytes;
}

std::string Tokenizer::token_to_piece(int32_t id) const {
  if (!impl_->vocab.valid(id)) {
    if (id >= 0 && id < impl_->padded_size) return "";
    fail("token id %d is out of range (vocab size %d)", id, impl_->vocab.size());
  }
  return impl_->vocab.text[id];
}

void Tokenizer::pad_to(int32_t model_vocab) { impl_->padded_size = model_vocab; }

int32_t Tokenizer::vocab_size() const { return impl_->vocab.size(); }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
std::vector<int32_t> Tokenizer::eos_ids() const { return impl_->eos_ids; }
const FimTokens& Tokenizer::fim_tokens() const { return impl_->fim; }
bool Tokenizer::add_bos() const { return !impl_->prefix.empty(); }
bool Tokenizer::add_eos() const { return !impl_->suffix.empty(); }
std::string Tokenizer::pre_tokenizer_name() const { return impl_->pre_name; }

bool Tokenizer::is_special(int32_t id) const {
  return impl_->vocab.valid(id) && impl_->is_special(id);
}

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& model_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(model_path);
  if (!fs::exists(p, ec)) fail("tokenizer: '%s' does not exist", model_path.c_str());
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "tokenizer.json", ec)) return from_hf_dir(model_path);
    // A native folder converted from a GGUF keeps its vocab as a vocab-only GGUF.
    if (fs::exists(p / "tokenizer.gguf", ec))
      return from_gguf(GgufFile((p / "tokenizer.gguf").string()));
    fail(
        "tokenizer: folder '%s' has no tokenizer.json (expected a Hugging Face model folder "
        "or a .gguf file)",
        model_path.c_str());
  }
  if (p.filename() == "tokenizer.json") {
    return from_hf_dir(p.has_parent_path() ? p.parent_path().string() : ".");
  }
  char magic[4] = {};
  if (FILE* f = std::fopen(model_path.c_str(), "rb")) {
    const size_t n = std::fread(magic, 1, 4, f);
    std::fclose(f);
    if (n == 4 && std::string(magic, 4) == "GGUF") {
      GgufFile gguf(model_path);
      return from_gguf(gguf);
    }
  }
  fail("tokenizer: '%s' is neither a GGUF file nor a folder with tokenizer.json",
       model_path.c_str());
}

}  // namespace llm
