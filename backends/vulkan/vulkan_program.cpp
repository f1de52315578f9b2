// VulkanProgram: see vulkan_program.h.
#include "backends/vulkan/vulkan_program.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>

#include "backends/vulkan/vulkan_step_times.h"
#include "core/error.h"
#include "core/trace.h"

namespace llm {
namespace vk {

namespace {

// The split count a decode attention takes for a context of `keys` with one split per
// split_keys of it: rounded up to a multiple of 4 (few recordings and pipelines);
// callers cap it at the planned count.
uint32_t splits_for_keys(int64_t keys, uint32_t split_keys) {
  int64_t n = std::max<int64_t>(1, (keys + split_keys - 1) / split_keys);
  if (n > 2) n = (n + 3) / 4 * 4;
  return static_cast<uint32_t>(std::min<int64_t>(n, UINT32_MAX));
}

bool any_overlap(const std::vector<Region>& a, const std::vector<Region>& b) {
  for (const Region& x : a)
    for (const Region& y : b)
      if (x.overlaps(y)) return true;
  return false;
}

class VulkanProgram final : public Program {
 public:
  // keep: buffers of this program's own (scratch) that dispatches use.
  VulkanProgram(std::shared_ptr<Context> ctx, std::vector<Recorded> dispatches,
                std::vector<std::shared_ptr<Buffer>> keep)
      : ctx_(std::move(ctx)), ds_(std::move(dispatches)), keep_(std::move(keep)) {
    // First: a pipeline that fails to compile then throws before this holds any handle.
    prepare_split_pipelines();
    const DeviceApi& d = ctx_->d();
    const VkDevice dev = ctx_->device();
    uint32_t n_desc = 0;
    for (const Recorded& x : ds_) n_desc += static_cast<uint32_t>(x.bindings.size());
    if (!ds_.empty()) {
      VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, n_desc};
      VkDescriptorPoolCreateInfo dpi{};
      dpi.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO;
      dpi.maxSets = static_cast<uint32_t>(ds_.size());
      dpi.poolSizeCount = 1;
      dpi.pPoolSizes = &size;
      LLM_VK_CHECK(d.vkCreateDescriptorPool(dev, &dpi, nullptr, &pool_));
    }
    std::vector<VkDescriptorBufferInfo> infos(n_desc);
    std::vector<VkWriteDescriptorSet> writes;
    size_t k = 0;
    for (Recorded& x : ds_) {
      VkDescriptorSetAllocateInfo ai{};
      ai.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO;
      ai.descriptorPool = pool_;
      ai.descriptorSetCount = 1;
      ai.pSetLayouts = &x.pipeline->set_layout;
      LLM_VK_CHECK(d.vkAllocateDescriptorSets(dev, &ai, &x.set));
      for (size_t b = 0; b < x.bindings.size(); b++, k++) {
        infos[k] = {x.bindings[b].buffer->get(), x.bindings[b].offset, x.bindings[b].range};
        VkWriteDescriptorSet w{};
        w.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
        w.dstSet = x.set;
        w.dstBinding = static_cast<uint32_t>(b);
        w.descriptorCount = 1;
        w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
        w.pBufferInfo = &infos[k];
        writes.push_back(w);
      }
    }
    // A barrier goes before a dispatch that reads or writes what a dispatch since the
    // last barrier wrote, or writes what one read; independent dispatches (q/k/v,
    // gate/up) run without one between them.
    std::vector<Region> pending_r, pending_w;
    for (Recorded& x : ds_) {
      x.barrier_before = any_overlap(x.reads, pending_w) || any_overlap(x.writes, pending_w) ||
                         any_overlap(x.writes, pending_r);
      if (x.barrier_before) {
        pending_r.clear();
        pending_w.clear();
      }
      pending_r.insert(pending_r.end(), x.reads.begin(), x.reads.end());
      pending_w.insert(pending_w.end(), x.writes.begin(), x.writes.end());
    }
    if (!writes.empty())
      d.vkUpdateDescriptorSets(dev, static_cast<uint32_t>(writes.size()), writes.data(), 0,
                               nullptr);
    for (const Recorded& x : ds_)
      if (x.splits.max > splits_max_) {
        splits_max_ = x.splits.max;
        split_keys_ = x.splits.keys;
      }
    cb_ = record(false);
  }

  ~VulkanProgram() override {
    try {
      ctx_->wait_idle();
    } catch (const std::exception&) {
    }
    if (profile_runs_ > 0) print_profile();
    const DeviceApi& d = ctx_->d();
    const VkDevice dev = ctx_->device();
    for (VkCommandBuffer cb : {cb_, cb_profiled_})
      if (cb) d.vkFreeCommandBuffers(dev, ctx_->command_pool(), 1, &cb);
    for (const auto& [n, cb] : by_splits_)
      d.vkFreeCommandBuffers(dev, ctx_->command_pool(), 1, &cb);
    if (queries_) d.vkDestroyQueryPool(dev, queries_, nullptr);
    if (pool_) d.vkDestroyDescriptorPool(dev, pool_, nullptr);
  }
  VulkanProgram(const VulkanProgram&) = delete;
  VulkanProgram& operator=(const VulkanProgram&) = delete;

  void run() override {
    if (!profile_) return ctx_->submit_queued(splits_next_ ? with_splits(splits_next_) : cb_);
    // LLM_VULKAN_PROFILE=1: every run timed per dispatch, a summary at destruction.
    const std::vector<double> ms = run_profiled();
    if (totals_.empty()) totals_.assign(ds_.size(), 0.0);
    for (size_t i = 0; i < ms.size(); i++) totals_[i] += ms[i];
    profile_runs_++;
  }

  std::vector<Program::Dispatch> dispatches() const override {
    std::vector<Program::Dispatch> out;
    for (const Recorded& x : ds_) out.push_back({x.label, x.nodes});
    return out;
  }

  // A context of `keys` takes one split per split_keys_ of it: rounded up to a
  // multiple of 4 (few recordings), as planned where that is no fewer.
  void set_context_used(int64_t keys) override {
    if (splits_max_ == 0) return;
    const uint32_t n = splits_for_keys(keys, split_keys_);
    splits_next_ = n < splits_max_ ? n : 0;
  }

  std::string profile_method() const override {
    return ctx_->phys().timestamp_bits
               ? "timestamp queries between the dispatches of a second recording of the step"
               : "";
  }

  // Times the planned recording (every split a decode attention was planned with), not
  // the one set_context_used picks for run(): the results are the same.
  std::vector<double> run_profiled() override {
    const PhysicalInfo& ph = ctx_->phys();
    if (ph.timestamp_bits == 0 || ds_.empty()) {
      run();
      return {};
    }
    const DeviceApi& d = ctx_->d();
    const uint32_t n = static_cast<uint32_t>(ds_.size()) + 1;
    if (!queries_) {
      VkQueryPoolCreateInfo qi{};
      qi.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO;
      qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
      qi.queryCount = n;
      LLM_VK_CHECK(d.vkCreateQueryPool(ctx_->device(), &qi, nullptr, &queries_));
      cb_profiled_ = record(true);
    }
    ctx_->submit(cb_profiled_, true);
    std::vector<uint64_t> ts(n);
    LLM_VK_CHECK(d.vkGetQueryPoolResults(ctx_->device(), queries_, 0, n, n * sizeof(uint64_t),
                                         ts.data(), sizeof(uint64_t),
                                         VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT));
    const uint64_t mask =
        ph.timestamp_bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << ph.timestamp_bits) - 1;
    const double ms_per_tick = ph.props.limits.timestampPeriod * 1e-6;
    std::vector<double> ms(ds_.size());
    for (size_t i = 0; i < ds_.size(); i++)
      ms[i] = static_cast<double>((ts[i + 1] - ts[i]) & mask) * ms_per_tick;
    return ms;
  }

 private:
  // The pipelines of every split count set_context_used can pick, created now and in
  // parallel (Context::prepare_pipelines drops the repeats): created when a context first
  // grows past a count, each would stall that step (7b on the H100: decode 115 tok/s
  // instead of 287 over 256 tokens).
  void prepare_split_pipelines() {
    std::vector<Context::PipelineRequest> requests;
    for (const Recorded& x : ds_) {
      if (x.splits.max == 0) continue;
      for (int64_t keys = 1;; keys += std::max<uint32_t>(1, x.splits.keys)) {
        const uint32_t n = splits_for_keys(keys, x.splits.keys);
        if (n >= x.splits.max) break;
        std::vector<int32_t> spec = x.splits.spec;
        spec[x.splits.spec_index] = static_cast<int32_t>(n);
        requests.push_back({x.splits.shader, static_cast<uint32_t>(x.bindings.size()), spec});
      }
    }
    ctx_->prepare_pipelines(requests);
  }

  // The step recorded with `n` splits (at most each dispatch's planned count), once.
  VkCommandBuffer with_splits(uint32_t n) {
    auto it = by_splits_.find(n);
    if (it == by_splits_.end()) it = by_splits_.emplace(n, record(false, n)).first;
    return it->second;
  }

  // The whole step in one command buffer: dispatches in order with a global memory
  // barrier where one depends on an earlier one (barrier_before), barriers against earlier
  // transfers at the start and for host reads at the end; timestamps between
  // dispatches when profiled; split decode attention with `splits` splits where that is
  // fewer than planned (0: as planned).
  VkCommandBuffer record(bool timestamps, uint32_t splits = 0) {
    const DeviceApi& d = ctx_->d();
    VkCommandBuffer cb = VK_NULL_HANDLE;
    VkCommandBufferAllocateInfo cai{};
    cai.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
    cai.commandPool = ctx_->command_pool();
    cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    cai.commandBufferCount = 1;
    LLM_VK_CHECK(d.vkAllocateCommandBuffers(ctx_->device(), &cai, &cb));
    VkCommandBufferBeginInfo bi{};
    bi.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
    // Queued again while its last submission may still run (a step ahead).
    bi.flags = VK_COMMAND_BUFFER_USAGE_SIMULTANEOUS_USE_BIT;
    LLM_VK_CHECK(d.vkBeginCommandBuffer(cb, &bi));
    // The step's inputs come from transfers and earlier steps (light barriers), or from
    // anything submitted before.
    if (ctx_->light_barriers())
      cmd_memory_barrier(d, cb,
                         VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                         VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_SHADER_WRITE_BIT,
                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                         VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
    else
      cmd_memory_barrier(d, cb, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_ACCESS_MEMORY_WRITE_BIT,
                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                         VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT);
    StepTimes* step_times = timestamps ? nullptr : ctx_->step_times();
    if (step_times) step_times->mark_step(cb, false);
    const uint32_t n_q = static_cast<uint32_t>(ds_.size()) + 1;
    if (timestamps) {
      d.vkCmdResetQueryPool(cb, queries_, 0, n_q);
      d.vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, queries_, 0);
    }
    bool carried_barrier = false;  // that of a dispatch LLM_VULKAN_REPEAT=TEXT:-1 left out
    for (size_t i = 0; i < ds_.size(); i++) {
      const Recorded& x = ds_[i];
      // LLM_VULKAN_REPEAT=TEXT:-1: the dispatch is left out (its barrier goes to the next
      // one), so that the step's time shrinks by what it costs: an upper bound on what
      // fusing it away could save. A measuring aid: results are then wrong.
      if (repeat_.second < 0 && !timestamps && x.label.find(repeat_.first) != std::string::npos) {
        carried_barrier = carried_barrier || x.barrier_before;
        continue;
      }
      // Profiled runs keep the same barriers: a timestamp at the compute stage is
      // written once every earlier dispatch has finished, so consecutive timestamps
      // charge each dispatch from the end of the work before it to its own end and
      // add up to the step as run() runs it.
      const bool barrier = x.barrier_before || carried_barrier;
      carried_barrier = false;
      if (i > 0 && barrier)
        cmd_memory_barrier(d, cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                           VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                           VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
      // Fewer splits: the same dispatch on the pipeline specialized for them (its
      // descriptor set layout is defined identically).
      Recorded v;
      const Recorded& run_x = splits && splits < x.splits.max ? with_split_count(x, splits, v) : x;
      const Pipeline& pl = *run_x.pipeline;
      d.vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pl.pipeline);
      d.vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pl.layout, 0, 1, &x.set, 0,
                                nullptr);
      if (x.push_words)
        d.vkCmdPushConstants(cb, pl.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, x.push_words * 4,
                             x.push);
      d.vkCmdDispatch(cb, run_x.groups_x, run_x.groups_y, 1);
      // LLM_VULKAN_REPEAT: the dispatch again, after a barrier, so that the step's time
      // grows by what it costs inside the replay (profiles time it with a wait on each
      // side). A measuring aid: the step's results are then not those of the graph.
      const bool repeated =
          repeat_.second > 0 && !timestamps && x.label.find(repeat_.first) != std::string::npos;
      for (int r = 0; repeated && r < repeat_.second; r++) {
        cmd_memory_barrier(d, cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                           VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                           VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
        d.vkCmdDispatch(cb, run_x.groups_x, run_x.groups_y, 1);
      }
      if (timestamps)
        d.vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, queries_,
                              static_cast<uint32_t>(i + 1));
    }
    cmd_memory_barrier(
        d, cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
        VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
        VK_ACCESS_HOST_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT);
    if (step_times) step_times->mark_step(cb, true);
    LLM_VK_CHECK(d.vkEndCommandBuffer(cb));
    return cb;
  }

  // x's pipeline and grid with n splits, in v.
  const Recorded& with_split_count(const Recorded& x, uint32_t n, Recorded& v) {
    std::vector<int32_t> spec = x.splits.spec;
    spec[x.splits.spec_index] = static_cast<int32_t>(n);
    v.label = x.label;
    v.pipeline = &ctx_->pipeline(x.splits.shader, static_cast<uint32_t>(x.bindings.size()), spec);
    grid(v, x.splits.items * n + x.splits.extra_groups);
    return v;
  }

  // Device time per dispatch label over the profiled runs, largest first (stderr).
  void print_profile() const {
    std::vector<std::string> labels;
    for (const auto& d : ds_) labels.push_back(d.label);
    print_label_profile(ctx_->id(), "dispatches", ds_.size(), labels, totals_, profile_runs_);
  }

  std::shared_ptr<Context> ctx_;
  const bool profile_ = [] {
    const char* v = std::getenv("LLM_VULKAN_PROFILE");
    return v && std::strcmp(v, "1") == 0;
  }();
  // LLM_VULKAN_REPEAT=TEXT:N: dispatches whose label holds TEXT run N more times (-1:
  // are left out).
  const std::pair<std::string, int> repeat_ = [] {
    const char* v = std::getenv("LLM_VULKAN_REPEAT");
    const char* colon = v ? std::strrchr(v, ':') : nullptr;
    if (!colon) return std::pair<std::string, int>{"", 0};
    return std::pair<std::string, int>{std::string(v, colon), std::max(-1, std::atoi(colon + 1))};
  }();
  std::vector<double> totals_;
  int profile_runs_ = 0;
  std::vector<Recorded> ds_;
  std::vector<std::shared_ptr<Buffer>> keep_;
  VkDescriptorPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cb_ = VK_NULL_HANDLE;
  VkCommandBuffer cb_profiled_ = VK_NULL_HANDLE;
  VkQueryPool queries_ = VK_NULL_HANDLE;
  // Split decode attention: the most splits any dispatch was planned with, the keys a
  // split is planned for, the count the next run takes (0: as planned) and the
  // recordings of the counts run so far.
  uint32_t splits_max_ = 0, split_keys_ = 1, splits_next_ = 0;
  std::map<uint32_t, VkCommandBuffer> by_splits_;
};

}  // namespace

void grid(Recorded& x, uint64_t n) {
  n = std::max<uint64_t>(n, 1);
  x.groups_x = static_cast<uint32_t>(std::min<uint64_t>(n, kMaxGroups));
  x.groups_y = static_cast<uint32_t>((n + x.groups_x - 1) / x.groups_x);
  if (x.groups_y > kMaxGroups)
    fail("vulkan backend: %s needs too many workgroups", x.label.c_str());
}

Buffer& vk_buffer(const DeviceBuffer& b) {
  const Buffer* vb = dynamic_cast<const Buffer*>(&b);
  if (!vb) fail("vulkan backend: a buffer of another backend was passed in");
  return const_cast<Buffer&>(*vb);
}

Region region(const TensorRef& r) {
  return Region{&vk_buffer(*r.buffer), r.offset, r.offset + tensor_bytes(r.dtype, r.shape)};
}

std::unique_ptr<Program> make_program(std::shared_ptr<Context> ctx,
                                      std::vector<Recorded> dispatches,
                                      std::vector<std::shared_ptr<Buffer>> keep) {
  // LLM_VULKAN_DUMP=1: each dispatch with its grid, push constants and binding ranges
  // (stderr), for checking what a plan launches.
  const char* dump = std::getenv("LLM_VULKAN_DUMP");
  if (dump && std::strcmp(dump, "1") == 0) {
    std::fprintf(stderr, "%s: a program of %zu dispatches\n", ctx->id().c_str(), dispatches.size());
    for (const Recorded& x : dispatches) {
      std::fprintf(stderr, "  %s | %s | groups %u x %u | push", x.label.c_str(),
                   x.pipeline->name.c_str(), x.groups_x, x.groups_y);
      for (uint32_t k = 0; k < x.push_words; k++) std::fprintf(stderr, " %u", x.push[k]);
      std::fprintf(stderr, " | bytes@offset");
      for (const Recorded::Binding& b : x.bindings)
        std::fprintf(stderr, " %llu@%llu", static_cast<unsigned long long>(b.range),
                     static_cast<unsigned long long>(b.offset));
      std::fprintf(stderr, "\n");
    }
  }
  return std::make_unique<VulkanProgram>(std::move(ctx), std::move(dispatches), std::move(keep));
}

}  // namespace vk
}  // namespace llm
