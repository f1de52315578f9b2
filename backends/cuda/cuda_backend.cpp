// The CUDA backend: device buffers, op checks, and programs that enqueue the bound
// kernels in order on the backend's one stream. A program captures its launches
// into a CUDA graph on its first run and replays the graph afterwards: every
// per-step value comes from the executor's input buffers, whose addresses never
// change, so the captured kernel arguments stay valid. LLM_CUDA_GRAPHS=0 launches
// the kernels directly instead (for debugging and comparison).
#include "backends/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <unordered_map>

#include "backends/cuda/cuda_common.h"
#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/kernel_timeline.h"
#include "core/error.h"
#include "core/trace.h"

namespace llm {

namespace cuda {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  fail("CUDA error: %s failed at %s:%d: %s (%s)", call, base ? base + 1 : file, line,
       cudaGetErrorString(err), cudaGetErrorName(err));
}

}  // namespace cuda

namespace {

using cuda::Event;
using cuda::GraphExec;
using cuda::PinnedHost;
using cuda::Stream;

constexpr size_t kMiB = size_t{1} << 20;
// cuBLAS workspace: set explicitly so that captured GEMMs never allocate. 32 MiB is
// what NVIDIA recommends for Hopper.
constexpr size_t kCublasWorkspace = 32 * kMiB;
// Upper bound of the f16/bf16 -> f32 weight conversion buffer of the GEMM path.
constexpr size_t kGemmScratchMax = 64 * kMiB;

size_t mib(size_t bytes) { return (bytes + kMiB - 1) / kMiB; }

// Makes `device` current for the calling thread (cheap when it already is).
void use_device(int device) { LLM_CUDA_CHECK(cudaSetDevice(device)); }

class CudaBuffer final : public DeviceBuffer {
 public:
  CudaBuffer(void* data, size_t size, int device)
      : DeviceBuffer(size), data_(static_cast<uint8_t*>(data)), device_(device) {}
  ~CudaBuffer() override {
    // cudaFree waits for the work using it; errors cannot be reported from here.
    if (data_ && cudaSetDevice(device_) == cudaSuccess) cudaFree(data_);
  }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  uint8_t* data() const { return data_; }
  int device() const { return device_; }

  // Set by upload_weight when the buffer holds a quantized matrix in the split layout.
  void set_split(DType t, int64_t N, int64_t K) {
    split_ = true;
    split_type_ = t;
    split_N_ = N;
    split_K_ = K;
  }
  bool holds_split(DType t, int64_t N, int64_t K) const {
    return split_ && split_type_ == t && split_N_ == N && split_K_ == K;
  }

 private:
  uint8_t* data_;
  int device_;
  bool split_ = false;
  DType split_type_ = DType::F32;
  int64_t split_N_ = 0, split_K_ = 0;
};

// Allocates device memory or fails with the message DESIGN.md asks for.
std::unique_ptr<CudaBuffer> device_alloc(int device, size_t bytes, const std::string& what) {
  use_device(device);
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, std::max<size_t>(bytes, 1));
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky: clear it
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail("out of device memory on cuda:%d allocating %zu MiB for %s (free %zu MiB of %zu MiB)",
         device, mib(bytes), what.c_str(), free_b / kMiB, total_b / kMiB);
  }
  if (err != cudaSuccess) cuda::throw_cuda_error(err, "cudaMalloc", __FILE__, __LINE__);
  return std::make_unique<CudaBuffer>(p, bytes, device);
}

const CudaBuffer& cuda_buffer(const DeviceBuffer& b, int device) {
  const CudaBuffer* cb = dynamic_cast<const CudaBuffer*>(&b);
  if (!cb) fail("cuda backend: a buffer of another backend was passed in");
  if (cb->device() != device)
    fail("cuda backend: a buffer of cuda:%d was passed to cuda:%d", cb->device(), device);
  return *cb;
}

void check_range(const DeviceBuffer& b, size_t offset, size_t bytes, const char* what) {
  if (offset > b.size() || bytes > b.size() - offset)
    fail("cuda backend: %s of %zu bytes at offset %zu overruns a buffer of %zu bytes", what, bytes,
         offset, b.size());
}

// What a backend's programs share; programs keep it alive, so they outlive nothing
// they use.
struct Context {
  // The stream belongs to the device current when it is created.
  struct Select {
    explicit Select(int device) { use_device(device); }
  };
  explicit Context(int dev) : device(dev), select(dev) {}

  int device;
  Select select;
  int n_sms = 0;
  int smem_optin = 0;  // shared memory a block may opt into
  bool graphs = true;
  bool profile = false;  // LLM_CUDA_PROFILE=1: time each launch (no graphs)
  bool pdl = true;       // programmatic dependent launch of GEMVs (LLM_CUDA_PDL=0: off)
  // Quantized matmuls of up to this many tokens (beyond the GEMV's) take the MMA
  // kernel, more take cuBLAS (LLM_CUDA_QMMA_MAX_TOKENS overrides; 0: cuBLAS only).
  int64_t qmma_max_tokens = cuda::kQMmaMaxTokens;
  // Quantized matmuls of up to this many tokens take the fused GEMV (LLM_CUDA_QGEMV_MAX_
  // TOKENS overrides, up to kQGemvMaxTokens): beyond a few tokens its 16-bit dot
  // products cost more than the MMA kernel's tensor cores.
  int64_t qgemv_max_tokens = 4;
  // A single row's Sample runs in the GEMV of its logits (LLM_CUDA_FUSE_SAMPLE=0: a
  // launch of its own).
  bool fuse_sample = true;
  // Single-token GEMVs stream their weights through shared memory where it has room
  // (LLM_CUDA_QGEMV_STAGED=0 keeps them in registers: for measuring, and for testing the
  // path of devices with less shared memory).
  bool qgemv_staged = true;
  Stream stream;
  // Small copies (a step's inputs, the fed token, the sampled id) wait here and go out
  // as one launch before the next operation on the stream, with the events recorded
  // after them (LLM_CUDA_SMALL_COPIES=0: a copy-engine operation each).
  bool batch_copies = true;
  cuda::SmallCopies queued;
  std::vector<cudaEvent_t> queued_events;
  std::unique_ptr<CudaBuffer> err_flag;  // one int of ErrorBits
  PinnedHost err_host{sizeof(int)};
  cublasHandle_t cublas = nullptr;
  std::unique_ptr<CudaBuffer> cublas_workspace;
  // Weight conversion buffer of the GEMM path: replaced by a larger one when a new
  // program needs more; programs keep the one their launches point into.
  std::shared_ptr<CudaBuffer> gemm_scratch;
  // f16 tiles of the quantized prefill GEMMs: dequantized weight chunks (the first
  // f16_w16_bytes), then the activations. Shared the same way.
  std::shared_ptr<CudaBuffer> f16_scratch;
  size_t f16_w16_bytes = 0;

  // The stream, after the queued copies: every other operation enqueues through this.
  cudaStream_t ordered() {
    flush_copies();
    return stream.get();
  }

  // Queues a copy of `bytes` for the next flush; false when it is not small (or
  // batching is off) and the caller copies it itself, after ordered().
  bool queue_copy(void* dst, const void* src, size_t bytes) {
    if (!batch_copies || bytes > cuda::kSmallCopyMaxBytes) return false;
    const auto overlaps = [](const void* a, size_t na, const void* b, size_t nb) {
      const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
      return pa < pb + nb && pb < pa + na;
    };
    // Copies of one launch run side by side: one that writes what another touches, or
    // reads what another writes, waits for the next launch.
    for (int k = 0; k < queued.n; k++) {
      const cuda::SmallCopy& q = queued.op[k];
      if (overlaps(dst, bytes, q.dst, q.bytes) || overlaps(dst, bytes, q.src, q.bytes) ||
          overlaps(src, bytes, q.dst, q.bytes)) {
        flush_copies();
        break;
      }
    }
    if (queued.n == cuda::kMaxSmallCopies) flush_copies();
    queued.op[queued.n++] = {dst, src, static_cast<uint32_t>(bytes)};
    return true;
  }

  // Records `e` on the stream after the queued copies (at the next flush).
  void record_after_copies(cudaEvent_t e) {
    if (queued.n == 0) {
      LLM_CUDA_CHECK(cudaEventRecord(e, stream.get()));
      return;
    }
    queued_events.push_back(e);
  }

  void flush_copies() {
    if (queued.n == 0) return;
    const cuda::SmallCopies c = queued;
    queued.n = 0;
    use_device(device);
    cuda::small_copies(stream.get(), c);
    for (cudaEvent_t e : queued_events) LLM_CUDA_CHECK(cudaEventRecord(e, stream.get()));
    queued_events.clear();  // keeps its capacity: no allocation per step
  }

  ~Context() {
    if (cublas) {
      cudaSetDevice(device);
      cudaStreamSynchronize(stream.get());
      cublasDestroy(cublas);
    }
  }

  cublasHandle_t blas() {
    if (!cublas) {
      use_device(device);
      LLM_CUBLAS_CHECK(cublasCreate(&cublas));
      // Float32 GEMMs stay float32: no TF32 tensor-op shortcut.
      LLM_CUBLAS_CHECK(cublasSetMathMode(cublas, CUBLAS_DEFAULT_MATH));
      LLM_CUBLAS_CHECK(cublasSetPointerMode(cublas, CUBLAS_POINTER_MODE_HOST));
      cublas_workspace = device_alloc(device, kCublasWorkspace, "the cuBLAS workspace");
      LLM_CUBLAS_CHECK(
          cublasSetWorkspace(cublas, cublas_workspace->data(), cublas_workspace->size()));
      LLM_CUBLAS_CHECK(cublasSetStream(cublas, stream.get()));
    }
    return cublas;
  }

  // Throws when a kernel has reported a bad index since the last check; call after
  // the stream has been synchronised with err_host copied.
  void raise_device_errors() {
    const int bits = *static_cast<volatile int*>(err_host.get());
    if (!bits) return;
    *static_cast<int*>(err_host.get()) = 0;
    LLM_CUDA_CHECK(cudaMemsetAsync(err_flag->data(), 0, sizeof(int), ordered()));
    std::string what;
    auto add = [&](int bit, const char* text) {
      if (!(bits & bit)) return;
      if (!what.empty()) what += "; ";
      what += text;
    };
    add(cuda::kErrRowId, "get_rows: a row id outside the table");
    add(cuda::kErrSlot, "kv_append: a cache slot outside the cache");
    add(cuda::kErrSeqOrPos, "attention: a sequence id or position outside the block table");
    add(cuda::kErrPage, "attention: a block table entry outside the cache");
    add(cuda::kErrState, "token_shift/wkv: a sequence id or state slot out of range");
    fail("cuda:%d: a kernel was given bad indices (%s); their results were left out", device,
         what.c_str());
  }

  // Waits for the stream and reports bad indices seen by kernels.
  void sync_and_check() {
    LLM_CUDA_CHECK(cudaMemcpyAsync(err_host.get(), err_flag->data(), sizeof(int),
                                   cudaMemcpyDeviceToHost, ordered()));
    LLM_CUDA_CHECK(cudaStreamSynchronize(ordered()));
    raise_device_errors();
  }
};

using Launch = std::function<void(cudaStream_t)>;

class CudaProgram final : public Program {
 public:
  // labels[i] names launch i in the LLM_CUDA_PROFILE=1 breakdown.
  CudaProgram(std::shared_ptr<Context> ctx, std::vector<Launch> launches,
              std::vector<std::string> labels, std::vector<Dispatch> dispatches,
              std::vector<std::shared_ptr<CudaBuffer>> keep)
      : ctx_(std::move(ctx)),
        launches_(std::move(launches)),
        labels_(std::move(labels)),
        dispatches_(std::move(dispatches)),
        keep_(std::move(keep)) {}
  ~CudaProgram() override {
    // A replay may still be reading the scratch this program owns.
    if (cudaSetDevice(ctx_->device) == cudaSuccess) cudaStreamSynchronize(ctx_->stream.get());
    if (profile_runs_ > 0) print_profile();
  }
  CudaProgram(const CudaProgram&) = delete;
  CudaProgram& operator=(const CudaProgram&) = delete;

  void run() override {
    use_device(ctx_->device);
    const cudaStream_t s = ctx_->ordered();
    if (ctx_->profile) {
      const std::vector<double> ms = time_launches(s);
      for (size_t i = 0; i < ms.size(); i++) totals_[i] += ms[i];
      profile_runs_++;
      return;
    }
    if (!ctx_->graphs) {
      for (const Launch& l : launches_) l(s);
      return;
    }
    if (!exec_.ready()) capture(s);
    exec_.launch(s);
  }

  std::vector<Dispatch> dispatches() const override { return dispatches_; }

  std::string profile_method() const override {
    return ctx_->graphs && cuda::KernelTimeline::get()
               ? "CUPTI: kernels of one CUDA graph replay, each charged from the previous "
                 "kernel's end to its own"
               : "CUDA events around each launch, no graph (no CUPTI: launch gaps included)";
  }

  // The graph replayed once with CUPTI recording its kernels, each launch charged
  // with its kernels' shares of the step's timeline (kernel_timeline.h). Without
  // CUPTI, or with graphs off: launches timed one by one between events.
  std::vector<double> run_profiled() override {
    use_device(ctx_->device);
    const cudaStream_t s = ctx_->ordered();
    cuda::KernelTimeline* timeline = ctx_->graphs ? cuda::KernelTimeline::get() : nullptr;
    if (!timeline) return time_launches(s);
    if (kernels_per_launch_.empty()) kernels_per_launch_ = count_kernels(s);
    if (!exec_.ready()) capture(s);
    LLM_CUDA_CHECK(cudaStreamSynchronize(s));
    timeline->begin();
    exec_.launch(s);
    LLM_CUDA_CHECK(cudaStreamSynchronize(s));
    const std::vector<cuda::KernelSpan> spans = timeline->end();
    size_t expected = 0;
    for (int n : kernels_per_launch_) expected += static_cast<size_t>(n);
    if (spans.size() != expected)
      fail("cuda profile: CUPTI saw %zu kernels in a step of %zu", spans.size(), expected);
    const std::vector<double> share = cuda::exclusive_ms(spans);
    std::vector<double> out(launches_.size(), 0.0);
    size_t k = 0;
    for (size_t i = 0; i < launches_.size(); i++)
      for (int j = 0; j < kernels_per_launch_[i]; j++) out[i] += share[k++];
    return out;
  }

 private:
  // Kernel nodes each launch adds to a graph: captured into a throwaway graph (nothing
  // runs), counting after every launch.
  std::vector<int> count_kernels(cudaStream_t s) {
    std::vector<int> counts;
    LLM_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t g = nullptr;
    try {
      size_t seen = 0;
      for (const Launch& l : launches_) {
        l(s);
        cudaStreamCaptureStatus status;
        cudaGraph_t building = nullptr;
        LLM_CUDA_CHECK(cudaStreamGetCaptureInfo(s, &status, nullptr, &building));
        size_t n = 0;
        LLM_CUDA_CHECK(cudaGraphGetNodes(building, nullptr, &n));
        std::vector<cudaGraphNode_t> nodes(n);
        if (n) LLM_CUDA_CHECK(cudaGraphGetNodes(building, nodes.data(), &n));
        size_t kernels = 0;
        for (cudaGraphNode_t node : nodes) {
          cudaGraphNodeType type;
          LLM_CUDA_CHECK(cudaGraphNodeGetType(node, &type));
          kernels += type == cudaGraphNodeTypeKernel;
        }
        counts.push_back(static_cast<int>(kernels - seen));
        seen = kernels;
      }
    } catch (...) {
      cudaStreamEndCapture(s, &g);
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      throw;
    }
    LLM_CUDA_CHECK(cudaStreamEndCapture(s, &g));
    cudaGraphDestroy(g);
    return counts;
  }

  // Direct launches (not the graph) with an event between each pair: the GPU time of
  // each launch in ms. Waits for the stream.
  std::vector<double> time_launches(cudaStream_t s) {
    if (events_.empty()) {
      for (size_t i = 0; i <= launches_.size(); i++) events_.push_back(std::make_unique<Event>());
      totals_.assign(launches_.size(), 0.0);
    }
    // A spinning kernel first holds the stream while the host enqueues everything, so
    // the events time the launches back to back rather than the host's pace.
    cuda::spin(s, std::min<double>(100e3, 25.0 * static_cast<double>(launches_.size())));
    for (size_t i = 0; i < launches_.size(); i++) {
      LLM_CUDA_CHECK(cudaEventRecord(events_[i]->get(), s));
      launches_[i](s);
    }
    LLM_CUDA_CHECK(cudaEventRecord(events_.back()->get(), s));
    LLM_CUDA_CHECK(cudaEventSynchronize(events_.back()->get()));
    std::vector<double> out(launches_.size());
    for (size_t i = 0; i < launches_.size(); i++) {
      float ms = 0.f;
      LLM_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i]->get(), events_[i + 1]->get()));
      out[i] = ms;
    }
    return out;
  }

  void print_profile() const {
    print_label_profile("cuda:" + std::to_string(ctx_->device), "launches", launches_.size(),
                        labels_, totals_, profile_runs_);
  }

  void capture(cudaStream_t s) {
    // Thread-local mode: other threads' CUDA calls do not break the capture.
    LLM_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    try {
      for (const Launch& l : launches_) l(s);
    } catch (...) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(s, &g);  // leave capture mode before reporting
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      throw;
    }
    cudaGraph_t g = nullptr;
    LLM_CUDA_CHECK(cudaStreamEndCapture(s, &g));
    exec_.instantiate(g);
  }

  std::shared_ptr<Context> ctx_;
  std::vector<Launch> launches_;
  std::vector<std::string> labels_;
  std::vector<Dispatch> dispatches_;
  std::vector<std::shared_ptr<CudaBuffer>> keep_;  // scratch the launches point into
  GraphExec exec_;
  std::vector<std::unique_ptr<Event>> events_;  // profiled runs only
  std::vector<double> totals_;
  int profile_runs_ = 0;
  std::vector<int> kernels_per_launch_;  // CUPTI profiles only
};

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

  std::unique_ptr<Program> compile(std::vector<BoundNode> nodes) override;

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

// A bound tensor as a device pointer.
struct Arg {
  uint8_t* ptr = nullptr;
  DType dtype = DType::F32;
  Shape shape;
  const float* f32() const { return reinterpret_cast<const float*>(ptr); }
  float* f32_mut() const { return reinterpret_cast<float*>(ptr); }
  const int32_t* i32() const { return reinterpret_cast<const int32_t*>(ptr); }
  int32_t* i32_mut() const { return reinterpret_cast<int32_t*>(ptr); }
};

// Device memory a tensor occupies, for the aliasing rules of fused launches.
struct Region {
  const uint8_t* p = nullptr;
  size_t bytes = 0;
  bool overlaps(const Region& o) const {
    return p && o.p && bytes && o.bytes && p < o.p + o.bytes && o.p < p + bytes;
  }
};
Region region_of(const Arg& a) { return {a.ptr, tensor_bytes(a.dtype, a.shape)}; }

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Scratch the launches of a program read at run time; allocated once the program's
// launches are known, before its first run.
struct Scratch {
  float* gemm = nullptr;  // f16/bf16 -> f32 weight chunks (SGEMM path)
  size_t gemm_floats = 0;
  __half* w16 = nullptr;  // quantized -> f16 weight chunks (tensor-core path)
  size_t w16_elems = 0;
  __half* x16 = nullptr;      // activations as f16 (tensor-core path)
  float* partials = nullptr;  // split attention
  int* counters = nullptr;    // decode attention: splits finished per (token, kv head)
  void* sample = nullptr;     // the GEMV's Sample epilogue (zeroed once)
};

// Most f16 elements of one dequantized weight chunk (32 MiB: mostly still in L2 when the
// GEMM reads what the dequantizing kernel wrote, and GEMMs large enough to fill the GPU).
constexpr size_t kW16ChunkElems = size_t{16} << 20;

// compile() turns the bound nodes into a list of launches, in order. Most nodes are one
// launch each; a few patterns of the transformer step run as one fused launch:
//  - consecutive matmuls of one x (q/k/v, gate/up) share a GEMV launch (decode);
//  - for quantized weights (decode) that launch also takes the RmsNorm producing x
//    (as its prologue) and the residual Add or SiluMul consuming its outputs (as its
//    epilogue);
//  - batched decode (more tokens, up to qmma_max_tokens) groups them the same way in
//    one MMA launch, whose conversion of x computes the RmsNorm or SiluMul producing x
//    and whose output stage adds the residual;
//  - Rope(q), Rope(k), KvAppend(k), KvAppend(v) run as one launch.
// Fusions need the nodes' tensor ids (Node::inputs matching the bound inputs). A fused
// launch computes the same values as the separate ones; it writes every tensor the
// separate launches write, except one whose memory the planner gave to a tensor the
// same launch writes later (so it was dead by then), and it is used only when no tensor
// it writes shares memory with one it reads (a multi-block kernel cannot order those).
std::unique_ptr<Program> CudaBackend::compile(std::vector<BoundNode> nodes) {
  use_device(ctx_->device);
  // Shared memory limits first: qmma_splits asks the occupancy API, which counts them.
  cuda::qgemv_prepare(ctx_->smem_optin);
  cuda::qmma_prepare(ctx_->smem_optin);
  cuda::rope_kv_prepare();
  const int device = ctx_->device;
  const int n_sms = ctx_->n_sms, smem_optin = ctx_->smem_optin;
  auto resolve = [&](const TensorRef& r, const std::string& node, const char* what) {
    if (!r.buffer) fail("cuda backend: node '%s': %s has no buffer", node.c_str(), what);
    const size_t bytes = tensor_bytes(r.dtype, r.shape);
    if (r.offset > r.buffer->size() || bytes > r.buffer->size() - r.offset)
      fail("cuda backend: node '%s': %s (%zu bytes at %zu) overruns its buffer of %zu bytes",
           node.c_str(), what, bytes, r.offset, r.buffer->size());
    return Arg{cuda_buffer(*r.buffer, device).data() + r.offset, r.dtype, r.shape};
  };

  const size_t n_nodes = nodes.size();
  std::vector<std::vector<Arg>> ins(n_nodes);
  std::vector<Arg> outs(n_nodes);
  bool ids = true;
  for (size_t i = 0; i < n_nodes; i++) {
    const BoundNode& bn = nodes[i];
    check_bound(bn, "cuda backend");
    const Node& node = *bn.node;
    for (const TensorRef& r : bn.inputs) ins[i].push_back(resolve(r, node.name, "an input"));
    outs[i] = resolve(bn.output, node.name, "the output");
    if (node.inputs.size() != bn.inputs.size()) ids = false;
  }

  // Dataflow by tensor id: which node reads each tensor last.
  std::unordered_map<TensorId, int> last_use;
  if (ids) {
    for (size_t i = 0; i < n_nodes; i++)
      for (TensorId id : nodes[i].node->inputs) last_use[id] = static_cast<int>(i);
  }
  auto in_id = [&](size_t i, size_t k) { return nodes[i].node->inputs[k]; };
  auto out_id = [&](size_t i) { return nodes[i].node->output; };
  auto op_at = [&](size_t i) { return i < n_nodes ? nodes[i].node->op : Op::kCount; };

  auto scratch = std::make_shared<Scratch>();
  size_t need_gemm = 0, need_w16 = 0, need_x16 = 0, need_partials = 0, need_counters = 0;
  bool need_sample = false;
  std::vector<std::shared_ptr<CudaBuffer>> keep;
  std::vector<Launch> launches;
  std::vector<std::string> labels;
  // For Program::dispatches(): each launch's kernel, and the first node of the loop
  // iteration that emitted it (an iteration covers its node and those it fused).
  std::vector<std::string> kernels;
  std::vector<size_t> launch_iter, iter_starts;
  // Launches whose kernel lets the next one start only after its own programmatic-launch
  // wait (the GEMVs): everything before them is then complete.
  std::vector<bool> triggers_after_wait;
  size_t iter_first = 0;
  launches.reserve(n_nodes);
  auto emit = [&](std::string label, Launch l, std::string kernel = "", bool late_trigger = false) {
    kernels.push_back(kernel.empty() ? label : std::move(kernel));
    labels.push_back(std::move(label));
    launches.push_back(std::move(l));
    launch_iter.push_back(iter_first);
    triggers_after_wait.push_back(late_trigger);
  };
  int* err = reinterpret_cast<int*>(ctx_->err_flag->data());

  // Whether `a`, read by node `reader`, is complete whenever the next launch starts, so
  // that launch may read it before its programmatic-launch wait. The next launch starts
  // when the one before it triggers; a launch that triggers after its own wait has
  // everything before it complete, others may trigger at their start, so a run of them
  // just before lets the next launch start that much earlier.
  auto written_before_previous_starts = [&](const Arg& a, size_t reader) {
    const Region r = region_of(a);
    size_t n = reader;
    while (n > 0 && !region_of(outs[n - 1]).overlaps(r)) n--;
    if (n == 0) return true;      // written before the program runs
    const size_t writer = n - 1;  // the last node before `reader` whose output overlaps `a`
    // The writer's iteration's last launch (launch_iter rises with the launches).
    const auto after = std::upper_bound(launch_iter.begin(), launch_iter.end(), writer);
    const int64_t last = (after - launch_iter.begin()) - 1;
    if (last < 0) return true;
    int64_t complete = static_cast<int64_t>(launches.size()) - 2;  // before the last late trigger
    while (complete >= 0 && !triggers_after_wait[complete + 1]) complete--;
    return last <= complete;
  };

  // A quantized matrix as the kernels read it: in place when upload_weight stored it,
  // else (raw GGUF blocks in an ordinary buffer) repacked into a buffer of this program
  // at the start of every run, so later uploads to the raw buffer are seen.
  auto qview = [&](size_t i, size_t k) {
    const Arg& a = ins[i][k];
    const int64_t N = a.shape.rows(), K = a.shape.row_len();
    const TensorRef& r = nodes[i].inputs[k];
    const CudaBuffer& b = cuda_buffer(*r.buffer, device);
    if (r.offset == 0 && b.holds_split(a.dtype, N, K))
      return cuda::qsplit_view(b.data(), a.dtype, N, K);
    keep.push_back(
        device_alloc(device, cuda::qsplit_bytes(a.dtype, N, K), "a repacked quantized tensor"));
    uint8_t* dst = keep.back()->data();
    const uint8_t* src = a.ptr;
    const DType t = a.dtype;
    emit(format_message("repack %s", dtype_name(t)),
         [=](cudaStream_t s) { cuda::repack_quant(s, src, t, N, K, dst); });
    return cuda::qsplit_view(dst, t, N, K);
  };

  auto qgemv_ok = [&](size_t i) {
    if (op_at(i) != Op::MatMul || !is_quant(ins[i][1].dtype)) return false;
    const int64_t T = ins[i][0].shape.rows(), K = ins[i][0].shape.row_len();
    return T <= ctx_->qgemv_max_tokens && cuda::qgemv_smem_bytes(T, K) <= cuda::kQGemvMaxSmem &&
           aligned16(ins[i][0].ptr);
  };
  // Matmuls of one x and one weight dtype.
  auto same_x = [&](size_t i, size_t j) {
    if (op_at(i) != Op::MatMul || op_at(j) != Op::MatMul) return false;
    const BoundNode &a = nodes[i], &b = nodes[j];
    return b.inputs[0].buffer == a.inputs[0].buffer && b.inputs[0].offset == a.inputs[0].offset &&
           b.inputs[0].shape == a.inputs[0].shape && b.inputs[1].dtype == a.inputs[1].dtype;
  };

  // Rope(q), Rope(k), KvAppend(k), KvAppend(v) at ni: their arguments as one launch's.
  auto rope_kv_at = [&](size_t ni, cuda::RopeKvArgs& a) -> bool {
    if (!ids || op_at(ni) != Op::Rope || op_at(ni + 1) != Op::Rope ||
        op_at(ni + 2) != Op::KvAppend || op_at(ni + 3) != Op::KvAppend)
      return false;
    const OpParams &pq = nodes[ni].node->params, &pk = nodes[ni + 1].node->params;
    const std::vector<Arg>&q = ins[ni], &k = ins[ni + 1], &ak = ins[ni + 2], &av = ins[ni + 3];
    const int64_t T = q[0].shape.rows();
    if (in_id(ni, 1) != in_id(ni + 1, 1) || in_id(ni, 2) != in_id(ni + 1, 2) ||
        in_id(ni + 2, 0) != out_id(ni + 1) || in_id(ni + 3, 1) != in_id(ni + 2, 1) ||
        pq.head_dim != pk.head_dim || pq.rot_dims != pk.rot_dims ||
        pq.rope_style != pk.rope_style || k[0].shape.rows() != T || av[0].shape != ak[0].shape ||
        av[0].shape.rows() != T || ak[2].dtype != av[2].dtype || ak[2].shape != av[2].shape ||
        av[0].shape.row_len() != int64_t{pk.n_heads} * pk.head_dim)
      return false;
    a = cuda::RopeKvArgs{};
    a.q = q[0].f32();
    a.k = k[0].f32();
    a.v = av[0].f32();
    a.positions = q[1].i32();
    a.inv_freq = q[2].f32();
    a.slots = ak[1].i32();
    a.q_out = outs[ni].f32_mut();
    // The rotated k is written out only when a node after the cache write reads it.
    const auto k_use = last_use.find(out_id(ni + 1));
    a.k_out = k_use != last_use.end() && k_use->second > static_cast<int>(ni) + 2
                  ? outs[ni + 1].f32_mut()
                  : nullptr;
    a.k_cache = outs[ni + 2].ptr;
    a.v_cache = outs[ni + 3].ptr;
    a.cache_type = ak[2].dtype;
    a.cache_rows = ak[2].shape.rows();
    a.T = T;
    a.n_heads = pq.n_heads;
    a.n_kv_heads = pk.n_heads;
    a.head_dim = pq.head_dim;
    a.rot_dims = pq.rot_dims;
    a.style = pq.rope_style;
    a.err = err;
    // Byte ranges: an output may be its own input exactly, but must not overlap any
    // other input (the planner may reuse a dead q for k's output, say).
    auto range = [](const void* p, int64_t n) {
      const uint8_t* b = static_cast<const uint8_t*>(p);
      return std::make_pair(b, b + n * 4);
    };
    auto overlap = [](std::pair<const uint8_t*, const uint8_t*> x,
                      std::pair<const uint8_t*, const uint8_t*> y) {
      return x.first < y.second && y.first < x.second;
    };
    const int64_t nq = T * pq.n_heads * pq.head_dim, nk = T * pk.n_heads * pk.head_dim;
    const auto rq = range(a.q, nq), rk = range(a.k, nk), rv = range(a.v, nk);
    const auto oq = range(a.q_out, nq), ok = range(a.k_out, nk);
    a.heads_apart = (a.q_out == a.q || !overlap(oq, rq)) && !overlap(oq, rk) && !overlap(oq, rv) &&
                    (!a.k_out || ((a.k_out == a.k || !overlap(ok, rk)) && !overlap(ok, rq) &&
                                  !overlap(ok, rv) && !overlap(ok, oq)));
    // Without that, one block stages everything (so only a few tokens).
    return a.heads_apart ||
           cuda::rope_kv_smem_bytes(T, pq.n_heads, pk.n_heads, pq.head_dim) <= cuda::kRopeKvMaxSmem;
  };

  // Tries the quantized GEMV group that starts at ni (an RmsNorm feeding it, or the
  // first matmul); returns the index of the last node it covers, or -1.
  auto try_qgemv = [&](size_t ni) -> int64_t {
    const bool has_norm =
        ids && op_at(ni) == Op::RmsNorm && qgemv_ok(ni + 1) && in_id(ni + 1, 0) == out_id(ni);
    const size_t m0 = has_norm ? ni + 1 : ni;
    if (!qgemv_ok(m0)) return -1;
    size_t m1 = m0;
    while (m1 + 1 - m0 < static_cast<size_t>(cuda::kGemvMaxSegs) && same_x(m0, m1 + 1)) m1++;
    // Epilogue candidates.
    cuda::QEpilogue epi = cuda::QEpilogue::None;
    size_t res_k = 0;
    const size_t e = m1 + 1;
    if (ids && op_at(e) == Op::SiluMul && m1 == m0 + 1 && in_id(e, 0) == out_id(m0) &&
        in_id(e, 1) == out_id(m1) && ins[m0][1].shape[0] == ins[m1][1].shape[0]) {
      epi = cuda::QEpilogue::SiluPair;
    } else if (ids && op_at(e) == Op::Add && m1 == m0) {
      for (size_t k = 0; k < 2; k++) {
        if (in_id(e, k) == out_id(m0) && in_id(e, 1 - k) != out_id(m0) &&
            ins[e][1 - k].shape.numel() == outs[m0].shape.numel()) {
          epi = cuda::QEpilogue::Residual;
          res_k = 1 - k;
        }
      }
    } else if (ids && op_at(e) == Op::Sample && ctx_->fuse_sample && m1 == m0 &&
               in_id(e, 0) == out_id(m0) && outs[m0].shape.rows() == 1 &&
               outs[e].shape.numel() == 1) {
      epi = cuda::QEpilogue::Sample;
    }
    // q, k and v, then their rope and cache appends (the rope_kv launch's nodes).
    cuda::RopeKvArgs rope;
    if (ids && epi == cuda::QEpilogue::None && m1 == m0 + 2 && rope_kv_at(e, rope) &&
        in_id(e, 0) == out_id(m0) && in_id(e + 1, 0) == out_id(m0 + 1) &&
        in_id(e + 3, 0) == out_id(m0 + 2))
      epi = cuda::QEpilogue::RopeKv;
    const size_t e_last = epi == cuda::QEpilogue::RopeKv ? e + 3 : e;
    // With the rope epilogue a product is written only when a node after it reads it.
    auto y_needed = [&](size_t m, bool use_epi) {
      if (!use_epi || epi != cuda::QEpilogue::RopeKv) return true;
      const auto lu = last_use.find(out_id(m));
      return lu != last_use.end() && lu->second > static_cast<int>(e_last);
    };
    std::vector<bool> variants = {epi != cuda::QEpilogue::None};
    if (variants[0]) variants.push_back(false);
    for (const bool use_epi : variants) {
      // Reads and writes of the fused launch.
      std::vector<Region> reads, writes;
      reads.push_back(region_of(has_norm ? ins[ni][0] : ins[m0][0]));
      if (has_norm) reads.push_back(region_of(ins[ni][1]));
      for (size_t m = m0; m <= m1; m++) {
        if (y_needed(m, use_epi)) writes.push_back(region_of(outs[m]));
        if (ins[m].size() > 2) reads.push_back(region_of(ins[m][2]));
      }
      if (use_epi && epi == cuda::QEpilogue::RopeKv) {
        writes.push_back(region_of(outs[e]));
        if (rope.k_out) writes.push_back(region_of(outs[e + 1]));
        writes.push_back(region_of(outs[e + 2]));
        writes.push_back(region_of(outs[e + 3]));
        for (size_t k = 1; k < 3; k++) reads.push_back(region_of(ins[e][k]));
        reads.push_back(region_of(ins[e + 2][1]));
      } else if (use_epi && epi != cuda::QEpilogue::Sample) {
        writes.push_back(region_of(outs[e]));
        if (epi == cuda::QEpilogue::Residual) reads.push_back(region_of(ins[e][res_k]));
      }
      // The normalized x is written only for readers after this launch (so no output of
      // the launch can share its memory).
      const size_t last = use_epi ? e_last : m1;
      const auto lu = has_norm ? last_use.find(out_id(ni)) : last_use.end();
      const bool write_norm =
          has_norm && lu != last_use.end() && lu->second > static_cast<int>(last);
      if (write_norm) writes.push_back(region_of(outs[ni]));
      bool ok = true;
      for (size_t a = 0; a < writes.size() && ok; a++) {
        for (const Region& r : reads) ok = ok && !writes[a].overlaps(r);
        for (size_t b = a + 1; b < writes.size(); b++) ok = ok && !writes[a].overlaps(writes[b]);
      }
      // The sampled id is written last, by the last block, once every block has read all
      // it reads (the planner may give it the memory of the dead x): only other writes
      // must keep off it.
      if (use_epi && epi == cuda::QEpilogue::Sample)
        for (const Region& w : writes) ok = ok && !w.overlaps(region_of(outs[e]));
      // Plain grouping reads x and writes outputs whose lifetimes overlap it: always fine.
      if (!ok && (has_norm || use_epi)) continue;

      cuda::QGemvArgs qa;
      qa.x = has_norm ? ins[ni][0].f32() : ins[m0][0].f32();
      qa.T = ins[m0][0].shape.rows();
      qa.K = ins[m0][0].shape.row_len();
      qa.type = ins[m0][1].dtype;
      qa.n_segs = static_cast<int>(m1 - m0 + 1);
      std::string label =
          format_message("qmatmul %s T=%lld:", dtype_name(qa.type), (long long)qa.T);
      std::string kernel = format_message("qgemv_%s", dtype_name(qa.type));
      const size_t launches_before = launches.size();
      for (size_t m = m0; m <= m1; m++) {
        cuda::QGemvSeg& sg = qa.segs[m - m0];
        sg.w = qview(m, 1);
        if (ins[m].size() > 2) {
          sg.bias = ins[m][2].ptr;
          sg.bias_type = ins[m][2].dtype;
        }
        sg.y = y_needed(m, use_epi) ? outs[m].f32_mut() : nullptr;
        label += format_message(" [%lld x %lld]", (long long)sg.w.N, (long long)qa.K);
      }
      if (has_norm) {
        qa.norm_w = ins[ni][1].ptr;
        qa.norm_type = ins[ni][1].dtype;
        qa.eps = nodes[ni].node->params.eps;
        qa.norm_out = write_norm ? outs[ni].f32_mut() : nullptr;
        label += " +rms_norm";
        kernel += "+rms_norm";
      }
      const bool samples = use_epi && epi == cuda::QEpilogue::Sample;
      if (use_epi && epi == cuda::QEpilogue::RopeKv) {
        qa.epilogue = epi;
        qa.rope = rope;
        label += " +rope+kv_append";
        kernel += "+rope+kv";
      } else if (samples) {
        qa.epilogue = epi;
        qa.sample_params = ins[e][1].f32();
        qa.sample_out = outs[e].i32_mut();
        need_sample = true;
        label += " +sample";
        kernel += "+sample";
      } else if (use_epi) {
        qa.epilogue = epi;
        qa.out2 = outs[e].f32_mut();
        if (epi == cuda::QEpilogue::Residual) {
          qa.residual = ins[e][res_k].f32();
          label += " +residual";
          kernel += "+residual";
        } else {
          label += " +silu_mul";
          kernel += "+silu_mul";
        }
      }
      // Weights repacked by a launch of this program are written just before: no early
      // start then.
      qa.pdl = ctx_->pdl && launches.size() == launches_before;
      qa.allow_staged = ctx_->qgemv_staged;
      if (qa.residual && qa.pdl)
        qa.residual_early = written_before_previous_starts(ins[e][res_k], e);
      // The Sample epilogue's scratch is allocated once the program's launches are known.
      emit(
          label,
          [=](cudaStream_t s) {
            if (!samples) return cuda::qgemv(s, qa, n_sms, smem_optin);
            cuda::QGemvArgs a = qa;
            a.sample_scratch = scratch->sample;
            cuda::qgemv(s, a, n_sms, smem_optin);
          },
          kernel, /*late_trigger=*/true);
      return static_cast<int64_t>(use_epi ? e_last : m1);
    }
    return -1;
  };

  // Batched decode and short prefill: quantized matmuls of one x (up to kQMmaMaxSegs)
  // as one MMA launch. The conversion of x to f16 computes the RmsNorm or SiluMul that
  // produced x (so it needs no launch of its own), and a residual Add after a single
  // matmul runs in the kernel that writes its y. Returns the last node covered, or -1.
  struct X16 {
    const uint8_t* ptr = nullptr;
    Shape shape;
    bool fragment_order = false;  // qmma's layout, else row-major (qgemm)
  };
  // (Not what the GEMV takes: its 16-bit activations are more exact than f16.)
  auto qmma_ok = [&](size_t i) {
    if (op_at(i) != Op::MatMul || !is_quant(ins[i][1].dtype) || qgemv_ok(i)) return false;
    const Arg& x = ins[i][0];
    return x.shape.rows() <= ctx_->qmma_max_tokens && aligned16(x.ptr) &&
           cuda::qmma_fits(ins[i][1].dtype, x.shape.rows(), smem_optin);
  };
  // Element-wise reads and writes may share memory exactly, not in part.
  auto same_or_apart = [](const Region& a, const Region& b) {
    return !a.overlaps(b) || (a.p == b.p && a.bytes == b.bytes);
  };
  auto try_qmma = [&](size_t ni, const X16& x16_before, X16& x16_after) -> int64_t {
    const Op pro_op = op_at(ni);
    const bool has_pro = ids && (pro_op == Op::RmsNorm || pro_op == Op::SiluMul) &&
                         qmma_ok(ni + 1) && in_id(ni + 1, 0) == out_id(ni) &&
                         ins[ni][0].shape == outs[ni].shape &&
                         (pro_op == Op::RmsNorm || ins[ni][1].shape == outs[ni].shape);
    const size_t m0 = has_pro ? ni + 1 : ni;
    if (!qmma_ok(m0)) return -1;
    size_t m1 = m0;
    while (m1 + 1 - m0 < static_cast<size_t>(cuda::kQMmaMaxSegs) && same_x(m0, m1 + 1)) m1++;
    // The residual Add: y of the single matmul plus the other input, of y's shape.
    const size_t e = m1 + 1;
    int res_k = -1;
    if (ids && m1 == m0 && op_at(e) == Op::Add) {
      for (int k = 0; k < 2; k++)
        if (in_id(e, k) == out_id(m0) && in_id(e, 1 - k) != out_id(m0) &&
            ins[e][1 - k].shape == outs[m0].shape && outs[e].shape == outs[m0].shape)
          res_k = 1 - k;
    }
    if (res_k >= 0 && !same_or_apart(region_of(outs[e]), region_of(ins[e][res_k]))) res_k = -1;
    const size_t last = res_k >= 0 ? e : m1;
    auto read_after = [&](TensorId id) {
      const auto lu = last_use.find(id);
      return lu != last_use.end() && lu->second > static_cast<int>(last);
    };
    cuda::QMmaConvertArgs cv;
    cv.T = ins[m0][0].shape.rows();
    cv.K = ins[m0][0].shape.row_len();
    cv.x = ins[m0][0].f32();
    std::string suffix;
    if (has_pro) {
      // The node's own output only for readers after the launch; it may be its input.
      const Arg& in0 = ins[ni][0];
      if (!aligned16(in0.ptr)) return -1;
      cv.x = in0.f32();
      cv.out = read_after(out_id(ni)) ? outs[ni].f32_mut() : nullptr;
      if (pro_op == Op::RmsNorm) {
        cv.kind = cuda::QMmaInput::RmsNorm;
        cv.norm_w = ins[ni][1].ptr;
        cv.norm_type = ins[ni][1].dtype;
        cv.eps = nodes[ni].node->params.eps;
        suffix = "+rms_norm";
      } else {
        if (!aligned16(ins[ni][1].ptr)) return -1;
        cv.kind = cuda::QMmaInput::SiluMul;
        cv.x2 = ins[ni][1].f32();
        suffix = "+silu_mul";
      }
      if (cv.out) {
        const Region o = region_of(outs[ni]);
        for (size_t k = 0; k < (pro_op == Op::SiluMul ? 2 : 1); k++)
          if (!same_or_apart(o, region_of(ins[ni][k]))) return -1;
      }
    }
    const bool convert =
        has_pro || !(x16_before.ptr == ins[m0][0].ptr && x16_before.shape == ins[m0][0].shape &&
                     x16_before.fragment_order);

    cuda::QMmaArgs qa;
    qa.T = cv.T;
    qa.n_segs = static_cast<int>(m1 - m0 + 1);
    std::string label =
        format_message("qmatmul %s T=%lld:", dtype_name(ins[m0][1].dtype), (long long)qa.T);
    for (size_t m = m0; m <= m1; m++) {
      cuda::QMmaSeg& sg = qa.segs[m - m0];
      sg.w = qview(m, 1);
      if (ins[m].size() > 2) {
        sg.bias = ins[m][2].ptr;
        sg.bias_type = ins[m][2].dtype;
      }
      // With the residual epilogue y itself only for readers after the Add.
      sg.y = res_k < 0 || read_after(out_id(m)) ? outs[m].f32_mut() : nullptr;
      label += format_message(" [%lld x %lld]", (long long)sg.w.N, (long long)cv.K);
    }
    if (res_k >= 0) {
      qa.residual = ins[e][res_k].f32();
      qa.out2 = outs[e].f32_mut();
      suffix += "+residual";
    }
    qa.splits = cuda::qmma_splits(qa, n_sms);
    need_x16 = std::max(need_x16, cuda::qmma_x16_elems(qa.T, cv.K));
    need_partials = std::max(need_partials, cuda::qmma_partials_floats(qa));
    emit(
        label + (suffix.empty() ? "" : " " + suffix),
        [=](cudaStream_t s) {
          if (convert) cuda::qmma_convert(s, cv, scratch->x16);
          cuda::QMmaArgs a = qa;
          a.x16 = scratch->x16;
          a.partials = scratch->partials;
          cuda::qmma(s, a);
        },
        format_message("qmma_%s%s", dtype_name(ins[m0][1].dtype), suffix.c_str()));
    x16_after = X16{ins[m0][0].ptr, ins[m0][0].shape, true};
    return static_cast<int64_t>(last);
  };

  // The four as one launch (a block per head, or one block staging everything).
  auto try_rope_kv = [&](size_t ni) -> bool {
    cuda::RopeKvArgs a;
    if (!rope_kv_at(ni, a)) return false;
    emit("rope+kv_append", [=](cudaStream_t s) { cuda::rope_kv(s, a); });
    return true;
  };

  // A GEMV (few tokens) reads x once per weight row; consecutive matmuls of one x
  // (q/k/v, gate/up) share one launch, which saves launches and fills the GPU better
  // for the small matrices. The results are the same bits as separate launches.
  X16 x16_holds;  // what the f16 activation scratch holds at this point of the program
  for (size_t ni = 0; ni < n_nodes; ni++) {
    iter_first = ni;
    iter_starts.push_back(ni);
    const BoundNode& bn = nodes[ni];
    const Node& node = *bn.node;
    const OpParams p = node.params;
    const std::vector<Arg>& in = ins[ni];
    const Arg out = outs[ni];
    const X16 x16_before = x16_holds;
    x16_holds = X16{};

    if (node.op == Op::RmsNorm || node.op == Op::MatMul) {
      const int64_t last = try_qgemv(ni);
      if (last >= 0) {
        ni = static_cast<size_t>(last);
        continue;
      }
    }
    if (node.op == Op::RmsNorm || node.op == Op::SiluMul || node.op == Op::MatMul) {
      const int64_t last = try_qmma(ni, x16_before, x16_holds);
      if (last >= 0) {
        ni = static_cast<size_t>(last);
        continue;
      }
    }
    if (try_rope_kv(ni)) {
      ni += 3;
      continue;
    }
    if (node.op == Op::MatMul && is_quant(in[1].dtype)) {
      // Prefill: dequantized f16 chunks on the tensor cores.
      const Arg x = in[0];
      const int64_t T = x.shape.rows(), K = x.shape.row_len(), N = in[1].shape.rows();
      const Arg b = in.size() > 2 ? in[2] : Arg{};
      const cuda::QMatrix w = qview(ni, 1);
      need_w16 = std::max(need_w16, std::min<size_t>(static_cast<size_t>(N) * K,
                                                     std::max<size_t>(kW16ChunkElems, K)));
      need_x16 = std::max(need_x16, static_cast<size_t>(T * K));
      const bool convert =
          !(x16_before.ptr == x.ptr && x16_before.shape == x.shape && !x16_before.fragment_order);
      cublasHandle_t blas = ctx_->blas();
      emit(
          format_message("qmatmul %s T=%lld: [%lld x %lld]", dtype_name(w.type), (long long)T,
                         (long long)N, (long long)K),
          [=](cudaStream_t s) {
            cuda::qgemm(blas, s, x.f32(), w, b.ptr, b.dtype, out.f32_mut(), T, scratch->x16,
                        convert, scratch->w16, scratch->w16_elems);
          },
          format_message("qgemm_%s (cublas f16)", dtype_name(w.type)));
      x16_holds = X16{x.ptr, x.shape, false};
      continue;
    }
    if (node.op == Op::MatMul && in[0].shape.rows() <= cuda::kGemvMaxTokens) {
      const Arg x = in[0];
      const int64_t T = x.shape.rows(), K = x.shape.row_len();
      const DType wt = in[1].dtype;
      std::vector<cuda::GemvSeg> segs;
      auto add_seg = [&](const std::vector<Arg>& a, const Arg& y) {
        cuda::GemvSeg sg;
        sg.w = a[1].ptr;
        sg.N = a[1].shape[0];
        if (a.size() > 2) {
          sg.bias = a[2].ptr;
          sg.bias_type = a[2].dtype;
        }
        sg.y = y.f32_mut();
        segs.push_back(sg);
      };
      add_seg(in, out);
      const size_t first = ni;
      while (segs.size() < static_cast<size_t>(cuda::kGemvMaxSegs) && same_x(first, ni + 1)) {
        ni++;
        add_seg(ins[ni], outs[ni]);
      }
      std::string label = format_message("matmul %s T=%lld:", dtype_name(wt), (long long)T);
      for (const cuda::GemvSeg& sg : segs)
        label += format_message(" [%lld x %lld]", (long long)sg.N, (long long)K);
      emit(
          label,
          [=](cudaStream_t s) {
            cuda::gemv(s, x.f32(), segs.data(), static_cast<int>(segs.size()), wt, T, K);
          },
          format_message("gemv_%s", dtype_name(wt)));
      continue;
    }

    std::string label = op_name(node.op);
    if (node.op == Op::MatMul)
      label = format_message("matmul %s T=%lld: [%lld x %lld]", dtype_name(in[1].dtype),
                             (long long)in[0].shape.rows(), (long long)in[1].shape[0],
                             (long long)in[1].shape[1]);
    switch (node.op) {
      case Op::GetRows: {
        const Arg table = in[0], ids_arg = in[1];
        if (is_quant(table.dtype)) {
          const cuda::QMatrix q = qview(ni, 0);
          emit(format_message("get_rows %s", dtype_name(table.dtype)), [=](cudaStream_t s) {
            cuda::get_rows_quant(s, q, ids_arg.i32(), ids_arg.shape.numel(), out.f32_mut(), err);
          });
          break;
        }
        emit(label, [=](cudaStream_t s) {
          cuda::get_rows(s, table.ptr, table.dtype, table.shape.rows(), table.shape.row_len(),
                         ids_arg.i32(), ids_arg.shape.numel(), out.f32_mut(), err);
        });
        break;
      }
      case Op::RmsNorm: {
        const Arg x = in[0], w = in[1];
        emit(label, [=](cudaStream_t s) {
          cuda::rms_norm(s, x.f32(), w.ptr, w.dtype, out.f32_mut(), x.shape.rows(),
                         x.shape.row_len(), p.eps);
        });
        break;
      }
      case Op::LayerNorm: {
        const Arg x = in[0], w = in[1];
        const Arg b = in.size() > 2 ? in[2] : Arg{};
        emit(label, [=](cudaStream_t s) {
          cuda::layer_norm(s, x.f32(), w.ptr, w.dtype, b.ptr, b.dtype, out.f32_mut(),
                           x.shape.rows(), x.shape.row_len(), p.eps);
        });
        break;
      }
      case Op::MatMul: {
        // Many tokens, float weights: SGEMM in float32.
        const Arg x = in[0], w = in[1];
        const Arg b = in.size() > 2 ? in[2] : Arg{};
        const int64_t T = x.shape.rows(), K = x.shape.row_len(), N = w.shape[0];
        if (w.dtype != DType::F32) {
          const size_t rows = std::max<size_t>(
              1, std::min<size_t>(N, kGemmScratchMax / 4 / static_cast<size_t>(K)));
          need_gemm = std::max(need_gemm, rows * K);
        }
        cublasHandle_t blas = ctx_->blas();
        emit(
            label,
            [=](cudaStream_t s) {
              const bool f32 = w.dtype == DType::F32;
              cuda::gemm(blas, s, x.f32(), w.ptr, w.dtype, b.ptr, b.dtype, out.f32_mut(), T, K, N,
                         f32 ? nullptr : scratch->gemm, f32 ? 0 : scratch->gemm_floats);
            },
            format_message("gemm_%s (cublas)", dtype_name(w.dtype)));
        break;
      }
      case Op::Rope: {
        const Arg x = in[0], pos = in[1], freq = in[2];
        emit(label, [=](cudaStream_t s) {
          cuda::rope(s, x.f32(), pos.i32(), freq.f32(), out.f32_mut(), x.shape.rows(), p.n_heads,
                     p.head_dim, p.rot_dims, p.rope_style);
        });
        break;
      }
      case Op::KvAppend: {
        const Arg src = in[0], slots = in[1];
        emit(label, [=](cudaStream_t s) {
          cuda::kv_append(s, src.f32(), slots.i32(), src.shape.rows(), src.shape.row_len(), out.ptr,
                          out.dtype, out.shape.rows(), err);
        });
        break;
      }
      case Op::Attention: {
        cuda::AttentionArgs a;
        a.q = in[0].f32();
        a.k_cache = in[1].ptr;
        a.v_cache = in[2].ptr;
        a.cache_type = in[1].dtype;
        a.cache_rows = in[1].shape.rows();
        a.positions = in[3].i32();
        a.seq_ids = in[4].i32();
        a.block_table = in[5].i32();
        a.n_seqs = in[5].shape[0];
        a.max_pages = in[5].shape[1];
        a.out = out.f32_mut();
        a.T = in[0].shape.rows();
        a.n_heads = p.n_heads;
        a.n_kv_heads = p.n_kv_heads;
        a.head_dim = p.head_dim;
        a.window = p.window;
        a.page_size = p.page_size;
        a.scale = p.scale;
        a.softcap = p.softcap;
        a.err = err;
        a.pdl = ctx_->pdl;
        int64_t ctx = std::min<int64_t>(a.max_pages * a.page_size, a.cache_rows);
        if (a.window > 0) ctx = std::min<int64_t>(ctx, a.window);
        if (a.T <= cuda::kAttnDecodeMaxTokens) {
          a.n_splits = cuda::attention_decode_splits(
              a.T, a.n_kv_heads, a.n_heads / std::max(1, a.n_kv_heads), ctx, n_sms);
          if (cuda::attention_decode_ok(a)) {
            if (a.n_splits > 1) {
              need_partials = std::max(need_partials, cuda::attention_partials_floats(
                                                          a.T, a.n_heads, a.head_dim, a.n_splits));
              need_counters = std::max(need_counters, static_cast<size_t>(a.T * a.n_kv_heads));
            }
            emit("attention (decode)", [=](cudaStream_t s) {
              cuda::AttentionArgs b = a;
              b.partials = scratch->partials;
              cuda::attention_decode(s, b, scratch->counters);
            });
            break;
          }
        } else if (cuda::attention_prefill_ok(a)) {
          emit("attention (prefill)", [=](cudaStream_t s) { cuda::attention_prefill(s, a); });
          break;
        }
        a.n_splits = cuda::attention_splits(a.T, a.n_heads, ctx, n_sms);
        need_partials = std::max(
            need_partials, cuda::attention_partials_floats(a.T, a.n_heads, a.head_dim, a.n_splits));
        emit(label, [=](cudaStream_t s) {
          cuda::AttentionArgs b = a;
          b.partials = a.n_splits > 1 ? scratch->partials : nullptr;
          cuda::attention(s, b);
        });
        break;
      }
      case Op::SiluMul:
      case Op::GeluMul:
      case Op::Add:
      case Op::Mul: {
        const cuda::Binary op = node.op == Op::SiluMul   ? cuda::Binary::SiluMul
                                : node.op == Op::GeluMul ? cuda::Binary::GeluMul
                                : node.op == Op::Add     ? cuda::Binary::Add
                                                         : cuda::Binary::Mul;
        const Arg a = in[0], b = in[1];
        const int64_t d = a.shape.row_len();
        const int64_t rows = a.shape.numel() / d;
        // SiluMul/GeluMul take b of a's shape; Add/Mul may broadcast one row.
        const int64_t b_rows = b.shape.numel() / d;
        emit(label, [=](cudaStream_t s) {
          cuda::binary(s, op, a.f32(), b.f32(), b_rows, out.f32_mut(), rows, d);
        });
        break;
      }
      case Op::Gelu:
      case Op::GeluTanh:
      case Op::Scale: {
        const cuda::Unary op = node.op == Op::Gelu       ? cuda::Unary::Gelu
                               : node.op == Op::GeluTanh ? cuda::Unary::GeluTanh
                                                         : cuda::Unary::Scale;
        const Arg a = in[0];
        emit(label, [=](cudaStream_t s) {
          cuda::unary(s, op, a.f32(), p.scale, out.f32_mut(), a.shape.numel());
        });
        break;
      }
      case Op::Slice: {
        const Arg a = in[0];
        const int64_t groups = p.n_heads, w_in = a.shape.row_len() / groups;
        emit(label, [=](cudaStream_t s) {
          cuda::slice(s, a.f32(), out.f32_mut(), a.shape.rows() * groups, w_in, p.head_dim,
                      p.offset);
        });
        break;
      }
      case Op::Mix:
      case Op::SigmoidMul:
      case Op::ReluSqr: {
        const cuda::RwkvElementwise op = node.op == Op::Mix ? cuda::RwkvElementwise::Mix
                                         : node.op == Op::SigmoidMul
                                             ? cuda::RwkvElementwise::SigmoidMul
                                             : cuda::RwkvElementwise::ReluSqr;
        const Arg a = in[0];
        const float* b = in.size() > 1 ? in[1].f32() : nullptr;
        const float* w = in.size() > 2 ? in[2].f32() : nullptr;
        emit(label, [=](cudaStream_t s) {
          cuda::rwkv_elementwise(s, op, a.f32(), b, w, out.f32_mut(), a.shape.numel(),
                                 a.shape.row_len());
        });
        break;
      }
      case Op::TokenShift: {
        const Arg x = in[0], st = in[1], seq = in[2], slots = in[3];
        emit(label, [=](cudaStream_t s) {
          cuda::token_shift(s, x.f32(), st.f32_mut(), seq.i32(), slots.i32(), out.f32_mut(),
                            x.shape.rows(), x.shape.row_len(), slots.shape.numel(), st.shape.rows(),
                            err);
        });
        break;
      }
      case Op::Wkv: {
        const Arg k = in[0], v = in[1], decay = in[2], first = in[3], st = in[4], seq = in[5],
                  slots = in[6];
        emit(label, [=](cudaStream_t s) {
          cuda::wkv(s, k.f32(), v.f32(), decay.f32(), first.f32(), st.f32_mut(), seq.i32(),
                    slots.i32(), out.f32_mut(), k.shape.rows(), k.shape.row_len(),
                    slots.shape.numel(), st.shape.rows(), err);
        });
        break;
      }
      case Op::Sample: {
        const Arg x = in[0], params = in[1];
        emit(label, [=](cudaStream_t s) {
          cuda::sample_rows(s, x.f32(), params.f32(), x.shape.rows(), x.shape.row_len(),
                            out.i32_mut());
        });
        break;
      }
      case Op::kCount:
        fail("cuda backend: node '%s' has no op", node.name.c_str());
    }
  }

  // Scratch: the conversion buffers are shared by the backend's programs (they run one
  // at a time on the stream) and replaced by larger ones when a program needs more;
  // each program keeps the ones its launches point into.
  if (need_gemm) {
    if (!ctx_->gemm_scratch || ctx_->gemm_scratch->size() < need_gemm * 4)
      ctx_->gemm_scratch =
          device_alloc(device, need_gemm * 4, "f16/bf16 weight conversion for prefill GEMMs");
    keep.push_back(ctx_->gemm_scratch);
    scratch->gemm = reinterpret_cast<float*>(ctx_->gemm_scratch->data());
    scratch->gemm_floats = ctx_->gemm_scratch->size() / 4;
  }
  if (need_w16 || need_x16) {
    const size_t w_bytes = (need_w16 * 2 + 255) / 256 * 256;
    const size_t bytes = w_bytes + need_x16 * 2;
    if (!ctx_->f16_scratch || ctx_->f16_scratch->size() < bytes || ctx_->f16_w16_bytes < w_bytes) {
      const size_t wb = std::max(w_bytes, ctx_->f16_scratch ? ctx_->f16_w16_bytes : 0);
      const size_t xb = std::max(
          need_x16 * 2, ctx_->f16_scratch ? ctx_->f16_scratch->size() - ctx_->f16_w16_bytes : 0);
      ctx_->f16_scratch = device_alloc(device, wb + xb, "f16 tiles for quantized prefill GEMMs");
      ctx_->f16_w16_bytes = wb;
    }
    keep.push_back(ctx_->f16_scratch);
    scratch->w16 = reinterpret_cast<__half*>(ctx_->f16_scratch->data());
    scratch->w16_elems = ctx_->f16_w16_bytes / 2;
    scratch->x16 = reinterpret_cast<__half*>(ctx_->f16_scratch->data() + ctx_->f16_w16_bytes);
  }
  if (need_partials) {
    keep.push_back(device_alloc(device, need_partials * 4, "split attention / GEMM partials"));
    scratch->partials = reinterpret_cast<float*>(keep.back()->data());
  }
  if (need_sample) {
    const size_t bytes = cuda::qgemv_sample_scratch_bytes(n_sms);
    keep.push_back(device_alloc(device, bytes, "the sampling GEMV's scratch"));
    scratch->sample = keep.back()->data();
    LLM_CUDA_CHECK(cudaMemsetAsync(scratch->sample, 0, bytes, ctx_->ordered()));
  }
  if (need_counters) {
    keep.push_back(device_alloc(device, need_counters * sizeof(int), "attention split counters"));
    scratch->counters = reinterpret_cast<int*>(keep.back()->data());
    LLM_CUDA_CHECK(
        cudaMemsetAsync(scratch->counters, 0, need_counters * sizeof(int), ctx_->ordered()));
  }
  // The last launch of an iteration computes its nodes; launches before it in the same
  // iteration (weight repacking) serve no node of their own.
  std::vector<Program::Dispatch> dispatches;
  for (size_t i = 0; i < launches.size(); i++) {
    Program::Dispatch d{kernels[i], {}};
    if (i + 1 == launches.size() || launch_iter[i + 1] != launch_iter[i]) {
      const auto next = std::upper_bound(iter_starts.begin(), iter_starts.end(), launch_iter[i]);
      const size_t end = next == iter_starts.end() ? n_nodes : *next;
      for (size_t n = launch_iter[i]; n < end; n++) d.nodes.push_back(static_cast<int>(n));
    }
    dispatches.push_back(std::move(d));
  }
  // Launches hold the scratch through their captures.
  return std::make_unique<CudaProgram>(ctx_, std::move(launches), std::move(labels),
                                       std::move(dispatches), std::move(keep));
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
