// Helpers of the GPU backend tests (CUDA, Vulkan): one node run on a backend, float
// encodings, random quantized matrices, dequantized copies of fixtures.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/dtype.h"
#include "core/graph.h"
#include "test_util.h"

namespace llm::test {

// Float values of an f32/f16/bf16 tensor's bytes, and back.
std::vector<float> decode(DType t, const Bytes& b);
Bytes encode(DType t, const std::vector<float>& v);

struct HostT {
  DType dtype = DType::F32;
  Shape shape;
  Bytes data;
};
HostT f32_tensor(Shape s, std::vector<float> v);
HostT i32_tensor(Shape s, const std::vector<int32_t>& v);

Node make_node(Op op, OpParams p = {});
// A node with tensor ids (what the backends' fusions follow).
Node make_node(Op op, std::vector<TensorId> inputs, TensorId output);

// One node on one backend: inputs uploaded to buffers of their own, the output
// (initialised from `out`) downloaded after the compiled program ran. inplace >= 0
// binds the output to that input (KvAppend); input weight >= 0 goes through
// Backend::upload_weight (the backend's own layout).
class OneNode {
 public:
  OneNode(Backend& be, const Node& node, const std::vector<HostT>& ins, const HostT& out,
          int inplace = -1, int weight = -1);
  void set_input(size_t i, const Bytes& data);
  void run() { prog_->run(); }
  Bytes output();
  Program& program() { return *prog_; }

 private:
  Backend& be_;
  Node node_;
  std::vector<std::unique_ptr<DeviceBuffer>> bufs_;
  DeviceBuffer* out_ = nullptr;
  size_t out_bytes_ = 0;
  std::unique_ptr<Program> prog_;
};

// The worst |got - y| / bound over a quantized matmul y = x · wᵀ (+ bias) computed as the
// CUDA and Vulkan decode GEMVs do: x rounded to s · amax / 32512 per block of 32 (s a
// 16-bit integer), exact integer products, float32 per-block terms. Per element the
// bound is Σ_k |w_k| · amax_blk(k) / 65024 (the rounding of x) plus (K/32 + 16) · 2^-24 ·
// (Σ_k |x_k w_k| + |y|) (float32). x [T, K], w the dequantized [N, K], got [T, N].
// x_step_div: amax / x_step_div bounds x's rounding per element; 65024 for the 16-bit
// integers, 253 for their high byte alone (Vulkan's LLM_VULKAN_GEMV_X8: s rounded to a
// multiple of 256, off by at most 128.5 / 32512 of amax).
double worst_q16_gemv_error(const std::vector<float>& x, const std::vector<float>& w,
                            const std::vector<float>* bias, int64_t T, int64_t K, int64_t N,
                            const std::vector<float>& got, double x_step_div = 65024.0);

// The float32 tensors, downloaded and concatenated in order.
std::vector<float> download_f32(Backend& be, const std::vector<TensorRef>& tensors);

// Runs the node on `ref` once and on `dev` (twice unless in place: the second run is
// a replay) and returns max |Δ| / max |ref|.
double compare_backends(Backend& ref, Backend& dev, const Node& node, const std::vector<HostT>& ins,
                        const HostT& out, int inplace = -1);

// Rows of logits for Op::Sample: random values in [-10, 10], with planted ties of the
// maximum (the first must win) in odd rows, NaNs, and a first row of NaN / -inf only.
// [R, N], R >= 4.
HostT sample_rows_input(int64_t R, int64_t N, std::mt19937& rng);
// Its params [R, 2]: temperatures 0, 0.7, 1.3 in turn and random draws u.
HostT sample_params_input(int64_t R, std::mt19937& rng);
// Op::Sample with top-k / top-p / min-p cuts on gpu against the CPU backend: rows of
// spread, peaked, tied (more equal values than fit a shared-memory sort), flat and
// NaN / -inf logits, short and vocabulary-long. Rows whose CPU pick moves when u or
// top_p moves by 2e-6 (a draw at a boundary, where rounding may decide) are skipped;
// at least 80% must be compared, and those must match.
void check_sample_cuts(Backend& gpu);

// One shape of Op::Attention for the op tests: heads, head dims, window, softcap and
// the dtypes of the K and V caches.
struct AttentionCase {
  int heads, kv_heads, head_dim, window;
  float softcap;
  DType k, v;
};
// "heads 6/2 head_dim 64 window 0 softcap 0 f32/f32".
std::string attention_case_name(const AttentionCase& c);
OpParams attention_params(const AttentionCase& c, int page_size);
// The node's inputs: random q [T, heads * head_dim] and caches of cache_rows rows, then
// the positions, sequence ids and block table ([table.size() / max_pages, max_pages]).
std::vector<HostT> attention_inputs(const AttentionCase& c, int64_t cache_rows,
                                    const std::vector<int32_t>& pos,
                                    const std::vector<int32_t>& seq,
                                    const std::vector<int32_t>& table, int max_pages,
                                    std::mt19937& rng);

// GGUF blocks of a random [N, K] matrix and its dequantized values.
struct QuantMatrix {
  Bytes blocks;
  std::vector<float> values;
};
QuantMatrix quantize_random(DType t, int64_t N, int64_t K, std::mt19937& rng);

// Seconds from t0 to now.
double seconds_since(std::chrono::steady_clock::time_point t0);

// Seconds per matmul of n matmuls of distinct weights in one program, timed over `reps`
// replays after a quarter second of warm-up replays (clocks up). Without w_back each [N, K] weight
// (blocks w of dtype t) multiplies the same x [T, K], so nothing orders the matmuls; with w_back
// (the blocks of a [K, N] weight) they alternate [N, K] and [K, N], each multiplying the output of
// the one before, so each waits for the one before it, as a model's do.
double time_matmuls(Backend& be, DType t, const Bytes& w, int64_t N, int64_t K, int64_t T, int n,
                    int reps, const Bytes* w_back = nullptr);

// A head for the tests of a Sample inside the head GEMV: the row of w with the largest
// logit for x after an RmsNorm (eps 1e-5) with weight nw (top) gets its scales times 4
// and is copied to an even row before it (lo), the row after that (pair: one task, one
// thread writes both) and a row after it (hi, when < N): equal maxima whose first
// (first()) a greedy Sample must pick. Row nan_row gets a NaN scale.
struct PlantedHead {
  int64_t top = 0, lo = 0, pair = 0, hi = 0, nan_row = 0;
  int64_t first() const { return std::min(lo, top); }
};
PlantedHead plant_head_maxima(QuantMatrix& w, DType t, int64_t N, int64_t K,
                              const std::vector<float>& x, const std::vector<float>& nw);
// Per draw (a row of Op::Sample's parameters) of such a head's program: the logits and
// the sampled id.
using HeadSamples = std::vector<std::pair<std::vector<float>, int32_t>>;
// Checks the runs of a program that samples inside the head GEMV (fused) against those
// of one with a Sample of its own (apart): logits bit for bit, the planted maxima, and
// both ids the CPU's Sample of those logits.
void check_head_samples(const HeadSamples& fused, const HeadSamples& apart,
                        const std::vector<std::vector<float>>& draws, const PlantedHead& ph,
                        int64_t N);

// Device buffers of a hand-built program (kept until it goes out of scope).
class TestBuffers {
 public:
  explicit TestBuffers(Backend& be) : be_(be) {}
  // A buffer holding data.
  DeviceBuffer* put(const Bytes& data);
  // An [N, K] matrix: through upload_weight as t (quant), or its values as f32.
  TensorRef weight(const QuantMatrix& q, DType t, int64_t N, int64_t K, bool quant);

 private:
  Backend& be_;
  std::vector<std::unique_ptr<DeviceBuffer>> bufs_;
};

// A copy of fixture `name` in dir whose matrices hold their quantize-then-dequantize
// values in f32: any backend computes with it what the quantized model computes.
void write_dequantized_fixture(const std::string& name, DType t, const std::string& dir);
// The same for the model folder src.
void write_dequantized_model(const std::string& src, DType t, const std::string& dir);

// The model fixtures every GPU backend must match against transformers, with their
// bounds (max |Δ| / max |ref|): float32 checkpoints at 1e-4, the f16/bf16 ones at 1e-2.
struct Fixture {
  const char* name;
  double tol;
};
inline constexpr Fixture kFixtures[] = {{"llama3", 1e-4},
                                        {"llama2", 1e-4},
                                        {"qwen2", 1e-4},
                                        {"mistral", 1e-4},
                                        {"llama_gqa3", 1e-4},
                                        {"llama_mqa_bias", 1e-4},
                                        {"llama_bf16_sharded", 1e-2},
                                        {"qwen2_f16_untied", 1e-2},
                                        {"mistral_w5", 1e-4},
                                        {"gpt_neox", 1e-4},
                                        {"gptj", 1e-4},
                                        {"rwkv", 1e-4},
                                        {"phi3", 1e-4}};

// Fixture `name` on be: the prompt's logits within tol (max |Δ| / max |ref|) of
// transformers', and the reference greedy ids through the KV cache.
void check_fixture_reference(Backend& be, const char* name, double tol);

// Fixture `name` on be with a `kv` (f16/bf16) KV cache: the prompt's logits within tol
// of transformers', then 16 greedy steps through the cache whose logits stay within
// tol of the same steps with a float32 cache on be.
void check_half_kv_cache(Backend& be, const char* name, DType kv, double tol);

}  // namespace llm::test
