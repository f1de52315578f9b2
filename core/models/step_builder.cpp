#include "core/models/step_builder.h"

#include <cmath>

namespace llm {

StepBuilder::StepBuilder(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype)
    : cfg_(cfg), shape_(shape), dtype_(dtype) {
  const int64_t n = shape.n_tokens;
  tokens = g_.input(step_io::kTokens, DType::I32, {n});
  positions = g_.input(step_io::kPositions, DType::I32, {n});
  seq_ids = g_.input(step_io::kSeqIds, DType::I32, {n});
  slots = g_.input(step_io::kSlots, DType::I32, {n});
  block_table = g_.input(step_io::kBlockTable, DType::I32, {shape.n_seqs, shape.max_pages_per_seq});
  logit_rows = g_.input(step_io::kLogitRows, DType::I32, {shape.n_logit_rows});
  sample_params =
      g_.input(step_io::kSampleParams, DType::F32, {shape.n_logit_rows, kSampleParamCount});
}

TensorId StepBuilder::matrix(const std::string& name, int64_t rows, int64_t cols) {
  return g_.weight(name, dtype_(name), {rows, cols});
}

TensorId StepBuilder::vec(const std::string& name, Shape shape) {
  return g_.weight(name, DType::F32, shape);
}

TensorId StepBuilder::linear(const std::string& node, TensorId x, const std::string& w, int64_t out,
                             int64_t in, bool bias) {
  std::vector<TensorId> ins = {x, matrix(w + ".weight", out, in)};
  if (bias) ins.push_back(vec(w + ".bias", out));
  return g_.add(Op::MatMul, node, ins, DType::F32, {g_.tensor(x).shape.rows(), out});
}

TensorId StepBuilder::layer_norm(const std::string& node, TensorId x, const std::string& w,
                                 bool bias) {
  const Shape& s = g_.tensor(x).shape;
  std::vector<TensorId> ins = {x, vec(w + ".weight", s.row_len())};
  if (bias) ins.push_back(vec(w + ".bias", s.row_len()));
  OpParams p;
  p.eps = cfg_.norm_eps;
  return g_.add(Op::LayerNorm, node, ins, DType::F32, s, p);
}

TensorId StepBuilder::rms_norm(const std::string& node, TensorId x, const std::string& w) {
  const Shape& s = g_.tensor(x).shape;
  OpParams p;
  p.eps = cfg_.norm_eps;
  return g_.add(Op::RmsNorm, node, {x, vec(w + ".weight", s.row_len())}, DType::F32, s, p);
}

TensorId StepBuilder::slice(const std::string& node, TensorId x, int64_t groups, int64_t width,
                            int64_t offset) {
  OpParams p;
  p.n_heads = static_cast<int>(groups);
  p.head_dim = static_cast<int>(width);
  p.offset = static_cast<int>(offset);
  return g_.add(Op::Slice, node, {x}, DType::F32, {g_.tensor(x).shape.rows(), groups * width}, p);
}

TensorId StepBuilder::op(Op op, const std::string& node, std::vector<TensorId> in, OpParams p) {
  const Shape s = g_.tensor(in[0]).shape;
  return g_.add(op, node, std::move(in), DType::F32, s, p);
}

TensorId StepBuilder::state_slots() {
  if (state_slots_ < 0) state_slots_ = g_.input(step_io::kStateSlots, DType::I32, {shape_.n_seqs});
  return state_slots_;
}

TensorId StepBuilder::attention(int layer, const std::string& node, TensorId q, TensorId k,
                                TensorId v) {
  const int64_t H = cfg_.num_heads, Hkv = cfg_.num_kv_heads, Dh = cfg_.head_dim;
  const int rot = cfg_.rotary_dims > 0 ? cfg_.rotary_dims : cfg_.head_dim;
  if (rope_freq_ < 0) {
    const std::vector<float> inv =
        rope_inv_freq(cfg_, rot, int64_t(shape_.max_pages_per_seq) * shape_.page_size);
    rope_freq_ =
        g_.constant("rope.inv_freq", DType::F32, {static_cast<int64_t>(inv.size())}, inv.data());
  }
  OpParams rope;
  rope.head_dim = static_cast<int>(Dh);
  rope.rot_dims = rot;
  rope.rope_style = cfg_.rope_interleaved ? RopeStyle::GptJ : RopeStyle::NeoX;
  rope.n_heads = static_cast<int>(H);
  q = g_.add(Op::Rope, node + ".q_rope", {q, positions, rope_freq_}, DType::F32, {T(), H * Dh},
             rope);
  rope.n_heads = static_cast<int>(Hkv);
  k = g_.add(Op::Rope, node + ".k_rope", {k, positions, rope_freq_}, DType::F32, {T(), Hkv * Dh},
             rope);
  const TensorId k_cache =
      g_.state(kv_cache_name(layer, false), shape_.kv_dtype, {shape_.n_cache_slots, Hkv * Dh});
  const TensorId v_cache =
      g_.state(kv_cache_name(layer, true), shape_.kv_dtype, {shape_.n_cache_slots, Hkv * Dh});
  g_.add_inplace(Op::KvAppend, node + ".k_store", {k, slots, k_cache}, k_cache);
  g_.add_inplace(Op::KvAppend, node + ".v_store", {v, slots, v_cache}, v_cache);
  OpParams attn;
  attn.n_heads = static_cast<int>(H);
  attn.n_kv_heads = static_cast<int>(Hkv);
  attn.head_dim = static_cast<int>(Dh);
  // longrope scales cos and sin, so q·k by the factor squared.
  const float rope_factor = rope_attention_factor(cfg_);
  attn.scale = rope_factor * rope_factor / std::sqrt(static_cast<float>(Dh));
  attn.window = cfg_.sliding_window;
  attn.page_size = shape_.page_size;
  return g_.add(Op::Attention, node + ".sdpa",
                {q, k_cache, v_cache, positions, seq_ids, block_table}, DType::F32, {T(), H * Dh},
                attn);
}

TensorId StepBuilder::rows_for_logits(TensorId x) {
  // One token, one row: the row is that token's (a decode step saves a launch). Embedding
  // steps keep every row.
  if ((shape_.n_tokens == 1 && shape_.n_logit_rows == 1) || shape_.hidden_output) return x;
  const int64_t D = g_.tensor(x).shape.row_len();
  return g_.add(Op::GetRows, "logit_rows", {x, logit_rows}, DType::F32, {shape_.n_logit_rows, D});
}

void StepBuilder::logits(TensorId x, TensorId head, TensorId head_bias) {
  if (shape_.hidden_output) {
    // Embeddings are the final norm's output (llama.cpp's too); the head is not run.
    g_.mark_output(x, step_io::kHidden);
    return;
  }
  std::vector<TensorId> ins = {x, head};
  if (head_bias >= 0) ins.push_back(head_bias);
  const TensorId out = g_.add(Op::MatMul, "output", ins, DType::F32,
                              {shape_.n_logit_rows, int64_t{cfg_.vocab_size}});
  g_.mark_output(out, step_io::kLogits);
  // Greedy and plain temperature rows read their token id from here instead of the
  // whole row of logits.
  const TensorId ids =
      g_.add(Op::Sample, "sample", {out, sample_params}, DType::I32, {shape_.n_logit_rows});
  g_.mark_output(ids, step_io::kSampled);
}

}  // namespace llm
