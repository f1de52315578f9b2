// Hyper-parameters of a model, read from a Hugging Face config.json.
#pragma once

#include <string>
#include <vector>

namespace llm {

struct RopeScaling {
  std::string type = "default";  // "default" (none), "llama3", "linear", "longrope"
  float factor = 1.f;
  // longrope (Phi-3 128k / Phi-3.5, also "su"): per-frequency divisors for contexts
  // up to / beyond original_max_position_embeddings, and the cos/sin scale (0: from
  // max_position_embeddings / original, as transformers derives it).
  std::vector<float> short_factor, long_factor;
  float attention_factor = 0.f;
  float low_freq_factor = 1.f;
  float high_freq_factor = 4.f;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string model_type;  // "llama", "mistral", "qwen2", "phi3", "gpt_neox", "gptj", "rwkv"
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // hidden_size / num_heads unless config.json says
  int max_position_embeddings = 0;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.f;
  RopeScaling rope_scaling;
  // Per-frequency divisors of the rope inverse frequencies (GGUF rope_freqs.weight,
  // how llama.cpp stores llama3 scaling); empty when none.
  std::vector<float> rope_freq_factors;
  // Q/K weight rows are in llama.cpp's interleaved order (GGUF llama family),
  // so rope rotates pairs (2i, 2i+1) instead of (i, i + d/2).
  bool rope_interleaved = false;
  int sliding_window = 0;  // 0: full attention
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // bias on q/k/v projections (qwen2 always)
  bool attention_out_bias = false;
  bool mlp_bias = false;
  std::string hidden_act = "silu";
  // Rotary dims per head (gpt_neox rotary_pct, gptj rotary_dim, phi3
  // partial_rotary_factor); 0: all of head_dim.
  int rotary_dims = 0;
  // gpt_neox use_parallel_residual: x + attn(ln1(x)) + mlp(ln2(x)).
  bool parallel_residual = false;
  // gpt_neox: query_key_value rows are [q | k | v] (llama.cpp's GGUF) rather than
  // Hugging Face's per-head [q_h k_h v_h] groups.
  bool qkv_blocked = false;
  // rwkv: attention (time-mix) width and the halving of the residual every
  // rescale_every layers (0: never).
  int attention_hidden_size = 0;
  int rescale_every = 0;
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;
  // The pooling of an embedding model ("mean", "cls", "last", "none"), where its files
  // name one (sentence-transformers' 1_Pooling/config.json, GGUF pooling_type); empty
  // for generative models.
  std::string pooling;
};

// Parses config.json text; throws llm::Error for an unknown model_type or a
// missing/invalid field (the message names the field).
ModelConfig parse_hf_config(const std::string& json_text);
// Reads DIR/config.json (and DIR/1_Pooling/config.json where there is one).
ModelConfig load_hf_config(const std::string& dir);
// The pooling a sentence-transformers 1_Pooling/config.json names ("" for none we run).
std::string parse_st_pooling(const std::string& json_text);

// Model types this build can run.
std::vector<std::string> supported_model_types();

}  // namespace llm
