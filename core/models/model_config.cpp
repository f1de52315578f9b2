#include "core/models/model_config.h"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace llm {

namespace {

using json = nlohmann::json;

// The field named in messages: "rope_scaling.factor" for nested ones.
std::string label(const std::string& prefix, const char* key) {
  return prefix.empty() ? key : prefix + "." + key;
}

// HF writes null for "unset"; treat it like an absent key.
const json* find_field(const json& obj, const char* key) {
  const auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

// Integers, and floats with an integral value (some exporters write 8192.0).
bool json_to_int(const json& v, int64_t* out) {
  if (v.is_number_integer()) {  // also true for unsigned
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      return false;
    *out = v.get<int64_t>();
    return true;
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::floor(d) != d || std::fabs(d) > 9.0e15) return false;
    *out = static_cast<int64_t>(d);
    return true;
  }
  return false;
}

int checked_int(const json& v, const std::string& name, int64_t min) {
  int64_t x;
  if (!json_to_int(v, &x) || x < min || x > INT_MAX)
    fail("config.json: field '%s' must be a %s integer", name.c_str(),
         min > 0 ? "positive" : "non-negative");
  return static_cast<int>(x);
}

int req_int(const json& obj, const char* key, const std::string& prefix = "",
            const char* why = nullptr) {
  const std::string name = label(prefix, key);
  const json* v = find_field(obj, key);
  if (v == nullptr) {
    if (why != nullptr) fail("config.json: missing field '%s' (%s)", name.c_str(), why);
    fail("config.json: missing field '%s'", name.c_str());
  }
  return checked_int(*v, name, 1);
}

int opt_int(const json& obj, const char* key, int def, int64_t min = 1) {
  const json* v = find_field(obj, key);
  return v == nullptr ? def : checked_int(*v, key, min);
}

float checked_positive(const json& v, const std::string& name) {
  if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>()))
    fail("config.json: field '%s' must be a positive number", name.c_str());
  return static_cast<float>(v.get<double>());
}

float req_positive(const json& obj, const char* key, const std::string& prefix, const char* why) {
  const json* v = find_field(obj, key);
  if (v == nullptr) fail("config.json: missing field '%s' (%s)", label(prefix, key).c_str(), why);
  return checked_positive(*v, label(prefix, key));
}

float opt_positive(const json& obj, const char* key, float def) {
  const json* v = find_field(obj, key);
  return v == nullptr ? def : checked_positive(*v, key);
}

bool opt_bool(const json& obj, const char* key, bool def) {
  const json* v = find_field(obj, key);
  if (v == nullptr) return def;
  if (!v->is_boolean()) fail("config.json: field '%s' must be true or false", key);
  return v->get<bool>();
}

std::string opt_string(const json& obj, const char* key, const std::string& prefix,
                       const std::string& def) {
  const json* v = find_field(obj, key);
  if (v == nullptr) return def;
  if (!v->is_string()) fail("config.json: field '%s' must be a string", label(prefix, key).c_str());
  return v->get<std::string>();
}

// Reads "rope_parameters" (transformers >= 5) or the classic "rope_scaling" object;
// both may carry rope_theta, which then wins over the top-level field.
void parse_rope(const json& j, ModelConfig* c) {
  const char* key = find_field(j, "rope_parameters") ? "rope_parameters" : "rope_scaling";
  const json* rope = find_field(j, key);
  c->rope_theta = opt_positive(j, "rope_theta", 10000.f);
  if (rope == nullptr) return;
  if (!rope->is_object()) fail("config.json: field '%s' must be an object", key);
  if (const json* theta = find_field(*rope, "rope_theta"))
    c->rope_theta = checked_positive(*theta, label(key, "rope_theta"));

  RopeScaling& rs = c->rope_scaling;
  const char* type_key = find_field(*rope, "rope_type") ? "rope_type" : "type";
  rs.type = opt_string(*rope, type_key, key, "default");
  if (rs.type == "default") return;
  if (rs.type == "linear") {
    rs.factor = req_positive(*rope, "factor", key, "needed by rope type 'linear'");
    return;
  }
  if (rs.type == "llama3") {
    const char* why = "needed by rope type 'llama3'";
    rs.factor = req_positive(*rope, "factor", key, why);
    rs.low_freq_factor = req_positive(*rope, "low_freq_factor", key, why);
    rs.high_freq_factor = req_positive(*rope, "high_freq_factor", key, why);
    rs.original_max_position_embeddings =
        req_int(*rope, "original_max_position_embeddings", key, why);
    // The llama3 smoothing divides by (high - low).
    if (!(rs.high_freq_factor > rs.low_freq_factor))
      fail("config.json: %s.high_freq_factor (%g) must be greater than low_freq_factor (%g)", key,
           rs.high_freq_factor, rs.low_freq_factor);
    return;
  }
  if (rs.type == "longrope" || rs.type == "su") {
    rs.type = "longrope";
    auto factors = [&](const char* name) {
      const json* f = find_field(*rope, name);
      if (f == nullptr || !f->is_array() || f->empty())
        fail("config.json: %s.%s must be a list of numbers (needed by rope type 'longrope')", key,
             name);
      std::vector<float> out;
      for (const json& v : *f) {
        if (!v.is_number() || !(v.get<double>() > 0))
          fail("config.json: %s.%s must hold positive numbers", key, name);
        out.push_back(v.get<float>());
      }
      return out;
    };
    rs.short_factor = factors("short_factor");
    rs.long_factor = factors("long_factor");
    if (rs.short_factor.size() != rs.long_factor.size())
      fail("config.json: %s.short_factor and long_factor differ in length (%zu, %zu)", key,
           rs.short_factor.size(), rs.long_factor.size());
    if (const json* a = find_field(*rope, "attention_factor"))
      rs.attention_factor = checked_positive(*a, label(key, "attention_factor"));
    // Phi-3 keeps the original context at the top level.
    const json* orig = find_field(*rope, "original_max_position_embeddings")
                           ? find_field(*rope, "original_max_position_embeddings")
                           : find_field(j, "original_max_position_embeddings");
    if (orig == nullptr || !orig->is_number_integer() || orig->get<int64_t>() <= 0)
      fail(
          "config.json: original_max_position_embeddings (a positive integer) is needed by rope "
          "type 'longrope'");
    rs.original_max_position_embeddings = orig->get<int>();
    return;
  }
  fail("unsupported rope_scaling type '%s'", rs.type.c_str());
}

void parse_token_ids(const json& j, ModelConfig* c) {
  if (const json* bos = find_field(j, "bos_token_id"))
    c->bos_token_id = checked_int(*bos, "bos_token_id", 0);
  if (const json* eos = find_field(j, "eos_token_id")) {
    if (eos->is_array()) {
      for (const json& e : *eos) c->eos_token_ids.push_back(checked_int(e, "eos_token_id", 0));
    } else {
      c->eos_token_ids.push_back(checked_int(*eos, "eos_token_id", 0));
    }
  }
}

// The first of several keys that is present (GPT-J's n_embd is hidden_size elsewhere).
const char* first_key(const json& j, std::initializer_list<const char*> keys) {
  for (const char* k : keys)
    if (find_field(j, k)) return k;
  return *keys.begin();
}

// A fraction in (0, 1] (rotary_pct, partial_rotary_factor).
float opt_fraction(const json& obj, const char* key, float def) {
  const float f = opt_positive(obj, key, def);
  if (f > 1.f) fail("config.json: field '%s' must be in (0, 1]", key);
  return f;
}

int rotary_dims_of(int head_dim, float fraction, const char* key) {
  const int rot = static_cast<int>(head_dim * fraction);
  if (rot < 2 || rot % 2 != 0)
    fail("config.json: %s %g of head_dim %d gives %d rotary dims; need an even number >= 2", key,
         fraction, head_dim, rot);
  return rot;
}

// The partial rotary fraction: top level or inside rope_parameters (transformers >= 5).
float rotary_fraction(const json& j, const char* key, float def) {
  if (const json* rp = find_field(j, "rope_parameters"))
    if (rp->is_object() && find_field(*rp, "partial_rotary_factor"))
      return opt_fraction(*rp, "partial_rotary_factor", def);
  return opt_fraction(j, key, def);
}

void check_gelu(const ModelConfig& c) {
  static const char* kOk[] = {"gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh"};
  for (const char* a : kOk)
    if (c.hidden_act == a) return;
  fail("config.json: activation '%s' is not supported for model_type '%s' (gelu, gelu_new)",
       c.hidden_act.c_str(), c.model_type.c_str());
}

// GPT-NeoX, GPT-J and RWKV: LayerNorm models with their own field names.
void parse_gpt_neox(const json& j, ModelConfig* c) {
  c->vocab_size = req_int(j, "vocab_size");
  c->hidden_size = req_int(j, "hidden_size");
  c->intermediate_size = req_int(j, "intermediate_size");
  c->num_layers = req_int(j, "num_hidden_layers");
  c->num_heads = c->num_kv_heads = req_int(j, "num_attention_heads");
  if (c->hidden_size % c->num_heads != 0)
    fail("config.json: hidden_size (%d) is not divisible by num_attention_heads (%d)",
         c->hidden_size, c->num_heads);
  c->head_dim = c->hidden_size / c->num_heads;
  c->max_position_embeddings = opt_int(j, "max_position_embeddings", 2048);
  c->norm_eps = opt_positive(j, "layer_norm_eps", 1e-5f);
  parse_rope(j, c);
  if (!find_field(j, "rope_theta") && !find_field(j, "rope_parameters"))
    c->rope_theta = opt_positive(j, "rotary_emb_base", 10000.f);
  c->rotary_dims =
      rotary_dims_of(c->head_dim, rotary_fraction(j, "rotary_pct", 0.25f), "rotary_pct");
  c->parallel_residual = opt_bool(j, "use_parallel_residual", true);
  c->attention_bias = c->attention_out_bias = opt_bool(j, "attention_bias", true);
  c->mlp_bias = true;
  c->hidden_act = opt_string(j, "hidden_act", "", "gelu");
  check_gelu(*c);
}

void parse_gptj(const json& j, ModelConfig* c) {
  c->vocab_size = req_int(j, first_key(j, {"vocab_size"}));
  c->hidden_size = req_int(j, first_key(j, {"n_embd", "hidden_size"}));
  c->num_layers = req_int(j, first_key(j, {"n_layer", "num_hidden_layers"}));
  c->num_heads = c->num_kv_heads = req_int(j, first_key(j, {"n_head", "num_attention_heads"}));
  if (c->hidden_size % c->num_heads != 0)
    fail("config.json: n_embd (%d) is not divisible by n_head (%d)", c->hidden_size, c->num_heads);
  c->head_dim = c->hidden_size / c->num_heads;
  c->intermediate_size = opt_int(j, "n_inner", 4 * c->hidden_size);
  c->max_position_embeddings =
      opt_int(j, first_key(j, {"n_positions", "max_position_embeddings"}), 2048);
  c->norm_eps = opt_positive(j, "layer_norm_epsilon", 1e-5f);
  c->rotary_dims = opt_int(j, "rotary_dim", c->head_dim);
  if (c->rotary_dims % 2 != 0 || c->rotary_dims > c->head_dim)
    fail("config.json: rotary_dim (%d) must be even and at most the head size (%d)", c->rotary_dims,
         c->head_dim);
  c->rope_interleaved = true;
  c->parallel_residual = true;
  c->mlp_bias = true;
  c->hidden_act = opt_string(j, "activation_function", "", "gelu_new");
  check_gelu(*c);
}

void parse_rwkv(const json& j, ModelConfig* c) {
  c->vocab_size = req_int(j, "vocab_size");
  c->hidden_size = req_int(j, "hidden_size");
  c->num_layers = req_int(j, "num_hidden_layers");
  c->attention_hidden_size = opt_int(j, "attention_hidden_size", c->hidden_size);
  c->intermediate_size = opt_int(j, "intermediate_size", 4 * c->hidden_size);
  c->max_position_embeddings = opt_int(j, "context_length", 1024);
  c->norm_eps = opt_positive(j, "layer_norm_epsilon", 1e-5f);
  c->rescale_every = opt_int(j, "rescale_every", 6, 0);
  // No attention: one "head" keeps the shared code paths (KV sizes) well defined.
  c->num_heads = c->num_kv_heads = 1;
  c->head_dim = c->hidden_size;
}

// Phi-3: the llama layout with fused qkv_proj and gate_up_proj.
void parse_phi3(const json& j, ModelConfig* c) {
  c->rotary_dims = rotary_dims_of(c->head_dim, rotary_fraction(j, "partial_rotary_factor", 1.f),
                                  "partial_rotary_factor");
  c->sliding_window = opt_int(j, "sliding_window", 0, 0);
}

}  // namespace

std::vector<std::string> supported_model_types() {
  return {"llama", "mistral", "qwen2", "phi3", "gpt_neox", "gptj", "rwkv"};
}

ModelConfig parse_hf_config(const std::string& json_text) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::parse_error& e) {
    fail("config.json: invalid JSON: %s", e.what());
  }
  if (!j.is_object()) fail("config.json: expected a JSON object");

  ModelConfig c;
  const json* mt = find_field(j, "model_type");
  if (mt == nullptr) fail("config.json: missing field 'model_type'");
  if (!mt->is_string()) fail("config.json: field 'model_type' must be a string");
  c.model_type = mt->get<std::string>();
  const std::vector<std::string> types = supported_model_types();
  bool known = false;
  std::string list;
  for (const std::string& t : types) {
    known = known || t == c.model_type;
    list += (list.empty() ? "" : ", ") + t;
  }
  if (!known)
    fail("unsupported model_type '%s' (supported: %s)", c.model_type.c_str(), list.c_str());
  // GPTQ, AWQ, bitsandbytes, FP8, compressed-tensors: weights stored in a quantized
  // layout of their own, which the loader would otherwise report as missing tensors.
  if (const json* q = find_field(j, "quantization_config"); q && !q->is_null()) {
    const json* method = q->is_object() ? find_field(*q, "quant_method") : nullptr;
    const std::string name = method && method->is_string() ? method->get<std::string>() : "?";
    fail(
        "config.json: the weights are quantized ('quantization_config', quant_method '%s'); "
        "llmrt loads float checkpoints (f32/f16/bf16, which --quantization q4f16_1 or q8f16_1 "
        "quantizes at load) and GGUF files: use the original float model or a GGUF of it",
        name.c_str());
  }
  if (c.model_type == "gpt_neox" || c.model_type == "gptj" || c.model_type == "rwkv") {
    if (c.model_type == "gpt_neox") parse_gpt_neox(j, &c);
    if (c.model_type == "gptj") parse_gptj(j, &c);
    if (c.model_type == "rwkv") parse_rwkv(j, &c);
    c.tie_word_embeddings = opt_bool(j, "tie_word_embeddings", false);
    parse_token_ids(j, &c);
    return c;
  }
  const bool llama = c.model_type == "llama";
  const bool qwen2 = c.model_type == "qwen2";
  const bool mistral = c.model_type == "mistral";

  c.vocab_size = req_int(j, "vocab_size");
  c.hidden_size = req_int(j, "hidden_size");
  c.intermediate_size = req_int(j, "intermediate_size");
  c.num_layers = req_int(j, "num_hidden_layers");
  c.num_heads = req_int(j, "num_attention_heads");
  c.num_kv_heads = opt_int(j, "num_key_value_heads", c.num_heads);
  if (c.num_heads % c.num_kv_heads != 0)
    fail("config.json: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)",
         c.num_heads, c.num_kv_heads);
  if (find_field(j, "head_dim") == nullptr && c.hidden_size % c.num_heads != 0)
    fail(
        "config.json: hidden_size (%d) is not divisible by num_attention_heads (%d) and no "
        "head_dim is given",
        c.hidden_size, c.num_heads);
  c.head_dim = opt_int(j, "head_dim", c.hidden_size / c.num_heads);
  c.max_position_embeddings = opt_int(j, "max_position_embeddings", 2048);
  // Defaults follow the transformers config classes.
  c.norm_eps = opt_positive(j, "rms_norm_eps", mistral || c.model_type == "phi3" ? 1e-5f : 1e-6f);
  parse_rope(j, &c);

  if (mistral) {
    c.sliding_window = opt_int(j, "sliding_window", 0, 0);
  } else if (c.model_type == "phi3") {
    parse_phi3(j, &c);
  } else if (qwen2 && opt_bool(j, "use_sliding_window", false)) {
    c.sliding_window = req_int(j, "sliding_window", "", "needed when use_sliding_window is true");
  }

  c.tie_word_embeddings = opt_bool(j, "tie_word_embeddings", false);
  if (qwen2) {
    c.attention_bias = true;  // Qwen2 always has q/k/v biases and never an o_proj bias
  } else if (llama) {
    c.attention_bias = opt_bool(j, "attention_bias", false);
    c.attention_out_bias = c.attention_bias;  // HF Llama applies it to o_proj as well
    c.mlp_bias = opt_bool(j, "mlp_bias", false);
  }

  c.hidden_act = opt_string(j, "hidden_act", "", "silu");
  if (c.hidden_act != "silu")
    fail("config.json: hidden_act '%s' is not supported for model_type '%s' (only 'silu')",
         c.hidden_act.c_str(), c.model_type.c_str());
  parse_token_ids(j, &c);
  return c;
}

namespace {

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '%s': %s", path.string().c_str(), std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string parse_st_pooling(const std::string& json_text) {
  const json j = json::parse(json_text, nullptr, false);
  if (!j.is_object()) fail("1_Pooling/config.json is not a JSON object");
  auto on = [&](const char* key) {
    const json* v = find_field(j, key);
    return v && v->is_boolean() && v->get<bool>();
  };
  if (on("pooling_mode_lasttoken")) return "last";
  if (on("pooling_mode_cls_token")) return "cls";
  if (on("pooling_mode_mean_tokens")) return "mean";
  return "";  // max or weighted-mean pooling: not offered, the default applies
}

ModelConfig load_hf_config(const std::string& dir) {
  const std::filesystem::path path = std::filesystem::path(dir) / "config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail("no config.json in '%s'", dir.c_str());
  ModelConfig c = parse_hf_config(read_text(path));
  const std::filesystem::path pooling = std::filesystem::path(dir) / "1_Pooling" / "config.json";
  if (std::filesystem::is_regular_file(pooling, ec))
    c.pooling = parse_st_pooling(read_text(pooling));
  return c;
}

}  // namespace llm
