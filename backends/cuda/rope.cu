// Rotary position embedding. Angles follow HF: theta = float(pos) * inv_freq[i] in
// float32, then cos/sin in float32 with sincosf (no fast math: it matches the CPU's
// libm within an ulp or two). One thread per rotated pair; in-place safe (y == x).
#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"

namespace llm {
namespace cuda {

namespace {

template <bool kNeoX>
__global__ void rope_kernel(const float* x, const int32_t* __restrict__ positions,
                            const float* __restrict__ inv_freq, float* y, int64_t T, int n_heads,
                            int head_dim, int rot_dims) {
  const int half = rot_dims / 2;
  const int64_t pairs = T * n_heads * half;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < pairs;
       idx += stride) {
    const int i = static_cast<int>(idx % half);
    const int64_t th = idx / half;  // token * n_heads + head
    const int64_t t = th / n_heads;
    const float theta = static_cast<float>(positions[t]) * inv_freq[i];
    float sn, cs;
    sincosf(theta, &sn, &cs);
    const int64_t off = th * head_dim;
    // NeoX rotates halves (i, i + rot/2); GPT-J interleaved pairs (2i, 2i + 1).
    const int64_t ia = off + (kNeoX ? i : 2 * i);
    const int64_t ib = off + (kNeoX ? i + half : 2 * i + 1);
    const float a = x[ia], b = x[ib];
    y[ia] = a * cs - b * sn;
    y[ib] = b * cs + a * sn;
  }
  // Dims past rot_dims pass through.
  const int tail = head_dim - rot_dims;
  if (tail > 0 && x != y) {
    const int64_t n = T * n_heads * tail;
    for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
         idx += stride) {
      const int64_t at = (idx / tail) * head_dim + rot_dims + idx % tail;
      y[at] = x[at];
    }
  }
}

}  // namespace

void rope(cudaStream_t stream, const float* x, const int32_t* positions, const float* inv_freq,
          float* y, int64_t T, int n_heads, int head_dim, int rot_dims, RopeStyle style) {
  if (T * n_heads <= 0 || rot_dims < 2) return;
  const unsigned grid = grid_for(T * n_heads * (rot_dims / 2), 256);
  if (style == RopeStyle::NeoX)
    rope_kernel<true>
        <<<grid, 256, 0, stream>>>(x, positions, inv_freq, y, T, n_heads, head_dim, rot_dims);
  else
    rope_kernel<false>
        <<<grid, 256, 0, stream>>>(x, positions, inv_freq, y, T, n_heads, head_dim, rot_dims);
  LLM_CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace cuda
}  // namespace llm
