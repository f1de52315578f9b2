// The CUDA backend: device buffers, op checks, and programs that enqueue the bound
// kernels in order on the backend's one stream. A program captures its launches
// into a CUDA graph on its first run and replays the graph afterwards: every
// per-step value comes from the executor's input buffers, whose addresses never
// change, so the captured kernel arguments stay valid. LLM_CUDA_GRAPHS=0 launches
// the kernels directly instead (for debugging and comparison).
#include "backends/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "backends/cuda/cuda_common.h"
#include "backends/cuda/cuda_kernels.h"
#include "core/error.h"

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

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

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

 private:
  uint8_t* data_;
  int device_;
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

bool is_float(DType t) { return dtype_info(t).is_float; }

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
  bool graphs = true;
  bool profile = false;  // LLM_CUDA_PROFILE=1: time each launch (no graphs)
  Stream stream;
  std::unique_ptr<CudaBuffer> err_flag;  // one int of ErrorBits
  PinnedHost err_host{sizeof(int)};
  cublasHandle_t cublas = nullptr;
  std::unique_ptr<CudaBuffer> cublas_workspace;
  // Weight conversion buffer of the GEMM path: replaced by a larger one when a new
  // program needs more; programs keep the one their launches point into.
  std::shared_ptr<CudaBuffer> gemm_scratch;

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
    LLM_CUDA_CHECK(cudaMemsetAsync(err_flag->data(), 0, sizeof(int), stream.get()));
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
    fail("cuda:%d: a kernel was given bad indices (%s); their results were left out", device,
         what.c_str());
  }

  // Waits for the stream and reports bad indices seen by kernels.
  void sync_and_check() {
    LLM_CUDA_CHECK(cudaMemcpyAsync(err_host.get(), err_flag->data(), sizeof(int),
                                   cudaMemcpyDeviceToHost, stream.get()));
    LLM_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    raise_device_errors();
  }
};

using Launch = std::function<void(cudaStream_t)>;

class CudaProgram final : public Program {
 public:
  // labels[i] names launch i in the LLM_CUDA_PROFILE=1 breakdown.
  CudaProgram(std::shared_ptr<Context> ctx, std::vector<Launch> launches,
              std::vector<std::string> labels, std::vector<std::shared_ptr<CudaBuffer>> keep)
      : ctx_(std::move(ctx)),
        launches_(std::move(launches)),
        labels_(std::move(labels)),
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
    const cudaStream_t s = ctx_->stream.get();
    if (ctx_->profile) return run_profiled(s);
    if (!ctx_->graphs) {
      for (const Launch& l : launches_) l(s);
      return;
    }
    if (!exec_.ready()) capture(s);
    exec_.launch(s);
  }

 private:
  // Direct launches with an event between each pair: GPU time per launch label.
  void run_profiled(cudaStream_t s) {
    if (events_.empty()) {
      for (size_t i = 0; i <= launches_.size(); i++) events_.push_back(std::make_unique<Event>());
      totals_.assign(launches_.size(), 0.0);
    }
    for (size_t i = 0; i < launches_.size(); i++) {
      LLM_CUDA_CHECK(cudaEventRecord(events_[i]->get(), s));
      launches_[i](s);
    }
    LLM_CUDA_CHECK(cudaEventRecord(events_.back()->get(), s));
    LLM_CUDA_CHECK(cudaEventSynchronize(events_.back()->get()));
    for (size_t i = 0; i < launches_.size(); i++) {
      float ms = 0.f;
      LLM_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i]->get(), events_[i + 1]->get()));
      totals_[i] += ms;
    }
    profile_runs_++;
  }

  void print_profile() const {
    std::vector<std::pair<std::string, double>> by_label;
    double all = 0;
    for (size_t i = 0; i < labels_.size(); i++) {
      all += totals_[i];
      auto it = std::find_if(by_label.begin(), by_label.end(),
                             [&](const auto& e) { return e.first == labels_[i]; });
      if (it == by_label.end())
        by_label.push_back({labels_[i], totals_[i]});
      else
        it->second += totals_[i];
    }
    std::sort(by_label.begin(), by_label.end(),
              [](const auto& a, const auto& b) { return a.second > b.second; });
    std::fprintf(stderr, "cuda:%d profile: %zu launches x %d runs, %.3f ms per run\n", ctx_->device,
                 launches_.size(), profile_runs_, all / profile_runs_);
    for (const auto& [label, ms] : by_label)
      std::fprintf(stderr, "  %-40s %9.3f ms per run %5.1f%%\n", label.c_str(), ms / profile_runs_,
                   all > 0 ? 100.0 * ms / all : 0.0);
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
  std::vector<std::shared_ptr<CudaBuffer>> keep_;  // scratch the launches point into
  GraphExec exec_;
  std::vector<std::unique_ptr<Event>> events_;  // LLM_CUDA_PROFILE=1 only
  std::vector<double> totals_;
  int profile_runs_ = 0;
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
    const char* prof = std::getenv("LLM_CUDA_PROFILE");
    ctx_->profile = prof && std::strcmp(prof, "1") == 0;
    ctx_->err_flag = device_alloc(device, sizeof(int), "the kernel error flag");
    LLM_CUDA_CHECK(cudaMemsetAsync(ctx_->err_flag->data(), 0, sizeof(int), ctx_->stream.get()));
    LLM_CUDA_CHECK(cudaStreamSynchronize(ctx_->stream.get()));
  }

  ~CudaBackend() override {
    if (cudaSetDevice(ctx_->device) == cudaSuccess) cudaStreamSynchronize(ctx_->stream.get());
  }

  DeviceInfo info() const override {
    DeviceInfo d;
    d.id = "cuda:" + std::to_string(ctx_->device);
    d.name = name_;
    d.type = integrated_ ? "integrated-gpu" : "discrete-gpu";
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(ctx_->device) == cudaSuccess &&
        cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) {
      d.free_memory = free_b;
      d.total_memory = total_b;
    }
    cudaGetLastError();
    d.details = format("compute capability %d.%d, %d SMs, CUDA graphs %s", cc_major_, cc_minor_,
                       ctx_->n_sms,
                       ctx_->profile  ? "off (LLM_CUDA_PROFILE=1)"
                       : ctx_->graphs ? "on"
                                      : "off (LLM_CUDA_GRAPHS=0)");
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
          cudaMemcpyAsync(buf->data(), data, bytes, cudaMemcpyHostToDevice, ctx_->stream.get()));
      // The host memory (a mapped file) may go away once this returns.
      LLM_CUDA_CHECK(cudaStreamSynchronize(ctx_->stream.get()));
    }
    return buf;
  }

  // Ordered on the stream with the programs. From pageable memory the copy is staged
  // before this returns, so the caller may reuse `src` at once.
  void upload(DeviceBuffer& dst, size_t offset, const void* src, size_t bytes) override {
    check_range(dst, offset, bytes, "upload");
    if (!bytes) return;
    use_device(ctx_->device);
    const CudaBuffer& b = cuda_buffer(dst, ctx_->device);
    LLM_CUDA_CHECK(
        cudaMemcpyAsync(b.data() + offset, src, bytes, cudaMemcpyHostToDevice, ctx_->stream.get()));
  }

  void download(const DeviceBuffer& src, size_t offset, void* dst, size_t bytes) override {
    check_range(src, offset, bytes, "download");
    use_device(ctx_->device);
    const CudaBuffer& b = cuda_buffer(src, ctx_->device);
    if (bytes)
      LLM_CUDA_CHECK(cudaMemcpyAsync(dst, b.data() + offset, bytes, cudaMemcpyDeviceToHost,
                                     ctx_->stream.get()));
    ctx_->sync_and_check();
  }

  void clear(DeviceBuffer& dst, size_t offset, size_t bytes) override {
    check_range(dst, offset, bytes, "clear");
    if (!bytes) return;
    use_device(ctx_->device);
    const CudaBuffer& b = cuda_buffer(dst, ctx_->device);
    LLM_CUDA_CHECK(cudaMemsetAsync(b.data() + offset, 0, bytes, ctx_->stream.get()));
  }

  void synchronize() override {
    use_device(ctx_->device);
    ctx_->sync_and_check();
  }

  std::string check(const Node& node, const std::vector<const TensorInfo*>& inputs,
                    const TensorInfo& output) const override;

  std::unique_ptr<Program> compile(std::vector<BoundNode> nodes) override;

 private:
  std::shared_ptr<Context> ctx_;
  std::string name_;
  bool integrated_ = false;
  int cc_major_ = 0, cc_minor_ = 0;
};

std::string CudaBackend::check(const Node& node, const std::vector<const TensorInfo*>& inputs,
                               const TensorInfo& output) const {
  const Op op = node.op;
  const char* name = op_name(op);
  const OpParams& p = node.params;
  const size_t n_in = inputs.size();
  auto in_count = [&](size_t lo, size_t hi) -> std::string {
    if (n_in < lo || n_in > hi)
      return format("%s: takes %zu to %zu inputs, got %zu", name, lo, hi, n_in);
    for (const TensorInfo* t : inputs)
      if (!t) return format("%s: missing input", name);
    return "";
  };
  auto need = [&](const TensorInfo& t, DType d, const char* what) -> std::string {
    if (t.dtype == d) return "";
    return format("%s: %s must be %s, got %s", name, what, dtype_name(d), dtype_name(t.dtype));
  };
  auto need_float = [&](const TensorInfo& t, const char* what) -> std::string {
    if (is_float(t.dtype)) return "";
    if (t.dtype == DType::Q8_0 || t.dtype == DType::Q4_0)
      return format("%s: %s %s are not supported by the cuda backend yet", name,
                    dtype_name(t.dtype), what);
    return format("%s: %s %s are not supported", name, dtype_name(t.dtype), what);
  };
  // cuBLAS and the launch grids take 32-bit sizes.
  auto fits_int = [&](int64_t v, const char* what) -> std::string {
    if (v >= 0 && v < (int64_t{1} << 31)) return "";
    return format("%s: %s of %lld is too large for the cuda backend", name, what, (long long)v);
  };
#define LLM_TRY(expr)                   \
  do {                                  \
    std::string llm_r_ = (expr);        \
    if (!llm_r_.empty()) return llm_r_; \
  } while (0)

  if (op != Op::KvAppend) LLM_TRY(need(output, DType::F32, "the output"));
  switch (op) {
    case Op::GetRows: {
      LLM_TRY(in_count(2, 2));
      const TensorInfo &table = *inputs[0], &ids = *inputs[1];
      LLM_TRY(need_float(table, "tables"));
      LLM_TRY(need(ids, DType::I32, "ids"));
      if (table.shape.rank != 2) return "get_rows: the table must be 2-d";
      LLM_TRY(fits_int(ids.shape.numel(), "row count"));
      if (output.shape.numel() != ids.shape.numel() * table.shape[1])
        return format("get_rows: output %s does not hold %lld rows of %lld",
                      output.shape.str().c_str(), (long long)ids.shape.numel(),
                      (long long)table.shape[1]);
      return "";
    }
    case Op::RmsNorm:
    case Op::LayerNorm: {
      LLM_TRY(op == Op::RmsNorm ? in_count(2, 2) : in_count(2, 3));
      const TensorInfo& x = *inputs[0];
      LLM_TRY(need(x, DType::F32, "x"));
      LLM_TRY(fits_int(x.shape.rows(), "row count"));
      for (size_t i = 1; i < n_in; i++) {
        LLM_TRY(need_float(*inputs[i], "norm weights"));
        if (inputs[i]->shape.numel() != x.shape.row_len())
          return format("%s: weight %s does not match rows of %lld", name,
                        inputs[i]->shape.str().c_str(), (long long)x.shape.row_len());
      }
      if (output.shape.numel() != x.shape.numel()) return format("%s: output shape mismatch", name);
      return "";
    }
    case Op::MatMul: {
      LLM_TRY(in_count(2, 3));
      const TensorInfo &x = *inputs[0], &w = *inputs[1];
      LLM_TRY(need(x, DType::F32, "x"));
      LLM_TRY(need_float(w, "weights"));
      if (w.shape.rank != 2 || w.shape[1] != x.shape.row_len())
        return format("matmul: weight %s does not match x %s", w.shape.str().c_str(),
                      x.shape.str().c_str());
      LLM_TRY(fits_int(x.shape.rows(), "token count"));
      LLM_TRY(fits_int(w.shape[0], "output count"));
      LLM_TRY(fits_int(w.shape[1], "input count"));
      if (n_in > 2) {
        LLM_TRY(need_float(*inputs[2], "biases"));
        if (inputs[2]->shape.numel() != w.shape[0])
          return format("matmul: bias %s does not match %lld outputs",
                        inputs[2]->shape.str().c_str(), (long long)w.shape[0]);
      }
      if (output.shape.numel() != x.shape.rows() * w.shape[0])
        return format("matmul: output %s is not [%lld, %lld]", output.shape.str().c_str(),
                      (long long)x.shape.rows(), (long long)w.shape[0]);
      return "";
    }
    case Op::Rope: {
      LLM_TRY(in_count(3, 3));
      const TensorInfo &x = *inputs[0], &pos = *inputs[1], &freq = *inputs[2];
      LLM_TRY(need(x, DType::F32, "x"));
      LLM_TRY(need(pos, DType::I32, "positions"));
      LLM_TRY(need(freq, DType::F32, "inv_freq"));
      if (p.n_heads <= 0 || p.head_dim <= 0 || int64_t{p.n_heads} * p.head_dim != x.shape.row_len())
        return format("rope: %d heads of %d do not match rows of %lld", p.n_heads, p.head_dim,
                      (long long)x.shape.row_len());
      if (p.rot_dims <= 0 || p.rot_dims % 2 || p.rot_dims > p.head_dim)
        return format("rope: rot_dims %d must be even and in (0, head_dim %d]", p.rot_dims,
                      p.head_dim);
      if (freq.shape.numel() < p.rot_dims / 2)
        return format("rope: inv_freq has %lld entries, needs %d", (long long)freq.shape.numel(),
                      p.rot_dims / 2);
      if (pos.shape.numel() != x.shape.rows()) return "rope: one position per row of x";
      if (output.shape.numel() != x.shape.numel()) return "rope: output shape mismatch";
      return "";
    }
    case Op::KvAppend: {
      LLM_TRY(in_count(3, 3));
      const TensorInfo &src = *inputs[0], &slots = *inputs[1], &cache = *inputs[2];
      LLM_TRY(need(src, DType::F32, "src"));
      LLM_TRY(need(slots, DType::I32, "slots"));
      LLM_TRY(need_float(cache, "caches"));
      if (output.dtype != cache.dtype || output.shape != cache.shape)
        return "kv_append: the output must be the cache";
      if (src.shape.row_len() != cache.shape.row_len())
        return format("kv_append: rows of %lld do not match cache rows of %lld",
                      (long long)src.shape.row_len(), (long long)cache.shape.row_len());
      if (slots.shape.numel() != src.shape.rows()) return "kv_append: one slot per row of src";
      LLM_TRY(fits_int(src.shape.rows(), "token count"));
      return "";
    }
    case Op::Attention: {
      LLM_TRY(in_count(6, 6));
      const TensorInfo &q = *inputs[0], &kc = *inputs[1], &vc = *inputs[2];
      LLM_TRY(need(q, DType::F32, "q"));
      LLM_TRY(need_float(kc, "caches"));
      LLM_TRY(need_float(vc, "caches"));
      if (kc.dtype != vc.dtype)
        return format("attention: K cache %s and V cache %s must share a dtype on cuda",
                      dtype_name(kc.dtype), dtype_name(vc.dtype));
      LLM_TRY(need(*inputs[3], DType::I32, "positions"));
      LLM_TRY(need(*inputs[4], DType::I32, "seq_ids"));
      LLM_TRY(need(*inputs[5], DType::I32, "block_table"));
      if (p.n_heads <= 0 || p.n_kv_heads <= 0 || p.n_heads % p.n_kv_heads || p.head_dim <= 0)
        return format("attention: bad heads (%d query, %d kv, head_dim %d)", p.n_heads,
                      p.n_kv_heads, p.head_dim);
      if (p.head_dim > cuda::kAttentionMaxHeadDim)
        return format("attention: head_dim %d is larger than the cuda kernel's %d", p.head_dim,
                      cuda::kAttentionMaxHeadDim);
      if (p.page_size <= 0) return "attention: page_size must be positive";
      if (q.shape.row_len() != int64_t{p.n_heads} * p.head_dim)
        return format("attention: q rows of %lld are not %d heads of %d",
                      (long long)q.shape.row_len(), p.n_heads, p.head_dim);
      if (kc.shape != vc.shape || kc.shape.row_len() != int64_t{p.n_kv_heads} * p.head_dim)
        return format("attention: caches %s / %s are not [slots, %d * %d]", kc.shape.str().c_str(),
                      vc.shape.str().c_str(), p.n_kv_heads, p.head_dim);
      if (inputs[3]->shape.numel() != q.shape.rows() || inputs[4]->shape.numel() != q.shape.rows())
        return "attention: one position and sequence id per token";
      if (inputs[5]->shape.rank != 2) return "attention: the block table must be 2-d";
      LLM_TRY(fits_int(q.shape.rows() * p.n_heads, "token x head count"));
      if (output.shape.numel() != q.shape.numel()) return "attention: output shape mismatch";
      return "";
    }
    case Op::SiluMul:
    case Op::GeluMul:
    case Op::Add:
    case Op::Mul: {
      LLM_TRY(in_count(2, 2));
      const TensorInfo &a = *inputs[0], &b = *inputs[1];
      LLM_TRY(need(a, DType::F32, "a"));
      LLM_TRY(need(b, DType::F32, "b"));
      const bool bcast = (op == Op::Add || op == Op::Mul) && b.shape.numel() == a.shape.row_len();
      if (b.shape.numel() != a.shape.numel() && !bcast)
        return format("%s: b %s does not match a %s", name, b.shape.str().c_str(),
                      a.shape.str().c_str());
      if (output.shape.numel() != a.shape.numel()) return format("%s: output shape mismatch", name);
      return "";
    }
    case Op::Gelu:
    case Op::GeluTanh:
    case Op::Scale: {
      LLM_TRY(in_count(1, 1));
      LLM_TRY(need(*inputs[0], DType::F32, "a"));
      if (output.shape.numel() != inputs[0]->shape.numel())
        return format("%s: output shape mismatch", name);
      return "";
    }
    case Op::kCount:
      break;
  }
#undef LLM_TRY
  return format("op %d is not implemented by the cuda backend", static_cast<int>(op));
}

// A bound tensor as a device pointer.
struct Arg {
  uint8_t* ptr = nullptr;
  DType dtype = DType::F32;
  Shape shape;
  const float* f32() const { return reinterpret_cast<const float*>(ptr); }
  float* f32_mut() const { return reinterpret_cast<float*>(ptr); }
  const int32_t* i32() const { return reinterpret_cast<const int32_t*>(ptr); }
};

std::unique_ptr<Program> CudaBackend::compile(std::vector<BoundNode> nodes) {
  use_device(ctx_->device);
  const int device = ctx_->device;
  auto resolve = [&](const TensorRef& r, const std::string& node, const char* what) {
    if (!r.buffer) fail("cuda backend: node '%s': %s has no buffer", node.c_str(), what);
    const size_t bytes = tensor_bytes(r.dtype, r.shape);
    if (r.offset > r.buffer->size() || bytes > r.buffer->size() - r.offset)
      fail("cuda backend: node '%s': %s (%zu bytes at %zu) overruns its buffer of %zu bytes",
           node.c_str(), what, bytes, r.offset, r.buffer->size());
    return Arg{cuda_buffer(*r.buffer, device).data() + r.offset, r.dtype, r.shape};
  };

  // First pass: validate, and size the scratch the launches will need.
  size_t gemm_scratch_floats = 0, partial_floats = 0;
  bool need_blas = false;
  for (const BoundNode& bn : nodes) {
    if (!bn.node) fail("cuda backend: bound node without a node");
    const Node& node = *bn.node;
    std::vector<TensorInfo> infos(bn.inputs.size());
    std::vector<const TensorInfo*> ptrs;
    for (size_t i = 0; i < bn.inputs.size(); i++) {
      infos[i].dtype = bn.inputs[i].dtype;
      infos[i].shape = bn.inputs[i].shape;
      ptrs.push_back(&infos[i]);
    }
    TensorInfo out;
    out.dtype = bn.output.dtype;
    out.shape = bn.output.shape;
    const std::string why = check(node, ptrs, out);
    if (!why.empty()) fail("cuda backend: node '%s': %s", node.name.c_str(), why.c_str());

    if (node.op == Op::MatMul && bn.inputs[0].shape.rows() > cuda::kGemvMaxTokens) {
      need_blas = true;
      const TensorRef& w = bn.inputs[1];
      if (w.dtype != DType::F32) {
        const size_t K = static_cast<size_t>(w.shape[1]), N = static_cast<size_t>(w.shape[0]);
        const size_t rows = std::max<size_t>(1, std::min(N, kGemmScratchMax / 4 / K));
        gemm_scratch_floats = std::max(gemm_scratch_floats, rows * K);
      }
    }
    if (node.op == Op::Attention) {
      const OpParams& p = node.params;
      const TensorRef& q = bn.inputs[0];
      int64_t ctx =
          std::min<int64_t>(bn.inputs[5].shape[1] * p.page_size, bn.inputs[1].shape.rows());
      if (p.window > 0) ctx = std::min<int64_t>(ctx, p.window);
      const int splits = cuda::attention_splits(q.shape.rows(), p.n_heads, ctx, ctx_->n_sms);
      partial_floats = std::max(partial_floats, cuda::attention_partials_floats(
                                                    q.shape.rows(), p.n_heads, p.head_dim, splits));
    }
  }

  std::vector<std::shared_ptr<CudaBuffer>> keep;
  cublasHandle_t blas = need_blas ? ctx_->blas() : nullptr;
  float* gemm_scratch = nullptr;
  if (gemm_scratch_floats) {
    if (!ctx_->gemm_scratch || ctx_->gemm_scratch->size() < gemm_scratch_floats * 4)
      ctx_->gemm_scratch = device_alloc(device, gemm_scratch_floats * 4,
                                        "f16/bf16 weight conversion for prefill GEMMs");
    keep.push_back(ctx_->gemm_scratch);
    gemm_scratch = reinterpret_cast<float*>(ctx_->gemm_scratch->data());
    gemm_scratch_floats = ctx_->gemm_scratch->size() / 4;
  }
  float* partials = nullptr;
  if (partial_floats) {
    keep.push_back(device_alloc(device, partial_floats * 4, "split attention partials"));
    partials = reinterpret_cast<float*>(keep.back()->data());
  }
  int* err = reinterpret_cast<int*>(ctx_->err_flag->data());

  std::vector<Launch> launches;
  std::vector<std::string> labels;
  launches.reserve(nodes.size());
  // A GEMV (few tokens) reads x once per weight row; consecutive matmuls of one x
  // (q/k/v, gate/up) share one launch, which saves launches and fills the GPU better
  // for the small matrices. The results are the same bits as separate launches.
  auto gemv_with = [&](size_t i, size_t j) {
    const BoundNode &a = nodes[i], &b = nodes[j];
    return b.node->op == Op::MatMul && a.node->op == Op::MatMul &&
           b.inputs[0].buffer == a.inputs[0].buffer && b.inputs[0].offset == a.inputs[0].offset &&
           b.inputs[0].shape == a.inputs[0].shape && b.inputs[1].dtype == a.inputs[1].dtype;
  };
  for (size_t ni = 0; ni < nodes.size(); ni++) {
    const BoundNode& bn = nodes[ni];
    const Node& node = *bn.node;
    const OpParams p = node.params;
    std::vector<Arg> in;
    for (const TensorRef& r : bn.inputs) in.push_back(resolve(r, node.name, "an input"));
    const Arg out = resolve(bn.output, node.name, "the output");
    if (node.op == Op::MatMul && in[0].shape.rows() <= cuda::kGemvMaxTokens) {
      const Arg x = in[0];
      const int64_t T = x.shape.rows(), K = x.shape.row_len();
      const DType wt = in[1].dtype;
      std::vector<cuda::GemvSeg> segs;
      auto add_seg = [&](const std::vector<Arg>& ins, const Arg& y) {
        cuda::GemvSeg sg;
        sg.w = ins[1].ptr;
        sg.N = ins[1].shape[0];
        if (ins.size() > 2) {
          sg.bias = ins[2].ptr;
          sg.bias_type = ins[2].dtype;
        }
        sg.y = y.f32_mut();
        segs.push_back(sg);
      };
      add_seg(in, out);
      while (segs.size() < static_cast<size_t>(cuda::kGemvMaxSegs) && ni + 1 < nodes.size() &&
             gemv_with(ni, ni + 1)) {
        const BoundNode& nb = nodes[++ni];
        std::vector<Arg> nin;
        for (const TensorRef& r : nb.inputs) nin.push_back(resolve(r, nb.node->name, "an input"));
        add_seg(nin, resolve(nb.output, nb.node->name, "the output"));
      }
      std::string label = format("matmul %s T=%lld:", dtype_name(wt), (long long)T);
      for (const cuda::GemvSeg& sg : segs)
        label += format(" [%lld x %lld]", (long long)sg.N, (long long)K);
      labels.push_back(label);
      launches.push_back([=](cudaStream_t s) {
        cuda::gemv(s, x.f32(), segs.data(), static_cast<int>(segs.size()), wt, T, K);
      });
      continue;
    }
    if (node.op == Op::MatMul)
      labels.push_back(format("matmul %s T=%lld: [%lld x %lld]", dtype_name(in[1].dtype),
                              (long long)in[0].shape.rows(), (long long)in[1].shape[0],
                              (long long)in[1].shape[1]));
    else
      labels.push_back(op_name(node.op));
    switch (node.op) {
      case Op::GetRows: {
        const Arg table = in[0], ids = in[1];
        launches.push_back([=](cudaStream_t s) {
          cuda::get_rows(s, table.ptr, table.dtype, table.shape.rows(), table.shape.row_len(),
                         ids.i32(), ids.shape.numel(), out.f32_mut(), err);
        });
        break;
      }
      case Op::RmsNorm: {
        const Arg x = in[0], w = in[1];
        launches.push_back([=](cudaStream_t s) {
          cuda::rms_norm(s, x.f32(), w.ptr, w.dtype, out.f32_mut(), x.shape.rows(),
                         x.shape.row_len(), p.eps);
        });
        break;
      }
      case Op::LayerNorm: {
        const Arg x = in[0], w = in[1];
        const Arg b = in.size() > 2 ? in[2] : Arg{};
        launches.push_back([=](cudaStream_t s) {
          cuda::layer_norm(s, x.f32(), w.ptr, w.dtype, b.ptr, b.dtype, out.f32_mut(),
                           x.shape.rows(), x.shape.row_len(), p.eps);
        });
        break;
      }
      case Op::MatMul: {
        const Arg x = in[0], w = in[1];
        const Arg b = in.size() > 2 ? in[2] : Arg{};
        const int64_t T = x.shape.rows(), K = x.shape.row_len(), N = w.shape[0];
        const size_t scratch_n = w.dtype == DType::F32 ? 0 : gemm_scratch_floats;
        float* scratch = w.dtype == DType::F32 ? nullptr : gemm_scratch;
        launches.push_back([=](cudaStream_t s) {
          cuda::gemm(blas, s, x.f32(), w.ptr, w.dtype, b.ptr, b.dtype, out.f32_mut(), T, K, N,
                     scratch, scratch_n);
        });
        break;
      }
      case Op::Rope: {
        const Arg x = in[0], pos = in[1], freq = in[2];
        launches.push_back([=](cudaStream_t s) {
          cuda::rope(s, x.f32(), pos.i32(), freq.f32(), out.f32_mut(), x.shape.rows(), p.n_heads,
                     p.head_dim, p.rot_dims, p.rope_style);
        });
        break;
      }
      case Op::KvAppend: {
        const Arg src = in[0], slots = in[1];
        launches.push_back([=](cudaStream_t s) {
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
        int64_t ctx = std::min<int64_t>(a.max_pages * a.page_size, a.cache_rows);
        if (a.window > 0) ctx = std::min<int64_t>(ctx, a.window);
        a.n_splits = cuda::attention_splits(a.T, a.n_heads, ctx, ctx_->n_sms);
        a.partials = a.n_splits > 1 ? partials : nullptr;
        a.err = err;
        launches.push_back([=](cudaStream_t s) { cuda::attention(s, a); });
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
        launches.push_back([=](cudaStream_t s) {
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
        launches.push_back([=](cudaStream_t s) {
          cuda::unary(s, op, a.f32(), p.scale, out.f32_mut(), a.shape.numel());
        });
        break;
      }
      case Op::kCount:
        fail("cuda backend: node '%s' has no op", node.name.c_str());
    }
  }
  return std::make_unique<CudaProgram>(ctx_, std::move(launches), std::move(labels),
                                       std::move(keep));
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
