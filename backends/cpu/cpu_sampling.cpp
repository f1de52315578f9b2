// Logits ops: Sample (greedy, temperature, top-k / top-p / min-p sampling of one token
// per row, where the logits are; semantics in Op::Sample). This is the reference the GPU
// backends are tested against, so it follows the definition literally: the order by
// value, the prefix cuts and the fixed-point masses.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"
#include "core/graph.h"

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

// The first index, in index order, at which the running sum of the weights of the
// tokens `keep` accepts passes u * their sum; `fallback` when the sum is not positive.
template <typename Keep>
int64_t draw_row(const float* row, int64_t N, float m, float inv_t, float u, int64_t fallback,
                 Keep keep) {
  double total = 0;
  for (int64_t i = 0; i < N; i++)
    if (!std::isnan(row[i]) && keep(i)) total += std::exp((row[i] - m) * inv_t);
  if (!(total > 0) || !std::isfinite(total)) return fallback;
  const double target = static_cast<double>(u) * total;
  double run = 0;
  for (int64_t i = 0; i < N; i++) {
    if (std::isnan(row[i]) || !keep(i)) continue;
    run += std::exp((row[i] - m) * inv_t);
    if (run > target) return i;
  }
  return fallback;
}

// A token's mass in Op::Sample's fixed point: floor(w * 2^31).
uint64_t fixed_mass(float x, float m, float inv_t) {
  return static_cast<uint64_t>(std::exp((x - m) * inv_t) * 2147483648.f);
}

// Op::Sample with a cut (top_k, top_p, min_p): the kept prefix of the order by value,
// then the draw over it in index order.
int64_t sample_cut_row(const float* row, int64_t N, int64_t best, float inv_t, float u, float top_k,
                       float top_p, float min_p) {
  const float m = row[best];
  std::vector<std::pair<float, int64_t>> order;
  order.reserve(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; i++)
    if (!std::isnan(row[i])) order.emplace_back(row[i], i);
  const int64_t n = static_cast<int64_t>(order.size());
  auto before = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  int64_t keep = n;
  const int64_t k = static_cast<int64_t>(top_k);
  if (k > 0 && k < n) {
    std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), before);
    keep = k;
  }
  if (top_p < 1.f) {
    // The first K's mass, then the shortest prefix reaching top_p of it. Only that
    // prefix needs sorting: it grows 8x until the target is inside it.
    uint64_t s_k = 0;
    for (int64_t i = 0; i < keep; i++) s_k += fixed_mass(order[i].first, m, inv_t);
    const uint64_t t = static_cast<uint64_t>(top_p * 16777216.f);
    const uint64_t target = (s_k >> 24) * t + (((s_k & 0xffffff) * t) >> 24);
    uint64_t run = 0;
    int64_t sorted = 0;
    for (int64_t i = 0; i < keep; i++) {
      if (i == sorted) {
        sorted = std::min(keep, std::max<int64_t>(128, 8 * sorted));
        std::partial_sort(order.begin() + i, order.begin() + sorted, order.begin() + keep, before);
      }
      run += fixed_mass(order[i].first, m, inv_t);
      if (run >= target) {
        keep = i + 1;
        break;
      }
    }
  }
  // The boundary: the last kept token of the order (the order's first `keep` are the
  // top `keep` after nth_element / the partial sorts above).
  std::pair<float, int64_t> last = order[0];
  for (int64_t i = 1; i < keep; i++)
    if (before(last, order[i])) last = order[i];
  const float log_min_p = min_p > 0.f ? std::log(min_p) : -INFINITY;
  return draw_row(row, N, m, inv_t, u, best, [&](int64_t i) {
    const std::pair<float, int64_t> token{row[i], i};
    return !before(last, token) && (row[i] - m) * inv_t >= log_min_p;
  });
}

int64_t sample_row(const float* row, int64_t N, const float* params) {
  const float temperature = params[0], u = params[1];
  const int64_t best = argmax_row(row, N);
  if (!(temperature > 0.f)) return best;
  const float m = row[best];
  if (!std::isfinite(m)) return best;
  const float inv_t = 1.f / temperature;
  const float top_k = params[2], top_p = params[3], min_p = params[4];
  if (top_k >= 1.f || top_p < 1.f || min_p > 0.f)
    return sample_cut_row(row, N, best, inv_t, u, top_k, top_p, min_p);
  return draw_row(row, N, m, inv_t, u, best, [](int64_t) { return true; });
}

}  // namespace

void sample_rows(ThreadPool& pool, const float* x, const float* params, int64_t R, int64_t N,
                 int32_t* out) {
  pool.parallel_for(
      R,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; r++)
          out[r] = static_cast<int32_t>(sample_row(x + r * N, N, params + kSampleParamCount * r));
      },
      1);
}

}  // namespace cpu
}  // namespace llm
