// StepTimes (LLM_VULKAN_STEP_TIMES=1, a measuring aid): where a queued decode token's
// GPU time goes between the step's dispatches and the transfer submission before it.
//
// Each queued transfer command buffer (the step's inputs, the fed token, the download of
// the id before) writes a timestamp after its leading barrier and one before its end,
// and copies the two timestamps the step before it wrote (after its leading barrier and
// at its end) into host memory. At exit the medians of the four intervals of a token go
// to stderr: the transfer, from it to the step's first dispatch, the step, and from the
// step's end to the next transfer. The step's queries are reset by the transfer before
// it, so a step run without one (a prefill, a synchronous step) writes them unreset:
// the validation layer reports that, and such steps are not counted.
#pragma once

#include <cstdint>
#include <memory>

#include "backends/vulkan/vulkan_api.h"

namespace llm {
namespace vk {

class Buffer;
class Context;

class StepTimes {
 public:
  explicit StepTimes(Context& ctx);
  ~StepTimes();
  StepTimes(const StepTimes&) = delete;
  StepTimes& operator=(const StepTimes&) = delete;

  // Whether LLM_VULKAN_STEP_TIMES=1 asks for it.
  static bool requested();

  // In a step's command buffer: after its leading barrier (end = false) and at its end.
  void mark_step(VkCommandBuffer cb, bool end) const;
  // In a queued transfer command buffer: after its leading barrier, and before its end.
  void transfer_begin(VkCommandBuffer cb);
  void transfer_end(VkCommandBuffer cb);
  // Prints the medians (stderr). Call once everything has finished.
  void report() const;

 private:
  static constexpr uint32_t kEntries = 4096;  // transfers kept (the last ones)
  Context& ctx_;
  VkQueryPool pool_ = VK_NULL_HANDLE;  // 0, 1: the step; 2 + 2k, 3 + 2k: transfer k
  std::unique_ptr<Buffer> steps_;      // per transfer: the step before (value, availability) x 2
  uint64_t transfers_ = 0;             // transfers begun
};

}  // namespace vk
}  // namespace llm
