// The backends compiled into this build: device listing, `auto` selection and
// creation of a Backend from a --device value.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"

namespace llm {

struct DeviceEntry {
  DeviceInfo info;
  bool can_run_models = false;  // false while a backend only enumerates devices
};

// Every device of every backend in this build, CPU last.
std::vector<DeviceEntry> list_devices();
// The id that --device auto resolves to ("cuda:0", "vulkan:0" or "cpu").
std::string auto_device_id();
// Creates the backend for a --device value; throws llm::Error when the device
// does not exist or its backend is not in this build.
std::unique_ptr<Backend> create_backend(const std::string& device, int cpu_threads = 0);
// Backend names compiled in, e.g. {"cpu", "cuda", "vulkan"}.
std::vector<std::string> compiled_backends();

}  // namespace llm
