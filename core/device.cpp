#include "core/device.h"

#include <cstdlib>

#include "core/error.h"

namespace llm {

DeviceSpec parse_device_spec(const std::string& text) {
  DeviceSpec spec;
  const size_t colon = text.find(':');
  spec.kind = text.substr(0, colon);
  const bool known =
      spec.kind == "auto" || spec.kind == "cpu" || spec.kind == "cuda" || spec.kind == "vulkan";
  bool ok = known;
  if (ok && colon != std::string::npos) {
    const std::string idx = text.substr(colon + 1);
    char* end = nullptr;
    const long v = std::strtol(idx.c_str(), &end, 10);
    ok = !idx.empty() && *end == '\0' && v >= 0 && v < 1024 && spec.kind != "auto" &&
         spec.kind != "cpu";
    spec.index = static_cast<int>(v);
  }
  if (!ok) fail("invalid device '%s' (expected auto, cpu, cuda[:N] or vulkan[:N])", text.c_str());
  return spec;
}

}  // namespace llm
