// Internal to the CUDA backend: device helpers shared by the kernel files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backends/cuda/cuda_common.h"
#include "core/dtype.h"
#include "core/error.h"

namespace llm {
namespace cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// The quantized weight types in the split layout (cuda_kernels.h) that the weight kernels
// are instantiated for: int8 quants, nibbles with q - 8, nibbles with a min.
enum QLayout : int { kLayoutQ8_0 = 0, kLayoutQ4_0 = 1, kLayoutQ4_1 = 2 };
__host__ __device__ constexpr bool layout_is_q4(int l) { return l != kLayoutQ8_0; }
inline QLayout layout_of(DType t) {
  return t == DType::Q4_0 ? kLayoutQ4_0 : (t == DType::Q4_1 ? kLayoutQ4_1 : kLayoutQ8_0);
}
// Calls f(std::integral_constant<int, layout>) for t's layout (host side: picks the
// kernel instantiation).
template <typename F>
void with_layout(DType t, F&& f) {
  switch (layout_of(t)) {
    case kLayoutQ4_0:
      f(std::integral_constant<int, kLayoutQ4_0>{});
      break;
    case kLayoutQ4_1:
      f(std::integral_constant<int, kLayoutQ4_1>{});
      break;
    default:
      f(std::integral_constant<int, kLayoutQ8_0>{});
  }
}

// Element types as stored; to_f32 converts one element exactly.
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Elements of T in one 16-byte load.
template <typename T>
struct Vec16 {
  static constexpr int kN = 16 / sizeof(T);
};

// Loads 16 bytes at p (16-byte aligned) as kN floats.
template <typename T>
__device__ __forceinline__ void load16(const T* p, float* out) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < Vec16<T>::kN; i++) out[i] = to_f32(e[i]);
}

// A small vector (norm weight, bias) of any float dtype, read element by element.
__device__ __forceinline__ float load_any(const void* p, int dtype, int64_t i) {
  switch (dtype) {
    case static_cast<int>(DType::F16):
      return __half2float(static_cast<const __half*>(p)[i]);
    case static_cast<int>(DType::BF16):
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

// Stores v as dtype (f32, f16 or bf16) at element i of p.
__device__ __forceinline__ void store_any(void* p, int dtype, int64_t i, float v) {
  switch (dtype) {
    case static_cast<int>(DType::F16):
      static_cast<__half*>(p)[i] = __float2half_rn(v);
      return;
    case static_cast<int>(DType::BF16):
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
      return;
    default:
      static_cast<float*>(p)[i] = v;
  }
}

// Asynchronous copies global -> shared (sm_80+): each thread's copies land after its
// cp_async_wait of their group; other threads see them after a barrier as well. Only
// the wait is a compiler memory barrier: a caller that rewrites shared memory it read
// without a barrier in between adds one (asm volatile("" ::: "memory")).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
// 16 bytes, or zeros without reading when !valid.
__device__ __forceinline__ void cp_async16_zfill(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async8(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(s), "l"(gmem));
}
// 4 bytes, or zeros without reading when !valid.
__device__ __forceinline__ void cp_async4_zfill(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Programmatic dependent launch (sm_90; no-ops before, and when the kernel was launched
// without it): pdl_wait blocks until the kernel before this one has finished and its
// writes are visible; pdl_trigger lets the next kernel start its blocks early.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// atomicAdd(counter, 1) with acquire-release semantics at GPU scope; returns the old
// count. For "the last block to count merges": a block counts after a barrier, and
// release is cumulative, so everything the block wrote before the barrier is visible
// to the block that sees the final count (its other threads after a barrier), without
// the full fences (__threadfence) on either side.
__device__ __forceinline__ unsigned count_acq_rel(unsigned* counter) {
  unsigned old;
  asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;"
               : "=r"(old)
               : "l"(counter)
               : "memory");
  return old;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets
// it. `scratch` holds 32 floats; the call begins and ends with a barrier so it can be
// called again with the same scratch.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n_warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : 0.f;
  return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n_warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

// SiLU as HF computes it in float32 (accurate expf: there is no --use_fast_math).
__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }

// Threads per row of the norm kernels: enough to cover a row in a few steps, a multiple
// of 32 (the block sum's order, so kernels that fuse a norm get its bits).
inline int norm_threads(int64_t d) {
  int t = 32;
  while (t < 1024 && t < d / 4) t *= 2;
  return t;
}

__device__ __forceinline__ void report(int* err, int bit) {
  if (err) atomicOr(err, bit);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65536) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return static_cast<unsigned>(b);
}

// Calls f with a value of the element type of a float dtype (f32/f16/bf16).
template <typename F>
void dispatch_float(DType t, const char* what, F&& f) {
  switch (t) {
    case DType::F32:
      f(float{});
      return;
    case DType::F16:
      f(__half{});
      return;
    case DType::BF16:
      f(__nv_bfloat16{});
      return;
    default:
      fail("cuda backend: %s: %s is not supported", what, dtype_name(t));
  }
}

}  // namespace cuda
}  // namespace llm
