#include "core/formats/gguf_model.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <regex>

#include "core/error.h"
#include "core/formats/gguf_quants.h"
#include "core/formats/quantize.h"

namespace llm {

namespace {

const GgufTensorInfo* find_tensor(const GgufFile& f, const std::string& name) {
  for (const GgufTensorInfo& t : f.tensors())
    if (t.name == name) return &t;
  return nullptr;
}

using NamePair = std::pair<const char*, const char*>;

// gguf's name under Hugging Face's: whole-model tensors by `global`, and
// blk.N.KIND.weight|bias as LAYER_PREFIX.N.layer[KIND].weight|bias; else unchanged
// (kept under its own name, unused by the builders).
template <size_t G, size_t L>
std::string map_name(const std::string& gguf, const NamePair (&global)[G],
                     const std::string& layer_prefix, const NamePair (&layer)[L]) {
  for (const auto& [from, to] : global)
    if (gguf == from) return to;
  static const std::regex kBlock(R"(blk\.(\d+)\.([a-z_]+)\.(weight|bias))");
  std::smatch m;
  if (std::regex_match(gguf, m, kBlock)) {
    for (const auto& [from, to] : layer)
      if (m[2] == from) return layer_prefix + "." + m[1].str() + "." + to + "." + m[3].str();
  }
  return gguf;
}

// llama.cpp's names -> Hugging Face's: the llama family, phi3 (whose ffn_up is the
// fused gate_up_proj) and gptneox.
std::string hf_name(const std::string& arch, const std::string& gguf) {
  if (arch == "gptneox") {
    static const NamePair kGlobal[] = {
        {"token_embd.weight", "gpt_neox.embed_in.weight"},
        {"output_norm.weight", "gpt_neox.final_layer_norm.weight"},
        {"output_norm.bias", "gpt_neox.final_layer_norm.bias"},
        {"output.weight", "embed_out.weight"},
    };
    static const NamePair kLayer[] = {
        {"attn_norm", "input_layernorm"},   {"attn_qkv", "attention.query_key_value"},
        {"attn_output", "attention.dense"}, {"ffn_norm", "post_attention_layernorm"},
        {"ffn_up", "mlp.dense_h_to_4h"},    {"ffn_down", "mlp.dense_4h_to_h"},
    };
    return map_name(gguf, kGlobal, "gpt_neox.layers", kLayer);
  }
  static const NamePair kGlobal[] = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
  };
  static const NamePair kLayer[] = {
      {"attn_norm", "input_layernorm"},    {"attn_q", "self_attn.q_proj"},
      {"attn_k", "self_attn.k_proj"},      {"attn_v", "self_attn.v_proj"},
      {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
      {"ffn_gate", "mlp.gate_proj"},       {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},
  };
  static const NamePair kPhi3Layer[] = {
      {"attn_norm", "input_layernorm"},    {"attn_qkv", "self_attn.qkv_proj"},
      {"attn_output", "self_attn.o_proj"}, {"ffn_norm", "post_attention_layernorm"},
      {"ffn_up", "mlp.gate_up_proj"},      {"ffn_down", "mlp.down_proj"},
  };
  if (arch == "phi3") return map_name(gguf, kGlobal, "model.layers", kPhi3Layer);
  return map_name(gguf, kGlobal, "model.layers", kLayer);
}

// A rope tensor of per-frequency factors (f32 [n]) as a vector; t may be missing.
std::vector<float> rope_factors(const GgufFile& f, const GgufTensorInfo* t, const char* name,
                                int n) {
  if (t == nullptr || t->ggml_type != 0 || t->shape.numel() != n)
    fail("'%s': %s must be f32 [%d]", f.path().c_str(), name, n);
  std::vector<float> v(static_cast<size_t>(n));
  std::memcpy(v.data(), t->data, v.size() * sizeof(float));
  return v;
}

// A count of the model's shape (key present, or def where def > 0) in [min, max]: the
// file's value is checked before it becomes an int, so 0xffffffff is not -1.
constexpr int64_t kMaxGgufDim = int64_t{1} << 24;
int gguf_count(const GgufFile& f, const std::string& key, int64_t def = -1, int64_t min = 1,
               int64_t max = kMaxGgufDim) {
  const int64_t v = def >= 0 ? f.get_int_or(key, def) : f.get_int(key);
  if (v < min || v > max)
    fail("'%s': %s is %lld; it must be an integer from %lld to %lld", f.path().c_str(), key.c_str(),
         static_cast<long long>(v), static_cast<long long>(min), static_cast<long long>(max));
  return static_cast<int>(v);
}

// A finite positive number (an epsilon, a rope base or factor), def where missing.
float gguf_positive(const GgufFile& f, const std::string& key, double def) {
  const double v = f.get_float_or(key, def);
  if (!(v > 0) || !std::isfinite(v) || !std::isfinite(static_cast<float>(v)))
    fail("'%s': %s is %g; it must be a finite positive number", f.path().c_str(), key.c_str(), v);
  return static_cast<float>(v);
}

// The layer of a tensor named blk.N.*, else -1.
int64_t block_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  char* end = nullptr;
  const long long n = std::strtoll(name.c_str() + 4, &end, 10);
  return end != name.c_str() + 4 && *end == '.' ? n : -1;
}

}  // namespace

ModelConfig config_from_gguf(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  ModelConfig c;
  if (arch == "llama") {
    // llama.cpp's converter permutes the Q/K rows of llama and mistral checkpoints.
    c.model_type = "llama";
    c.rope_interleaved = true;
  } else if (arch == "qwen2") {
    c.model_type = "qwen2";
  } else if (arch == "phi3") {
    c.model_type = "phi3";  // llama.cpp keeps phi3's Q/K rows in Hugging Face order
  } else if (arch == "gptneox") {
    // llama.cpp's converter regroups query_key_value from per head to [q | k | v].
    c.model_type = "gpt_neox";
    c.qkv_blocked = true;
    c.hidden_act = "gelu";
    c.mlp_bias = true;
  } else {
    fail("'%s': unsupported GGUF architecture '%s' (supported: llama, qwen2, phi3, gptneox)",
         f.path().c_str(), arch.c_str());
  }
  const std::string p = arch + ".";
  c.hidden_size = gguf_count(f, p + "embedding_length");
  c.num_layers = gguf_count(f, p + "block_count", -1, 1, 4096);
  // A file whose tensors go past block_count would silently lose layers.
  for (const GgufTensorInfo& t : f.tensors())
    if (block_of(t.name) >= c.num_layers)
      fail("'%s': tensor '%s' is past %sblock_count (%d)", f.path().c_str(), t.name.c_str(),
           p.c_str(), c.num_layers);
  c.intermediate_size = gguf_count(f, p + "feed_forward_length");
  c.num_heads = gguf_count(f, p + "attention.head_count");
  c.num_kv_heads = gguf_count(f, p + "attention.head_count_kv", c.num_heads);
  if (c.num_heads % c.num_kv_heads != 0)
    fail("'%s': %sattention.head_count (%d) is not a multiple of head_count_kv (%d)",
         f.path().c_str(), p.c_str(), c.num_heads, c.num_kv_heads);
  if (f.find(p + "attention.key_length") == nullptr && c.hidden_size % c.num_heads != 0)
    fail("'%s': %sembedding_length (%d) is not a multiple of attention.head_count (%d)",
         f.path().c_str(), p.c_str(), c.hidden_size, c.num_heads);
  c.head_dim = gguf_count(f, p + "attention.key_length", c.hidden_size / c.num_heads);
  c.max_position_embeddings = gguf_count(f, p + "context_length", 2048, 1, int64_t{1} << 30);
  c.norm_eps = gguf_positive(f, p + "attention.layer_norm_rms_epsilon", 1e-5);
  if (arch == "gptneox") {
    c.norm_eps = gguf_positive(f, p + "attention.layer_norm_epsilon", 1e-5);
    c.parallel_residual = f.get_int_or(p + "use_parallel_residual", 1) != 0;
  }
  c.rope_theta = gguf_positive(f, p + "rope.freq_base", 10000.0);
  c.sliding_window = gguf_count(f, p + "attention.sliding_window", 0, 0, int64_t{1} << 30);
  // Hugging Face calls a llama with a sliding window mistral (llama has no such key).
  if (arch == "llama" && c.sliding_window > 0) c.model_type = "mistral";
  const int64_t rope_dims = f.get_int_or(p + "rope.dimension_count", c.head_dim);
  if ((arch == "phi3" || arch == "gptneox") && rope_dims != c.head_dim) {
    if (rope_dims <= 0 || rope_dims % 2 || rope_dims > c.head_dim)
      fail("'%s': rope.dimension_count %lld is not an even number up to the head size %d",
           f.path().c_str(), static_cast<long long>(rope_dims), c.head_dim);
    c.rotary_dims = static_cast<int>(rope_dims);
  } else if (rope_dims != c.head_dim) {
    fail("'%s': partial rotary (%lld of %d dims) is not supported for %s", f.path().c_str(),
         static_cast<long long>(rope_dims), c.head_dim, arch.c_str());
  }
  const std::string scaling = f.get_string_or(p + "rope.scaling.type", "none");
  if (scaling == "linear") {
    c.rope_scaling.type = "linear";
    if (f.find(p + "rope.scaling.factor") == nullptr)
      fail("'%s': linear rope scaling without %srope.scaling.factor", f.path().c_str(), p.c_str());
    c.rope_scaling.factor = gguf_positive(f, p + "rope.scaling.factor", 1.0);
  } else if (scaling != "none") {
    fail("'%s': unsupported rope scaling '%s'", f.path().c_str(), scaling.c_str());
  }

  // Phi-3 longrope (the 128k models, Phi-3.5) as llama.cpp's converter stores it: the
  // short and long per-frequency divisors as tensors, the original context and the
  // cos/sin factor as keys.
  const GgufTensorInfo* rf_long = find_tensor(f, "rope_factors_long.weight");
  const GgufTensorInfo* rf_short = find_tensor(f, "rope_factors_short.weight");
  if (rf_long || rf_short) {
    if (arch != "phi3" || c.rope_scaling.type != "default")
      fail(
          "'%s': rope_factors_long/short (longrope) are read for phi3 without another rope "
          "scaling only",
          f.path().c_str());
    const int half = (c.rotary_dims > 0 ? c.rotary_dims : c.head_dim) / 2;
    RopeScaling& rs = c.rope_scaling;
    rs.type = "longrope";
    rs.long_factor = rope_factors(f, rf_long, "rope_factors_long.weight", half);
    rs.short_factor = rope_factors(f, rf_short, "rope_factors_short.weight", half);
    rs.original_max_position_embeddings =
        gguf_count(f, p + "rope.scaling.original_context_length", -1, 1, int64_t{1} << 30);
    // 0: derived from the context lengths, as transformers does.
    if (f.find(p + "rope.scaling.attn_factor") != nullptr)
      rs.attention_factor = gguf_positive(f, p + "rope.scaling.attn_factor", 1.0);
  }

  const GgufTensorInfo* embd = find_tensor(f, "token_embd.weight");
  if (!embd) fail("'%s' has no tensor 'token_embd.weight'", f.path().c_str());
  c.vocab_size = gguf_count(f, p + "vocab_size", embd->shape[0], 1, int64_t{1} << 30);
  c.tie_word_embeddings = find_tensor(f, "output.weight") == nullptr;
  c.attention_bias = find_tensor(f, "blk.0.attn_q.bias") != nullptr;
  c.attention_out_bias = find_tensor(f, "blk.0.attn_output.bias") != nullptr;
  if (arch == "gptneox") c.attention_bias = find_tensor(f, "blk.0.attn_qkv.bias") != nullptr;
  c.mlp_bias = find_tensor(f, "blk.0.ffn_up.bias") != nullptr;

  // llama3 rope scaling is stored as per-frequency divisors.
  if (const GgufTensorInfo* rf = find_tensor(f, "rope_freqs.weight"))
    c.rope_freq_factors = rope_factors(f, rf, "rope_freqs.weight", c.head_dim / 2);
  // Special ids past the vocabulary would index outside the embedding.
  auto special_id = [&](const char* key) {
    const int64_t id = f.get_int_or(key, -1);
    if (id >= c.vocab_size)
      fail("'%s': %s is %lld, past the vocabulary (%d)", f.path().c_str(), key,
           static_cast<long long>(id), c.vocab_size);
    return static_cast<int>(id);
  };
  c.bos_token_id = special_id("tokenizer.ggml.bos_token_id");
  const int eos = special_id("tokenizer.ggml.eos_token_id");
  if (eos >= 0) c.eos_token_ids.push_back(eos);
  // llama.cpp's enum llama_pooling_type: 0 none, 1 mean, 2 cls, 3 last (4 rank: rerankers,
  // whose score head is not loaded here).
  switch (f.get_int_or(p + "pooling_type", -1)) {
    case 0:
      c.pooling = "none";
      break;
    case 1:
      c.pooling = "mean";
      break;
    case 2:
      c.pooling = "cls";
      break;
    case 3:
      c.pooling = "last";
      break;
    default:
      break;
  }
  return c;
}

std::string hf_tensor_name(const std::string& arch, const std::string& gguf_name) {
  return hf_name(arch, gguf_name);
}

DType gguf_transcode_target(const std::string& quantization) {
  if (quantization.empty()) return DType::Q8_0;
  const DType t = parse_quant_scheme(quantization).weight_dtype;
  return is_float(t) ? t : DType::Q8_0;
}

bool gguf_keeps_q4_1(const std::string& quantization) {
  return quantization.empty() || parse_quant_scheme(quantization).weight_dtype == DType::Q4_0;
}

void add_gguf_weights(std::shared_ptr<const GgufFile> f, WeightStore& store, DType transcode_to,
                      bool q4_1) {
  const std::string arch = f->get_string("general.architecture");
  for (const GgufTensorInfo& t : f->tensors()) {
    // Folded into the config.
    if (t.name == "rope_freqs.weight" || t.name == "rope_factors_long.weight" ||
        t.name == "rope_factors_short.weight")
      continue;
    if (ggml_block_layout(t.ggml_type) != nullptr) {
      const DType target = t.shape.rank >= 2 ? transcode_to : DType::F32;
      if (q4_1 && target == DType::Q8_0 && ggml_to_q4_1(t.ggml_type)) {
        if (t.ggml_type == kGgmlQ4_1) {  // as stored, like Q4_0 and Q8_0
          store.add_external(hf_name(arch, t.name),
                             HostTensor{DType::Q4_1, t.shape, t.data, t.nbytes}, f);
          continue;
        }
        try {
          store.add_owned(hf_name(arch, t.name), DType::Q4_1, t.shape,
                          transcode_ggml_tensor(t.ggml_type, t.data, t.shape, DType::Q4_1));
          continue;
        } catch (const Error&) {
          // A scale beyond f16's range (not seen in real files): q8_0 below.
        }
      }
      try {
        store.add_owned(hf_name(arch, t.name), target, t.shape,
                        transcode_ggml_tensor(t.ggml_type, t.data, t.shape, target));
      } catch (const Error& e) {
        fail("'%s': tensor '%s': %s", f->path().c_str(), t.name.c_str(), e.what());
      }
      continue;
    }
    DType dt;
    if (!dtype_from_ggml_type(t.ggml_type, &dt))
      fail(
          "'%s': tensor '%s' has ggml type %u, which this build cannot load (supported: F32, F16, "
          "BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)",
          f->path().c_str(), t.name.c_str(), t.ggml_type);
    HostTensor h;
    h.dtype = dt;
    h.shape = t.shape;
    h.data = t.data;
    h.nbytes = t.nbytes;
    store.add_external(hf_name(arch, t.name), h, f);
  }
}

}  // namespace llm
