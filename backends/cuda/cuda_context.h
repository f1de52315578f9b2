// What the CUDA backend and its programs share: device memory (CudaBuffer, with the
// out-of-memory message DESIGN.md asks for), and the Context of a backend: its device,
// its one stream with the small copies queued for it, the kernel error flag, cuBLAS and
// the scratch that programs share.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/cuda_common.h"
#include "backends/cuda/cuda_kernels.h"
#include "core/backend.h"

namespace llm {
namespace cuda {

constexpr size_t kMiB = size_t{1} << 20;
// cuBLAS workspace: set explicitly so that captured GEMMs never allocate. 32 MiB is
// what NVIDIA recommends for Hopper.
constexpr size_t kCublasWorkspace = 32 * kMiB;

// Makes `device` current for the calling thread (cheap when it already is).
void use_device(int device);

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
std::unique_ptr<CudaBuffer> device_alloc(int device, size_t bytes, const std::string& what);
// The CudaBuffer behind a buffer of this backend on `device` (fails on another's).
const CudaBuffer& cuda_buffer(const DeviceBuffer& b, int device);

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
  // Matmuls of f16/bf16 weights over more than half_gemv_max_tokens tokens take the
  // tensor cores, x rounded to the weights' type (LLM_CUDA_HALF_GEMM=0: the float GEMV
  // up to 8 tokens and SGEMM beyond, the float32 reference's accuracy at about a
  // seventh of the speed).
  bool half_gemm = true;
  // ... and up to this many tokens the float GEMV (LLM_CUDA_HALF_GEMV_MAX_TOKENS, 1-8):
  // it reads x again for every token, so two already cost more there than on the
  // tensor cores.
  int64_t half_gemv_max_tokens = 1;
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

}  // namespace cuda
}  // namespace llm
