// plan_program: see cuda_planner.h.
#include "backends/cuda/cuda_planner.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <string>
#include <unordered_map>

#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/cuda_program.h"
#include "core/error.h"

namespace llm {
namespace cuda {

namespace {

// Upper bound of the f16/bf16 -> f32 weight conversion buffer of the GEMM path.
constexpr size_t kGemmScratchMax = 64 * kMiB;

using Arg = TensorArg;  // a bound tensor as a device pointer

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

// What the f16 activation scratch holds at a point of the program (so a matmul of the
// same x need not convert it again).
struct X16 {
  const uint8_t* ptr = nullptr;
  Shape shape;
  bool fragment_order = false;  // qmma's layout, else row-major (qgemm, gemm_half)
  bool bf16 = false;            // bf16 halves (gemm_half of bf16 weights), else f16
  // Whether the scratch holds x as `fragment_order` f16 (or bf16) halves.
  bool holds(const uint8_t* x, const Shape& x_shape, bool fragments, bool as_bf16) const {
    return ptr == x && shape == x_shape && fragment_order == fragments && bf16 == as_bf16;
  }
};

// Element-wise reads and writes may share memory exactly, not in part.
bool same_or_apart(const Region& a, const Region& b) {
  return !a.overlaps(b) || (a.p == b.p && a.bytes == b.bytes);
}

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
class Planner {
 public:
  Planner(const Backend& backend, const std::shared_ptr<Context>& ctx,
          std::vector<BoundNode> nodes);
  std::unique_ptr<Program> plan();

 private:
  // The tensor a bound node reads or writes, as a device pointer (checked against its
  // buffer).
  Arg resolve(const TensorRef& r, const std::string& node, const char* what) const;
  TensorId in_id(size_t i, size_t k) const { return nodes_[i].node->inputs[k]; }
  TensorId out_id(size_t i) const { return nodes_[i].node->output; }
  Op op_at(size_t i) const { return i < n_nodes_ ? nodes_[i].node->op : Op::kCount; }
  // Appends a launch of the current iteration (kernel: its name in dispatches(), the
  // label by default; late_trigger: it lets the next launch start only after its own
  // programmatic-launch wait).
  void emit(std::string label, Launch l, std::string kernel = "", bool late_trigger = false);
  bool written_before_previous_starts(const Arg& a, size_t reader) const;
  QMatrix qview(size_t i, size_t k);
  bool qgemv_ok(size_t i) const;
  bool same_x(size_t i, size_t j) const;
  bool rope_kv_at(size_t ni, RopeKvArgs& a) const;
  int64_t try_qgemv(size_t ni);
  bool qmma_ok(size_t i) const;
  int64_t try_qmma(size_t ni, const X16& x16_before, X16& x16_after);
  bool try_rope_kv(size_t ni);
  void plan_qgemm(size_t ni, const X16& x16_before);
  void plan_half_gemm(size_t ni, const X16& x16_before);
  size_t plan_gemv(size_t ni);
  void plan_op(size_t ni);
  // The scratch the launches read, sized now that they are all known.
  void allocate_scratch();

  const Backend& backend_;
  std::shared_ptr<Context> ctx_;
  std::vector<BoundNode> nodes_;
  const size_t n_nodes_;
  const int device_, n_sms_, smem_optin_;
  int* const err_;  // the kernels' error flag
  std::vector<std::vector<Arg>> ins_;
  std::vector<Arg> outs_;
  bool ids_ = true;  // the nodes' tensor ids match their bound inputs (fusions need them)
  // Dataflow by tensor id: which node reads each tensor last.
  std::unordered_map<TensorId, int> last_use_;
  std::shared_ptr<Scratch> scratch_ = std::make_shared<Scratch>();
  size_t need_gemm_ = 0, need_w16_ = 0, need_x16_ = 0, need_partials_ = 0, need_counters_ = 0;
  bool need_sample_ = false;
  std::vector<std::shared_ptr<CudaBuffer>> keep_;
  std::vector<Launch> launches_;
  std::vector<std::string> labels_;
  // For Program::dispatches(): each launch's kernel, and the first node of the loop
  // iteration that emitted it (an iteration covers its node and those it fused).
  std::vector<std::string> kernels_;
  std::vector<size_t> launch_iter_, iter_starts_;
  // Launches whose kernel lets the next one start only after its own programmatic-launch
  // wait (the GEMVs): everything before them is then complete.
  std::vector<bool> triggers_after_wait_;
  size_t iter_first_ = 0;
  X16 x16_holds_;  // what the f16 activation scratch holds at this point of the program
};

Planner::Planner(const Backend& backend, const std::shared_ptr<Context>& ctx,
                 std::vector<BoundNode> nodes)
    : backend_(backend),
      ctx_(ctx),
      nodes_(std::move(nodes)),
      n_nodes_(nodes_.size()),
      device_(ctx->device),
      n_sms_(ctx->n_sms),
      smem_optin_(ctx->smem_optin),
      err_(reinterpret_cast<int*>(ctx->err_flag->data())),
      ins_(n_nodes_),
      outs_(n_nodes_) {
  use_device(device_);
  // Shared memory limits first: qmma_splits asks the occupancy API, which counts them.
  qgemv_prepare(smem_optin_);
  qmma_prepare(smem_optin_);
  rope_kv_prepare();
  for (size_t i = 0; i < n_nodes_; i++) {
    const BoundNode& bn = nodes_[i];
    backend_.check_bound(bn, "cuda backend");
    const Node& node = *bn.node;
    for (const TensorRef& r : bn.inputs) ins_[i].push_back(resolve(r, node.name, "an input"));
    outs_[i] = resolve(bn.output, node.name, "the output");
    if (node.inputs.size() != bn.inputs.size()) ids_ = false;
  }
  if (ids_) {
    for (size_t i = 0; i < n_nodes_; i++)
      for (TensorId id : nodes_[i].node->inputs) last_use_[id] = static_cast<int>(i);
  }
  launches_.reserve(n_nodes_);
}

// A GEMV (few tokens) reads x once per weight row; consecutive matmuls of one x
// (q/k/v, gate/up) share one launch, which saves launches and fills the GPU better
// for the small matrices. The results are the same bits as separate launches.
std::unique_ptr<Program> Planner::plan() {
  for (size_t ni = 0; ni < n_nodes_; ni++) {
    iter_first_ = ni;
    iter_starts_.push_back(ni);
    const Node& node = *nodes_[ni].node;
    const std::vector<Arg>& in = ins_[ni];
    const X16 x16_before = x16_holds_;
    x16_holds_ = X16{};
    if (node.op == Op::RmsNorm || node.op == Op::MatMul) {
      const int64_t last = try_qgemv(ni);
      if (last >= 0) {
        ni = static_cast<size_t>(last);
        continue;
      }
    }
    if (node.op == Op::RmsNorm || node.op == Op::SiluMul || node.op == Op::MatMul) {
      const int64_t last = try_qmma(ni, x16_before, x16_holds_);
      if (last >= 0) {
        ni = static_cast<size_t>(last);
        continue;
      }
    }
    if (try_rope_kv(ni)) {
      ni += 3;
    } else if (node.op == Op::MatMul && is_quant(in[1].dtype)) {
      plan_qgemm(ni, x16_before);
    } else if (node.op == Op::MatMul && ctx_->half_gemm &&
               (in[1].dtype == DType::F16 || in[1].dtype == DType::BF16) &&
               in[0].shape.rows() > ctx_->half_gemv_max_tokens) {
      plan_half_gemm(ni, x16_before);
    } else if (node.op == Op::MatMul && in[0].shape.rows() <= kGemvMaxTokens) {
      ni = plan_gemv(ni);
    } else {
      plan_op(ni);
    }
  }
  allocate_scratch();
  // The last launch of an iteration computes its nodes; launches before it in the same
  // iteration (weight repacking) serve no node of their own.
  std::vector<Program::Dispatch> dispatches;
  for (size_t i = 0; i < launches_.size(); i++) {
    Program::Dispatch d{kernels_[i], {}};
    if (i + 1 == launches_.size() || launch_iter_[i + 1] != launch_iter_[i]) {
      const auto next = std::upper_bound(iter_starts_.begin(), iter_starts_.end(), launch_iter_[i]);
      const size_t end = next == iter_starts_.end() ? n_nodes_ : *next;
      for (size_t n = launch_iter_[i]; n < end; n++) d.nodes.push_back(static_cast<int>(n));
    }
    dispatches.push_back(std::move(d));
  }
  // Launches hold the scratch through their captures.
  return make_program(ctx_, std::move(launches_), std::move(labels_), std::move(dispatches),
                      std::move(keep_));
}

Arg Planner::resolve(const TensorRef& r, const std::string& node, const char* what) const {
  const int device = device_;
  if (!r.buffer) fail("cuda backend: node '%s': %s has no buffer", node.c_str(), what);
  const size_t bytes = tensor_bytes(r.dtype, r.shape);
  if (r.offset > r.buffer->size() || bytes > r.buffer->size() - r.offset)
    fail("cuda backend: node '%s': %s (%zu bytes at %zu) overruns its buffer of %zu bytes",
         node.c_str(), what, bytes, r.offset, r.buffer->size());
  return Arg{cuda_buffer(*r.buffer, device).data() + r.offset, r.dtype, r.shape};
}

void Planner::emit(std::string label, Launch l, std::string kernel, bool late_trigger) {
  kernels_.push_back(kernel.empty() ? label : std::move(kernel));
  labels_.push_back(std::move(label));
  launches_.push_back(std::move(l));
  launch_iter_.push_back(iter_first_);
  triggers_after_wait_.push_back(late_trigger);
}

// Whether `a`, read by node `reader`, is complete whenever the next launch starts, so
// that launch may read it before its programmatic-launch wait. The next launch starts
// when the one before it triggers; a launch that triggers after its own wait has
// everything before it complete, others may trigger at their start, so a run of them
// just before lets the next launch start that much earlier.
bool Planner::written_before_previous_starts(const Arg& a, size_t reader) const {
  const Region r = region_of(a);
  size_t n = reader;
  while (n > 0 && !region_of(outs_[n - 1]).overlaps(r)) n--;
  if (n == 0) return true;      // written before the program runs
  const size_t writer = n - 1;  // the last node before `reader` whose output overlaps `a`
  // The writer's iteration's last launch (launch_iter rises with the launches).
  const auto after = std::upper_bound(launch_iter_.begin(), launch_iter_.end(), writer);
  const int64_t last = (after - launch_iter_.begin()) - 1;
  if (last < 0) return true;
  int64_t complete = static_cast<int64_t>(launches_.size()) - 2;  // before the last late trigger
  while (complete >= 0 && !triggers_after_wait_[complete + 1]) complete--;
  return last <= complete;
}

// A quantized matrix as the kernels read it: in place when upload_weight stored it,
// else (raw GGUF blocks in an ordinary buffer) repacked into a buffer of this program
// at the start of every run, so later uploads to the raw buffer are seen.
QMatrix Planner::qview(size_t i, size_t k) {
  const int device = device_;
  const Arg& a = ins_[i][k];
  const int64_t N = a.shape.rows(), K = a.shape.row_len();
  const TensorRef& r = nodes_[i].inputs[k];
  const CudaBuffer& b = cuda_buffer(*r.buffer, device);
  if (r.offset == 0 && b.holds_split(a.dtype, N, K)) return qsplit_view(b.data(), a.dtype, N, K);
  keep_.push_back(device_alloc(device, qsplit_bytes(a.dtype, N, K), "a repacked quantized tensor"));
  uint8_t* dst = keep_.back()->data();
  const uint8_t* src = a.ptr;
  const DType t = a.dtype;
  emit(format_message("repack %s", dtype_name(t)),
       [=](cudaStream_t s) { repack_quant(s, src, t, N, K, dst); });
  return qsplit_view(dst, t, N, K);
}

bool Planner::qgemv_ok(size_t i) const {
  if (op_at(i) != Op::MatMul || !is_quant(ins_[i][1].dtype)) return false;
  const int64_t T = ins_[i][0].shape.rows(), K = ins_[i][0].shape.row_len();
  return T <= ctx_->qgemv_max_tokens && qgemv_smem_bytes(T, K) <= kQGemvMaxSmem &&
         aligned16(ins_[i][0].ptr);
}

// Matmuls of one x and one weight dtype.
bool Planner::same_x(size_t i, size_t j) const {
  if (op_at(i) != Op::MatMul || op_at(j) != Op::MatMul) return false;
  const BoundNode &a = nodes_[i], &b = nodes_[j];
  return b.inputs[0].buffer == a.inputs[0].buffer && b.inputs[0].offset == a.inputs[0].offset &&
         b.inputs[0].shape == a.inputs[0].shape && b.inputs[1].dtype == a.inputs[1].dtype;
}

// Rope(q), Rope(k), KvAppend(k), KvAppend(v) at ni: their arguments as one launch's.
bool Planner::rope_kv_at(size_t ni, RopeKvArgs& a) const {
  int* const err = err_;
  if (!ids_ || op_at(ni) != Op::Rope || op_at(ni + 1) != Op::Rope ||
      op_at(ni + 2) != Op::KvAppend || op_at(ni + 3) != Op::KvAppend)
    return false;
  const OpParams &pq = nodes_[ni].node->params, &pk = nodes_[ni + 1].node->params;
  const std::vector<Arg>&q = ins_[ni], &k = ins_[ni + 1], &ak = ins_[ni + 2], &av = ins_[ni + 3];
  const int64_t T = q[0].shape.rows();
  if (in_id(ni, 1) != in_id(ni + 1, 1) || in_id(ni, 2) != in_id(ni + 1, 2) ||
      in_id(ni + 2, 0) != out_id(ni + 1) || in_id(ni + 3, 1) != in_id(ni + 2, 1) ||
      pq.head_dim != pk.head_dim || pq.rot_dims != pk.rot_dims || pq.rope_style != pk.rope_style ||
      k[0].shape.rows() != T || av[0].shape != ak[0].shape || av[0].shape.rows() != T ||
      ak[2].dtype != av[2].dtype || ak[2].shape != av[2].shape ||
      av[0].shape.row_len() != int64_t{pk.n_heads} * pk.head_dim)
    return false;
  a = RopeKvArgs{};
  a.q = q[0].f32();
  a.k = k[0].f32();
  a.v = av[0].f32();
  a.positions = q[1].i32();
  a.inv_freq = q[2].f32();
  a.slots = ak[1].i32();
  a.q_out = outs_[ni].f32_mut();
  // The rotated k is written out only when a node after the cache write reads it.
  const auto k_use = last_use_.find(out_id(ni + 1));
  a.k_out = k_use != last_use_.end() && k_use->second > static_cast<int>(ni) + 2
                ? outs_[ni + 1].f32_mut()
                : nullptr;
  a.k_cache = outs_[ni + 2].ptr;
  a.v_cache = outs_[ni + 3].ptr;
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
         rope_kv_smem_bytes(T, pq.n_heads, pk.n_heads, pq.head_dim) <= kRopeKvMaxSmem;
}

// Tries the quantized GEMV group that starts at ni (an RmsNorm feeding it, or the
// first matmul); returns the index of the last node it covers, or -1.
int64_t Planner::try_qgemv(size_t ni) {
  const std::shared_ptr<Scratch> scratch = scratch_;
  const int n_sms = n_sms_;
  const int smem_optin = smem_optin_;
  const bool has_norm =
      ids_ && op_at(ni) == Op::RmsNorm && qgemv_ok(ni + 1) && in_id(ni + 1, 0) == out_id(ni);
  const size_t m0 = has_norm ? ni + 1 : ni;
  if (!qgemv_ok(m0)) return -1;
  size_t m1 = m0;
  while (m1 + 1 - m0 < static_cast<size_t>(kGemvMaxSegs) && same_x(m0, m1 + 1)) m1++;
  // Epilogue candidates.
  QEpilogue epi = QEpilogue::None;
  size_t res_k = 0;
  const size_t e = m1 + 1;
  if (ids_ && op_at(e) == Op::SiluMul && m1 == m0 + 1 && in_id(e, 0) == out_id(m0) &&
      in_id(e, 1) == out_id(m1) && ins_[m0][1].shape[0] == ins_[m1][1].shape[0]) {
    epi = QEpilogue::SiluPair;
  } else if (ids_ && op_at(e) == Op::Add && m1 == m0) {
    for (size_t k = 0; k < 2; k++) {
      if (in_id(e, k) == out_id(m0) && in_id(e, 1 - k) != out_id(m0) &&
          ins_[e][1 - k].shape.numel() == outs_[m0].shape.numel()) {
        epi = QEpilogue::Residual;
        res_k = 1 - k;
      }
    }
  } else if (ids_ && op_at(e) == Op::Sample && ctx_->fuse_sample && m1 == m0 &&
             in_id(e, 0) == out_id(m0) && outs_[m0].shape.rows() == 1 &&
             outs_[e].shape.numel() == 1) {
    epi = QEpilogue::Sample;
  }
  // q, k and v, then their rope and cache appends (the rope_kv launch's nodes).
  RopeKvArgs rope;
  if (ids_ && epi == QEpilogue::None && m1 == m0 + 2 && rope_kv_at(e, rope) &&
      in_id(e, 0) == out_id(m0) && in_id(e + 1, 0) == out_id(m0 + 1) &&
      in_id(e + 3, 0) == out_id(m0 + 2))
    epi = QEpilogue::RopeKv;
  const size_t e_last = epi == QEpilogue::RopeKv ? e + 3 : e;
  // With the rope epilogue a product is written only when a node after it reads it.
  auto y_needed = [&](size_t m, bool use_epi) {
    if (!use_epi || epi != QEpilogue::RopeKv) return true;
    const auto lu = last_use_.find(out_id(m));
    return lu != last_use_.end() && lu->second > static_cast<int>(e_last);
  };
  std::vector<bool> variants = {epi != QEpilogue::None};
  if (variants[0]) variants.push_back(false);
  for (const bool use_epi : variants) {
    // Reads and writes of the fused launch.
    std::vector<Region> reads, writes;
    reads.push_back(region_of(has_norm ? ins_[ni][0] : ins_[m0][0]));
    if (has_norm) reads.push_back(region_of(ins_[ni][1]));
    for (size_t m = m0; m <= m1; m++) {
      if (y_needed(m, use_epi)) writes.push_back(region_of(outs_[m]));
      if (ins_[m].size() > 2) reads.push_back(region_of(ins_[m][2]));
    }
    if (use_epi && epi == QEpilogue::RopeKv) {
      writes.push_back(region_of(outs_[e]));
      if (rope.k_out) writes.push_back(region_of(outs_[e + 1]));
      writes.push_back(region_of(outs_[e + 2]));
      writes.push_back(region_of(outs_[e + 3]));
      for (size_t k = 1; k < 3; k++) reads.push_back(region_of(ins_[e][k]));
      reads.push_back(region_of(ins_[e + 2][1]));
    } else if (use_epi && epi != QEpilogue::Sample) {
      writes.push_back(region_of(outs_[e]));
      if (epi == QEpilogue::Residual) reads.push_back(region_of(ins_[e][res_k]));
    }
    // The normalized x is written only for readers after this launch (so no output of
    // the launch can share its memory).
    const size_t last = use_epi ? e_last : m1;
    const auto lu = has_norm ? last_use_.find(out_id(ni)) : last_use_.end();
    const bool write_norm =
        has_norm && lu != last_use_.end() && lu->second > static_cast<int>(last);
    if (write_norm) writes.push_back(region_of(outs_[ni]));
    bool ok = true;
    for (size_t a = 0; a < writes.size() && ok; a++) {
      for (const Region& r : reads) ok = ok && !writes[a].overlaps(r);
      for (size_t b = a + 1; b < writes.size(); b++) ok = ok && !writes[a].overlaps(writes[b]);
    }
    // The sampled id is written last, by the last block, once every block has read all
    // it reads (the planner may give it the memory of the dead x): only other writes
    // must keep off it.
    if (use_epi && epi == QEpilogue::Sample)
      for (const Region& w : writes) ok = ok && !w.overlaps(region_of(outs_[e]));
    // Plain grouping reads x and writes outputs whose lifetimes overlap it: always fine.
    if (!ok && (has_norm || use_epi)) continue;

    QGemvArgs qa;
    qa.x = has_norm ? ins_[ni][0].f32() : ins_[m0][0].f32();
    qa.T = ins_[m0][0].shape.rows();
    qa.K = ins_[m0][0].shape.row_len();
    qa.type = ins_[m0][1].dtype;
    qa.n_segs = static_cast<int>(m1 - m0 + 1);
    std::string label = format_message("qmatmul %s T=%lld:", dtype_name(qa.type), (long long)qa.T);
    std::string kernel = format_message("qgemv_%s", dtype_name(qa.type));
    const size_t launches_before = launches_.size();
    for (size_t m = m0; m <= m1; m++) {
      QGemvSeg& sg = qa.segs[m - m0];
      sg.w = qview(m, 1);
      if (ins_[m].size() > 2) {
        sg.bias = ins_[m][2].ptr;
        sg.bias_type = ins_[m][2].dtype;
      }
      sg.y = y_needed(m, use_epi) ? outs_[m].f32_mut() : nullptr;
      label += format_message(" [%lld x %lld]", (long long)sg.w.N, (long long)qa.K);
    }
    if (has_norm) {
      qa.norm_w = ins_[ni][1].ptr;
      qa.norm_type = ins_[ni][1].dtype;
      qa.eps = nodes_[ni].node->params.eps;
      qa.norm_out = write_norm ? outs_[ni].f32_mut() : nullptr;
      label += " +rms_norm";
      kernel += "+rms_norm";
    }
    const bool samples = use_epi && epi == QEpilogue::Sample;
    if (use_epi && epi == QEpilogue::RopeKv) {
      qa.epilogue = epi;
      qa.rope = rope;
      label += " +rope+kv_append";
      kernel += "+rope+kv";
    } else if (samples) {
      qa.epilogue = epi;
      qa.sample_params = ins_[e][1].f32();
      qa.sample_out = outs_[e].i32_mut();
      need_sample_ = true;
      label += " +sample";
      kernel += "+sample";
    } else if (use_epi) {
      qa.epilogue = epi;
      qa.out2 = outs_[e].f32_mut();
      if (epi == QEpilogue::Residual) {
        qa.residual = ins_[e][res_k].f32();
        label += " +residual";
        kernel += "+residual";
      } else {
        label += " +silu_mul";
        kernel += "+silu_mul";
      }
    }
    // Weights repacked by a launch of this program are written just before: no early
    // start then.
    qa.pdl = ctx_->pdl && launches_.size() == launches_before;
    qa.allow_staged = ctx_->qgemv_staged;
    if (qa.residual && qa.pdl)
      qa.residual_early = written_before_previous_starts(ins_[e][res_k], e);
    // The Sample epilogue's scratch is allocated once the program's launches are known.
    emit(
        label,
        [=](cudaStream_t s) {
          if (!samples) return qgemv(s, qa, n_sms, smem_optin);
          QGemvArgs a = qa;
          a.sample_scratch = scratch->sample;
          qgemv(s, a, n_sms, smem_optin);
        },
        kernel, /*late_trigger=*/true);
    return static_cast<int64_t>(use_epi ? e_last : m1);
  }
  return -1;
}

// (Not what the GEMV takes: its 16-bit activations are more exact than f16.)
bool Planner::qmma_ok(size_t i) const {
  const int smem_optin = smem_optin_;
  if (op_at(i) != Op::MatMul || !is_quant(ins_[i][1].dtype) || qgemv_ok(i)) return false;
  const Arg& x = ins_[i][0];
  return x.shape.rows() <= ctx_->qmma_max_tokens && aligned16(x.ptr) &&
         qmma_fits(ins_[i][1].dtype, x.shape.rows(), smem_optin);
}

// Batched decode and short prefill: quantized matmuls of one x (up to kQMmaMaxSegs)
// as one MMA launch. The conversion of x to f16 computes the RmsNorm or SiluMul that
// produced x (so it needs no launch of its own), and a residual Add after a single
// matmul runs in the kernel that writes its y. Returns the last node covered, or -1.
int64_t Planner::try_qmma(size_t ni, const X16& x16_before, X16& x16_after) {
  const std::shared_ptr<Scratch> scratch = scratch_;
  const int n_sms = n_sms_;
  const Op pro_op = op_at(ni);
  const bool has_pro = ids_ && (pro_op == Op::RmsNorm || pro_op == Op::SiluMul) &&
                       qmma_ok(ni + 1) && in_id(ni + 1, 0) == out_id(ni) &&
                       ins_[ni][0].shape == outs_[ni].shape &&
                       (pro_op == Op::RmsNorm || ins_[ni][1].shape == outs_[ni].shape);
  const size_t m0 = has_pro ? ni + 1 : ni;
  if (!qmma_ok(m0)) return -1;
  size_t m1 = m0;
  while (m1 + 1 - m0 < static_cast<size_t>(kQMmaMaxSegs) && same_x(m0, m1 + 1)) m1++;
  // The residual Add: y of the single matmul plus the other input, of y's shape.
  const size_t e = m1 + 1;
  int res_k = -1;
  if (ids_ && m1 == m0 && op_at(e) == Op::Add) {
    for (int k = 0; k < 2; k++)
      if (in_id(e, k) == out_id(m0) && in_id(e, 1 - k) != out_id(m0) &&
          ins_[e][1 - k].shape == outs_[m0].shape && outs_[e].shape == outs_[m0].shape)
        res_k = 1 - k;
  }
  if (res_k >= 0 && !same_or_apart(region_of(outs_[e]), region_of(ins_[e][res_k]))) res_k = -1;
  const size_t last = res_k >= 0 ? e : m1;
  auto read_after = [&](TensorId id) {
    const auto lu = last_use_.find(id);
    return lu != last_use_.end() && lu->second > static_cast<int>(last);
  };
  QMmaConvertArgs cv;
  cv.T = ins_[m0][0].shape.rows();
  cv.K = ins_[m0][0].shape.row_len();
  cv.x = ins_[m0][0].f32();
  std::string suffix;
  if (has_pro) {
    // The node's own output only for readers after the launch; it may be its input.
    const Arg& in0 = ins_[ni][0];
    if (!aligned16(in0.ptr)) return -1;
    cv.x = in0.f32();
    cv.out = read_after(out_id(ni)) ? outs_[ni].f32_mut() : nullptr;
    if (pro_op == Op::RmsNorm) {
      cv.kind = QMmaInput::RmsNorm;
      cv.norm_w = ins_[ni][1].ptr;
      cv.norm_type = ins_[ni][1].dtype;
      cv.eps = nodes_[ni].node->params.eps;
      suffix = "+rms_norm";
    } else {
      if (!aligned16(ins_[ni][1].ptr)) return -1;
      cv.kind = QMmaInput::SiluMul;
      cv.x2 = ins_[ni][1].f32();
      suffix = "+silu_mul";
    }
    if (cv.out) {
      const Region o = region_of(outs_[ni]);
      for (size_t k = 0; k < (pro_op == Op::SiluMul ? 2 : 1); k++)
        if (!same_or_apart(o, region_of(ins_[ni][k]))) return -1;
    }
  }
  const bool convert =
      has_pro || !x16_before.holds(ins_[m0][0].ptr, ins_[m0][0].shape, true, false);

  QMmaArgs qa;
  qa.T = cv.T;
  qa.n_segs = static_cast<int>(m1 - m0 + 1);
  std::string label =
      format_message("qmatmul %s T=%lld:", dtype_name(ins_[m0][1].dtype), (long long)qa.T);
  for (size_t m = m0; m <= m1; m++) {
    QMmaSeg& sg = qa.segs[m - m0];
    sg.w = qview(m, 1);
    if (ins_[m].size() > 2) {
      sg.bias = ins_[m][2].ptr;
      sg.bias_type = ins_[m][2].dtype;
    }
    // With the residual epilogue y itself only for readers after the Add.
    sg.y = res_k < 0 || read_after(out_id(m)) ? outs_[m].f32_mut() : nullptr;
    label += format_message(" [%lld x %lld]", (long long)sg.w.N, (long long)cv.K);
  }
  if (res_k >= 0) {
    qa.residual = ins_[e][res_k].f32();
    qa.out2 = outs_[e].f32_mut();
    suffix += "+residual";
  }
  qa.splits = qmma_splits(qa, n_sms);
  need_x16_ = std::max(need_x16_, qmma_x16_elems(qa.T, cv.K));
  need_partials_ = std::max(need_partials_, qmma_partials_floats(qa));
  emit(
      label + (suffix.empty() ? "" : " " + suffix),
      [=](cudaStream_t s) {
        if (convert) qmma_convert(s, cv, scratch->x16);
        QMmaArgs a = qa;
        a.x16 = scratch->x16;
        a.partials = scratch->partials;
        qmma(s, a);
      },
      format_message("qmma_%s%s", dtype_name(ins_[m0][1].dtype), suffix.c_str()));
  x16_after = X16{ins_[m0][0].ptr, ins_[m0][0].shape, true};
  return static_cast<int64_t>(last);
}

// The four as one launch (a block per head, or one block staging everything).
bool Planner::try_rope_kv(size_t ni) {
  RopeKvArgs a;
  if (!rope_kv_at(ni, a)) return false;
  emit("rope+kv_append", [=](cudaStream_t s) { rope_kv(s, a); });
  return true;
}

// Prefill, quantized weights: dequantized f16 chunks on the tensor cores (cuBLAS).
void Planner::plan_qgemm(size_t ni, const X16& x16_before) {
  const std::shared_ptr<Scratch> scratch = scratch_;
  const std::vector<Arg>& in = ins_[ni];
  const Arg out = outs_[ni];
  // Prefill: dequantized f16 chunks on the tensor cores.
  const Arg x = in[0];
  const int64_t T = x.shape.rows(), K = x.shape.row_len(), N = in[1].shape.rows();
  const Arg b = in.size() > 2 ? in[2] : Arg{};
  const QMatrix w = qview(ni, 1);
  need_w16_ = std::max(
      need_w16_, std::min<size_t>(static_cast<size_t>(N) * K, std::max<size_t>(kW16ChunkElems, K)));
  need_x16_ = std::max(need_x16_, static_cast<size_t>(T * K));
  const bool convert = !x16_before.holds(x.ptr, x.shape, false, false);
  cublasHandle_t blas = ctx_->blas();
  emit(
      format_message("qmatmul %s T=%lld: [%lld x %lld]", dtype_name(w.type), (long long)T,
                     (long long)N, (long long)K),
      [=](cudaStream_t s) {
        qgemm(blas, s, x.f32(), w, b.ptr, b.dtype, out.f32_mut(), T, scratch->x16, convert,
              scratch->w16, scratch->w16_elems);
      },
      format_message("qgemm_%s (cublas f16)", dtype_name(w.type)));
  x16_holds_ = X16{x.ptr, x.shape, false};
}

// f16/bf16 weights over more than half_gemv_max_tokens: on the tensor cores with x
// rounded to their type (float32 sums; consecutive matmuls of one x round it once).
// On the H200, 7b bf16 prefill ran at 3,057 tok/s through SGEMM against 21,895, and 8
// sequences of it decoded at 392 tok/s through the GEMV against 1,424.
void Planner::plan_half_gemm(size_t ni, const X16& x16_before) {
  const std::shared_ptr<Scratch> scratch = scratch_;
  const std::vector<Arg>& in = ins_[ni];
  const Arg out = outs_[ni], x = in[0], w = in[1];
  const Arg b = in.size() > 2 ? in[2] : Arg{};
  const int64_t T = x.shape.rows(), K = x.shape.row_len(), N = w.shape[0];
  const bool bf16 = w.dtype == DType::BF16;
  const bool convert = !x16_before.holds(x.ptr, x.shape, false, bf16);
  need_x16_ = std::max(need_x16_, static_cast<size_t>(T * K));
  cublasHandle_t blas = ctx_->blas();
  emit(
      format_message("matmul %s T=%lld: [%lld x %lld]", dtype_name(w.dtype), (long long)T,
                     (long long)N, (long long)K),
      [=](cudaStream_t s) {
        gemm_half(blas, s, x.f32(), w.ptr, w.dtype, b.ptr, b.dtype, out.f32_mut(), T, K, N,
                  scratch->x16, convert);
      },
      format_message("gemm_%s (cublas tensor cores)", dtype_name(w.dtype)));
  x16_holds_ = X16{x.ptr, x.shape, false, bf16};
}

// Few tokens, float weights: matmuls of one x (q/k/v, gate/up) in one GEMV launch;
// returns the last node it covers.
size_t Planner::plan_gemv(size_t ni) {
  const std::vector<Arg>& in = ins_[ni];
  const Arg out = outs_[ni];
  const Arg x = in[0];
  const int64_t T = x.shape.rows(), K = x.shape.row_len();
  const DType wt = in[1].dtype;
  std::vector<GemvSeg> segs;
  auto add_seg = [&](const std::vector<Arg>& a, const Arg& y) {
    GemvSeg sg;
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
  while (segs.size() < static_cast<size_t>(kGemvMaxSegs) && same_x(first, ni + 1)) {
    ni++;
    add_seg(ins_[ni], outs_[ni]);
  }
  std::string label = format_message("matmul %s T=%lld:", dtype_name(wt), (long long)T);
  for (const GemvSeg& sg : segs)
    label += format_message(" [%lld x %lld]", (long long)sg.N, (long long)K);
  emit(
      label,
      [=](cudaStream_t s) {
        gemv(s, x.f32(), segs.data(), static_cast<int>(segs.size()), wt, T, K);
      },
      format_message("gemv_%s", dtype_name(wt)));
  return ni;
}

// Any other node: a launch of its own.
void Planner::plan_op(size_t ni) {
  const std::shared_ptr<Scratch> scratch = scratch_;
  int* const err = err_;
  const int n_sms = n_sms_;
  const Node& node = *nodes_[ni].node;
  const OpParams p = node.params;
  const std::vector<Arg>& in = ins_[ni];
  const Arg out = outs_[ni];
  std::string label = op_name(node.op);
  if (node.op == Op::MatMul)
    label = format_message("matmul %s T=%lld: [%lld x %lld]", dtype_name(in[1].dtype),
                           (long long)in[0].shape.rows(), (long long)in[1].shape[0],
                           (long long)in[1].shape[1]);
  switch (node.op) {
    case Op::GetRows: {
      const Arg table = in[0], ids_arg = in[1];
      if (is_quant(table.dtype)) {
        const QMatrix q = qview(ni, 0);
        emit(format_message("get_rows %s", dtype_name(table.dtype)), [=](cudaStream_t s) {
          get_rows_quant(s, q, ids_arg.i32(), ids_arg.shape.numel(), out.f32_mut(), err);
        });
        break;
      }
      emit(label, [=](cudaStream_t s) {
        get_rows(s, table.ptr, table.dtype, table.shape.rows(), table.shape.row_len(),
                 ids_arg.i32(), ids_arg.shape.numel(), out.f32_mut(), err);
      });
      break;
    }
    case Op::RmsNorm: {
      const Arg x = in[0], w = in[1];
      emit(label, [=](cudaStream_t s) {
        rms_norm(s, x.f32(), w.ptr, w.dtype, out.f32_mut(), x.shape.rows(), x.shape.row_len(),
                 p.eps);
      });
      break;
    }
    case Op::LayerNorm: {
      const Arg x = in[0], w = in[1];
      const Arg b = in.size() > 2 ? in[2] : Arg{};
      emit(label, [=](cudaStream_t s) {
        layer_norm(s, x.f32(), w.ptr, w.dtype, b.ptr, b.dtype, out.f32_mut(), x.shape.rows(),
                   x.shape.row_len(), p.eps);
      });
      break;
    }
    case Op::MatMul: {
      const Arg x = in[0], w = in[1];
      const Arg b = in.size() > 2 ? in[2] : Arg{};
      const int64_t T = x.shape.rows(), K = x.shape.row_len(), N = w.shape[0];
      cublasHandle_t blas = ctx_->blas();
      // Other float weights (f32; f16/bf16 with LLM_CUDA_HALF_GEMM=0): SGEMM in float32.
      if (w.dtype != DType::F32) {
        const size_t rows =
            std::max<size_t>(1, std::min<size_t>(N, kGemmScratchMax / 4 / static_cast<size_t>(K)));
        need_gemm_ = std::max(need_gemm_, rows * K);
      }
      emit(
          label,
          [=](cudaStream_t s) {
            const bool f32 = w.dtype == DType::F32;
            gemm(blas, s, x.f32(), w.ptr, w.dtype, b.ptr, b.dtype, out.f32_mut(), T, K, N,
                 f32 ? nullptr : scratch->gemm, f32 ? 0 : scratch->gemm_floats);
          },
          format_message("gemm_%s (cublas)", dtype_name(w.dtype)));
      break;
    }
    case Op::Rope: {
      const Arg x = in[0], pos = in[1], freq = in[2];
      emit(label, [=](cudaStream_t s) {
        rope(s, x.f32(), pos.i32(), freq.f32(), out.f32_mut(), x.shape.rows(), p.n_heads,
             p.head_dim, p.rot_dims, p.rope_style);
      });
      break;
    }
    case Op::KvAppend: {
      const Arg src = in[0], slots = in[1];
      emit(label, [=](cudaStream_t s) {
        kv_append(s, src.f32(), slots.i32(), src.shape.rows(), src.shape.row_len(), out.ptr,
                  out.dtype, out.shape.rows(), err);
      });
      break;
    }
    case Op::Attention: {
      AttentionArgs a;
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
      if (a.T <= kAttnDecodeMaxTokens) {
        a.n_splits = attention_decode_splits(a.T, a.n_kv_heads,
                                             a.n_heads / std::max(1, a.n_kv_heads), ctx, n_sms);
        if (attention_decode_ok(a)) {
          if (a.n_splits > 1) {
            need_partials_ = std::max(
                need_partials_, attention_partials_floats(a.T, a.n_heads, a.head_dim, a.n_splits));
            need_counters_ = std::max(need_counters_, static_cast<size_t>(a.T * a.n_kv_heads));
          }
          emit("attention (decode)", [=](cudaStream_t s) {
            AttentionArgs b = a;
            b.partials = scratch->partials;
            attention_decode(s, b, scratch->counters);
          });
          break;
        }
      } else if (attention_prefill_ok(a)) {
        emit("attention (prefill)", [=](cudaStream_t s) { attention_prefill(s, a); });
        break;
      }
      a.n_splits = attention_splits(a.T, a.n_heads, ctx, n_sms);
      need_partials_ = std::max(need_partials_,
                                attention_partials_floats(a.T, a.n_heads, a.head_dim, a.n_splits));
      emit(label, [=](cudaStream_t s) {
        AttentionArgs b = a;
        b.partials = a.n_splits > 1 ? scratch->partials : nullptr;
        attention(s, b);
      });
      break;
    }
    case Op::SiluMul:
    case Op::GeluMul:
    case Op::Add:
    case Op::Mul: {
      const Binary op = node.op == Op::SiluMul   ? Binary::SiluMul
                        : node.op == Op::GeluMul ? Binary::GeluMul
                        : node.op == Op::Add     ? Binary::Add
                                                 : Binary::Mul;
      const Arg a = in[0], b = in[1];
      const int64_t d = a.shape.row_len();
      const int64_t rows = a.shape.numel() / d;
      // SiluMul/GeluMul take b of a's shape; Add/Mul may broadcast one row.
      const int64_t b_rows = b.shape.numel() / d;
      emit(label, [=](cudaStream_t s) {
        binary(s, op, a.f32(), b.f32(), b_rows, out.f32_mut(), rows, d);
      });
      break;
    }
    case Op::Gelu:
    case Op::GeluTanh:
    case Op::Scale: {
      const Unary op = node.op == Op::Gelu       ? Unary::Gelu
                       : node.op == Op::GeluTanh ? Unary::GeluTanh
                                                 : Unary::Scale;
      const Arg a = in[0];
      emit(label,
           [=](cudaStream_t s) { unary(s, op, a.f32(), p.scale, out.f32_mut(), a.shape.numel()); });
      break;
    }
    case Op::Slice: {
      const Arg a = in[0];
      const int64_t groups = p.n_heads, w_in = a.shape.row_len() / groups;
      emit(label, [=](cudaStream_t s) {
        slice(s, a.f32(), out.f32_mut(), a.shape.rows() * groups, w_in, p.head_dim, p.offset);
      });
      break;
    }
    case Op::Mix:
    case Op::SigmoidMul:
    case Op::ReluSqr: {
      const RwkvElementwise op = node.op == Op::Mix          ? RwkvElementwise::Mix
                                 : node.op == Op::SigmoidMul ? RwkvElementwise::SigmoidMul
                                                             : RwkvElementwise::ReluSqr;
      const Arg a = in[0];
      const float* b = in.size() > 1 ? in[1].f32() : nullptr;
      const float* w = in.size() > 2 ? in[2].f32() : nullptr;
      emit(label, [=](cudaStream_t s) {
        rwkv_elementwise(s, op, a.f32(), b, w, out.f32_mut(), a.shape.numel(), a.shape.row_len());
      });
      break;
    }
    case Op::TokenShift: {
      const Arg x = in[0], st = in[1], seq = in[2], slots = in[3];
      emit(label, [=](cudaStream_t s) {
        token_shift(s, x.f32(), st.f32_mut(), seq.i32(), slots.i32(), out.f32_mut(), x.shape.rows(),
                    x.shape.row_len(), slots.shape.numel(), st.shape.rows(), err);
      });
      break;
    }
    case Op::Wkv: {
      const Arg k = in[0], v = in[1], decay = in[2], first = in[3], st = in[4], seq = in[5],
                slots = in[6];
      emit(label, [=](cudaStream_t s) {
        wkv(s, k.f32(), v.f32(), decay.f32(), first.f32(), st.f32_mut(), seq.i32(), slots.i32(),
            out.f32_mut(), k.shape.rows(), k.shape.row_len(), slots.shape.numel(), st.shape.rows(),
            err);
      });
      break;
    }
    case Op::Sample: {
      const Arg x = in[0], params = in[1];
      emit(label, [=](cudaStream_t s) {
        sample_rows(s, x.f32(), params.f32(), x.shape.rows(), x.shape.row_len(), out.i32_mut());
      });
      break;
    }
    case Op::kCount:
      fail("cuda backend: node '%s' has no op", node.name.c_str());
  }
}

void Planner::allocate_scratch() {
  // Scratch: the conversion buffers are shared by the backend's programs (they run one
  // at a time on the stream) and replaced by larger ones when a program needs more;
  // each program keeps the ones its launches point into.
  if (need_gemm_) {
    if (!ctx_->gemm_scratch || ctx_->gemm_scratch->size() < need_gemm_ * 4)
      ctx_->gemm_scratch =
          device_alloc(device_, need_gemm_ * 4, "f16/bf16 weight conversion for prefill GEMMs");
    keep_.push_back(ctx_->gemm_scratch);
    scratch_->gemm = reinterpret_cast<float*>(ctx_->gemm_scratch->data());
    scratch_->gemm_floats = ctx_->gemm_scratch->size() / 4;
  }
  if (need_w16_ || need_x16_) {
    const size_t w_bytes = (need_w16_ * 2 + 255) / 256 * 256;
    const size_t bytes = w_bytes + need_x16_ * 2;
    if (!ctx_->f16_scratch || ctx_->f16_scratch->size() < bytes || ctx_->f16_w16_bytes < w_bytes) {
      const size_t wb = std::max(w_bytes, ctx_->f16_scratch ? ctx_->f16_w16_bytes : 0);
      const size_t xb = std::max(
          need_x16_ * 2, ctx_->f16_scratch ? ctx_->f16_scratch->size() - ctx_->f16_w16_bytes : 0);
      ctx_->f16_scratch = device_alloc(device_, wb + xb, "f16 tiles for quantized prefill GEMMs");
      ctx_->f16_w16_bytes = wb;
    }
    keep_.push_back(ctx_->f16_scratch);
    scratch_->w16 = reinterpret_cast<__half*>(ctx_->f16_scratch->data());
    scratch_->w16_elems = ctx_->f16_w16_bytes / 2;
    scratch_->x16 = reinterpret_cast<__half*>(ctx_->f16_scratch->data() + ctx_->f16_w16_bytes);
  }
  if (need_partials_) {
    keep_.push_back(device_alloc(device_, need_partials_ * 4, "split attention / GEMM partials"));
    scratch_->partials = reinterpret_cast<float*>(keep_.back()->data());
  }
  if (need_sample_) {
    const size_t bytes = qgemv_sample_scratch_bytes(n_sms_);
    keep_.push_back(device_alloc(device_, bytes, "the sampling GEMV's scratch"));
    scratch_->sample = keep_.back()->data();
    LLM_CUDA_CHECK(cudaMemsetAsync(scratch_->sample, 0, bytes, ctx_->ordered()));
  }
  if (need_counters_) {
    keep_.push_back(
        device_alloc(device_, need_counters_ * sizeof(int), "attention split counters"));
    scratch_->counters = reinterpret_cast<int*>(keep_.back()->data());
    LLM_CUDA_CHECK(
        cudaMemsetAsync(scratch_->counters, 0, need_counters_ * sizeof(int), ctx_->ordered()));
  }
}

}  // namespace

std::unique_ptr<Program> plan_program(const Backend& backend, const std::shared_ptr<Context>& ctx,
                                      std::vector<BoundNode> nodes) {
  return Planner(backend, ctx, std::move(nodes)).plan();
}

}  // namespace cuda
}  // namespace llm
