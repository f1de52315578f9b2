#include "backends/vulkan/vulkan_devices.h"

#define VK_NO_PROTOTYPES
#include <dlfcn.h>
#include <vulkan/vulkan.h>

#include <string>

namespace llm {

namespace {

const char* device_type_name(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
  }
}

// The loader library, closed when the listing is done.
struct Loader {
  void* lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
  ~Loader() {
    if (lib) dlclose(lib);
  }
};

}  // namespace

std::vector<DeviceInfo> vulkan_list_devices() {
  std::vector<DeviceInfo> out;
  Loader loader;
  if (!loader.lib) return out;
  auto get_proc =
      reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(loader.lib, "vkGetInstanceProcAddr"));
  if (!get_proc) return out;
  auto create_instance =
      reinterpret_cast<PFN_vkCreateInstance>(get_proc(nullptr, "vkCreateInstance"));
  if (!create_instance) return out;

  VkApplicationInfo app{};
  app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
  app.pApplicationName = "llmrt";
  app.apiVersion = VK_API_VERSION_1_2;
  VkInstanceCreateInfo ici{};
  ici.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
  ici.pApplicationInfo = &app;
  VkInstance instance = VK_NULL_HANDLE;
  if (create_instance(&ici, nullptr, &instance) != VK_SUCCESS) return out;

  auto destroy_instance =
      reinterpret_cast<PFN_vkDestroyInstance>(get_proc(instance, "vkDestroyInstance"));
  auto enumerate = reinterpret_cast<PFN_vkEnumeratePhysicalDevices>(
      get_proc(instance, "vkEnumeratePhysicalDevices"));
  auto get_props = reinterpret_cast<PFN_vkGetPhysicalDeviceProperties>(
      get_proc(instance, "vkGetPhysicalDeviceProperties"));
  auto get_mem = reinterpret_cast<PFN_vkGetPhysicalDeviceMemoryProperties>(
      get_proc(instance, "vkGetPhysicalDeviceMemoryProperties"));
  uint32_t n = 0;
  if (enumerate && get_props && get_mem && enumerate(instance, &n, nullptr) == VK_SUCCESS) {
    std::vector<VkPhysicalDevice> devs(n);
    enumerate(instance, &n, devs.data());
    for (uint32_t i = 0; i < n; i++) {
      VkPhysicalDeviceProperties p;
      get_props(devs[i], &p);
      VkPhysicalDeviceMemoryProperties mem;
      get_mem(devs[i], &mem);
      DeviceInfo d;
      d.id = "vulkan:" + std::to_string(i);
      d.name = p.deviceName;
      d.type = device_type_name(p.deviceType);
      for (uint32_t h = 0; h < mem.memoryHeapCount; h++)
        if (mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
          d.total_memory += mem.memoryHeaps[h].size;
      d.details = "Vulkan " + std::to_string(VK_API_VERSION_MAJOR(p.apiVersion)) + "." +
                  std::to_string(VK_API_VERSION_MINOR(p.apiVersion)) + "." +
                  std::to_string(VK_API_VERSION_PATCH(p.apiVersion));
      out.push_back(d);
    }
  }
  if (destroy_instance) destroy_instance(instance, nullptr);
  return out;
}

}  // namespace llm
