// RWKV-4 (Hugging Face RwkvForCausalLM): no attention; per layer a time-mix
// (token shift, WKV recurrence, receptance gate) and a channel-mix (token shift,
// squared-ReLU MLP, receptance gate). The recurrent state of a sequence lives in
// State tensors [n_state_slots, ...] (see architecture.h), indexed by state_slots.
#include <algorithm>

#include "core/models/step_builder.h"

namespace llm {

std::string rwkv_state_name(int layer, const char* what) {
  return "state." + std::to_string(layer) + "." + what;
}

Graph build_rwkv(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype) {
  StepBuilder b(cfg, shape, dtype);
  Graph& g = b.graph();
  const int64_t D = cfg.hidden_size, A = cfg.attention_hidden_size, F = cfg.intermediate_size;
  const int64_t V = cfg.vocab_size, S = shape.n_state_slots;
  const TensorId state_slots = b.state_slots();
  auto mix_w = [&](const std::string& name) { return b.vec(name, Shape{1, 1, D}); };
  // x of the previous token (or the carried state) for each token.
  auto shifted = [&](const std::string& node, TensorId x, int l, const char* what) {
    const TensorId st = g.state(rwkv_state_name(l, what), DType::F32, {S, D});
    return b.op(Op::TokenShift, node, {x, st, b.seq_ids, state_slots});
  };

  TensorId x = g.add(Op::GetRows, "embed", {b.matrix("rwkv.embeddings.weight", V, D), b.tokens},
                     DType::F32, {b.T(), D});
  for (int l = 0; l < cfg.num_layers; l++) {
    const std::string p = "rwkv.blocks." + std::to_string(l) + ".";
    const std::string n = "layers." + std::to_string(l) + ".";
    if (l == 0) x = b.layer_norm("pre_norm", x, p + "pre_ln", true);
    // HF divides these two weights by 2^(l / rescale_every) in eval mode; scaling the
    // outputs by a power of two is the same, exactly.
    const int halvings = cfg.rescale_every > 0 ? l / cfg.rescale_every : 0;
    OpParams rescale;
    rescale.scale = 1.0f / static_cast<float>(1 << std::min(halvings, 30));

    // Time-mix.
    TensorId h = b.layer_norm(n + "att_norm", x, p + "ln1", true);
    TensorId sh = shifted(n + "att.shift", h, l, "att_shift");
    const std::string ap = p + "attention.";
    auto mixed = [&](const std::string& node, const std::string& w) {
      return b.op(Op::Mix, node, {h, sh, mix_w(w)});
    };
    TensorId k =
        b.linear(n + "att.k", mixed(n + "att.mix_k", ap + "time_mix_key"), ap + "key", A, D, false);
    TensorId v = b.linear(n + "att.v", mixed(n + "att.mix_v", ap + "time_mix_value"), ap + "value",
                          A, D, false);
    TensorId r = b.linear(n + "att.r", mixed(n + "att.mix_r", ap + "time_mix_receptance"),
                          ap + "receptance", A, D, false);
    const TensorId wkv_state = g.state(rwkv_state_name(l, "wkv"), DType::F32, {S, 3 * A});
    TensorId w = b.op(Op::Wkv, n + "att.wkv",
                      {k, v, b.vec(ap + "time_decay", A), b.vec(ap + "time_first", A), wkv_state,
                       b.seq_ids, state_slots});
    w = b.op(Op::SigmoidMul, n + "att.gate", {r, w});
    TensorId a = b.linear(n + "att.o", w, ap + "output", D, A, false);
    if (halvings > 0) a = b.op(Op::Scale, n + "att.rescale", {a}, rescale);
    x = b.op(Op::Add, n + "att.residual", {x, a});

    // Channel-mix.
    h = b.layer_norm(n + "ffn_norm", x, p + "ln2", true);
    sh = shifted(n + "ffn.shift", h, l, "ffn_shift");
    const std::string fp = p + "feed_forward.";
    k = b.linear(n + "ffn.k", b.op(Op::Mix, n + "ffn.mix_k", {h, sh, mix_w(fp + "time_mix_key")}),
                 fp + "key", F, D, false);
    k = b.op(Op::ReluSqr, n + "ffn.act", {k});
    v = b.linear(n + "ffn.v", k, fp + "value", D, F, false);
    if (halvings > 0) v = b.op(Op::Scale, n + "ffn.rescale", {v}, rescale);
    r = b.linear(n + "ffn.r",
                 b.op(Op::Mix, n + "ffn.mix_r", {h, sh, mix_w(fp + "time_mix_receptance")}),
                 fp + "receptance", D, D, false);
    v = b.op(Op::SigmoidMul, n + "ffn.gate", {r, v});
    x = b.op(Op::Add, n + "ffn.residual", {x, v});
    if (cfg.rescale_every > 0 && (l + 1) % cfg.rescale_every == 0) {
      OpParams half;
      half.scale = 0.5f;
      x = b.op(Op::Scale, n + "rescale", {x}, half);
    }
  }
  x = b.rows_for_logits(x);
  x = b.layer_norm("output_norm", x, "rwkv.ln_out", true);
  b.logits(x, b.matrix("head.weight", V, D));
  return std::move(g);
}

}  // namespace llm
