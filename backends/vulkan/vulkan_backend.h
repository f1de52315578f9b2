// The Vulkan backend: the op set as GLSL compute shaders (shaders/*.comp), a step
// recorded once into a command buffer and replayed.
#pragma once

#include <memory>

#include "core/backend.h"

namespace llm {

// device_index: "vulkan:N" (enumeration order); -1 picks the best device (discrete >
// integrated > virtual > cpu). Throws llm::Error when there is none or it cannot be
// initialised.
std::unique_ptr<Backend> make_vulkan_backend(int device_index = -1);

// The index make_vulkan_backend(-1) takes, and whether it is a CPU-type device
// (lavapipe); -1 when there is no Vulkan device. Never throws.
struct VulkanBest {
  int index = -1;
  bool cpu_type = false;
};
VulkanBest vulkan_best_device();

// Errors the validation layer reported so far (LLM_VULKAN_VALIDATION=1).
int vulkan_validation_errors();

// Compute pipelines created so far (all devices): what a step compiles on the fly shows.
int vulkan_pipelines_created();
// Queue submissions made so far (all devices): how queued steps were batched shows.
int vulkan_submissions();

}  // namespace llm
