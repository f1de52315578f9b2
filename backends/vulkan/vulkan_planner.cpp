// Planner: see vulkan_planner.h. One method per kind of op plans the node at ni_ into
// x_ (and pre_ / merge_ around it), asking vulkan_fusion.h which nodes after it the
// dispatch computes; plan() keeps the state that passes from one dispatch to the next
// (x's planes held for the GEMVs after a norm, a fused FFN's scratch, norms run inside
// GEMVs).
#include "backends/vulkan/vulkan_planner.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "backends/vulkan/vulkan_fusion.h"
#include "core/error.h"

namespace llm {
namespace vk {

namespace {

// Dtype codes of shaders/common.glsl.
int32_t dt_code(DType t) {
  switch (t) {
    case DType::F32:
      return 0;
    case DType::F16:
      return 1;
    case DType::BF16:
      return 2;
    case DType::Q8_0:
      return 3;
    case DType::Q4_0:
      return 4;
    case DType::Q4_1:
      return 5;
    default:
      fail("vulkan backend: no shader reads %s tensors", dtype_name(t));
  }
}

// A knob for measuring: the unsigned value of environment variable `name`, else fallback.
uint32_t env_uint(const char* name, uint32_t fallback) {
  const char* e = std::getenv(name);
  return e ? static_cast<uint32_t>(std::atoi(e)) : fallback;
}

// The longest rows norm.comp also rounds for an integer-dot GEMV (its WG * PER).
constexpr int64_t kNormQuantMaxRow = 4096;
// attention_tiled.comp: query rows per workgroup, head dims at most, and the fewest
// tokens of a step that take it.
constexpr int64_t kAttentionTile = 16;
constexpr int kAttentionTiledMaxHeadDim = 128;
constexpr int64_t kAttentionTiledMinTokens = 16;
// Attention splits the keys of each (token, head) when there are fewer pairs than
// this (decode), into one split per kAttentionSplitKeys of context, at most
// kAttentionMaxSplits (H200, 640-token context, 7b / 1b tok/s: 16 keys 266.6 / 782.4,
// 32 keys 279.3 / 840.3, 64 keys 283.0 / 861.0).
constexpr int64_t kAttentionSplitItems = 256;
constexpr int64_t kAttentionSplitKeys = 64;
constexpr int64_t kAttentionMaxSplits = 32;
// Sample: a row is cut into parts of at least this many logits (one round of sample.comp's
// unrolled loads per invocation), each a workgroup, at most kSampleMaxSplits of them.
// O_WORKERS (attention_o.glsl): at most this many slices of o a head (a bit each in a
// mask), and the spins a worker waits for its head before leaving its slice to the
// head's workgroup (an L2 round trip each on a GPU: milliseconds in all).
constexpr uint32_t kAttnOMaxParts = 32;
constexpr uint32_t kAttnOSpin = 16384;
constexpr int64_t kSampleSplitElems = 2048;
constexpr int64_t kSampleMaxSplits = 64;
// Threads per row (a power of two, at least a subgroup) and rows per group of
// threads of matmul_gemv_q for rows of K weights (T tokens). LLM_VULKAN_GEMV_TPR and
// LLM_VULKAN_GEMV_ROWS override them (for tuning), LLM_VULKAN_GEMV_ROWS_MULTI the rows
// of steps of 2+ tokens only (x's shared loads serve every row a thread holds, and grow
// with the tokens; on the H100 2, 4 or 8 rows lost to the default at 2-8 tokens:
// docs/PERFORMANCE.md, 34th session).
struct GemvShape {
  uint32_t tpr = 32, rows = 4, unroll = 1;  // unroll: blocks a thread loads at once
};
GemvShape gemv_shape(uint32_t subgroup, int64_t K, int64_t N, int64_t T, bool int_dot,
                     uint32_t threads) {
  GemvShape s;
  // About two blocks per thread: enough loads in flight, few idle threads on short rows.
  // Integer dots: at most 64 threads per row and 2 rows per group (H200, 7b decode,
  // LLM_VULKAN_GEMV_TPR/ROWS over 32/64/128 and 2/4/8: 270 tok/s against 240 with the
  // float path's 4 rows; fewer rows were faster at every width).
  const uint32_t max_tpr = int_dot ? std::min<uint32_t>(64, threads) : threads;
  s.tpr = subgroup;
  while (s.tpr < max_tpr && s.tpr * 2 < static_cast<uint64_t>(K / 32)) s.tpr *= 2;
  // 4 rows per group on the float path (x read once per 4 rows; measured best on the
  // H200), fewer where that leaves under 256 workgroups (small matrices: k/v of GQA
  // models).
  s.rows = int_dot ? 2 : 4;
  while (s.rows > 1 && static_cast<uint64_t>(N) / (s.rows * (threads / s.tpr)) < 256) s.rows /= 2;
  // Integer dots on long rows of a matrix with few rows: a whole workgroup per row pair where
  // fewer than 1,024 workgroups would run (H200, 1b down [2048 x 8192]: 10.9 µs against
  // 12.7; 7b down and o, 1,024 workgroups, lost 2 µs that way).
  if (int_dot && s.tpr * 2 <= threads && s.tpr * 2 < static_cast<uint64_t>(K / 32) &&
      static_cast<uint64_t>(N) / (s.rows * (threads / s.tpr)) < 1024)
    s.tpr *= 2;
  auto env = [](const char* name, uint32_t& v) { v = env_uint(name, v); };
  // One block per row at a time: loading 2 or 4 at once was slower at every shape
  // (H200, 7b decode 253.6 / 234.3 / 185.7 tok/s with 1 / 2 / 4).
  s.unroll = 1;
  env("LLM_VULKAN_GEMV_TPR", s.tpr);
  env("LLM_VULKAN_GEMV_ROWS", s.rows);
  if (T > 1) env("LLM_VULKAN_GEMV_ROWS_MULTI", s.rows);
  env("LLM_VULKAN_GEMV_UNROLL", s.unroll);
  s.tpr = std::clamp(s.tpr, subgroup, threads);
  s.rows = std::clamp<uint32_t>(s.rows, 1, 8);
  s.unroll = std::clamp<uint32_t>(s.unroll, 1, 4);
  return s;
}

// How matmul_coop covers a [T, K] x [N, K]ᵀ product: token tiles of bm (16, 32 or 64:
// a decode batch does not pay for 64), tiles of 128 weight rows, and K split over
// `splits` workgroups per tile (k_per_split columns each, a multiple of 64) when the
// tiles alone would leave most of the GPU idle; LLM_VULKAN_COOP_SPLITS fixes the
// number of splits (for measuring).
struct CoopPlan {
  uint32_t bm = 64, sg_rows = 1, m_tiles = 1, n_tiles = 1, splits = 1, k_per_split = 0;
  size_t partial_bytes(int64_t T, int64_t N) const {
    return splits > 1 ? size_t{splits} * static_cast<size_t>(T * N) * 4 : 0;
  }
};
CoopPlan coop_plan(int64_t T, int64_t K, int64_t N) {
  CoopPlan c;
  // LLM_VULKAN_COOP_BM (16, 32, 64 or 128) caps the token tile and
  // LLM_VULKAN_COOP_SG_ROWS (1 or 2) sets the subgroup rows of 64-token tiles, for
  // measuring: 128-token tiles in 2 x 4 subgroups were under half as fast.
  static const uint32_t max_bm = [] {
    const char* e = std::getenv("LLM_VULKAN_COOP_BM");
    const uint32_t v = e ? static_cast<uint32_t>(std::atoi(e)) : 64u;
    return v == 16 || v == 32 || v == 128 ? v : 64u;
  }();
  static const uint32_t sg_rows_64 = [] {
    const char* e = std::getenv("LLM_VULKAN_COOP_SG_ROWS");
    return e && std::atoi(e) == 2 ? 2u : 1u;
  }();
  c.bm = std::min<uint32_t>(T <= 16 ? 16 : T <= 32 ? 32 : T <= 64 ? 64 : 128, max_bm);
  c.sg_rows = c.bm == 128 ? 2 : c.bm == 64 ? sg_rows_64 : 1;
  c.m_tiles = static_cast<uint32_t>((T + c.bm - 1) / c.bm);
  c.n_tiles = static_cast<uint32_t>((N + 127) / 128);
  const uint64_t tiles = uint64_t{c.m_tiles} * c.n_tiles;
  // About two workgroups per multiprocessor of a large GPU, at least 256 columns each.
  int64_t want = tiles < 128 ? static_cast<int64_t>((256 + tiles - 1) / tiles) : 1;
  static const int fixed = [] {
    const char* e = std::getenv("LLM_VULKAN_COOP_SPLITS");
    return e ? std::max(1, std::atoi(e)) : 0;
  }();
  if (fixed > 0) want = fixed;
  want = std::clamp<int64_t>(want, 1, std::clamp<int64_t>(K / 256, 1, 16));
  const int64_t steps = (K + 63) / 64;
  const int64_t per = (steps + want - 1) / want;
  c.k_per_split = static_cast<uint32_t>(per * 64);
  c.splits = static_cast<uint32_t>((steps + per - 1) / per);
  return c;
}

// The block-major copy of a q4_0/q8_0 [N, K] matrix held in the row layout
// (shaders/weights.glsl): block b's quants of rows 0 .. N - 1 one after another, then
// every scale in the same order (f16), so that one block of all rows is contiguous
// (FFN_DOWN in matmul_gemv_q.glsl). Made once per weight, through the host.
Buffer& block_major_copy(Context& ctx, const std::shared_ptr<Context>& keep, Buffer& rows, DType t,
                         int64_t N, int64_t K) {
  if (rows.block_major) return *rows.block_major;
  const size_t nb = static_cast<size_t>(K / 32), n = static_cast<size_t>(N);
  const size_t qb = t == DType::Q8_0 ? 32 : 16;
  const size_t scales = (nb * 2 + 15) / 16 * 16, row = scales + nb * qb;
  std::vector<uint8_t> in(row * n), out(nb * n * (qb + 2));
  ctx.copy_to_host(rows, 0, in.data(), in.size());
  for (size_t r = 0; r < n; r++)
    for (size_t b = 0; b < nb; b++) {
      const uint8_t* src = in.data() + row * r;
      std::memcpy(out.data() + (b * n + r) * qb, src + scales + b * qb, qb);
      std::memcpy(out.data() + nb * n * qb + (b * n + r) * 2, src + 2 * b, 2);
    }
  rows.block_major = std::make_shared<Buffer>(ctx, keep, out.size(), "block-major weight copy");
  ctx.copy_to_device(*rows.block_major, 0, out.data(), out.size());
  return *rows.block_major;
}

class Planner {
 public:
  Planner(const Backend& backend, const std::shared_ptr<Context>& ctx,
          const std::vector<BoundNode>& nodes, const PlanSettings& settings);
  Plan plan();

 private:
  // The node at ni_ into x_ (pre_, merge_), the nodes after it the dispatch computes
  // counted in fused_; dispatched_ false: the node runs inside a later dispatch.
  void plan_get_rows();
  void plan_norm();
  void plan_matmul();
  void plan_gemv_q(const std::vector<int32_t>& spec);
  void plan_coop(const std::vector<int32_t>& spec);
  // How a quantized GEMV dispatch runs: its shape, whether gate/up also round the
  // activation for down (QOUT), which of q/k/v's ropes and cache appends it writes
  // (rope_mask, -1: none fused), the fixed grid (persist) and its workgroups.
  struct GemvLaunch {
    GemvShape gs;
    bool qout = false;
    int rope_mask = -1;
    bool persist = false;
    uint64_t groups = 0;
    uint32_t ksplit = 1;   // QOUT: parts of K, a workgroup each (KSPLIT)
    uint32_t threads = 0;  // per workgroup
  };
  GemvLaunch gemv_launch(bool glu, bool sx, bool norm_in, size_t segs, const int64_t seg_rows[3],
                         int64_t T, int64_t K, int64_t N) const;
  void plan_quantize_x(const TensorRef& x_src, const TensorRef& planes, bool copy);
  void bind_rope_kv(int mask);
  std::vector<int32_t> bind_ffn_down(int res, int64_t N);
  int32_t bind_next_norm(Recorded& d, int64_t H, size_t norm_node);
  // A buffer of its own for dispatch d (kept with the plan), zero before the first run
  // and left zero by the dispatch after each: its next binding.
  void bind_zeroed(Recorded& d, size_t bytes, const char* what);
  int32_t bind_attn_o(int res, uint32_t o_parts);
  void plan_rope();
  void plan_kv_append();
  void plan_attention();
  void plan_sample();
  void plan_slice();
  void plan_elementwise();
  void plan_rwkv_elementwise();
  void plan_token_shift();
  void plan_wkv();

  // Binds a tensor to dispatch d and returns its offset in words.
  uint32_t bind_to(Recorded& d, const TensorRef& r, const char* what, bool write = false);
  uint32_t bind(const TensorRef& r, const char* what, bool write = false) {
    return bind_to(x_, r, what, write);
  }
  void push(uint32_t v) { x_.push[x_.push_words++] = v; }
  void push_f(float v) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    push(u);
  }
  // The next two bindings of a dispatch whose workgroups split each of `items` and whose
  // last to finish merges the parts (decode attention, a long row's Sample): the parts
  // (part_bytes), and a counter per item, zero between runs (the merging workgroup
  // resets it). Unsplit dispatches bind the error buffer there, unused.
  void bind_merge_scratch(bool split, size_t part_bytes, int64_t items, const char* what);
  // Whether quantized input k of the node is in the row layout of upload_weight.
  int32_t split(size_t k) const;
  void use(const char* shader, std::vector<int32_t> spec) {
    x_.pipeline = &ctx_->pipeline(shader, static_cast<uint32_t>(x_.bindings.size()), spec);
  }
  // The shader error flags; also what a binding a dispatch does not use takes.
  Recorded::Binding error_binding() const {
    return {&ctx_->error_buffer(), 0, ctx_->error_buffer().size()};
  }

  const Backend& backend_;  // its check_bound() for the nodes a dispatch takes over
  std::shared_ptr<Context> ctx_;
  const std::vector<BoundNode>& nodes_;
  const PlanSettings set_;
  const FusionRules rules_;
  const VkDeviceSize max_range_;
  const size_t align_;
  std::vector<std::shared_ptr<Buffer>> keep_;
  // One buffer for the split-K partials of every tensor-core matmul of the program
  // (dispatches run in order; the barriers see each reuse as a write after a read).
  std::shared_ptr<Buffer> coop_partials_;
  // One buffer for x quantized for the integer-dot GEMVs (quantize_x.comp's layout:
  // 64 bytes of planes and 8 of scale and sum per block of 32), reused by each.
  // Its second half takes the activation that gate/up round for down (QOUT), as other
  // workgroups of gate/up may still read x's planes in the first.
  std::shared_ptr<Buffer> x_planes_;
  size_t act_planes_off_ = 0;
  // The x region whose planes x_planes_ holds (written by a norm or quantize_x, kept for
  // the matmuls right after it that read the same x), and where in x_planes_.
  Region planes_hold_;
  size_t planes_hold_off_ = 0;
  // GEMV node index -> the RmsNorm node it runs first (norm_into_gemv).
  std::map<size_t, size_t> norm_in_gemv_;
  // Node index of a fused FFN's down matmul -> the scratch buffer holding its x.
  std::map<size_t, std::shared_ptr<Buffer>> ffn_scratch_;
  // Down's products per round where gate/up compute down (FFN_PARTS), for every layer.
  std::shared_ptr<Buffer> ffn_parts_;

  // The node being planned.
  size_t ni_ = 0;
  const BoundNode* bn_ = nullptr;
  Recorded x_;      // its dispatch
  Recorded pre_;    // a dispatch before it (quantize_x)
  Recorded merge_;  // a second dispatch of the node (split-K reduce)
  bool has_pre_ = false, has_merge_ = false, dispatched_ = true;
  size_t fused_ = 0;  // nodes after ni_ that x_ computes
};

Planner::Planner(const Backend& backend, const std::shared_ptr<Context>& ctx,
                 const std::vector<BoundNode>& nodes, const PlanSettings& settings)
    : backend_(backend),
      ctx_(ctx),
      nodes_(nodes),
      set_(settings),
      rules_(nodes, ctx->phys(),
             {settings.coop, settings.coop_gemv_max_tokens, settings.int_dot, settings.shared_x,
              settings.ffn_down, settings.ffn_next_norm, settings.attn_o}),
      max_range_(ctx->phys().props.limits.maxStorageBufferRange),
      align_(std::max<size_t>(16, ctx->phys().props.limits.minStorageBufferOffsetAlignment)) {
  if (set_.coop) {
    size_t bytes = 0;
    for (size_t i = 0; i < nodes_.size(); i++) {
      const BoundNode& b = nodes_[i];
      if (!b.node || b.node->op != Op::MatMul || b.inputs.size() < 2) continue;
      const int64_t T = b.inputs[0].shape.rows(), K = b.inputs[0].shape.row_len();
      const int64_t N = b.inputs[1].shape[0];
      if (rules_.use_coop(T)) bytes = std::max(bytes, coop_plan(T, K, N).partial_bytes(T, N));
    }
    if (bytes > 0) {
      coop_partials_ = std::make_shared<Buffer>(*ctx_, ctx_, bytes, "matmul split-K partials");
      keep_.push_back(coop_partials_);
    }
  }
  if (set_.int_dot) {
    size_t bytes = 0;
    for (size_t i = 0; i < nodes_.size(); i++)
      if (rules_.gemv_q(i))
        bytes = std::max(bytes, static_cast<size_t>(nodes_[i].inputs[0].shape.numel() / 32 * 72));
    if (bytes > 0) {
      act_planes_off_ = (bytes + 255) / 256 * 256;
      x_planes_ = std::make_shared<Buffer>(*ctx_, ctx_, 2 * act_planes_off_, "quantized x");
      keep_.push_back(x_planes_);
    }
  }
}

Plan Planner::plan() {
  Plan out;
  out.dispatches.reserve(nodes_.size());
  for (ni_ = 0; ni_ < nodes_.size(); ni_++) {
    bn_ = &nodes_[ni_];
    backend_.check_bound(*bn_, "vulkan backend");
    if (!bn_->node || bn_->node->op != Op::MatMul) planes_hold_ = Region{};
    x_ = Recorded{};
    pre_ = Recorded{};
    merge_ = Recorded{};
    has_pre_ = has_merge_ = false;
    dispatched_ = true;
    fused_ = 0;
    x_.nodes = {static_cast<int>(ni_)};
    x_.label = op_name(bn_->node->op);
    switch (bn_->node->op) {
      case Op::GetRows:
        plan_get_rows();
        break;
      case Op::RmsNorm:
      case Op::LayerNorm:
        plan_norm();
        break;
      case Op::MatMul:
        plan_matmul();
        break;
      case Op::Rope:
        plan_rope();
        break;
      case Op::KvAppend:
        plan_kv_append();
        break;
      case Op::Attention:
        plan_attention();
        break;
      case Op::Sample:
        plan_sample();
        break;
      case Op::Slice:
        plan_slice();
        break;
      case Op::SiluMul:
      case Op::GeluMul:
      case Op::Gelu:
      case Op::GeluTanh:
      case Op::Add:
      case Op::Mul:
      case Op::Scale:
        plan_elementwise();
        break;
      case Op::Mix:
      case Op::SigmoidMul:
      case Op::ReluSqr:
        plan_rwkv_elementwise();
        break;
      case Op::TokenShift:
        plan_token_shift();
        break;
      case Op::Wkv:
        plan_wkv();
        break;
      case Op::kCount:
        fail("vulkan backend: node '%s' (%s) has no shader", bn_->node->name.c_str(),
             op_name(bn_->node->op));
    }
    if (!dispatched_) continue;
    if (has_pre_) out.dispatches.push_back(std::move(pre_));
    out.dispatches.push_back(std::move(x_));
    if (has_merge_) out.dispatches.push_back(std::move(merge_));
    ni_ += fused_;
  }
  out.keep = std::move(keep_);
  return out;
}

uint32_t Planner::bind_to(Recorded& d, const TensorRef& r, const char* what, bool write) {
  const Node& node = *bn_->node;
  if (!r.buffer) fail("vulkan backend: node '%s': %s has no buffer", node.name.c_str(), what);
  size_t bytes = tensor_bytes(r.dtype, r.shape);
  if (r.offset > r.buffer->size() || bytes > r.buffer->size() - r.offset)
    fail("vulkan backend: node '%s': %s (%zu bytes at %zu) overruns its buffer of %zu bytes",
         node.name.c_str(), what, bytes, r.offset, r.buffer->size());
  if (r.offset % 4 != 0)
    fail("vulkan backend: node '%s': %s at offset %zu is not 4-byte aligned", node.name.c_str(),
         what, r.offset);
  // A quantized matrix in the row layout of upload_weight takes its whole buffer.
  Buffer* buf = &vk_buffer(*r.buffer);
  if (r.offset == 0 && buf->holds_split(r.dtype, r.shape.rows(), r.shape.row_len()))
    bytes = buf->size();
  // Starts aligned for the device and to 16 bytes (shaders load 16-byte vectors).
  const size_t base = r.offset / align_ * align_;
  const size_t range = (r.offset + bytes - base + 3) / 4 * 4;
  if (range > max_range_)
    fail(
        "vulkan backend: node '%s': %s of %zu bytes is more than the device's storage "
        "buffer range of %llu bytes",
        node.name.c_str(), what, bytes, (unsigned long long)max_range_);
  d.bindings.push_back({buf, base, std::max<VkDeviceSize>(range, 4)});
  (write ? d.writes : d.reads).push_back({buf, r.offset, r.offset + bytes});
  return static_cast<uint32_t>((r.offset - base) / 4);
}

void Planner::bind_merge_scratch(bool split, size_t part_bytes, int64_t items, const char* what) {
  if (!split) {
    x_.bindings.push_back(error_binding());
    x_.bindings.push_back(error_binding());
    return;
  }
  auto parts = std::make_shared<Buffer>(*ctx_, ctx_, part_bytes, std::string(what) + " parts");
  keep_.push_back(parts);
  x_.bindings.push_back({parts.get(), 0, parts->size()});
  x_.writes.push_back({parts.get(), 0, parts->size()});
  bind_zeroed(x_, static_cast<size_t>(items * 4), (std::string(what) + " counters").c_str());
}

void Planner::bind_zeroed(Recorded& d, size_t bytes, const char* what) {
  auto buf = std::make_shared<Buffer>(*ctx_, ctx_, bytes, what);
  ctx_->fill_zero(*buf, 0, bytes);
  keep_.push_back(buf);
  d.bindings.push_back({buf.get(), 0, buf->size()});
  d.writes.push_back({buf.get(), 0, buf->size()});
}

int32_t Planner::split(size_t k) const {
  const TensorRef& r = bn_->inputs[k];
  return is_quant(r.dtype) && r.offset == 0 &&
         vk_buffer(*r.buffer).holds_split(r.dtype, r.shape.rows(), r.shape.row_len());
}

void Planner::plan_get_rows() {
  const std::vector<TensorRef>& in = bn_->inputs;
  const TensorRef& o = bn_->output;
  const int64_t V = in[0].shape[0], D = in[0].shape[1], R = in[1].shape.numel();
  push(bind(in[0], "the table"));
  push(bind(in[1], "ids"));
  push(bind(o, "the output", true));
  x_.bindings.push_back(error_binding());
  push(static_cast<uint32_t>(V));
  push(static_cast<uint32_t>(D));
  push(static_cast<uint32_t>(R));
  use("get_rows", {dt_code(in[0].dtype), split(0)});
  x_.label = format_message("get_rows %s", dtype_name(in[0].dtype));
  grid(x_, (static_cast<uint64_t>(R * D) + 63) / 64);
}

void Planner::plan_norm() {
  const Node& node = *bn_->node;
  const OpParams& p = node.params;
  const std::vector<TensorRef>& in = bn_->inputs;
  const TensorRef& o = bn_->output;
  if (rules_.norm_into_gemv(ni_)) {
    norm_in_gemv_[ni_ + 1] = ni_;
    dispatched_ = false;  // no dispatch of its own
    return;
  }
  const bool bias = in.size() > 2;
  const int64_t d = in[0].shape.row_len(), rows = in[0].shape.numel() / d;
  push(bind(in[0], "x"));
  push(bind(in[1], "the weight"));
  push(bias ? bind(in[2], "the bias") : bind(in[1], "the weight"));
  push(bind(o, "the output", true));
  push(static_cast<uint32_t>(rows));
  push(static_cast<uint32_t>(d));
  push(bias ? 1 : 0);
  push_f(p.eps);
  // An integer-dot GEMV right after that reads the output: the rows go to it
  // rounded too (norm.comp, QUANT), so it needs no quantize_x.
  const bool quant = d <= kNormQuantMaxRow && d % 32 == 0 && rules_.feeds_int_dot_gemv(ni_, o);
  if (quant) {
    push(bind(TensorRef{x_planes_.get(), 0, DType::F32, {rows * (d / 32) * 18}},
              "the quantized output", true));
    planes_hold_ = region(o);
    planes_hold_off_ = 0;
  } else {
    push(bind(o, "the output", true));  // unused (QUANT 0)
  }
  use("norm", {node.op == Op::RmsNorm ? 0 : 1, dt_code(in[1].dtype),
               bias ? dt_code(in[2].dtype) : 0, quant ? 1 : 0});
  if (quant) x_.label += " +quantize";
  grid(x_, static_cast<uint64_t>(rows));
}

void Planner::plan_matmul() {
  const std::vector<TensorRef>& in = bn_->inputs;
  const TensorRef& o = bn_->output;
  const bool bias = in.size() > 2;
  const int64_t T = in[0].shape.rows(), K = in[0].shape.row_len(), N = in[1].shape[0];
  // The down matmul of a fused FFN reads x from the scratch of the gate/up dispatch.
  const auto scratch = ffn_scratch_.find(ni_);
  push(scratch != ffn_scratch_.end()
           ? bind(TensorRef{scratch->second.get(), 0, DType::F32, in[0].shape}, "x")
           : bind(in[0], "x"));
  push(bind(in[1], "the weight"));
  push(bias ? bind(in[2], "the bias") : bind(in[1], "the weight"));
  push(bind(o, "the output", true));
  push(static_cast<uint32_t>(T));
  push(static_cast<uint32_t>(K));
  push(static_cast<uint32_t>(N));
  push(bias ? 1 : 0);
  const std::vector<int32_t> spec = {dt_code(in[1].dtype), bias ? dt_code(in[2].dtype) : 0,
                                     split(1)};
  if (rules_.gemv_q(ni_)) {
    plan_gemv_q(spec);
  } else if (T <= kGemvMaxTokens && !rules_.use_coop(T)) {
    // Float weights: a subgroup per row in 16-byte loads (matmul_gemv_f) where rows are
    // whole loads, 16-byte aligned, and the device has subgroup sums; else a workgroup
    // per row (matmul_gemv).
    const DType wt = in[1].dtype;
    const int64_t per = wt == DType::F32 ? 4 : 8;
    const uint32_t sg = ctx_->phys().subgroup_size;
    const bool by_subgroup = (wt == DType::F32 || wt == DType::F16 || wt == DType::BF16) &&
                             ctx_->phys().subgroup_arithmetic && sg >= 4 && sg <= 128 &&
                             K % per == 0 && in[0].offset % 16 == 0 && in[1].offset % 16 == 0;
    if (by_subgroup) {
      const uint32_t rows = 128 / sg;  // its workgroups of 128 invocations
      use("matmul_gemv_f", {spec[0], spec[1], static_cast<int32_t>(T), static_cast<int32_t>(rows)});
      grid(x_, (static_cast<uint64_t>(N) + rows - 1) / rows);
    } else {
      use("matmul_gemv", spec);
      grid(x_, static_cast<uint64_t>(N));
    }
    x_.label = format_message("matmul_gemv %s T=%lld [%lld x %lld]%s", dtype_name(in[1].dtype),
                              (long long)T, (long long)N, (long long)K,
                              by_subgroup ? " subgroup rows" : "");
  } else if (set_.coop) {
    plan_coop(spec);
  } else {
    use("matmul_tiled", spec);
    x_.label = format_message("matmul_tiled %s T=%lld [%lld x %lld]", dtype_name(in[1].dtype),
                              (long long)T, (long long)N, (long long)K);
    x_.groups_x = static_cast<uint32_t>((N + 63) / 64);
    x_.groups_y = static_cast<uint32_t>((T + 63) / 64);
    if (x_.groups_y > kMaxGroups)
      fail("vulkan backend: matmul of %lld tokens is too long", (long long)T);
  }
}

// A quantized GEMV (matmul_gemv_q.glsl and its variants) and the nodes after it that it
// takes over; its first eight push constants and four bindings are plan_matmul's.
void Planner::plan_gemv_q(const std::vector<int32_t>& spec) {
  const Node& node = *bn_->node;
  const std::vector<TensorRef>& in = bn_->inputs;
  const TensorRef& o = bn_->output;
  const int64_t T = in[0].shape.rows(), K = in[0].shape.row_len(), N = in[1].shape[0];
  const auto scratch = ffn_scratch_.find(ni_);
  // A residual Add right after (o_proj, down_proj) runs in the same dispatch,
  // which writes the product and the sum; so do gate and up with the SiluMul
  // after them (both products, and the activation into a scratch buffer).
  // q/k/v: up to three matmuls of the same x in one grid.
  const vk::FusionRules::GemvGroup group = rules_.gemv_group(ni_);
  const int res = group.res;
  const bool glu = group.glu;
  const size_t segs = group.segs;
  int32_t mode = segs > 1 ? 2 : 0;
  if (res >= 0) {
    backend_.check_bound(nodes_[ni_ + 1], "vulkan backend");
    push(bind(nodes_[ni_ + 1].inputs[res], "the residual"));
    push(bind(nodes_[ni_ + 1].output, "the sum", true));
    push(1);
    x_.nodes.push_back(static_cast<int>(ni_ + 1));
    fused_ = 1;
  } else if (glu) {
    auto buf = std::make_shared<Buffer>(*ctx_, ctx_, static_cast<size_t>(T * N * 4),
                                        "fused ffn activation");
    keep_.push_back(buf);
    ffn_scratch_[ni_ + 3] = buf;
    push(bind(in[0], "x"));
    push(bind(TensorRef{buf.get(), 0, DType::F32, {T, N}}, "the activation", true));
    push(0);
    x_.nodes.push_back(static_cast<int>(ni_ + 1));
    x_.nodes.push_back(static_cast<int>(ni_ + 2));
    fused_ = 2;
    mode = 1;
  } else {
    push(bind(in[0], "x"));
    push(bind(o, "the output", true));
    push(0);
  }
  int64_t seg_rows[3] = {N, 0, 0};
  for (size_t k = 1; k < segs; k++) seg_rows[k] = nodes_[ni_ + k].inputs[1].shape[0];
  // Integer dots with x's planes in shared memory (workgroups of 256 threads).
  const bool sx = rules_.uses_shared_x(ni_);
  const auto norm_it = norm_in_gemv_.find(ni_);
  const bool norm_in = norm_it != norm_in_gemv_.end();
  if (norm_in && !sx)
    fail("vulkan backend: node '%s': norm fused without shared x", node.name.c_str());
  const GemvLaunch gl = gemv_launch(glu, sx, norm_in, segs, seg_rows, T, K, N);
  const GemvShape& gs = gl.gs;
  const bool qout = gl.qout, persist = gl.persist;
  // Down and its residual Add in the same dispatch (the Add's residual input, or -1).
  const int ffn_res = glu && qout ? rules_.ffn_down_fusable(ni_) : -1;
  const int rope_mask = gl.rope_mask;
  const bool rope_kv = rope_mask >= 0;
  const uint32_t sg = ctx_->phys().subgroup_size;
  push(gs.tpr);
  // Integer dots: quantize_x turns x into planes first (and copies a fused FFN's
  // activation to its place), and the GEMV reads the planes as its x.
  const TensorRef x_src = scratch != ffn_scratch_.end()
                              ? TensorRef{scratch->second.get(), 0, DType::F32, in[0].shape}
                              : in[0];
  // The fused FFN's down matmul copies its x (the activation) to its place itself
  // where no quantize_x does (float x; gate/up rounded it), from binding 6.
  const bool copy_act =
      scratch != ffn_scratch_.end() && (!set_.int_dot || planes_hold_ == region(x_src));
  if (glu || segs > 1) {
    backend_.check_bound(nodes_[ni_ + 1], "vulkan backend");
    bind(nodes_[ni_ + 1].inputs[1], "the second weight");
    push(bind(nodes_[ni_ + 1].output, "the second output", true));
  } else {
    if (copy_act && set_.int_dot)
      bind(x_src, "the activation");  // at word 0
    else
      bind(in[1], "the weight");
    push(bind(o, "the output", true));
  }
  const bool planes_held = planes_hold_ == region(x_src);
  const TensorRef planes{
      x_planes_.get(), planes_held ? planes_hold_off_ : 0, DType::F32, {T * (K / 32) * 18}};
  // Unless the dispatch before (a norm, the attention merge, a matmul of the
  // same x) left x's planes in place.
  if (set_.int_dot && !norm_in && !planes_held)
    plan_quantize_x(x_src, planes, scratch != ffn_scratch_.end());
  if (set_.int_dot) {
    // Binding 0 of the GEMV: the planes instead of x, or the norm's input.
    Recorded tmp;
    x_.push[0] = norm_in ? bind_to(tmp, nodes_[norm_it->second].inputs[0], "x")
                         : bind_to(tmp, planes, "the quantized x");
    x_.bindings[0] = tmp.bindings[0];
    x_.reads[0] = tmp.reads[0];
  }
  if (copy_act) {
    push(bind(in[0], "the activation", true));
    push(static_cast<uint32_t>(T * K));
  } else {
    // Unused, but the shader may write it: the output (validation sees a write).
    push(bind(o, "the output", true));
    push(0);
  }
  // MODE 2: the third segment (the second's bindings again when there are two).
  const BoundNode& last = nodes_[ni_ + segs - 1];
  if (segs > 2) backend_.check_bound(last, "vulkan backend");
  bind(last.inputs[1], "the third weight");
  push(static_cast<uint32_t>(seg_rows[1]));
  push(static_cast<uint32_t>(seg_rows[2]));
  push(bind(last.output, "the third output", true));
  for (size_t k = 1; k < segs; k++) x_.nodes.push_back(static_cast<int>(ni_ + k));
  if (segs > 1) fused_ = segs - 1;
  if (rope_kv) fused_ += 4;
  std::vector<int32_t> gemv_spec = {
      spec[0], spec[1], spec[2], static_cast<int32_t>(T), static_cast<int32_t>(gs.rows), mode};
  gemv_spec.push_back(sx ? static_cast<int32_t>(T * (K / 32)) : 0);  // XBLOCKS
  if (rope_kv) bind_rope_kv(rope_mask);
  // NORM: the norm's weight at the binding after the others (another read of
  // the matrix where it is unused) and its eps.
  if (sx) {
    const BoundNode* nn = norm_in ? &nodes_[norm_it->second] : nullptr;
    push(nn ? bind(nn->inputs[1], "the norm weight") : bind(in[1], "the weight"));
    push_f(nn ? nn->node->params.eps : 0.f);
    if (nn) {
      x_.nodes.insert(x_.nodes.begin(), static_cast<int>(norm_it->second));
      planes_hold_ = Region{};
    }
    // QOUT: the planes of the activation (down's x) at binding 12.
    if (!rope_kv) {
      const TensorRef act_planes{x_planes_.get(), act_planes_off_, DType::F32, {T * (N / 32) * 18}};
      push(qout ? bind(act_planes, "the rounded activation", true) : bind(in[1], "the weight"));
      if (qout) {
        planes_hold_ = region(TensorRef{ffn_scratch_[ni_ + 3].get(), 0, DType::F32, {T, N}});
        planes_hold_off_ = act_planes_off_;
      }
      // KSPLIT: each part's sums of its 32 rows, and a counter per round (bindings 13, 14).
      bind_merge_scratch(gl.ksplit > 1, static_cast<size_t>(N / 32) * gl.ksplit * 32 * 8, N / 32,
                         "gate/up split-K");
    }
  }
  const std::vector<int32_t> ffn_spec =
      ffn_res >= 0 ? bind_ffn_down(ffn_res, N) : std::vector<int32_t>{};
  gemv_spec.push_back(rope_kv ? dt_code(nodes_[ni_ + 5].output.dtype) : 0);  // CDT
  gemv_spec.push_back(static_cast<int32_t>(gs.unroll));                      // U
  gemv_spec.push_back(persist ? 1 : 0);                                      // PERSIST
  gemv_spec.push_back(norm_in ? 1 : 0);                                      // NORM
  gemv_spec.push_back(norm_in ? dt_code(nodes_[norm_it->second].inputs[1].dtype) : 0);
  gemv_spec.push_back(qout ? 1 : 0);                      // QOUT
  gemv_spec.push_back(static_cast<int32_t>(gl.ksplit));   // KSPLIT
  gemv_spec.push_back(static_cast<int32_t>(gl.threads));  // X_SHARED: the workgroup size
  // LLM_VULKAN_GEMV_PROLOGUE_ONLY=1: shared-x GEMVs stop after their prologue (a measuring
  // aid: results are then wrong).
  static const bool prologue_only = [] {
    const char* e = std::getenv("LLM_VULKAN_GEMV_PROLOGUE_ONLY");
    return e && std::strcmp(e, "1") == 0;
  }();
  gemv_spec.push_back(prologue_only ? 1 : 0);  // PROLOGUE_ONLY
  // FFN_DOWN: DN_ROWS, FFN_PARTS, NEXT_NORM, NNWDT (their defaults without it).
  if (ffn_spec.empty())
    gemv_spec.insert(gemv_spec.end(), {8, 0, 0, 0});
  else
    gemv_spec.insert(gemv_spec.end(), ffn_spec.begin(), ffn_spec.end());
  // LLM_VULKAN_GEMV_X8=1 (opt-in, README): steps of 2+ tokens round x to int8 (X8), for
  // half the dot products at ggml's q8_1 precision; read per plan so that tests can set it.
  const char* x8_env = std::getenv("LLM_VULKAN_GEMV_X8");
  const bool x8 = x8_env && std::strcmp(x8_env, "1") == 0;
  gemv_spec.push_back(x8 && T > 1 ? 1 : 0);  // X8
  // NORM_PAR: the fused norm rounds x with 8 threads a block where subgroups hold them
  // (H100 tg128: 7b +2%, 1b +4-5%); LLM_VULKAN_NORM_PAR=0 keeps a thread a block.
  const char* np_env = std::getenv("LLM_VULKAN_NORM_PAR");
  const bool norm_par = sg >= 8 && !(np_env && std::strcmp(np_env, "0") == 0);
  gemv_spec.push_back(norm_in && norm_par ? 1 : 0);  // NORM_PAR
  // NORM_PRE (one token): the rounds of x and of the norm weight a thread loads before the
  // sum of squares, instead of round by round after it; LLM_VULKAN_NORM_PRE=0 keeps the old
  // way (for measuring).
  const uint32_t norm_pre_max = env_uint("LLM_VULKAN_NORM_PRE", 4);  // per plan: tests set it
  const int64_t quads = K / 4, rounds = (quads + gl.threads - 1) / gl.threads;
  gemv_spec.push_back(norm_in && norm_par && T == 1 ? static_cast<int32_t>(std::min<int64_t>(
                                                          {rounds, norm_pre_max, kNormPreMax}))
                                                    : 0);  // NORM_PRE
  // LLM_VULKAN_GEMV_STRIP (bits): the quantized GEMVs without their arithmetic (1), sums'
  // exchange and outputs (2) or prologue (4), a measuring aid (results are then wrong).
  static const uint32_t strip = env_uint("LLM_VULKAN_GEMV_STRIP", 0);
  gemv_spec.push_back(static_cast<int32_t>(strip));  // STRIP
  // LOOP_LOCAL: each iteration of the quantized GEMVs loads its own blocks, rather than
  // issuing the next one's at its end (H100 tg128: 7b 360.1-360.4 -> 366.2-366.6, 1b
  // 1,308.3 -> 1,331.6; the same text). LLM_VULKAN_GEMV_LOOP=0 keeps the old loop (for
  // measuring); read per plan so that tests can set it.
  gemv_spec.push_back(env_uint("LLM_VULKAN_GEMV_LOOP", 1) ? 1 : 0);  // LOOP_LOCAL
  // PRELOAD: the first blocks issued before a shared-x GEMV's copy of x (H100 tg128: 7b
  // 398.2-398.7 -> 401.3-402.7, 1b 1,362-1,365 -> 1,380-1,386; before the norm too, 2, lost
  // 0.2-0.7%). LLM_VULKAN_GEMV_PRELOAD=0|2 (for measuring; read per plan so that tests can set it).
  gemv_spec.push_back(static_cast<int32_t>(std::min(env_uint("LLM_VULKAN_GEMV_PRELOAD", 1), 2u)));
  // Gate/up rounding the activation in workgroups over 256 threads: rounds of several
  // blocks (QOUT_WIDE).
  const bool wide = qout && gl.threads > kGemvQThreadsShared;
  use(ffn_res >= 0      ? (sg > 16 ? "matmul_gemv_qdot_ffn16" : "matmul_gemv_qdot_ffn")
      : rope_kv         ? (gs.tpr < sg ? "matmul_gemv_qdot_rope16" : "matmul_gemv_qdot_rope")
      : qout && sg > 16 ? (wide ? "matmul_gemv_qdot_sx16_wide" : "matmul_gemv_qdot_sx16")
      : sx              ? (wide ? "matmul_gemv_qdot_sx_wide" : "matmul_gemv_qdot_sx")
      : set_.int_dot    ? "matmul_gemv_qdot"
                        : "matmul_gemv_q",
      gemv_spec);
  std::string rows = std::to_string(N);
  for (size_t k = 1; k < segs; k++) rows += " + " + std::to_string(seg_rows[k]);
  const std::string qout_label =
      " x2 +silu_mul +quantize" +
      (gl.ksplit > 1 ? format_message(" (K in %u parts)", gl.ksplit) : std::string()) +
      (wide ? format_message(" in %u threads", gl.threads) : std::string());
  x_.label = format_message(
      "%smatmul_gemv_q %s T=%lld [%s x %lld]%s", norm_in ? "rms_norm + " : "",
      dtype_name(in[1].dtype), (long long)T, rows.c_str(), (long long)K,
      res >= 0       ? " +add"
      : ffn_res >= 0 ? (qout_label + " +down +add" + (ffn_spec[2] ? " +rms_norm" : "")).c_str()
      : qout         ? qout_label.c_str()
      : glu          ? " x2 +silu_mul"
      : rope_kv      ? " +rope +kv_append"
                     : "");
  grid(x_, gl.groups);
}

// FFN_DOWN (matmul_gemv_qdot_ffn*): bindings 15-21 and the push constants of down
// (node ni_ + 3, whose K is gate/up's N) and its residual Add (ni_ + 4, residual input
// res) inside the gate/up dispatch; with FFN_PARTS (settings.ffn_down 2) the dispatch
// writes each round's products and a parts_reduce after it adds them and the residual;
// with NEXT_NORM the RmsNorm after the Add (ni_ + 5) rounds its output for the GEMV
// after it there too. Returns the shader's specialization constants 16-19.
std::vector<int32_t> Planner::bind_ffn_down(int res, int64_t N) {
  const BoundNode &dn = nodes_[ni_ + 3], &add = nodes_[ni_ + 4];
  backend_.check_bound(dn, "vulkan backend");
  backend_.check_bound(add, "vulkan backend");
  const TensorRef& wd = dn.inputs[1];
  const int64_t H = wd.shape.rows(), rounds = N / 32;
  if (wd.shape.row_len() != N) fail("vulkan backend: fused FFN: down's K is not gate/up's N");
  Buffer& blocks = block_major_copy(*ctx_, ctx_, vk_buffer(*wd.buffer), wd.dtype, H, N);
  x_.bindings.push_back({&blocks, 0, blocks.size()});
  x_.reads.push_back({&blocks, 0, blocks.size()});
  push(0);  // dn_off
  push(static_cast<uint32_t>(H));
  x_.nodes.push_back(static_cast<int>(ni_ + 3));
  fused_ = 4;
  planes_hold_ = Region{};
  // LLM_VULKAN_FFN_DOWN_ROWS: rows of down a thread loads at once (1..8; default 8: two
  // rounds of loads for 7b's 4,096 rows).
  static const int32_t dn_rows = [] {
    const char* e = std::getenv("LLM_VULKAN_FFN_DOWN_ROWS");
    return e ? std::clamp(std::atoi(e), 1, 8) : 8;
  }();
  const bool parts_mode = set_.ffn_down == 2;
  const bool with_norm = rules_.norm_after_ffn(ni_);
  const bool next_norm = !parts_mode && with_norm;  // in this dispatch (NEXT_NORM)
  std::vector<int32_t> spec = {dn_rows, parts_mode ? 1 : 0, next_norm ? 1 : 0, 0};
  if (parts_mode) {
    // Each round's products (one buffer for every layer: the dispatches are ordered).
    const size_t bytes = static_cast<size_t>(rounds * H) * 4;
    if (!ffn_parts_ || ffn_parts_->size() < bytes) {
      ffn_parts_ = std::make_shared<Buffer>(*ctx_, ctx_, bytes, "fused ffn down parts");
      keep_.push_back(ffn_parts_);
    }
    const TensorRef parts{ffn_parts_.get(), 0, DType::F32, {rounds, H}};
    bind(parts, "down's parts", true);
    for (int k = 0; k < 3; k++) x_.bindings.push_back(error_binding());  // bindings 17-19
    push(0);
    push(0);
    // The reduce: y = Σ parts (down's product), sum = residual + y (parts_reduce): 64
    // outputs a workgroup, 16 threads each where the device takes 1,024 a workgroup.
    Recorded& r = merge_;
    bind_to(r, parts, "down's parts");  // at word 0
    const uint32_t y_off = bind_to(r, dn.output, "down's product", true);
    const uint32_t a_off = bind_to(r, add.inputs[res], "the residual");
    const uint32_t o2_off = bind_to(r, add.output, "the sum", true);
    for (uint32_t v :
         {y_off, static_cast<uint32_t>(H), static_cast<uint32_t>(rounds), a_off, o2_off})
      r.push[r.push_words++] = v;
    const VkPhysicalDeviceLimits& lim = ctx_->phys().props.limits;
    const uint32_t lanes = std::clamp<uint32_t>(
        std::min(lim.maxComputeWorkGroupInvocations / 64, lim.maxComputeWorkGroupSize[1]), 1, 16);
    const uint64_t groups = (static_cast<uint64_t>(H) + 63) / 64;
    r.nodes = {static_cast<int>(ni_ + 4)};
    int32_t nn_dt = 0;
    if (with_norm) {
      // The next RmsNorm's planes (NEXT_NORM in parts_reduce.comp), a counter and each
      // workgroup's Σ o2².
      nn_dt = bind_next_norm(r, H, ni_ + 5);
      bind_zeroed(r, 4, "fused ffn norm counter");
      bind_zeroed(r, static_cast<size_t>(groups) * 4, "fused ffn norm sums");
    } else {
      for (int k = 0; k < 4; k++) r.bindings.push_back(error_binding());  // bindings 4-7
      for (int k = 0; k < 3; k++) r.push[r.push_words++] = 0;
    }
    r.pipeline =
        &ctx_->pipeline("parts_reduce", 8, {static_cast<int32_t>(lanes), with_norm ? 1 : 0, nn_dt});
    r.label = format_message("parts_reduce x%lld +add%s (fused ffn down)", (long long)rounds,
                             with_norm ? " +rms_norm" : "");
    grid(r, groups);
    has_merge_ = true;
  } else {
    // The accumulator of down's products and the count of rounds done (the last
    // workgroup resets both).
    bind_zeroed(x_, static_cast<size_t>(H) * 4, "fused ffn down sums");
    bind_zeroed(x_, 4, "fused ffn down counter");
    push(bind(add.inputs[res], "the residual"));
    push(bind(add.output, "the sum", true));
    x_.nodes.push_back(static_cast<int>(ni_ + 4));
  }
  if (!next_norm) {
    x_.bindings.push_back(error_binding());  // bindings 20, 21
    x_.bindings.push_back(error_binding());
    for (int k = 0; k < 3; k++) push(0);
    return spec;
  }
  spec[3] = bind_next_norm(x_, H, ni_ + 5);
  return spec;
}

// The RmsNorm (node norm_node) after a fused FFN (NEXT_NORM) or o in the attention
// (O_NEXT_NORM), in dispatch d: its weight and the planes of its output, which go where
// a norm with QUANT would put them, for the GEMV after it; pushes their offsets and eps;
// returns the weight's dtype code.
int32_t Planner::bind_next_norm(Recorded& d, int64_t H, size_t norm_node) {
  const BoundNode& nn = nodes_[norm_node];
  backend_.check_bound(nn, "vulkan backend");
  d.push[d.push_words++] = bind_to(d, nn.inputs[1], "the next norm's weight");
  d.push[d.push_words++] = bind_to(d, TensorRef{x_planes_.get(), 0, DType::F32, {H / 32 * 18}},
                                   "the next norm's planes", true);
  const float eps = nn.node->params.eps;
  std::memcpy(&d.push[d.push_words++], &eps, 4);
  d.nodes.push_back(static_cast<int>(norm_node));
  fused_ = norm_node - ni_;
  planes_hold_ = region(nn.output);
  planes_hold_off_ = 0;
  return dt_code(nn.inputs[1].dtype);
}

// How the quantized GEMV of node ni_ runs (see GemvLaunch).
Planner::GemvLaunch Planner::gemv_launch(bool glu, bool sx, bool norm_in, size_t segs,
                                         const int64_t seg_rows[3], int64_t T, int64_t K,
                                         int64_t N) const {
  // Gate/up that also round the activation for the integer-dot down GEMV after
  // them (QOUT, no quantize_x): 16 groups of 16 threads take 2 rows each, a block
  // of down's x per round (matmul_gemv_qdot_sx16, clustered sums, where subgroups
  // are wider); only where nothing after down reads the activation (quantize_x
  // would have copied it to its place).
  // LLM_VULKAN_ACT_QUANT_FUSE=0 keeps quantize_x (for measuring).
  static const bool qout_on = [] {
    const char* e = std::getenv("LLM_VULKAN_ACT_QUANT_FUSE");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  const uint32_t sg = ctx_->phys().subgroup_size;
  bool qout = qout_on && glu && sx && T == 1 && N % 32 == 0 && rules_.gemv_q(ni_ + 3) &&
              (sg <= 16 || (sg <= 64 && ctx_->phys().subgroup_clustered));
  if (qout && rules_.read_from(ni_ + 4, nodes_[ni_ + 2].node->output)) qout = false;
  // q/k/v with the ropes and cache appends after them: a group's two rows are a
  // pair that rotates together.
  // LLM_VULKAN_ROPE_FUSE=0 keeps the ropes and appends apart (for measuring).
  static const bool rope_fuse_on = [] {
    const char* e = std::getenv("LLM_VULKAN_ROPE_FUSE");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  const int rope_mask = rope_fuse_on && sx && segs == 3 ? rules_.rope_kv_fusable(ni_) : -1;
  const bool rope_kv = rope_mask >= 0;
  // The shape, grid and workgroups of the GEMV with workgroups of `threads`.
  struct Grid {
    GemvShape gs;
    bool persist = false;
    uint64_t groups = 0;
  };
  auto grid_for = [&](uint32_t threads) {
    Grid g;
    GemvShape& gs = g.gs;
    gs = gemv_shape(ctx_->phys().subgroup_size, K, seg_rows[0] + seg_rows[1] + seg_rows[2], T,
                    set_.int_dot, threads);
    if (qout) {
      gs.tpr = 16;
      gs.rows = 2;
    }
    if (rope_kv) gs.rows = 2;
    // Tasks of gs.rows rows of one matrix, a group of threads each, and the
    // workgroups that take them in one pass.
    auto count_groups = [&] {
      uint64_t tasks = 0;
      for (int k = 0; k < 3; k++)
        tasks += (static_cast<uint64_t>(seg_rows[k]) + gs.rows - 1) / gs.rows;
      const uint64_t per_wg = threads / gs.tpr;
      return (tasks + per_wg - 1) / per_wg;
    };
    g.groups = count_groups();
    // The fixed grid where one pass would take over two waves of it (H200: 7b q/k/v
    // 21.6 -> 19.5 µs, the head 43.0 -> 35.4; gate/up, a pass and a half, lost
    // 1 µs), a subgroup per task of two rows (no barriers in the loop over tasks). Its
    // workgroups scale down with their size (the same threads per unit).
    const uint64_t persist_wgs =
        std::max<uint64_t>(1, uint64_t{set_.persist_wgs} * kGemvQThreadsShared / threads);
    g.persist = sx && set_.persist_wgs > 0 && (!glu || norm_in) && g.groups > 2 * persist_wgs;
    if (g.persist) {
      // A subgroup a task; LLM_VULKAN_PERSIST_TPR (a setting) takes wider tasks, whose
      // subgroups' sums meet in shared memory (for measuring and testing: 7b q/k/v on the
      // H100 lost 3.5% with 64 threads, 10% with 128; docs/PERFORMANCE.md, 47th session).
      if (!qout) gs.tpr = std::clamp(set_.persist_tpr, ctx_->phys().subgroup_size, threads);
      // Q/k/v with the ropes take groups of 16 threads where subgroups are wider and have
      // clustered adds (matmul_gemv_qdot_rope16): twice the groups, so 7b's 6,144 tasks
      // fit the grid's 8,448 groups in one round instead of 1.45 (H100 tg128, with
      // PRELOAD: 7b 401.3-402.7 -> 405.7-405.8; 1b's q/k/v are not on this grid).
      // LLM_VULKAN_QKV_TPR=16|32|64 fixes it (for measuring; read per plan so that tests
      // can set it).
      const bool halves = sg > 16 && ctx_->phys().subgroup_clustered;
      uint32_t qkv_tpr = rope_kv ? env_uint("LLM_VULKAN_QKV_TPR", 0) : 0;
      if (rope_kv && qkv_tpr == 0 && halves) qkv_tpr = 16;
      if (qkv_tpr == 16 && halves)
        gs.tpr = 16;
      else if (qkv_tpr >= sg && qkv_tpr <= threads && (qkv_tpr & (qkv_tpr - 1)) == 0)
        gs.tpr = qkv_tpr;
      gs.rows = 2;
      g.groups = std::min<uint64_t>(count_groups(), persist_wgs);
    }
    return g;
  };
  // X_SHARED: each workgroup copies (or normalizes) x once, so the largest workgroups
  // that still leave one or more per multiprocessor (H200, 7b tg128: 321.9 with 256
  // threads, 332.4-335.2 so; with 1,024 everywhere 1b's q/k/v and o, 48 and 32
  // workgroups, lost 0.6 µs each). QOUT's sizes follow below.
  // LLM_VULKAN_GEMV_THREADS fixes the size where it fits (256, 512, 1,024; for measuring
  // and tests).
  // A GEMV that normalizes x itself (NORM) pays for that prologue once a workgroup, so
  // it takes 512 threads where they fill two thirds of the multiprocessors (H100, 1b
  // tg128 1,177-1,182 -> 1,190-1,195: q/k/v in 96 workgroups of 512 against 192 of 256;
  // 7b's fill the GPU with 1,024 as before). LLM_VULKAN_QKV_THREADS fixes the size of
  // the GEMVs of several matrices (q/k/v) alone (for measuring).
  uint32_t threads = !sx ? kGemvQThreads : kGemvQThreadsShared;
  Grid g = grid_for(threads);
  static const uint32_t qkv_threads = env_uint("LLM_VULKAN_QKV_THREADS", 0);
  const uint32_t fixed_threads = segs > 1 && qkv_threads ? qkv_threads : set_.gemv_threads;
  if (sx && !qout) {
    for (uint32_t t : {kGemvQThreadsMax, kGemvQThreadsMax / 2}) {
      if (fixed_threads && t != fixed_threads) continue;
      const Grid big = grid_for(t);
      const uint64_t sums = (glu ? 2 : 1) * uint64_t{big.gs.rows} * static_cast<uint64_t>(T);
      if (gemv_shared_bytes(T, K, sums, t) > ctx_->phys().props.limits.maxComputeSharedMemorySize)
        continue;
      const uint64_t fill =
          norm_in && t < kGemvQThreadsMax ? (2 * uint64_t{set_.units} + 2) / 3 : set_.units;
      if (fixed_threads || big.groups >= fill) {
        threads = t;
        g = big;
        break;
      }
    }
  }
  // Gate/up rounding the activation (QOUT) take 32 rows for every 256 threads of a
  // workgroup, whole blocks of down's x. They take 512 where the rows fill such rounds
  // (fewer copies of the norm, as for the other shared-x GEMVs; H100 tg128, against 256:
  // 7b 330.4-330.7 -> 334.1-334.3, 1b 1,206.8-1,209.6 -> 1,211.0-1,211.1); not with down
  // inside (its rounds are one block). They take 1,024 where workgroups of 512 would
  // outnumber the multiprocessors and those of 1,024 would not: one a multiprocessor
  // instead of two on some (H100 tg128: 7b, 172 against 86 workgroups, 404.4-406.0 ->
  // 408.2; 1b's 128 of 512 lost 3% as 64 of 1,024). LLM_VULKAN_GLU_THREADS=256|512|1024
  // fixes the size (for measuring and tests).
  if (qout && rules_.ffn_down_fusable(ni_) < 0) {
    const uint32_t fixed = env_uint("LLM_VULKAN_GLU_THREADS", 0);  // per plan: tests set it
    const uint64_t units = set_.units, rows = static_cast<uint64_t>(N);
    const bool wide_one_wave = (rows + 63) / 64 > units && (rows + 127) / 128 <= units;
    for (uint32_t t : {fixed ? fixed : wide_one_wave ? 1024u : 512u, fixed ? 0u : 512u}) {
      if ((t == 512 || t == 1024) && N % (t / 8) == 0 &&
          gemv_shared_bytes(T, K, 2 * 2 * static_cast<uint64_t>(T), t) <=
              ctx_->phys().props.limits.maxComputeSharedMemorySize) {
        threads = t;
        g = grid_for(t);
        break;
      }
    }
  }
  GemvShape& gs = g.gs;
  const bool persist = g.persist;
  uint64_t groups = g.groups;
  // Gate/up rounding the activation take 32 rows per 256 threads, too few workgroups for
  // the GPU on small models (1b: 256 against 528 that fit on the H200): K in 2 or 4
  // parts, each a workgroup, while they fit in one wave and each thread keeps at least
  // four blocks per row (with two, 1b's gate/up took 15.8 µs in 2 parts against 14.2
  // whole on the H100: tg128 1,380-1,386 -> 1,442). LLM_VULKAN_GLU_SPLIT fixes the parts
  // (1, 2, 4; for measuring).
  uint32_t ksplit = 1;
  if (qout && !persist) {
    const uint64_t blocks = static_cast<uint64_t>(K / 32);
    const uint64_t wave =
        std::max<uint64_t>(1, uint64_t{set_.persist_wgs} * kGemvQThreadsShared / threads);
    while (ksplit < 4 && groups * ksplit * 2 <= wave && blocks / (ksplit * 2 * gs.tpr) >= 4)
      ksplit *= 2;
    if (const char* e = std::getenv("LLM_VULKAN_GLU_SPLIT")) {
      const int v = std::atoi(e);
      ksplit = v >= 4 ? 4 : v >= 2 ? 2 : 1;
    }
  }
  return {gs, qout, rope_mask, persist, groups * ksplit, ksplit, threads};
}

// quantize_x before the GEMV: x (or, copy, the fused FFN's activation in its scratch,
// also copied to its place) rounded into planes, which the GEMVs after it of the same
// x read too.
void Planner::plan_quantize_x(const TensorRef& x_src, const TensorRef& planes, bool copy) {
  const std::vector<TensorRef>& in = bn_->inputs;
  const int64_t T = in[0].shape.rows(), K = in[0].shape.row_len();
  pre_.push[pre_.push_words++] = bind_to(pre_, x_src, "x");
  pre_.push[pre_.push_words++] = bind_to(pre_, planes, "the quantized x", true);
  pre_.push[pre_.push_words++] = static_cast<uint32_t>(T);
  pre_.push[pre_.push_words++] = static_cast<uint32_t>(K);
  pre_.push[pre_.push_words++] = bind_to(pre_, copy ? in[0] : planes, "the activation", copy);
  pre_.push[pre_.push_words++] = copy ? static_cast<uint32_t>(T * K) : 0;
  pre_.pipeline = &ctx_->pipeline("quantize_x", 3, {});
  pre_.label = format_message("quantize_x T=%lld K=%lld%s", (long long)T, (long long)K,
                              copy ? " +copy" : "");
  grid(pre_, (static_cast<uint64_t>(T * (K / 32)) + 63) / 64);
  has_pre_ = true;
  planes_hold_ = region(x_src);
  planes_hold_off_ = 0;
}

// q/k/v's GEMV with the ropes and cache appends after it (nodes ni_ + 3 .. ni_ + 6):
// their bindings and push constants (matmul_gemv_q.glsl, ROPE_KV); mask: the outputs
// to write (FusionRules::rope_kv_fusable).
void Planner::bind_rope_kv(int mask) {
  const BoundNode &rq = nodes_[ni_ + 3], &rk = nodes_[ni_ + 4], &ak = nodes_[ni_ + 5],
                  &av = nodes_[ni_ + 6];
  for (size_t k = 3; k <= 6; k++) backend_.check_bound(nodes_[ni_ + k], "vulkan backend");
  const OpParams& rp = rq.node->params;
  const uint32_t pos_off = bind(rq.inputs[1], "positions");
  const uint32_t f_off = bind(rq.inputs[2], "inv_freq");
  const uint32_t slots_off = bind(ak.inputs[1], "slots");
  const uint32_t kc_off = bind(ak.output, "the k cache", true);
  const uint32_t vc_off = bind(av.output, "the v cache", true);
  const uint32_t qr_off = bind(rq.output, "the rotated q", true);
  const uint32_t kr_off = bind(rk.output, "the rotated k", true);
  x_.bindings.push_back(error_binding());
  for (uint32_t v :
       {pos_off, f_off, slots_off, kc_off, vc_off, static_cast<uint32_t>(ak.output.shape.rows()),
        qr_off, kr_off, static_cast<uint32_t>(rp.head_dim), static_cast<uint32_t>(rp.rot_dims),
        rp.rope_style == RopeStyle::GptJ ? 1u : 0u, static_cast<uint32_t>(mask)})
    push(v);
  for (size_t k = 3; k <= 6; k++) x_.nodes.push_back(static_cast<int>(ni_ + k));
}

// Many tokens on the tensor-core GEMM (after plan_matmul's bindings and push constants).
void Planner::plan_coop(const std::vector<int32_t>& spec) {
  const std::vector<TensorRef>& in = bn_->inputs;
  const bool bias = in.size() > 2;
  const int64_t T = in[0].shape.rows(), K = in[0].shape.row_len(), N = in[1].shape[0];
  // Many tokens: tiles of the tensor-core GEMM, K split when the tiles are few
  // (their float32 partials then go to the scratch and a second dispatch adds them).
  const CoopPlan c = coop_plan(T, K, N);
  for (uint32_t v : {c.m_tiles, c.splits, c.k_per_split}) push(v);
  // Float weights in whole 16-byte loads of 8 values where rows of them line up.
  const DType wt = in[1].dtype;
  const bool w_vec = (wt == DType::F32 || wt == DType::F16 || wt == DType::BF16) && K % 8 == 0 &&
                     in[1].offset % 16 == 0;
  use("matmul_coop", {spec[0], spec[1], spec[2], in[0].offset % 16 == 0 && K % 4 == 0 ? 1 : 0,
                      static_cast<int32_t>(c.bm), static_cast<int32_t>(c.sg_rows), w_vec ? 1 : 0});
  x_.label = format_message("matmul_coop %s T=%lld [%lld x %lld]%s", dtype_name(in[1].dtype),
                            (long long)T, (long long)N, (long long)K,
                            c.splits > 1 ? format_message(" /%u", c.splits).c_str() : "");
  x_.groups_x = c.n_tiles;
  if (uint64_t{c.m_tiles} * c.splits > kMaxGroups)
    fail("vulkan backend: matmul of %lld tokens is too long", (long long)T);
  x_.groups_y = c.m_tiles * c.splits;
  if (c.splits > 1) {
    // This dispatch writes the partials (binding 3, word 0 of the scratch); the
    // reduce computes the node: the bias and y.
    Recorded r;
    r.nodes = std::move(x_.nodes);
    x_.nodes.clear();
    const size_t pbytes = c.partial_bytes(T, N);
    const Recorded::Binding y_binding = x_.bindings[3];
    const uint32_t y_push = x_.push[3];
    x_.bindings[3] = {coop_partials_.get(), 0, pbytes};
    x_.push[3] = 0;
    r.writes = x_.writes;  // y
    x_.writes = {{coop_partials_.get(), 0, pbytes}};
    r.reads = {{coop_partials_.get(), 0, pbytes}};
    if (bias) r.reads.push_back(x_.reads[2]);
    r.bindings = {{coop_partials_.get(), 0, pbytes}, x_.bindings[2], y_binding};
    for (uint32_t v : {x_.push[2], y_push, static_cast<uint32_t>(T * N), static_cast<uint32_t>(N),
                       c.splits, bias ? 1u : 0u})
      r.push[r.push_words++] = v;
    // A residual Add (o, down) or the SiluMul of gate and this product (up) right
    // after runs in the reduce: one dispatch and barrier less.
    const int res = rules_.residual_add(ni_);
    const int32_t epi = res >= 0 ? 1 : rules_.silu_after(ni_) ? 2 : 0;
    if (epi) {
      const BoundNode& an = nodes_[ni_ + 1];
      backend_.check_bound(an, "vulkan backend");
      // bind() records into x: move the two bindings and regions to the reduce.
      const uint32_t a_off = bind(an.inputs[epi == 1 ? res : 0], "the other input");
      r.bindings.push_back(x_.bindings.back());
      x_.bindings.pop_back();
      r.reads.push_back(x_.reads.back());
      x_.reads.pop_back();
      const uint32_t o2_off = bind(an.output, "the second output", true);
      r.bindings.push_back(x_.bindings.back());
      x_.bindings.pop_back();
      r.writes.push_back(x_.writes.back());
      x_.writes.pop_back();
      r.push[r.push_words++] = a_off;
      r.push[r.push_words++] = o2_off;
      r.nodes.push_back(static_cast<int>(ni_ + 1));
      fused_ = 1;
    } else {
      // Unused (EPI 0): y again.
      r.bindings.push_back(y_binding);
      r.bindings.push_back(y_binding);
      r.push[r.push_words++] = 0;
      r.push[r.push_words++] = 0;
    }
    r.pipeline = &ctx_->pipeline("matmul_reduce", 5, {bias ? dt_code(in[2].dtype) : 0, epi});
    r.label = format_message("matmul_reduce x%u%s", c.splits,
                             epi == 1   ? " +add"
                             : epi == 2 ? " +silu_mul"
                                        : "");
    grid(r, (static_cast<uint64_t>(T * N) + 63) / 64);
    merge_ = std::move(r);
    has_merge_ = true;
  }
}

void Planner::plan_rope() {
  const OpParams& p = bn_->node->params;
  const std::vector<TensorRef>& in = bn_->inputs;
  const TensorRef& o = bn_->output;
  const int64_t T = in[0].shape.rows();
  push(bind(in[0], "x"));
  push(bind(in[1], "positions"));
  push(bind(in[2], "inv_freq"));
  push(bind(o, "the output", true));
  for (int64_t v : {T, int64_t{p.n_heads}, int64_t{p.head_dim}, int64_t{p.rot_dims}})
    push(static_cast<uint32_t>(v));
  push(p.rope_style == RopeStyle::GptJ ? 1 : 0);
  // A KvAppend of the result right after (k) writes the f32 cache rows here too.
  const bool store = rules_.rope_store_fusable(ni_);
  if (store) {
    const BoundNode& kv = nodes_[ni_ + 1];
    push(bind(kv.inputs[1], "slots"));
    push(bind(kv.output, "the cache", true));
    push(static_cast<uint32_t>(kv.output.shape.rows()));
    x_.nodes.push_back(static_cast<int>(ni_ + 1));
    fused_ = 1;
  } else {
    push(bind(in[1], "positions"));
    push(bind(o, "the output", true));
    push(0);
  }
  x_.bindings.push_back(error_binding());
  push(store ? 1 : 0);
  use("rope", {});
  x_.label = std::string(p.rope_style == RopeStyle::GptJ ? "rope gptj" : "rope neox") +
             (store ? " +kv_append" : "");
  grid(x_, (static_cast<uint64_t>(T) * p.n_heads * p.head_dim + 63) / 64);
}

void Planner::plan_kv_append() {
  const std::vector<TensorRef>& in = bn_->inputs;
  const TensorRef& o = bn_->output;
  const int64_t T = in[0].shape.rows(), W = in[0].shape.row_len();
  push(bind(in[0], "src"));
  push(bind(in[1], "slots"));
  push(bind(o, "the cache", true));
  x_.bindings.push_back(error_binding());
  push(static_cast<uint32_t>(T));
  push(static_cast<uint32_t>(W));
  push(static_cast<uint32_t>(o.shape.rows()));
  use("kv_append", {dt_code(o.dtype)});
  x_.label = format_message("kv_append %s", dtype_name(o.dtype));
  grid(x_, (static_cast<uint64_t>(T * W) + 63) / 64);
}

void Planner::plan_attention() {
  const OpParams& p = bn_->node->params;
  const std::vector<TensorRef>& in = bn_->inputs;
  const TensorRef& o = bn_->output;
  const int64_t T = in[0].shape.rows();
  for (size_t k = 0; k < 6; k++) push(bind(in[k], "an attention input"));
  push(bind(o, "the output", true));
  x_.bindings.push_back(error_binding());
  for (int64_t v : {T, int64_t{p.n_heads}, int64_t{p.n_kv_heads}, int64_t{p.head_dim},
                    int64_t{std::max(p.window, 0)}, int64_t{p.page_size}, in[5].shape[0],
                    in[5].shape[1], in[1].shape.rows()})
    push(static_cast<uint32_t>(v));
  push_f(p.scale);
  push_f(p.softcap);
  // Few (token, head) pairs over a long context (decode): the keys are split over
  // more workgroups, the last of which to finish merges their partial results.
  int64_t context = std::min(in[5].shape[1] * p.page_size, in[1].shape.rows());
  if (p.window > 0) context = std::min<int64_t>(context, p.window);
  const int64_t items = T * p.n_heads;
  // Many tokens (prefill): tiles of 16 queries share each K/V row they read
  // (LLM_VULKAN_ATTN_TILED=0 keeps a workgroup per token, for measuring).
  static const bool tiled_on = [] {
    const char* e = std::getenv("LLM_VULKAN_ATTN_TILED");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  // At least 16 tokens per sequence on average (block table rows): a tile of
  // decode tokens of 16 sequences would take 16 passes over the keys.
  const int64_t n_seqs = std::max<int64_t>(1, in[5].shape[0]);
  const bool tiled = tiled_on && T >= kAttentionTiledMinTokens && T >= kAttentionTile * n_seqs &&
                     p.window <= 0 && p.head_dim <= kAttentionTiledMaxHeadDim &&
                     p.head_dim % 4 == 0;
  const Recorded::Binding unused = error_binding();
  const bool k_vec4 = in[1].dtype == DType::F32 && p.head_dim % 4 == 0 && in[1].offset % 16 == 0;
  const bool kv_vec4 = k_vec4 && in[2].dtype == DType::F32 && in[2].offset % 16 == 0;
  // 16-bit caches of one dtype, 8-byte aligned rows: four halves a load.
  const bool kv_half4 = (in[1].dtype == DType::F16 || in[1].dtype == DType::BF16) &&
                        in[2].dtype == in[1].dtype && p.head_dim % 4 == 0 &&
                        in[1].offset % 8 == 0 && in[2].offset % 8 == 0;
  const int32_t kv_load = kv_vec4 ? 1 : kv_half4 ? 2 : 0;
  if (tiled) {
    x_.bindings.push_back(unused);  // binding 8, the splits' partials: none
    // Chunks of 32 keys need 44 KiB of shared memory; 16 take 26 KiB.
    // LLM_VULKAN_ATTN_BKEY=16 takes 16 anyway (for testing).
    const bool smem_for_32 = ctx_->phys().props.limits.maxComputeSharedMemorySize >= 45 * 1024;
    const int32_t bkey = smem_for_32 && env_uint("LLM_VULKAN_ATTN_BKEY", 32) != 16 ? 32 : 16;
    use("attention_tiled", {dt_code(in[1].dtype), dt_code(in[2].dtype), kv_load, bkey});
    x_.label = format_message("attention tiled %s", dtype_name(in[1].dtype));
    grid(x_, static_cast<uint64_t>((T + kAttentionTile - 1) / kAttentionTile) * p.n_heads);
    return;
  }
  // LLM_VULKAN_ATTN_SPLIT_KEYS sets the keys per split (for measuring).
  static const int64_t split_keys = [] {
    const char* e = std::getenv("LLM_VULKAN_ATTN_SPLIT_KEYS");
    return e ? std::max<int64_t>(1, std::atoll(e)) : kAttentionSplitKeys;
  }();
  const uint32_t splits = items >= kAttentionSplitItems
                              ? 1
                              : static_cast<uint32_t>(std::clamp<int64_t>(context / split_keys, 1,
                                                                          kAttentionMaxSplits));
  // The workgroup that writes a head's output (the merging split, or the only one)
  // also rounds it for an integer-dot GEMV right after that reads it (o): heads of
  // whole blocks of 32.
  const bool round_out = rules_.feeds_int_dot_gemv(ni_, o) && p.head_dim % 32 == 0;
  // Partials (max, sum and the output dims) and a counter per (token, head).
  bind_merge_scratch(splits > 1, static_cast<size_t>(items * splits * (p.head_dim + 2) * 4), items,
                     "attention split");
  uint32_t planes_off = 0;
  if (round_out) {
    const TensorRef planes{x_planes_.get(), 0, DType::F32, {items * p.head_dim / 32 * 18}};
    planes_off = bind(planes, "the quantized output", true);
    planes_hold_ = region(o);
    planes_hold_off_ = 0;
  } else {
    x_.bindings.push_back(unused);
  }
  push(planes_off);
  // Heads of up to 128 dims (a multiple of 16): attention_decode, whose chunks of
  // 32 keys wait for memory twice (four threads per key for q·k, four groups of
  // keys for p·V); LLM_VULKAN_ATTN_DECODE=0 keeps attention.comp (for measuring).
  static const bool decode_on = [] {
    const char* e = std::getenv("LLM_VULKAN_ATTN_DECODE");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  const bool decode = decode_on && p.head_dim % 16 == 0 && p.head_dim <= 128;
  // attention_decode_sg: chunks of 64 keys in workgroups of 256, their max and sum by
  // subgroup (it checks the subgroup size itself); LLM_VULKAN_ATTN_SUBGROUP=0 keeps
  // attention_decode (read at each plan, so that tests can take either).
  const char* sg_env = std::getenv("LLM_VULKAN_ATTN_SUBGROUP");
  const bool by_subgroup =
      decode && !(sg_env && std::strcmp(sg_env, "0") == 0) && ctx_->phys().subgroup_arithmetic;
  // o and its residual Add in the same grid (O_WORKERS): o_parts workers a head, about a
  // worker a multiprocessor (LLM_VULKAN_ATTN_O_PARTS sets it, for measuring).
  const int o_res = by_subgroup && round_out && T == 1 ? rules_.attn_o_fusable(ni_) : -1;
  uint32_t o_parts = 0;
  int32_t o_norm_dt = -1;  // the next norm's weight dtype where this grid takes it
  if (o_res >= 0) {
    const uint32_t parts_env = env_uint("LLM_VULKAN_ATTN_O_PARTS", 0);
    o_parts = parts_env ? parts_env : set_.units / static_cast<uint32_t>(p.n_heads);
    o_parts = std::clamp<uint32_t>(o_parts, 1, kAttnOMaxParts);
    o_norm_dt = bind_attn_o(o_res, o_parts);
  }
  std::vector<int32_t> spec = {
      dt_code(in[1].dtype), dt_code(in[2].dtype), static_cast<int32_t>(splits),
      k_vec4 ? 1 : 0,       round_out ? 1 : 0,    decode ? kv_load : 0};
  if (o_res >= 0) {
    // OWDT, and O_PF: rows a thread whose weights a worker loads before it waits
    // (LLM_VULKAN_ATTN_O_PF=0..4, for measuring).
    const uint32_t pf = std::min<uint32_t>(env_uint("LLM_VULKAN_ATTN_O_PF", 2), 4);
    spec.push_back(dt_code(nodes_[ni_ + 1].inputs[1].dtype));
    spec.push_back(static_cast<int32_t>(pf));
    spec.push_back(o_norm_dt >= 0 ? 1 : 0);  // O_NEXT_NORM, O_NNWDT
    spec.push_back(std::max(o_norm_dt, 0));
  }
  const char* shader = o_res >= 0    ? "attention_decode_o"
                       : by_subgroup ? "attention_decode_sg"
                       : decode      ? "attention_decode"
                                     : "attention";
  use(shader, spec);
  x_.label = format_message("attention%s %s",
                            by_subgroup ? " decode/64"
                            : decode    ? " decode"
                                        : "",
                            dtype_name(in[1].dtype));
  if (splits > 1) x_.label += format_message(" x%u +merge", splits);
  if (round_out) x_.label += " +quantize";
  if (o_res >= 0)
    x_.label += format_message(" +o (%u slices a head) +add%s", o_parts,
                               o_norm_dt >= 0 ? " +rms_norm" : "");
  grid(x_, static_cast<uint64_t>(items) * splits + uint64_t{o_parts} * p.n_heads);
  if (splits > 1) {
    Recorded::Splits& v = x_.splits;
    v.max = splits;
    v.keys = static_cast<uint32_t>(split_keys);
    v.items = static_cast<uint64_t>(items);
    v.extra_groups = uint64_t{o_parts} * p.n_heads;
    v.shader = shader;
    v.spec = spec;
    v.spec_index = 2;  // SPLITS
  }
}

// O_WORKERS (attention_decode_o): bindings 11-18 and the push constants of o (node
// ni_ + 1, a quantized matrix in the row layout), its residual Add (ni_ + 2, residual
// input res) and where the rules allow the RmsNorm after (ni_ + 3) in the decode
// attention's grid; returns that norm's weight dtype code, or -1.
int32_t Planner::bind_attn_o(int res, uint32_t o_parts) {
  const BoundNode &o = nodes_[ni_ + 1], &add = nodes_[ni_ + 2];
  backend_.check_bound(o, "vulkan backend");
  backend_.check_bound(add, "vulkan backend");
  const int64_t heads = bn_->node->params.n_heads, rows = o.inputs[1].shape.rows();
  push(bind(o.inputs[1], "o's weight"));
  // The slices' states, o's sums and the count of slices done: the slice that completes
  // the last leaves them at zero.
  bind_zeroed(x_, static_cast<size_t>(heads) * o_parts * 4, "attention o states");
  bind_zeroed(x_, static_cast<size_t>(rows) * 4, "attention o sums");
  bind_zeroed(x_, 4, "attention o counter");
  push(static_cast<uint32_t>(rows));
  push(o_parts);
  push(bind(add.inputs[res], "the residual"));
  push(bind(add.output, "the sum", true));
  // A worker's spins on its slice's state before it leaves the slice to the head's
  // workgroup: a bound, not a timeout (lavapipe ends loops past 65,535 iterations).
  const uint32_t spin = env_uint("LLM_VULKAN_ATTN_O_SPIN", kAttnOSpin);
  push(spin);
  x_.nodes.push_back(static_cast<int>(ni_ + 1));
  x_.nodes.push_back(static_cast<int>(ni_ + 2));
  fused_ = 2;
  planes_hold_ = Region{};
  if (rules_.norm_after_attn_o(ni_)) return bind_next_norm(x_, rows, ni_ + 3);
  x_.bindings.push_back(error_binding());  // bindings 17, 18
  x_.bindings.push_back(error_binding());
  for (int k = 0; k < 3; k++) push(0);
  return -1;
}

void Planner::plan_sample() {
  const std::vector<TensorRef>& in = bn_->inputs;
  const TensorRef& o = bn_->output;
  const int64_t rows = in[0].shape.rows();
  push(bind(in[0], "the logits"));
  push(bind(in[1], "the sampling parameters"));
  push(bind(o, "the output", true));
  const int64_t n = in[0].shape.row_len();
  push(static_cast<uint32_t>(rows));
  push(static_cast<uint32_t>(n));
  // Long rows (a vocabulary) over several workgroups, merged by the row's last.
  const int64_t splits =
      std::clamp<int64_t>((n + kSampleSplitElems - 1) / kSampleSplitElems, 1, kSampleMaxSplits);
  // Each part's best (value, index) and a counter per row.
  bind_merge_scratch(splits > 1, static_cast<size_t>(rows * splits * 8), rows, "sample");
  use("sample", {static_cast<int32_t>(splits)});
  if (splits > 1) x_.label = format_message("sample x%lld", (long long)splits);
  grid(x_, static_cast<uint64_t>(rows * splits));
}

void Planner::plan_slice() {
  const OpParams& p = bn_->node->params;
  const std::vector<TensorRef>& in = bn_->inputs;
  const TensorRef& o = bn_->output;
  const int64_t n = o.shape.numel(), G = std::max(p.n_heads, 1);
  push(bind(in[0], "the input"));
  push(bind(o, "the output", true));
  push(static_cast<uint32_t>(n));
  push(static_cast<uint32_t>(G));
  push(static_cast<uint32_t>(in[0].shape.row_len() / G));
  push(static_cast<uint32_t>(p.head_dim));
  push(static_cast<uint32_t>(p.offset));
  use("slice", {});
  grid(x_, (static_cast<uint64_t>(n) + 63) / 64);
}

void Planner::plan_elementwise() {
  const Node& node = *bn_->node;
  const OpParams& p = node.params;
  const std::vector<TensorRef>& in = bn_->inputs;
  const TensorRef& o = bn_->output;
  static const std::map<Op, int32_t> codes = {{Op::SiluMul, 0},  {Op::GeluMul, 1}, {Op::Gelu, 2},
                                              {Op::GeluTanh, 3}, {Op::Add, 4},     {Op::Mul, 5},
                                              {Op::Scale, 6}};
  const int64_t n = in[0].shape.numel(), d = in[0].shape.row_len();
  const bool binary = in.size() > 1;
  push(bind(in[0], "a"));
  push(binary ? bind(in[1], "b") : bind(in[0], "a"));
  push(bind(o, "the output", true));
  push(static_cast<uint32_t>(n));
  push(static_cast<uint32_t>(d));
  push(binary && in[1].shape.numel() != n ? 1 : 0);
  push_f(p.scale);
  use("elementwise", {codes.at(node.op)});
  grid(x_, (static_cast<uint64_t>(n) + 63) / 64);
}

void Planner::plan_rwkv_elementwise() {
  const Node& node = *bn_->node;
  const std::vector<TensorRef>& in = bn_->inputs;
  const TensorRef& o = bn_->output;
  const int64_t n = o.shape.numel();
  push(bind(in[0], "a"));
  push(in.size() > 1 ? bind(in[1], "b") : bind(in[0], "a"));
  push(node.op == Op::Mix ? bind(in[2], "the mix weights") : bind(in[0], "a"));
  push(bind(o, "the output", true));
  push(static_cast<uint32_t>(n));
  push(static_cast<uint32_t>(in[0].shape.row_len()));
  use("rwkv_elementwise", {node.op == Op::Mix ? 0 : node.op == Op::SigmoidMul ? 1 : 2});
  grid(x_, (static_cast<uint64_t>(n) + 63) / 64);
}

void Planner::plan_token_shift() {
  const std::vector<TensorRef>& in = bn_->inputs;
  const TensorRef& o = bn_->output;
  const int64_t T = in[0].shape.rows(), D = in[0].shape.row_len();
  const int64_t S = in[3].shape.numel();
  push(bind(in[0], "x"));
  push(bind(in[1], "the state", true));
  push(bind(in[2], "seq_ids"));
  push(bind(in[3], "state_slots"));
  push(bind(o, "the output", true));
  push(static_cast<uint32_t>(T));
  push(static_cast<uint32_t>(D));
  push(static_cast<uint32_t>(S));
  push(static_cast<uint32_t>(in[1].shape.rows()));
  use("token_shift", {});
  grid(x_, (static_cast<uint64_t>(S * D) + 63) / 64);
}

void Planner::plan_wkv() {
  const std::vector<TensorRef>& in = bn_->inputs;
  const TensorRef& o = bn_->output;
  const int64_t T = in[0].shape.rows(), A = in[0].shape.row_len();
  const int64_t S = in[6].shape.numel();
  push(bind(in[0], "k"));
  push(bind(in[1], "v"));
  push(bind(in[2], "time_decay"));
  push(bind(in[3], "time_first"));
  push(bind(in[4], "the state", true));
  push(bind(in[5], "seq_ids"));
  push(bind(in[6], "state_slots"));
  push(bind(o, "the output", true));
  push(static_cast<uint32_t>(T));
  push(static_cast<uint32_t>(A));
  push(static_cast<uint32_t>(S));
  push(static_cast<uint32_t>(in[4].shape.rows()));
  use("wkv", {});
  grid(x_, (static_cast<uint64_t>(S * A) + 63) / 64);
}

}  // namespace

Plan plan_dispatches(const Backend& backend, const std::shared_ptr<Context>& ctx,
                     const std::vector<BoundNode>& nodes, const PlanSettings& settings) {
  return Planner(backend, ctx, nodes, settings).plan();
}

}  // namespace vk
}  // namespace llm
