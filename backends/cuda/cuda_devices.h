// Enumeration of CUDA devices through the CUDA runtime.
#pragma once

#include <vector>

#include "core/backend.h"

namespace llm {

// Empty when there is no driver or no device (never throws).
std::vector<DeviceInfo> cuda_list_devices();

}  // namespace llm
