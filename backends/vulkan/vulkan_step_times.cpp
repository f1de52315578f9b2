// StepTimes: see vulkan_step_times.h.
#include "backends/vulkan/vulkan_step_times.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backends/vulkan/vulkan_context.h"

namespace llm {
namespace vk {

bool StepTimes::requested() {
  const char* v = std::getenv("LLM_VULKAN_STEP_TIMES");
  return v && std::strcmp(v, "1") == 0;
}

StepTimes::StepTimes(Context& ctx) : ctx_(ctx) {
  VkQueryPoolCreateInfo qi{};
  qi.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO;
  qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
  qi.queryCount = 2 + 2 * kEntries;
  LLM_VK_CHECK(ctx.d().vkCreateQueryPool(ctx.device(), &qi, nullptr, &pool_));
  steps_ = std::make_unique<Buffer>(ctx, nullptr, kEntries * 4 * sizeof(uint64_t),
                                    "the step timestamps", true);
  std::memset(steps_->mapped(), 0, kEntries * 4 * sizeof(uint64_t));
}

StepTimes::~StepTimes() {
  if (pool_) ctx_.d().vkDestroyQueryPool(ctx_.device(), pool_, nullptr);
}

void StepTimes::mark_step(VkCommandBuffer cb, bool end) const {
  ctx_.d().vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool_, end ? 1 : 0);
}

void StepTimes::transfer_begin(VkCommandBuffer cb) {
  const DeviceApi& d = ctx_.d();
  const uint32_t k = static_cast<uint32_t>(transfers_ % kEntries);
  // The step before (if any ran since the last transfer: availability says), then the
  // queries reset for the next one.
  if (transfers_ > 0)
    d.vkCmdCopyQueryPoolResults(cb, pool_, 0, 2, steps_->get(), k * 4 * sizeof(uint64_t),
                                2 * sizeof(uint64_t),
                                VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WITH_AVAILABILITY_BIT);
  d.vkCmdResetQueryPool(cb, pool_, 0, 2);
  d.vkCmdResetQueryPool(cb, pool_, 2 + 2 * k, 2);
  d.vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool_, 2 + 2 * k);
  transfers_++;
}

void StepTimes::transfer_end(VkCommandBuffer cb) {
  const uint32_t k = static_cast<uint32_t>((transfers_ - 1) % kEntries);
  ctx_.d().vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool_, 3 + 2 * k);
}

void StepTimes::report() const {
  const uint64_t n = std::min<uint64_t>(transfers_, kEntries);
  if (n < 3) return;
  const DeviceApi& d = ctx_.d();
  std::vector<uint64_t> tr(4 * kEntries, 0);  // (begin, avail, end, avail) per transfer
  d.vkGetQueryPoolResults(ctx_.device(), pool_, 2, 2 * kEntries, tr.size() * sizeof(uint64_t),
                          tr.data(), 2 * sizeof(uint64_t),
                          VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WITH_AVAILABILITY_BIT);
  const uint64_t* st = reinterpret_cast<const uint64_t*>(steps_->mapped());
  const double us = ctx_.phys().props.limits.timestampPeriod * 1e-3;
  std::vector<double> xfer, before, step, after, token;
  // Transfer k, then the step whose timestamps transfer k + 1 copied, then transfer k + 1.
  for (uint64_t i = transfers_ - n; i + 1 < transfers_; i++) {
    const uint64_t k = i % kEntries, k1 = (i + 1) % kEntries;
    const uint64_t* t0 = &tr[4 * k];
    const uint64_t* t1 = &tr[4 * k1];
    const uint64_t* s = &st[4 * k1];
    if (!t0[1] || !t0[3] || !t1[1] || !s[1] || !s[3]) continue;
    xfer.push_back(static_cast<double>(t0[2] - t0[0]) * us);
    before.push_back(static_cast<double>(s[0] - t0[2]) * us);
    step.push_back(static_cast<double>(s[2] - s[0]) * us);
    after.push_back(static_cast<double>(t1[0] - s[2]) * us);
    token.push_back(static_cast<double>(t1[0] - t0[0]) * us);
  }
  if (token.empty()) return;
  auto median = [](std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  std::fprintf(stderr,
               "%s: step times over %zu transfers + steps (medians, us): transfer %.2f, "
               "to the step %.2f, step %.2f, to the next transfer %.2f; all %.2f\n",
               ctx_.id().c_str(), token.size(), median(xfer), median(before), median(step),
               median(after), median(token));
}

}  // namespace vk
}  // namespace llm
