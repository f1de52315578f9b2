#include "backends/vulkan/vulkan_context.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "backends/vulkan/vulkan_shaders.h"
#include "backends/vulkan/vulkan_step_times.h"
#include "core/error.h"
#include "core/formats/atomic_file.h"

namespace llm::vk {

namespace {

constexpr VkDeviceSize kMiB = VkDeviceSize{1} << 20;
constexpr size_t kStagingBytes = 64 * kMiB;
// Buffers up to this size go to mapped device memory where there is some.
constexpr size_t kSmallBuffer = 1 << 20;

std::atomic<int> g_validation_errors{0};
std::atomic<int> g_pipelines_created{0};
std::atomic<int> g_submissions{0};

VKAPI_ATTR VkBool32 VKAPI_CALL on_validation(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                             VkDebugUtilsMessageTypeFlagsEXT,
                                             const VkDebugUtilsMessengerCallbackDataEXT* data,
                                             void*) {
  if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
    g_validation_errors++;
    std::fprintf(stderr, "vulkan validation error: %s\n", data->pMessage);
  } else if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
    std::fprintf(stderr, "vulkan validation warning: %s\n", data->pMessage);
  }
  return VK_FALSE;
}

bool has_layer(const Api& api, const char* name) {
  uint32_t n = 0;
  if (api.vkEnumerateInstanceLayerProperties(&n, nullptr) != VK_SUCCESS) return false;
  std::vector<VkLayerProperties> layers(n);
  api.vkEnumerateInstanceLayerProperties(&n, layers.data());
  for (const VkLayerProperties& l : layers)
    if (std::strcmp(l.layerName, name) == 0) return true;
  return false;
}

}  // namespace

bool validation_requested() {
  const char* v = std::getenv("LLM_VULKAN_VALIDATION");
  return v && std::strcmp(v, "1") == 0;
}

int validation_error_count() { return g_validation_errors.load(); }

int pipelines_created() { return g_pipelines_created.load(); }
int submissions() { return g_submissions.load(); }

// ---- Instance ------------------------------------------------------------------------------

Instance::Instance(bool validation) {
  const Api* g = global_api();
  if (!g) fail("Vulkan: no Vulkan loader (libvulkan.so.1) on this machine");
  api_ = *g;
  const char* layer = "VK_LAYER_KHRONOS_validation";
  std::vector<const char*> layers, exts;
  if (validation && !has_layer(api_, layer)) {
    static bool warned = false;
    if (!warned)
      std::fprintf(stderr,
                   "warning: LLM_VULKAN_VALIDATION=1 but the layer %s is not installed "
                   "(Debian: vulkan-validationlayers); running without it\n",
                   layer);
    warned = true;
    validation = false;
  }
  if (validation) {
    layers.push_back(layer);
    exts.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
  }
  VkApplicationInfo app{};
  app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
  app.pApplicationName = "llmrt";
  app.pEngineName = "llmrt";
  app.apiVersion = VK_API_VERSION_1_2;
  VkInstanceCreateInfo ici{};
  ici.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
  ici.pApplicationInfo = &app;
  ici.enabledLayerCount = static_cast<uint32_t>(layers.size());
  ici.ppEnabledLayerNames = layers.data();
  ici.enabledExtensionCount = static_cast<uint32_t>(exts.size());
  ici.ppEnabledExtensionNames = exts.data();
  LLM_VK_CHECK(api_.vkCreateInstance(&ici, nullptr, &instance_));
  load_instance_api(api_, instance_);
  if (validation && api_.vkCreateDebugUtilsMessengerEXT) {
    VkDebugUtilsMessengerCreateInfoEXT mci{};
    mci.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT;
    mci.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT |
                          VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT;
    mci.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                      VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                      VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
    mci.pfnUserCallback = on_validation;
    LLM_VK_CHECK(api_.vkCreateDebugUtilsMessengerEXT(instance_, &mci, nullptr, &messenger_));
  }
}

Instance::~Instance() {
  if (messenger_) api_.vkDestroyDebugUtilsMessengerEXT(instance_, messenger_, nullptr);
  if (instance_) api_.vkDestroyInstance(instance_, nullptr);
}

std::vector<VkPhysicalDevice> Instance::physical_devices() const {
  uint32_t n = 0;
  LLM_VK_CHECK(api_.vkEnumeratePhysicalDevices(instance_, &n, nullptr));
  std::vector<VkPhysicalDevice> devs(n);
  LLM_VK_CHECK(api_.vkEnumeratePhysicalDevices(instance_, &n, devs.data()));
  devs.resize(n);
  return devs;
}

// ---- Physical devices ----------------------------------------------------------------------

const char* device_type_name(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return "discrete-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return "integrated-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return "virtual-gpu";
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return "cpu";
    default:
      return "other";
  }
}

int device_type_rank(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return 3;
    default:
      return 4;
  }
}

PhysicalInfo describe(const Instance& instance, VkPhysicalDevice dev) {
  const Api& api = instance.api();
  PhysicalInfo p;
  p.handle = dev;
  api.vkGetPhysicalDeviceProperties(dev, &p.props);
  api.vkGetPhysicalDeviceMemoryProperties(dev, &p.memory);
  for (uint32_t h = 0; h < p.memory.memoryHeapCount; h++)
    if (p.memory.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
      p.device_local_bytes += p.memory.memoryHeaps[h].size;
  uint32_t n_ext = 0;
  api.vkEnumerateDeviceExtensionProperties(dev, nullptr, &n_ext, nullptr);
  std::vector<VkExtensionProperties> exts(n_ext);
  api.vkEnumerateDeviceExtensionProperties(dev, nullptr, &n_ext, exts.data());
  bool has_int_dot = false, has_sm = false, has_amd_cores = false, has_atomic_float = false;
  for (const VkExtensionProperties& e : exts) {
    if (std::strcmp(e.extensionName, "VK_NV_cooperative_matrix") == 0) p.coopmat_nv = true;
    if (std::strcmp(e.extensionName, VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME) == 0)
      p.executable_stats = true;
    if (std::strcmp(e.extensionName, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME) == 0)
      has_int_dot = true;
    if (std::strcmp(e.extensionName, VK_NV_SHADER_SM_BUILTINS_EXTENSION_NAME) == 0) has_sm = true;
    if (std::strcmp(e.extensionName, VK_EXT_SHADER_ATOMIC_FLOAT_EXTENSION_NAME) == 0)
      has_atomic_float = true;
    if (std::strcmp(e.extensionName, VK_AMD_SHADER_CORE_PROPERTIES_EXTENSION_NAME) == 0)
      has_amd_cores = true;
  }
  if (p.props.apiVersion >= VK_API_VERSION_1_1) {
    VkPhysicalDeviceShaderIntegerDotProductProperties dot{};
    dot.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES;
    VkPhysicalDeviceSubgroupProperties sub{};
    sub.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES;
    sub.pNext = has_int_dot ? &dot : nullptr;
    // The multiprocessor count, where the driver tells it.
    VkPhysicalDeviceShaderSMBuiltinsPropertiesNV sm{};
    sm.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_SM_BUILTINS_PROPERTIES_NV;
    VkPhysicalDeviceShaderCorePropertiesAMD amd{};
    amd.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_CORE_PROPERTIES_AMD;
    void* chain = &sub;
    if (has_sm) {
      sm.pNext = chain;
      chain = &sm;
    }
    if (has_amd_cores) {
      amd.pNext = chain;
      chain = &amd;
    }
    VkPhysicalDeviceProperties2 props2{};
    props2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
    props2.pNext = chain;
    api.vkGetPhysicalDeviceProperties2(dev, &props2);
    p.subgroup_size = sub.subgroupSize;
    if (has_sm)
      p.compute_units = sm.shaderSMCount;
    else if (has_amd_cores)
      p.compute_units =
          amd.shaderEngineCount * amd.shaderArraysPerEngineCount * amd.computeUnitsPerShaderArray;
    p.subgroup_arithmetic = (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                            (sub.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
    p.subgroup_clustered = (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                           (sub.supportedOperations & VK_SUBGROUP_FEATURE_CLUSTERED_BIT);
    p.int_dot_fast = dot.integerDotProduct4x8BitPackedSignedAccelerated;
  }
  if (p.props.apiVersion >= VK_API_VERSION_1_2) {
    VkPhysicalDeviceShaderIntegerDotProductFeatures dot{};
    dot.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES;
    VkPhysicalDeviceShaderAtomicFloatFeaturesEXT af{};
    af.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_ATOMIC_FLOAT_FEATURES_EXT;
    af.pNext = has_int_dot ? &dot : nullptr;
    VkPhysicalDeviceVulkanMemoryModelFeatures mm{};
    mm.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES;
    mm.pNext = has_atomic_float ? static_cast<void*>(&af) : (has_int_dot ? &dot : nullptr);
    VkPhysicalDeviceShaderFloat16Int8Features f16{};
    f16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES;
    f16.pNext = &mm;
    VkPhysicalDevice16BitStorageFeatures s16{};
    s16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES;
    s16.pNext = &f16;
    VkPhysicalDeviceFeatures2 f2{};
    f2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
    f2.pNext = &s16;
    api.vkGetPhysicalDeviceFeatures2(dev, &f2);
    p.fp16 = f16.shaderFloat16;
    p.storage16 = s16.storageBuffer16BitAccess;
    p.memory_model = mm.vulkanMemoryModel;
    p.int_dot = dot.shaderIntegerDotProduct;
    p.atomic_float_add =
        has_atomic_float && af.shaderBufferFloat32AtomicAdd && af.shaderBufferFloat32Atomics;
  }
  p.int_dot_fast = p.int_dot && p.int_dot_fast;
  if (p.coopmat_nv && api.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV) {
    uint32_t n = 0;
    api.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(dev, &n, nullptr);
    std::vector<VkCooperativeMatrixPropertiesNV> cps(n);
    for (auto& c : cps) c.sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
    api.vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(dev, &n, cps.data());
    // The shader's fragment shape (16 x 16 x 16), or else the largest listed (reported).
    for (const auto& c : cps)
      if (c.AType == VK_COMPONENT_TYPE_FLOAT16_NV && c.BType == VK_COMPONENT_TYPE_FLOAT16_NV &&
          c.CType == VK_COMPONENT_TYPE_FLOAT32_NV && c.DType == VK_COMPONENT_TYPE_FLOAT32_NV &&
          c.scope == VK_SCOPE_SUBGROUP_NV && p.coop_m * p.coop_n * p.coop_k != 16 * 16 * 16 &&
          (c.MSize * c.NSize * c.KSize > p.coop_m * p.coop_n * p.coop_k ||
           (c.MSize == 16 && c.NSize == 16 && c.KSize == 16))) {
        p.coop_m = c.MSize;
        p.coop_n = c.NSize;
        p.coop_k = c.KSize;
      }
  }
  uint32_t n_fam = 0;
  api.vkGetPhysicalDeviceQueueFamilyProperties(dev, &n_fam, nullptr);
  std::vector<VkQueueFamilyProperties> fams(n_fam);
  api.vkGetPhysicalDeviceQueueFamilyProperties(dev, &n_fam, fams.data());
  // Prefer a compute family without graphics (an async compute queue) when there is one.
  for (int pass = 0; pass < 2 && p.compute_family == UINT32_MAX; pass++) {
    for (uint32_t i = 0; i < n_fam; i++) {
      const VkQueueFlags f = fams[i].queueFlags;
      if (!(f & VK_QUEUE_COMPUTE_BIT) || (pass == 0 && (f & VK_QUEUE_GRAPHICS_BIT))) continue;
      p.compute_family = i;
      p.timestamp_bits = fams[i].timestampValidBits;
      break;
    }
  }
  return p;
}

DeviceInfo device_info(int index, const PhysicalInfo& p) {
  DeviceInfo d;
  d.id = "vulkan:" + std::to_string(index);
  d.name = p.props.deviceName;
  d.type = device_type_name(p.props.deviceType);
  d.total_memory = p.device_local_bytes;
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "Vulkan %u.%u.%u, subgroup %u%s, fp16 %s, int8 dot %s, coopmat %s",
                VK_API_VERSION_MAJOR(p.props.apiVersion), VK_API_VERSION_MINOR(p.props.apiVersion),
                VK_API_VERSION_PATCH(p.props.apiVersion), p.subgroup_size,
                p.subgroup_arithmetic ? " (subgroup ops)" : "", p.fp16 ? "yes" : "no",
                p.int_dot_fast ? "yes"
                : p.int_dot    ? "emulated"
                               : "no",
                p.coopmat_nv ? "NV" : "no");
  d.details = buf;
  if (p.coop_m)
    d.details += " (" + std::to_string(p.coop_m) + "x" + std::to_string(p.coop_n) + "x" +
                 std::to_string(p.coop_k) + " f16)";
  if (p.compute_units) d.details += ", " + std::to_string(p.compute_units) + " compute units";
  return d;
}

// ---- Memory --------------------------------------------------------------------------------

Allocator::Allocator(const DeviceApi& d, VkDevice device, uint32_t type, bool host_visible,
                     VkDeviceSize block_bytes)
    : d_(d), device_(device), type_(type), host_visible_(host_visible), block_bytes_(block_bytes) {}

Allocator::~Allocator() {
  for (Block& b : blocks_)
    if (b.memory) d_.vkFreeMemory(device_, b.memory, nullptr);  // unmaps too
}

VkResult Allocator::allocate(VkDeviceSize size, VkDeviceSize align, Allocation* out) {
  size = std::max<VkDeviceSize>(size, 1);
  const bool dedicated = size >= block_bytes_ / 4;
  if (!dedicated) {
    for (size_t bi = 0; bi < blocks_.size(); bi++) {
      Block& b = blocks_[bi];
      if (!b.memory || b.dedicated) continue;
      for (auto it = b.free.begin(); it != b.free.end(); ++it) {
        const VkDeviceSize start = (it->first + align - 1) / align * align;
        const VkDeviceSize end = it->first + it->second;
        if (start + size > end) continue;
        const VkDeviceSize f_off = it->first;
        b.free.erase(it);
        if (start > f_off) b.free[f_off] = start - f_off;
        if (end > start + size) b.free[start + size] = end - start - size;
        *out = {static_cast<int>(bi), start, size, b.mapped ? b.mapped + start : nullptr};
        return VK_SUCCESS;
      }
    }
  }
  Block b;
  b.size = dedicated ? size : block_bytes_;
  b.dedicated = dedicated;
  VkMemoryAllocateInfo mai{};
  mai.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
  mai.allocationSize = b.size;
  mai.memoryTypeIndex = type_;
  VkResult r = d_.vkAllocateMemory(device_, &mai, nullptr, &b.memory);
  if (r != VK_SUCCESS) return r;
  if (host_visible_) {
    void* p = nullptr;
    r = d_.vkMapMemory(device_, b.memory, 0, VK_WHOLE_SIZE, 0, &p);
    if (r != VK_SUCCESS) {
      d_.vkFreeMemory(device_, b.memory, nullptr);
      return r;
    }
    b.mapped = static_cast<uint8_t*>(p);
  }
  if (!dedicated && b.size > size) b.free[size] = b.size - size;
  // Reuse a slot of a freed block.
  int bi = -1;
  for (size_t i = 0; i < blocks_.size(); i++)
    if (!blocks_[i].memory) bi = static_cast<int>(i);
  if (bi < 0) {
    blocks_.push_back(std::move(b));
    bi = static_cast<int>(blocks_.size() - 1);
  } else {
    blocks_[bi] = std::move(b);
  }
  *out = {bi, 0, size, blocks_[bi].mapped};
  return VK_SUCCESS;
}

void Allocator::release(const Allocation& a) {
  if (a.block < 0) return;
  Block& b = blocks_[a.block];
  if (b.dedicated) {
    d_.vkFreeMemory(device_, b.memory, nullptr);
    b = Block{};
    return;
  }
  VkDeviceSize off = a.offset, size = a.size;
  auto next = b.free.lower_bound(off);
  if (next != b.free.end() && next->first == off + size) {
    size += next->second;
    next = b.free.erase(next);
  }
  if (next != b.free.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == off) {
      off = prev->first;
      size += prev->second;
      b.free.erase(prev);
    }
  }
  b.free[off] = size;
}

// ---- Context -------------------------------------------------------------------------------

namespace {

// A memory type with all of `want`, or UINT32_MAX.
uint32_t find_type(const VkPhysicalDeviceMemoryProperties& m, VkMemoryPropertyFlags want) {
  for (uint32_t i = 0; i < m.memoryTypeCount; i++)
    if ((m.memoryTypes[i].propertyFlags & want) == want) return i;
  return UINT32_MAX;
}

}  // namespace

Context::Context(std::unique_ptr<Instance> instance, const PhysicalInfo& phys, int index)
    : instance_(std::move(instance)), phys_(phys), index_(index) {
  const Api& api = instance_->api();
  if (phys_.compute_family == UINT32_MAX) fail("%s has no compute queue", id().c_str());
  const float priority = 1.f;
  VkDeviceQueueCreateInfo qci{};
  qci.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO;
  qci.queueFamilyIndex = phys_.compute_family;
  qci.queueCount = 1;
  qci.pQueuePriorities = &priority;
  VkDeviceCreateInfo dci{};
  dci.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
  dci.queueCreateInfoCount = 1;
  dci.pQueueCreateInfos = &qci;
  // The tensor-core GEMM's extension and features, only where it can run.
  VkPhysicalDeviceCooperativeMatrixFeaturesNV coop{};
  coop.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV;
  coop.cooperativeMatrix = VK_TRUE;
  VkPhysicalDeviceVulkanMemoryModelFeatures mm{};
  mm.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES;
  mm.vulkanMemoryModel = VK_TRUE;
  mm.pNext = &coop;
  VkPhysicalDeviceShaderFloat16Int8Features f16{};
  f16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES;
  f16.shaderFloat16 = VK_TRUE;
  f16.pNext = &mm;
  // Integer dot products (the quantized GEMV's), where the device has them.
  VkPhysicalDeviceShaderIntegerDotProductFeatures idot{};
  idot.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES;
  idot.shaderIntegerDotProduct = VK_TRUE;
  std::vector<const char*> exts;
  void* chain = nullptr;
  if (phys_.coop_gemm()) {
    chain = &f16;
    exts.push_back("VK_NV_cooperative_matrix");
  }
  if (phys_.int_dot) {
    idot.pNext = chain;
    chain = &idot;
    exts.push_back(VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
  }
  // Float atomics (the fused FFN's down product), where the device has them.
  VkPhysicalDeviceShaderAtomicFloatFeaturesEXT afloat{};
  afloat.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_ATOMIC_FLOAT_FEATURES_EXT;
  afloat.shaderBufferFloat32Atomics = VK_TRUE;
  afloat.shaderBufferFloat32AtomicAdd = VK_TRUE;
  if (phys_.atomic_float_add) {
    afloat.pNext = chain;
    chain = &afloat;
    exts.push_back(VK_EXT_SHADER_ATOMIC_FLOAT_EXTENSION_NAME);
  }
  // Compiler statistics of each pipeline, on request (for tuning shaders).
  VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR stats{};
  stats.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR;
  stats.pipelineExecutableInfo = VK_TRUE;
  const char* want_stats = std::getenv("LLM_VULKAN_PIPELINE_STATS");
  const bool stats_on = phys_.executable_stats && want_stats && std::strcmp(want_stats, "1") == 0;
  if (stats_on) {
    stats.pNext = chain;
    chain = &stats;
    exts.push_back(VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
  }
  dci.pNext = chain;
  dci.enabledExtensionCount = static_cast<uint32_t>(exts.size());
  dci.ppEnabledExtensionNames = exts.data();
  LLM_VK_CHECK(api.vkCreateDevice(phys_.handle, &dci, nullptr, &device_));
  load_device_api(api, device_, d_);
  if (stats_on) {
    get_executables_ = reinterpret_cast<PFN_vkGetPipelineExecutablePropertiesKHR>(
        api.vkGetDeviceProcAddr(device_, "vkGetPipelineExecutablePropertiesKHR"));
    get_statistics_ = reinterpret_cast<PFN_vkGetPipelineExecutableStatisticsKHR>(
        api.vkGetDeviceProcAddr(device_, "vkGetPipelineExecutableStatisticsKHR"));
  }
  d_.vkGetDeviceQueue(device_, phys_.compute_family, 0, &queue_);

  VkCommandPoolCreateInfo pci{};
  pci.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = phys_.compute_family;
  LLM_VK_CHECK(d_.vkCreateCommandPool(device_, &pci, nullptr, &pool_));
  VkCommandBufferAllocateInfo cai{};
  cai.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
  cai.commandPool = pool_;
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 1;
  LLM_VK_CHECK(d_.vkAllocateCommandBuffers(device_, &cai, &transfer_cb_));
  VkFenceCreateInfo fci{};
  fci.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
  if (const char* sm = std::getenv("LLM_VULKAN_SUBMIT")) submit_mode_ = std::atoi(sm) & 3;
  if (const char* sc = std::getenv("LLM_VULKAN_SMALL_COPIES")) small_copies_ = std::atoi(sc) != 0;
  for (Slot& slot : ring_) {
    LLM_VK_CHECK(d_.vkCreateFence(device_, &fci, nullptr, &slot.fence));
    LLM_VK_CHECK(d_.vkAllocateCommandBuffers(device_, &cai, &slot.cb));
    if (submit_mode_ & kSubmitTogether) {
      VkEventCreateInfo ei{};
      ei.sType = VK_STRUCTURE_TYPE_EVENT_CREATE_INFO;
      LLM_VK_CHECK(d_.vkCreateEvent(device_, &ei, nullptr, &slot.event));
    }
  }

  // Unified-memory devices (integrated GPUs, CPU drivers): device-local memory the host
  // maps, so transfers are plain copies. Discrete GPUs: device-local memory only, and
  // staged copies through host-visible memory.
  const VkMemoryPropertyFlags host =
      VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  // LLM_VULKAN_STAGING=1 takes the discrete-GPU path everywhere (to test it on lavapipe).
  const char* staging_env = std::getenv("LLM_VULKAN_STAGING");
  const bool force_staging = staging_env && std::strcmp(staging_env, "1") == 0;
  const bool integrated =
      !force_staging && (phys_.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU ||
                         phys_.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU);
  uint32_t dev_type =
      integrated ? find_type(phys_.memory, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | host) : UINT32_MAX;
  const bool unified = dev_type != UINT32_MAX;
  if (!unified) dev_type = find_type(phys_.memory, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
  if (dev_type == UINT32_MAX) dev_type = find_type(phys_.memory, 0);
  // Staging memory that the CPU caches where there is some: downloads read it.
  uint32_t host_type = find_type(phys_.memory, host | VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
  if (host_type == UINT32_MAX) host_type = find_type(phys_.memory, host);
  if (host_type == UINT32_MAX) fail("%s has no host-visible coherent memory", id().c_str());
  const VkDeviceSize block = std::max<VkDeviceSize>(
      16 * kMiB, std::min<VkDeviceSize>(256 * kMiB, phys_.device_local_bytes / 16));
  memory_ = std::make_unique<Allocator>(d_, device_, dev_type, unified, block);
  staging_memory_ = std::make_unique<Allocator>(d_, device_, host_type, true, 64 * kMiB);
  const uint32_t bar_type = find_type(phys_.memory, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | host);
  if (!unified && !force_staging && bar_type != UINT32_MAX)
    small_memory_ = std::make_unique<Allocator>(d_, device_, bar_type, true, 16 * kMiB);
  err_ = std::make_unique<Buffer>(*this, nullptr, 256, "the shader error flags", true);
  std::memset(err_->mapped(), 0, 256);
  if (StepTimes::requested() && phys_.timestamp_bits)
    step_times_ = std::make_unique<StepTimes>(*this);

  // The pipeline cache: what an earlier run of this device left on disk, if its header
  // names this device and driver.
  std::vector<char> data;
  {
    std::ifstream in(cache_path(), std::ios::binary);
    if (in) data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const size_t header = 16 + VK_UUID_SIZE;
  if (data.size() >= header) {
    uint32_t vendor = 0, device = 0;
    std::memcpy(&vendor, data.data() + 8, 4);
    std::memcpy(&device, data.data() + 12, 4);
    if (vendor != phys_.props.vendorID || device != phys_.props.deviceID ||
        std::memcmp(data.data() + 16, phys_.props.pipelineCacheUUID, VK_UUID_SIZE) != 0)
      data.clear();
  } else {
    data.clear();
  }
  VkPipelineCacheCreateInfo cci{};
  cci.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO;
  cci.initialDataSize = data.size();
  cci.pInitialData = data.empty() ? nullptr : data.data();
  if (d_.vkCreatePipelineCache(device_, &cci, nullptr, &cache_) != VK_SUCCESS) {
    cci.initialDataSize = 0;
    cci.pInitialData = nullptr;
    LLM_VK_CHECK(d_.vkCreatePipelineCache(device_, &cci, nullptr, &cache_));
  }
}

Context::~Context() {
  if (device_) d_.vkDeviceWaitIdle(device_);
  if (cache_) save_pipeline_cache();
  if (step_times_) step_times_->report();
  step_times_.reset();
  staging_.reset();
  readback_.reset();
  err_.reset();
  for (auto& [key, p] : pipelines_) {
    d_.vkDestroyPipeline(device_, p.pipeline, nullptr);
    d_.vkDestroyPipelineLayout(device_, p.layout, nullptr);
    d_.vkDestroyDescriptorSetLayout(device_, p.set_layout, nullptr);
  }
  if (cache_) d_.vkDestroyPipelineCache(device_, cache_, nullptr);
  if (copy_pool_) d_.vkDestroyDescriptorPool(device_, copy_pool_, nullptr);
  upload_ring_.reset();
  memory_.reset();
  staging_memory_.reset();
  small_memory_.reset();
  for (Slot& slot : ring_) {
    if (slot.fence) d_.vkDestroyFence(device_, slot.fence, nullptr);
    if (slot.event) d_.vkDestroyEvent(device_, slot.event, nullptr);
  }
  if (pool_) d_.vkDestroyCommandPool(device_, pool_, nullptr);
  if (device_) d_.vkDestroyDevice(device_, nullptr);
}

std::string Context::cache_path() const {
  const char* dir = std::getenv("LLMRT_CACHE");
  if (dir && *dir) return std::string(dir) + "/vulkan-pipelines.bin";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/llmrt/vulkan-pipelines.bin";
}

void Context::save_pipeline_cache() {
  size_t n = 0;
  if (d_.vkGetPipelineCacheData(device_, cache_, &n, nullptr) != VK_SUCCESS || n == 0) return;
  std::vector<char> data(n);
  if (d_.vkGetPipelineCacheData(device_, cache_, &n, data.data()) != VK_SUCCESS) return;
  // A cache that cannot be written costs only pipeline compile time next run.
  try {
    const std::string path = cache_path();
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    write_file_atomic(path, [&](std::ostream& out) { out.write(data.data(), n); });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "warning: %s: pipeline cache not saved: %s\n", id().c_str(), e.what());
  }
}

void Context::print_statistics(const std::string& name, const std::vector<int32_t>& spec,
                               VkPipeline pipeline) const {
  std::string line = "pipeline " + name + " [";
  for (size_t i = 0; i < spec.size(); i++) line += (i ? " " : "") + std::to_string(spec[i]);
  line += "]";
  VkPipelineInfoKHR pi{};
  pi.sType = VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR;
  pi.pipeline = pipeline;
  uint32_t n_exec = 0;
  if (get_executables_(device_, &pi, &n_exec, nullptr) != VK_SUCCESS) return;
  for (uint32_t e = 0; e < n_exec; e++) {
    VkPipelineExecutableInfoKHR ei{};
    ei.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR;
    ei.pipeline = pipeline;
    ei.executableIndex = e;
    uint32_t n = 0;
    if (get_statistics_(device_, &ei, &n, nullptr) != VK_SUCCESS) continue;
    std::vector<VkPipelineExecutableStatisticKHR> st(n);
    for (auto& x : st) x.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR;
    if (get_statistics_(device_, &ei, &n, st.data()) != VK_SUCCESS) continue;
    for (const auto& x : st) {
      line += std::string(", ") + x.name + " ";
      switch (x.format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
          line += x.value.b32 ? "yes" : "no";
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
          line += std::to_string(x.value.i64);
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
          line += std::to_string(x.value.u64);
          break;
        default:
          line += std::to_string(x.value.f64);
      }
    }
  }
  std::fprintf(stderr, "%s\n", line.c_str());
}

const Pipeline& Context::pipeline(const std::string& name, uint32_t n_bindings,
                                  const std::vector<int32_t>& spec) {
  auto key = std::make_pair(name, spec);
  auto it = pipelines_.find(key);
  if (it != pipelines_.end()) return it->second;
  return pipelines_.emplace(key, create_pipeline(name, n_bindings, spec)).first->second;
}

void Context::prepare_pipelines(const std::vector<PipelineRequest>& requests) {
  std::vector<const PipelineRequest*> todo;
  for (const PipelineRequest& r : requests) {
    const bool listed = std::any_of(todo.begin(), todo.end(), [&](const PipelineRequest* t) {
      return t->name == r.name && t->spec == r.spec;
    });
    if (!listed && !pipelines_.count(std::make_pair(r.name, r.spec))) todo.push_back(&r);
  }
  if (todo.empty()) return;
  // Threads take the next request in turn; what one fails with is thrown once all
  // have finished, and what the others created is kept.
  std::vector<Pipeline> made(todo.size());
  std::vector<std::exception_ptr> errors(todo.size());
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next++) < todo.size();) {
      try {
        made[i] = create_pipeline(todo[i]->name, todo[i]->n_bindings, todo[i]->spec);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  const size_t n_threads =
      std::min<size_t>(todo.size(), std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < n_threads; t++) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < todo.size(); i++)
    if (!errors[i]) pipelines_.emplace(std::make_pair(todo[i]->name, todo[i]->spec), made[i]);
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

Pipeline Context::create_pipeline(const std::string& name, uint32_t n_bindings,
                                  const std::vector<int32_t>& spec) const {
  const ShaderCode* code = vulkan_shader(name.c_str());
  if (!code) fail("vulkan backend: no shader named %s in this build", name.c_str());
  Pipeline p;
  p.name = name;
  p.n_bindings = n_bindings;
  std::vector<VkDescriptorSetLayoutBinding> binds(n_bindings);
  for (uint32_t i = 0; i < n_bindings; i++) {
    binds[i].binding = i;
    binds[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    binds[i].descriptorCount = 1;
    binds[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  }
  VkDescriptorSetLayoutCreateInfo dl{};
  dl.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO;
  dl.bindingCount = n_bindings;
  dl.pBindings = binds.data();
  LLM_VK_CHECK(d_.vkCreateDescriptorSetLayout(device_, &dl, nullptr, &p.set_layout));
  VkPushConstantRange pcr{VK_SHADER_STAGE_COMPUTE_BIT, 0, kPushBytes};
  VkPipelineLayoutCreateInfo pl{};
  pl.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO;
  pl.setLayoutCount = 1;
  pl.pSetLayouts = &p.set_layout;
  pl.pushConstantRangeCount = 1;
  pl.pPushConstantRanges = &pcr;
  LLM_VK_CHECK(d_.vkCreatePipelineLayout(device_, &pl, nullptr, &p.layout));
  VkShaderModuleCreateInfo smi{};
  smi.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
  smi.codeSize = code->bytes;
  smi.pCode = reinterpret_cast<const uint32_t*>(code->spirv);
  VkShaderModule module = VK_NULL_HANDLE;
  LLM_VK_CHECK(d_.vkCreateShaderModule(device_, &smi, nullptr, &module));
  std::vector<VkSpecializationMapEntry> entries(spec.size());
  for (size_t i = 0; i < spec.size(); i++)
    entries[i] = {static_cast<uint32_t>(i), static_cast<uint32_t>(i * 4), 4};
  VkSpecializationInfo si{static_cast<uint32_t>(spec.size()), entries.data(), spec.size() * 4,
                          spec.data()};
  VkComputePipelineCreateInfo cpi{};
  cpi.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO;
  cpi.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
  cpi.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  cpi.stage.module = module;
  cpi.stage.pName = "main";
  cpi.stage.pSpecializationInfo = spec.empty() ? nullptr : &si;
  cpi.layout = p.layout;
  const bool stats = get_executables_ && get_statistics_;
  if (stats) cpi.flags |= VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR;
  const VkResult r = d_.vkCreateComputePipelines(device_, cache_, 1, &cpi, nullptr, &p.pipeline);
  d_.vkDestroyShaderModule(device_, module, nullptr);
  if (r != VK_SUCCESS) {
    d_.vkDestroyPipelineLayout(device_, p.layout, nullptr);
    d_.vkDestroyDescriptorSetLayout(device_, p.set_layout, nullptr);
    fail("vulkan backend: creating the pipeline of shader %s failed (%s)", name.c_str(),
         result_name(r));
  }
  if (stats) print_statistics(name, spec, p.pipeline);
  g_pipelines_created++;
  return p;
}

void Context::submit(VkCommandBuffer cb, bool wait) {
  wait_idle();
  submit_in_slot(acquire_slot(), cb);
  if (wait) wait_idle();
}

size_t Context::acquire_slot() {
  const size_t i = next_slot_;
  next_slot_ = (next_slot_ + 1) % kRing;
  wait_slot(i);
  return i;
}

void Context::wait_slot(size_t i) {
  Slot& slot = ring_[i];
  if (!slot.busy) return;
  if (held(i)) send_held();
  if (slot.with >= 0) {
    Slot& w = ring_[static_cast<size_t>(slot.with)];
    if (w.busy && w.use == slot.with_use) {
      LLM_VK_CHECK(d_.vkWaitForFences(device_, 1, &w.fence, VK_TRUE, UINT64_MAX));
      w.busy = false;
    }
    slot.with = -1;
  } else {
    LLM_VK_CHECK(d_.vkWaitForFences(device_, 1, &slot.fence, VK_TRUE, UINT64_MAX));
  }
  slot.busy = false;
}

void Context::submit_in_slot(size_t i, VkCommandBuffer cb, int with, bool hold) {
  // with >= 0: that slot's open transfer goes first in the same submission.
  if (with >= 0) held_.push_back({static_cast<size_t>(with), ring_[static_cast<size_t>(with)].cb});
  held_.push_back({i, cb});
  for (size_t k = held_.size() - (with >= 0 ? 2 : 1); k < held_.size(); k++) {
    Slot& slot = ring_[held_[k].slot];
    slot.busy = true;
    slot.use++;
    slot.with = -1;
  }
  if (!hold) send_held();
}

void Context::send_held() {
  if (held_.empty()) return;
  // One submission, retired by the last slot's fence.
  std::vector<VkCommandBuffer> cbs;
  cbs.reserve(held_.size());
  for (const Held& h : held_) cbs.push_back(h.cb);
  const size_t last = held_.back().slot;
  Slot& fenced = ring_[last];
  for (size_t k = 0; k + 1 < held_.size(); k++) {
    Slot& slot = ring_[held_[k].slot];
    slot.with = static_cast<int>(last);
    slot.with_use = fenced.use;
  }
  held_.clear();
  held_steps_ = 0;
  VkSubmitInfo si{};
  si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
  si.commandBufferCount = static_cast<uint32_t>(cbs.size());
  si.pCommandBuffers = cbs.data();
  LLM_VK_CHECK(d_.vkResetFences(device_, 1, &fenced.fence));
  LLM_VK_CHECK(d_.vkQueueSubmit(queue_, 1, &si, fenced.fence));
  g_submissions++;
}

bool Context::held(size_t slot) const {
  for (const Held& h : held_)
    if (h.slot == slot) return true;
  return false;
}

void Context::set_steps_per_submission(int n) {
  steps_per_submission_ = std::clamp(n, 1, kMaxSteps);
  if (steps_per_submission_ == 1) send_held();
}

void Context::wait_idle() {
  flush_transfer();
  send_held();
  for (size_t i = 0; i < kRing; i++) wait_slot(i);
}

void Context::submit_queued(VkCommandBuffer cb) {
  // The open transfer goes in the step's submission, the step's fence for both (a
  // submission boundary costs the GPU more than a barrier); the transfer's event tells
  // the host when its downloads are done.
  int with = -1;
  if ((submit_mode_ & kSubmitTogether) && open_slot_ >= 0) {
    flush_small_copies();
    with = open_slot_;
    open_slot_ = -1;
    Slot& t = ring_[static_cast<size_t>(with)];
    end_transfer(t.cb, true, t.event);
    t.evented = true;
  } else {
    flush_transfer();
  }
  const size_t slot = acquire_slot();  // may send the held ones
  submit_in_slot(slot, cb, with, ++held_steps_ < steps_per_submission_);
}

void cmd_memory_barrier(const DeviceApi& d, VkCommandBuffer cb, VkPipelineStageFlags src_stages,
                        VkAccessFlags src_access, VkPipelineStageFlags dst_stages,
                        VkAccessFlags dst_access) {
  VkMemoryBarrier mb{};
  mb.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
  mb.srcAccessMask = src_access;
  mb.dstAccessMask = dst_access;
  d.vkCmdPipelineBarrier(cb, src_stages, dst_stages, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

VkCommandBuffer Context::open_transfer(const Span& read, const Span& write) {
  auto overlaps = [](const std::vector<Span>& spans, const Span& x) {
    for (const Span& y : spans)
      if (x.buffer && y.buffer == x.buffer && x.begin < y.end && y.begin < x.end) return true;
    return false;
  };
  if (open_slot_ >= 0) {
    // A queued command waits for the ones before it where it touches what they wrote,
    // or writes what they read (a decode step's inputs, fed token and download are
    // disjoint and go without barriers).
    const VkCommandBuffer cb = ring_[open_slot_].cb;
    if (overlaps(open_writes_, read) || overlaps(open_writes_, write) ||
        overlaps(open_reads_, write)) {
      flush_small_copies();
      cmd_memory_barrier(d_, cb, copy_stages(), copy_writes(), copy_stages(), copy_access());
      copies_since_barrier_ = false;
      open_reads_.clear();
      open_writes_.clear();
    }
    open_reads_.push_back(read);
    open_writes_.push_back(write);
    return cb;
  }
  const size_t i = acquire_slot();
  if (ring_[i].event) LLM_VK_CHECK(d_.vkResetEvent(device_, ring_[i].event));
  ring_[i].evented = false;
  ring_[i].copy_sets_used = 0;
  ring_[i].upload_used = 0;
  copies_since_barrier_ = false;
  begin_transfer(ring_[i].cb, true);
  open_slot_ = static_cast<int>(i);
  open_reads_.assign(1, read);
  open_writes_.assign(1, write);
  return ring_[i].cb;
}

VkPipelineStageFlags Context::copy_stages() const {
  return VK_PIPELINE_STAGE_TRANSFER_BIT |
         (small_copies_ ? VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT : 0);
}

VkAccessFlags Context::copy_writes() const {
  return VK_ACCESS_TRANSFER_WRITE_BIT | (small_copies_ ? VK_ACCESS_SHADER_WRITE_BIT : 0);
}

VkAccessFlags Context::copy_access() const {
  return VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
         (small_copies_ ? VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT : 0);
}

bool Context::queue_small_copy(const void* data, const Buffer* src, VkDeviceSize src_offset,
                               const Buffer& dst, VkDeviceSize dst_offset, size_t bytes) {
  const VkDeviceSize range = phys_.props.limits.maxStorageBufferRange;
  auto bindable = [&](const Buffer* b) { return !b || b->size() <= range; };
  if (!small_copies_ || bytes == 0 || bytes % 4 || src_offset % 4 || dst_offset % 4 ||
      !bindable(src) || !bindable(&dst))
    return false;
  const size_t used = open_slot_ >= 0 ? ring_[static_cast<size_t>(open_slot_)].upload_used : 0;
  if (data && used + bytes > kUploadArea) return false;
  if (!upload_ring_) {
    upload_ring_ =
        std::make_unique<Buffer>(*this, nullptr, kRing * kUploadArea, "upload ring", true);
    VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                              static_cast<uint32_t>(kRing * kCopySets * 4)};
    VkDescriptorPoolCreateInfo dpi{};
    dpi.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO;
    dpi.maxSets = static_cast<uint32_t>(kRing * kCopySets);
    dpi.poolSizeCount = 1;
    dpi.pPoolSizes = &size;
    LLM_VK_CHECK(d_.vkCreateDescriptorPool(device_, &dpi, nullptr, &copy_pool_));
    copy_pipeline_ = &pipeline("small_copies", 4, {});
    for (Slot& slot : ring_) {
      std::array<VkDescriptorSetLayout, kCopySets> layouts;
      layouts.fill(copy_pipeline_->set_layout);
      VkDescriptorSetAllocateInfo ai{};
      ai.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO;
      ai.descriptorPool = copy_pool_;
      ai.descriptorSetCount = static_cast<uint32_t>(layouts.size());
      ai.pSetLayouts = layouts.data();
      LLM_VK_CHECK(d_.vkAllocateDescriptorSets(device_, &ai, slot.copy_sets.data()));
    }
  }
  const VkBuffer src_buffer = src ? src->get() : VK_NULL_HANDLE;
  open_transfer({src_buffer, src_offset, src_offset + bytes},
                {dst.get(), dst_offset, dst_offset + bytes});
  Slot& slot = ring_[static_cast<size_t>(open_slot_)];
  // The device buffers take bindings 2 and 3; the readback memory is binding 1.
  auto binding = [&](const Buffer* b) -> int {
    if (b == readback_.get()) return 1;
    for (int k = 0; k < 2; k++)
      if (copy_dev_[k] == b) return 2 + k;
    for (int k = 0; k < 2; k++)
      if (!copy_dev_[k]) {
        copy_dev_[k] = b;
        return 2 + k;
      }
    return -1;
  };
  if (copies_.size() == kMaxSmallCopies) flush_small_copies();
  int s = src ? binding(src) : 0, t = binding(&dst);
  if (s < 0 || t < 0) {
    flush_small_copies();
    s = src ? binding(src) : 0;
    t = binding(&dst);
  }
  uint32_t src_at = static_cast<uint32_t>(src_offset / 4);
  if (data) {
    const size_t at = static_cast<size_t>(open_slot_) * kUploadArea + slot.upload_used;
    std::memcpy(upload_ring_->mapped() + at, data, bytes);
    slot.upload_used += bytes;
    src_at = static_cast<uint32_t>(at / 4);
  }
  copies_.push_back({static_cast<uint32_t>(s), src_at, static_cast<uint32_t>(t),
                     static_cast<uint32_t>(dst_offset / 4), static_cast<uint32_t>(bytes / 4)});
  return true;
}

void Context::flush_small_copies() {
  if (copies_.empty()) return;
  Slot& slot = ring_[static_cast<size_t>(open_slot_)];
  const VkCommandBuffer cb = slot.cb;
  auto buffer_of = [&](uint32_t b) {
    return b == 0 ? upload_ring_->get() : b == 1 ? readback_->get() : copy_dev_[b - 2]->get();
  };
  if (slot.copy_sets_used == kCopySets) {
    // Out of descriptor sets: the same copies as commands.
    for (const SmallCopy& c : copies_) {
      const VkBufferCopy r{VkDeviceSize{c.src_at} * 4, VkDeviceSize{c.dst_at} * 4,
                           VkDeviceSize{c.words} * 4};
      d_.vkCmdCopyBuffer(cb, buffer_of(c.src), buffer_of(c.dst), 1, &r);
    }
  } else {
    // Dispatches of disjoint copies bind the same buffers whole: a barrier between them
    // keeps the synchronization validation layer, which cannot see which words each
    // touches, content (model loading's many buffers; a decode step has one).
    if (copies_since_barrier_)
      cmd_memory_barrier(d_, cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                         VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    copies_since_barrier_ = true;
    const VkDescriptorSet set = slot.copy_sets[slot.copy_sets_used++];
    // Bindings no copy names get a buffer that exists (the upload ring, or dev0 twice).
    const VkBuffer ring = upload_ring_->get();
    const VkBuffer dev0 = copy_dev_[0] ? copy_dev_[0]->get() : ring;
    const VkBuffer bound[4] = {ring, readback_ ? readback_->get() : ring, dev0,
                               copy_dev_[1] ? copy_dev_[1]->get() : dev0};
    VkDescriptorBufferInfo infos[4];
    VkWriteDescriptorSet writes[4];
    for (uint32_t b = 0; b < 4; b++) {
      infos[b] = {bound[b], 0, VK_WHOLE_SIZE};
      writes[b] = {};
      writes[b].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
      writes[b].dstSet = set;
      writes[b].dstBinding = b;
      writes[b].descriptorCount = 1;
      writes[b].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
      writes[b].pBufferInfo = &infos[b];
    }
    d_.vkUpdateDescriptorSets(device_, 4, writes, 0, nullptr);
    const Pipeline& pl = *copy_pipeline_;
    uint32_t push[1 + 5 * kMaxSmallCopies] = {static_cast<uint32_t>(copies_.size())};
    for (size_t k = 0; k < copies_.size(); k++) {
      const SmallCopy& c = copies_[k];
      const uint32_t op[5] = {c.src, c.src_at, c.dst, c.dst_at, c.words};
      std::memcpy(push + 1 + 5 * k, op, sizeof op);
    }
    d_.vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pl.pipeline);
    d_.vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pl.layout, 0, 1, &set, 0,
                               nullptr);
    d_.vkCmdPushConstants(cb, pl.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof push, push);
    d_.vkCmdDispatch(cb, 1, 1, 1);
  }
  copies_.clear();
  copy_dev_ = {};
}

void Context::flush_transfer() {
  if (open_slot_ < 0) return;
  flush_small_copies();
  const size_t i = static_cast<size_t>(open_slot_);
  open_slot_ = -1;
  end_transfer(ring_[i].cb, true);
  submit_in_slot(i, ring_[i].cb);
}

void Context::begin_transfer(VkCommandBuffer cb, bool queued) {
  LLM_VK_CHECK(d_.vkResetCommandBuffer(cb, 0));
  VkCommandBufferBeginInfo bi{};
  bi.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  LLM_VK_CHECK(d_.vkBeginCommandBuffer(cb, &bi));
  // After everything submitted before (programs read and write what transfers touch).
  if (queued && light_barriers())
    cmd_memory_barrier(
        d_, cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
        VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT, copy_stages(), copy_access());
  else
    cmd_memory_barrier(d_, cb, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_ACCESS_MEMORY_WRITE_BIT,
                       VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
                       VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT);
  if (queued && step_times_) step_times_->transfer_begin(cb);
}

void Context::end_transfer(VkCommandBuffer cb, bool queued, VkEvent set) {
  if (queued && step_times_) step_times_->transfer_end(cb);
  // Before everything submitted after, and visible to the host (staging, readback).
  if (queued && light_barriers())
    cmd_memory_barrier(d_, cb, copy_stages(), copy_writes(),
                       VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT |
                           VK_PIPELINE_STAGE_TRANSFER_BIT,
                       VK_ACCESS_HOST_READ_BIT | VK_ACCESS_SHADER_READ_BIT |
                           VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                           VK_ACCESS_TRANSFER_WRITE_BIT);
  else
    cmd_memory_barrier(
        d_, cb, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_ACCESS_MEMORY_WRITE_BIT,
        VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
        VK_ACCESS_HOST_READ_BIT | VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT);
  if (set) d_.vkCmdSetEvent(cb, set, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT);
  LLM_VK_CHECK(d_.vkEndCommandBuffer(cb));
}

bool Context::queue_upload(Buffer& dst, VkDeviceSize offset, const void* src, size_t bytes) {
  if (bytes == 0) return true;
  if (bytes > 65536 || bytes % 4 || offset % 4) return false;
  if (queue_small_copy(src, nullptr, 0, dst, offset, bytes)) return true;
  d_.vkCmdUpdateBuffer(open_transfer({}, {dst.get(), offset, offset + bytes}), dst.get(), offset,
                       bytes, src);
  return true;
}

void Context::queue_copy(Buffer& dst, VkDeviceSize dst_offset, const Buffer& src,
                         VkDeviceSize src_offset, size_t bytes) {
  if (!bytes) return;
  if (queue_small_copy(nullptr, &src, src_offset, dst, dst_offset, bytes)) return;
  const VkBufferCopy c{src_offset, dst_offset, bytes};
  d_.vkCmdCopyBuffer(open_transfer({src.get(), src_offset, src_offset + bytes},
                                   {dst.get(), dst_offset, dst_offset + bytes}),
                     src.get(), dst.get(), 1, &c);
}

uint64_t Context::queue_download(const Buffer& src, VkDeviceSize offset, void* dst, size_t bytes) {
  constexpr size_t kReadbackBytes = size_t{1} << 16;
  // A ring: downloads finish in order, and a host several steps ahead always has some
  // pending.
  size_t at = (readback_used_ + 15) / 16 * 16;
  if (at + bytes > kReadbackBytes) at = 0;
  bool free = bytes <= kReadbackBytes;
  for (const Download& d : downloads_)
    if (d.bytes && at < d.at + d.bytes && d.at < at + bytes) free = false;
  if (!free) {
    copy_to_host(src, offset, dst, bytes);  // waits for everything queued before
    return 0;
  }
  if (!readback_)
    readback_ = std::make_unique<Buffer>(*this, nullptr, kReadbackBytes, "readback", true);
  if (!bytes) {
    open_transfer({}, {});
  } else if (!queue_small_copy(nullptr, &src, offset, *readback_, at, bytes)) {
    const VkBufferCopy c{offset, at, bytes};
    d_.vkCmdCopyBuffer(
        open_transfer({src.get(), offset, offset + bytes}, {readback_->get(), at, at + bytes}),
        src.get(), readback_->get(), 1, &c);
  }
  readback_used_ = at + bytes;
  const size_t slot = static_cast<size_t>(open_slot_);
  downloads_.push_back({slot, ring_[slot].use + 1, at, dst, bytes});
  return ++downloads_started_;
}

void Context::finish_download(uint64_t ticket) {
  if (ticket == 0) return;
  if (downloads_.empty() || ticket != downloads_finished_ + 1)
    fail("vulkan backend: download %llu finished out of order", (unsigned long long)ticket);
  const Download dl = downloads_.front();
  downloads_.pop_front();
  downloads_finished_++;
  if (open_slot_ == static_cast<int>(dl.slot)) flush_transfer();
  if (held(dl.slot)) send_held();
  Slot& slot = ring_[dl.slot];
  // The slot has carried later submissions only after its fence was waited for.
  if (slot.busy && slot.use == dl.use) {
    if (slot.evented) {
      // Submitted with the step after it: done when its event is set. The host polls
      // (the next step is already queued, so a few microseconds late costs nothing).
      VkResult r;
      while ((r = d_.vkGetEventStatus(device_, slot.event)) == VK_EVENT_RESET)
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      if (r != VK_EVENT_SET) LLM_VK_CHECK(r);
    } else {
      wait_slot(dl.slot);
    }
  }
  if (dl.bytes) std::memcpy(dl.dst, readback_->mapped() + dl.at, dl.bytes);
  if (downloads_.empty()) readback_used_ = 0;
}

void Context::record_transfer(const std::function<void(VkCommandBuffer)>& rec) {
  wait_idle();
  begin_transfer(transfer_cb_);
  rec(transfer_cb_);
  end_transfer(transfer_cb_);
  submit(transfer_cb_, true);
}

void Context::copy_to_device(Buffer& dst, VkDeviceSize offset, const void* src, size_t bytes) {
  if (!bytes) return;
  wait_idle();
  if (dst.mapped()) {
    std::memcpy(dst.mapped() + offset, src, bytes);
    return;
  }
  if (!staging_)
    staging_ = std::make_unique<Buffer>(*this, nullptr, kStagingBytes, "staging", true);
  const uint8_t* s = static_cast<const uint8_t*>(src);
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min(kStagingBytes, bytes - done);
    std::memcpy(staging_->mapped(), s + done, n);
    VkBufferCopy c{0, offset + done, n};
    record_transfer(
        [&](VkCommandBuffer cb) { d_.vkCmdCopyBuffer(cb, staging_->get(), dst.get(), 1, &c); });
    done += n;
  }
}

void Context::copy_to_host(const Buffer& src, VkDeviceSize offset, void* dst, size_t bytes) {
  wait_idle();
  if (!bytes) return;
  if (src.mapped() && !src.in_bar()) {
    std::memcpy(dst, src.mapped() + offset, bytes);
    return;
  }
  if (!staging_)
    staging_ = std::make_unique<Buffer>(*this, nullptr, kStagingBytes, "staging", true);
  uint8_t* d = static_cast<uint8_t*>(dst);
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min(kStagingBytes, bytes - done);
    VkBufferCopy c{offset + done, 0, n};
    record_transfer(
        [&](VkCommandBuffer cb) { d_.vkCmdCopyBuffer(cb, src.get(), staging_->get(), 1, &c); });
    std::memcpy(d + done, staging_->mapped(), n);
    done += n;
  }
}

void Context::fill_zero(Buffer& dst, VkDeviceSize offset, size_t bytes) {
  if (!bytes) return;
  wait_idle();
  if (dst.mapped()) {
    std::memset(dst.mapped() + offset, 0, bytes);
    return;
  }
  if (offset % 4 == 0 && bytes % 4 == 0) {
    record_transfer(
        [&](VkCommandBuffer cb) { d_.vkCmdFillBuffer(cb, dst.get(), offset, bytes, 0); });
    return;
  }
  const std::vector<uint8_t> zeros(bytes, 0);
  copy_to_device(dst, offset, zeros.data(), bytes);
}

void Context::raise_device_errors() {
  uint32_t bits = 0;
  std::memcpy(&bits, err_->mapped(), 4);
  if (!bits) return;
  std::memset(err_->mapped(), 0, 4);
  std::string what;
  auto add = [&](uint32_t bit, const char* text) {
    if (!(bits & bit)) return;
    if (!what.empty()) what += "; ";
    what += text;
  };
  add(1, "get_rows: a row id outside the table");
  add(2, "kv_append: a cache slot outside the cache");
  add(4, "attention: a sequence id or position outside the block table");
  add(8, "attention: a block table entry outside the cache");
  fail("%s: a shader was given bad indices (%s); their results were left out", id().c_str(),
       what.c_str());
}

// ---- Buffers -------------------------------------------------------------------------------

Buffer::Buffer(Context& ctx, std::shared_ptr<Context> keep, size_t bytes, const std::string& what,
               bool staging)
    : DeviceBuffer(bytes),
      ctx_(ctx),
      keep_(std::move(keep)),
      allocator_(staging ? &ctx.staging_memory() : &ctx.memory()) {
  const DeviceApi& d = ctx.d();
  VkBufferCreateInfo bci{};
  bci.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
  // Buffers are rounded up to whole words: shaders read 16-bit data as uints.
  bci.size = std::max<VkDeviceSize>(4, (bytes + 3) / 4 * 4);
  bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
              VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  auto out_of_memory = [&](VkResult r) {
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
      fail("out of device memory on %s allocating %zu MiB for %s (%s, device-local memory %zu MiB)",
           ctx.id().c_str(), static_cast<size_t>((bytes + kMiB - 1) / kMiB), what.c_str(),
           result_name(r), static_cast<size_t>(ctx.phys().device_local_bytes / kMiB));
  };
  const VkResult rc = d.vkCreateBuffer(ctx.device(), &bci, nullptr, &buffer_);
  out_of_memory(rc);
  check(rc, "vkCreateBuffer");
  VkMemoryRequirements req;
  d.vkGetBufferMemoryRequirements(ctx.device(), buffer_, &req);
  // Small buffers in mapped device memory where there is some (it may run out: then
  // ordinary device memory).
  VkResult r = VK_ERROR_OUT_OF_DEVICE_MEMORY;
  Allocator* small = ctx.small_memory();
  if (!staging && small && bytes <= kSmallBuffer && (req.memoryTypeBits & (1u << small->type()))) {
    r = small->allocate(req.size, req.alignment, &alloc_);
    if (r == VK_SUCCESS) allocator_ = small;
  }
  if (r != VK_SUCCESS) {
    if (!(req.memoryTypeBits & (1u << allocator_->type()))) {
      d.vkDestroyBuffer(ctx.device(), buffer_, nullptr);
      fail("%s: buffers cannot live in memory type %u (allowed types 0x%x)", ctx.id().c_str(),
           allocator_->type(), req.memoryTypeBits);
    }
    r = allocator_->allocate(req.size, req.alignment, &alloc_);
  }
  if (r != VK_SUCCESS) {
    d.vkDestroyBuffer(ctx.device(), buffer_, nullptr);
    out_of_memory(r);
    check(r, "vkAllocateMemory");
  }
  const VkResult rb =
      d.vkBindBufferMemory(ctx.device(), buffer_, allocator_->memory(alloc_.block), alloc_.offset);
  if (rb != VK_SUCCESS) {
    allocator_->release(alloc_);
    d.vkDestroyBuffer(ctx.device(), buffer_, nullptr);
    check(rb, "vkBindBufferMemory");
  }
}

Buffer::~Buffer() {
  // Work that may still read this buffer finishes first (errors cannot leave here).
  try {
    ctx_.wait_idle();
  } catch (const std::exception&) {
  }
  ctx_.d().vkDestroyBuffer(ctx_.device(), buffer_, nullptr);
  allocator_->release(alloc_);
}

}  // namespace llm::vk
