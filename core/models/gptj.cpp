// GPT-J (and MOSS-style checkpoints): one LayerNorm feeds attention and MLP in
// parallel; interleaved (GPT-J) rotary on the first rotary_dim dims of each head;
// no q/k/v/out biases, biased MLP and lm_head.
#include "core/models/step_builder.h"

namespace llm {

Graph build_gptj(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype) {
  StepBuilder b(cfg, shape, dtype);
  Graph& g = b.graph();
  const int64_t D = cfg.hidden_size, F = cfg.intermediate_size, V = cfg.vocab_size;
  const Op act = cfg.hidden_act == "gelu" ? Op::Gelu : Op::GeluTanh;

  TensorId x = g.add(Op::GetRows, "embed", {b.matrix("transformer.wte.weight", V, D), b.tokens},
                     DType::F32, {b.T(), D});
  for (int l = 0; l < cfg.num_layers; l++) {
    const std::string p = "transformer.h." + std::to_string(l) + ".";
    const std::string n = "layers." + std::to_string(l) + ".";
    const TensorId h = b.layer_norm(n + "norm", x, p + "ln_1", true);
    const TensorId q = b.linear(n + "attn.q", h, p + "attn.q_proj", D, D, false);
    const TensorId k = b.linear(n + "attn.k", h, p + "attn.k_proj", D, D, false);
    const TensorId v = b.linear(n + "attn.v", h, p + "attn.v_proj", D, D, false);
    TensorId a = b.attention(l, n + "attn", q, k, v);
    a = b.linear(n + "attn.o", a, p + "attn.out_proj", D, D, false);
    TensorId f = b.linear(n + "ffn.up", h, p + "mlp.fc_in", F, D, true);
    f = b.op(act, n + "ffn.act", {f});
    f = b.linear(n + "ffn.down", f, p + "mlp.fc_out", D, F, true);
    const TensorId sum = b.op(Op::Add, n + "ffn.attn_sum", {a, f});
    x = b.op(Op::Add, n + "residual", {x, sum});
  }
  x = b.rows_for_logits(x);
  x = b.layer_norm("output_norm", x, "transformer.ln_f", true);
  b.logits(x, b.matrix("lm_head.weight", V, D), b.vec("lm_head.bias", V));
  return std::move(g);
}

}  // namespace llm
