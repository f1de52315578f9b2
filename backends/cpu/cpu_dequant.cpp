// Row decoders from weight formats to float32 (see DequantRowFn). Matmul decodes a
// block of weight rows into scratch with these and runs its float32 micro-kernel on
// it; get_rows decodes whole rows. Quantized formats plug in here.
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
#endif

DequantRowFn dequant_row_fn(DType t) {
#if LLM_CPU_X86_MULTIVERSION
  if (x86_level() >= 3) {
    if (t == DType::F16) return dequant_f16_f16c;
    if (t == DType::BF16) return dequant_bf16_avx2;
  }
#endif
  switch (t) {
    case DType::F32:
      return dequant_f32;
    case DType::F16:
      return dequant_f16;
    case DType::BF16:
      return dequant_bf16;
    default:
      return nullptr;  // q8_0 / q4_0: a later issue
  }
}

}  // namespace cpu
}  // namespace llm
