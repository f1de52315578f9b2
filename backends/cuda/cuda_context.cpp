// cuda_context.h: device memory and the error helpers.
#include "backends/cuda/cuda_context.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace llm {
namespace cuda {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  fail("CUDA error: %s failed at %s:%d: %s (%s)", call, base ? base + 1 : file, line,
       cudaGetErrorString(err), cudaGetErrorName(err));
}

namespace {
size_t mib(size_t bytes) { return (bytes + kMiB - 1) / kMiB; }
}  // namespace

void use_device(int device) { LLM_CUDA_CHECK(cudaSetDevice(device)); }

std::unique_ptr<CudaBuffer> device_alloc(int device, size_t bytes, const std::string& what) {
  use_device(device);
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, std::max<size_t>(bytes, 1));
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky: clear it
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail("out of device memory on cuda:%d allocating %zu MiB for %s (free %zu MiB of %zu MiB)",
         device, mib(bytes), what.c_str(), free_b / kMiB, total_b / kMiB);
  }
  if (err != cudaSuccess) cuda::throw_cuda_error(err, "cudaMalloc", __FILE__, __LINE__);
  return std::make_unique<CudaBuffer>(p, bytes, device);
}

const CudaBuffer& cuda_buffer(const DeviceBuffer& b, int device) {
  const CudaBuffer* cb = dynamic_cast<const CudaBuffer*>(&b);
  if (!cb) fail("cuda backend: a buffer of another backend was passed in");
  if (cb->device() != device)
    fail("cuda backend: a buffer of cuda:%d was passed to cuda:%d", cb->device(), device);
  return *cb;
}

}  // namespace cuda
}  // namespace llm
