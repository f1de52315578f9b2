// The compute shaders of shaders/*.comp as SPIR-V, compiled by glslc at build time
// and embedded in the binary (backends/vulkan/embed_spirv.cmake).
#pragma once

#include <cstddef>

namespace llm::vk {

struct ShaderCode {
  const char* name;            // file name without .comp, e.g. "matmul_gemv"
  const unsigned char* spirv;  // 4-byte aligned
  size_t bytes;
};

// nullptr when there is no shader of that name.
const ShaderCode* vulkan_shader(const char* name);

}  // namespace llm::vk
