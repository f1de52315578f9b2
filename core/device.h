// Parsing of --device values: auto | cpu | cuda[:N] | vulkan[:N].
#pragma once

#include <string>

namespace llm {

struct DeviceSpec {
  std::string kind;  // "auto", "cpu", "cuda", "vulkan"
  int index = -1;    // -1: the first / best of that kind
};

// Throws llm::Error with the accepted forms for anything else.
DeviceSpec parse_device_spec(const std::string& text);

}  // namespace llm
