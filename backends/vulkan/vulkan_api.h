// The Vulkan entry points the backend uses, loaded from libvulkan.so.1 at run time
// (dlopen), so that binaries built with the Vulkan backend also start on machines
// without a Vulkan loader.
#pragma once

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

namespace llm::vk {

#define LLM_VK_GLOBAL_FUNCS(X) \
  X(vkCreateInstance)          \
  X(vkEnumerateInstanceLayerProperties)

#define LLM_VK_INSTANCE_FUNCS(X)              \
  X(vkDestroyInstance)                        \
  X(vkEnumeratePhysicalDevices)               \
  X(vkGetPhysicalDeviceProperties)            \
  X(vkGetPhysicalDeviceProperties2)           \
  X(vkGetPhysicalDeviceFeatures2)             \
  X(vkGetPhysicalDeviceMemoryProperties)      \
  X(vkGetPhysicalDeviceQueueFamilyProperties) \
  X(vkEnumerateDeviceExtensionProperties)     \
  X(vkCreateDevice)                           \
  X(vkGetDeviceProcAddr)

#define LLM_VK_DEVICE_FUNCS(X)     \
  X(vkDestroyDevice)               \
  X(vkGetDeviceQueue)              \
  X(vkQueueSubmit)                 \
  X(vkQueueWaitIdle)               \
  X(vkDeviceWaitIdle)              \
  X(vkAllocateMemory)              \
  X(vkFreeMemory)                  \
  X(vkMapMemory)                   \
  X(vkUnmapMemory)                 \
  X(vkCreateBuffer)                \
  X(vkDestroyBuffer)               \
  X(vkGetBufferMemoryRequirements) \
  X(vkBindBufferMemory)            \
  X(vkCreateFence)                 \
  X(vkDestroyFence)                \
  X(vkResetFences)                 \
  X(vkWaitForFences)               \
  X(vkCreateCommandPool)           \
  X(vkDestroyCommandPool)          \
  X(vkAllocateCommandBuffers)      \
  X(vkFreeCommandBuffers)          \
  X(vkBeginCommandBuffer)          \
  X(vkEndCommandBuffer)            \
  X(vkResetCommandBuffer)          \
  X(vkCmdCopyBuffer)               \
  X(vkCmdFillBuffer)               \
  X(vkCmdUpdateBuffer)             \
  X(vkCmdPipelineBarrier)          \
  X(vkCreateEvent)                 \
  X(vkDestroyEvent)                \
  X(vkCmdSetEvent)                 \
  X(vkGetEventStatus)              \
  X(vkResetEvent)                  \
  X(vkCmdBindPipeline)             \
  X(vkCmdBindDescriptorSets)       \
  X(vkCmdPushConstants)            \
  X(vkCmdDispatch)                 \
  X(vkCmdWriteTimestamp)           \
  X(vkCmdResetQueryPool)           \
  X(vkCmdCopyQueryPoolResults)     \
  X(vkCreateQueryPool)             \
  X(vkDestroyQueryPool)            \
  X(vkGetQueryPoolResults)         \
  X(vkCreateShaderModule)          \
  X(vkDestroyShaderModule)         \
  X(vkCreatePipelineCache)         \
  X(vkDestroyPipelineCache)        \
  X(vkGetPipelineCacheData)        \
  X(vkCreateDescriptorSetLayout)   \
  X(vkDestroyDescriptorSetLayout)  \
  X(vkCreatePipelineLayout)        \
  X(vkDestroyPipelineLayout)       \
  X(vkCreateComputePipelines)      \
  X(vkDestroyPipeline)             \
  X(vkCreateDescriptorPool)        \
  X(vkDestroyDescriptorPool)       \
  X(vkAllocateDescriptorSets)      \
  X(vkUpdateDescriptorSets)

#define LLM_VK_DECLARE(name) PFN_##name name = nullptr;

// Global and instance functions; device functions live in Device (vulkan_context.h).
struct Api {
  PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr = nullptr;
  LLM_VK_GLOBAL_FUNCS(LLM_VK_DECLARE)
  LLM_VK_INSTANCE_FUNCS(LLM_VK_DECLARE)
  PFN_vkCreateDebugUtilsMessengerEXT vkCreateDebugUtilsMessengerEXT = nullptr;
  PFN_vkDestroyDebugUtilsMessengerEXT vkDestroyDebugUtilsMessengerEXT = nullptr;
  // Present when the driver has VK_NV_cooperative_matrix.
  PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV
      vkGetPhysicalDeviceCooperativeMatrixPropertiesNV = nullptr;
};

struct DeviceApi {
  LLM_VK_DEVICE_FUNCS(LLM_VK_DECLARE)
};

// The loader's global functions, or nullptr when libvulkan.so.1 cannot be opened.
// The library stays loaded for the life of the process.
const Api* global_api();

// Fills the instance-level functions of `api` for `instance`.
void load_instance_api(Api& api, VkInstance instance);
// Fills the device functions; throws llm::Error naming a missing one.
void load_device_api(const Api& api, VkDevice device, DeviceApi& out);

// "VK_ERROR_OUT_OF_DEVICE_MEMORY" and the like.
const char* result_name(VkResult r);
// Throws llm::Error "Vulkan error: CALL failed (NAME)" unless r is VK_SUCCESS.
void check(VkResult r, const char* call);

}  // namespace llm::vk

#define LLM_VK_CHECK(call) ::llm::vk::check((call), #call)
