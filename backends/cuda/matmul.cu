// MatMul: y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias).
//
// Decode (T <= kGemvMaxTokens; f16/bf16 weights: one token unless
// LLM_CUDA_HALF_GEMV_MAX_TOKENS says more) is a GEMV bound by how fast W streams in:
// one warp per output row, each lane loading 16 bytes of the row at a time (4 f32 or
// 8 f16/bf16, converted in registers) and using them for every token; a warp-shuffle
// sum ends each row. Consecutive matmuls of one x (q/k/v, gate/up) run as segments of
// one launch. Quantized weights (q8_0/q4_0) have their own GEMV and GEMM in qgemv.cu
// and quant.cu, as f16/bf16 weights over more tokens have (gemm_half, quant.cu).
//
// More tokens go through cuBLAS SGEMM in float32: f32 weights in place, f16/bf16
// weights (LLM_CUDA_HALF_GEMM=0) converted to f32 in chunks of rows first. That keeps
// them as accurate as the float32 reference; the conversion costs a read and a write of
// the chunk, small next to a GEMM over many tokens.
#include <algorithm>

#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"

namespace llm {
namespace cuda {

namespace {

constexpr int kGemvWarps = 4;  // rows per block: one warp each

// Segments as the kernel sees them: blocks [block0[s], block0[s + 1]) belong to s.
struct GemvArgs {
  const void* w[kGemvMaxSegs];
  const void* bias[kGemvMaxSegs];
  int bias_type[kGemvMaxSegs];
  float* y[kGemvMaxSegs];
  int64_t N[kGemvMaxSegs];
  unsigned block0[kGemvMaxSegs + 1];
  int n_segs;
};

template <typename WT, int TMAX, bool kVec>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_kernel(const float* __restrict__ x, const GemvArgs a, int T, int64_t K) {
  int s = 0;
  while (s + 1 < a.n_segs && blockIdx.x >= a.block0[s + 1]) s++;
  const int lane = threadIdx.x & 31;
  const int64_t N = a.N[s];
  const int64_t n =
      static_cast<int64_t>(blockIdx.x - a.block0[s]) * kGemvWarps + (threadIdx.x >> 5);
  if (n >= N) return;
  const WT* wr = static_cast<const WT*>(a.w[s]) + n * K;
  float acc[TMAX];
#pragma unroll
  for (int t = 0; t < TMAX; t++) acc[t] = 0.f;

  if constexpr (kVec) {
    // Rows and x are 16-byte aligned (checked by the launcher): K % E == 0.
    constexpr int E = Vec16<WT>::kN;
#pragma unroll 4
    for (int64_t k = lane * E; k < K; k += 32 * E) {
      float wv[E];
      load16(wr + k, wv);
#pragma unroll
      for (int t = 0; t < TMAX; t++) {
        if (t < T) {
          const float4* xr = reinterpret_cast<const float4*>(x + t * K + k);
#pragma unroll
          for (int i = 0; i < E / 4; i++) {
            const float4 xv = __ldg(xr + i);
            acc[t] = fmaf(wv[4 * i + 0], xv.x, acc[t]);
            acc[t] = fmaf(wv[4 * i + 1], xv.y, acc[t]);
            acc[t] = fmaf(wv[4 * i + 2], xv.z, acc[t]);
            acc[t] = fmaf(wv[4 * i + 3], xv.w, acc[t]);
          }
        }
      }
    }
  } else {
    // Rows of any length: one element per lane per step, still coalesced.
    for (int64_t k = lane; k < K; k += 32) {
      const float wv = to_f32(wr[k]);
#pragma unroll
      for (int t = 0; t < TMAX; t++)
        if (t < T) acc[t] = fmaf(wv, __ldg(x + t * K + k), acc[t]);
    }
  }

  const float b = a.bias[s] ? load_any(a.bias[s], a.bias_type[s], n) : 0.f;
  float* y = a.y[s];
#pragma unroll
  for (int t = 0; t < TMAX; t++) {
    const float sum = warp_sum(acc[t]);
    if (lane == 0 && t < T) y[t * N + n] = sum + b;
  }
}

template <typename WT, int TMAX>
void launch_gemv(cudaStream_t stream, const float* x, const GemvArgs& a, bool vec, int64_t T,
                 int64_t K) {
  const dim3 grid(a.block0[a.n_segs]);
  if (vec)
    gemv_kernel<WT, TMAX, true><<<grid, kGemvWarps * 32, 0, stream>>>(x, a, static_cast<int>(T), K);
  else
    gemv_kernel<WT, TMAX, false>
        <<<grid, kGemvWarps * 32, 0, stream>>>(x, a, static_cast<int>(T), K);
  LLM_CUDA_CHECK_LAUNCH("gemv_kernel");
}

template <typename T>
__global__ void convert_kernel(const T* __restrict__ src, float* __restrict__ dst, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = to_f32(src[i]);
}

__global__ void add_bias_kernel(float* __restrict__ y, const void* bias, int bias_type,
                                int64_t rows, int64_t n) {
  const int64_t total = rows * n;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride)
    y[i] += load_any(bias, bias_type, i % n);
}

}  // namespace

void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  fail("cuBLAS error: %s failed at %s:%d: %s", call, file, line, cublasGetStatusString(status));
}

void gemv(cudaStream_t stream, const float* x, const GemvSeg* segs, int n_segs, DType w_type,
          int64_t T, int64_t K) {
  if (T < 1 || T > kGemvMaxTokens) fail("cuda gemv: %lld tokens", static_cast<long long>(T));
  if (n_segs < 1 || n_segs > kGemvMaxSegs) fail("cuda gemv: %d weight matrices", n_segs);
  GemvArgs a{};
  a.n_segs = n_segs;
  int64_t blocks = 0;
  bool aligned = aligned16(x);
  for (int s = 0; s < n_segs; s++) {
    a.w[s] = segs[s].w;
    a.bias[s] = segs[s].bias;
    a.bias_type[s] = static_cast<int>(segs[s].bias_type);
    a.y[s] = segs[s].y;
    a.N[s] = segs[s].N;
    a.block0[s] = static_cast<unsigned>(blocks);
    blocks += (segs[s].N + kGemvWarps - 1) / kGemvWarps;
    aligned = aligned && aligned16(segs[s].w);
  }
  a.block0[n_segs] = static_cast<unsigned>(blocks);
  if (blocks == 0) return;
  dispatch_float(w_type, "matmul weights", [&](auto tag) {
    using WT = decltype(tag);
    const bool vec = aligned && K % Vec16<WT>::kN == 0;
    if (T == 1)
      launch_gemv<WT, 1>(stream, x, a, vec, T, K);
    else if (T == 2)
      launch_gemv<WT, 2>(stream, x, a, vec, T, K);
    else if (T <= 4)
      launch_gemv<WT, 4>(stream, x, a, vec, T, K);
    else
      launch_gemv<WT, 8>(stream, x, a, vec, T, K);
  });
}

void convert_to_f32(cudaStream_t stream, const void* src, DType src_type, float* dst, int64_t n) {
  if (n <= 0) return;
  dispatch_float(src_type, "convert", [&](auto tag) {
    using T = decltype(tag);
    convert_kernel<T><<<grid_for(n, 256), 256, 0, stream>>>(static_cast<const T*>(src), dst, n);
  });
  LLM_CUDA_CHECK_LAUNCH("convert_kernel");
}

void add_bias(cudaStream_t stream, float* y, const void* bias, DType bias_type, int64_t rows,
              int64_t n) {
  if (rows * n <= 0) return;
  add_bias_kernel<<<grid_for(rows * n, 256), 256, 0, stream>>>(y, bias, static_cast<int>(bias_type),
                                                               rows, n);
  LLM_CUDA_CHECK_LAUNCH("add_bias_kernel");
}

void gemm(cublasHandle_t cublas, cudaStream_t stream, const float* x, const void* w, DType w_type,
          const void* bias, DType bias_type, float* y, int64_t T, int64_t K, int64_t N,
          float* scratch, size_t scratch_floats) {
  if (T <= 0 || N <= 0) return;
  LLM_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  const float one = 1.f, zero = 0.f;
  // Row-major y[T, N] = x[T, K] · W[N, K]ᵀ is column-major yᵀ (N x T) = Wᵀ' · xᵀ', where
  // the column-major views of W and x are K x N and K x T: op(A) = Aᵀ, op(B) = B.
  auto sgemm = [&](const float* wf, int64_t n0, int64_t rows) {
    LLM_CUBLAS_CHECK(cublasSgemm(cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows),
                                 static_cast<int>(T), static_cast<int>(K), &one, wf,
                                 static_cast<int>(K), x, static_cast<int>(K), &zero, y + n0,
                                 static_cast<int>(N)));
  };
  if (w_type == DType::F32) {
    sgemm(static_cast<const float*>(w), 0, N);
  } else {
    if (!scratch || scratch_floats < static_cast<size_t>(K))
      fail("cuda gemm: no conversion scratch for %s weights of %lld columns", dtype_name(w_type),
           static_cast<long long>(K));
    const int64_t chunk = std::min<int64_t>(N, static_cast<int64_t>(scratch_floats) / K);
    const size_t esize = dtype_row_bytes(w_type, 1);
    for (int64_t n0 = 0; n0 < N; n0 += chunk) {
      const int64_t rows = std::min(chunk, N - n0);
      convert_to_f32(stream, static_cast<const uint8_t*>(w) + n0 * K * esize, w_type, scratch,
                     rows * K);
      sgemm(scratch, n0, rows);
    }
  }
  if (bias) add_bias(stream, y, bias, bias_type, T, N);
}

}  // namespace cuda
}  // namespace llm
