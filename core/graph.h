// Graph IR: a list of op nodes over named tensors, built by a model file once per
// step shape (see core/models). Nodes are kept in execution order; the executor
// runs them in that order and plans intermediate memory from their liveness.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace llm {

// The op set of DESIGN.md. Every backend implements each op with the semantics
// documented here; the CPU backend (backends/cpu) is the reference.
enum class Op : uint8_t {
  // out[r, :] = f32(table[ids[r], :]).  in: table [V, D] (any dtype), ids [R] i32.
  GetRows,
  // out = x / rms(x) * w (per row); in: x [T, D], w [D]. p.eps.
  RmsNorm,
  // out = (x - mean) / std * w + b; in: x, w [, b]. p.eps.
  LayerNorm,
  // out = x · Wᵀ (+ bias); in: x [T, K] f32, W [N, K] (f32/f16/bf16/q8_0/q4_0) [, bias [N]].
  MatMul,
  // Rotary embedding on x [T, H*D] viewed as [T, H, D]; in: x, positions [T] i32,
  // inv_freq [rot/2] f32. p.n_heads, p.head_dim, p.rot_dims, p.rope_style.
  Rope,
  // Writes rows of src [T, W] into cache [slots, W] at slots[t]; in: src, slots [T] i32,
  // cache. The output is the cache itself (updated in place).
  KvAppend,
  // Causal attention over the paged KV cache. in: q [T, H*D], k_cache, v_cache
  // [pages*page_size, Hkv*D], positions [T] i32, seq_ids [T] i32, block_table [S, P] i32.
  // Token t of sequence s at position p attends to positions max(0, p-window+1)..p,
  // whose cache slot is block_table[s][j / page_size] * page_size + j % page_size.
  // p.n_heads, p.n_kv_heads, p.head_dim, p.scale, p.window (0 = none), p.page_size, p.softcap.
  Attention,
  // out = silu(a) * b; in: a, b of one shape.
  SiluMul,
  // out = gelu(a) * b (erf form).
  GeluMul,
  // out = gelu(a) (erf form) / gelu_tanh(a).
  Gelu,
  GeluTanh,
  // out = a + b / a * b (same shape, or b one row broadcast over the rows of a).
  Add,
  Mul,
  // out = a * p.scale.
  Scale,
  // Columns of groups: a [T, G*Win] viewed as [T, G, Win]; out [T, G, p.head_dim] takes
  // columns p.offset .. p.offset + p.head_dim of each group. G = p.n_heads (1 for a
  // plain column range). Splits fused projections (phi3 qkv/gate_up, gpt_neox qkv).
  Slice,
  // out = a * w + b * (1 - w); in: a, b [T, D], w [D] (RWKV time_mix).
  Mix,
  // out = sigmoid(a) * b (RWKV receptance gate).
  SigmoidMul,
  // out = relu(a)² (RWKV channel-mix key).
  ReluSqr,
  // RWKV token shift. in: x [T, D], state [n_state_slots, D], seq_ids [T] i32,
  // state_slots [S] i32. out[t] = x of the previous token of sequence s = seq_ids[t] in
  // this step, or state[state_slots[s]] for its first token; then state[state_slots[s]]
  // is set to x of the last token of s (the state is updated in place). Tokens of one
  // sequence are in order in the step; sequences may interleave.
  TokenShift,
  // RWKV-4 WKV recurrence (HF rwkv_linear_attention), a scan over the tokens of each
  // sequence. in: k, v [T, A], time_decay [A] (w = -exp(time_decay)), time_first [A] (u),
  // state [n_state_slots, 3*A] = (num, den, max) per channel, seq_ids [T], state_slots [S].
  // Per token: m = max(max, k+u); out = (e^(max-m) num + e^(k+u-m) v) / (e^(max-m) den +
  // e^(k+u-m)); then m' = max(max+w, k); num = e^(max+w-m') num + e^(k-m') v; den likewise;
  // max = m'. The state row is updated in place. An all-zero row is a fresh sequence
  // (num = den = 0 represents the same sums as HF's max = -1e38).
  Wkv,
  // One token per row of logits. in: x [R, N] f32, params [R, kSampleParamCount] f32 =
  // (temperature, u, top_k, top_p, min_p); out [R] i32. Temperature 0: the index of the
  // largest value (the first of equal ones; NaN ranks below every number; a row of NaNs
  // gives 0). Above 0 (the argmax when the largest value is not finite), with weights
  // w_i = exp((x_i - max) / temperature) (NaN weighs 0) and u in [0, 1): the first
  // index, in index order, at which the running sum of the kept tokens' weights
  // exceeds u * their sum. Every token is kept unless a cut is on (top_k > 0, top_p <
  // 1, min_p > 0); then the kept tokens are the first `keep` of the non-NaN tokens
  // ordered by value (descending, equal values by index), keep = min(K, P, M):
  //   K = top_k when 0 < top_k < their count, else their count;
  //   P = when top_p < 1, the shortest prefix whose mass reaches top_p of the first K's
  //       mass, masses in fixed point for one answer on every device: a token's is
  //       floor(w_i * 2^31), sums are exact, and the target is floor(S_K * t / 2^24)
  //       with t = floor(top_p * 2^24);
  //   M = when min_p > 0, the tokens with (x_i - max) / temperature >= ln(min_p)
  //       (w_i >= min_p), a prefix of the order.
  // Greedy and filtered sampling read these R ids instead of R x vocab logits.
  Sample,
  kCount
};

const char* op_name(Op op);

// Op::Sample's parameters per row: temperature, u, top_k, top_p, min_p.
inline constexpr int kSampleParamCount = 5;
using SampleRow = std::array<float, kSampleParamCount>;
// A greedy row: temperature 0, every cut off (top_p 1).
inline constexpr SampleRow kGreedySampleRow = {0.f, 0.f, 0.f, 1.f, 0.f};
// n greedy rows, one after the other.
inline std::vector<float> greedy_sample_rows(size_t n) {
  std::vector<float> rows;
  rows.reserve(n * kSampleParamCount);
  for (size_t i = 0; i < n; i++)
    rows.insert(rows.end(), kGreedySampleRow.begin(), kGreedySampleRow.end());
  return rows;
}

enum class RopeStyle : uint8_t { NeoX, GptJ };

// Parameters of a node; which fields an op reads is documented in Op.
struct OpParams {
  float eps = 0.f;
  float scale = 1.f;
  float softcap = 0.f;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int rot_dims = 0;
  int window = 0;
  int page_size = 0;
  int offset = 0;  // Slice
  RopeStyle rope_style = RopeStyle::NeoX;
};

enum class TensorKind : uint8_t {
  Weight,        // bound to model weights at load
  Constant,      // host data owned by the graph (e.g. rope frequencies)
  Input,         // written by the host before each step (token ids, positions ...)
  Intermediate,  // planned by the executor (memory reused by liveness)
  Output,        // read by the host after each step
  State,         // persistent across steps, owned by the session (KV cache)
};

using TensorId = int32_t;

struct TensorInfo {
  std::string name;
  TensorKind kind = TensorKind::Intermediate;
  DType dtype = DType::F32;
  Shape shape;
  std::vector<uint8_t> constant;  // data of a Constant tensor
};

struct Node {
  Op op;
  std::string name;  // e.g. "layers.0.attn.q"
  std::vector<TensorId> inputs;
  TensorId output;
  OpParams params;
};

class Graph {
 public:
  TensorId weight(const std::string& name, DType dtype, Shape shape);
  TensorId input(const std::string& name, DType dtype, Shape shape);
  TensorId state(const std::string& name, DType dtype, Shape shape);
  TensorId constant(const std::string& name, DType dtype, Shape shape, const void* data);
  // Appends a node producing a new intermediate tensor and returns it.
  TensorId add(Op op, const std::string& name, std::vector<TensorId> inputs, DType out_dtype,
               Shape out_shape, OpParams params = {});
  // Appends a node that updates an existing tensor in place (KvAppend).
  // (TokenShift and Wkv produce a new output and also update their state input.)
  void add_inplace(Op op, const std::string& name, std::vector<TensorId> inputs, TensorId target,
                   OpParams params = {});
  // Marks an intermediate as an output the host reads after the step.
  void mark_output(TensorId t, const std::string& name);

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const TensorInfo& tensor(TensorId id) const { return tensors_[id]; }
  // Returns -1 when there is no tensor of that name.
  TensorId find(const std::string& name) const;

 private:
  TensorId new_tensor(TensorInfo info);
  std::vector<TensorInfo> tensors_;
  std::vector<Node> nodes_;
  std::unordered_map<std::string, TensorId> by_name_;
};

}  // namespace llm
