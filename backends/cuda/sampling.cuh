// Device parts of Op::Sample shared by the sample kernel (sampling.cu) and the GEMV that
// samples the logits it computes (qgemv.cu). Semantics in Op::Sample: the argmax (larger
// value wins, then the lower index; NaN ranks below numbers); with a temperature, each
// thread sums the weights of a contiguous chunk in double, a block scan places the
// chunks, and the thread whose chunk holds u * sum walks it.
#pragma once

#include "backends/cuda/cuda_device.cuh"

namespace llm {
namespace cuda {

struct SampleBest {
  float v;
  int i;  // -1: nothing yet
};

__device__ __forceinline__ SampleBest sample_better(SampleBest a, SampleBest b) {
  if (b.i < 0) return a;
  if (a.i < 0) return b;
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}

__device__ __forceinline__ SampleBest sample_warp_best(SampleBest b) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    SampleBest other;
    other.v = __shfl_xor_sync(kFullMask, b.v, o);
    other.i = __shfl_xor_sync(kFullMask, b.i, o);
    b = sample_better(b, other);
  }
  return b;
}

// Indices must rise within a thread: a tie keeps the earlier one.
__device__ __forceinline__ void sample_take(SampleBest& b, float v, int i) {
  if (!isnan(v) && (b.i < 0 || v > b.v)) {
    b.v = v;
    b.i = i;
  }
}

// Inclusive prefix sum over a block of kThreads; every thread gets its own and the total.
// warp_sums: kThreads / 32 doubles of shared memory.
template <int kThreads>
__device__ double sample_block_scan(double v, double* warp_sums, double& total) {
  constexpr int kWarpsN = kThreads / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double n = __shfl_up_sync(kFullMask, v, o);
    if (lane >= o) v += n;
  }
  if (lane == 31) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double w = lane < kWarpsN ? warp_sums[lane] : 0.0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const double n = __shfl_up_sync(kFullMask, w, o);
      if (lane >= o) w += n;
    }
    if (lane < kWarpsN) warp_sums[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  total = warp_sums[kWarpsN - 1];
  return v + (warp > 0 ? warp_sums[warp - 1] : 0.0);
}

// Loads of the row: through the read-only path, or through L2 (kL2) where other blocks
// of the same kernel wrote it.
template <bool kL2>
__device__ __forceinline__ float sample_load(const float* p) {
  if constexpr (kL2)
    return __ldcg(p);
  else
    return __ldg(p);
}

// The temperature draw over row [N] whose argmax `best` the whole block holds. *picked
// holds the argmax's index on entry (every thread of the block calls this) and the
// drawn index on return.
template <int kThreads, bool kL2>
__device__ void sample_temperature(const float* row, int N, SampleBest best, float temperature,
                                   float u, double* warp_sums, int* picked) {
  const float m = best.v;
  if (!(temperature > 0.f) || best.i < 0 || !isfinite(m)) return;
  const float inv_t = 1.f / temperature;
  const int chunk = (N + kThreads - 1) / kThreads;
  const int lo = min(N, static_cast<int>(threadIdx.x) * chunk), hi = min(N, lo + chunk);
  double sum = 0.0;
  for (int i = lo; i < hi; i++) {
    const float v = sample_load<kL2>(row + i);
    if (!isnan(v)) sum += expf((v - m) * inv_t);
  }
  double total;
  const double incl = sample_block_scan<kThreads>(sum, warp_sums, total);
  const double excl = incl - sum;
  if (total > 0.0 && isfinite(total)) {
    const double target = static_cast<double>(u) * total;
    if (lo < hi && excl <= target && target < incl) {
      // The walk regroups the chunk's additions: if rounding keeps it at or below the
      // target, the chunk's last weighted index is the one.
      double run = excl;
      int last = -1, pick = -1;
      for (int i = lo; i < hi && pick < 0; i++) {
        const float v = sample_load<kL2>(row + i);
        if (isnan(v)) continue;
        const float w = expf((v - m) * inv_t);
        run += w;
        if (w > 0.f) last = i;
        if (run > target) pick = i;
      }
      if (pick < 0) pick = last;
      if (pick >= 0) *picked = pick;
    }
  }
  __syncthreads();
}

}  // namespace cuda
}  // namespace llm
