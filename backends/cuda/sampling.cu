// Logits ops on the device: Sample (semantics in Op::Sample). Greedy and plain
// temperature sampling read R ids instead of R x vocab logits. One block per row:
// the argmax first (each thread keeps the best of its strided elements, then the block
// merges: larger value wins, then the lower index; NaN ranks below numbers); with a
// temperature, each thread sums the weights of a contiguous chunk in double, a block
// scan places the chunks, and the thread whose chunk holds u * sum walks it.
#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"

namespace llm {
namespace cuda {

namespace {

constexpr int kSampleThreads = 1024;
constexpr int kSampleWarps = kSampleThreads / 32;

struct Best {
  float v;
  int i;  // -1: nothing yet
};

__device__ __forceinline__ Best better(Best a, Best b) {
  if (b.i < 0) return a;
  if (a.i < 0) return b;
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}

__device__ __forceinline__ Best warp_best(Best b) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Best other;
    other.v = __shfl_xor_sync(kFullMask, b.v, o);
    other.i = __shfl_xor_sync(kFullMask, b.i, o);
    b = better(b, other);
  }
  return b;
}

__device__ __forceinline__ void take(Best& b, float v, int i) {
  // Indices rise within a thread: a tie keeps the earlier one.
  if (!isnan(v) && (b.i < 0 || v > b.v)) {
    b.v = v;
    b.i = i;
  }
}

// Inclusive prefix sum over the block; every thread gets its own and the total.
__device__ double block_scan(double v, double* warp_sums, double& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double n = __shfl_up_sync(kFullMask, v, o);
    if (lane >= o) v += n;
  }
  if (lane == 31) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double w = lane < kSampleWarps ? warp_sums[lane] : 0.0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const double n = __shfl_up_sync(kFullMask, w, o);
      if (lane >= o) w += n;
    }
    if (lane < kSampleWarps) warp_sums[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  total = warp_sums[kSampleWarps - 1];
  return v + (warp > 0 ? warp_sums[warp - 1] : 0.0);
}

template <bool kVec>
__global__ void __launch_bounds__(kSampleThreads)
    sample_kernel(const float* __restrict__ x, const float* __restrict__ params, int N,
                  int32_t* __restrict__ out) {
  const float* row = x + static_cast<int64_t>(blockIdx.x) * N;
  Best b{-INFINITY, -1};
  if constexpr (kVec) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
    for (int k = threadIdx.x; k < N / 4; k += kSampleThreads) {
      const float4 v = __ldg(row4 + k);
      take(b, v.x, 4 * k);
      take(b, v.y, 4 * k + 1);
      take(b, v.z, 4 * k + 2);
      take(b, v.w, 4 * k + 3);
    }
  } else {
    for (int k = threadIdx.x; k < N; k += kSampleThreads) take(b, __ldg(row + k), k);
  }
  b = warp_best(b);
  __shared__ Best warps[kSampleWarps];
  __shared__ double warp_sums[kSampleWarps];
  __shared__ int picked;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warps[warp] = b;
  __syncthreads();
  if (warp == 0) {
    b = warps[lane];  // kSampleWarps == 32
    b = warp_best(b);
    if (lane == 0) {
      warps[0] = b;
      picked = b.i < 0 ? 0 : b.i;
    }
  }
  __syncthreads();
  const float temperature = params[2 * blockIdx.x], u = params[2 * blockIdx.x + 1];
  const float m = warps[0].v;
  if (temperature > 0.f && warps[0].i >= 0 && isfinite(m)) {
    const float inv_t = 1.f / temperature;
    const int chunk = (N + kSampleThreads - 1) / kSampleThreads;
    const int lo = min(N, static_cast<int>(threadIdx.x) * chunk), hi = min(N, lo + chunk);
    double sum = 0.0;
    for (int i = lo; i < hi; i++) {
      const float v = __ldg(row + i);
      if (!isnan(v)) sum += expf((v - m) * inv_t);
    }
    double total;
    const double incl = block_scan(sum, warp_sums, total);
    const double excl = incl - sum;
    if (total > 0.0 && isfinite(total)) {
      const double target = static_cast<double>(u) * total;
      if (lo < hi && excl <= target && target < incl) {
        // The walk regroups the chunk's additions: if rounding keeps it at or below
        // the target, the chunk's last weighted index is the one.
        double run = excl;
        int last = -1, pick = -1;
        for (int i = lo; i < hi && pick < 0; i++) {
          const float v = __ldg(row + i);
          if (isnan(v)) continue;
          const float w = expf((v - m) * inv_t);
          run += w;
          if (w > 0.f) last = i;
          if (run > target) pick = i;
        }
        if (pick < 0) pick = last;
        if (pick >= 0) picked = pick;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = picked;
}

}  // namespace

void sample_rows(cudaStream_t stream, const float* x, const float* params, int64_t R, int64_t N,
                 int32_t* out) {
  if (R <= 0) return;
  if (N <= 0 || N > (int64_t{1} << 30)) fail("cuda sample: rows of %lld values", (long long)N);
  const unsigned grid = static_cast<unsigned>(R);
  if (N % 4 == 0 && aligned16(x))
    sample_kernel<true><<<grid, kSampleThreads, 0, stream>>>(x, params, static_cast<int>(N), out);
  else
    sample_kernel<false><<<grid, kSampleThreads, 0, stream>>>(x, params, static_cast<int>(N), out);
  LLM_CUDA_CHECK_LAUNCH("sample_kernel");
}

}  // namespace cuda
}  // namespace llm
