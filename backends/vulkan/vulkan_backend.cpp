// The Vulkan backend: buffers in device memory (vulkan_context.h), op checks (the CPU
// backend's semantic checks plus this backend's limits), and compile(): a step's
// dispatches as vulkan_planner.h plans them, which vulkan_program.h records into one
// command buffer and replays with one vkQueueSubmit per step. Every per-step value
// comes from buffers (inputs the executor uploads), so the recording stays valid.
// Shapes and tensor offsets go in push constants; dtypes and ops are specialization
// constants, so each (shader, dtypes) pair is one pipeline.
#include "backends/vulkan/vulkan_backend.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backends/vulkan/vulkan_context.h"
#include "backends/vulkan/vulkan_fusion.h"
#include "backends/vulkan/vulkan_planner.h"
#include "backends/vulkan/vulkan_program.h"
#include "core/error.h"

namespace llm {

namespace {

using vk::Buffer;
using vk::Context;
using vk::kAttentionMaxHeadDim;
using vk::kGemvMaxTokens;
using vk::kMaxGroups;
using vk::vk_buffer;

void check_range(const DeviceBuffer& b, size_t offset, size_t bytes, const char* what) {
  if (offset > b.size() || bytes > b.size() - offset)
    fail("vulkan backend: %s of %zu bytes at offset %zu overruns a buffer of %zu bytes", what,
         bytes, offset, b.size());
}

// GGUF blocks of a q4_0/q8_0/q4_1 [N, K] matrix in the backend's row layout
// (shaders/weights.glsl): per row its K/32 f16 scales (q4_1: scale and min, the GGUF
// block's first 4 bytes, so the GEMVs load both in one word) padded to 16 bytes, then
// the quants of its blocks (16 bytes of nibbles or 32 int8 each).
std::vector<uint8_t> split_rows(DType t, const uint8_t* blocks, int64_t N, int64_t K) {
  const size_t nb = static_cast<size_t>(K / 32);
  const size_t block = dtype_info(t).block_bytes, meta = t == DType::Q4_1 ? 4 : 2,
               qb = block - meta;
  const size_t metas = (nb * meta + 15) / 16 * 16, row = metas + nb * qb;
  std::vector<uint8_t> out(row * static_cast<size_t>(N), 0);
  for (int64_t n = 0; n < N; n++) {
    uint8_t* dst = out.data() + row * n;
    const uint8_t* src = blocks + nb * block * n;
    for (size_t b = 0; b < nb; b++) {
      std::memcpy(dst + meta * b, src + block * b, meta);
      std::memcpy(dst + metas + qb * b, src + block * b + meta, qb);
    }
  }
  return out;
}

// Most tokens a matmul takes through the GEMVs where the tensor-core GEMM exists: four.
// The GEMM wastes most of its 16-token tiles on a few tokens, and the integer-dot GEMV
// reads the weights once for all of them; past four it loses (H100, `bench --batch
// 1,2,4,8`, 7b q4 in all: GEMM 331 / 291 / 560 / 1,052 tok/s, GEMV up to 4 333 / 468 /
// 597 / 1,045, up to 8 330 / 465 / 600 / 646). LLM_VULKAN_GEMV_MAX_TOKENS sets it (1..8).
int64_t coop_gemv_max_tokens() {
  static const int64_t v = [] {
    const char* e = std::getenv("LLM_VULKAN_GEMV_MAX_TOKENS");
    return e ? std::clamp<int64_t>(std::atoi(e), 1, kGemvMaxTokens) : 4;
  }();
  return v;
}
// matmul_gemv_qdot_sx's fixed grid: workgroups per multiprocessor (four of 256 threads
// fill one at the GEMV's 64 registers a thread), and the multiprocessors assumed where
// the driver does not tell.
constexpr uint32_t kGemvWorkgroupsPerUnit = 4;
constexpr uint32_t kGemvUnitsUnknown = 16;

// ---- The backend -----------------------------------------------------------------------

class VulkanBackend final : public Backend {
 public:
  explicit VulkanBackend(std::shared_ptr<Context> ctx) : ctx_(std::move(ctx)) {
    // Tensor cores for many-token matmuls where the device has them, unless
    // LLM_VULKAN_COOPMAT=0 asks for the float32 path (its tolerance is tighter).
    const char* e = std::getenv("LLM_VULKAN_COOPMAT");
    coop_ = ctx_->phys().coop_gemm() && !(e && std::strcmp(e, "0") == 0);
    // Greedy decode queues the next step before collecting the last one's token, unless
    // LLM_VULKAN_STEP_AHEAD=0 (each token through the host, for measuring).
    const char* ahead = std::getenv("LLM_VULKAN_STEP_AHEAD");
    step_ahead_ = !(ahead && std::strcmp(ahead, "0") == 0);
    // Decode steps a submission where the host is that far behind (Session::decode_greedy;
    // H100, 1b tg128: one 1,227-1,232, two 1,237-1,239, four 1,238-1,241 tok/s).
    if (const char* sp = std::getenv("LLM_VULKAN_STEPS_PER_SUBMIT"))
      steps_per_submission_ = std::clamp(std::atoi(sp), 1, vk::Context::kMaxSteps);
    // Integer dot products in the quantized GEMV where the device makes them fast;
    // LLM_VULKAN_INT_DOT=1 takes them where they are emulated too (lavapipe, in the
    // tests), 0 never.
    const char* d = std::getenv("LLM_VULKAN_INT_DOT");
    const bool forced = d && std::strcmp(d, "1") == 0, off = d && std::strcmp(d, "0") == 0;
    int_dot_ = ctx_->phys().int_dot && (ctx_->phys().int_dot_fast || forced) && !off;
    // Integer-dot GEMVs keep x's planes in shared memory where they fit, unless
    // LLM_VULKAN_GEMV_SX=0 (for measuring, and for testing the other path).
    const char* sx = std::getenv("LLM_VULKAN_GEMV_SX");
    shared_x_ = int_dot_ && !(sx && std::strcmp(sx, "0") == 0);
    // Those GEMVs run on a fixed grid whose workgroups loop over the rows
    // (matmul_gemv_q.glsl, PERSIST): kGemvWorkgroupsPerUnit per multiprocessor, or
    // LLM_VULKAN_GEMV_WGS in all; LLM_VULKAN_GEMV_PERSIST=0 gives each workgroup its
    // own rows instead (for measuring, and for testing that path).
    const char* pe = std::getenv("LLM_VULKAN_GEMV_PERSIST");
    const char* wgs = std::getenv("LLM_VULKAN_GEMV_WGS");
    units_ = ctx_->phys().compute_units ? ctx_->phys().compute_units : kGemvUnitsUnknown;
    if (shared_x_ && !(pe && std::strcmp(pe, "0") == 0))
      persist_wgs_ = wgs ? static_cast<uint32_t>(std::max(1, std::atoi(wgs)))
                         : kGemvWorkgroupsPerUnit * units_;
    // LLM_VULKAN_PERSIST_TPR fixes the threads a task on that grid (a power of two, at
    // least a subgroup; for measuring, and for testing the wider groups).
    if (const char* pt = std::getenv("LLM_VULKAN_PERSIST_TPR")) {
      // Rounded down to a power of two (the shader's groups are aligned ones); the
      // planner clamps it to the subgroup and the workgroup.
      const uint32_t v = static_cast<uint32_t>(std::clamp(std::atoi(pt), 0, 1024));
      uint32_t p2 = 1;
      while (p2 * 2 <= v) p2 *= 2;
      persist_tpr_ = v ? p2 : 0;
    }
    // LLM_VULKAN_GEMV_THREADS=256|512|1024 fixes their workgroup size (for measuring,
    // and for testing each size); by default it is chosen per matrix.
    if (const char* th = std::getenv("LLM_VULKAN_GEMV_THREADS")) {
      const int v = std::atoi(th);
      gemv_threads_ = v >= 1024 ? 1024 : v >= 512 ? 512 : 256;
    }
    // LLM_VULKAN_FFN_FUSE=1: single-token gate/up dispatches also compute down (from a
    // block-major copy of its weights) and its residual Add, summing down's parts with
    // float atomics; =2: they write the parts, and a parts_reduce adds them in order
    // (deterministic). Off by default until measured faster.
    const char* ffn = std::getenv("LLM_VULKAN_FFN_FUSE");
    const int ffn_mode = ffn ? std::atoi(ffn) : 0;
    if (shared_x_ && ctx_->phys().atomic_float_add && (ffn_mode == 1 || ffn_mode == 2))
      ffn_down_ = ffn_mode;
    // LLM_VULKAN_FFN_NEXT_NORM=1: its last workgroup (=1) or the reduce (=2) also rounds
    // the next RmsNorm's output for the GEMV after it, which then skips its norm prologue.
    const char* next_norm = std::getenv("LLM_VULKAN_FFN_NEXT_NORM");
    ffn_next_norm_ = ffn_down_ && next_norm && std::strcmp(next_norm, "1") == 0;
    // LLM_VULKAN_ATTN_O=1: single-token decode attention also runs o and its residual
    // Add in its grid (o workers, float atomics); =2: and the RmsNorm after them,
    // rounded for the GEMV after (gate/up). Off by default until measured faster.
    const char* attn_o = std::getenv("LLM_VULKAN_ATTN_O");
    const int attn_o_mode = attn_o ? std::atoi(attn_o) : 0;
    if (int_dot_ && ctx_->phys().atomic_float_add && ctx_->phys().subgroup_arithmetic &&
        (attn_o_mode == 1 || attn_o_mode == 2))
      attn_o_ = attn_o_mode;
  }

  ~VulkanBackend() override {
    try {
      ctx_->wait_idle();
    } catch (const std::exception&) {
    }
  }

  DeviceInfo info() const override {
    DeviceInfo d = vk::device_info(ctx_->index(), ctx_->phys());
    d.details += ctx_->unified() ? ", unified memory" : ", staged uploads";
    if (coop_) d.details += ", f16 tensor-core GEMM";
    if (int_dot_)
      d.details += persist_wgs_ ? ", int8-dot GEMV (x in shared memory, " +
                                      std::to_string(persist_wgs_) + " workgroups)"
                   : shared_x_ ? ", int8-dot GEMV (x in shared memory)"
                               : ", int8-dot GEMV";
    if (ffn_down_)
      d.details += std::string(", down inside gate/up") + (ffn_down_ == 2 ? " (parts)" : "") +
                   (ffn_next_norm_ ? " (+ next norm)" : "");
    if (attn_o_)
      d.details += attn_o_ == 2 ? ", o inside the decode attention (+ next norm)"
                                : ", o inside the decode attention";
    return d;
  }

  std::unique_ptr<DeviceBuffer> alloc(size_t bytes, const std::string& what) override {
    return std::make_unique<Buffer>(*ctx_, ctx_, bytes, what);
  }

  // q4_1: every shader that reads weights takes it (only the opt-in fusions of
  // attention_o.glsl and FFN_DOWN do not, and are not planned for it).
  bool runs_weight_dtype(DType t) const override {
    return Backend::runs_weight_dtype(t) || t == DType::Q4_1;
  }

  std::unique_ptr<DeviceBuffer> upload_weight(const HostTensor& t,
                                              const std::string& what) override {
    const bool quant = is_quant(t.dtype);
    const int64_t K = t.shape.row_len(), N = t.shape.rows();
    if (!quant || t.shape.rank != 2 || K % 32 != 0 || t.nbytes != tensor_bytes(t.dtype, t.shape))
      return from_host(t.data, t.nbytes, what);
    const std::vector<uint8_t> rows =
        split_rows(t.dtype, static_cast<const uint8_t*>(t.data), N, K);
    auto buf = std::make_unique<Buffer>(*ctx_, ctx_, rows.size(), what);
    ctx_->copy_to_device(*buf, 0, rows.data(), rows.size());
    buf->set_split(t.dtype, N, K);
    return buf;
  }

  // Small uploads and device copies queue behind the work in flight (a step's inputs
  // while the step before it runs); larger ones wait for it.
  void upload(DeviceBuffer& dst, size_t offset, const void* src, size_t bytes) override {
    check_range(dst, offset, bytes, "upload");
    if (!ctx_->queue_upload(vk_buffer(dst), offset, src, bytes))
      ctx_->copy_to_device(vk_buffer(dst), offset, src, bytes);
  }

  void download(const DeviceBuffer& src, size_t offset, void* dst, size_t bytes) override {
    check_range(src, offset, bytes, "download");
    ctx_->copy_to_host(vk_buffer(src), offset, dst, bytes);
    ctx_->raise_device_errors();
  }

  void clear(DeviceBuffer& dst, size_t offset, size_t bytes) override {
    check_range(dst, offset, bytes, "clear");
    ctx_->fill_zero(vk_buffer(dst), offset, bytes);
  }

  void copy(DeviceBuffer& dst, size_t dst_offset, const DeviceBuffer& src, size_t src_offset,
            size_t bytes) override {
    check_range(dst, dst_offset, bytes, "copy");
    check_range(src, src_offset, bytes, "copy");
    ctx_->queue_copy(vk_buffer(dst), dst_offset, vk_buffer(src), src_offset, bytes);
  }

  uint64_t start_download(const DeviceBuffer& src, size_t offset, void* dst,
                          size_t bytes) override {
    check_range(src, offset, bytes, "download");
    return ctx_->queue_download(vk_buffer(src), offset, dst, bytes);
  }
  void finish_download(uint64_t ticket) override {
    ctx_->finish_download(ticket);
    ctx_->raise_device_errors();
  }
  bool downloads_overlap() const override { return step_ahead_; }
  int steps_per_submission() const override { return step_ahead_ ? steps_per_submission_ : 1; }
  void set_steps_per_submission(int n) override { ctx_->set_steps_per_submission(n); }

  void synchronize() override {
    ctx_->wait_idle();
    ctx_->raise_device_errors();
  }

  std::string check(const Node& node, const std::vector<const TensorInfo*>& inputs,
                    const TensorInfo& output) const override;
  std::unique_ptr<Program> compile(std::vector<BoundNode> nodes) override;

 private:
  std::shared_ptr<Context> ctx_;
  bool step_ahead_ = true;        // downloads_overlap(): decode a step ahead of the host
  int steps_per_submission_ = 4;  // LLM_VULKAN_STEPS_PER_SUBMIT (1 to 4)
  bool coop_ = false;             // many-token matmuls through matmul_coop
  bool int_dot_ = false;          // quantized GEMVs through quantize_x + matmul_gemv_qdot
  bool shared_x_ = false;         // ... with x's planes in shared memory (matmul_gemv_qdot_sx)
  uint32_t persist_wgs_ = 0;      // ... on a fixed grid of this many workgroups (0: one pass)
  uint32_t gemv_threads_ = 0;     // ... in workgroups of this size (0: chosen per matrix)
  uint32_t persist_tpr_ = 0;      // ... threads a task on the fixed grid (0: a subgroup)
  uint32_t units_ = 1;            // multiprocessors (kGemvUnitsUnknown where not reported)
  int ffn_down_ = 0;              // down inside gate/up (FFN_DOWN): 1 atomics, 2 parts + reduce
  bool ffn_next_norm_ = false;    // ... rounding the next RmsNorm's output too
  int attn_o_ = 0;  // o and its Add inside the decode attention (O_WORKERS); 2: + next norm
};

std::string VulkanBackend::check(const Node& node, const std::vector<const TensorInfo*>& inputs,
                                 const TensorInfo& output) const {
  switch (node.op) {
    case Op::GetRows:
    case Op::RmsNorm:
    case Op::LayerNorm:
    case Op::MatMul:
    case Op::Rope:
    case Op::KvAppend:
    case Op::Attention:
    case Op::SiluMul:
    case Op::GeluMul:
    case Op::Gelu:
    case Op::GeluTanh:
    case Op::Add:
    case Op::Mul:
    case Op::Scale:
    case Op::Slice:
    case Op::Mix:
    case Op::SigmoidMul:
    case Op::ReluSqr:
    case Op::TokenShift:
    case Op::Wkv:
    case Op::Sample:
      break;
    default:
      return format_message("op %s is not implemented by the vulkan backend yet", op_name(node.op));
  }
  std::string why = check_op(node, inputs, output, "vulkan");
  if (!why.empty()) return why;
  for (const TensorInfo* t : inputs)
    if (is_quant(t->dtype) && !runs_weight_dtype(t->dtype))
      return format_message(
          "%s: %s weights are not supported by the vulkan backend (models load them as q8_0)",
          op_name(node.op), dtype_name(t->dtype));
  // Shaders index elements with 32-bit integers.
  auto fits = [&](const TensorInfo& t) {
    return t.shape.numel() < (int64_t{1} << 31) &&
           tensor_bytes(t.dtype, t.shape) < (size_t{1} << 32);
  };
  for (const TensorInfo* t : inputs)
    if (!fits(*t))
      return format_message("%s: a tensor %s is too large for the vulkan backend (32-bit indices)",
                            op_name(node.op), t->shape.str().c_str());
  if (!fits(output))
    return format_message("%s: the output is too large for the vulkan backend", op_name(node.op));
  const OpParams& p = node.params;
  if (node.op == Op::Attention && p.head_dim > kAttentionMaxHeadDim)
    return format_message("attention: head_dim %d is larger than the vulkan shader's %d",
                          p.head_dim, kAttentionMaxHeadDim);
  if (node.op == Op::MatMul && inputs[1]->shape[0] > int64_t{kMaxGroups} * 64)
    return format_message("matmul: %lld outputs are more than the vulkan backend takes",
                          (long long)inputs[1]->shape[0]);
  return "";
}

std::unique_ptr<Program> VulkanBackend::compile(std::vector<BoundNode> nodes) {
  vk::Plan plan = vk::plan_dispatches(
      *this, ctx_, nodes,
      {coop_, coop_gemv_max_tokens(), int_dot_, shared_x_, persist_wgs_, gemv_threads_,
       persist_tpr_, units_, ffn_down_, ffn_next_norm_, attn_o_});
  return vk::make_program(ctx_, std::move(plan.dispatches), std::move(plan.keep));
}

// The physical devices in enumeration order, described.
std::vector<vk::PhysicalInfo> describe_all(const vk::Instance& inst) {
  std::vector<vk::PhysicalInfo> out;
  for (VkPhysicalDevice d : inst.physical_devices()) out.push_back(vk::describe(inst, d));
  return out;
}

int best_index(const std::vector<vk::PhysicalInfo>& devs) {
  int best = -1;
  for (size_t i = 0; i < devs.size(); i++)
    if (best < 0 || vk::device_type_rank(devs[i].props.deviceType) <
                        vk::device_type_rank(devs[best].props.deviceType))
      best = static_cast<int>(i);
  return best;
}

}  // namespace

std::unique_ptr<Backend> make_vulkan_backend(int device_index) {
  auto instance = std::make_unique<vk::Instance>(vk::validation_requested());
  const std::vector<vk::PhysicalInfo> devs = describe_all(*instance);
  if (devs.empty()) fail("vulkan: no Vulkan device found");
  const int index = device_index < 0 ? best_index(devs) : device_index;
  if (index >= static_cast<int>(devs.size()))
    fail("vulkan:%d does not exist (%zu Vulkan device%s found)", index, devs.size(),
         devs.size() == 1 ? "" : "s");
  auto ctx = std::make_shared<Context>(std::move(instance), devs[index], index);
  return std::make_unique<VulkanBackend>(std::move(ctx));
}

VulkanBest vulkan_best_device() {
  VulkanBest b;
  if (!vk::global_api()) return b;
  try {
    vk::Instance inst(false);
    const std::vector<vk::PhysicalInfo> devs = describe_all(inst);
    b.index = best_index(devs);
    if (b.index >= 0) b.cpu_type = devs[b.index].props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
  } catch (const std::exception&) {
    b.index = -1;
  }
  return b;
}

int vulkan_validation_errors() { return vk::validation_error_count(); }

int vulkan_pipelines_created() { return vk::pipelines_created(); }
int vulkan_submissions() { return vk::submissions(); }

}  // namespace llm
