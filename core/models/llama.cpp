// The llama family: Llama 2/3, Mistral (sliding window), Qwen2 (q/k/v bias,
// tied embeddings). Pre-norm decoder with RMSNorm, NeoX rope, GQA attention
// and a SiLU-gated MLP, in Hugging Face's tensor names.
#include <cmath>

#include "core/models/architecture.h"

namespace llm {

Graph build_llama(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype) {
  Graph g;
  const int64_t T = shape.n_tokens, D = cfg.hidden_size, F = cfg.intermediate_size;
  const int64_t H = cfg.num_heads, Hkv = cfg.num_kv_heads, Dh = cfg.head_dim;
  const int64_t V = cfg.vocab_size;

  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    return g.weight(name, dtype(name), {rows, cols});
  };
  auto vec = [&](const std::string& name, int64_t n) { return g.weight(name, DType::F32, {n}); };
  auto linear = [&](const std::string& node, TensorId x, const std::string& w, int64_t out,
                    int64_t in, bool bias) {
    std::vector<TensorId> ins = {x, matrix(w + ".weight", out, in)};
    if (bias) ins.push_back(vec(w + ".bias", out));
    return g.add(Op::MatMul, node, ins, DType::F32, {T, out});
  };

  const TensorId tokens = g.input(step_io::kTokens, DType::I32, {T});
  const TensorId positions = g.input(step_io::kPositions, DType::I32, {T});
  const TensorId seq_ids = g.input(step_io::kSeqIds, DType::I32, {T});
  const TensorId slots = g.input(step_io::kSlots, DType::I32, {T});
  const TensorId block_table =
      g.input(step_io::kBlockTable, DType::I32, {shape.n_seqs, shape.max_pages_per_seq});
  const TensorId logit_rows = g.input(step_io::kLogitRows, DType::I32, {shape.n_logit_rows});

  const std::vector<float> inv_freq = rope_inv_freq(cfg, static_cast<int>(Dh));
  const TensorId rope_freq = g.constant("rope.inv_freq", DType::F32,
                                        {static_cast<int64_t>(inv_freq.size())}, inv_freq.data());

  const std::string embed_name = "model.embed_tokens.weight";
  const TensorId embed = matrix(embed_name, V, D);
  TensorId x = g.add(Op::GetRows, "embed", {embed, tokens}, DType::F32, {T, D});

  OpParams norm;
  norm.eps = cfg.norm_eps;
  OpParams rope;
  rope.head_dim = static_cast<int>(Dh);
  rope.rot_dims = static_cast<int>(Dh);
  rope.rope_style = cfg.rope_interleaved ? RopeStyle::GptJ : RopeStyle::NeoX;
  OpParams attn;
  attn.n_heads = static_cast<int>(H);
  attn.n_kv_heads = static_cast<int>(Hkv);
  attn.head_dim = static_cast<int>(Dh);
  attn.scale = 1.0f / std::sqrt(static_cast<float>(Dh));
  attn.window = cfg.sliding_window;
  attn.page_size = shape.page_size;

  for (int l = 0; l < cfg.num_layers; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string n = "layers." + std::to_string(l) + ".";
    TensorId h = g.add(Op::RmsNorm, n + "attn_norm", {x, vec(p + "input_layernorm.weight", D)},
                       DType::F32, {T, D}, norm);
    TensorId q = linear(n + "attn.q", h, p + "self_attn.q_proj", H * Dh, D, cfg.attention_bias);
    TensorId k = linear(n + "attn.k", h, p + "self_attn.k_proj", Hkv * Dh, D, cfg.attention_bias);
    TensorId v = linear(n + "attn.v", h, p + "self_attn.v_proj", Hkv * Dh, D, cfg.attention_bias);
    rope.n_heads = static_cast<int>(H);
    q = g.add(Op::Rope, n + "attn.q_rope", {q, positions, rope_freq}, DType::F32, {T, H * Dh}, rope);
    rope.n_heads = static_cast<int>(Hkv);
    k = g.add(Op::Rope, n + "attn.k_rope", {k, positions, rope_freq}, DType::F32, {T, Hkv * Dh},
              rope);
    const TensorId k_cache =
        g.state(kv_cache_name(l, false), DType::F32, {shape.n_cache_slots, Hkv * Dh});
    const TensorId v_cache =
        g.state(kv_cache_name(l, true), DType::F32, {shape.n_cache_slots, Hkv * Dh});
    g.add_inplace(Op::KvAppend, n + "attn.k_store", {k, slots, k_cache}, k_cache);
    g.add_inplace(Op::KvAppend, n + "attn.v_store", {v, slots, v_cache}, v_cache);
    TensorId a = g.add(Op::Attention, n + "attn.sdpa",
                       {q, k_cache, v_cache, positions, seq_ids, block_table}, DType::F32,
                       {T, H * Dh}, attn);
    a = linear(n + "attn.o", a, p + "self_attn.o_proj", D, H * Dh, cfg.attention_out_bias);
    x = g.add(Op::Add, n + "attn.residual", {x, a}, DType::F32, {T, D});

    h = g.add(Op::RmsNorm, n + "ffn_norm", {x, vec(p + "post_attention_layernorm.weight", D)},
              DType::F32, {T, D}, norm);
    const TensorId gate = linear(n + "ffn.gate", h, p + "mlp.gate_proj", F, D, cfg.mlp_bias);
    const TensorId up = linear(n + "ffn.up", h, p + "mlp.up_proj", F, D, cfg.mlp_bias);
    const TensorId act = g.add(Op::SiluMul, n + "ffn.act", {gate, up}, DType::F32, {T, F});
    const TensorId down = linear(n + "ffn.down", act, p + "mlp.down_proj", D, F, cfg.mlp_bias);
    x = g.add(Op::Add, n + "ffn.residual", {x, down}, DType::F32, {T, D});
  }

  // Only the rows whose logits are wanted go through the final norm and the head.
  const int64_t R = shape.n_logit_rows;
  x = g.add(Op::GetRows, "logit_rows", {x, logit_rows}, DType::F32, {R, D});
  x = g.add(Op::RmsNorm, "output_norm", {x, vec("model.norm.weight", D)}, DType::F32, {R, D}, norm);
  const TensorId head = cfg.tie_word_embeddings ? embed : matrix("lm_head.weight", V, D);
  const TensorId logits = g.add(Op::MatMul, "output", {x, head}, DType::F32, {R, V});
  g.mark_output(logits, step_io::kLogits);
  return g;
}

}  // namespace llm
