// The Backend interface: device buffers plus the op set of core/graph.h.
// Core never includes a GPU API; each backend (backends/cpu, backends/cuda,
// backends/vulkan) is a library of its own behind this header.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/graph.h"
#include "core/tensor.h"

namespace llm {

// A block of device memory. Destroying it frees the memory (RAII).
class DeviceBuffer {
 public:
  virtual ~DeviceBuffer() = default;
  size_t size() const { return size_; }

  // A GPU backend's upload_weight may store a quantized [N, K] matrix in its own row
  // layout (scales apart from quants) instead of GGUF blocks; it marks the buffer so,
  // and its kernels read the buffer that way only when it holds that very matrix.
  void set_split(DType t, int64_t N, int64_t K) {
    split_ = true;
    split_type_ = t;
    split_N_ = N;
    split_K_ = K;
  }
  bool holds_split(DType t, int64_t N, int64_t K) const {
    return split_ && split_type_ == t && split_N_ == N && split_K_ == K;
  }

 protected:
  explicit DeviceBuffer(size_t size) : size_(size) {}
  size_t size_;

 private:
  bool split_ = false;
  DType split_type_ = DType::F32;
  int64_t split_N_ = 0, split_K_ = 0;
};

// Where a tensor lives on the device.
struct TensorRef {
  DeviceBuffer* buffer = nullptr;
  size_t offset = 0;
  DType dtype = DType::F32;
  Shape shape;
};

// A node with its tensors resolved to device memory.
struct BoundNode {
  const Node* node = nullptr;
  std::vector<TensorRef> inputs;
  TensorRef output;
};

// A compiled step: the same bound nodes run again and again. Backends may record
// it once and replay it (CUDA graphs, pre-recorded Vulkan command buffers), so it
// must not depend on host state other than the contents of its buffers.
class Program {
 public:
  virtual ~Program() = default;
  virtual void run() = 0;

  // One launch of a kernel/shader (or one CPU op call) and the bound nodes it
  // serves: several when the backend fused them (e.g. rms_norm+matmul).
  struct Dispatch {
    std::string kernel;      // e.g. "qgemv_q4_0_fused_rmsnorm", "matmul_q4_tiled.comp"
    std::vector<int> nodes;  // indexes into the BoundNode list given to compile()
  };
  // What runs, in order (llmcli trace). Empty when the backend does not say.
  virtual std::vector<Dispatch> dispatches() const { return {}; }
  // Runs the step once outside any replay, measuring the device time of each
  // dispatch in milliseconds (llmcli bench --profile). Must compute exactly what
  // run() computes. Empty when the backend cannot measure.
  virtual std::vector<double> run_profiled() {
    run();
    return {};
  }
  // How run_profiled() measures, for the profile's heading ("" when unsaid).
  virtual std::string profile_method() const { return ""; }
  // The most keys a token of the next run attends to (its position + 1, at most the
  // planned context). A backend may then replay a recording planned for that context
  // rather than the whole one (Vulkan's split decode attention); results must not
  // depend on it.
  virtual void set_context_used(int64_t /*keys*/) {}
};

struct DeviceInfo {
  std::string id;    // "cpu", "cuda:0", "vulkan:1"
  std::string name;  // "AMD EPYC 7B13", "NVIDIA H100 80GB HBM3"
  std::string type;  // "cpu", "discrete-gpu", "integrated-gpu", "virtual-gpu"
  size_t total_memory = 0;
  size_t free_memory = 0;
  std::string details;  // backend specific (threads, compute capability ...)
  // Peak memory bandwidth in GB/s as the device reports it (CUDA: memory clock ×
  // bus width); 0 when unknown (the CPU). For the achieved share in bench --profile.
  double bandwidth_gbs = 0;
};

// The op set's rules for a node (input count, dtypes, shapes, params), the same on every
// backend: "" when the node is valid, else the reason. Backends call it from check()
// and add their own limits; `backend` names the backend in messages.
std::string check_op(const Node& node, const std::vector<const TensorInfo*>& inputs,
                     const TensorInfo& output, const char* backend);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceInfo info() const = 0;

  // Allocates device memory; `what` names the use in an out-of-memory error.
  virtual std::unique_ptr<DeviceBuffer> alloc(size_t bytes, const std::string& what) = 0;
  // A buffer holding a copy of host memory that stays valid while the buffer
  // lives (memory-mapped weights). Host backends may alias it instead of copying.
  virtual std::unique_ptr<DeviceBuffer> from_host(const void* data, size_t bytes,
                                                  const std::string& what);
  // Puts a weight tensor on the device. Backends may store it in their own layout
  // (e.g. quantized blocks split into aligned data and scale arrays); their
  // kernels then read that layout for the tensor's dtype. Default: from_host.
  virtual std::unique_ptr<DeviceBuffer> upload_weight(const HostTensor& t,
                                                      const std::string& what) {
    return from_host(t.data, t.nbytes, what);
  }
  // Whether matmul weights and get_rows tables may have this dtype: every backend
  // runs f32/f16/bf16, q8_0 and q4_0; the model loader converts others (q4_1) to q8_0
  // for backends that do not run them.
  virtual bool runs_weight_dtype(DType t) const {
    return is_float(t) || t == DType::Q8_0 || t == DType::Q4_0;
  }
  virtual void upload(DeviceBuffer& dst, size_t offset, const void* src, size_t bytes) = 0;
  virtual void download(const DeviceBuffer& src, size_t offset, void* dst, size_t bytes) = 0;
  // Fills bytes with zero.
  virtual void clear(DeviceBuffer& dst, size_t offset, size_t bytes);
  // Copies bytes between device buffers, ordered with uploads and programs. Default:
  // through the host.
  virtual void copy(DeviceBuffer& dst, size_t dst_offset, const DeviceBuffer& src,
                    size_t src_offset, size_t bytes);
  // A download that the host collects later, so it can queue more work first: the
  // bytes are those src holds once everything queued before this call has run, and
  // they are in dst when finish_download(ticket) returns (dst must stay valid until
  // then; tickets are finished in the order they were started). Device errors are
  // raised by finish_download. Default: download() at once.
  virtual uint64_t start_download(const DeviceBuffer& src, size_t offset, void* dst, size_t bytes) {
    download(src, offset, dst, bytes);
    return 0;
  }
  virtual void finish_download(uint64_t /*ticket*/) {}
  // Whether start_download returns before the copy is done (else queuing work ahead
  // of the host gains nothing and a host round trip is cheaper than Backend::copy).
  virtual bool downloads_overlap() const { return false; }
  // Decoding with the host several steps behind the device: how many queued steps this
  // backend sends in one submission at best (1: each at once), and holding queued
  // programs until n are queued, then sending them together (waiting for queued work,
  // a download included, sends what is held).
  virtual int steps_per_submission() const { return 1; }
  virtual void set_steps_per_submission(int /*n*/) {}

  // Returns an empty string when this backend implements the node as bound
  // (op, dtypes, parameters), or the reason why not.
  virtual std::string check(const Node& node, const std::vector<const TensorInfo*>& inputs,
                            const TensorInfo& output) const = 0;
  // check() of a bound node against its bound tensors (what the kernels will see);
  // fails naming the backend (`who`) and the node when it is not implemented.
  void check_bound(const BoundNode& bn, const char* who) const;
  virtual std::unique_ptr<Program> compile(std::vector<BoundNode> nodes) = 0;
  // Waits until all work submitted so far has finished.
  virtual void synchronize() {}
};

}  // namespace llm
