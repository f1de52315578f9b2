// Internal to the CUDA backend: error checking and RAII owners of CUDA objects.
// Included by the host code (.cpp) and the kernel files (.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

#include "core/error.h"

namespace llm {
namespace cuda {

// Throws llm::Error naming the call, where it was made and CUDA's message.
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);

}  // namespace cuda
}  // namespace llm

// Every CUDA runtime call goes through this.
#define LLM_CUDA_CHECK(call)                                                   \
  do {                                                                         \
    const cudaError_t llm_cuda_err_ = (call);                                  \
    if (llm_cuda_err_ != cudaSuccess)                                          \
      ::llm::cuda::throw_cuda_error(llm_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After every kernel launch: launch configuration errors show up here.
#define LLM_CUDA_CHECK_LAUNCH(kernel_name) \
  ::llm::cuda::check_launch(kernel_name, __FILE__, __LINE__)

namespace llm {
namespace cuda {

inline void check_launch(const char* kernel, const char* file, int line) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda_error(err, kernel, file, line);
}

// Bits of the device-side error flag: kernels never read outside a buffer, they
// skip a bad index and record what went wrong; the host reports it at the next sync.
enum ErrorBits : int {
  kErrRowId = 1,     // get_rows: id outside the table
  kErrSlot = 2,      // kv_append: slot outside the cache
  kErrSeqOrPos = 4,  // attention: sequence id or position outside the block table
  kErrPage = 8,      // attention: block table entry outside the cache
  kErrState = 16,    // token_shift / wkv: sequence id or state slot out of range
};

// Owns a cudaStream_t.
class Stream {
 public:
  Stream() { LLM_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~Stream() {
    if (s_) cudaStreamDestroy(s_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// Owns an instantiated CUDA graph (and the graph it came from).
class GraphExec {
 public:
  GraphExec() = default;
  ~GraphExec() { reset(); }
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  void reset() {
    if (exec_) cudaGraphExecDestroy(exec_);
    if (graph_) cudaGraphDestroy(graph_);
    exec_ = nullptr;
    graph_ = nullptr;
  }
  // Takes ownership of graph and instantiates it.
  void instantiate(cudaGraph_t graph) {
    reset();
    graph_ = graph;
    LLM_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
  }
  bool ready() const { return exec_ != nullptr; }
  void launch(cudaStream_t s) const { LLM_CUDA_CHECK(cudaGraphLaunch(exec_, s)); }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

// Owns a cudaEvent_t (timing enabled unless flags say cudaEventDisableTiming).
class Event {
 public:
  explicit Event(unsigned flags = cudaEventDefault) {
    LLM_CUDA_CHECK(cudaEventCreateWithFlags(&e_, flags));
  }
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// Owns pinned host memory.
class PinnedHost {
 public:
  explicit PinnedHost(size_t bytes) { LLM_CUDA_CHECK(cudaMallocHost(&p_, bytes)); }
  ~PinnedHost() {
    if (p_) cudaFreeHost(p_);
  }
  PinnedHost(const PinnedHost&) = delete;
  PinnedHost& operator=(const PinnedHost&) = delete;
  void* get() const { return p_; }

 private:
  void* p_ = nullptr;
};

}  // namespace cuda
}  // namespace llm
