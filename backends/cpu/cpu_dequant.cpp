// Row decoders from weight formats to float32 (see DequantRowFn). Matmul decodes a
// block of weight rows into scratch with these and runs its float32 micro-kernel on
// it (prefill; quantized decode has its own integer GEMV in cpu_matmul_q.cpp);
// get_rows decodes whole rows. The q8_0 / q4_0 decoders are bit exact with
// llm::dequantize_row_q8_0 / _q4_0: each value is one exact small integer times d.
// q4_1's q * d + m may be one fused multiply-add here and two roundings there.
#include <algorithm>
#include <atomic>

#include "backends/cpu/cpu_kernels.h"

#if LLM_CPU_X86_MULTIVERSION
#include <immintrin.h>
#endif

namespace llm {
namespace cpu {

namespace {

void dequant_f32(const void* row, int64_t k0, int64_t n, float* dst) {
  std::memcpy(dst, static_cast<const float*>(row) + k0, n * sizeof(float));
}

LLM_CPU_CLONES void dequant_f16(const void* row, int64_t k0, int64_t n, float* dst) {
  f16_to_f32_row(static_cast<const uint16_t*>(row) + k0, dst, n);
}

LLM_CPU_CLONES void dequant_bf16(const void* row, int64_t k0, int64_t n, float* dst) {
  bf16_to_f32_row(static_cast<const uint16_t*>(row) + k0, dst, n);
}

typedef int8_t i8x8 __attribute__((vector_size(8)));
typedef uint8_t u8x8 __attribute__((vector_size(8)));
typedef int32_t i32x8 __attribute__((vector_size(32)));

// q8_0 block: f16 d, then 32 int8; value = q * d.
LLM_CPU_INLINE void q8_0_block(const uint8_t* b, float d, float* dst) {
#pragma GCC unroll 4
  for (int j = 0; j < 32; j += 8) {
    const i32x8 q = __builtin_convertvector(LLM_LOADV(i8x8, b + 2 + j), i32x8);
    const f32x8 v = __builtin_convertvector(q, f32x8) * d;
    std::memcpy(dst + j, &v, sizeof(v));
  }
}

// q4_0 block: f16 d, then 16 bytes; byte j holds element j (low nibble) and j + 16
// (high nibble); value = (q - 8) * d.
LLM_CPU_INLINE void q4_0_block(const uint8_t* b, float d, float* dst) {
#pragma GCC unroll 2
  for (int j = 0; j < 16; j += 8) {
    const i32x8 q = __builtin_convertvector(LLM_LOADV(u8x8, b + 2 + j), i32x8);
    const f32x8 lo = __builtin_convertvector((q & 15) - 8, f32x8) * d;
    const f32x8 hi = __builtin_convertvector((q >> 4) - 8, f32x8) * d;
    std::memcpy(dst + j, &lo, sizeof(lo));
    std::memcpy(dst + j + 16, &hi, sizeof(hi));
  }
}

// q4_1 block: f16 d, f16 m, then 16 bytes as q4_0's; value = q * d + m.
LLM_CPU_INLINE void q4_1_block(const uint8_t* b, float d, float m, float* dst) {
#pragma GCC unroll 2
  for (int j = 0; j < 16; j += 8) {
    const i32x8 q = __builtin_convertvector(LLM_LOADV(u8x8, b + 4 + j), i32x8);
    const f32x8 lo = __builtin_convertvector(q & 15, f32x8) * d + m;
    const f32x8 hi = __builtin_convertvector(q >> 4, f32x8) * d + m;
    std::memcpy(dst + j, &lo, sizeof(lo));
    std::memcpy(dst + j + 16, &hi, sizeof(hi));
  }
}

LLM_CPU_INLINE uint16_t block_scale_bits(const uint8_t* block) {
  uint16_t h;
  std::memcpy(&h, block, 2);
  return h;
}

LLM_CPU_CLONES void dequant_q8_0(const void* row, int64_t k0, int64_t n, float* dst) {
  const uint8_t* b = static_cast<const uint8_t*>(row) + k0 / 32 * 34;
  for (int64_t i = 0; i < n; i += 32, b += 34, dst += 32)
    q8_0_block(b, f16_to_f32(block_scale_bits(b)), dst);
}

LLM_CPU_CLONES void dequant_q4_0(const void* row, int64_t k0, int64_t n, float* dst) {
  const uint8_t* b = static_cast<const uint8_t*>(row) + k0 / 32 * 18;
  for (int64_t i = 0; i < n; i += 32, b += 18, dst += 32)
    q4_0_block(b, f16_to_f32(block_scale_bits(b)), dst);
}

LLM_CPU_CLONES void dequant_q4_1(const void* row, int64_t k0, int64_t n, float* dst) {
  const uint8_t* b = static_cast<const uint8_t*>(row) + k0 / 32 * 20;
  for (int64_t i = 0; i < n; i += 32, b += 20, dst += 32)
    q4_1_block(b, f16_to_f32(block_scale_bits(b)), f16_to_f32(block_scale_bits(b + 2)), dst);
}

#if LLM_CPU_X86_MULTIVERSION
// F16C converts 8 halves per instruction, several times faster than the bit trick.
// (Signalling NaNs come out quiet; every other value is bit exact.)
__attribute__((target("arch=x86-64-v3"))) void dequant_f16_f16c(const void* row, int64_t k0,
                                                                int64_t n, float* dst) {
  const uint16_t* src = static_cast<const uint16_t*>(row) + k0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    const __m256 b =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 8)));
    _mm256_storeu_ps(dst + i, a);
    _mm256_storeu_ps(dst + i + 8, b);
  }
  f16_to_f32_row(src + i, dst + i, n - i);
}

__attribute__((target("arch=x86-64-v3"))) void dequant_bf16_avx2(const void* row, int64_t k0,
                                                                 int64_t n, float* dst) {
  const uint16_t* src = static_cast<const uint16_t*>(row) + k0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_slli_epi32(v, 16));
  }
  bf16_to_f32_row(src + i, dst + i, n - i);
}

// AVX2 widening loads and F16C scales: GCC turns the portable int8 -> int32 vector
// conversions above into scalar code, and calls f16_to_f32 once per block.
#define LLM_AVX2_FN __attribute__((target("arch=x86-64-v3")))

LLM_AVX2_FN void dequant_q8_0_avx2(const void* row, int64_t k0, int64_t n, float* dst) {
  const uint8_t* b = static_cast<const uint8_t*>(row) + k0 / 32 * 34;
  for (int64_t i = 0; i < n; i += 32, b += 34, dst += 32) {
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(block_scale_bits(b)));
    for (int j = 0; j < 32; j += 8) {
      const __m256i q =
          _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + j)));
      _mm256_storeu_ps(dst + j, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
    }
  }
}

LLM_AVX2_FN void dequant_q4_0_avx2(const void* row, int64_t k0, int64_t n, float* dst) {
  const uint8_t* b = static_cast<const uint8_t*>(row) + k0 / 32 * 18;
  const __m256i m4 = _mm256_set1_epi32(15), eight = _mm256_set1_epi32(8);
  for (int64_t i = 0; i < n; i += 32, b += 18, dst += 32) {
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(block_scale_bits(b)));
    for (int j = 0; j < 16; j += 8) {
      const __m256i q =
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + j)));
      const __m256i lo = _mm256_sub_epi32(_mm256_and_si256(q, m4), eight);
      const __m256i hi = _mm256_sub_epi32(_mm256_srli_epi32(q, 4), eight);
      _mm256_storeu_ps(dst + j, _mm256_mul_ps(_mm256_cvtepi32_ps(lo), d));
      _mm256_storeu_ps(dst + j + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(hi), d));
    }
  }
}

LLM_AVX2_FN void dequant_q4_1_avx2(const void* row, int64_t k0, int64_t n, float* dst) {
  const uint8_t* b = static_cast<const uint8_t*>(row) + k0 / 32 * 20;
  const __m256i m4 = _mm256_set1_epi32(15);
  for (int64_t i = 0; i < n; i += 32, b += 20, dst += 32) {
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(block_scale_bits(b)));
    const __m256 m = _mm256_set1_ps(_cvtsh_ss(block_scale_bits(b + 2)));
    for (int j = 0; j < 16; j += 8) {
      const __m256i q =
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 4 + j)));
      const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_srli_epi32(q, 4);
      _mm256_storeu_ps(dst + j, _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), d, m));
      _mm256_storeu_ps(dst + j + 16, _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), d, m));
    }
  }
}
#endif

}  // namespace

#if LLM_CPU_X86_MULTIVERSION
namespace {

std::atomic<int> g_level_cap{4};

int detected_x86_level() {
  static const int level = [] {
    __builtin_cpu_init();
#if __GNUC__ >= 12
    if (__builtin_cpu_supports("x86-64-v4")) return 4;
    if (__builtin_cpu_supports("x86-64-v3")) return 3;
#else
    const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c");
    if (v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
      return 4;
    if (v3) return 3;
#endif
    return 1;
  }();
  return level;
}

}  // namespace

int x86_level() {
  return std::min(detected_x86_level(), g_level_cap.load(std::memory_order_relaxed));
}

void set_x86_level_cap(int cap) { g_level_cap.store(cap, std::memory_order_relaxed); }

bool x86_avx512_vnni() {
  static const bool vnni = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") != 0;
  }();
  return vnni && x86_level() >= 4;
}
#endif

DequantRowFn dequant_row_fn(DType t) {
#if LLM_CPU_X86_MULTIVERSION
  if (x86_level() >= 3) {
    if (t == DType::F16) return dequant_f16_f16c;
    if (t == DType::BF16) return dequant_bf16_avx2;
    if (t == DType::Q8_0) return dequant_q8_0_avx2;
    if (t == DType::Q4_0) return dequant_q4_0_avx2;
    if (t == DType::Q4_1) return dequant_q4_1_avx2;
  }
#endif
  switch (t) {
    case DType::F32:
      return dequant_f32;
    case DType::F16:
      return dequant_f16;
    case DType::BF16:
      return dequant_bf16;
    case DType::Q8_0:
      return dequant_q8_0;
    case DType::Q4_0:
      return dequant_q4_0;
    case DType::Q4_1:
      return dequant_q4_1;
    default:
      return nullptr;
  }
}

}  // namespace cpu
}  // namespace llm
