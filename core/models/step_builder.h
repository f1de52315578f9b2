// Shared pieces of the architecture builders: weight declarations, linear
// layers, the standard step inputs, rotary attention over the paged KV cache,
// and the logits head. Each architecture file composes these.
#pragma once

#include <string>

#include "core/models/architecture.h"

namespace llm {

class StepBuilder {
 public:
  StepBuilder(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype);

  Graph& graph() { return g_; }
  int64_t T() const { return shape_.n_tokens; }

  // A weight matrix in the model's dtype, and an f32 vector (norms, biases).
  TensorId matrix(const std::string& name, int64_t rows, int64_t cols);
  TensorId vec(const std::string& name, Shape shape);
  TensorId vec(const std::string& name, int64_t n) { return vec(name, Shape{n}); }
  // x [T, in] · W[out, in]ᵀ (+ bias) for weight prefix w (w.weight, w.bias).
  TensorId linear(const std::string& node, TensorId x, const std::string& w, int64_t out,
                  int64_t in, bool bias);
  TensorId layer_norm(const std::string& node, TensorId x, const std::string& w, bool bias);
  TensorId rms_norm(const std::string& node, TensorId x, const std::string& w);
  // Columns [offset, offset + width) of each of `groups` equal groups of x's rows.
  TensorId slice(const std::string& node, TensorId x, int64_t groups, int64_t width,
                 int64_t offset);
  TensorId op(Op op, const std::string& node, std::vector<TensorId> in, OpParams p = {});

  // The step inputs of step_io (all graphs declare them, so engines can set them alike).
  TensorId tokens, positions, seq_ids, slots, block_table, logit_rows, sample_params;
  // Declared by recurrent architectures only.
  TensorId state_slots();

  // Rope on q and k (cfg.rotary_dims, cfg.rope_interleaved), KV append and causal
  // attention for layer l; returns the attention output [T, H * head_dim].
  TensorId attention(int layer, const std::string& node, TensorId q, TensorId k, TensorId v);

  // GetRows of the logit rows, the final norm (given as a callback on [R, D]) and the
  // head; marks the logits output.
  TensorId rows_for_logits(TensorId x);
  void logits(TensorId x, TensorId head, TensorId head_bias = -1);

 private:
  const ModelConfig& cfg_;
  StepShape shape_;
  WeightDTypeFn dtype_;
  Graph g_;
  TensorId rope_freq_ = -1;
  TensorId state_slots_ = -1;
};

}  // namespace llm
