// Logits ops on the device: ArgMax (greedy decoding reads R ids instead of R x vocab
// logits). One block per row; each thread keeps the best of its strided elements, then
// the block merges (larger value wins, then the lower index; NaN ranks below numbers).
#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"

namespace llm {
namespace cuda {

namespace {

constexpr int kArgmaxThreads = 512;

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

template <bool kVec>
__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_kernel(const float* __restrict__ x, int N, int32_t* __restrict__ out) {
  const float* row = x + static_cast<int64_t>(blockIdx.x) * N;
  Best b{-INFINITY, -1};
  if constexpr (kVec) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
    for (int k = threadIdx.x; k < N / 4; k += kArgmaxThreads) {
      const float4 v = __ldg(row4 + k);
      take(b, v.x, 4 * k);
      take(b, v.y, 4 * k + 1);
      take(b, v.z, 4 * k + 2);
      take(b, v.w, 4 * k + 3);
    }
  } else {
    for (int k = threadIdx.x; k < N; k += kArgmaxThreads) take(b, __ldg(row + k), k);
  }
  b = warp_best(b);
  __shared__ Best warps[kArgmaxThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warps[warp] = b;
  __syncthreads();
  if (warp == 0) {
    b = lane < kArgmaxThreads / 32 ? warps[lane] : Best{-INFINITY, -1};
    b = warp_best(b);
    if (lane == 0) out[blockIdx.x] = b.i < 0 ? 0 : b.i;
  }
}

}  // namespace

void argmax_rows(cudaStream_t stream, const float* x, int64_t R, int64_t N, int32_t* out) {
  if (R <= 0) return;
  if (N <= 0 || N > (int64_t{1} << 30)) fail("cuda argmax: rows of %lld values", (long long)N);
  if (N % 4 == 0 && aligned16(x))
    argmax_kernel<true>
        <<<static_cast<unsigned>(R), kArgmaxThreads, 0, stream>>>(x, static_cast<int>(N), out);
  else
    argmax_kernel<false>
        <<<static_cast<unsigned>(R), kArgmaxThreads, 0, stream>>>(x, static_cast<int>(N), out);
  LLM_CUDA_CHECK_LAUNCH("argmax_kernel");
}

}  // namespace cuda
}  // namespace llm
