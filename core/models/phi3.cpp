// Phi-3 / Phi-3.5: the llama layout (RMSNorm, NeoX rotary, GQA, SiLU-gated MLP)
// with a fused qkv_proj [q | k | v] and a fused gate_up_proj [gate | up], split
// in the graph.
#include "core/models/step_builder.h"

namespace llm {

Graph build_phi3(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype) {
  StepBuilder b(cfg, shape, dtype);
  Graph& g = b.graph();
  const int64_t D = cfg.hidden_size, F = cfg.intermediate_size, V = cfg.vocab_size;
  const int64_t Q = int64_t{cfg.num_heads} * cfg.head_dim;
  const int64_t KV = int64_t{cfg.num_kv_heads} * cfg.head_dim;

  const TensorId embed = b.matrix("model.embed_tokens.weight", V, D);
  TensorId x = g.add(Op::GetRows, "embed", {embed, b.tokens}, DType::F32, {b.T(), D});
  for (int l = 0; l < cfg.num_layers; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string n = "layers." + std::to_string(l) + ".";
    TensorId h = b.rms_norm(n + "attn_norm", x, p + "input_layernorm");
    const TensorId qkv =
        b.linear(n + "attn.qkv", h, p + "self_attn.qkv_proj", Q + 2 * KV, D, false);
    const TensorId q = b.slice(n + "attn.q", qkv, 1, Q, 0);
    const TensorId k = b.slice(n + "attn.k", qkv, 1, KV, Q);
    const TensorId v = b.slice(n + "attn.v", qkv, 1, KV, Q + KV);
    TensorId a = b.attention(l, n + "attn", q, k, v);
    a = b.linear(n + "attn.o", a, p + "self_attn.o_proj", D, Q, false);
    x = b.op(Op::Add, n + "attn.residual", {x, a});

    h = b.rms_norm(n + "ffn_norm", x, p + "post_attention_layernorm");
    const TensorId gu = b.linear(n + "ffn.gate_up", h, p + "mlp.gate_up_proj", 2 * F, D, false);
    const TensorId gate = b.slice(n + "ffn.gate", gu, 1, F, 0);
    const TensorId up = b.slice(n + "ffn.up", gu, 1, F, F);
    TensorId f = b.op(Op::SiluMul, n + "ffn.act", {gate, up});
    f = b.linear(n + "ffn.down", f, p + "mlp.down_proj", D, F, false);
    x = b.op(Op::Add, n + "ffn.residual", {x, f});
  }
  x = b.rows_for_logits(x);
  x = b.rms_norm("output_norm", x, "model.norm");
  b.logits(x, cfg.tie_word_embeddings ? embed : b.matrix("lm_head.weight", V, D));
  return std::move(g);
}

}  // namespace llm
