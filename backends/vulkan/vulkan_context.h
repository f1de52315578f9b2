// Vulkan objects of the backend, each behind an RAII owner: the instance (with the
// validation layer when LLM_VULKAN_VALIDATION=1), a device with one compute queue, a
// sub-allocator of device memory, buffers, staged transfers, queued submissions (a
// ring of fences), the on-disk pipeline cache and compute pipelines keyed by shader
// and specialization constants.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backends/vulkan/vulkan_api.h"
#include "core/backend.h"

namespace llm::vk {

// Validation: LLM_VULKAN_VALIDATION=1 enables VK_LAYER_KHRONOS_validation; errors it
// reports are printed and counted (tests fail on them).
bool validation_requested();
int validation_error_count();
// Pipelines created so far by every context of the process.
int pipelines_created();
int submissions();  // vkQueueSubmit calls so far

class Instance {
 public:
  // Throws llm::Error when there is no loader or the instance cannot be created.
  explicit Instance(bool validation);
  ~Instance();
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  VkInstance get() const { return instance_; }
  const Api& api() const { return api_; }
  std::vector<VkPhysicalDevice> physical_devices() const;

 private:
  Api api_;
  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
};

// What the backend needs to know of a physical device.
struct PhysicalInfo {
  VkPhysicalDevice handle = VK_NULL_HANDLE;
  VkPhysicalDeviceProperties props{};
  VkPhysicalDeviceMemoryProperties memory{};
  uint32_t subgroup_size = 0;
  // Multiprocessors (NVIDIA) or compute units (AMD); 0 where the driver does not say.
  uint32_t compute_units = 0;
  bool subgroup_arithmetic = false;  // subgroupAdd and friends in compute shaders
  bool subgroup_clustered = false;   // subgroupClusteredAdd and friends
  bool fp16 = false;                 // shaderFloat16
  bool storage16 = false;            // storageBuffer16BitAccess
  bool coopmat_nv = false;           // VK_NV_cooperative_matrix
  bool executable_stats = false;     // VK_KHR_pipeline_executable_properties
  bool memory_model = false;         // vulkanMemoryModel (the coop-matrix shader needs it)
  // VK_KHR_shader_integer_dot_product with its feature, and whether the device says
  // signed 4 x 8-bit packed dot products are fast (a native instruction, not emulated).
  bool int_dot = false;
  bool int_dot_fast = false;
  // VK_EXT_shader_atomic_float's shaderBufferFloat32AtomicAdd (and exchange): the fused
  // FFN's down product sums its parts with float atomics.
  bool atomic_float_add = false;
  // A subgroup-scope f16 x f16 + f32 fragment shape of VK_NV_cooperative_matrix
  // (M x N, depth K); 0 when there is none.
  uint32_t coop_m = 0, coop_n = 0, coop_k = 0;
  // Whether the tensor-core GEMM (shaders/matmul_coop.comp) can run: the extension with
  // its 16 x 16 x 16 shape, fp16 arithmetic, the Vulkan memory model, subgroups of 32.
  bool coop_gemm() const {
    return coopmat_nv && coop_m == 16 && coop_n == 16 && coop_k == 16 && fp16 && memory_model &&
           subgroup_size == 32;
  }
  uint32_t compute_family = UINT32_MAX;
  uint32_t timestamp_bits = 0;  // of the compute family
  size_t device_local_bytes = 0;
};
PhysicalInfo describe(const Instance& instance, VkPhysicalDevice dev);
// "discrete-gpu", "integrated-gpu", "virtual-gpu", "cpu", "other".
const char* device_type_name(VkPhysicalDeviceType t);
// Preference among devices: discrete < integrated < virtual < cpu < other.
int device_type_rank(VkPhysicalDeviceType t);
// The DeviceInfo of `llmcli devices` for device `index`.
DeviceInfo device_info(int index, const PhysicalInfo& p);

// A range of one block of device memory.
struct Allocation {
  int block = -1;
  VkDeviceSize offset = 0, size = 0;
  uint8_t* mapped = nullptr;  // host pointer when the memory is host visible
};

// Device memory in large blocks handed out first-fit (neighbouring free ranges merge);
// allocations of at least a quarter block get a block of their own.
class Allocator {
 public:
  Allocator(const DeviceApi& d, VkDevice device, uint32_t type, bool host_visible,
            VkDeviceSize block_bytes);
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;
  // Fails with VK_ERROR_OUT_OF_DEVICE_MEMORY as the result when it cannot.
  VkResult allocate(VkDeviceSize size, VkDeviceSize align, Allocation* out);
  void release(const Allocation& a);
  VkDeviceMemory memory(int block) const { return blocks_[block].memory; }
  uint32_t type() const { return type_; }
  bool host_visible() const { return host_visible_; }

 private:
  struct Block {
    VkDeviceMemory memory = VK_NULL_HANDLE;
    VkDeviceSize size = 0;
    uint8_t* mapped = nullptr;
    bool dedicated = false;
    std::map<VkDeviceSize, VkDeviceSize> free;  // offset -> size
  };
  const DeviceApi& d_;
  VkDevice device_;
  uint32_t type_;
  bool host_visible_;
  VkDeviceSize block_bytes_;
  std::vector<Block> blocks_;
};

struct Pipeline {
  VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  VkPipeline pipeline = VK_NULL_HANDLE;
  uint32_t n_bindings = 0;
  std::string name;
};

// Bytes of push constants every pipeline layout declares (the guaranteed minimum).
constexpr uint32_t kPushBytes = 128;

// Records a global memory barrier: src_access by src_stages before dst_access by
// dst_stages.
void cmd_memory_barrier(const DeviceApi& d, VkCommandBuffer cb, VkPipelineStageFlags src_stages,
                        VkAccessFlags src_access, VkPipelineStageFlags dst_stages,
                        VkAccessFlags dst_access);

class Buffer;
class StepTimes;

// The device and everything shared by the backend, its buffers and its programs.
class Context {
 public:
  // index: the physical device's place in enumeration order ("vulkan:N").
  Context(std::unique_ptr<Instance> instance, const PhysicalInfo& phys, int index);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const DeviceApi& d() const { return d_; }
  VkDevice device() const { return device_; }
  const PhysicalInfo& phys() const { return phys_; }
  int index() const { return index_; }
  std::string id() const { return "vulkan:" + std::to_string(index_); }
  VkCommandPool command_pool() const { return pool_; }
  Allocator& memory() { return *memory_; }
  Allocator& staging_memory() { return *staging_memory_; }
  // Device-local memory the host maps (BAR / resizable BAR) on discrete GPUs, for
  // small buffers (step inputs, norm weights): written without a staged copy.
  // nullptr where there is none, or all memory is mapped anyway.
  Allocator* small_memory() { return small_memory_.get(); }
  bool unified() const { return memory_->host_visible(); }

  // The pipeline of shader `name` (embedded SPIR-V) with these specialization
  // constants (constant_id 0, 1, ...), created once and kept.
  const Pipeline& pipeline(const std::string& name, uint32_t n_bindings,
                           const std::vector<int32_t>& spec);
  struct PipelineRequest {
    std::string name;
    uint32_t n_bindings = 0;
    std::vector<int32_t> spec;
  };
  // Creates those of these pipelines not created yet (each once, however often asked),
  // on several threads (a driver compiles each in up to a few hundred ms), so that a
  // recording made later finds them.
  void prepare_pipelines(const std::vector<PipelineRequest>& requests);

  // Submits a recorded command buffer after everything in flight has finished; with
  // wait, returns when it has finished too. A submission without wait is waited for by
  // the next wait_idle() (or submit()).
  void submit(VkCommandBuffer cb, bool wait);
  // Waits for every submission in flight, after sending the queued transfers.
  void wait_idle();

  // Work queued behind what is in flight, for decoding a step ahead of the host: small
  // uploads (the data is copied into the command buffer), device copies and downloads
  // into readback memory are recorded into an open transfer command buffer, which goes
  // out as a submission of its own before the next queued program or any wait. Every
  // submission and every queued command is ordered after all earlier ones (barriers).
  // Submissions take fences from a ring, so a program can be queued while the last
  // one still runs. The recorded command buffer of a queued program must allow
  // simultaneous use.
  void submit_queued(VkCommandBuffer cb);
  // Queued programs go out n to a submission (1: each at once): the boundary between
  // two submissions costs NVIDIA's GPUs about 17 µs, a barrier about 3. Until the n-th
  // they are held; anything that waits for queued work (or submits other work) sends
  // them first. At most kMaxSteps.
  void set_steps_per_submission(int n);
  static constexpr int kMaxSteps = 4;
  // False (nothing queued) for uploads vkCmdUpdateBuffer cannot take: over 64 KiB, or
  // offset or size not a multiple of 4.
  bool queue_upload(Buffer& dst, VkDeviceSize offset, const void* src, size_t bytes);
  void queue_copy(Buffer& dst, VkDeviceSize dst_offset, const Buffer& src, VkDeviceSize src_offset,
                  size_t bytes);
  // A download finish_download() completes (in the order they were started): the bytes
  // src holds once everything queued before has run. Larger ones than the readback
  // memory are done at once (ticket 0).
  uint64_t queue_download(const Buffer& src, VkDeviceSize offset, void* dst, size_t bytes);
  void finish_download(uint64_t ticket);

  // One-off transfer commands, submitted and waited for.
  void copy_to_device(Buffer& dst, VkDeviceSize offset, const void* src, size_t bytes);
  void copy_to_host(const Buffer& src, VkDeviceSize offset, void* dst, size_t bytes);
  void fill_zero(Buffer& dst, VkDeviceSize offset, size_t bytes);

  // The error bits the shaders set (bad indices); throws llm::Error naming them and
  // clears them. Call after wait_idle().
  void raise_device_errors();
  Buffer& error_buffer() { return *err_; }

  // LLM_VULKAN_STEP_TIMES=1 (a measuring aid): timestamps around queued steps and
  // transfers; nullptr otherwise.
  StepTimes* step_times() const { return step_times_.get(); }
  // Queued transfers and steps take barriers over the transfer and compute stages only
  // (LLM_VULKAN_SUBMIT's bit kSubmitLightBarriers).
  bool light_barriers() const { return submit_mode_ & kSubmitLightBarriers; }

 private:
  // A new pipeline (not kept); safe to call from several threads at once.
  Pipeline create_pipeline(const std::string& name, uint32_t n_bindings,
                           const std::vector<int32_t>& spec) const;
  void print_statistics(const std::string& name, const std::vector<int32_t>& spec,
                        VkPipeline pipeline) const;
  void record_transfer(const std::function<void(VkCommandBuffer)>& rec);
  // A ring slot for the next submission, waiting for its last one if still in flight.
  size_t acquire_slot();
  // with: a slot whose open transfer goes first in the same submission (-1: none).
  // hold: the submission waits in held_ for more (send_held() sends them all).
  void submit_in_slot(size_t slot, VkCommandBuffer cb, int with = -1, bool hold = false);
  void send_held();
  bool held(size_t slot) const;  // whether the slot's submission is held
  // Bytes [begin, end) of a buffer (none: a null buffer).
  struct Span {
    VkBuffer buffer = VK_NULL_HANDLE;
    VkDeviceSize begin = 0, end = 0;
  };
  // The open transfer command buffer, begun (with its leading barrier) if need be, for a
  // command that reads `read` and writes `write` (a barrier first where they overlap
  // what queued commands since the last barrier wrote, or write what they read).
  VkCommandBuffer open_transfer(const Span& read, const Span& write);
  void flush_transfer();
  // A small copy of the open transfer, run with the others in one dispatch of
  // small_copies.comp (bindings: 0 the upload ring, 1 readback_, 2 and 3 device
  // buffers): from host data (src null) or a buffer into a buffer. False where it
  // cannot be one (LLM_VULKAN_SMALL_COPIES=0, unaligned, too large): the caller
  // records a copy command instead. Both are ordered by open_transfer's spans.
  bool queue_small_copy(const void* data, const Buffer* src, VkDeviceSize src_offset,
                        const Buffer& dst, VkDeviceSize dst_offset, size_t bytes);
  // Records the pending small copies as a dispatch into the open transfer.
  void flush_small_copies();
  // The stages and accesses of a queued transfer's commands.
  VkPipelineStageFlags copy_stages() const;
  VkAccessFlags copy_writes() const;
  VkAccessFlags copy_access() const;
  // A one-time transfer command buffer begun / ended with barriers against everything
  // submitted before / after it (and for host reads at the end).
  // queued: a ring slot's (LLM_VULKAN_STEP_TIMES times those).
  void begin_transfer(VkCommandBuffer cb, bool queued = false);
  void end_transfer(VkCommandBuffer cb, bool queued = false, VkEvent set = VK_NULL_HANDLE);
  std::string cache_path() const;
  void save_pipeline_cache();

  std::unique_ptr<Instance> instance_;
  PhysicalInfo phys_;
  int index_;
  DeviceApi d_{};
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer transfer_cb_ = VK_NULL_HANDLE;
  // Submissions in flight: a fence and a transfer command buffer per slot (a queued
  // step takes two: its transfer's and its own; kMaxSteps held behind as many sent).
  static constexpr size_t kRing = 4 * kMaxSteps;
  static constexpr size_t kCopySets = 8;  // small-copy dispatches a queued transfer
  struct Slot {
    VkFence fence = VK_NULL_HANDLE;
    VkCommandBuffer cb = VK_NULL_HANDLE;
    bool busy = false;
    uint64_t use = 0;  // how many submissions the slot has carried
    // A slot whose command buffer went out in the submission of a later slot (with):
    // a queued transfer with the step after it (kSubmitTogether), or held steps sent
    // together. It is done when that slot finishes its submission with_use. A queued
    // transfer's event is set once its own commands are, when its downloads may be read.
    VkEvent event = VK_NULL_HANDLE;
    bool evented = false;  // this use of the slot's transfer sets the event
    // Its transfer's small-copy dispatches (descriptor sets, allocated when first
    // needed) and the bytes of its upload ring area in use.
    std::array<VkDescriptorSet, kCopySets> copy_sets{};
    size_t copy_sets_used = 0;
    size_t upload_used = 0;
    int with = -1;
    uint64_t with_use = 0;
  };
  // How queued transfers and steps are submitted (LLM_VULKAN_SUBMIT, bits; default both):
  // kSubmitLightBarriers: their barriers name the transfer and compute stages only, not
  // every stage; kSubmitTogether: a step's transfer goes in the step's submission.
  static constexpr int kSubmitLightBarriers = 1, kSubmitTogether = 2;
  int submit_mode_ = kSubmitLightBarriers | kSubmitTogether;
  void wait_slot(size_t i);  // waits for the slot's submission (if busy)
  std::array<Slot, kRing> ring_{};
  // Command buffers of slots not yet submitted, in order (set_steps_per_submission).
  struct Held {
    size_t slot;
    VkCommandBuffer cb;
  };
  std::vector<Held> held_;
  int held_steps_ = 0, steps_per_submission_ = 1;
  size_t next_slot_ = 0;
  int open_slot_ = -1;                          // the slot whose transfer command buffer is open
  std::vector<Span> open_reads_, open_writes_;  // its commands' since its last barrier
  struct Download {
    size_t slot;
    uint64_t use;  // the slot's submission that carries the copy
    size_t at;     // offset in readback_
    void* dst;
    size_t bytes;
  };
  std::deque<Download> downloads_;
  struct SmallCopy {
    uint32_t src, src_at, dst, dst_at, words;  // bindings and word offsets
  };
  static constexpr size_t kMaxSmallCopies = 6;  // what the push constants hold
  static constexpr size_t kUploadArea = 16384;  // upload ring bytes a slot
  bool small_copies_ = true;                    // LLM_VULKAN_SMALL_COPIES=0: copy commands
  std::vector<SmallCopy> copies_;               // pending, of the open transfer
  bool copies_since_barrier_ = false;           // a dispatch of them since the last barrier
  std::array<const Buffer*, 2> copy_dev_{};     // their device buffers (bindings 2, 3)
  std::unique_ptr<Buffer> upload_ring_;         // host visible, kRing areas
  VkDescriptorPool copy_pool_ = VK_NULL_HANDLE;
  const Pipeline* copy_pipeline_ = nullptr;  // small_copies.comp's, with copy_pool_
  uint64_t downloads_started_ = 0, downloads_finished_ = 0;
  size_t readback_used_ = 0;
  std::unique_ptr<Buffer> readback_;  // host visible, for queued downloads
  std::unique_ptr<StepTimes> step_times_;
  VkPipelineCache cache_ = VK_NULL_HANDLE;
  // LLM_VULKAN_PIPELINE_STATS=1: each pipeline's compiler statistics (registers, ...)
  // go to stderr as it is created, where the driver reports them.
  PFN_vkGetPipelineExecutablePropertiesKHR get_executables_ = nullptr;
  PFN_vkGetPipelineExecutableStatisticsKHR get_statistics_ = nullptr;
  std::map<std::pair<std::string, std::vector<int32_t>>, Pipeline> pipelines_;
  std::unique_ptr<Allocator> memory_;
  std::unique_ptr<Allocator> staging_memory_;
  std::unique_ptr<Allocator> small_memory_;
  std::unique_ptr<Buffer> staging_;  // host visible, for transfers of non-unified memory
  std::unique_ptr<Buffer> err_;      // one uint of error bits, host visible
};

// A VkBuffer over an allocation of the context's memory (staging: of its host-visible
// memory). `keep` holds the context alive (null for the context's own buffers).
class Buffer final : public DeviceBuffer {
 public:
  Buffer(Context& ctx, std::shared_ptr<Context> keep, size_t bytes, const std::string& what,
         bool staging = false);
  ~Buffer() override;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  VkBuffer get() const { return buffer_; }
  uint8_t* mapped() const { return alloc_.mapped; }
  // In device-local memory that the host maps (BAR): fast to write from the host, but
  // host reads cross PCIe uncached (milliseconds for the logits), so they go staged.
  bool in_bar() const { return allocator_ == ctx_.small_memory(); }
  Context& context() const { return ctx_; }
  // The planner's block-major copy of the quantized matrix this buffer holds in the row
  // layout (the fused FFN's down), made once on first use.
  std::shared_ptr<Buffer> block_major;

 private:
  Context& ctx_;
  std::shared_ptr<Context> keep_;
  Allocator* allocator_;
  Allocation alloc_;
  VkBuffer buffer_ = VK_NULL_HANDLE;
};

}  // namespace llm::vk
