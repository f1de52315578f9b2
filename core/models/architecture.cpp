#include "core/models/architecture.h"

#include <cmath>

#include "core/error.h"

namespace llm {

void check_kv_dtype(DType t) {
  if (t != DType::F32 && t != DType::F16 && t != DType::BF16)
    fail("KV cache type %s: expected f32, f16 or bf16", dtype_name(t));
}

std::string kv_cache_name(int layer, bool value) {
  return std::string(value ? "cache.v." : "cache.k.") + std::to_string(layer);
}

Graph build_step_graph(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype) {
  if (cfg.model_type == "llama" || cfg.model_type == "mistral" || cfg.model_type == "qwen2" ||
      cfg.model_type == "phi3")
    return build_llama(cfg, shape, dtype);
  if (cfg.model_type == "gpt_neox") return build_gpt_neox(cfg, shape, dtype);
  if (cfg.model_type == "gptj") return build_gptj(cfg, shape, dtype);
  if (cfg.model_type == "rwkv") return build_rwkv(cfg, shape, dtype);
  fail("no graph builder for model_type '%s'", cfg.model_type.c_str());
}

std::vector<float> rope_inv_freq(const ModelConfig& cfg, int rot_dims, int64_t context) {
  const int half = rot_dims / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; i++) {
    // As transformers: base ** (arange(0, dim, 2) / dim) in float32.
    const float expo = static_cast<float>(2 * i) / static_cast<float>(rot_dims);
    inv[i] = 1.0f / std::pow(cfg.rope_theta, expo);
  }
  if (!cfg.rope_freq_factors.empty()) {
    if (static_cast<int>(cfg.rope_freq_factors.size()) != half)
      fail("rope frequency factors: %zu values for %d frequencies", cfg.rope_freq_factors.size(),
           half);
    for (int i = 0; i < half; i++) inv[i] /= cfg.rope_freq_factors[i];
  }
  const RopeScaling& rs = cfg.rope_scaling;
  if (rs.type == "longrope") {
    const bool long_ctx = context > rs.original_max_position_embeddings;
    const std::vector<float>& ext = long_ctx ? rs.long_factor : rs.short_factor;
    if (static_cast<int>(ext.size()) != half)
      fail("rope_scaling: %zu longrope factors for %d rotary frequencies", ext.size(), half);
    for (int i = 0; i < half; i++) inv[i] /= ext[i];
  } else if (rs.type == "linear") {
    for (float& f : inv) f /= rs.factor;
  } else if (rs.type == "llama3") {
    const double old_ctx = rs.original_max_position_embeddings;
    const double low_wavelen = old_ctx / rs.low_freq_factor;
    const double high_wavelen = old_ctx / rs.high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_wavelen) continue;  // high frequencies unchanged
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / rs.factor);
      } else {
        const double smooth =
            (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        f = static_cast<float>((1.0 - smooth) * f / rs.factor + smooth * f);
      }
    }
  }
  return inv;
}

float rope_attention_factor(const ModelConfig& cfg) {
  const RopeScaling& rs = cfg.rope_scaling;
  if (rs.type != "longrope") return 1.f;
  if (rs.attention_factor > 0) return rs.attention_factor;
  const double scale =
      double(cfg.max_position_embeddings) / double(rs.original_max_position_embeddings);
  if (scale <= 1.0) return 1.f;
  return static_cast<float>(
      std::sqrt(1.0 + std::log(scale) / std::log(double(rs.original_max_position_embeddings))));
}

}  // namespace llm
