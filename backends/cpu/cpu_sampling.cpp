// Logits ops: ArgMax (greedy decoding on the device that computed the logits).
#include <cmath>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"

namespace llm {
namespace cpu {

void argmax_rows(ThreadPool& pool, const float* x, int64_t R, int64_t N, int32_t* out) {
  pool.parallel_for(
      R,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; r++) {
          const float* row = x + r * N;
          // NaN ranks below every number; a row of NaNs gives 0.
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
          out[r] = static_cast<int32_t>(best);
        }
      },
      1);
}

}  // namespace cpu
}  // namespace llm
