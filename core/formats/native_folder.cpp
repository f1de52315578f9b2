#include "core/formats/native_folder.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "core/chat/conv_templates.h"
#include "core/error.h"
#include "core/formats/atomic_file.h"
#include "core/formats/gguf_model.h"
#include "core/formats/parallel_rows.h"
#include "core/formats/quantize.h"
#include "core/path_util.h"
#include "core/tokenizer/tokenizer.h"

namespace llm {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

namespace {

const char kIndexName[] = "model.safetensors.index.json";
const char kTokenizerGguf[] = "tokenizer.gguf";
// What a Hugging Face folder may carry for its tokenizer (MLC copies the same set);
// generation_config.json too, since Tokenizer::from_hf_dir reads its EOS ids.
const char* const kTokenizerFiles[] = {
    "tokenizer.json",  "tokenizer_config.json",  "special_tokens_map.json",
    "tokenizer.model", "added_tokens.json",      "vocab.json",
    "merges.txt",      "generation_config.json",
};

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '%s': %s", path.c_str(), std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("cannot read '%s'", path.c_str());
  return ss.str();
}

// Writes beside the target and renames, so a reader never sees half a file.
void write_text(const std::string& path, const std::string& text) {
  write_file_atomic(path, [&](std::ostream& out) { out << text; });
}

json parse_json_file(const std::string& path) {
  try {
    return json::parse(read_text(path));
  } catch (const json::parse_error& e) {
    fail("%s: invalid JSON: %s", path.c_str(), e.what());
  }
}

// A float as the double with its shortest decimal form, so JSON shows 1e-05 and 0.7
// rather than 9.999999747378752e-06 and 0.699999988079071 (and reads back exactly).
double json_float(float f) {
  char buf[32];
  for (int prec = 6; prec <= 9; prec++) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, f);
    if (std::strtof(buf, nullptr) == f) break;
  }
  return std::strtod(buf, nullptr);
}

std::vector<double> json_floats(const std::vector<float>& v) {
  std::vector<double> out;
  for (float f : v) out.push_back(json_float(f));
  return out;
}

// ---- llm-config.json fields -------------------------------------------------

struct Fields {
  const json& j;
  const std::string& file;

  const json* find(const char* key) const {
    const auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  [[noreturn]] void bad(const char* key, const char* what) const {
    fail("%s: field '%s' must be %s", file.c_str(), key, what);
  }
  const json& require(const char* key) const {
    const json* v = find(key);
    if (v == nullptr) fail("%s: missing field '%s'", file.c_str(), key);
    return *v;
  }
  std::string str(const char* key, const std::string& def, bool required = false) const {
    const json* v = required ? &require(key) : find(key);
    if (v == nullptr) return def;
    if (!v->is_string()) bad(key, "a string");
    return v->get<std::string>();
  }
  int integer(const char* key, int def, int min) const {
    const json* v = find(key);
    if (v == nullptr) return def;
    if (!v->is_number_integer() || v->get<int64_t>() < min || v->get<int64_t>() > INT32_MAX)
      bad(key, min == 0  ? "a non-negative integer"
               : min > 0 ? "a positive integer"
                         : "an integer >= -1");
    return static_cast<int>(v->get<int64_t>());
  }
  // A number in [lo, hi] (`what` says the range in the error), def when missing.
  float number(const char* key, float def, double lo, double hi, const char* what) const {
    const json* v = find(key);
    if (v == nullptr) return def;
    if (!v->is_number() || !(v->get<double>() >= lo && v->get<double>() <= hi)) bad(key, what);
    return static_cast<float>(v->get<double>());
  }
};

// ---- sources ----------------------------------------------------------------

// A model to convert or describe, whatever its format.
struct Source {
  std::string path;
  std::string kind;         // "hf", "gguf", "native"
  ModelConfig cfg;          // Q/K rows in Hugging Face order (GGUF llama ones get unpermuted)
  std::string config_json;  // model_config for llm-config.json
  std::shared_ptr<const GgufFile> gguf;
  bool unpermute_qk = false;
  NativeConfig native;
};

Source open_source(const std::string& src) {
  std::error_code ec;
  if (!fs::exists(src, ec)) fail("model path '%s' does not exist", src.c_str());
  Source s;
  s.path = src;
  if (is_dir(src) && is_native_folder(src)) {
    s.kind = "native";
    s.native = read_native_config(src);
    s.cfg = s.native.model;
    s.config_json = s.native.model_config_json;
  } else if (is_dir(src)) {
    s.kind = "hf";
    const std::string path = (fs::path(src) / "config.json").string();
    if (!fs::is_regular_file(path, ec)) fail("no config.json in '%s'", src.c_str());
    s.config_json = read_text(path);
    s.cfg = parse_hf_config(s.config_json);
    s.config_json = json::parse(s.config_json).dump();  // compact; parse_hf_config checked it
  } else if (src.size() > 5 && src.compare(src.size() - 5, 5, ".gguf") == 0) {
    s.kind = "gguf";
    s.gguf = std::make_shared<const GgufFile>(src);
    s.cfg = config_from_gguf(*s.gguf);
    s.unpermute_qk = s.cfg.rope_interleaved;
    s.cfg.rope_interleaved = false;
    s.config_json = model_config_to_json(s.cfg);
  } else {
    fail("'%s' is not a model (expected a Hugging Face folder, a native folder or a .gguf file)",
         src.c_str());
  }
  return s;
}

bool gguf_has_vocab(const GgufFile& f) {
  return f.find("tokenizer.ggml.tokens") != nullptr &&
         f.get_string_or("tokenizer.ggml.model", "none") != "none";
}

// GGUF block types no backend runs are transcoded as Model::load does.
std::unique_ptr<WeightStore> open_weights(const Source& s, const std::string& quantization) {
  if (s.kind == "native") return open_native_weights(s.path);
  if (s.kind == "hf") return WeightStore::open_dir(s.path);
  auto store = std::make_unique<WeightStore>();
  // Q4_1 kept: Model::load converts it where the backend has no q4_1 kernels.
  add_gguf_weights(s.gguf, *store, gguf_transcode_target(quantization),
                   gguf_keeps_q4_1(quantization));
  return store;
}

// The dtype Model::load gives a stored tensor under --quantization (see
// Model::weight_dtype): float matrices whose rows fill whole blocks convert.
DType converted_dtype(const HostTensor& t, DType target) {
  if (!dtype_info(t.dtype).is_float || t.shape.rank != 2) return t.dtype;
  if (!dtype_info(target).is_float && t.shape.row_len() % dtype_info(target).block_elems != 0)
    return t.dtype;
  return target;
}

// Converts t to `to` into dst exactly as Model::upload does.
void convert_tensor(const HostTensor& t, DType to, uint8_t* dst, int n_threads) {
  if (to == t.dtype) {
    std::memcpy(dst, t.data, t.nbytes);
  } else if (is_quant(to)) {
    const std::vector<uint8_t> q = quantize_tensor(t, to, n_threads);
    std::memcpy(dst, q.data(), q.size());
  } else if (is_float(to)) {  // f32, or f16 / bf16 rounded to nearest even
    const int64_t cols = t.shape.row_len();
    const size_t in_row = dtype_row_bytes(t.dtype, cols), out_row = dtype_row_bytes(to, cols);
    parallel_rows(t.shape.rows(), n_threads, [&](int64_t r0, int64_t r1) {
      std::vector<float> row(cols);
      for (int64_t r = r0; r < r1; r++) {
        const uint8_t* src = static_cast<const uint8_t*>(t.data) + r * in_row;
        if (to == DType::F32) {
          convert_to_f32(t.dtype, src, reinterpret_cast<float*>(dst) + r * cols, cols);
          continue;
        }
        convert_to_f32(t.dtype, src, row.data(), cols);
        convert_from_f32(to, row.data(), dst + r * out_row, cols);
      }
    });
  } else {
    fail("cannot convert %s to %s", dtype_name(t.dtype), dtype_name(to));
  }
}

bool is_qk_projection(const std::string& name, bool* is_q) {
  auto ends = [&](const char* s) {
    const size_t n = std::strlen(s);
    return name.size() >= n && name.compare(name.size() - n, n, s) == 0;
  };
  *is_q = ends("self_attn.q_proj.weight") || ends("self_attn.q_proj.bias");
  return *is_q || ends("self_attn.k_proj.weight") || ends("self_attn.k_proj.bias");
}

// Special ids and sampling defaults of the source; tokens: the vocab's texts.
void describe_source(const Source& s, NativeConfig* nc, std::vector<std::string>* tokens) {
  std::unique_ptr<Tokenizer> tok;
  json gen = json::object();
  int pad = -1;
  if (s.kind == "hf") {
    std::error_code ec;
    if (fs::exists(fs::path(s.path) / "tokenizer.json", ec)) tok = Tokenizer::from_hf_dir(s.path);
    const fs::path gc = fs::path(s.path) / "generation_config.json";
    if (fs::exists(gc, ec)) gen = parse_json_file(gc.string());
    const json cfg = json::parse(s.config_json);
    if (cfg.contains("pad_token_id") && cfg["pad_token_id"].is_number_integer())
      pad = cfg["pad_token_id"].get<int>();
  } else if (s.kind == "gguf") {
    if (gguf_has_vocab(*s.gguf)) tok = Tokenizer::from_gguf(*s.gguf);
    pad = static_cast<int>(s.gguf->get_int_or("tokenizer.ggml.padding_token_id", -1));
  }
  if (gen.is_object() && gen.contains("pad_token_id") && gen["pad_token_id"].is_number_integer())
    pad = gen["pad_token_id"].get<int>();
  nc->pad_token_id = pad;

  nc->bos_token_id = s.cfg.bos_token_id;
  std::vector<int> eos = s.cfg.eos_token_ids;
  if (tok) {
    if (tok->bos_id() >= 0) nc->bos_token_id = tok->bos_id();
    for (int32_t id : tok->eos_ids()) eos.push_back(id);
    for (int32_t i = 0; i < tok->vocab_size(); i++) tokens->push_back(tok->token_to_piece(i));
  }
  // Unique, in first-seen order.
  for (int id : eos)
    if (std::find(nc->eos_token_ids.begin(), nc->eos_token_ids.end(), id) ==
        nc->eos_token_ids.end())
      nc->eos_token_ids.push_back(id);

  // Sampling defaults as generation_config.json says, MLC's otherwise.
  auto num = [&](const char* key, float* out) {
    if (gen.is_object() && gen.contains(key) && gen[key].is_number()) *out = gen[key].get<float>();
  };
  num("temperature", &nc->temperature);
  num("top_p", &nc->top_p);
  num("repetition_penalty", &nc->repetition_penalty);
}

}  // namespace

// ---- llm-config.json --------------------------------------------------------

bool is_native_folder(const std::string& dir) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(dir) / kNativeConfigName, ec);
}

NativeConfig read_native_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / kNativeConfigName).string();
  const json j = parse_json_file(path);
  if (!j.is_object()) fail("%s: expected a JSON object", path.c_str());
  const Fields f{j, path};
  NativeConfig c;
  const json& version = f.require("version");
  if (!version.is_number_integer() || version.get<int64_t>() < 1)
    f.bad("version", "an integer >= 1");
  if (version.get<int64_t>() > kNativeFormatVersion)
    fail("%s: format version %lld is newer than this build reads (%d); update llmrt", path.c_str(),
         static_cast<long long>(version.get<int64_t>()), kNativeFormatVersion);
  c.version = version.get<int>();
  c.model_type = f.str("model_type", "", true);
  c.quantization = f.str("quantization", "", true);
  parse_quant_scheme(c.quantization);  // throws listing the known schemes
  const json& mc = f.require("model_config");
  if (!mc.is_object()) f.bad("model_config", "an object");
  c.model_config_json = mc.dump();
  try {
    c.model = parse_model_config(c.model_config_json);
  } catch (const Error& e) {
    fail("%s: model_config: %s", path.c_str(), e.what());
  }
  if (c.model.model_type != c.model_type)
    fail("%s: model_type '%s' differs from model_config.model_type '%s'", path.c_str(),
         c.model_type.c_str(), c.model.model_type.c_str());

  c.context_window_size = f.integer("context_window_size", c.model.max_position_embeddings, 1);
  c.prefill_chunk_size = f.integer("prefill_chunk_size", std::min(2048, c.context_window_size), 1);
  c.sliding_window_size = f.integer("sliding_window_size", -1, -1);
  if (c.sliding_window_size == 0) f.bad("sliding_window_size", "positive or -1");
  // The sampling defaults, in the ranges the samplers accept.
  c.temperature = f.number("temperature", c.temperature, 0, 100, "a number from 0 to 100");
  c.top_p = f.number("top_p", c.top_p, 1e-6, 1, "a number in (0, 1]");
  c.repetition_penalty =
      f.number("repetition_penalty", c.repetition_penalty, 0.01, 10, "a number from 0.01 to 10");
  c.presence_penalty =
      f.number("presence_penalty", c.presence_penalty, -2, 2, "a number from -2 to 2");
  c.frequency_penalty =
      f.number("frequency_penalty", c.frequency_penalty, -2, 2, "a number from -2 to 2");
  c.conv_template = f.str("conv_template", "");
  if (const json* files = f.find("tokenizer_files")) {
    if (!files->is_array()) f.bad("tokenizer_files", "a list of file names");
    for (const json& name : *files) {
      if (!name.is_string()) f.bad("tokenizer_files", "a list of file names");
      c.tokenizer_files.push_back(name.get<std::string>());
    }
  }
  c.bos_token_id = f.integer("bos_token_id", -1, -1);
  c.pad_token_id = f.integer("pad_token_id", -1, -1);
  if (const json* eos = f.find("eos_token_id")) {
    const json list = eos->is_array() ? *eos : json::array({*eos});
    for (const json& id : list) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
        f.bad("eos_token_id", "a token id or a list of them");
      c.eos_token_ids.push_back(id.get<int>());
    }
  }
  c.source = f.str("source", "");

  // The folder's settings win over the embedded config's.
  if (c.sliding_window_size > 0) c.model.sliding_window = c.sliding_window_size;
  if (c.sliding_window_size == -1) c.model.sliding_window = 0;
  if (c.bos_token_id >= 0) c.model.bos_token_id = c.bos_token_id;
  if (!c.eos_token_ids.empty()) c.model.eos_token_ids = c.eos_token_ids;
  return c;
}

void write_native_config(const std::string& dir, const NativeConfig& c) {
  ordered_json j;
  j["version"] = c.version;
  j["model_type"] = c.model_type;
  j["quantization"] = c.quantization;
  j["model_config"] = ordered_json::parse(c.model_config_json);
  j["context_window_size"] = c.context_window_size;
  j["prefill_chunk_size"] = c.prefill_chunk_size;
  j["sliding_window_size"] = c.sliding_window_size;
  j["temperature"] = json_float(c.temperature);
  j["top_p"] = json_float(c.top_p);
  j["repetition_penalty"] = json_float(c.repetition_penalty);
  j["presence_penalty"] = json_float(c.presence_penalty);
  j["frequency_penalty"] = json_float(c.frequency_penalty);
  j["conv_template"] = c.conv_template;
  j["tokenizer_files"] = c.tokenizer_files;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_ids;
  j["pad_token_id"] = c.pad_token_id;
  j["source"] = c.source;
  write_text((fs::path(dir) / kNativeConfigName).string(), j.dump(2) + "\n");
}

std::unique_ptr<WeightStore> open_native_weights(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(fs::path(dir) / kIndexName, ec))
    fail("native model folder '%s' has no %s (written by llmcli convert)", dir.c_str(), kIndexName);
  return WeightStore::open_dir(dir);
}

// ---- model_config -----------------------------------------------------------

namespace {

// The sizes every config.json written here starts with.
void put_sizes(ordered_json& j, const ModelConfig& c) {
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
}
// The BOS and EOS ids, where the source names them.
void put_token_ids(ordered_json& j, const ModelConfig& c) {
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
}

// A gpt_neox config.json of what llama.cpp's GGUF holds (config_from_gguf), with its
// [q | k | v] rows of query_key_value (llmrt_qkv_blocked).
std::string gpt_neox_config_to_json(const ModelConfig& c) {
  if (c.num_kv_heads != c.num_heads || c.hidden_size != c.num_heads * c.head_dim ||
      c.attention_bias != c.attention_out_bias || !c.mlp_bias || c.rope_scaling.type != "default")
    fail("model_config: this gpt_neox cannot be written as config.json");
  ordered_json j;
  put_sizes(j, c);
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["layer_norm_eps"] = json_float(c.norm_eps);
  j["rotary_emb_base"] = json_float(c.rope_theta);
  // transformers takes int(head_dim * rotary_pct): half a dim more keeps rounding off it.
  const int rot = c.rotary_dims > 0 ? c.rotary_dims : c.head_dim;
  j["rotary_pct"] = (rot + 0.5) / c.head_dim;
  j["use_parallel_residual"] = c.parallel_residual;
  j["attention_bias"] = c.attention_bias;
  j["hidden_act"] = c.hidden_act;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  put_token_ids(j, c);
  if (c.qkv_blocked) j["llmrt_qkv_blocked"] = true;
  return j.dump();
}

}  // namespace

std::string model_config_to_json(const ModelConfig& c) {
  const bool llama = c.model_type == "llama", qwen2 = c.model_type == "qwen2";
  // Only GGUF sources come here; the other types keep their own config.json.
  if (c.model_type == "gpt_neox") return gpt_neox_config_to_json(c);
  if (c.model_type == "gptj" || c.model_type == "rwkv")
    fail("model_config: %s cannot be written from a GGUF source", c.model_type.c_str());
  ordered_json j;
  put_sizes(j, c);
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = json_float(c.norm_eps);
  j["rope_theta"] = json_float(c.rope_theta);
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == "linear") {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", json_float(rs.factor)}};
  } else if (rs.type == "llama3") {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", json_float(rs.factor)},
                         {"low_freq_factor", json_float(rs.low_freq_factor)},
                         {"high_freq_factor", json_float(rs.high_freq_factor)},
                         {"original_max_position_embeddings", rs.original_max_position_embeddings}};
  } else if (rs.type == "longrope") {
    json sf = json::array(), lf = json::array();
    for (float f : rs.short_factor) sf.push_back(json_float(f));
    for (float f : rs.long_factor) lf.push_back(json_float(f));
    j["rope_scaling"] = {{"rope_type", "longrope"},
                         {"short_factor", sf},
                         {"long_factor", lf},
                         {"original_max_position_embeddings", rs.original_max_position_embeddings}};
    if (rs.attention_factor > 0)
      j["rope_scaling"]["attention_factor"] = json_float(rs.attention_factor);
  } else if (rs.type != "default") {
    fail("model_config: cannot write rope scaling '%s'", rs.type.c_str());
  }
  if (c.rotary_dims > 0 && c.rotary_dims != c.head_dim)
    j["partial_rotary_factor"] = static_cast<double>(c.rotary_dims) / c.head_dim;
  j["hidden_act"] = c.hidden_act;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  // config.json can say only what parse_hf_config derives for each type.
  if (llama) {
    if (c.attention_bias != c.attention_out_bias)
      fail("model_config: llama with q/k/v biases but %s o_proj bias cannot be written",
           c.attention_out_bias ? "an" : "no");
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = c.mlp_bias;
  } else if ((qwen2 && (!c.attention_bias || c.attention_out_bias || c.mlp_bias)) ||
             (!qwen2 && (c.attention_bias || c.attention_out_bias || c.mlp_bias))) {
    fail("model_config: %s with these biases cannot be written", c.model_type.c_str());
  }
  if (c.sliding_window > 0) {
    if (qwen2)
      j["use_sliding_window"] = true;
    else if (llama)
      fail("model_config: llama with a sliding window cannot be written");
    j["sliding_window"] = c.sliding_window;
  }
  put_token_ids(j, c);
  if (!c.rope_freq_factors.empty()) j["llmrt_rope_freq_factors"] = json_floats(c.rope_freq_factors);
  if (c.rope_interleaved) j["llmrt_rope_interleaved"] = true;
  return j.dump();
}

ModelConfig parse_model_config(const std::string& json_text) {
  ModelConfig c = parse_hf_config(json_text);
  const json j = json::parse(json_text);  // valid: parse_hf_config parsed it
  if (const auto f = j.find("llmrt_rope_freq_factors"); f != j.end()) {
    if (!f->is_array() || static_cast<int>(f->size()) != c.head_dim / 2)
      fail("field 'llmrt_rope_freq_factors' must be a list of %d numbers", c.head_dim / 2);
    for (const json& v : *f) {
      if (!v.is_number() || !(v.get<double>() > 0))
        fail("field 'llmrt_rope_freq_factors' must hold positive numbers");
      c.rope_freq_factors.push_back(v.get<float>());
    }
  }
  if (const auto f = j.find("llmrt_rope_interleaved"); f != j.end()) {
    if (!f->is_boolean()) fail("field 'llmrt_rope_interleaved' must be true or false");
    c.rope_interleaved = f->get<bool>();
  }
  if (const auto f = j.find("llmrt_qkv_blocked"); f != j.end()) {
    if (!f->is_boolean()) fail("field 'llmrt_qkv_blocked' must be true or false");
    c.qkv_blocked = f->get<bool>();
  }
  return c;
}

// ---- weights ----------------------------------------------------------------

void write_native_weights(const std::string& dir, const std::vector<TensorSource>& tensors,
                          const NativeWriteOptions& opts) {
  std::set<std::string> names;
  uint64_t total = 0;
  for (const TensorSource& t : tensors) {
    if (!names.insert(t.name).second) fail("duplicate tensor '%s'", t.name.c_str());
    total += t.nbytes();
  }
  if (tensors.empty()) fail("no tensors to write to '%s'", dir.c_str());
  // Shards in tensor order, each at most shard_bytes (a bigger tensor gets one alone).
  const size_t limit = opts.shard_bytes > 0 ? opts.shard_bytes : kDefaultShardBytes;
  std::vector<std::vector<const TensorSource*>> shards(1);
  size_t in_shard = 0;
  for (const TensorSource& t : tensors) {
    if (!shards.back().empty() && in_shard + t.nbytes() > limit) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&t);
    in_shard += t.nbytes();
  }

  const std::map<std::string, std::string> meta = {{"format", "pt"},
                                                   {"llmrt.quantization", opts.quantization}};
  ordered_json weight_map = ordered_json::object();
  uint64_t done = 0;
  for (size_t s = 0; s < shards.size(); s++) {
    char file[64];
    std::snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    // Only this shard is in memory; new[] leaves it uninitialised: fill writes every byte.
    std::vector<std::unique_ptr<uint8_t[]>> bufs;
    std::vector<std::pair<std::string, HostTensor>> out;
    for (const TensorSource* t : shards[s]) {
      const size_t n = t->nbytes();
      bufs.emplace_back(new uint8_t[std::max<size_t>(n, 1)]);
      t->fill(bufs.back().get());
      out.emplace_back(t->name, HostTensor{t->dtype, t->shape, bufs.back().get(), n});
      weight_map[t->name] = file;
      done += n;
      if (opts.progress) opts.progress(done, total);
    }
    write_safetensors((fs::path(dir) / file).string(), out, meta);
  }
  ordered_json index;
  index["metadata"] = {{"total_size", total}, {"llmrt.quantization", opts.quantization}};
  index["weight_map"] = weight_map;
  write_text((fs::path(dir) / kIndexName).string(), index.dump(2) + "\n");
}

// ---- gen-config and convert -------------------------------------------------

std::vector<std::string> copy_tokenizer_files(const std::string& src, const std::string& dir) {
  std::vector<std::string> copied;
  for (const char* name : kTokenizerFiles) {
    const fs::path from = fs::path(src) / name, to = fs::path(dir) / name;
    std::error_code ec;
    if (!fs::is_regular_file(from, ec)) continue;
    if (!fs::equivalent(from, to, ec)) {
      fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
      if (ec) fail("cannot copy '%s' to '%s': %s", from.c_str(), to.c_str(), ec.message().c_str());
    }
    copied.push_back(name);
  }
  return copied;
}

std::string guess_conv_template(const ModelConfig& c, const std::vector<std::string>& tokens) {
  const std::set<std::string> vocab(tokens.begin(), tokens.end());
  if (vocab.count("<|eot_id|>") && vocab.count("<|start_header_id|>")) return "llama-3";
  if (vocab.count("<|im_start|>") && vocab.count("<|im_end|>")) return "chatml";
  if (vocab.count("<|assistant|>") && vocab.count("<|end|>")) return "phi-3";
  if (vocab.count("<start_of_turn>")) return "gemma";
  if (c.model_type == "mistral") return "mistral";
  if (c.model_type == "qwen2") return "chatml";
  if (c.model_type == "phi3") return "phi-3";
  if (c.model_type == "rwkv") return "rwkv_world";
  if (c.model_type == "gpt_neox") return "redpajama_chat";
  return "llama-2";
}

namespace {

// The part of gen-config that writes no files (tokenizer_files is filled in later).
NativeConfig make_native_config(const Source& s, const GenConfigOptions& o) {
  if (o.quantization.empty()) fail("--quantization is required (%s)", quant_scheme_names().c_str());
  parse_quant_scheme(o.quantization);
  NativeConfig nc;
  if (s.kind == "native") nc = s.native;  // keeps its sampling defaults, ids and files
  nc.version = kNativeFormatVersion;
  nc.model_type = s.cfg.model_type;
  nc.quantization = o.quantization;
  nc.model_config_json = s.config_json;
  nc.model = s.cfg;
  std::vector<std::string> tokens;
  if (s.kind != "native") describe_source(s, &nc, &tokens);
  nc.source = fs::absolute(s.path).lexically_normal().string();

  nc.context_window_size =
      o.context_window_size > 0 ? o.context_window_size : s.cfg.max_position_embeddings;
  if (nc.context_window_size <= 0) nc.context_window_size = 4096;
  nc.prefill_chunk_size =
      o.prefill_chunk_size > 0 ? o.prefill_chunk_size : std::min(2048, nc.context_window_size);
  if (o.context_window_size < 0 || o.prefill_chunk_size < 0)
    fail("--context-window-size and --prefill-chunk-size must be positive");
  if (nc.prefill_chunk_size > nc.context_window_size)
    fail("--prefill-chunk-size %d is larger than the context window %d", nc.prefill_chunk_size,
         nc.context_window_size);
  if (o.sliding_window_size < -1) fail("--sliding-window-size must be positive or -1 (none)");
  if (o.sliding_window_size != 0)
    nc.sliding_window_size = o.sliding_window_size;
  else if (s.kind != "native")  // a native source keeps its own
    nc.sliding_window_size = s.cfg.sliding_window > 0 ? s.cfg.sliding_window : -1;

  if (!o.conv_template.empty()) {
    if (find_conv_template(o.conv_template) == nullptr) {
      std::string names;
      for (const std::string& n : conv_template_names()) names += (names.empty() ? "" : ", ") + n;
      fail("unknown conversation template '%s' (known: %s)", o.conv_template.c_str(),
           names.c_str());
    }
    nc.conv_template = o.conv_template;
  } else if (nc.conv_template.empty()) {
    if (s.kind == "gguf" && gguf_has_vocab(*s.gguf))
      tokens = s.gguf->get_string_array("tokenizer.ggml.tokens");
    nc.conv_template = guess_conv_template(s.cfg, tokens);
  }
  return nc;
}

// Creates the output folder, which must not be the source: shards are named as
// Hugging Face names its own (writing over mapped source files), and an
// llm-config.json would turn a Hugging Face folder into a broken native one.
void make_dir(const std::string& src, const std::string& dir) {
  std::error_code ec;
  if (fs::equivalent(src, dir, ec))
    fail("the output folder '%s' is the source folder; choose another", dir.c_str());
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    fail("output '%s' exists and is not a folder", dir.c_str());
  fs::create_directories(dir, ec);
  if (ec) fail("cannot create folder '%s': %s", dir.c_str(), ec.message().c_str());
}

// Removes the tokenizer files of an earlier conversion into dir that this one does not
// write: the loader would otherwise take a stale tokenizer.gguf or tokenizer.json.
void remove_stale_tokenizer_files(const std::string& dir, const std::vector<std::string>& keep) {
  std::vector<std::string> names(std::begin(kTokenizerFiles), std::end(kTokenizerFiles));
  names.push_back(kTokenizerGguf);
  for (const std::string& name : names) {
    if (std::find(keep.begin(), keep.end(), name) != keep.end()) continue;
    std::error_code ec;
    fs::remove(fs::path(dir) / name, ec);
    if (ec)
      fail("cannot remove the stale '%s' in '%s': %s", name.c_str(), dir.c_str(),
           ec.message().c_str());
  }
}

// Tokenizer files into dir; returns their names.
std::vector<std::string> write_tokenizer(const Source& s, const std::string& dir) {
  if (s.kind == "hf") return copy_tokenizer_files(s.path, dir);
  if (s.kind == "gguf") {
    if (!gguf_has_vocab(*s.gguf)) return {};
    write_vocab_gguf((fs::path(dir) / kTokenizerGguf).string(), s.cfg, *s.gguf);
    return {kTokenizerGguf};
  }
  std::vector<std::string> copied;
  for (const std::string& name : s.native.tokenizer_files) {
    const fs::path from = fs::path(s.path) / name, to = fs::path(dir) / name;
    std::error_code ec;
    if (!fs::equivalent(from, to, ec)) {
      fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
      if (ec) fail("cannot copy '%s' to '%s': %s", from.c_str(), to.c_str(), ec.message().c_str());
    }
    copied.push_back(name);
  }
  return copied;
}

// The weights, tokenizer files and llm-config.json of a conversion into dir.
void write_converted(const Source& s, const WeightStore& store, NativeConfig& nc, DType target,
                     const std::string& dir, const GenConfigOptions& opts) {
  std::vector<TensorSource> tensors;
  for (const std::string& name : store.names()) {
    const HostTensor* t = store.find(name);
    TensorSource ts;
    ts.name = name;
    ts.dtype = converted_dtype(*t, target);
    ts.shape = t->shape;
    bool is_q = false;
    const bool permute = s.unpermute_qk && is_qk_projection(name, &is_q);
    const int heads = is_q ? s.cfg.num_heads : s.cfg.num_kv_heads;
    const int threads = opts.threads;
    ts.fill = [t, permute, heads, threads, dtype = ts.dtype](uint8_t* dst) {
      if (!permute) return convert_tensor(*t, dtype, dst, threads);
      // GGUF llama Q/K rows back to Hugging Face order: rows move whole, so this
      // commutes with the row-wise conversion.
      const size_t n = tensor_bytes(dtype, t->shape);
      std::unique_ptr<uint8_t[]> tmp(new uint8_t[n]);
      convert_tensor(*t, dtype, tmp.get(), threads);
      const int64_t rows = t->shape[0];
      permute_qk_rows(tmp.get(), dst, rows, n / rows, heads, /*to_gguf=*/false);
    };
    tensors.push_back(std::move(ts));
  }
  NativeWriteOptions wo;
  wo.quantization = opts.quantization;
  wo.shard_bytes = opts.shard_bytes;
  wo.progress = opts.progress;
  write_native_weights(dir, tensors, wo);
  // llm-config.json last: a folder that has one is complete.
  nc.tokenizer_files = write_tokenizer(s, dir);
  remove_stale_tokenizer_files(dir, nc.tokenizer_files);
  write_native_config(dir, nc);
}

}  // namespace

NativeConfig gen_native_config(const std::string& src, const std::string& dir,
                               const GenConfigOptions& opts) {
  const Source s = open_source(src);
  NativeConfig nc = make_native_config(s, opts);
  make_dir(src, dir);
  nc.tokenizer_files = write_tokenizer(s, dir);
  remove_stale_tokenizer_files(dir, nc.tokenizer_files);
  write_native_config(dir, nc);
  return nc;
}

void convert_model(const std::string& src, const std::string& dir, const GenConfigOptions& opts) {
  const Source s = open_source(src);
  NativeConfig nc = make_native_config(s, opts);  // checks the options before the long part
  const DType target = parse_quant_scheme(opts.quantization).weight_dtype;
  std::unique_ptr<WeightStore> store = open_weights(s, opts.quantization);
  std::error_code ec;
  const bool created = !fs::exists(dir, ec);
  make_dir(src, dir);
  try {
    write_converted(s, *store, nc, target, dir, opts);
  } catch (...) {
    // A folder this call made is removed again (a disk that filled up, a bad tensor):
    // half a model must not look like one. A folder that was there is left alone.
    if (created) fs::remove_all(dir, ec);
    throw;
  }
}

}  // namespace llm
