// The plan of a step's dispatches for the Vulkan backend (VulkanBackend::compile): for
// each bound node in order, the dispatch that computes it with the nodes after it that
// vulkan_fusion.h lets it take over, and a quantize_x before it or a reduce after it
// where needed, each with its pipeline, bindings, push constants and grid.
// vulkan_program.h records them.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backends/vulkan/vulkan_context.h"
#include "backends/vulkan/vulkan_program.h"
#include "core/backend.h"

namespace llm {
namespace vk {

// The attention shader's MAX_D (the backend's op check refuses larger heads).
constexpr int kAttentionMaxHeadDim = 1024;

// The backend's choices that the plan follows.
struct PlanSettings {
  bool coop = false;                 // many-token matmuls on the tensor-core GEMM
  int64_t coop_gemv_max_tokens = 4;  // ... and the most tokens the GEMVs take then
  bool int_dot = false;              // quantized GEMVs through integer dot products
  bool shared_x = false;             // ... with x's planes in shared memory
  uint32_t persist_wgs = 0;          // ... on a fixed grid of this many workgroups (0: one pass)
  uint32_t gemv_threads = 0;         // ... in workgroups of this size (0: chosen per matrix)
  uint32_t persist_tpr = 0;          // ... threads a task on the fixed grid (0: a subgroup)
  uint32_t units = 1;                // the device's multiprocessors (compute units)
  int ffn_down = 0;                  // down and its Add inside gate/up: 1 atomics, 2 parts
  bool ffn_next_norm = false;        // ... 1 with the next RmsNorm's rounding too
  int attn_o = 0;  // o and its Add inside the decode attention's grid: 1; 2 the next norm too
};

// A step's dispatches in order, and the buffers of their own (scratch) that they use.
struct Plan {
  std::vector<Recorded> dispatches;
  std::vector<std::shared_ptr<Buffer>> keep;
};
// backend: the one compiling (its check_bound() for each node a dispatch computes).
Plan plan_dispatches(const Backend& backend, const std::shared_ptr<Context>& ctx,
                     const std::vector<BoundNode>& nodes, const PlanSettings& settings);

}  // namespace vk
}  // namespace llm
