// Logits ops on the device: Sample (semantics in Op::Sample). Greedy, temperature and
// top-k / top-p / min-p sampling read R ids instead of R x vocab logits. One block per
// row: the argmax first (each thread keeps the best of its strided elements, then the
// block merges), then the cuts and the draw (sampling.cuh). A single row's Sample usually
// runs inside the GEMV that computes its logits instead (qgemv.cu).
#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/sampling.cuh"

namespace llm {
namespace cuda {

namespace {

constexpr int kSampleThreads = 1024;
constexpr int kSampleWarps = kSampleThreads / 32;

template <bool kVec>
__global__ void __launch_bounds__(kSampleThreads)
    sample_kernel(const float* __restrict__ x, const float* __restrict__ params, int N,
                  int32_t* __restrict__ out) {
  const float* row = x + static_cast<int64_t>(blockIdx.x) * N;
  SampleBest b{-INFINITY, -1};
  if constexpr (kVec) {
    const float4* row4 = reinterpret_cast<const float4*>(row);
    for (int k = threadIdx.x; k < N / 4; k += kSampleThreads) {
      const float4 v = __ldg(row4 + k);
      sample_take(b, v.x, 4 * k);
      sample_take(b, v.y, 4 * k + 1);
      sample_take(b, v.z, 4 * k + 2);
      sample_take(b, v.w, 4 * k + 3);
    }
  } else {
    for (int k = threadIdx.x; k < N; k += kSampleThreads) sample_take(b, __ldg(row + k), k);
  }
  b = sample_warp_best(b);
  __shared__ SampleBest warps[kSampleWarps];
  __shared__ double warp_sums[kSampleWarps];
  __shared__ int picked;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warps[warp] = b;
  __syncthreads();
  if (warp == 0) {
    b = warps[lane];  // kSampleWarps == 32
    b = sample_warp_best(b);
    if (lane == 0) {
      warps[0] = b;
      picked = b.i < 0 ? 0 : b.i;
    }
  }
  __syncthreads();
  const float* pr = params + kSampleParamCount * blockIdx.x;
  const SampleCut cut =
      sample_cuts<kSampleThreads, false>(row, N, warps[0], pr[0], pr[2], pr[3], pr[4]);
  sample_temperature<kSampleThreads, false>(row, N, warps[0], pr[0], pr[1], cut, warp_sums,
                                            &picked);
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
