// The CUDA backend: device buffers (cuda_context.h), op checks, and compile(): a step's
// launches as cuda_planner.h plans them, which cuda_program.h captures into a CUDA graph
// on its first run and replays afterwards: every per-step value comes from the
// executor's input buffers, whose addresses never change, so the captured kernel
// arguments stay valid. LLM_CUDA_GRAPHS=0 launches the kernels directly instead (for
// debugging and comparison).
#include "backends/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backends/cuda/cuda_common.h"
#include "backends/cuda/cuda_context.h"
#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/cuda_planner.h"
#include "core/error.h"

namespace llm {

namespace {

using cuda::Context;
using cuda::cuda_buffer;
using cuda::CudaBuffer;
using cuda::device_alloc;
using cuda::Event;
using cuda::PinnedHost;
using cuda::use_device;

void check_range(const DeviceBuffer& b, size_t offset, size_t bytes, const char* what) {
  if (offset > b.size() || bytes > b.size() - offset)
    fail("cuda backend: %s of %zu bytes at offset %zu overruns a buffer of %zu bytes", what, bytes,
         offset, b.size());
}

// ---- The backend -----------------------------------------------------------------------

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : ctx_(std::make_shared<Context>(device)) {
    cudaDeviceProp prop;
    LLM_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    name_ = prop.name;
    integrated_ = prop.integrated != 0;
    cc_major_ = prop.major;
    cc_minor_ = prop.minor;
    ctx_->n_sms = prop.multiProcessorCount;
    ctx_->smem_optin = static_cast<int>(prop.sharedMemPerBlockOptin);
    // Double data rate: two transfers per memory clock (kHz) over the bus (bits).
    int mem_khz = 0, bus_bits = 0;
    if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess &&
        cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) == cudaSuccess)
      bandwidth_gbs_ = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) / 1e9;
    cudaGetLastError();
    const cudaError_t probe = cuda::probe_kernels();
    if (probe != cudaSuccess) {
      cudaGetLastError();
      fail(
          "cuda:%d (%s, compute capability %d.%d): this build has no kernels for it (%s); "
          "rebuild with its architecture in CMAKE_CUDA_ARCHITECTURES",
          device, name_.c_str(), prop.major, prop.minor, cudaGetErrorString(probe));
    }
    const char* env = std::getenv("LLM_CUDA_GRAPHS");
    ctx_->graphs = !(env && std::strcmp(env, "0") == 0);
    const char* pdl = std::getenv("LLM_CUDA_PDL");
    ctx_->pdl = !(pdl && std::strcmp(pdl, "0") == 0) && prop.major >= 9;
    // The copy kernel reaches pinned host memory by its host address (unified addressing).
    const char* batch = std::getenv("LLM_CUDA_SMALL_COPIES");
    ctx_->batch_copies = prop.unifiedAddressing && !(batch && std::strcmp(batch, "0") == 0);
    const char* fuse_sample = std::getenv("LLM_CUDA_FUSE_SAMPLE");
    ctx_->fuse_sample = !(fuse_sample && std::strcmp(fuse_sample, "0") == 0);
    const char* staged = std::getenv("LLM_CUDA_QGEMV_STAGED");
    ctx_->qgemv_staged = !(staged && std::strcmp(staged, "0") == 0);
    const char* half_gemm = std::getenv("LLM_CUDA_HALF_GEMM");
    ctx_->half_gemm = !(half_gemm && std::strcmp(half_gemm, "0") == 0);
    if (const char* g = std::getenv("LLM_CUDA_HALF_GEMV_MAX_TOKENS"))
      ctx_->half_gemv_max_tokens = std::clamp<int64_t>(std::atoi(g), 1, cuda::kGemvMaxTokens);
    const char* prof = std::getenv("LLM_CUDA_PROFILE");
    ctx_->profile = prof && std::strcmp(prof, "1") == 0;
    if (const char* q = std::getenv("LLM_CUDA_QMMA_MAX_TOKENS"))
      ctx_->qmma_max_tokens = std::max(0, std::atoi(q));
    if (const char* q = std::getenv("LLM_CUDA_QGEMV_MAX_TOKENS"))
      ctx_->qgemv_max_tokens = std::min<int64_t>(cuda::kQGemvMaxTokens, std::max(1, std::atoi(q)));
    ctx_->err_flag = device_alloc(device, sizeof(int), "the kernel error flag");
    LLM_CUDA_CHECK(cudaMemsetAsync(ctx_->err_flag->data(), 0, sizeof(int), ctx_->ordered()));
    LLM_CUDA_CHECK(cudaStreamSynchronize(ctx_->ordered()));
  }

  ~CudaBackend() override {
    if (cudaSetDevice(ctx_->device) == cudaSuccess) cudaStreamSynchronize(ctx_->stream.get());
  }

  DeviceInfo info() const override {
    DeviceInfo d;
    d.id = "cuda:" + std::to_string(ctx_->device);
    d.name = name_;
    d.type = integrated_ ? "integrated-gpu" : "discrete-gpu";
    d.bandwidth_gbs = bandwidth_gbs_;
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(ctx_->device) == cudaSuccess &&
        cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
      d.free_memory = free_b;
      d.total_memory = total_b;
    }
    cudaGetLastError();
    d.details = format_message("compute capability %d.%d, %d SMs, CUDA graphs %s, PDL %s",
                               cc_major_, cc_minor_, ctx_->n_sms,
                               ctx_->profile  ? "off (LLM_CUDA_PROFILE=1)"
                               : ctx_->graphs ? "on"
                                              : "off (LLM_CUDA_GRAPHS=0)",
                               ctx_->pdl ? "on" : "off");
    return d;
  }

  std::unique_ptr<DeviceBuffer> alloc(size_t bytes, const std::string& what) override {
    return device_alloc(ctx_->device, bytes, what);
  }

  std::unique_ptr<DeviceBuffer> from_host(const void* data, size_t bytes,
                                          const std::string& what) override {
    auto buf = device_alloc(ctx_->device, bytes, what);
    if (bytes) {
      LLM_CUDA_CHECK(
          cudaMemcpyAsync(buf->data(), data, bytes, cudaMemcpyHostToDevice, ctx_->ordered()));
      // The host memory (a mapped file) may go away once this returns.
      LLM_CUDA_CHECK(cudaStreamSynchronize(ctx_->ordered()));
    }
    return buf;
  }

  // q4_1: the GEMV, the tensor-core GEMM, the prefill dequantizer and get_rows read it.
  bool runs_weight_dtype(DType t) const override {
    return Backend::runs_weight_dtype(t) || t == DType::Q4_1;
  }

  // Quantized matrices go into the split layout (quants apart from scales, rows
  // 16-byte aligned) that the kernels read; everything else is copied as is.
  std::unique_ptr<DeviceBuffer> upload_weight(const HostTensor& t,
                                              const std::string& what) override {
    if (!is_quant(t.dtype)) return from_host(t.data, t.nbytes, what);
    const int64_t K = t.shape.row_len(), N = t.shape.rows();
    if (t.shape.rank < 1 || K % 32 != 0 || t.nbytes != tensor_bytes(t.dtype, t.shape))
      fail("cuda backend: %s: %s tensor %s of %zu bytes is not whole blocks of 32", what.c_str(),
           dtype_name(t.dtype), t.shape.str().c_str(), t.nbytes);
    auto buf = device_alloc(ctx_->device, cuda::qsplit_bytes(t.dtype, N, K), what);
    {
      auto staging = device_alloc(ctx_->device, t.nbytes, what);
      const cudaStream_t s = ctx_->ordered();
      LLM_CUDA_CHECK(cudaMemcpyAsync(staging->data(), t.data, t.nbytes, cudaMemcpyHostToDevice, s));
      cuda::repack_quant(s, staging->data(), t.dtype, N, K, buf->data());
      // The host memory may go away once this returns; the staging buffer with this scope.
      LLM_CUDA_CHECK(cudaStreamSynchronize(s));
    }
    buf->set_split(t.dtype, N, K);
    return buf;
  }

  // Ordered on the stream with the programs. The copy is staged before this returns, so
  // the caller may reuse `src` at once: small ones (the per-step inputs) through a
  // pinned ring, which keeps them asynchronous; larger ones through the driver.
  void upload(DeviceBuffer& dst, size_t offset, const void* src, size_t bytes) override {
    check_range(dst, offset, bytes, "upload");
    if (!bytes) return;
    use_device(ctx_->device);
    const CudaBuffer& b = cuda_buffer(dst, ctx_->device);
    if (bytes <= kStageMaxCopy) {
      if (stage_used_ + bytes > kStageBytes) {
        // Earlier copies out of the ring must be done before it is overwritten.
        LLM_CUDA_CHECK(cudaStreamSynchronize(ctx_->ordered()));
        stage_used_ = 0;
      }
      uint8_t* p = static_cast<uint8_t*>(stage_.get()) + stage_used_;
      std::memcpy(p, src, bytes);
      stage_used_ += (bytes + 255) / 256 * 256;
      if (!ctx_->queue_copy(b.data() + offset, p, bytes))
        LLM_CUDA_CHECK(
            cudaMemcpyAsync(b.data() + offset, p, bytes, cudaMemcpyHostToDevice, ctx_->ordered()));
      return;
    }
    LLM_CUDA_CHECK(
        cudaMemcpyAsync(b.data() + offset, src, bytes, cudaMemcpyHostToDevice, ctx_->ordered()));
  }

  void download(const DeviceBuffer& src, size_t offset, void* dst, size_t bytes) override {
    check_range(src, offset, bytes, "download");
    use_device(ctx_->device);
    const CudaBuffer& b = cuda_buffer(src, ctx_->device);
    if (bytes)
      LLM_CUDA_CHECK(
          cudaMemcpyAsync(dst, b.data() + offset, bytes, cudaMemcpyDeviceToHost, ctx_->ordered()));
    ctx_->sync_and_check();
  }

  void copy(DeviceBuffer& dst, size_t dst_offset, const DeviceBuffer& src, size_t src_offset,
            size_t bytes) override {
    check_range(dst, dst_offset, bytes, "copy");
    check_range(src, src_offset, bytes, "copy");
    if (!bytes) return;
    use_device(ctx_->device);
    uint8_t* to = cuda_buffer(dst, ctx_->device).data() + dst_offset;
    const uint8_t* from = cuda_buffer(src, ctx_->device).data() + src_offset;
    if (!ctx_->queue_copy(to, from, bytes))
      LLM_CUDA_CHECK(cudaMemcpyAsync(to, from, bytes, cudaMemcpyDeviceToDevice, ctx_->ordered()));
  }

  // Small downloads land in a pinned slot with the error flag of that moment and an
  // event; the host copies them out when it asks (larger ones: download() at once).
  uint64_t start_download(const DeviceBuffer& src, size_t offset, void* dst,
                          size_t bytes) override {
    check_range(src, offset, bytes, "download");
    if (bytes > kDownloadSlotBytes - kDownloadHeader) {
      download(src, offset, dst, bytes);
      return 0;
    }
    const uint64_t ticket = next_ticket_++;
    PendingDownload& slot = pending_[ticket % kDownloadSlots];
    if (slot.ticket) finish_download(slot.ticket);  // the ring is full: the oldest first
    use_device(ctx_->device);
    uint8_t* host = download_host(ticket);
    const uint8_t* from = cuda_buffer(src, ctx_->device).data() + offset;
    // Queued with the step's input copies where they fit, else through the copy engine.
    const bool queued = ctx_->queue_copy(host + kDownloadHeader, from, bytes) &&
                        ctx_->queue_copy(host, ctx_->err_flag->data(), sizeof(int));
    if (!queued) {
      const cudaStream_t s = ctx_->ordered();
      if (bytes)
        LLM_CUDA_CHECK(
            cudaMemcpyAsync(host + kDownloadHeader, from, bytes, cudaMemcpyDeviceToHost, s));
      LLM_CUDA_CHECK(
          cudaMemcpyAsync(host, ctx_->err_flag->data(), sizeof(int), cudaMemcpyDeviceToHost, s));
    }
    std::unique_ptr<Event>& done = download_done_[ticket % kDownloadSlots];
    if (!done) done = std::make_unique<Event>(cudaEventDisableTiming);
    ctx_->record_after_copies(done->get());
    slot = {ticket, dst, bytes};
    return ticket;
  }

  bool downloads_overlap() const override { return true; }

  void finish_download(uint64_t ticket) override {
    ctx_->flush_copies();  // its event is recorded after the queued copies
    while (finished_ < ticket) {
      const uint64_t t = ++finished_;
      PendingDownload& slot = pending_[t % kDownloadSlots];
      if (slot.ticket != t) continue;
      slot.ticket = 0;
      LLM_CUDA_CHECK(cudaEventSynchronize(download_done_[t % kDownloadSlots]->get()));
      const uint8_t* host = download_host(t);
      std::memcpy(slot.dst, host + kDownloadHeader, slot.bytes);
      int bits = 0;
      std::memcpy(&bits, host, sizeof(int));
      if (bits) {
        *static_cast<int*>(ctx_->err_host.get()) = bits;
        ctx_->raise_device_errors();
      }
    }
  }

  void clear(DeviceBuffer& dst, size_t offset, size_t bytes) override {
    check_range(dst, offset, bytes, "clear");
    if (!bytes) return;
    use_device(ctx_->device);
    const CudaBuffer& b = cuda_buffer(dst, ctx_->device);
    LLM_CUDA_CHECK(cudaMemsetAsync(b.data() + offset, 0, bytes, ctx_->ordered()));
  }

  void synchronize() override {
    use_device(ctx_->device);
    ctx_->sync_and_check();
  }

  std::string check(const Node& node, const std::vector<const TensorInfo*>& inputs,
                    const TensorInfo& output) const override;

  std::unique_ptr<Program> compile(std::vector<BoundNode> nodes) override {
    return cuda::plan_program(*this, ctx_, std::move(nodes));
  }

 private:
  static constexpr size_t kStageBytes = size_t{1} << 20;
  static constexpr size_t kStageMaxCopy = size_t{64} << 10;
  std::shared_ptr<Context> ctx_;
  PinnedHost stage_{kStageBytes};
  size_t stage_used_ = 0;
  // start_download's slots: the error flag (header), then the bytes.
  static constexpr int kDownloadSlots = 4;
  static constexpr size_t kDownloadSlotBytes = 256, kDownloadHeader = 16;
  struct PendingDownload {
    uint64_t ticket = 0;  // 0: free
    void* dst = nullptr;
    size_t bytes = 0;
  };
  uint8_t* download_host(uint64_t ticket) const {
    return static_cast<uint8_t*>(download_slots_.get()) +
           (ticket % kDownloadSlots) * kDownloadSlotBytes;
  }
  PinnedHost download_slots_{kDownloadSlots * kDownloadSlotBytes};
  std::unique_ptr<Event> download_done_[kDownloadSlots];  // made on the backend's device
  PendingDownload pending_[kDownloadSlots];
  uint64_t next_ticket_ = 1, finished_ = 0;
  std::string name_;
  bool integrated_ = false;
  double bandwidth_gbs_ = 0;  // 0: the driver did not say
  int cc_major_ = 0, cc_minor_ = 0;
};

std::string CudaBackend::check(const Node& node, const std::vector<const TensorInfo*>& inputs,
                               const TensorInfo& output) const {
  std::string why = check_op(node, inputs, output, "cuda");
  if (!why.empty()) return why;
  for (const TensorInfo* t : inputs)
    if (is_quant(t->dtype) && !runs_weight_dtype(t->dtype))
      return format_message(
          "%s: %s weights are not supported by the cuda backend (models load them as q8_0)",
          op_name(node.op), dtype_name(t->dtype));
  // The kernels' own limits on top of the op set's rules.
  const char* name = op_name(node.op);
  const OpParams& p = node.params;
  // cuBLAS and the launch grids take 32-bit sizes.
  auto fits_int = [&](int64_t v, const char* what) -> std::string {
    if (v >= 0 && v < (int64_t{1} << 31)) return "";
    return format_message("%s: %s of %lld is too large for the cuda backend", name, what,
                          (long long)v);
  };
  switch (node.op) {
    case Op::GetRows:
      return fits_int(inputs[1]->shape.numel(), "row count");
    case Op::RmsNorm:
    case Op::LayerNorm:
      return fits_int(inputs[0]->shape.rows(), "row count");
    case Op::MatMul:
      for (const auto& [v, what] : {std::pair{inputs[0]->shape.rows(), "token count"},
                                    std::pair{inputs[1]->shape[0], "output count"},
                                    std::pair{inputs[1]->shape[1], "input count"}})
        if (why = fits_int(v, what); !why.empty()) return why;
      return "";
    case Op::KvAppend:
      return fits_int(inputs[0]->shape.rows(), "token count");
    case Op::Attention: {
      const TensorInfo &q = *inputs[0], &kc = *inputs[1], &vc = *inputs[2];
      if (kc.dtype != vc.dtype)
        return format_message("attention: K cache %s and V cache %s must share a dtype on cuda",
                              dtype_name(kc.dtype), dtype_name(vc.dtype));
      if (p.head_dim > cuda::kAttentionMaxHeadDim)
        return format_message("attention: head_dim %d is larger than the cuda kernel's %d",
                              p.head_dim, cuda::kAttentionMaxHeadDim);
      return fits_int(q.shape.rows() * p.n_heads, "token x head count");
    }
    case Op::TokenShift:
    case Op::Wkv:
    case Op::Slice:
      return fits_int(inputs[0]->shape.numel(), "element count");
    default:
      return "";
  }
}

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device_index) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    fail("cuda:%d: no usable CUDA driver or device (%s)", device_index, cudaGetErrorString(err));
  }
  if (device_index < 0 || device_index >= n)
    fail("cuda:%d does not exist (%d CUDA device%s found)", device_index, n, n == 1 ? "" : "s");
  return std::make_unique<CudaBackend>(device_index);
}

}  // namespace llm
