// RmsNorm and LayerNorm, one row per work item, float32 statistics like HF.
#include <algorithm>
#include <cmath>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"

namespace llm {
namespace cpu {

namespace {

// Rows per parallel chunk: enough elements that handing out a chunk is cheap.
int64_t row_grain(int64_t d) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, d)); }

LLM_CPU_CLONES void rms_norm_rows(const float* x, const float* w, float* y, int64_t r0, int64_t r1,
                                  int64_t d, float eps) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    // HF llama: x * rsqrt(mean(x^2) + eps), then * w.
    const float inv = 1.f / std::sqrt(dot_f32(xr, xr, d) / static_cast<float>(d) + eps);
    for (int64_t i = 0; i < d; i++) yr[i] = (xr[i] * inv) * w[i];
  }
}

LLM_CPU_CLONES void layer_norm_rows(const float* x, const float* w, const float* b, float* y,
                                    int64_t r0, int64_t r1, int64_t d, float eps) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    const float mean = sum_f32(xr, d) / static_cast<float>(d);
    // Two passes (mean, then squared deviations) avoid the cancellation of E[x²]-E[x]².
    float var = 0.f;
    {
      f32x8 acc = {};
      int64_t i = 0;
      for (; i + 8 <= d; i += 8) {
        const f32x8 v = LLM_LOADV(f32x8, xr + i) - mean;
        acc += v * v;
      }
      for (int l = 0; l < 8; l++) var += acc[l];
      for (; i < d; i++) var += (xr[i] - mean) * (xr[i] - mean);
    }
    var /= static_cast<float>(d);
    const float inv = 1.f / std::sqrt(var + eps);
    if (b) {
      for (int64_t i = 0; i < d; i++) yr[i] = (xr[i] - mean) * inv * w[i] + b[i];
    } else {
      for (int64_t i = 0; i < d; i++) yr[i] = (xr[i] - mean) * inv * w[i];
    }
  }
}

}  // namespace

void rms_norm(ThreadPool& pool, const float* x, const float* w, float* y, int64_t rows, int64_t d,
              float eps) {
  pool.parallel_for(
      rows, [&](int64_t r0, int64_t r1) { rms_norm_rows(x, w, y, r0, r1, d, eps); }, row_grain(d));
}

void layer_norm(ThreadPool& pool, const float* x, const float* w, const float* b, float* y,
                int64_t rows, int64_t d, float eps) {
  pool.parallel_for(
      rows, [&](int64_t r0, int64_t r1) { layer_norm_rows(x, w, b, y, r0, r1, d, eps); },
      row_grain(d));
}

}  // namespace cpu
}  // namespace llm
