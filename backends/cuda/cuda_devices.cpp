#include "backends/cuda/cuda_devices.h"

#include <cuda_runtime.h>

#include <string>

namespace llm {

std::vector<DeviceInfo> cuda_list_devices() {
  std::vector<DeviceInfo> out;
  int n = 0;
  // No driver or no GPU is a normal situation here, not an error.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return out;
  }
  for (int i = 0; i < n; i++) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    DeviceInfo d;
    d.id = "cuda:" + std::to_string(i);
    d.name = prop.name;
    d.type = prop.integrated ? "integrated-gpu" : "discrete-gpu";
    d.total_memory = prop.totalGlobalMem;
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
      d.free_memory = free_b;
    d.details = "compute capability " + std::to_string(prop.major) + "." +
                std::to_string(prop.minor) + ", " + std::to_string(prop.multiProcessorCount) +
                " SMs";
    out.push_back(d);
  }
  cudaGetLastError();
  return out;
}

}  // namespace llm
