// The CPU backend: host buffers, op checks, and programs that run the bound nodes
// in order through the kernels of cpu_*.cpp on one thread pool.
#include "backends/cpu/cpu_backend.h"

#include <sys/sysinfo.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"
#include "core/error.h"

namespace llm {

namespace {

using cpu::ThreadPool;

constexpr size_t kAlign = 64;  // cache line, and the widest vector we use

class CpuBuffer final : public DeviceBuffer {
 public:
  CpuBuffer(uint8_t* data, size_t size, bool owned)
      : DeviceBuffer(size), data_(data), owned_(owned) {}
  ~CpuBuffer() override {
    if (owned_) std::free(data_);
  }
  CpuBuffer(const CpuBuffer&) = delete;
  CpuBuffer& operator=(const CpuBuffer&) = delete;
  uint8_t* data() const { return data_; }

 private:
  uint8_t* data_;
  bool owned_;  // false when aliasing host memory (from_host)
};

uint8_t* host_ptr(const DeviceBuffer& b) {
  const CpuBuffer* cb = dynamic_cast<const CpuBuffer*>(&b);
  if (!cb) fail("cpu backend: a buffer of another backend was passed in");
  return cb->data();
}

void check_range(const DeviceBuffer& b, size_t offset, size_t bytes, const char* what) {
  if (offset > b.size() || bytes > b.size() - offset)
    fail("cpu backend: %s of %zu bytes at offset %zu overruns a buffer of %zu bytes", what, bytes,
         offset, b.size());
}

// ---- Device info -----------------------------------------------------------------------

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.compare(0, 10, "model name") != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const size_t start = line.find_first_not_of(" \t", colon + 1);
    if (start != std::string::npos) return line.substr(start);
  }
  return "CPU";
}

// MemAvailable counts reclaimable page cache, unlike sysinfo's freeram.
void host_memory(size_t* total, size_t* avail) {
  *total = *avail = 0;
  std::ifstream f("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  std::string unit;
  while (f >> key >> kb) {
    std::getline(f, unit);
    if (key == "MemTotal:") *total = kb * 1024;
    if (key == "MemAvailable:") *avail = kb * 1024;
  }
  struct sysinfo si;
  if ((*total == 0 || *avail == 0) && sysinfo(&si) == 0) {
    if (*total == 0) *total = static_cast<size_t>(si.totalram) * si.mem_unit;
    if (*avail == 0) *avail = static_cast<size_t>(si.freeram + si.bufferram) * si.mem_unit;
  }
}

// ---- Programs --------------------------------------------------------------------------

using Arg = TensorArg;  // a bound tensor in host memory

struct Step {
  Op op;
  OpParams p;
  std::string kernel;  // what Program::dispatches() reports, e.g. "cpu_matmul_q4_0"
  std::vector<Arg> in;
  Arg out;
  // Norm weights / matmul bias that are not f32 are decoded here on every run (they
  // are small), so that a program never caches the contents of a buffer.
  std::vector<float> scratch;
};

// Returns the input as float32: in place when it is f32, else decoded into scratch.
const float* as_f32(const Arg& a, std::vector<float>& scratch, size_t at) {
  if (a.dtype == DType::F32) return a.f32();
  float* dst = scratch.data() + at;
  cpu::dequant_row_fn(a.dtype)(a.ptr, 0, a.shape.numel(), dst);
  return dst;
}

void run_step(ThreadPool& pool, Step& s) {
  const std::vector<Arg>& in = s.in;
  const OpParams& p = s.p;
  switch (s.op) {
    case Op::GetRows:
      cpu::get_rows(pool, in[0].ptr, in[0].dtype, in[0].shape.rows(), in[0].shape.row_len(),
                    in[1].i32(), in[1].shape.numel(), s.out.f32_mut());
      return;
    case Op::RmsNorm: {
      const float* w = as_f32(in[1], s.scratch, 0);
      cpu::rms_norm(pool, in[0].f32(), w, s.out.f32_mut(), in[0].shape.rows(),
                    in[0].shape.row_len(), p.eps);
      return;
    }
    case Op::LayerNorm: {
      const int64_t d = in[0].shape.row_len();
      const float* w = as_f32(in[1], s.scratch, 0);
      const float* b = in.size() > 2 ? as_f32(in[2], s.scratch, d) : nullptr;
      cpu::layer_norm(pool, in[0].f32(), w, b, s.out.f32_mut(), in[0].shape.rows(), d, p.eps);
      return;
    }
    case Op::MatMul: {
      const float* bias = in.size() > 2 ? as_f32(in[2], s.scratch, 0) : nullptr;
      cpu::matmul(pool, in[0].f32(), in[1].ptr, in[1].dtype, bias, s.out.f32_mut(),
                  in[0].shape.rows(), in[0].shape.row_len(), in[1].shape[0]);
      return;
    }
    case Op::Rope:
      cpu::rope(pool, in[0].f32(), in[1].i32(), in[2].f32(), s.out.f32_mut(), in[0].shape.rows(),
                p.n_heads, p.head_dim, p.rot_dims, p.rope_style);
      return;
    case Op::KvAppend:
      cpu::kv_append(pool, in[0].f32(), in[1].i32(), in[0].shape.rows(), in[0].shape.row_len(),
                     s.out.ptr, s.out.dtype, s.out.shape.rows());
      return;
    case Op::Attention: {
      cpu::AttentionArgs a;
      a.q = in[0].f32();
      a.k_cache = in[1].ptr;
      a.v_cache = in[2].ptr;
      a.k_type = in[1].dtype;
      a.v_type = in[2].dtype;
      a.cache_rows = in[1].shape.rows();
      a.positions = in[3].i32();
      a.seq_ids = in[4].i32();
      a.block_table = in[5].i32();
      a.n_seqs = in[5].shape[0];
      a.max_pages = in[5].shape[1];
      a.out = s.out.f32_mut();
      a.T = in[0].shape.rows();
      a.p = p;
      cpu::attention(pool, a);
      return;
    }
    case Op::SiluMul:
      cpu::silu_mul(pool, in[0].f32(), in[1].f32(), s.out.f32_mut(), in[0].shape.numel());
      return;
    case Op::GeluMul:
      cpu::gelu_mul(pool, in[0].f32(), in[1].f32(), s.out.f32_mut(), in[0].shape.numel());
      return;
    case Op::Gelu:
      cpu::gelu(pool, in[0].f32(), s.out.f32_mut(), in[0].shape.numel());
      return;
    case Op::GeluTanh:
      cpu::gelu_tanh(pool, in[0].f32(), s.out.f32_mut(), in[0].shape.numel());
      return;
    case Op::Add:
    case Op::Mul: {
      const int64_t d = in[0].shape.row_len();
      const int64_t rows = in[0].shape.numel() / d;
      const int64_t b_rows = in[1].shape.numel() / d;
      (s.op == Op::Add ? cpu::add : cpu::mul)(pool, in[0].f32(), in[1].f32(), b_rows,
                                              s.out.f32_mut(), rows, d);
      return;
    }
    case Op::Scale:
      cpu::scale(pool, in[0].f32(), p.scale, s.out.f32_mut(), in[0].shape.numel());
      return;
    case Op::Slice: {
      const int64_t rows = in[0].shape.rows();
      cpu::slice(pool, in[0].f32(), s.out.f32_mut(), rows, p.n_heads,
                 in[0].shape.row_len() / p.n_heads, p.head_dim, p.offset);
      return;
    }
    case Op::Mix:
      cpu::mix(pool, in[0].f32(), in[1].f32(), in[2].f32(), s.out.f32_mut(), in[0].shape.rows(),
               in[0].shape.row_len());
      return;
    case Op::SigmoidMul:
      cpu::sigmoid_mul(pool, in[0].f32(), in[1].f32(), s.out.f32_mut(), in[0].shape.numel());
      return;
    case Op::ReluSqr:
      cpu::relu_sqr(pool, in[0].f32(), s.out.f32_mut(), in[0].shape.numel());
      return;
    case Op::TokenShift:
      cpu::token_shift(pool, in[0].f32(), in[1].f32_mut(), in[2].i32(), in[3].i32(),
                       s.out.f32_mut(), in[0].shape.rows(), in[0].shape.row_len(),
                       in[3].shape.numel(), in[1].shape.rows());
      return;
    case Op::Sample:
      cpu::sample_rows(pool, in[0].f32(), in[1].f32(), in[0].shape.rows(), in[0].shape.row_len(),
                       s.out.i32_mut());
      return;
    case Op::Wkv:
      cpu::wkv(pool, in[0].f32(), in[1].f32(), in[2].f32(), in[3].f32(), in[4].f32_mut(),
               in[5].i32(), in[6].i32(), s.out.f32_mut(), in[0].shape.rows(), in[0].shape.row_len(),
               in[6].shape.numel(), in[4].shape.rows());
      return;
    case Op::kCount:
      break;
  }
  fail("cpu backend: unknown op %d", static_cast<int>(s.op));
}

class CpuProgram final : public Program {
 public:
  CpuProgram(std::shared_ptr<ThreadPool> pool, std::vector<Step> steps)
      : pool_(std::move(pool)), steps_(std::move(steps)) {}
  void run() override {
    for (Step& s : steps_) run_step(*pool_, s);
  }
  std::vector<Dispatch> dispatches() const override {
    std::vector<Dispatch> d;
    for (size_t i = 0; i < steps_.size(); i++)
      d.push_back({steps_[i].kernel, {static_cast<int>(i)}});
    return d;
  }
  std::string profile_method() const override { return "the wall clock around each op"; }
  // Kernels return when their threads are done, so wall time per step is its time.
  std::vector<double> run_profiled() override {
    std::vector<double> ms(steps_.size());
    auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < steps_.size(); i++) {
      run_step(*pool_, steps_[i]);
      const auto t1 = std::chrono::steady_clock::now();
      ms[i] = std::chrono::duration<double, std::milli>(t1 - t0).count();
      t0 = t1;
    }
    return ms;
  }

 private:
  std::shared_ptr<ThreadPool> pool_;
  std::vector<Step> steps_;
};

// The kernel that run_step picks for a node: the weight / table / cache dtype
// names the variant, and quantized matmuls of few tokens take the integer GEMV.
std::string kernel_name(const BoundNode& bn) {
  const Op op = bn.node->op;
  std::string name = std::string("cpu_") + op_name(op);
  switch (op) {
    case Op::MatMul: {
      const DType w = bn.inputs[1].dtype;
      if (is_quant(w) && bn.inputs[0].shape.rows() <= cpu::kQuantGemvMaxTokens) name = "cpu_qgemv";
      return name + "_" + dtype_name(w);
    }
    case Op::GetRows:
      return name + "_" + dtype_name(bn.inputs[0].dtype);
    case Op::KvAppend:
      return name + "_" + dtype_name(bn.output.dtype);
    default:
      return name;
  }
}

// ---- The backend -----------------------------------------------------------------------

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int n_threads) : pool_(std::make_shared<ThreadPool>(n_threads)) {}

  bool runs_weight_dtype(DType t) const override {
    return Backend::runs_weight_dtype(t) || t == DType::Q4_1;
  }

  DeviceInfo info() const override {
    DeviceInfo d;
    d.id = "cpu";
    d.name = cpu_model_name();
    d.type = "cpu";
    host_memory(&d.total_memory, &d.free_memory);
    d.details = format_message("%d threads, %s", pool_->n_threads(), cpu::matmul_isa());
    return d;
  }

  std::unique_ptr<DeviceBuffer> alloc(size_t bytes, const std::string& what) override {
    // aligned_alloc wants a multiple of the alignment; never ask for 0 bytes.
    const size_t rounded = (std::max<size_t>(bytes, 1) + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, rounded);
    if (!p)
      fail("out of host memory allocating %zu MiB for %s", (bytes + (1 << 20) - 1) >> 20,
           what.c_str());
    return std::make_unique<CpuBuffer>(static_cast<uint8_t*>(p), bytes, true);
  }

  // Aliases the host memory (memory-mapped weights): no copy, nothing to free.
  std::unique_ptr<DeviceBuffer> from_host(const void* data, size_t bytes,
                                          const std::string&) override {
    return std::make_unique<CpuBuffer>(static_cast<uint8_t*>(const_cast<void*>(data)), bytes,
                                       false);
  }

  void upload(DeviceBuffer& dst, size_t offset, const void* src, size_t bytes) override {
    check_range(dst, offset, bytes, "upload");
    if (bytes) std::memcpy(host_ptr(dst) + offset, src, bytes);
  }

  void download(const DeviceBuffer& src, size_t offset, void* dst, size_t bytes) override {
    check_range(src, offset, bytes, "download");
    if (bytes) std::memcpy(dst, host_ptr(src) + offset, bytes);
  }

  void clear(DeviceBuffer& dst, size_t offset, size_t bytes) override {
    check_range(dst, offset, bytes, "clear");
    if (bytes) std::memset(host_ptr(dst) + offset, 0, bytes);
  }

  std::string check(const Node& node, const std::vector<const TensorInfo*>& inputs,
                    const TensorInfo& output) const override;

  std::unique_ptr<Program> compile(std::vector<BoundNode> nodes) override;

 private:
  std::shared_ptr<ThreadPool> pool_;
};

std::string CpuBackend::check(const Node& node, const std::vector<const TensorInfo*>& inputs,
                              const TensorInfo& output) const {
  return check_op(node, inputs, output, "cpu");
}

std::unique_ptr<Program> CpuBackend::compile(std::vector<BoundNode> nodes) {
  std::vector<Step> steps;
  steps.reserve(nodes.size());
  auto resolve = [](const TensorRef& r, const std::string& node, const char* what) {
    if (!r.buffer) fail("cpu backend: node '%s': %s has no buffer", node.c_str(), what);
    const size_t bytes = tensor_bytes(r.dtype, r.shape);
    if (r.offset > r.buffer->size() || bytes > r.buffer->size() - r.offset)
      fail("cpu backend: node '%s': %s (%zu bytes at %zu) overruns its buffer of %zu bytes",
           node.c_str(), what, bytes, r.offset, r.buffer->size());
    return Arg{host_ptr(*r.buffer) + r.offset, r.dtype, r.shape};
  };
  for (const BoundNode& bn : nodes) {
    check_bound(bn, "cpu backend");  // against the bound tensors the kernels will see
    const Node& node = *bn.node;

    Step s;
    s.op = node.op;
    s.p = node.params;
    s.kernel = kernel_name(bn);
    for (const TensorRef& r : bn.inputs) s.in.push_back(resolve(r, node.name, "an input"));
    s.out = resolve(bn.output, node.name, "the output");
    // Room to decode non-f32 norm weights / biases ([d] each) and matmul biases ([N]).
    auto decoded = [&](size_t i) { return s.in.size() > i && s.in[i].dtype != DType::F32; };
    size_t scratch = 0;
    if ((node.op == Op::RmsNorm || node.op == Op::LayerNorm) && (decoded(1) || decoded(2)))
      scratch = 2 * static_cast<size_t>(s.in[0].shape.row_len());
    if (node.op == Op::MatMul && decoded(2)) scratch = static_cast<size_t>(s.in[2].shape.numel());
    s.scratch.resize(scratch);
    steps.push_back(std::move(s));
  }
  return std::make_unique<CpuProgram>(pool_, std::move(steps));
}

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
  return std::make_unique<CpuBackend>(n_threads);
}

}  // namespace llm
