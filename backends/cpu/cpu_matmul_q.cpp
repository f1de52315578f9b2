// MatMul with q8_0 / q4_0 / q4_1 weights for a few tokens (decode, up to
// kQuantGemvMaxTokens): integer dot products.
//
// Decode is bound by how fast the weights stream in, and q4_0 packs 32 weights in 18
// bytes, so decoding them must cost a few instructions per block. As in ggml, each
// token row of x is quantized once per matmul to q8 blocks (32 int8 q_x and a float
// scale d_x = max|x| / 127 per block of 32); a weight block then adds
//   d_w * d_x * sum_j q_w[j] * q_x[j]
// with the sum in int32: AVX-512 VNNI vpdpbusd, AVX2 vpmaddubsw + vpmaddwd, NEON sdot,
// or plain C. vpdpbusd and vpmaddubsw multiply unsigned by signed bytes, so weights
// are used offset to unsigned (q4: q + 8 as stored; q8 on VNNI: q + 128) and the
// offset times sum(q_x) is subtracted by seeding the int32 accumulator with it.
// q4_1 (value q * d_w + m_w) adds m_w times the block's sum of the rounded x, d_x sum(q_x),
// as ggml's q8_1 activations do: its error is then that of q4_0, x's rounding times w.
// (With the exact sum of x it is x's rounding times w - m_w, which measured about twice
// as large on a random model's logits.)
// Measured on the 4096 x 4096 q4_0 GEMV, this is 1.8x (Xeon) to 2.5x (EPYC Zen 4)
// faster than decoding the weights to float32 in registers for FMAs against x.
//
// Error: the sums are exact, so the only error beyond float32 rounding is that of x's
// quantization, |x - d_x q_x| <= d_x / 2 per element. Output n is off by at most
//   sum_blocks d_x / 2 * sum_{j in block} |w[n, j]|
// (w dequantized), a bound tests check. Typically the errors of either sign cancel:
// for x uniform in [-1, 1], y's rms error is ~4e-3 of y's rms (d_x / sqrt(12) per
// element against x's rms of 1 / sqrt(3)), and max |err| / max |y| measures 3e-3 to
// 5e-3. Longer batches go through float32 on dequantized weights (cpu_matmul.cpp)
// and have no such error.
#include <algorithm>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"
#include "core/error.h"

#if LLM_CPU_X86_MULTIVERSION
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <arm_neon.h>
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#define LLM_CPU_NEON_DOTPROD 1
#else
#define LLM_CPU_NEON_DOTPROD 0
#endif

namespace llm {
namespace cpu {

namespace {

constexpr int kBlock = 32;
constexpr size_t kQ8Bytes = 34, kQ4Bytes = 18, kQ41Bytes = 20;
// The weight formats of the dot products (template arguments).
enum Kind : int { kQ8 = 0, kQ4 = 1, kQ41 = 2 };
constexpr size_t kind_bytes(int kind) {
  return kind == kQ8 ? kQ8Bytes : kind == kQ4 ? kQ4Bytes : kQ41Bytes;
}
constexpr int kRows = 4;  // weight rows per tile: each x block loaded is used 4 times

// One token row of x as q8 blocks.
struct QAct {
  const int8_t* q;   // [K]
  const float* d;    // [K / 32] scales
  const int32_t* s;  // [K / 32] sum of q over each block
};

typedef int8_t i8x8 __attribute__((vector_size(8)));
typedef int32_t i32x8 __attribute__((vector_size(32)));

// Quantizes nb blocks of x (round to nearest; max|x| maps to +-127).
LLM_CPU_CLONES void quantize_act(const float* x, int64_t nb, int8_t* q, float* d, int32_t* s) {
  // Adding 1.5 * 2^23 rounds |v| < 2^22 to an integer held in the low mantissa bits.
  constexpr float kMagic = 12582912.f;
  const i32x8 magic_bits = (i32x8){} + 0x4b400000;
  for (int64_t b = 0; b < nb; b++, x += kBlock, q += kBlock) {
    f32x8 v[4];
    u32x8 m = {};
    for (int i = 0; i < 4; i++) {
      v[i] = LLM_LOADV(f32x8, x + 8 * i);
      const u32x8 a = (u32x8)v[i] & 0x7fffffffu;
      m = a > m ? a : m;  // max of non-negative floats as integers
    }
    uint32_t amax_bits = 0;
    for (int l = 0; l < 8; l++) amax_bits = std::max(amax_bits, m[l]);
    float amax;
    std::memcpy(&amax, &amax_bits, 4);
    const float scale = amax / 127.f;
    const float inv = scale != 0.f ? 1.f / scale : 0.f;
    i32x8 sum = {};
    for (int i = 0; i < 4; i++) {
      const i32x8 r = (i32x8)(v[i] * inv + kMagic) - magic_bits;
      sum += r;
      const i8x8 r8 = __builtin_convertvector(r, i8x8);
      std::memcpy(q + 8 * i, &r8, 8);
    }
    int32_t total = 0;
    for (int l = 0; l < 8; l++) total += sum[l];
    d[b] = scale;
    s[b] = total;
  }
}

// out[r] = row r of W (rn <= kRows rows from w, ldw bytes apart) · x.
using QDotFn = void (*)(const uint8_t* w, size_t ldw, int rn, const QAct& x, int64_t nb,
                        float* out);

// ---- Portable ---------------------------------------------------------------------------

LLM_CPU_INLINE float scale_of(const uint8_t* block) {
  uint16_t h;
  std::memcpy(&h, block, 2);
  return f16_to_f32(h);
}

void dot_q8_generic(const uint8_t* w, size_t ldw, int rn, const QAct& x, int64_t nb, float* out) {
  for (int r = 0; r < rn; r++) {
    const uint8_t* blk = w + r * ldw;
    float acc = 0.f;
    for (int64_t b = 0; b < nb; b++, blk += kQ8Bytes) {
      const int8_t* qx = x.q + b * kBlock;
      int32_t sum = 0;
      for (int j = 0; j < kBlock; j++) sum += static_cast<int8_t>(blk[2 + j]) * qx[j];
      acc += scale_of(blk) * x.d[b] * static_cast<float>(sum);
    }
    out[r] = acc;
  }
}

// q4_0 (kKind kQ4: q - 8 by the seeded sum) and q4_1 (kQ41: nibbles after d and m, plus
// m times the block's sum of x).
template <int kKind>
void dot_q4_generic(const uint8_t* w, size_t ldw, int rn, const QAct& x, int64_t nb, float* out) {
  constexpr int kQs = kKind == kQ41 ? 4 : 2;  // where the nibbles start
  for (int r = 0; r < rn; r++) {
    const uint8_t* blk = w + r * ldw;
    float acc = 0.f;
    for (int64_t b = 0; b < nb; b++, blk += kind_bytes(kKind)) {
      const int8_t* qx = x.q + b * kBlock;
      int32_t sum = kKind == kQ4 ? -8 * x.s[b] : 0;
      for (int j = 0; j < kBlock / 2; j++)
        sum += (blk[kQs + j] & 15) * qx[j] + (blk[kQs + j] >> 4) * qx[j + 16];
      acc += scale_of(blk) * x.d[b] * static_cast<float>(sum);
      if (kKind == kQ41) acc += scale_of(blk + 2) * (x.d[b] * static_cast<float>(x.s[b]));
    }
    out[r] = acc;
  }
}

// ---- x86: AVX2 and AVX-512 VNNI ---------------------------------------------------------

#if LLM_CPU_X86_MULTIVERSION
#define LLM_AVX2 __attribute__((target("arch=x86-64-v3")))
#define LLM_VNNI __attribute__((target("arch=x86-64-v4,avx512vnni")))

#define LLM_X86_INLINE LLM_AVX2 inline __attribute__((always_inline))

LLM_X86_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

LLM_X86_INLINE uint16_t block_bits(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return h;
}

// A block's f16 scale in all lanes.
LLM_X86_INLINE __m256 block_scale(const uint8_t* blk) {
  return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<int16_t>(block_bits(blk))));
}

// The 32 nibbles of a q4_0 / q4_1 block (its 16 bytes at qs) as bytes 0..15, in element order.
LLM_X86_INLINE __m256i q4_bytes(const uint8_t* qs) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  // Both halves loaded by one broadcast, then shifted per lane: no cross-lane shuffle.
  const __m256i both = _mm256_broadcastsi128_si256(raw);
  return _mm256_and_si256(_mm256_srlv_epi64(both, _mm256_set_epi64x(4, 4, 0, 0)),
                          _mm256_set1_epi8(15));
}

// v in lane 0, zeros elsewhere: a block's offset correction.
LLM_X86_INLINE __m256i lane0(int32_t v) { return _mm256_zextsi128_si256(_mm_cvtsi32_si128(v)); }

LLM_X86_INLINE __m256i load32(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// The rows loop is written out per target: an always_inline helper compiled for one
// instruction set cannot be inlined into a generic template.
// Weight bytes prefetched ahead in each row stream: hardware prefetchers lose track
// of several interleaved streams that advance slowly (18 bytes per step); measured
// ~1.3x on DRAM-bound q4_0 decode.
constexpr int kPrefetch = 512;

// The rows loop is written out per target: an always_inline helper compiled for one
// instruction set cannot be inlined into a generic template. Per block and row: an
// unpack, one integer dot product, the f16 scale converted in a vector register
// (converting 8 scales at once in a first pass over a chunk measured slower), one FMA.
// q4_1's min term (m_w times the block's sum of x) is a scalar FMA per row and block.
#define LLM_Q_ROWS(NAME, TARGET, BLOCK_DOT)                                                        \
  template <int RN, int kKind>                                                                     \
  TARGET inline void NAME(const uint8_t* w, size_t ldw, const QAct& x, int64_t nb, float* out) {   \
    constexpr size_t kBytes = kind_bytes(kKind);                                                   \
    __m256 acc[RN];                                                                                \
    float macc[RN];                                                                                \
    for (int r = 0; r < RN; r++) acc[r] = _mm256_setzero_ps(), macc[r] = 0.f;                      \
    for (int64_t b = 0; b < nb; b++) {                                                             \
      const __m256i qx = load32(x.q + b * kBlock);                                                 \
      const __m256 dx = _mm256_set1_ps(x.d[b]);                                                    \
      const int32_t sx = x.s[b];                                                                   \
      (void)sx;                                                                                    \
      _Pragma("GCC unroll 4") for (int r = 0; r < RN; r++) {                                       \
        const uint8_t* blk = w + r * ldw + b * kBytes;                                             \
        _mm_prefetch(reinterpret_cast<const char*>(blk) + kPrefetch, _MM_HINT_T0);                 \
        __m256i dot;                                                                               \
        BLOCK_DOT;                                                                                 \
        acc[r] =                                                                                   \
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(block_scale(blk), dx), acc[r]); \
        if (kKind == kQ41) macc[r] += _cvtsh_ss(block_bits(blk + 2)) * (x.d[b] * float(sx));       \
      }                                                                                            \
    }                                                                                              \
    for (int r = 0; r < RN; r++) out[r] = hsum(acc[r]) + macc[r];                                  \
  }                                                                                                \
  template <int kKind>                                                                             \
  TARGET void NAME##_dot(const uint8_t* w, size_t ldw, int rn, const QAct& x, int64_t nb,          \
                         float* out) {                                                             \
    switch (rn) {                                                                                  \
      case 4:                                                                                      \
        return NAME<4, kKind>(w, ldw, x, nb, out);                                                 \
      case 3:                                                                                      \
        return NAME<3, kKind>(w, ldw, x, nb, out);                                                 \
      case 2:                                                                                      \
        return NAME<2, kKind>(w, ldw, x, nb, out);                                                 \
      default:                                                                                     \
        return NAME<1, kKind>(w, ldw, x, nb, out);                                                 \
    }                                                                                              \
  }

// AVX2. q4: unsigned nibbles x signed q_x, the int16 pairs stay below 2 * 15 * 127.
// q8: |q_w| x sign-adjusted q_x (q_w + 128 could overflow vpmaddubsw's int16 pairs).
LLM_Q_ROWS(rows_avx2, LLM_AVX2, {
  const __m256i ones = _mm256_set1_epi16(1);
  if (kKind == kQ4) {
    dot = _mm256_madd_epi16(_mm256_maddubs_epi16(q4_bytes(blk + 2), qx), ones);
    dot = _mm256_add_epi32(dot, lane0(-8 * sx));
  } else if (kKind == kQ41) {
    dot = _mm256_madd_epi16(_mm256_maddubs_epi16(q4_bytes(blk + 4), qx), ones);
  } else {
    const __m256i q = load32(blk + 2);
    dot = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(qx, q)),
                            ones);
  }
})

// VNNI: the offset weights (q4: as stored, q8: q_w + 128) times sum(q_x) seed the sum.
LLM_Q_ROWS(rows_vnni, LLM_VNNI, {
  if (kKind == kQ4) {
    dot = _mm256_dpbusd_epi32(lane0(-8 * sx), q4_bytes(blk + 2), qx);
  } else if (kKind == kQ41) {
    dot = _mm256_dpbusd_epi32(_mm256_setzero_si256(), q4_bytes(blk + 4), qx);
  } else {
    const __m256i q = _mm256_xor_si256(load32(blk + 2), _mm256_set1_epi8(-128));
    dot = _mm256_dpbusd_epi32(lane0(-128 * sx), q, qx);
  }
})
#undef LLM_Q_ROWS
#endif

// ---- aarch64: NEON sdot -----------------------------------------------------------------

#if LLM_CPU_NEON_DOTPROD
#define LLM_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))

template <int RN, int kKind>
LLM_DOTPROD inline void rows_neon(const uint8_t* w, size_t ldw, const QAct& x, int64_t nb,
                                  float* out) {
  constexpr size_t kBytes = kind_bytes(kKind);
  float32x4_t acc[RN];
  float macc[RN];
  for (int r = 0; r < RN; r++) acc[r] = vdupq_n_f32(0.f), macc[r] = 0.f;
  for (int64_t b = 0; b < nb; b++) {
    const int8x16_t x0 = vld1q_s8(x.q + b * kBlock), x1 = vld1q_s8(x.q + b * kBlock + 16);
    const float dx = x.d[b];
    for (int r = 0; r < RN; r++) {
      const uint8_t* blk = w + r * ldw + b * kBytes;
      int8x16_t w0, w1;
      if (kKind == kQ4) {
        const uint8x16_t raw = vld1q_u8(blk + 2);
        w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(15))), vdupq_n_s8(8));
        w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(raw, 4)), vdupq_n_s8(8));
      } else if (kKind == kQ41) {
        const uint8x16_t raw = vld1q_u8(blk + 4);
        w0 = vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(15)));
        w1 = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
        __fp16 m;
        std::memcpy(&m, blk + 2, 2);
        macc[r] += static_cast<float>(m) * (dx * static_cast<float>(x.s[b]));
      } else {
        w0 = vld1q_s8(reinterpret_cast<const int8_t*>(blk + 2));
        w1 = vld1q_s8(reinterpret_cast<const int8_t*>(blk + 18));
      }
      const int32x4_t s = vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, x0), w1, x1);
      __fp16 h;
      std::memcpy(&h, blk, 2);
      acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(s), static_cast<float>(h) * dx);
    }
  }
  for (int r = 0; r < RN; r++) out[r] = vaddvq_f32(acc[r]) + macc[r];
}

template <int kKind>
LLM_DOTPROD void dot_neon(const uint8_t* w, size_t ldw, int rn, const QAct& x, int64_t nb,
                          float* out) {
  switch (rn) {
    case 4:
      return rows_neon<4, kKind>(w, ldw, x, nb, out);
    case 3:
      return rows_neon<3, kKind>(w, ldw, x, nb, out);
    case 2:
      return rows_neon<2, kKind>(w, ldw, x, nb, out);
    default:
      return rows_neon<1, kKind>(w, ldw, x, nb, out);
  }
}
#endif

struct QKernel {
  QDotFn q8, q4, q41;
  const char* isa;
};

// Not cached, so that tests can lower the x86 level (set_x86_level_cap).
QKernel select_kernel() {
#if LLM_CPU_X86_MULTIVERSION
  if (x86_avx512_vnni())
    return {rows_vnni_dot<kQ8>, rows_vnni_dot<kQ4>, rows_vnni_dot<kQ41>, "avx512-vnni"};
  if (x86_level() >= 3)
    return {rows_avx2_dot<kQ8>, rows_avx2_dot<kQ4>, rows_avx2_dot<kQ41>, "avx2"};
#endif
#if LLM_CPU_NEON_DOTPROD
  static const bool dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
  if (dotprod) return {dot_neon<kQ8>, dot_neon<kQ4>, dot_neon<kQ41>, "neon-dotprod"};
#endif
  return {dot_q8_generic, dot_q4_generic<kQ4>, dot_q4_generic<kQ41>, "generic"};
}

}  // namespace

const char* matmul_q_isa() { return select_kernel().isa; }

void matmul_q(ThreadPool& pool, const float* x, const void* w, DType w_type, const float* bias,
              float* y, int64_t T, int64_t K, int64_t N) {
  if (T <= 0 || N <= 0) return;
  if (!is_quant(w_type)) fail("matmul_q: %s weights are not quantized", dtype_name(w_type));
  if (K % kBlock != 0) fail("matmul_q: K = %lld is not a multiple of 32", (long long)K);
  const QKernel kernel = select_kernel();
  const QDotFn dot = w_type == DType::Q8_0   ? kernel.q8
                     : w_type == DType::Q4_0 ? kernel.q4
                                             : kernel.q41;
  const int64_t nb = K / kBlock;
  const size_t ldw = dtype_row_bytes(w_type, K);
  const uint8_t* wb = static_cast<const uint8_t*>(w);

  // Per token: q [K] int8, then d and s [nb] each; reused across calls.
  const size_t stride = (K + 2 * nb * 4 + 63) / 64 * 64;
  thread_local std::vector<int64_t> scratch;  // int64_t: 8-byte aligned at least
  scratch.resize((T * stride + 7) / 8);
  uint8_t* base = reinterpret_cast<uint8_t*>(scratch.data());
  std::vector<QAct> acts(T);
  for (int64_t t = 0; t < T; t++) {
    uint8_t* p = base + t * stride;
    int8_t* q = reinterpret_cast<int8_t*>(p);
    float* d = reinterpret_cast<float*>(p + K);
    int32_t* s = reinterpret_cast<int32_t*>(p + K + nb * 4);
    quantize_act(x + t * K, nb, q, d, s);
    acts[t] = {q, d, s};
  }

  // Ranges of whole row tiles, a few per thread to balance.
  const int64_t groups = (N + kRows - 1) / kRows;
  const int64_t items = std::min(groups, int64_t{4} * pool.n_threads());
  const int64_t per = (groups + items - 1) / items * kRows;
  pool.parallel_for((N + per - 1) / per, [&](int64_t begin, int64_t end) {
    float out[kRows];
    for (int64_t n = begin * per; n < std::min(N, end * per); n += kRows) {
      const int rn = static_cast<int>(std::min<int64_t>(kRows, N - n));
      // All tokens per tile: its weights are still in L1 for the second one.
      for (int64_t t = 0; t < T; t++) {
        dot(wb + n * ldw, ldw, rn, acts[t], nb, out);
        for (int r = 0; r < rn; r++) y[t * N + n + r] = out[r] + (bias ? bias[n + r] : 0.f);
      }
    }
  });
}

}  // namespace cpu
}  // namespace llm
