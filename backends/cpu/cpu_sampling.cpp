// Logits ops: Sample (greedy or temperature sampling of one token per row, where the
// logits are; semantics in Op::Sample).
#include <cmath>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"

namespace llm {
namespace cpu {

namespace {

// Index of the largest value (the first of equal ones, NaN below numbers, 0 if none).
int64_t argmax_row(const float* row, int64_t N) {
  int64_t best = 0;
  float best_v = -INFINITY;
  bool found = false;
  for (int64_t i = 0; i < N; i++) {
    const float v = row[i];
    if (std::isnan(v)) continue;
    if (!found || v > best_v) {
      best = i;
      best_v = v;
      found = true;
    }
  }
  return best;
}

int64_t sample_row(const float* row, int64_t N, float temperature, float u) {
  const int64_t best = argmax_row(row, N);
  if (!(temperature > 0.f)) return best;
  const float m = row[best];
  if (!std::isfinite(m)) return best;
  const float inv_t = 1.f / temperature;
  double total = 0;
  for (int64_t i = 0; i < N; i++)
    if (!std::isnan(row[i])) total += std::exp((row[i] - m) * inv_t);
  if (!(total > 0) || !std::isfinite(total)) return best;
  const double target = static_cast<double>(u) * total;
  double run = 0;
  for (int64_t i = 0; i < N; i++) {
    if (std::isnan(row[i])) continue;
    run += std::exp((row[i] - m) * inv_t);
    if (run > target) return i;
  }
  return best;
}

}  // namespace

void sample_rows(ThreadPool& pool, const float* x, const float* params, int64_t R, int64_t N,
                 int32_t* out) {
  pool.parallel_for(
      R,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; r++)
          out[r] = static_cast<int32_t>(sample_row(x + r * N, N, params[2 * r], params[2 * r + 1]));
      },
      1);
}

}  // namespace cpu
}  // namespace llm
