#include "backends/vulkan/vulkan_api.h"

#include <dlfcn.h>

#include "core/error.h"

namespace llm::vk {

const Api* global_api() {
  static const Api* api = []() -> const Api* {
    void* lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return nullptr;
    static Api a;
    a.vkGetInstanceProcAddr =
        reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr"));
    if (!a.vkGetInstanceProcAddr) return nullptr;
#define LLM_VK_LOAD_GLOBAL(name) \
  a.name = reinterpret_cast<PFN_##name>(a.vkGetInstanceProcAddr(nullptr, #name));
    LLM_VK_GLOBAL_FUNCS(LLM_VK_LOAD_GLOBAL)
#undef LLM_VK_LOAD_GLOBAL
    if (!a.vkCreateInstance) return nullptr;
    return &a;
  }();
  return api;
}

void load_instance_api(Api& api, VkInstance instance) {
#define LLM_VK_LOAD_INSTANCE(name)                                                     \
  api.name = reinterpret_cast<PFN_##name>(api.vkGetInstanceProcAddr(instance, #name)); \
  if (!api.name) fail("Vulkan: the loader has no %s", #name);
  LLM_VK_INSTANCE_FUNCS(LLM_VK_LOAD_INSTANCE)
#undef LLM_VK_LOAD_INSTANCE
  // Present only when the debug-utils extension was enabled.
  api.vkCreateDebugUtilsMessengerEXT = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
      api.vkGetInstanceProcAddr(instance, "vkCreateDebugUtilsMessengerEXT"));
  api.vkDestroyDebugUtilsMessengerEXT = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
      api.vkGetInstanceProcAddr(instance, "vkDestroyDebugUtilsMessengerEXT"));
  api.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV =
      reinterpret_cast<PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV>(
          api.vkGetInstanceProcAddr(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV"));
}

void load_device_api(const Api& api, VkDevice device, DeviceApi& out) {
#define LLM_VK_LOAD_DEVICE(name)                                                   \
  out.name = reinterpret_cast<PFN_##name>(api.vkGetDeviceProcAddr(device, #name)); \
  if (!out.name) fail("Vulkan: the device has no %s", #name);
  LLM_VK_DEVICE_FUNCS(LLM_VK_LOAD_DEVICE)
#undef LLM_VK_LOAD_DEVICE
}

const char* result_name(VkResult r) {
  switch (r) {
#define LLM_VK_CASE(x) \
  case x:              \
    return #x;
    LLM_VK_CASE(VK_SUCCESS)
    LLM_VK_CASE(VK_NOT_READY)
    LLM_VK_CASE(VK_TIMEOUT)
    LLM_VK_CASE(VK_INCOMPLETE)
    LLM_VK_CASE(VK_ERROR_OUT_OF_HOST_MEMORY)
    LLM_VK_CASE(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    LLM_VK_CASE(VK_ERROR_INITIALIZATION_FAILED)
    LLM_VK_CASE(VK_ERROR_DEVICE_LOST)
    LLM_VK_CASE(VK_ERROR_MEMORY_MAP_FAILED)
    LLM_VK_CASE(VK_ERROR_LAYER_NOT_PRESENT)
    LLM_VK_CASE(VK_ERROR_EXTENSION_NOT_PRESENT)
    LLM_VK_CASE(VK_ERROR_FEATURE_NOT_PRESENT)
    LLM_VK_CASE(VK_ERROR_INCOMPATIBLE_DRIVER)
    LLM_VK_CASE(VK_ERROR_TOO_MANY_OBJECTS)
    LLM_VK_CASE(VK_ERROR_FORMAT_NOT_SUPPORTED)
    LLM_VK_CASE(VK_ERROR_FRAGMENTED_POOL)
    LLM_VK_CASE(VK_ERROR_OUT_OF_POOL_MEMORY)
    LLM_VK_CASE(VK_ERROR_INVALID_SHADER_NV)
#undef LLM_VK_CASE
    default:
      return "VK_ERROR_UNKNOWN";
  }
}

void check(VkResult r, const char* call) {
  if (r != VK_SUCCESS) fail("Vulkan error: %s failed (%s)", call, result_name(r));
}

}  // namespace llm::vk
