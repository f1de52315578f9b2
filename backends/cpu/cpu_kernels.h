// Internal to the CPU backend: the kernel entry points (one .cpp per family) and the
// small SIMD helpers they share. All math is float32 with float32 accumulation.
//
// Vectorisation: the helpers use GCC/Clang vector extensions, which lower to SSE/AVX
// on x86 and NEON on aarch64 without intrinsics. Hot kernels are compiled for several
// x86 levels with LLM_CPU_CLONES and picked at load time, so the binary stays portable
// (no -march=native) yet uses AVX2/AVX-512 where the machine has them.
#pragma once

#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "core/graph.h"

// LLM_CPU_NO_MULTIVERSION builds only the baseline code (e.g. for ThreadSanitizer,
// which cannot run the ifunc resolvers of target_clones before it is initialised).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(LLM_CPU_NO_MULTIVERSION)
#define LLM_CPU_X86_MULTIVERSION 1
#define LLM_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LLM_CPU_X86_MULTIVERSION 0
#define LLM_CPU_CLONES
#endif

// The helpers must be inlined into each clone to be compiled for its instruction set.
#define LLM_CPU_INLINE inline __attribute__((always_inline))

namespace llm {
namespace cpu {

class ThreadPool;

// ---- SIMD helpers -------------------------------------------------------------------

typedef float f32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));

// Vectors are loaded and stored through memcpy: unaligned and alias-safe, and it
// compiles to a single vector move.
#define LLM_LOADV(type, ptr)                   \
  ({                                           \
    type llm_v_;                               \
    std::memcpy(&llm_v_, (ptr), sizeof(type)); \
    llm_v_;                                    \
  })

LLM_CPU_INLINE float dot_f32(const float* a, const float* b, int64_t n) {
  // Two accumulators hide the FMA latency.
  f32x8 acc0 = {}, acc1 = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 += LLM_LOADV(f32x8, a + i) * LLM_LOADV(f32x8, b + i);
    acc1 += LLM_LOADV(f32x8, a + i + 8) * LLM_LOADV(f32x8, b + i + 8);
  }
  for (; i + 8 <= n; i += 8) acc0 += LLM_LOADV(f32x8, a + i) * LLM_LOADV(f32x8, b + i);
  acc0 += acc1;
  float s = 0.f;
  for (int l = 0; l < 8; l++) s += acc0[l];
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

LLM_CPU_INLINE float sum_f32(const float* a, int64_t n) {
  f32x8 acc = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc += LLM_LOADV(f32x8, a + i);
  float s = 0.f;
  for (int l = 0; l < 8; l++) s += acc[l];
  for (; i < n; i++) s += a[i];
  return s;
}

// y[i] += a * x[i]
LLM_CPU_INLINE void axpy_f32(float* y, float a, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const f32x8 v = LLM_LOADV(f32x8, y + i) + a * LLM_LOADV(f32x8, x + i);
    std::memcpy(y + i, &v, sizeof(v));
  }
  for (; i < n; i++) y[i] += a * x[i];
}

// y[i] = x[i] * a
LLM_CPU_INLINE void scale_f32(float* y, const float* x, float a, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const f32x8 v = LLM_LOADV(f32x8, x + i) * a;
    std::memcpy(y + i, &v, sizeof(v));
  }
  for (; i < n; i++) y[i] = x[i] * a;
}

// Branch-free f16 -> f32, bit exact with llm::f16_to_f32 (subnormals, inf, nan).
LLM_CPU_INLINE void f16_to_f32_row(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const u32x8 h = __builtin_convertvector(LLM_LOADV(u16x8, src + i), u32x8);
    const u32x8 exp = h & 0x7c00u;
    u32x8 bits = ((h & 0x7fffu) << 13) + ((127u - 15u) << 23);
    bits = exp == 0x7c00u ? bits + ((128u - 16u) << 23) : bits;  // inf / nan
    // Zero and subnormals: renormalise through a float subtraction of 2^-14.
    const f32x8 sub = (f32x8)(bits + (1u << 23)) - 6.103515625e-05f;
    bits = exp == 0u ? (u32x8)sub : bits;
    bits |= (h & 0x8000u) << 16;
    std::memcpy(dst + i, &bits, sizeof(bits));
  }
  for (; i < n; i++) dst[i] = f16_to_f32(src[i]);
}

LLM_CPU_INLINE void bf16_to_f32_row(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const u32x8 bits = __builtin_convertvector(LLM_LOADV(u16x8, src + i), u32x8) << 16;
    std::memcpy(dst + i, &bits, sizeof(bits));
  }
  for (; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}

#if LLM_CPU_X86_MULTIVERSION
// The x86-64 micro-architecture level the kernels use: 4 (AVX-512), 3 (AVX2, FMA,
// F16C) or 1 (baseline SSE2); the machine's level unless capped.
int x86_level();
// Caps x86_level (for tests: runs the AVX2 and SSE2 code paths on an AVX-512 machine).
// Only the matmul and weight decoding follow the cap; the target_clones kernels
// always take the machine's best.
void set_x86_level_cap(int cap);
// AVX-512 VNNI (vpdpbusd) on top of level 4; follows the cap.
bool x86_avx512_vnni();
#endif

// ---- Weight decoding -------------------------------------------------------------------

// Writes elements [k0, k0 + n) of one row of a weight (or table) to dst as float32.
// k0 and n are multiples of the dtype's block size (or n reaches the end of the row).
// Adding a weight format to matmul and get_rows means adding one of these.
using DequantRowFn = void (*)(const void* row, int64_t k0, int64_t n, float* dst);

// nullptr when the dtype is not supported yet.
DequantRowFn dequant_row_fn(DType t);

// ---- Kernels ---------------------------------------------------------------------------
// Shapes are validated by CpuBackend::check; kernels validate indices read from
// device memory (token ids, slots, positions) before going parallel.

// The instruction set the matmul kernel was picked for ("x86-64-v3", "neon" ...).
const char* matmul_isa();

// y[T, N] = x[T, K] · W[N, K]ᵀ (+ bias[N]).
void matmul(ThreadPool& pool, const float* x, const void* w, DType w_type, const float* bias,
            float* y, int64_t T, int64_t K, int64_t N);

// Up to this many tokens, matmul with quantized weights takes matmul_q; longer
// batches decode weight tiles to float32 for the GEMM micro-kernel, which reuses each
// decoded tile across tokens (measured: faster from ~16 tokens, slower at 8).
constexpr int64_t kQuantGemvMaxTokens = 8;

// matmul for q8_0 / q4_0 / q4_1 weights (K a multiple of 32) by integer dot products: the
// rows of x are quantized to 8 bits per block of 32 first (see cpu_matmul_q.cpp for
// the error this adds).
void matmul_q(ThreadPool& pool, const float* x, const void* w, DType w_type, const float* bias,
              float* y, int64_t T, int64_t K, int64_t N);
// The instruction set matmul_q was picked for ("avx512-vnni", "avx2", "neon-dotprod" ...).
const char* matmul_q_isa();

struct AttentionArgs {
  const float* q = nullptr;  // [T, n_heads * head_dim]
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;  // [cache_rows, n_kv_heads * head_dim]
  DType k_type = DType::F32;
  DType v_type = DType::F32;
  int64_t cache_rows = 0;
  const int32_t* positions = nullptr;    // [T]
  const int32_t* seq_ids = nullptr;      // [T]
  const int32_t* block_table = nullptr;  // [n_seqs, max_pages]
  int64_t n_seqs = 0;
  int64_t max_pages = 0;
  float* out = nullptr;  // [T, n_heads * head_dim]
  int64_t T = 0;
  OpParams p;
};
void attention(ThreadPool& pool, const AttentionArgs& a);

void rms_norm(ThreadPool& pool, const float* x, const float* w, float* y, int64_t rows, int64_t d,
              float eps);
// b may be nullptr.
void layer_norm(ThreadPool& pool, const float* x, const float* w, const float* b, float* y,
                int64_t rows, int64_t d, float eps);

void rope(ThreadPool& pool, const float* x, const int32_t* positions, const float* inv_freq,
          float* y, int64_t T, int n_heads, int head_dim, int rot_dims, RopeStyle style);

// out[r, :] = f32(table[ids[r], :]); table is [V, D].
void get_rows(ThreadPool& pool, const void* table, DType table_type, int64_t V, int64_t D,
              const int32_t* ids, int64_t R, float* out);

// cache[slots[t], :] = src[t, :]; the cache is f32, f16 or bf16 [cache_rows, W].
void kv_append(ThreadPool& pool, const float* src, const int32_t* slots, int64_t T, int64_t W,
               void* cache, DType cache_type, int64_t cache_rows);

// Element-wise ops over n elements.
void silu_mul(ThreadPool& pool, const float* a, const float* b, float* y, int64_t n);
void gelu_mul(ThreadPool& pool, const float* a, const float* b, float* y, int64_t n);
void gelu(ThreadPool& pool, const float* a, float* y, int64_t n);
void gelu_tanh(ThreadPool& pool, const float* a, float* y, int64_t n);
void scale(ThreadPool& pool, const float* a, float s, float* y, int64_t n);
// y = a + b / a * b over rows x d; b is [rows, d] or one row [d] broadcast (b_rows == 1).
void add(ThreadPool& pool, const float* a, const float* b, int64_t b_rows, float* y, int64_t rows,
         int64_t d);
void mul(ThreadPool& pool, const float* a, const float* b, int64_t b_rows, float* y, int64_t rows,
         int64_t d);
// y[t, g, :] = a[t, g, offset : offset + w_out] with a [T, G, w_in].
void slice(ThreadPool& pool, const float* a, float* y, int64_t T, int64_t G, int64_t w_in,
           int64_t w_out, int64_t offset);
// y = a * w + b * (1 - w), w one row [d].
void mix(ThreadPool& pool, const float* a, const float* b, const float* w, float* y, int64_t rows,
         int64_t d);
void sigmoid_mul(ThreadPool& pool, const float* a, const float* b, float* y, int64_t n);
void relu_sqr(ThreadPool& pool, const float* a, float* y, int64_t n);

// Logits ops (cpu_sampling.cpp); semantics in Op::Sample. params [R, 2].
void sample_rows(ThreadPool& pool, const float* x, const float* params, int64_t R, int64_t N,
                 int32_t* out);

// RWKV (cpu_rwkv.cpp); semantics in Op::TokenShift / Op::Wkv. state is [n_slots, D] / [n_slots,
// 3A].
void token_shift(ThreadPool& pool, const float* x, float* state, const int32_t* seq_ids,
                 const int32_t* state_slots, float* y, int64_t T, int64_t D, int64_t S,
                 int64_t n_slots);
void wkv(ThreadPool& pool, const float* k, const float* v, const float* time_decay,
         const float* time_first, float* state, const int32_t* seq_ids, const int32_t* state_slots,
         float* y, int64_t T, int64_t A, int64_t S, int64_t n_slots);

}  // namespace cpu
}  // namespace llm
