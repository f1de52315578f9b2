// Small copies between device memory and pinned (mapped) host memory in one launch:
// a decode step's inputs going up, the token fed from the last step's argmax and the
// sampled id coming back cost one kernel instead of a copy-engine operation each.
#include <algorithm>

#include "backends/cuda/cuda_device.cuh"
#include "backends/cuda/cuda_kernels.h"

namespace llm {
namespace cuda {

namespace {

constexpr int kCopyThreads = 256;

// Block b copies the b-th slice of kCopyThreads words (or bytes) of every copy.
__global__ void __launch_bounds__(kCopyThreads) small_copies_kernel(SmallCopies c) {
  for (int k = 0; k < c.n; k++) {
    const SmallCopy& op = c.op[k];
    const uint32_t i = blockIdx.x * kCopyThreads + threadIdx.x;
    const bool words =
        ((reinterpret_cast<uintptr_t>(op.dst) | reinterpret_cast<uintptr_t>(op.src) | op.bytes) &
         3u) == 0;
    if (words) {
      if (i < op.bytes / 4)
        static_cast<uint32_t*>(op.dst)[i] = static_cast<const volatile uint32_t*>(op.src)[i];
    } else {
      for (uint32_t j = i; j < op.bytes; j += gridDim.x * kCopyThreads)
        static_cast<uint8_t*>(op.dst)[j] = static_cast<const volatile uint8_t*>(op.src)[j];
    }
  }
}

}  // namespace

void small_copies(cudaStream_t stream, const SmallCopies& c) {
  if (c.n <= 0) return;
  uint32_t most = 0;
  for (int k = 0; k < c.n; k++) most = std::max(most, c.op[k].bytes);
  const uint32_t blocks = std::max(1u, (most / 4 + kCopyThreads - 1) / kCopyThreads);
  small_copies_kernel<<<blocks, kCopyThreads, 0, stream>>>(c);
  LLM_CUDA_CHECK_LAUNCH("small_copies_kernel");
}

}  // namespace cuda
}  // namespace llm
