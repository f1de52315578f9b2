// RmsNorm and LayerNorm: one block per row, float32 statistics like HF, block-wide
// sums through warp shuffles. Norm weights may be f32/f16/bf16 (the loaders convert
// vectors to f32, but the op allows any float type).
#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"

namespace llm {
namespace cuda {

namespace {

__global__ void rms_norm_kernel(const float* __restrict__ x, const void* w, int w_type,
                                float* __restrict__ y, int64_t d, float eps) {
  __shared__ float red[32];
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * d;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * d;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
  ss = block_sum(ss, red);
  // HF llama: x * rsqrt(mean(x^2) + eps), then * w.
  const float inv = 1.f / sqrtf(ss / static_cast<float>(d) + eps);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
    yr[i] = (xr[i] * inv) * load_any(w, w_type, i);
}

__global__ void layer_norm_kernel(const float* __restrict__ x, const void* w, int w_type,
                                  const void* b, int b_type, float* __restrict__ y, int64_t d,
                                  float eps) {
  __shared__ float red[32];
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * d;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * d;
  float sum = 0.f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) sum += xr[i];
  const float mean = block_sum(sum, red) / static_cast<float>(d);
  // Two passes (mean, then squared deviations) avoid the cancellation of E[x²]-E[x]².
  float var = 0.f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float v = xr[i] - mean;
    var = fmaf(v, v, var);
  }
  var = block_sum(var, red) / static_cast<float>(d);
  const float inv = 1.f / sqrtf(var + eps);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float v = (xr[i] - mean) * inv * load_any(w, w_type, i);
    if (b) v += load_any(b, b_type, i);
    yr[i] = v;
  }
}

}  // namespace

void rms_norm(cudaStream_t stream, const float* x, const void* w, DType w_type, float* y,
              int64_t rows, int64_t d, float eps) {
  if (rows <= 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(rows), norm_threads(d), 0, stream>>>(
      x, w, static_cast<int>(w_type), y, d, eps);
  LLM_CUDA_CHECK_LAUNCH("rms_norm_kernel");
}

void layer_norm(cudaStream_t stream, const float* x, const void* w, DType w_type, const void* b,
                DType b_type, float* y, int64_t rows, int64_t d, float eps) {
  if (rows <= 0) return;
  layer_norm_kernel<<<static_cast<unsigned>(rows), norm_threads(d), 0, stream>>>(
      x, w, static_cast<int>(w_type), b, static_cast<int>(b_type), y, d, eps);
  LLM_CUDA_CHECK_LAUNCH("layer_norm_kernel");
}

}  // namespace cuda
}  // namespace llm
