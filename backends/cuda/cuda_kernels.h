// Internal to the CUDA backend: host-side launchers of the kernels (one .cu file per
// family). Each enqueues on `stream`, checks the launch and never synchronises, so
// a sequence of them can be captured into a CUDA graph. Shapes are validated by
// CudaBackend::check; indices read from device memory are validated in the kernels,
// which record bad ones in `err` (ErrorBits) instead of reading out of bounds.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "core/graph.h"

namespace llm {
namespace cuda {

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
// keeps the accuracy of the float32 reference. f16/bf16 weights are converted to
// float32 in chunks of rows that fit `scratch` (scratch_floats >= K).
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
};

constexpr int kAttentionMaxHeadDim = 512;

// How many splits of the context pay off for T tokens x n_heads over up to
// max_context keys on a device with n_sms multiprocessors.
int attention_splits(int64_t T, int n_heads, int64_t max_context, int n_sms);
size_t attention_partials_floats(int64_t T, int n_heads, int head_dim, int n_splits);
void attention(cudaStream_t stream, const AttentionArgs& a);

// ---- norm.cu -----------------------------------------------------------------------------

// w and b are f32/f16/bf16 vectors of d; b may be nullptr.
void rms_norm(cudaStream_t stream, const float* x, const void* w, DType w_type, float* y,
              int64_t rows, int64_t d, float eps);
void layer_norm(cudaStream_t stream, const float* x, const void* w, DType w_type, const void* b,
                DType b_type, float* y, int64_t rows, int64_t d, float eps);

// ---- rope.cu -----------------------------------------------------------------------------

void rope(cudaStream_t stream, const float* x, const int32_t* positions, const float* inv_freq,
          float* y, int64_t T, int n_heads, int head_dim, int rot_dims, RopeStyle style);

// ---- elementwise.cu ----------------------------------------------------------------------

// cudaErrorInvalidDeviceFunction when this build has no code for the current device.
cudaError_t probe_kernels();

enum class Unary { Gelu, GeluTanh, Scale };
enum class Binary { SiluMul, GeluMul, Add, Mul };

void unary(cudaStream_t stream, Unary op, const float* a, float s, float* y, int64_t n);
// y = op(a, b) over rows x d; b is [rows, d] or one row broadcast (b_rows == 1).
void binary(cudaStream_t stream, Binary op, const float* a, const float* b, int64_t b_rows,
            float* y, int64_t rows, int64_t d);

// ---- rows.cu -----------------------------------------------------------------------------

// out[r, :] = f32(table[ids[r], :]); table f32/f16/bf16 [V, D]. Bad ids give zero rows.
void get_rows(cudaStream_t stream, const void* table, DType table_type, int64_t V, int64_t D,
              const int32_t* ids, int64_t R, float* out, int* err);

// cache[slots[t], :] = src[t, :] in the cache's dtype (f32/f16/bf16, round to nearest even).
void kv_append(cudaStream_t stream, const float* src, const int32_t* slots, int64_t T, int64_t W,
               void* cache, DType cache_type, int64_t cache_rows, int* err);

}  // namespace cuda
}  // namespace llm
