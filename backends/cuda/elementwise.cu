// Activations, residual adds and scalings: flat grid-stride loops (y may alias an
// input). Accurate expf/erff/tanhf, as there is no --use_fast_math.
#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"

namespace llm {
namespace cuda {

namespace {

__device__ __forceinline__ float gelu_erf(float x) {
  return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
}
__device__ __forceinline__ float gelu_tanh_f(float x) {
  const float k = 0.79788456080286536f;  // sqrt(2 / pi)
  return 0.5f * x * (1.f + tanhf(k * (x + 0.044715f * x * x * x)));
}

template <Unary kOp>
__global__ void unary_kernel(const float* a, float s, float* y, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float v = a[i];
    if constexpr (kOp == Unary::Gelu) y[i] = gelu_erf(v);
    if constexpr (kOp == Unary::GeluTanh) y[i] = gelu_tanh_f(v);
    if constexpr (kOp == Unary::Scale) y[i] = v * s;
  }
}

template <Binary kOp>
__global__ void binary_kernel(const float* a, const float* b, bool bcast, float* y, int64_t n,
                              int64_t d) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float u = a[i], v = b[bcast ? i % d : i];
    if constexpr (kOp == Binary::SiluMul) y[i] = silu(u) * v;
    if constexpr (kOp == Binary::GeluMul) y[i] = gelu_erf(u) * v;
    if constexpr (kOp == Binary::Add) y[i] = u + v;
    if constexpr (kOp == Binary::Mul) y[i] = u * v;
  }
}

constexpr int kThreads = 256;

__global__ void probe_kernel() {}

__global__ void spin_kernel(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

}  // namespace

void spin(cudaStream_t stream, double us) {
  spin_kernel<<<1, 1, 0, stream>>>(static_cast<unsigned long long>(us * 1e3));
  LLM_CUDA_CHECK_LAUNCH("spin_kernel");
}

cudaError_t probe_kernels() {
  cudaFuncAttributes attr;
  return cudaFuncGetAttributes(&attr, probe_kernel);
}

void unary(cudaStream_t stream, Unary op, const float* a, float s, float* y, int64_t n) {
  if (n <= 0) return;
  const unsigned grid = grid_for(n, kThreads);
  switch (op) {
    case Unary::Gelu:
      unary_kernel<Unary::Gelu><<<grid, kThreads, 0, stream>>>(a, s, y, n);
      break;
    case Unary::GeluTanh:
      unary_kernel<Unary::GeluTanh><<<grid, kThreads, 0, stream>>>(a, s, y, n);
      break;
    case Unary::Scale:
      unary_kernel<Unary::Scale><<<grid, kThreads, 0, stream>>>(a, s, y, n);
      break;
  }
  LLM_CUDA_CHECK_LAUNCH("unary_kernel");
}

void binary(cudaStream_t stream, Binary op, const float* a, const float* b, int64_t b_rows,
            float* y, int64_t rows, int64_t d) {
  const int64_t n = rows * d;
  if (n <= 0) return;
  const bool bcast = b_rows == 1 && rows > 1;
  const unsigned grid = grid_for(n, kThreads);
  switch (op) {
    case Binary::SiluMul:
      binary_kernel<Binary::SiluMul><<<grid, kThreads, 0, stream>>>(a, b, bcast, y, n, d);
      break;
    case Binary::GeluMul:
      binary_kernel<Binary::GeluMul><<<grid, kThreads, 0, stream>>>(a, b, bcast, y, n, d);
      break;
    case Binary::Add:
      binary_kernel<Binary::Add><<<grid, kThreads, 0, stream>>>(a, b, bcast, y, n, d);
      break;
    case Binary::Mul:
      binary_kernel<Binary::Mul><<<grid, kThreads, 0, stream>>>(a, b, bcast, y, n, d);
      break;
  }
  LLM_CUDA_CHECK_LAUNCH("binary_kernel");
}

}  // namespace cuda
}  // namespace llm
