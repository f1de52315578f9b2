// GPT-NeoX (Pythia, RedPajama-INCITE, Dolly v2): LayerNorm with bias, a fused
// query_key_value projection laid out per head as [q | k | v] (or as whole
// [q | k | v] blocks in llama.cpp's GGUF), partial NeoX
// rotary, a GELU MLP, sequential or parallel residual, untied embed_out.
#include "core/models/step_builder.h"

namespace llm {

Graph build_gpt_neox(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype) {
  StepBuilder b(cfg, shape, dtype);
  Graph& g = b.graph();
  const int64_t D = cfg.hidden_size, F = cfg.intermediate_size, H = cfg.num_heads;
  const int64_t Dh = cfg.head_dim, V = cfg.vocab_size;
  const Op act = cfg.hidden_act == "gelu" ? Op::Gelu : Op::GeluTanh;

  TensorId x = g.add(Op::GetRows, "embed", {b.matrix("gpt_neox.embed_in.weight", V, D), b.tokens},
                     DType::F32, {b.T(), D});
  for (int l = 0; l < cfg.num_layers; l++) {
    const std::string p = "gpt_neox.layers." + std::to_string(l) + ".";
    const std::string n = "layers." + std::to_string(l) + ".";
    TensorId h = b.layer_norm(n + "attn_norm", x, p + "input_layernorm", true);
    const TensorId qkv =
        b.linear(n + "attn.qkv", h, p + "attention.query_key_value", 3 * D, D, cfg.attention_bias);
    const int64_t groups = cfg.qkv_blocked ? 1 : H, width = cfg.qkv_blocked ? D : Dh;
    const TensorId q = b.slice(n + "attn.q", qkv, groups, width, 0);
    const TensorId k = b.slice(n + "attn.k", qkv, groups, width, width);
    const TensorId v = b.slice(n + "attn.v", qkv, groups, width, 2 * width);
    TensorId a = b.attention(l, n + "attn", q, k, v);
    a = b.linear(n + "attn.o", a, p + "attention.dense", D, D, cfg.attention_out_bias);

    // Parallel: x + attn(ln1(x)) + mlp(ln2(x)); sequential: y = x + attn; y + mlp(ln2(y)).
    const TensorId mlp_in = cfg.parallel_residual ? x : b.op(Op::Add, n + "attn.residual", {x, a});
    h = b.layer_norm(n + "ffn_norm", mlp_in, p + "post_attention_layernorm", true);
    TensorId f = b.linear(n + "ffn.up", h, p + "mlp.dense_h_to_4h", F, D, true);
    f = b.op(act, n + "ffn.act", {f});
    f = b.linear(n + "ffn.down", f, p + "mlp.dense_4h_to_h", D, F, true);
    if (cfg.parallel_residual) f = b.op(Op::Add, n + "ffn.attn_sum", {f, a});
    x = b.op(Op::Add, n + "ffn.residual", {mlp_in, f});
  }
  x = b.rows_for_logits(x);
  x = b.layer_norm("output_norm", x, "gpt_neox.final_layer_norm", true);
  b.logits(x, cfg.tie_word_embeddings ? g.find("gpt_neox.embed_in.weight")
                                      : b.matrix("embed_out.weight", V, D));
  return std::move(g);
}

}  // namespace llm
