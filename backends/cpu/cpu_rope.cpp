// Rotary position embedding. Angles follow HF: theta = float(pos) * inv_freq[i] in
// float32, then cos/sin in float32, so the rotation matches PyTorch bit for bit up
// to the libm used.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"

namespace llm {
namespace cpu {

namespace {

// In-place safe (y == x): each pair is read before it is written.
LLM_CPU_CLONES void rope_rows(const float* x, const int32_t* positions, const float* inv_freq,
                              float* y, int64_t t0, int64_t t1, int n_heads, int head_dim,
                              int rot_dims, RopeStyle style, float* cs) {
  const int half = rot_dims / 2;
  float* cos_t = cs;
  float* sin_t = cs + half;
  for (int64_t t = t0; t < t1; t++) {
    const float pos = static_cast<float>(positions[t]);
    for (int i = 0; i < half; i++) {
      const float theta = pos * inv_freq[i];
      cos_t[i] = std::cos(theta);
      sin_t[i] = std::sin(theta);
    }
    for (int h = 0; h < n_heads; h++) {
      const int64_t off = (t * n_heads + h) * static_cast<int64_t>(head_dim);
      const float* xr = x + off;
      float* yr = y + off;
      if (style == RopeStyle::NeoX) {
        // Rotate-half: pairs (i, i + rot/2).
        for (int i = 0; i < half; i++) {
          const float a = xr[i], b = xr[i + half];
          yr[i] = a * cos_t[i] - b * sin_t[i];
          yr[i + half] = b * cos_t[i] + a * sin_t[i];
        }
      } else {
        // GPT-J: interleaved pairs (2i, 2i + 1).
        for (int i = 0; i < half; i++) {
          const float a = xr[2 * i], b = xr[2 * i + 1];
          yr[2 * i] = a * cos_t[i] - b * sin_t[i];
          yr[2 * i + 1] = b * cos_t[i] + a * sin_t[i];
        }
      }
      if (yr != xr && rot_dims < head_dim)
        std::memcpy(yr + rot_dims, xr + rot_dims, (head_dim - rot_dims) * sizeof(float));
    }
  }
}

}  // namespace

void rope(ThreadPool& pool, const float* x, const int32_t* positions, const float* inv_freq,
          float* y, int64_t T, int n_heads, int head_dim, int rot_dims, RopeStyle style) {
  const int64_t row = static_cast<int64_t>(n_heads) * head_dim;
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, row));
  pool.parallel_for(
      T,
      [&](int64_t t0, int64_t t1) {
        thread_local std::vector<float> cs;
        if (cs.size() < static_cast<size_t>(rot_dims)) cs.resize(rot_dims);
        rope_rows(x, positions, inv_freq, y, t0, t1, n_heads, head_dim, rot_dims, style, cs.data());
      },
      grain);
}

}  // namespace cpu
}  // namespace llm
