// Internal to the CUDA backend: host-side launchers of the kernels (one .cu file per
// family). Each enqueues on `stream`, checks the launch and never synchronises, so
// a sequence of them can be captured into a CUDA graph. Shapes are validated by
// CudaBackend::check; indices read from device memory are validated in the kernels,
// which record bad ones in `err` (ErrorBits) instead of reading out of bounds.
#pragma once

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "core/graph.h"

namespace llm {
namespace cuda {

// ---- copies.cu ---------------------------------------------------------------------------

// One copy of a SmallCopies launch: device or pinned host pointers (mapped: the device
// reaches them under unified addressing).
struct SmallCopy {
  void* dst = nullptr;
  const void* src = nullptr;
  uint32_t bytes = 0;
};
constexpr int kMaxSmallCopies = 8;
constexpr uint32_t kSmallCopyMaxBytes = 16u << 10;  // larger copies take the copy engine
struct SmallCopies {
  SmallCopy op[kMaxSmallCopies];
  int n = 0;
};
// All of c's copies in one launch; they run side by side, so none may write what
// another reads or writes.
void small_copies(cudaStream_t stream, const SmallCopies& c);

// ---- matmul.cu ---------------------------------------------------------------------------

// Most tokens the GEMV path takes; more go through a GEMM.
constexpr int64_t kGemvMaxTokens = 8;

// One weight matrix of a GEMV launch: y[T, N] = x · Wᵀ (+ bias).
struct GemvSeg {
  const void* w = nullptr;  // [N, K]
  const void* bias = nullptr;
  DType bias_type = DType::F32;
  float* y = nullptr;
  int64_t N = 0;
};
// Most weight matrices that one GEMV launch takes (q/k/v, gate/up share their x).
constexpr int kGemvMaxSegs = 3;

// y_s[T, N_s] = x[T, K] · W_sᵀ (+ bias_s) for each segment s, T <= kGemvMaxTokens; all
// W_s of one dtype (f32/f16/bf16). Weight rows are streamed once with 16-byte loads
// and converted in registers.
void gemv(cudaStream_t stream, const float* x, const GemvSeg* segs, int n_segs, DType w_type,
          int64_t T, int64_t K);

// The same product for any T through cuBLAS SGEMM in float32 (no TF32), so prefill
// keeps the accuracy of the float32 reference (f32 weights; f16/bf16 ones take
// gemm_half unless LLM_CUDA_HALF_GEMM=0). bf16/f16 weights are converted to float32 in
// chunks of rows that fit `scratch` (scratch_floats >= K).
void gemm(cublasHandle_t cublas, cudaStream_t stream, const float* x, const void* w, DType w_type,
          const void* bias, DType bias_type, float* y, int64_t T, int64_t K, int64_t N,
          float* scratch, size_t scratch_floats);

// Throws llm::Error naming the call when a cuBLAS call fails.
void check_cublas(cublasStatus_t status, const char* call, const char* file, int line);
#define LLM_CUBLAS_CHECK(call) ::llm::cuda::check_cublas((call), #call, __FILE__, __LINE__)

// dst[i] = f32(src[i]) for f16/bf16 (weights for the GEMM path, or tables).
void convert_to_f32(cudaStream_t stream, const void* src, DType src_type, float* dst, int64_t n);

// y[r, :] += bias for rows x n.
void add_bias(cudaStream_t stream, float* y, const void* bias, DType bias_type, int64_t rows,
              int64_t n);

// ---- quant.cu / qgemv.cu: Q8_0, Q4_0 and Q4_1 matrices -----------------------------------

// The backend's layout of a quantized matrix [N, K] (K % 32 == 0): the quants of all
// blocks row after row (16 bytes per Q4_0 / Q4_1 block, GGUF's nibble order; 32 int8 per
// Q8_0 block), so every row starts 16-byte aligned, then at scales_offset() the scales
// [N, scale_stride] (K / 32 rounded up to a multiple of 4, the padding zero, so a
// row's scales come in aligned groups of 4): f16 d, or for Q4_1 a 32-bit pair of f16
// (d low, min high) so that one load brings both. Kernels stream the quants with 16-byte
// loads and never touch the 18/20/34-byte GGUF blocks.
size_t qsplit_quant_bytes(DType t, int64_t N, int64_t K);
int64_t qsplit_scale_stride(int64_t K);
size_t qsplit_scales_offset(DType t, int64_t N, int64_t K);
size_t qsplit_bytes(DType t, int64_t N, int64_t K);

// A matrix in that layout.
struct QMatrix {
  const uint8_t* qs = nullptr;
  const uint16_t* scales = nullptr;  // f16 bits (Q4_1: d, min pairs)
  DType type = DType::Q4_0;
  int64_t N = 0, K = 0;
  int64_t scale_stride = 0;  // scales (Q4_1: pairs) per row
};
QMatrix qsplit_view(const void* base, DType t, int64_t N, int64_t K);

// GGUF blocks (N rows of K / 32 blocks) -> the split layout at dst.
void repack_quant(cudaStream_t stream, const void* blocks, DType t, int64_t N, int64_t K,
                  void* dst);

// out[r, :] = dequantized rows ids[r] of a split-layout table (exact, as the CPU's
// dequantize_row_*). Bad ids give zero rows and set kErrRowId.
void get_rows_quant(cudaStream_t stream, const QMatrix& table, const int32_t* ids, int64_t R,
                    float* out, int* err);

// f16 or bf16 weights over more than a token: y[T, N] = x · Wᵀ (+ bias) on the tensor cores, x
// rounded to the weights' type into x16 (T * K halves; skipped when convert_x is false:
// x16 already holds it), float32 accumulation and output (cuBLAS).
void gemm_half(cublasHandle_t cublas, cudaStream_t stream, const float* x, const void* w,
               DType w_type, const void* bias, DType bias_type, float* y, int64_t T, int64_t K,
               int64_t N, __half* x16, bool convert_x);

// Prefill: y[T, N] = x · Wᵀ (+ bias) on the tensor cores. x is rounded to f16 once into
// x16 (skipped when convert_x is false: x16 already holds it), W is dequantized to f16
// in chunks that fit w16 (w16_elems >= K), and cuBLAS multiplies f16 x f16 with
// float32 accumulation and output. Chunks take all rows and a slice of the columns
// where that fits (so each GEMM is wide enough to fill the GPU), else slices of rows.
void qgemm(cublasHandle_t cublas, cudaStream_t stream, const float* x, const QMatrix& w,
           const void* bias, DType bias_type, float* y, int64_t T, __half* x16, bool convert_x,
           __half* w16, size_t w16_elems);

// ---- qmma.cu: batched decode and short prefill on the tensor cores ----------------------

// y_s[T, N_s] = x · W_sᵀ (+ bias_s) for up to kQMmaMaxSegs matrices of one dtype and K
// (q/k/v, gate/up), reading the quantized blocks directly (see qmma.cu): the values of
// qgemm (x and each weight rounded to f16 once, float32 sums). x must first be
// converted by qmma_convert into x16 (qmma_x16_elems halves) in the kernel's fragment
// order; matmuls of one x share it. More tokens than kQMmaMaxTokens go through qgemm
// (cuBLAS), which is faster there.
constexpr int64_t kQMmaMaxTokens = 128;
constexpr int kQMmaMaxSegs = 3;
size_t qmma_x16_elems(int64_t T, int64_t K);
// Raises the kernels' shared memory limit on the current device (outside stream capture)
// to what each needs, where that fits in smem_optin (cudaDeviceProp::
// sharedMemPerBlockOptin). qmma_fits: whether the kernel for T tokens of this dtype
// fits there (sm_86 offers 99 KB: q4 steps of 33-128 tokens take qgemm there).
void qmma_prepare(int smem_optin);
bool qmma_fits(DType type, int64_t T, int smem_optin);

// What qmma_convert rounds into x16: x itself, or the node that produced x computed on
// the way (its float32 output `out` written only when set, for readers elsewhere):
//  - RmsNorm: rms_norm(x) * norm_w, one block per token, the bits of rms_norm();
//  - SiluMul: silu(x) * x2, element-wise, the bits of the SiluMul kernel.
enum class QMmaInput { Plain, RmsNorm, SiluMul };
struct QMmaConvertArgs {
  QMmaInput kind = QMmaInput::Plain;
  const float* x = nullptr;   // [T, K]
  const float* x2 = nullptr;  // SiluMul: the up projection [T, K]
  const void* norm_w = nullptr;
  DType norm_type = DType::F32;
  float eps = 0.f;
  float* out = nullptr;  // the fused node's output (nullptr: not written)
  int64_t T = 0, K = 0;
};
void qmma_convert(cudaStream_t stream, const QMmaConvertArgs& a, __half* x16);

struct QMmaSeg {
  QMatrix w;
  const void* bias = nullptr;
  DType bias_type = DType::F32;
  float* y = nullptr;  // nullptr: not written (only the epilogue's out2 is read)
};
struct QMmaArgs {
  const __half* x16 = nullptr;
  int64_t T = 0;
  QMmaSeg segs[kQMmaMaxSegs];
  int n_segs = 0;
  // Residual epilogue (one segment): out2 = residual + y. out2 may be residual itself.
  const float* residual = nullptr;
  float* out2 = nullptr;
  int splits = 1;
  float* partials = nullptr;
};
// Column splits for a's matrices: more than one when their row tiles alone cannot fill
// the GPU, chosen so the blocks come in whole waves (call after qmma_prepare); the
// splits then need qmma_partials_floats(a) of scratch (added up by a second kernel).
int qmma_splits(const QMmaArgs& a, int n_sms);
size_t qmma_partials_floats(const QMmaArgs& a);
void qmma(cudaStream_t stream, const QMmaArgs& a);

// Decode: one launch of up to kGemvMaxSegs quantized matrices of one dtype and K over
// one x [T, K], T <= kQGemvMaxTokens. The x rows are quantized once per block into
// shared memory as 16-bit integers per block of 32 (two int8 planes, scale amax /
// 32512), and the products run on dp4a; so the result differs from float32 math on
// dequantized weights by at most sum_k |w_k| * amax_blk(k) / 65024 (rounding of x).
// Optional fusions (see CudaBackend::compile): an RmsNorm of x as prologue, a residual
// add or a SiLU-gated product of two segments as epilogue.
constexpr int64_t kQGemvMaxTokens = 8;
// Attention steps of up to this many tokens use the decode kernel (a block per
// token and KV head, split over the context): batched decode of many sequences
// is a step of one token per sequence, where the prefill kernel's query tiles
// (built for one long prompt) are mostly empty.
constexpr int64_t kAttnDecodeMaxTokens = 128;
// Rotary embedding of q and k and the append of k and v to the paged caches (rope.cu;
// the q/k/v GEMV's RopeKv epilogue takes the same arguments).
struct RopeKvArgs {
  const float* q = nullptr;  // [T, n_heads * head_dim]
  const float* k = nullptr;  // [T, n_kv_heads * head_dim]
  const float* v = nullptr;
  const int32_t* positions = nullptr;
  const float* inv_freq = nullptr;
  const int32_t* slots = nullptr;
  float* q_out = nullptr;
  float* k_out = nullptr;  // may be nullptr (not needed outside the fusion)
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  DType cache_type = DType::F32;
  int64_t cache_rows = 0;
  int64_t T = 0;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0, rot_dims = 0;
  RopeStyle style = RopeStyle::NeoX;
  int* err = nullptr;
  // No output overlaps another head's input (at most exactly in place): one block per
  // (token, head) instead of one block staging everything in shared memory.
  bool heads_apart = false;
};

struct QGemvSeg {
  QMatrix w;
  const void* bias = nullptr;
  DType bias_type = DType::F32;
  float* y = nullptr;  // nullptr: not written (read only inside the fused launch)
};
// RopeKv: the three segments are q, k and v of one attention layer; the epilogue
// rotates q and k as `rope_kv` does and stores k and v in the caches (see RopeKvArgs).
// Sample: Op::Sample of the one row of logits (one token, one segment, y written).
enum class QEpilogue { None, Residual, SiluPair, RopeKv, Sample };
struct QGemvArgs {
  const float* x = nullptr;  // [T, K]
  int64_t T = 0, K = 0;
  DType type = DType::Q4_0;
  QGemvSeg segs[kGemvMaxSegs];
  int n_segs = 0;
  // Prologue: x <- rms_norm(x) * norm_w; block 0 writes that to norm_out when set.
  const void* norm_w = nullptr;
  DType norm_type = DType::F32;
  float eps = 0.f;
  float* norm_out = nullptr;
  // Residual: out2 = residual + y (one segment). SiluPair: out2 = silu(y0) * y1.
  QEpilogue epilogue = QEpilogue::None;
  const float* residual = nullptr;
  // The residual was complete before the launch ahead of this one could start, so the
  // kernel may read it before its programmatic-launch wait.
  bool residual_early = false;
  float* out2 = nullptr;
  // RopeKv: every field of RopeKvArgs but q, k, v (the products) and heads_apart.
  RopeKvArgs rope;
  // Sample: params [1, 2] (temperature, u), the id out, and device scratch of
  // qgemv_sample_scratch_bytes(n_sms) bytes, zeroed before the first launch (the kernel
  // leaves it zeroed).
  const float* sample_params = nullptr;
  int32_t* sample_out = nullptr;
  void* sample_scratch = nullptr;
  // Programmatic dependent launch: the kernel may start before the previous one in the
  // stream ends and stream its weights meanwhile (they must not be written by it).
  bool pdl = false;
  // A single token's weights may stream through shared memory (the staged kernels)
  // where the device has room for the rings; false keeps them in registers.
  bool allow_staged = true;
};
// Shared memory the GEMV needs for T rows of K; the GEMV path is taken when it fits.
size_t qgemv_smem_bytes(int64_t T, int64_t K);
size_t qgemv_sample_scratch_bytes(int n_sms);
constexpr size_t kQGemvMaxSmem = 96 * 1024;
// Raises the kernels' shared memory limit on the current device (outside stream capture).
// smem_optin: the device's cudaDeviceProp::sharedMemPerBlockOptin (single tokens take
// the staged kernels where their rings fit in it).
void qgemv_prepare(int smem_optin);
void qgemv(cudaStream_t stream, const QGemvArgs& a, int n_sms, int smem_optin);

// ---- attention.cu ------------------------------------------------------------------------

struct AttentionArgs {
  const float* q = nullptr;  // [T, n_heads * head_dim]
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;  // [cache_rows, n_kv_heads * head_dim]
  DType cache_type = DType::F32;  // K and V share it (checked)
  int64_t cache_rows = 0;
  const int32_t* positions = nullptr;    // [T]
  const int32_t* seq_ids = nullptr;      // [T]
  const int32_t* block_table = nullptr;  // [n_seqs, max_pages]
  int64_t n_seqs = 0;
  int64_t max_pages = 0;
  float* out = nullptr;  // [T, n_heads * head_dim]
  int64_t T = 0;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0, window = 0, page_size = 0;
  float scale = 1.f, softcap = 0.f;
  // Split-K over the context: n_splits > 1 needs `partials` of
  // attention_partials_floats() floats.
  int n_splits = 1;
  float* partials = nullptr;
  int* err = nullptr;
  // Decode: launched with programmatic serialization (sm_90), so the kernel starts while
  // the one before it (the kv append) runs and reads the older keys meanwhile.
  bool pdl = false;
};

constexpr int kAttentionMaxHeadDim = 512;

// How many splits of the context pay off for T tokens x n_heads over up to
// max_context keys on a device with n_sms multiprocessors.
int attention_splits(int64_t T, int n_heads, int64_t max_context, int n_sms);
size_t attention_partials_floats(int64_t T, int n_heads, int head_dim, int n_splits);
void attention(cudaStream_t stream, const AttentionArgs& a);

// Decode attention (few tokens): one block per (token, kv head, split) takes all query
// heads of the kv head (GQA: K/V read once), a warp per group of keys with the head's
// dims across lanes; the last split to finish merges the splits (counters: one int per
// (token, kv head), zero before the first launch, left zero after each). Supported
// when attention_decode_ok(); n_splits from attention_decode_splits().
bool attention_decode_ok(const AttentionArgs& a);
int attention_decode_splits(int64_t T, int n_kv_heads, int G, int64_t max_context, int n_sms);
void attention_decode(cudaStream_t stream, const AttentionArgs& a, int* counters);

// Prefill attention: blocks of 16 query rows (tokens x query heads of one kv head)
// share each tile of 128 keys, so K/V are read once per tile rather than once per row.
bool attention_prefill_ok(const AttentionArgs& a);
void attention_prefill(cudaStream_t stream, const AttentionArgs& a);

// ---- norm.cu -----------------------------------------------------------------------------

// w and b are f32/f16/bf16 vectors of d; b may be nullptr.
void rms_norm(cudaStream_t stream, const float* x, const void* w, DType w_type, float* y,
              int64_t rows, int64_t d, float eps);
void layer_norm(cudaStream_t stream, const float* x, const void* w, DType w_type, const void* b,
                DType b_type, float* y, int64_t rows, int64_t d, float eps);

// ---- rope.cu -----------------------------------------------------------------------------

void rope(cudaStream_t stream, const float* x, const int32_t* positions, const float* inv_freq,
          float* y, int64_t T, int n_heads, int head_dim, int rot_dims, RopeStyle style);

// Rope of q and k, then k and v appended to their caches, in one single-block launch
// (decode): every input is read into shared memory before anything is written, so
// outputs may share memory with inputs. Bits equal rope() + kv_append().
size_t rope_kv_smem_bytes(int64_t T, int n_heads, int n_kv_heads, int head_dim);
constexpr size_t kRopeKvMaxSmem = 96 * 1024;
void rope_kv_prepare();
void rope_kv(cudaStream_t stream, const RopeKvArgs& a);

// ---- elementwise.cu ----------------------------------------------------------------------

// cudaErrorInvalidDeviceFunction when this build has no code for the current device.
cudaError_t probe_kernels();

// A one-thread kernel that returns after `us` microseconds (profiling).
void spin(cudaStream_t stream, double us);

enum class Unary { Gelu, GeluTanh, Scale };
enum class Binary { SiluMul, GeluMul, Add, Mul };

void unary(cudaStream_t stream, Unary op, const float* a, float s, float* y, int64_t n);
// y = op(a, b) over rows x d; b is [rows, d] or one row broadcast (b_rows == 1).
void binary(cudaStream_t stream, Binary op, const float* a, const float* b, int64_t b_rows,
            float* y, int64_t rows, int64_t d);

// ---- rwkv.cu: Slice and the RWKV ops (semantics in core/graph.h) --------------------------

// y[r, :] = a[r, offset : offset + w_out] for rows of a of w_in (groups are rows here).
void slice(cudaStream_t stream, const float* a, float* y, int64_t rows, int64_t w_in, int64_t w_out,
           int64_t offset);
enum class RwkvElementwise { Mix, SigmoidMul, ReluSqr };
// Mix: y = a * w + b * (1 - w) with w one row of d; SigmoidMul: y = sigmoid(a) * b;
// ReluSqr: y = relu(a)^2 (b, w unused).
void rwkv_elementwise(cudaStream_t stream, RwkvElementwise op, const float* a, const float* b,
                      const float* w, float* y, int64_t n, int64_t d);
// Bad sequence ids or state slots set kErrState and leave those rows out.
void token_shift(cudaStream_t stream, const float* x, float* state, const int32_t* seq_ids,
                 const int32_t* state_slots, float* y, int64_t T, int64_t D, int64_t S,
                 int64_t n_slots, int* err);
void wkv(cudaStream_t stream, const float* k, const float* v, const float* time_decay,
         const float* time_first, float* state, const int32_t* seq_ids, const int32_t* state_slots,
         float* y, int64_t T, int64_t A, int64_t S, int64_t n_slots, int* err);

// ---- rows.cu -----------------------------------------------------------------------------

// out[r, :] = f32(table[ids[r], :]); table f32/f16/bf16 [V, D]. Bad ids give zero rows.
void get_rows(cudaStream_t stream, const void* table, DType table_type, int64_t V, int64_t D,
              const int32_t* ids, int64_t R, float* out, int* err);

// cache[slots[t], :] = src[t, :] in the cache's dtype (f32/f16/bf16, round to nearest even).
void kv_append(cudaStream_t stream, const float* src, const int32_t* slots, int64_t T, int64_t W,
               void* cache, DType cache_type, int64_t cache_rows, int* err);

// ---- sampling.cu: logits ops -------------------------------------------------------------

// One token per row of x [R, N] with params [R, 2] (semantics in Op::Sample).
void sample_rows(cudaStream_t stream, const float* x, const float* params, int64_t R, int64_t N,
                 int32_t* out);

}  // namespace cuda
}  // namespace llm
