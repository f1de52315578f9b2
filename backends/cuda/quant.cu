// Q8_0 / Q4_0 / Q4_1 matrices: the split layout (quants apart from scales, see
// cuda_kernels.h), repacking GGUF blocks into it, row gathers, and the prefill GEMM
// (dequantize to f16 tiles of rows, cuBLAS f16 x f16 -> f32 on the tensor cores).
#include <algorithm>

#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"

namespace llm {
namespace cuda {

namespace {

constexpr int kBlock = 32;

// Bytes of quants per block in the split layout, and of its scale (Q4_1: d and min).
int quant_bytes(DType t) { return layout_is_q4(layout_of(t)) ? 16 : 32; }
int scale_bytes(DType t) { return t == DType::Q4_1 ? 4 : 2; }

// One thread per block. GGUF blocks are 2-byte aligned (18 / 20 / 34 bytes): read as u16.
// kL == kLayoutQ4_1: the block's d and min go out as one 32-bit pair.
template <int kL>
__global__ void repack_kernel(const uint16_t* __restrict__ src, uint8_t* __restrict__ qs,
                              uint16_t* __restrict__ scales, int64_t n_blocks, int64_t nb,
                              int64_t scale_stride) {
  constexpr int kQuantBytes = layout_is_q4(kL) ? 16 : 32;
  constexpr int kHead = kL == kLayoutQ4_1 ? 2 : 1;  // u16 before the quants
  constexpr int kWords = kQuantBytes / 2 + kHead;   // u16 per GGUF block
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < n_blocks;
       b += stride) {
    const uint16_t* in = src + b * kWords;
    const int64_t si = b / nb * scale_stride + b % nb;
    if constexpr (kL == kLayoutQ4_1)
      reinterpret_cast<uint32_t*>(scales)[si] =
          static_cast<uint32_t>(in[0]) | (static_cast<uint32_t>(in[1]) << 16);
    else
      scales[si] = in[0];
    uint32_t w[kQuantBytes / 4];
#pragma unroll
    for (int i = 0; i < kQuantBytes / 4; i++)
      w[i] = static_cast<uint32_t>(in[kHead + 2 * i]) |
             (static_cast<uint32_t>(in[kHead + 1 + 2 * i]) << 16);
    uint4* out = reinterpret_cast<uint4*>(qs + b * kQuantBytes);
#pragma unroll
    for (int i = 0; i < kQuantBytes / 16; i++)
      out[i] = make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
  }
}

// The scale entry of block (row, blk): f16 d, or Q4_1's (d, min) pair.
template <int kL>
__device__ __forceinline__ uint32_t scale_at(const uint16_t* scales, int64_t i) {
  if constexpr (kL == kLayoutQ4_1) return reinterpret_cast<const uint32_t*>(scales)[i];
  return scales[i];
}

// Block j of a row as 32 floats, exactly (q - 8) * d, q * d + m or q * d as the CPU
// computes them (q * d is exact in float32, so q4_1's one rounding is that of the add).
template <int kL>
__device__ __forceinline__ void dequant_block(const uint8_t* qs, uint32_t scale_bits, float* out) {
  const float d = __half2float(__ushort_as_half(static_cast<uint16_t>(scale_bits)));
  if constexpr (layout_is_q4(kL)) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(qs));
    const uint8_t* q = reinterpret_cast<const uint8_t*>(&raw);
    if constexpr (kL == kLayoutQ4_1) {
      const float m = __half2float(__ushort_as_half(static_cast<uint16_t>(scale_bits >> 16)));
#pragma unroll
      for (int j = 0; j < 16; j++) {
        out[j] = __fadd_rn(static_cast<float>(q[j] & 0x0f) * d, m);
        out[j + 16] = __fadd_rn(static_cast<float>(q[j] >> 4) * d, m);
      }
    } else {
#pragma unroll
      for (int j = 0; j < 16; j++) {
        out[j] = static_cast<float>((q[j] & 0x0f) - 8) * d;
        out[j + 16] = static_cast<float>((q[j] >> 4) - 8) * d;
      }
    }
  } else {
    const uint4 r0 = __ldg(reinterpret_cast<const uint4*>(qs));
    const uint4 r1 = __ldg(reinterpret_cast<const uint4*>(qs) + 1);
    const int8_t* q0 = reinterpret_cast<const int8_t*>(&r0);
    const int8_t* q1 = reinterpret_cast<const int8_t*>(&r1);
#pragma unroll
    for (int j = 0; j < 16; j++) {
      out[j] = static_cast<float>(q0[j]) * d;
      out[j + 16] = static_cast<float>(q1[j]) * d;
    }
  }
}

// One block per output row, one thread per 32-element block of it.
template <int kL>
__global__ void get_rows_quant_kernel(const uint8_t* __restrict__ qs,
                                      const uint16_t* __restrict__ scales, int64_t V, int64_t nb,
                                      int64_t ss, const int32_t* __restrict__ ids,
                                      float* __restrict__ out, int* err) {
  // The GEMV after an embedding lookup may start streaming its weights (it waits for
  // this kernel before it reads the rows).
  pdl_trigger();
  const int64_t r = blockIdx.x;
  const int64_t id = ids[r];
  float* o = out + r * nb * kBlock;
  if (id < 0 || id >= V) {
    if (threadIdx.x == 0) report(err, kErrRowId);
    for (int64_t i = threadIdx.x; i < nb * kBlock; i += blockDim.x) o[i] = 0.f;
    return;
  }
  constexpr int kQB = layout_is_q4(kL) ? 16 : 32;
  for (int64_t b = threadIdx.x; b < nb; b += blockDim.x) {
    float v[kBlock];
    dequant_block<kL>(qs + (id * nb + b) * kQB, scale_at<kL>(scales, id * ss + b), v);
    float4* dst = reinterpret_cast<float4*>(o + b * kBlock);
#pragma unroll
    for (int i = 0; i < kBlock / 4; i++)
      dst[i] = make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
  }
}

// Columns [k0, k0 + kc) of rows [n0, n0 + rows) of W as f16 [rows, kc] (each value
// rounded once), one thread per block of 32.
template <int kL>
__global__ void dequant_f16_kernel(const uint8_t* __restrict__ qs,
                                   const uint16_t* __restrict__ scales, int64_t nb, int64_t ss,
                                   int64_t n0, int64_t b0, int64_t rows, int64_t kb,
                                   __half* __restrict__ out) {
  constexpr int kQB = layout_is_q4(kL) ? 16 : 32;
  const int64_t n_blocks = rows * kb;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_blocks;
       i += stride) {
    const int64_t row = n0 + i / kb, blk = b0 + i % kb;
    float v[kBlock];
    dequant_block<kL>(qs + (row * nb + blk) * kQB, scale_at<kL>(scales, row * ss + blk), v);
    uint4* dst = reinterpret_cast<uint4*>(out + i * kBlock);
#pragma unroll
    for (int c = 0; c < kBlock / 8; c++) {
      uint4 pk;
      __half2* h = reinterpret_cast<__half2*>(&pk);
#pragma unroll
      for (int j = 0; j < 4; j++) h[j] = __floats2half2_rn(v[8 * c + 2 * j], v[8 * c + 2 * j + 1]);
      dst[c] = pk;
    }
  }
}

// f32 -> f16, saturating at ±65504 (NaN stays NaN) so large activations cannot turn
// into infinities.
__device__ __forceinline__ __half to_half_sat(float v) {
  if (!(v != v)) v = fminf(fmaxf(v, -65504.f), 65504.f);
  return __float2half_rn(v);
}

__global__ void to_f16_kernel(const float* __restrict__ x, __half* __restrict__ y, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = to_half_sat(x[i]);
}

// f32 -> bf16, round to nearest even (bf16 has float32's range: nothing saturates).
__global__ void to_bf16_kernel(const float* __restrict__ x, __nv_bfloat16* __restrict__ y,
                               int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = __float2bfloat16_rn(x[i]);
}

}  // namespace

size_t qsplit_quant_bytes(DType t, int64_t N, int64_t K) {
  return static_cast<size_t>(N) * (K / kBlock) * quant_bytes(t);
}

size_t qsplit_scales_offset(DType t, int64_t N, int64_t K) {
  return (qsplit_quant_bytes(t, N, K) + 255) / 256 * 256;
}

int64_t qsplit_scale_stride(int64_t K) { return (K / kBlock + 3) / 4 * 4; }

size_t qsplit_bytes(DType t, int64_t N, int64_t K) {
  return qsplit_scales_offset(t, N, K) +
         static_cast<size_t>(N) * qsplit_scale_stride(K) * scale_bytes(t);
}

QMatrix qsplit_view(const void* base, DType t, int64_t N, int64_t K) {
  QMatrix m;
  m.qs = static_cast<const uint8_t*>(base);
  m.scales = reinterpret_cast<const uint16_t*>(m.qs + qsplit_scales_offset(t, N, K));
  m.type = t;
  m.N = N;
  m.K = K;
  m.scale_stride = qsplit_scale_stride(K);
  return m;
}

void repack_quant(cudaStream_t stream, const void* blocks, DType t, int64_t N, int64_t K,
                  void* dst) {
  const int64_t n_blocks = N * (K / kBlock);
  if (n_blocks <= 0) return;
  uint8_t* qs = static_cast<uint8_t*>(dst);
  uint16_t* scales = reinterpret_cast<uint16_t*>(qs + qsplit_scales_offset(t, N, K));
  const uint16_t* src = static_cast<const uint16_t*>(blocks);
  const int64_t nb = K / kBlock, ss = qsplit_scale_stride(K);
  // The scales of the padding blocks at the end of a row are zero: kernels that read
  // whole groups of 4 blocks multiply them away.
  if (ss != nb) LLM_CUDA_CHECK(cudaMemsetAsync(scales, 0, N * ss * scale_bytes(t), stream));
  const unsigned grid = grid_for(n_blocks, 256);
  with_layout(t, [&](auto l) {
    repack_kernel<l()><<<grid, 256, 0, stream>>>(src, qs, scales, n_blocks, nb, ss);
  });
  LLM_CUDA_CHECK_LAUNCH("repack_kernel");
}

void get_rows_quant(cudaStream_t stream, const QMatrix& table, const int32_t* ids, int64_t R,
                    float* out, int* err) {
  if (R <= 0) return;
  const int64_t nb = table.K / kBlock;
  const int threads = nb >= 128 ? 128 : 32;
  with_layout(table.type, [&](auto l) {
    get_rows_quant_kernel<l()><<<static_cast<unsigned>(R), threads, 0, stream>>>(
        table.qs, table.scales, table.N, nb, table.scale_stride, ids, out, err);
  });
  LLM_CUDA_CHECK_LAUNCH("get_rows_quant_kernel");
}

void gemm_half(cublasHandle_t cublas, cudaStream_t stream, const float* x, const void* w,
               DType w_type, const void* bias, DType bias_type, float* y, int64_t T, int64_t K,
               int64_t N, __half* x16, bool convert_x) {
  if (T <= 0 || N <= 0) return;
  if (w_type != DType::F16 && w_type != DType::BF16)
    fail("cuda gemm_half: %s weights are not 16-bit floats", dtype_name(w_type));
  if (!x16) fail("cuda gemm_half: no 16-bit scratch for x");
  const bool bf16 = w_type == DType::BF16;
  if (convert_x) {
    if (bf16)
      to_bf16_kernel<<<grid_for(T * K, 256), 256, 0, stream>>>(
          x, reinterpret_cast<__nv_bfloat16*>(x16), T * K);
    else
      to_f16_kernel<<<grid_for(T * K, 256), 256, 0, stream>>>(x, x16, T * K);
    LLM_CUDA_CHECK_LAUNCH(bf16 ? "to_bf16_kernel" : "to_f16_kernel");
  }
  LLM_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  const float one = 1.f, zero = 0.f;
  const cudaDataType_t type = bf16 ? CUDA_R_16BF : CUDA_R_16F;
  // Row-major y[T, N] = x · Wᵀ as column-major yᵀ = W' · x' (see gemm()).
  LLM_CUBLAS_CHECK(cublasGemmEx(
      cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(T),
      static_cast<int>(K), &one, w, type, static_cast<int>(K), x16, type, static_cast<int>(K),
      &zero, y, CUDA_R_32F, static_cast<int>(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  if (bias) add_bias(stream, y, bias, bias_type, T, N);
}

void qgemm(cublasHandle_t cublas, cudaStream_t stream, const float* x, const QMatrix& w,
           const void* bias, DType bias_type, float* y, int64_t T, __half* x16, bool convert_x,
           __half* w16, size_t w16_elems) {
  const int64_t K = w.K, N = w.N, nb = K / kBlock;
  if (T <= 0 || N <= 0) return;
  if (!w16 || w16_elems < static_cast<size_t>(K) || !x16)
    fail("cuda qgemm: no f16 scratch for a %s matrix of %lld columns", dtype_name(w.type),
         static_cast<long long>(K));
  if (convert_x) {
    to_f16_kernel<<<grid_for(T * K, 256), 256, 0, stream>>>(x, x16, T * K);
    LLM_CUDA_CHECK_LAUNCH("to_f16_kernel");
  }
  LLM_CUBLAS_CHECK(cublasSetStream(cublas, stream));
  const float one = 1.f, zero = 0.f;
  // Chunks of the f16 scratch: all N rows and a slice of the columns where that fits
  // (each GEMM then has N x T outputs to spread over the SMs; the partial products
  // accumulate in y), else slices of rows over all columns.
  const int64_t cap = static_cast<int64_t>(w16_elems);
  int64_t kc = K, rows = std::min<int64_t>(N, cap / K);
  if (rows < std::min<int64_t>(N, 2048)) {
    // Too few rows per chunk to fill the GPU: slices of columns over all rows instead,
    // when they are not too thin either.
    const int64_t kc2 = std::min<int64_t>(K, cap / N / kBlock * kBlock);
    if (kc2 >= std::min<int64_t>(K, 1024)) {
      kc = kc2;
      rows = N;
    }
  }
  for (int64_t n0 = 0; n0 < N; n0 += rows) {
    const int64_t nr = std::min(rows, N - n0);
    for (int64_t k0 = 0; k0 < K; k0 += kc) {
      const int64_t kn = std::min(kc, K - k0);
      const int64_t blocks = nr * (kn / kBlock);
      with_layout(w.type, [&](auto l) {
        dequant_f16_kernel<l()><<<grid_for(blocks, 256), 256, 0, stream>>>(
            w.qs, w.scales, nb, w.scale_stride, n0, k0 / kBlock, nr, kn / kBlock, w16);
      });
      LLM_CUDA_CHECK_LAUNCH("dequant_f16_kernel");
      // Row-major y[T, N] (+)= x[:, k0:] · W[n0:, k0:]ᵀ as column-major
      // yᵀ = W' · x' (see gemm()); later column slices add to the first.
      LLM_CUBLAS_CHECK(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(nr),
                                    static_cast<int>(T), static_cast<int>(kn), &one, w16,
                                    CUDA_R_16F, static_cast<int>(kn), x16 + k0, CUDA_R_16F,
                                    static_cast<int>(K), k0 == 0 ? &zero : &one, y + n0, CUDA_R_32F,
                                    static_cast<int>(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
  }
  if (bias) add_bias(stream, y, bias, bias_type, T, N);
}

}  // namespace cuda
}  // namespace llm
