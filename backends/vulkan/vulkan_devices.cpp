#include "backends/vulkan/vulkan_devices.h"

#include "backends/vulkan/vulkan_context.h"

namespace llm {

std::vector<DeviceInfo> vulkan_list_devices() {
  std::vector<DeviceInfo> out;
  if (!vk::global_api()) return out;
  try {
    vk::Instance instance(false);
    const std::vector<VkPhysicalDevice> devs = instance.physical_devices();
    for (size_t i = 0; i < devs.size(); i++)
      out.push_back(vk::device_info(static_cast<int>(i), vk::describe(instance, devs[i])));
  } catch (const std::exception&) {
    // No usable driver: no Vulkan devices.
  }
  return out;
}

}  // namespace llm
