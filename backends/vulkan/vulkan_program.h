// A compiled Vulkan step: its dispatches as the backend planned them (Recorded), recorded
// into one command buffer with a global memory barrier before each dispatch that
// depends on one since the last barrier, and replayed with one submission per run
// (a second recording with timestamps between the dispatches when profiled).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backends/vulkan/vulkan_context.h"
#include "core/backend.h"

namespace llm {
namespace vk {

// Bytes [begin, end) of a buffer that a dispatch reads or writes.
struct Region {
  const Buffer* buffer = nullptr;
  size_t begin = 0, end = 0;
  bool overlaps(const Region& o) const {
    return buffer == o.buffer && begin < o.end && o.begin < end;
  }
  bool operator==(const Region& o) const {
    return buffer == o.buffer && begin == o.begin && end == o.end;
  }
};

// The most workgroups of one grid dimension.
constexpr uint32_t kMaxGroups = 65535;

// One recorded dispatch.
struct Recorded {
  std::vector<Region> reads, writes;  // tensors, for the barriers (not the error word)
  // Set by make_program from reads and writes (a dispatch without regions gets no
  // barrier), not by the caller.
  bool barrier_before = false;
  const Pipeline* pipeline = nullptr;
  VkDescriptorSet set = VK_NULL_HANDLE;
  // Descriptor ranges: each tensor's bytes from a suitably aligned start, so the
  // validation layer's synchronization checks see what a dispatch really touches.
  struct Binding {
    Buffer* buffer = nullptr;
    VkDeviceSize offset = 0, range = 0;
  };
  std::vector<Binding> bindings;
  uint32_t push[kPushBytes / 4] = {};
  uint32_t push_words = 0;
  uint32_t groups_x = 1, groups_y = 1;
  std::string label;
  std::vector<int> nodes;  // bound nodes it computes
  // A decode attention whose keys are split over `max` workgroups an item (its SPLITS
  // specialization constant at index spec_index) for the planned context: a shorter
  // context replays a recording with fewer (Program::set_context_used). Any count is
  // correct (the keys are shared evenly); fewer run and merge faster.
  struct Splits {
    uint32_t max = 0;                      // 0: not split
    uint32_t keys = 1;                     // context tokens a split is planned for
    uint64_t items = 0, extra_groups = 0;  // grid: items * splits + extra_groups
    std::string shader;
    std::vector<int32_t> spec;
    size_t spec_index = 0;
  } splits;
};

// Groups of a 2-d grid covering n groups (x at most kMaxGroups); shaders take
// flat_group() / flat_id() and skip what lies past the end.
void grid(Recorded& x, uint64_t n);

// The buffer behind a tensor of this backend (fails on another backend's).
Buffer& vk_buffer(const DeviceBuffer& b);
// The bytes a bound tensor occupies.
Region region(const TensorRef& r);

// The program of the dispatches; keep: buffers of its own (scratch) that they use.
std::unique_ptr<Program> make_program(std::shared_ptr<Context> ctx,
                                      std::vector<Recorded> dispatches,
                                      std::vector<std::shared_ptr<Buffer>> keep);

}  // namespace vk
}  // namespace llm
