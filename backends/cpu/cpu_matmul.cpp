// MatMul: y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias).
//
// Both operands are contiguous along K, so the micro-kernel computes an RM x RN tile
// of dot products (RM rows of x against RN rows of W) with RM * RN vector
// accumulators: each weight vector loaded is reused for RM tokens in prefill.
//
// Prefill blocking: for each block of up to kTB tokens and a K slice of kKC, an
// RN-row slice of W (decoded to float32 scratch by the dtype's DequantRowFn unless it
// is f32) stays in L1 while the tokens' x slice stays in L2. Work is split over
// (token block, row range).
//
// Decode (one token) is a GEMV bound by memory bandwidth: W is streamed row group by
// row group through a 1 x 8 tile; on x86 f16/bf16 rows are converted in registers
// (F16C) instead of going through scratch. Quantized weights (q8_0 / q4_0) decode
// through the integer GEMV of cpu_matmul_q.cpp, and prefill through scratch here.
//
// The tile shape depends on the register file, so the block loop is compiled per
// x86 level (AVX-512 has 32 vector registers, AVX2 16) and picked at run time.
#include <algorithm>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"
#include "core/error.h"

#if LLM_CPU_X86_MULTIVERSION
#include <immintrin.h>
#endif

namespace llm {
namespace cpu {

namespace {

typedef float f32x4 __attribute__((vector_size(16)));

constexpr int64_t kKC = 1024;  // prefill K slice: 4 rows of W in scratch = 16 KiB (L1)
constexpr int64_t kKC1 = 512;  // decode K slice: 8 rows of W in scratch = 16 KiB (L1)
constexpr int64_t kTB = 64;    // tokens per block: x slice = 256 KiB (L2)

struct Job {
  const float* x;
  const uint8_t* w;
  size_t w_row_bytes;
  DType w_type;
  bool w_f32;  // read W in place, no decoding
  DequantRowFn dequant;
  const float* bias;
  float* y;
  int64_t T, K, N;
};

// y[r, j] (+)= sum_k x[r, k] * w[j, k] for r < RM, j < RN; bias added when given.
template <class V, int RM, int RN>
LLM_CPU_INLINE void tile(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t k,
                         float* y, int64_t ldy, const float* bias, bool accumulate) {
  constexpr int L = sizeof(V) / sizeof(float);
  V acc[RM][RN];
#pragma GCC unroll 8
  for (int r = 0; r < RM; r++)
#pragma GCC unroll 8
    for (int j = 0; j < RN; j++) acc[r][j] = V{};
  int64_t i = 0;
  for (; i + L <= k; i += L) {
    V wv[RN];
#pragma GCC unroll 8
    for (int j = 0; j < RN; j++) wv[j] = LLM_LOADV(V, w + j * ldw + i);
#pragma GCC unroll 8
    for (int r = 0; r < RM; r++) {
      const V xv = LLM_LOADV(V, x + r * ldx + i);
#pragma GCC unroll 8
      for (int j = 0; j < RN; j++) acc[r][j] += xv * wv[j];
    }
  }
  float s[RM][RN];
#pragma GCC unroll 8
  for (int r = 0; r < RM; r++)
#pragma GCC unroll 8
    for (int j = 0; j < RN; j++) {
      float t = 0.f;
#pragma GCC unroll 16
      for (int l = 0; l < L; l++) t += acc[r][j][l];
      s[r][j] = t;
    }
  for (; i < k; i++)
    for (int r = 0; r < RM; r++)
      for (int j = 0; j < RN; j++) s[r][j] += x[r * ldx + i] * w[j * ldw + i];
  for (int r = 0; r < RM; r++)
    for (int j = 0; j < RN; j++) {
      float v = s[r][j];
      if (accumulate) v += y[r * ldy + j];
      if (bias) v += bias[j];
      y[r * ldy + j] = v;
    }
}

// Dispatches a ragged edge tile (rm <= RM, rn <= RN) to its instantiation.
template <class V, int RM, int RN>
LLM_CPU_INLINE void tile_cols(int rn, const float* x, int64_t ldx, const float* w, int64_t ldw,
                              int64_t k, float* y, int64_t ldy, const float* bias, bool acc) {
  if (rn == RN) {
    tile<V, RM, RN>(x, ldx, w, ldw, k, y, ldy, bias, acc);
  } else if constexpr (RN > 1) {
    tile_cols<V, RM, RN - 1>(rn, x, ldx, w, ldw, k, y, ldy, bias, acc);
  }
}

template <class V, int RM, int RN>
LLM_CPU_INLINE void tile_any(int rm, int rn, const float* x, int64_t ldx, const float* w,
                             int64_t ldw, int64_t k, float* y, int64_t ldy, const float* bias,
                             bool acc) {
  if (rm == RM) {
    tile_cols<V, RM, RN>(rn, x, ldx, w, ldw, k, y, ldy, bias, acc);
  } else if constexpr (RM > 1) {
    tile_any<V, RM - 1, RN>(rm, rn, x, ldx, w, ldw, k, y, ldy, bias, acc);
  }
}

// One K slice of RN output rows against tokens [t0, t1): decodes the weight slice
// (unless it is f32) and runs the tiles over the tokens.
template <class V, int RM, int RN>
LLM_CPU_INLINE void matmul_slice(const Job& j, int64_t t0, int64_t t1, int64_t n, int rn,
                                 int64_t k0, int64_t kc, float* wbuf, int64_t ldb) {
  const int64_t K = j.K;
  const float* wp;
  int64_t ldw;
  if (j.w_f32) {
    wp = reinterpret_cast<const float*>(j.w) + n * K + k0;
    ldw = K;
  } else {
    for (int r = 0; r < rn; r++) j.dequant(j.w + (n + r) * j.w_row_bytes, k0, kc, wbuf + r * ldb);
    wp = wbuf;
    ldw = ldb;
  }
  const bool first = k0 == 0;
  const float* bias = (first && j.bias) ? j.bias + n : nullptr;
  for (int64_t t = t0; t < t1; t += RM) {
    const int rm = static_cast<int>(std::min<int64_t>(RM, t1 - t));
    tile_any<V, RM, RN>(rm, rn, j.x + t * K + k0, K, wp, ldw, kc, j.y + t * j.N + n, j.N, bias,
                        !first);
  }
}

// Output rows [n0, n1) for a single tile of tokens (decode): there is no x reuse to
// block for, so W is walked row group by row group, which keeps its streams
// sequential for the prefetchers. f32 rows are read whole, in place.
template <class V, int RM, int RN>
LLM_CPU_INLINE void matmul_stream(const Job& j, int64_t t0, int64_t t1, int64_t n0, int64_t n1,
                                  float* wbuf) {
  const int64_t K = j.K;
  const int64_t kc_step = j.w_f32 ? K : kKC1;
  for (int64_t n = n0; n < n1; n += RN) {
    const int rn = static_cast<int>(std::min<int64_t>(RN, n1 - n));
    for (int64_t k0 = 0; k0 < K; k0 += kc_step)
      matmul_slice<V, RM, RN>(j, t0, t1, n, rn, k0, std::min(kc_step, K - k0), wbuf, kKC1);
  }
}

// Tokens [t0, t1) x output rows [n0, n1). RN1: rows per tile for a single token,
// where each weight vector feeds one FMA and more rows mean more independent chains.
template <class V, int RM, int RN, int RN1>
LLM_CPU_INLINE void matmul_block(const Job& j, int64_t t0, int64_t t1, int64_t n0, int64_t n1) {
  constexpr int64_t kBuf = std::max({RN * kKC, RN1 * kKC1, RN * kKC1});
  alignas(64) float wbuf[kBuf];
  if (t1 - t0 == 1) return matmul_stream<V, 1, RN1>(j, t0, t1, n0, n1, wbuf);
  if (t1 - t0 <= RM) return matmul_stream<V, RM, RN>(j, t0, t1, n0, n1, wbuf);
  // Prefill: K slice outermost, so the tokens' x slice stays in L2 across all rows.
  const int64_t K = j.K;
  for (int64_t k0 = 0; k0 < K; k0 += kKC) {
    for (int64_t n = n0; n < n1; n += RN) {
      const int rn = static_cast<int>(std::min<int64_t>(RN, n1 - n));
      matmul_slice<V, RM, RN>(j, t0, t1, n, rn, k0, std::min(kKC, K - k0), wbuf, kKC);
    }
  }
}

using BlockFn = void (*)(const Job&, int64_t, int64_t, int64_t, int64_t);

struct Kernel {
  BlockFn fn;
  int rn;  // output rows per tile: ranges are split at multiples of it
  const char* isa;
};

#if LLM_CPU_X86_MULTIVERSION
#define LLM_AVX2 __attribute__((target("arch=x86-64-v3")))

// 8 halves (f16 or bf16) at p as floats.
template <bool kBf16>
LLM_AVX2 inline __m256 load_half8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (kBf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

LLM_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One token against RN rows of f16/bf16 weights, converted in registers: with a
// single token there is no reuse to amortise a trip through scratch, and decode is
// bound by how fast the weights stream in.
template <int RN, bool kBf16>
LLM_AVX2 inline void gemv_half_rows(const Job& j, int64_t t, int64_t n) {
  const int64_t K = j.K;
  const float* x = j.x + t * K;
  const uint16_t* w = reinterpret_cast<const uint16_t*>(j.w + n * j.w_row_bytes);
  __m256 acc[RN];
  for (int r = 0; r < RN; r++) acc[r] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 xv = _mm256_loadu_ps(x + k);
#pragma GCC unroll 8
    for (int r = 0; r < RN; r++)
      acc[r] = _mm256_fmadd_ps(load_half8<kBf16>(w + r * K + k), xv, acc[r]);
  }
  for (int r = 0; r < RN; r++) {
    float s = hsum8(acc[r]);
    for (int64_t i = k; i < K; i++)
      s += x[i] * (kBf16 ? bf16_to_f32(w[r * K + i]) : f16_to_f32(w[r * K + i]));
    if (j.bias) s += j.bias[n + r];
    j.y[t * j.N + n + r] = s;
  }
}

template <bool kBf16>
LLM_AVX2 inline void gemv_half(const Job& j, int64_t t, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 8 <= n1; n += 8) gemv_half_rows<8, kBf16>(j, t, n);
  for (; n < n1; n++) gemv_half_rows<1, kBf16>(j, t, n);
}

// Returns false when the fused f16/bf16 GEMV does not apply.
LLM_AVX2 inline bool try_gemv_half(const Job& j, int64_t t0, int64_t t1, int64_t n0, int64_t n1) {
  if (t1 - t0 != 1) return false;
  if (j.w_type == DType::F16) {
    gemv_half<false>(j, t0, n0, n1);
    return true;
  }
  if (j.w_type == DType::BF16) {
    gemv_half<true>(j, t0, n0, n1);
    return true;
  }
  return false;
}

// 32 registers: 16 accumulators + 4 weight vectors + 1 x vector.
__attribute__((target("arch=x86-64-v4"))) void block_v4(const Job& j, int64_t t0, int64_t t1,
                                                        int64_t n0, int64_t n1) {
  if (!try_gemv_half(j, t0, t1, n0, n1)) matmul_block<f32x8, 4, 4, 8>(j, t0, t1, n0, n1);
}
// 16 registers: 12 accumulators + 3 weight vectors + 1 x vector.
__attribute__((target("arch=x86-64-v3"))) void block_v3(const Job& j, int64_t t0, int64_t t1,
                                                        int64_t n0, int64_t n1) {
  if (!try_gemv_half(j, t0, t1, n0, n1)) matmul_block<f32x8, 4, 3, 8>(j, t0, t1, n0, n1);
}
void block_sse(const Job& j, int64_t t0, int64_t t1, int64_t n0, int64_t n1) {
  matmul_block<f32x4, 4, 3, 8>(j, t0, t1, n0, n1);
}

Kernel select_kernel() {
  switch (x86_level()) {
    case 4:
      return {block_v4, 4, "x86-64-v4"};
    case 3:
      return {block_v3, 3, "x86-64-v3"};
    default:
      return {block_sse, 3, "x86-64"};
  }
}
#else
// NEON (aarch64) has 32 128-bit registers.
void block_generic(const Job& j, int64_t t0, int64_t t1, int64_t n0, int64_t n1) {
  matmul_block<f32x4, 4, 4, 8>(j, t0, t1, n0, n1);
}

Kernel select_kernel() {
#if defined(__aarch64__)
  return {block_generic, 4, "neon"};
#else
  return {block_generic, 4, "generic"};
#endif
}
#endif

// Cheap, and not cached so that tests can lower the x86 level (set_x86_level_cap).
Kernel kernel() { return select_kernel(); }

}  // namespace

const char* matmul_isa() { return kernel().isa; }

void matmul(ThreadPool& pool, const float* x, const void* w, DType w_type, const float* bias,
            float* y, int64_t T, int64_t K, int64_t N) {
  if (T <= 0 || N <= 0) return;
  if (is_quant(w_type) && T <= kQuantGemvMaxTokens)
    return matmul_q(pool, x, w, w_type, bias, y, T, K, N);
  const Kernel kernel = cpu::kernel();
  Job job;
  job.x = x;
  job.w = static_cast<const uint8_t*>(w);
  job.w_row_bytes = dtype_row_bytes(w_type, K);
  job.w_type = w_type;
  job.w_f32 = w_type == DType::F32;
  job.dequant = dequant_row_fn(w_type);
  if (!job.dequant)
    fail("matmul: %s weights are not supported by the cpu backend", dtype_name(w_type));
  job.bias = bias;
  job.y = y;
  job.T = T;
  job.K = K;
  job.N = N;

  // Token blocks first (each reads W once), then row ranges (whole tiles) until every
  // thread has a few items to balance.
  const int64_t n_tb = (T + kTB - 1) / kTB;
  const int64_t want = int64_t{4} * pool.n_threads();
  const int64_t rn = T == 1 ? 8 : kernel.rn;
  const int64_t groups = (N + rn - 1) / rn;
  const int64_t split = std::min(groups, std::max<int64_t>(1, (want + n_tb - 1) / n_tb));
  const int64_t nc_rows = (groups + split - 1) / split * rn;
  const int64_t n_cols = (N + nc_rows - 1) / nc_rows;
  pool.parallel_for(n_tb * n_cols, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
      const int64_t t0 = (i / n_cols) * kTB;
      const int64_t n0 = (i % n_cols) * nc_rows;
      kernel.fn(job, t0, std::min(T, t0 + kTB), n0, std::min(N, n0 + nc_rows));
    }
  });
}

}  // namespace cpu
}  // namespace llm
