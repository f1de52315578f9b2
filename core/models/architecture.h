// Builds the graph of one model step from a config. One builder per
// architecture family (llama.cpp covers llama, mistral, qwen2 and phi3;
// gpt_neox.cpp, gptj.cpp, rwkv.cpp one each).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/graph.h"
#include "core/models/model_config.h"

namespace llm {

// The shape bucket of a step: the graph is built once per bucket and replayed.
// Per-step values (token ids, positions, cache slots, page tables) are inputs.
struct StepShape {
  int n_tokens = 1;             // tokens in the step, all sequences together
  int n_seqs = 1;               // sequences in the step
  int max_pages_per_seq = 1;    // columns of the block table
  int n_logit_rows = 1;         // tokens whose logits are computed
  int page_size = 16;           // KV cache page size in tokens
  int n_cache_slots = 16;       // total KV cache slots (pages * page_size)
  int n_state_slots = 1;        // rows of recurrent State tensors (RWKV): sequences alive at once
  DType kv_dtype = DType::F32;  // KV cache elements: F32, F16 or BF16
  // Embeddings: the step outputs the final norm's row of every token (kHidden,
  // [n_tokens, hidden], for pooling over a sequence) instead of logits and sampled ids.
  // The logit_rows and sample_params inputs are then declared but unused.
  bool hidden_output = false;
};

// The KV cache element types a step can use; throws llm::Error for others.
void check_kv_dtype(DType t);

// Names of a step's inputs and outputs (see Op::Attention for their meaning).
namespace step_io {
inline constexpr const char* kTokens = "tokens";               // [T] i32
inline constexpr const char* kPositions = "positions";         // [T] i32
inline constexpr const char* kSeqIds = "seq_ids";              // [T] i32
inline constexpr const char* kSlots = "slots";                 // [T] i32 cache slot per token
inline constexpr const char* kBlockTable = "block_table";      // [S, P] i32
inline constexpr const char* kLogitRows = "logit_rows";        // [R] i32 token index per row
inline constexpr const char* kLogits = "logits";               // [R, vocab] f32 output
inline constexpr const char* kSampleParams = "sample_params";  // [R, 5] f32: Op::Sample
inline constexpr const char* kSampled = "sampled_ids";  // [R] i32 output: Op::Sample of logits
inline constexpr const char* kHidden =
    "hidden";  // [T, hidden] f32 output: StepShape::hidden_output
// [S] i32: row of the recurrent State tensors that step sequence s reads and
// updates. Only graphs with recurrent state (RWKV) declare it.
inline constexpr const char* kStateSlots = "state_slots";
}  // namespace step_io

// State tensors: the KV cache (kv_cache_name, [n_cache_slots, ...], indexed by
// `slots`) and recurrent states (any other name, [n_state_slots, ...], indexed by
// `state_slots`). The engine allocates every State tensor a graph declares and
// zeroes a sequence's recurrent rows when the sequence starts.

// Name of the KV cache state tensors of a layer: [n_cache_slots, n_kv_heads*head_dim] f32.
std::string kv_cache_name(int layer, bool value);

// dtype in which the model stores a weight matrix (f32/f16/bf16 ...).
using WeightDTypeFn = std::function<DType(const std::string& name)>;

// Builds the step graph for cfg.model_type; throws for an unknown type.
Graph build_step_graph(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype);

// The rope inverse frequencies of cfg (rope_theta and rope_scaling applied), rot/2 values.
// context: the step's context window; longrope uses its long factors beyond the
// original context (as llama.cpp does; transformers switches by sequence length).
std::vector<float> rope_inv_freq(const ModelConfig& cfg, int rot_dims, int64_t context = 0);
// The factor rope's cos/sin are multiplied by (longrope), 1 otherwise; q·k scales by its square.
float rope_attention_factor(const ModelConfig& cfg);

// Architecture builders (one file each).
Graph build_llama(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype);
Graph build_gpt_neox(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype);
Graph build_gptj(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype);
Graph build_rwkv(const ModelConfig& cfg, const StepShape& shape, const WeightDTypeFn& dtype);

// Name of an RWKV recurrent state of a layer ("att_shift", "ffn_shift", "wkv").
std::string rwkv_state_name(int layer, const char* what);

}  // namespace llm
