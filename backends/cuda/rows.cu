// Row gathers and scatters: GetRows (embedding lookup, logit rows) and KvAppend
// (cache write). One block per row; bad indices are reported, never followed.
#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"

namespace llm {
namespace cuda {

namespace {

int row_threads(int64_t d) { return d >= 256 ? 256 : (d >= 64 ? 128 : 32); }

template <typename T>
__global__ void get_rows_kernel(const T* __restrict__ table, int64_t V, int64_t D,
                                const int32_t* __restrict__ ids, float* __restrict__ out,
                                int* err) {
  // The GEMV after an embedding lookup may start streaming its weights (it waits for
  // this kernel before it reads the rows).
  pdl_trigger();
  const int64_t r = blockIdx.x;
  const int64_t id = ids[r];
  float* o = out + r * D;
  if (id < 0 || id >= V) {
    if (threadIdx.x == 0) report(err, kErrRowId);
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) o[i] = 0.f;
    return;
  }
  const T* src = table + id * D;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) o[i] = to_f32(src[i]);
}

template <typename T>
__global__ void kv_append_kernel(const float* __restrict__ src, const int32_t* __restrict__ slots,
                                 int64_t W, T* __restrict__ cache, int64_t cache_rows, int* err) {
  const int64_t t = blockIdx.x;
  const int64_t slot = slots[t];
  if (slot < 0 || slot >= cache_rows) {
    if (threadIdx.x == 0) report(err, kErrSlot);
    return;
  }
  const float* s = src + t * W;
  T* d = cache + slot * W;
  for (int64_t i = threadIdx.x; i < W; i += blockDim.x) d[i] = from_f32<T>(s[i]);
}

}  // namespace

void get_rows(cudaStream_t stream, const void* table, DType table_type, int64_t V, int64_t D,
              const int32_t* ids, int64_t R, float* out, int* err) {
  if (R <= 0) return;
  dispatch_float(table_type, "get_rows tables", [&](auto tag) {
    using T = decltype(tag);
    get_rows_kernel<T><<<static_cast<unsigned>(R), row_threads(D), 0, stream>>>(
        static_cast<const T*>(table), V, D, ids, out, err);
  });
  LLM_CUDA_CHECK_LAUNCH("get_rows_kernel");
}

void kv_append(cudaStream_t stream, const float* src, const int32_t* slots, int64_t T, int64_t W,
               void* cache, DType cache_type, int64_t cache_rows, int* err) {
  if (T <= 0) return;
  dispatch_float(cache_type, "kv caches", [&](auto tag) {
    using CT = decltype(tag);
    kv_append_kernel<CT><<<static_cast<unsigned>(T), row_threads(W), 0, stream>>>(
        src, slots, W, static_cast<CT*>(cache), cache_rows, err);
  });
  LLM_CUDA_CHECK_LAUNCH("kv_append_kernel");
}

}  // namespace cuda
}  // namespace llm
