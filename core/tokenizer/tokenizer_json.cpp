// Tokenizer from a Hugging Face folder: tokenizer.json (the `tokenizers` library's
// format) plus tokenizer_config.json / special_tokens_map.json / generation_config.json.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/tokenizer/tokenizer.h"
#include "core/tokenizer/tokenizer_impl.h"

namespace llm {

namespace {

using json = nlohmann::json;

bool read_json(const std::string& path, json* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    *out = json::parse(ss.str());
  } catch (const json::parse_error& e) {
    fail("%s: invalid JSON: %s", path.c_str(), e.what());
  }
  return true;
}

std::string str_or(const json& j, const char* key, const std::string& def) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : def;
}

bool bool_or(const json& j, const char* key, bool def) {
  const auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : def;
}

// A token named in tokenizer_config.json: a string or {"content": ...}.
std::string token_content(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object()) return str_or(j, "content", "");
  return "";
}

// A Split / Replace pattern: {"String": s} or {"Regex": r}.
std::string pattern_regex(const json& p, bool* is_regex) {
  if (p.contains("Regex")) {
    *is_regex = true;
    return p["Regex"].get<std::string>();
  }
  *is_regex = false;
  return p.at("String").get<std::string>();
}

SplitBehavior parse_behavior(const std::string& b, const std::string& file) {
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  fail("%s: unknown split behavior '%s'", file.c_str(), b.c_str());
}

PrependScheme parse_prepend_scheme(const json& j) {
  if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
    const std::string s = j["prepend_scheme"].get<std::string>();
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    return PrependScheme::kAlways;
  }
  // Older files: add_prefix_space alone.
  return bool_or(j, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

std::string metaspace_replacement(const json& j) {
  return str_or(j, "replacement", "\xE2\x96\x81");
}

class JsonLoader {
 public:
  JsonLoader(const std::string& file, TokenizerImpl* impl) : file_(file), impl_(impl) {}

  void normalizer(const json& j) {
    if (j.is_null()) return;
    const std::string type = str_or(j, "type", "");
    if (type == "Sequence") {
      for (const json& n : j.at("normalizers")) normalizer(n);
    } else if (type == "Prepend") {
      impl_->normalizer.add_prepend(j.at("prepend").get<std::string>());
    } else if (type == "Replace") {
      bool is_regex = false;
      const std::string pat = pattern_regex(j.at("pattern"), &is_regex);
      impl_->normalizer.add_replace(pat, j.at("content").get<std::string>(), is_regex);
    } else if (type == "Strip") {
      impl_->normalizer.add_strip(bool_or(j, "strip_left", true), bool_or(j, "strip_right", true));
    } else if (type == "Lowercase") {
      impl_->normalizer.add_lowercase();
    } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD" ||
               type == "Nmt" || type == "Precompiled") {
      // Unicode normalisation needs tables we do not carry; text that is already in
      // that form (almost all real input, and all ASCII) is unchanged by it.
    } else if (type == "ByteLevel") {
      impl_->bpe.byte_level = true;
    } else {
      fail("%s: unsupported normalizer '%s'", file_.c_str(), type.c_str());
    }
  }

  void pre_tokenizer(const json& j) {
    if (j.is_null()) return;
    const std::string type = str_or(j, "type", "");
    describe(type);
    PreTokenizer& pre = impl_->pre;
    if (type == "Sequence") {
      for (const json& p : j.at("pretokenizers")) pre_tokenizer(p);
    } else if (type == "Split") {
      bool is_regex = false;
      std::string pat = pattern_regex(j.at("pattern"), &is_regex);
      if (!is_regex) pat = Regex::escape(pat);
      pre.add_split(pat, parse_behavior(str_or(j, "behavior", "Isolated"), file_),
                    bool_or(j, "invert", false));
    } else if (type == "ByteLevel") {
      pre.add_byte_level(bool_or(j, "add_prefix_space", false), bool_or(j, "use_regex", true));
      impl_->bpe.byte_level = true;
    } else if (type == "Metaspace") {
      pre.add_metaspace(metaspace_replacement(j), parse_prepend_scheme(j),
                        bool_or(j, "split", true));
    } else if (type == "Digits") {
      pre.add_digits(bool_or(j, "individual_digits", false));
    } else if (type == "Whitespace") {
      pre.add_whitespace();
    } else if (type == "WhitespaceSplit") {
      pre.add_whitespace_split();
    } else if (type == "Punctuation") {
      pre.add_punctuation(parse_behavior(str_or(j, "behavior", "Isolated"), file_));
    } else if (type == "BertPreTokenizer") {
      pre.add_whitespace_split();
      pre.add_punctuation(SplitBehavior::kIsolated);
    } else {
      fail("%s: unsupported pre_tokenizer '%s'", file_.c_str(), type.c_str());
    }
  }

  void decoder(const json& j) {
    if (j.is_null()) return;
    const std::string type = str_or(j, "type", "");
    Decoder& d = impl_->decoder;
    if (type == "Sequence") {
      for (const json& x : j.at("decoders")) decoder(x);
    } else if (type == "ByteLevel") {
      d.add_byte_level();
    } else if (type == "Metaspace") {
      d.add_metaspace(metaspace_replacement(j), parse_prepend_scheme(j) != PrependScheme::kNever);
    } else if (type == "ByteFallback") {
      d.add_byte_fallback();
    } else if (type == "Fuse") {
      d.add_fuse();
    } else if (type == "Strip") {
      d.add_strip(str_or(j, "content", " "), j.value("start", 0), j.value("stop", 0));
    } else if (type == "Replace") {
      bool is_regex = false;
      const std::string pat = pattern_regex(j.at("pattern"), &is_regex);
      if (is_regex) fail("%s: regex Replace decoders are not supported", file_.c_str());
      d.add_replace(pat, j.at("content").get<std::string>());
    } else {
      fail("%s: unsupported decoder '%s'", file_.c_str(), type.c_str());
    }
  }

  // Fills prefix/suffix from the post-processor's single-sequence template.
  void post_processor(const json& j) {
    if (j.is_null()) return;
    const std::string type = str_or(j, "type", "");
    if (type == "Sequence") {
      for (const json& p : j.at("processors")) post_processor(p);
    } else if (type == "TemplateProcessing") {
      bool after = false;
      for (const json& item : j.at("single")) {
        if (item.contains("Sequence")) {
          after = true;
          continue;
        }
        if (!item.contains("SpecialToken")) continue;
        const std::string name = item["SpecialToken"].at("id").get<std::string>();
        std::vector<int32_t> ids;
        const json& specials = j.value("special_tokens", json::object());
        if (specials.contains(name)) {
          for (const json& id : specials[name].at("ids")) ids.push_back(id.get<int32_t>());
        } else if (impl_->vocab.find(name) >= 0) {
          ids.push_back(impl_->vocab.find(name));
        }
        auto& dst = after ? impl_->suffix : impl_->prefix;
        dst.insert(dst.end(), ids.begin(), ids.end());
      }
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
      impl_->prefix.push_back(j.at("cls").at(1).get<int32_t>());
      impl_->suffix.push_back(j.at("sep").at(1).get<int32_t>());
    } else if (type == "ByteLevel") {
      // Offsets only.
    } else {
      fail("%s: unsupported post_processor '%s'", file_.c_str(), type.c_str());
    }
  }

  std::string description() const { return desc_.empty() ? "none" : desc_; }

 private:
  void describe(const std::string& type) {
    if (type == "Sequence") return;
    desc_ += (desc_.empty() ? "" : "+") + type;
  }

  std::string file_;
  TokenizerImpl* impl_;
  std::string desc_;
};

void load_vocab(const json& model, const json& added, const std::string& file, Vocab* v) {
  const bool byte_fallback = bool_or(model, "byte_fallback", false);
  const json& vocab = model.at("vocab");
  if (!vocab.is_object()) fail("%s: model.vocab is not an object", file.c_str());
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    max_id = std::max<int64_t>(max_id, it.value().get<int64_t>());
  }
  for (const json& a : added) max_id = std::max<int64_t>(max_id, a.at("id").get<int64_t>());
  if (max_id < 0) fail("%s: empty vocabulary", file.c_str());
  if (max_id > (1 << 26))
    fail("%s: token id %lld is implausibly large", file.c_str(), static_cast<long long>(max_id));
  v->text.assign(max_id + 1, std::string());
  v->type.assign(max_id + 1, TokenType::kUnused);  // ids nobody names stay unused
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int64_t id = it.value().get<int64_t>();
    if (id < 0) fail("%s: negative token id for '%s'", file.c_str(), it.key().c_str());
    v->text[id] = it.key();
    v->type[id] =
        byte_fallback && parse_byte_token(it.key()) >= 0 ? TokenType::kByte : TokenType::kNormal;
  }
  for (const json& a : added) {
    const int64_t id = a.at("id").get<int64_t>();
    if (id < 0) fail("%s: negative added token id", file.c_str());
    v->text[id] = a.at("content").get<std::string>();
    v->type[id] = bool_or(a, "special", false) ? TokenType::kControl : TokenType::kUserDefined;
  }
  v->finalize();
}

int32_t id_of(const Vocab& v, const std::string& text) { return text.empty() ? -1 : v.find(text); }

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_hf_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string file = (fs::path(dir) / "tokenizer.json").string();
  json j;
  if (!read_json(file, &j)) fail("no tokenizer.json in '%s'", dir.c_str());
  json config = json::object(), special_map = json::object(), gen = json::object();
  read_json((fs::path(dir) / "tokenizer_config.json").string(), &config);
  read_json((fs::path(dir) / "special_tokens_map.json").string(), &special_map);
  read_json((fs::path(dir) / "generation_config.json").string(), &gen);

  auto impl = std::make_unique<TokenizerImpl>();
  try {
    const json& model = j.at("model");
    const std::string type = str_or(model, "type", model.contains("merges") ? "BPE" : "");
    if (type != "BPE") {
      fail("%s: unsupported tokenizer model type '%s' (only BPE is supported)", file.c_str(),
           type.c_str());
    }
    if (!str_or(model, "continuing_subword_prefix", "").empty() ||
        !str_or(model, "end_of_word_suffix", "").empty()) {
      fail("%s: BPE subword prefixes/suffixes are not supported", file.c_str());
    }
    const json added = j.value("added_tokens", json::array());
    Vocab& v = impl->vocab;
    load_vocab(model, added, file, &v);
    v.unk_id = id_of(v, str_or(model, "unk_token", ""));
    impl->model = TokenizerImpl::Model::kBpe;
    impl->bpe.byte_fallback = bool_or(model, "byte_fallback", false);
    impl->bpe.ignore_merges = bool_or(model, "ignore_merges", false);
    impl->bpe.fuse_unk = bool_or(model, "fuse_unk", false);

    const json& merges = model.value("merges", json::array());
    v.merges.reserve(merges.size());
    int32_t rank = 0;
    for (const json& m : merges) {
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ', 1);
        if (sp != std::string::npos) {
          v.add_merge(std::string_view(s).substr(0, sp), std::string_view(s).substr(sp + 1), rank);
        }
      } else if (m.is_array() && m.size() == 2) {
        v.add_merge(m[0].get<std::string>(), m[1].get<std::string>(), rank);
      }
      ++rank;
    }

    JsonLoader loader(file, impl.get());
    loader.normalizer(j.value("normalizer", json()));
    loader.pre_tokenizer(j.value("pre_tokenizer", json()));
    loader.decoder(j.value("decoder", json()));
    loader.post_processor(j.value("post_processor", json()));
    impl->pre_name = loader.description();
    impl->metaspace_cut = impl->pre.empty() && !impl->bpe.byte_level && v.metaspace_cut_safe();

    for (const json& a : added) {
      AddedToken tok;
      tok.id = a.at("id").get<int32_t>();
      tok.text = a.at("content").get<std::string>();
      tok.special = bool_or(a, "special", false);
      tok.lstrip = bool_or(a, "lstrip", false);
      tok.rstrip = bool_or(a, "rstrip", false);
      tok.single_word = bool_or(a, "single_word", false);
      impl->added.add(tok);
    }

    // Special ids: tokenizer_config.json, then special_tokens_map.json, then
    // generation_config.json.
    auto named_id = [&](const char* key) {
      int32_t id = config.contains(key) ? id_of(v, token_content(config[key])) : -1;
      if (id < 0 && special_map.contains(key)) id = id_of(v, token_content(special_map[key]));
      return id;
    };
    auto gen_ids = [&](const char* key) {
      std::vector<int32_t> ids;
      if (!gen.contains(key)) return ids;
      const json& g = gen[key];
      if (g.is_number_integer()) ids.push_back(g.get<int32_t>());
      if (g.is_array()) {
        for (const json& x : g) {
          if (x.is_number_integer()) ids.push_back(x.get<int32_t>());
        }
      }
      return ids;
    };
    impl->bos = named_id("bos_token");
    impl->eos = named_id("eos_token");
    const std::vector<int32_t> gen_bos = gen_ids("bos_token_id");
    const std::vector<int32_t> gen_eos = gen_ids("eos_token_id");
    if (impl->bos < 0 && !gen_bos.empty() && v.valid(gen_bos[0])) impl->bos = gen_bos[0];
    if (impl->eos < 0 && !gen_eos.empty() && v.valid(gen_eos[0])) impl->eos = gen_eos[0];
    if (impl->bos < 0 && impl->prefix.size() == 1) impl->bos = impl->prefix[0];
    if (v.unk_id < 0) v.unk_id = named_id("unk_token");

    // An explicit add_bos_token / add_eos_token wins over the post-processor (that is
    // how transformers' Llama tokenizers rebuild their template).
    if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) {
      impl->prefix.clear();
      if (config["add_bos_token"].get<bool>() && impl->bos >= 0) impl->prefix.push_back(impl->bos);
    }
    if (config.contains("add_eos_token") && config["add_eos_token"].is_boolean()) {
      impl->suffix.clear();
      if (config["add_eos_token"].get<bool>() && impl->eos >= 0) impl->suffix.push_back(impl->eos);
    }
    for (const auto* ids : {&impl->prefix, &impl->suffix}) {
      for (int32_t id : *ids) {
        if (!v.valid(id)) fail("%s: post_processor names out-of-range id %d", file.c_str(), id);
      }
    }
    impl->collect_eos_ids(gen_eos);
    impl->fim = find_fim_tokens(v);
  } catch (const json::exception& e) {
    fail("%s: unexpected structure: %s", file.c_str(), e.what());
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

}  // namespace llm
