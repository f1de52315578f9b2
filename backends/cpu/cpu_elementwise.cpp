// Activations, residual adds and scalings. Element-wise, so y may alias an input.
#include <algorithm>
#include <cmath>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"

namespace llm {
namespace cpu {

namespace {

// Elements per chunk: below this, handing work to other threads costs more than it saves.
constexpr int64_t kGrain = 16384;

inline float silu(float x) { return x / (1.f + std::exp(-x)); }
inline float gelu_erf(float x) { return 0.5f * x * (1.f + std::erf(x * 0.70710678118654752f)); }
inline float gelu_tanh_f(float x) {
  const float k = 0.79788456080286536f;  // sqrt(2 / pi)
  return 0.5f * x * (1.f + std::tanh(k * (x + 0.044715f * x * x * x)));
}

LLM_CPU_CLONES void add_rows(const float* a, const float* b, bool bcast, float* y, int64_t r0,
                             int64_t r1, int64_t d) {
  for (int64_t r = r0; r < r1; r++) {
    const float* ar = a + r * d;
    const float* br = bcast ? b : b + r * d;
    float* yr = y + r * d;
    for (int64_t i = 0; i < d; i++) yr[i] = ar[i] + br[i];
  }
}

LLM_CPU_CLONES void mul_rows(const float* a, const float* b, bool bcast, float* y, int64_t r0,
                             int64_t r1, int64_t d) {
  for (int64_t r = r0; r < r1; r++) {
    const float* ar = a + r * d;
    const float* br = bcast ? b : b + r * d;
    float* yr = y + r * d;
    for (int64_t i = 0; i < d; i++) yr[i] = ar[i] * br[i];
  }
}

int64_t row_grain(int64_t d) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, d)); }

}  // namespace

void silu_mul(ThreadPool& pool, const float* a, const float* b, float* y, int64_t n) {
  pool.parallel_for(
      n,
      [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; i++) y[i] = silu(a[i]) * b[i];
      },
      kGrain);
}

void gelu_mul(ThreadPool& pool, const float* a, const float* b, float* y, int64_t n) {
  pool.parallel_for(
      n,
      [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; i++) y[i] = gelu_erf(a[i]) * b[i];
      },
      kGrain);
}

void gelu(ThreadPool& pool, const float* a, float* y, int64_t n) {
  pool.parallel_for(
      n,
      [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; i++) y[i] = gelu_erf(a[i]);
      },
      kGrain);
}

void gelu_tanh(ThreadPool& pool, const float* a, float* y, int64_t n) {
  pool.parallel_for(
      n,
      [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; i++) y[i] = gelu_tanh_f(a[i]);
      },
      kGrain);
}

void scale(ThreadPool& pool, const float* a, float s, float* y, int64_t n) {
  pool.parallel_for(
      n, [&](int64_t i0, int64_t i1) { scale_f32(y + i0, a + i0, s, i1 - i0); }, kGrain);
}

void add(ThreadPool& pool, const float* a, const float* b, int64_t b_rows, float* y, int64_t rows,
         int64_t d) {
  const bool bcast = b_rows == 1 && rows > 1;
  pool.parallel_for(
      rows, [&](int64_t r0, int64_t r1) { add_rows(a, b, bcast, y, r0, r1, d); }, row_grain(d));
}

void mul(ThreadPool& pool, const float* a, const float* b, int64_t b_rows, float* y, int64_t rows,
         int64_t d) {
  const bool bcast = b_rows == 1 && rows > 1;
  pool.parallel_for(
      rows, [&](int64_t r0, int64_t r1) { mul_rows(a, b, bcast, y, r0, r1, d); }, row_grain(d));
}

void slice(ThreadPool& pool, const float* a, float* y, int64_t T, int64_t G, int64_t w_in,
           int64_t w_out, int64_t offset) {
  pool.parallel_for(
      T * G,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; r++)
          std::copy(a + r * w_in + offset, a + r * w_in + offset + w_out, y + r * w_out);
      },
      row_grain(w_out));
}

void mix(ThreadPool& pool, const float* a, const float* b, const float* w, float* y, int64_t rows,
         int64_t d) {
  pool.parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; r++)
          for (int64_t i = 0; i < d; i++)
            y[r * d + i] = a[r * d + i] * w[i] + b[r * d + i] * (1.f - w[i]);
      },
      row_grain(d));
}

void sigmoid_mul(ThreadPool& pool, const float* a, const float* b, float* y, int64_t n) {
  pool.parallel_for(
      n,
      [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; i++) y[i] = b[i] / (1.f + std::exp(-a[i]));
      },
      kGrain);
}

void relu_sqr(ThreadPool& pool, const float* a, float* y, int64_t n) {
  pool.parallel_for(
      n,
      [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; i++) {
          const float r = std::max(a[i], 0.f);
          y[i] = r * r;
        }
      },
      kGrain);
}

}  // namespace cpu
}  // namespace llm
