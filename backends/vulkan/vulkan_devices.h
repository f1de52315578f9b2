// Enumeration of Vulkan physical devices. The loader (libvulkan.so.1) is opened
// at run time so that the binary also starts on machines without it.
#pragma once

#include <vector>

#include "core/backend.h"

namespace llm {

// In enumeration order ("vulkan:N" is the N-th); the type (discrete-gpu ... cpu),
// device-local memory, and in details the API version, subgroup size, fp16 and
// cooperative-matrix support. Empty when there is no loader or no device (never throws).
std::vector<DeviceInfo> vulkan_list_devices();

}  // namespace llm
