// The llama family: Llama 2/3, Mistral (sliding window), Qwen2 (q/k/v bias,
// tied embeddings), Phi-3 (fused qkv_proj [q | k | v] and gate_up_proj
// [gate | up], split in the graph; partial rotary). Pre-norm decoder with
// RMSNorm, NeoX rope, GQA attention and a SiLU-gated MLP, in Hugging Face's
// tensor names.
#include "core/models/step_builder.h"

namespace llm {

Graph build_llama(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype) {
  StepBuilder b(cfg, shape, dtype);
  Graph& g = b.graph();
  const int64_t D = cfg.hidden_size, F = cfg.intermediate_size;
  const int64_t H = cfg.num_heads, Hkv = cfg.num_kv_heads, Dh = cfg.head_dim;
  const int64_t V = cfg.vocab_size;
  const bool fused = cfg.model_type == "phi3";

  const TensorId embed = b.matrix("model.embed_tokens.weight", V, D);
  TensorId x = g.add(Op::GetRows, "embed", {embed, b.tokens}, DType::F32, {b.T(), D});
  for (int l = 0; l < cfg.num_layers; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string n = "layers." + std::to_string(l) + ".";
    TensorId h = b.rms_norm(n + "attn_norm", x, p + "input_layernorm");
    TensorId q, k, v;
    if (fused) {
      const TensorId qkv =
          b.linear(n + "attn.qkv", h, p + "self_attn.qkv_proj", (H + 2 * Hkv) * Dh, D, false);
      q = b.slice(n + "attn.q", qkv, 1, H * Dh, 0);
      k = b.slice(n + "attn.k", qkv, 1, Hkv * Dh, H * Dh);
      v = b.slice(n + "attn.v", qkv, 1, Hkv * Dh, (H + Hkv) * Dh);
    } else {
      q = b.linear(n + "attn.q", h, p + "self_attn.q_proj", H * Dh, D, cfg.attention_bias);
      k = b.linear(n + "attn.k", h, p + "self_attn.k_proj", Hkv * Dh, D, cfg.attention_bias);
      v = b.linear(n + "attn.v", h, p + "self_attn.v_proj", Hkv * Dh, D, cfg.attention_bias);
    }
    TensorId a = b.attention(l, n + "attn", q, k, v);
    a = b.linear(n + "attn.o", a, p + "self_attn.o_proj", D, H * Dh, cfg.attention_out_bias);
    x = b.op(Op::Add, n + "attn.residual", {x, a});

    h = b.rms_norm(n + "ffn_norm", x, p + "post_attention_layernorm");
    TensorId gate, up;
    if (fused) {
      const TensorId gu = b.linear(n + "ffn.gate_up", h, p + "mlp.gate_up_proj", 2 * F, D, false);
      gate = b.slice(n + "ffn.gate", gu, 1, F, 0);
      up = b.slice(n + "ffn.up", gu, 1, F, F);
    } else {
      gate = b.linear(n + "ffn.gate", h, p + "mlp.gate_proj", F, D, cfg.mlp_bias);
      up = b.linear(n + "ffn.up", h, p + "mlp.up_proj", F, D, cfg.mlp_bias);
    }
    const TensorId act = b.op(Op::SiluMul, n + "ffn.act", {gate, up});
    const TensorId down = b.linear(n + "ffn.down", act, p + "mlp.down_proj", D, F, cfg.mlp_bias);
    x = b.op(Op::Add, n + "ffn.residual", {x, down});
  }

  // Only the rows whose logits are wanted go through the final norm and the head.
  x = b.rows_for_logits(x);
  x = b.rms_norm("output_norm", x, "model.norm");
  b.logits(x, cfg.tie_word_embeddings ? embed : b.matrix("lm_head.weight", V, D));
  return std::move(g);
}

}  // namespace llm
