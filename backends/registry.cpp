#include "backends/registry.h"

#include "backends/cpu/cpu_backend.h"
#include "core/device.h"
#include "core/error.h"
#ifdef LLM_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_devices.h"
#endif
#ifdef LLM_HAVE_VULKAN
#include "backends/vulkan/vulkan_backend.h"
#include "backends/vulkan/vulkan_devices.h"
#endif

namespace llm {

std::vector<std::string> compiled_backends() {
  std::vector<std::string> names = {"cpu"};
#ifdef LLM_HAVE_CUDA
  names.push_back("cuda");
#endif
#ifdef LLM_HAVE_VULKAN
  names.push_back("vulkan");
#endif
  return names;
}

std::vector<DeviceEntry> list_devices() {
  std::vector<DeviceEntry> out;
#ifdef LLM_HAVE_CUDA
  for (DeviceInfo& d : cuda_list_devices()) out.push_back({std::move(d), true});
#endif
#ifdef LLM_HAVE_VULKAN
  for (DeviceInfo& d : vulkan_list_devices()) out.push_back({std::move(d), true});
#endif
  out.push_back({make_cpu_backend()->info(), true});
  return out;
}

std::string auto_device_id() {
  // Preference: CUDA, then Vulkan, then the CPU, among backends that run models.
  for (const DeviceEntry& d : list_devices())
    if (d.can_run_models && d.info.id.rfind("cuda:", 0) == 0) return d.info.id;
#ifdef LLM_HAVE_VULKAN
  // The best Vulkan device, unless it is a CPU driver (lavapipe): the CPU backend is
  // faster than a Vulkan driver emulating a GPU on the same cores.
  const VulkanBest best = vulkan_best_device();
  if (best.index >= 0 && !best.cpu_type) return "vulkan:" + std::to_string(best.index);
#endif
  return "cpu";
}

std::unique_ptr<Backend> create_backend(const std::string& device, int cpu_threads) {
  DeviceSpec spec = parse_device_spec(device);
  if (spec.kind == "auto") spec = parse_device_spec(auto_device_id());
  if (spec.kind == "cpu") return make_cpu_backend(cpu_threads);

  bool compiled = false;
  for (const std::string& b : compiled_backends()) compiled |= b == spec.kind;
  if (!compiled)
    fail("this build has no %s backend (rebuild with -DLLM_%s=ON)", spec.kind.c_str(),
         spec.kind == "cuda" ? "CUDA" : "VULKAN");
  const int index = spec.index < 0 ? 0 : spec.index;
  const std::string id = spec.kind + ":" + std::to_string(index);
#ifdef LLM_HAVE_CUDA
  if (spec.kind == "cuda") {
    for (const DeviceEntry& d : list_devices())
      if (d.info.id == id) return make_cuda_backend(index);
  }
#endif
#ifdef LLM_HAVE_VULKAN
  // vulkan without an index: the best device (discrete > integrated > virtual > cpu).
  if (spec.kind == "vulkan") return make_vulkan_backend(spec.index);
#endif
  for (const DeviceEntry& d : list_devices()) {
    if (d.info.id != id) continue;
    fail("device %s (%s) was found, but the %s backend cannot run models yet; use --device cpu",
         id.c_str(), d.info.name.c_str(), spec.kind.c_str());
  }
  fail("no device %s found (see `llmcli devices`)", id.c_str());
}

}  // namespace llm
