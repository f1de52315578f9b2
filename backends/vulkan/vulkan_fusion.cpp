// The fusion rules of the Vulkan backend: see vulkan_fusion.h.
#include "backends/vulkan/vulkan_fusion.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace llm {
namespace vk {

// Which input of node i + 1 is the residual when it is an Add of node i's product and
// another tensor of its shape that the fused dispatch may compute without races (its
// output overlaps nothing the GEMV reads or writes); -1 when none.
int FusionRules::residual_add(size_t i) const {
  if (i + 1 >= nodes_.size()) return -1;
  const BoundNode &mm = nodes_[i], &an = nodes_[i + 1];
  if (!an.node || an.node->op != Op::Add || an.inputs.size() != 2 || an.node->inputs.size() != 2 ||
      mm.node->inputs.size() != mm.inputs.size())
    return -1;
  for (int k = 0; k < 2; k++) {
    const TensorRef& r = an.inputs[1 - k];
    if (an.node->inputs[k] != mm.node->output || an.node->inputs[1 - k] == mm.node->output ||
        r.dtype != DType::F32 || r.shape.numel() != mm.output.shape.numel() || r.offset % 4)
      continue;
    const Region o2 = region(an.output);
    std::vector<Region> others = {region(r), region(mm.output)};
    for (const TensorRef& in : mm.inputs) others.push_back(region(in));
    bool clash = false;
    for (const Region& g : others) clash |= g.overlaps(o2);
    if (!clash && !region(r).overlaps(region(mm.output))) return 1 - k;
  }
  return -1;
}

// Whether node i + 1 is SiluMul(gate, node i's product) with a gate of its shape that
// the split-K reduce of node i may compute without races: its output may take the
// place of the gate or of the product exactly (each invocation reads both, then
// writes), not overlap them in part or anything else.
bool FusionRules::silu_after(size_t i) const {
  if (i + 1 >= nodes_.size()) return false;
  const BoundNode &mm = nodes_[i], &an = nodes_[i + 1];
  if (!an.node || an.node->op != Op::SiluMul || an.inputs.size() != 2 ||
      an.node->inputs.size() != 2 || mm.node->inputs.size() != mm.inputs.size() ||
      an.node->inputs[1] != mm.node->output || an.node->inputs[0] == mm.node->output)
    return false;
  const TensorRef& g = an.inputs[0];
  const int64_t n = mm.output.shape.numel();
  if (g.dtype != DType::F32 || g.shape.numel() != n || an.output.shape.numel() != n || g.offset % 4)
    return false;
  const Region o2 = region(an.output);
  for (const Region& r : {region(g), region(mm.output)})
    if (r.overlaps(o2) && !(r.begin == o2.begin && r.end == o2.end && r.buffer == o2.buffer))
      return false;
  for (const TensorRef& in : mm.inputs)
    if (region(in).overlaps(o2)) return false;
  return true;
}

// Whether a matmul of T tokens runs as matmul_coop.
bool FusionRules::use_coop(int64_t T) const { return set_.coop && T > set_.coop_gemv_max_tokens; }
// Whether node i runs as matmul_gemv_q (few tokens, a quantized matrix in the row
// layout, aligned x).
bool FusionRules::gemv_q(size_t i) const {
  const BoundNode& bn = nodes_[i];
  if (!bn.node || bn.node->op != Op::MatMul || bn.inputs.size() < 2) return false;
  const TensorRef &x = bn.inputs[0], &w = bn.inputs[1];
  const uint32_t sg = phys_.subgroup_size;
  const int64_t max_t = set_.coop ? set_.coop_gemv_max_tokens : kGemvMaxTokens;
  return x.shape.rows() <= max_t && is_quant(w.dtype) && w.offset == 0 &&
         vk_buffer(*w.buffer).holds_split(w.dtype, w.shape.rows(), w.shape.row_len()) &&
         phys_.subgroup_arithmetic && sg > 0 && sg <= kGemvQThreads && x.offset % 16 == 0 &&
         x.shape.row_len() % 4 == 0;
}
// Whether nodes_ i..i + 3 are gate = x·Wgᵀ, up = x·Wuᵀ (the same x, one shape, no
// bias), act = SiluMul(gate, up) and down = act·Wdᵀ, all four fit for one GEMV
// dispatch for gate/up/act and one for down (which reads act from a scratch buffer
// and writes act's place: see matmul_gemv_q.comp), without races.
bool FusionRules::ffn_fusable(size_t i) const {
  if (i + 3 >= nodes_.size()) return false;
  const BoundNode &g = nodes_[i], &u = nodes_[i + 1], &a = nodes_[i + 2], &dn = nodes_[i + 3];
  if (!u.node || !a.node || !dn.node || a.node->op != Op::SiluMul || !gemv_q(i) || !gemv_q(i + 1) ||
      !gemv_q(i + 3) || g.inputs.size() != 2 || u.inputs.size() != 2 ||
      g.node->inputs.size() != 2 || u.node->inputs.size() != 2 || a.inputs.size() != 2 ||
      a.node->inputs.size() != 2 || a.node->inputs[0] != g.node->output ||
      a.node->inputs[1] != u.node->output || u.node->inputs[0] != g.node->inputs[0] ||
      g.node->output == u.node->output || dn.node->inputs[0] != a.node->output)
    return false;
  const TensorRef &wg = g.inputs[1], &wu = u.inputs[1];
  if (wu.dtype != wg.dtype || wu.shape.rows() != wg.shape.rows() ||
      wu.shape.row_len() != wg.shape.row_len() || u.inputs[0].buffer != g.inputs[0].buffer ||
      u.inputs[0].offset != g.inputs[0].offset)
    return false;
  const Region outs[2] = {region(g.output), region(u.output)};
  if (outs[0].overlaps(outs[1])) return false;
  for (const Region& o : outs)
    for (const TensorRef* r : {&g.inputs[0], &wg, &wu})
      if (o.overlaps(region(*r))) return false;
  // The down dispatch writes act: nothing else it (or a fused Add after it) touches.
  const Region act = region(a.output);
  std::vector<Region> others = {region(dn.output)};
  for (size_t k = 1; k < dn.inputs.size(); k++) others.push_back(region(dn.inputs[k]));
  if (i + 4 < nodes_.size() && nodes_[i + 4].node) {
    others.push_back(region(nodes_[i + 4].output));
    for (const TensorRef& r : nodes_[i + 4].inputs) others.push_back(region(r));
  }
  for (const Region& o : others)
    if (o.overlaps(act)) return false;
  return true;
}
// Which input of node i + 4 is the residual when nodes i..i + 3 are a fused FFN
// (ffn_fusable) whose gate/up dispatch may also compute down and that Add (FFN_DOWN in
// matmul_gemv_q.glsl, settings.ffn_down); -1 when not. That dispatch writes only the
// sum (gate's and up's products and the activation stay in registers and shared
// memory; down's product only with FFN_PARTS, by the reduce after it), so nothing
// after the Add may read those, and the sum may not overlap what the dispatch reads:
// x (or the norm's input and weight before it), the three weights and the residual.
int FusionRules::ffn_down_fusable(size_t i) const {
  if (!set_.ffn_down || !set_.int_dot || !set_.shared_x || !phys_.atomic_float_add ||
      !ffn_fusable(i) || i + 4 >= nodes_.size() || !nodes_[i + 4].node)
    return -1;
  const int res = residual_add(i + 3);
  if (res < 0) return -1;
  const BoundNode &g = nodes_[i], &u = nodes_[i + 1], &dn = nodes_[i + 3], &add = nodes_[i + 4];
  // FFN_DOWN's block-major copy of down holds q4_0 / q8_0 blocks only.
  if (g.inputs[1].dtype == DType::Q4_1 || dn.inputs[1].dtype == DType::Q4_1) return -1;
  if (dn.inputs.size() != 2 || dn.output.shape.rows() != 1 || read_from(i + 3, g.node->output) ||
      read_from(i + 3, u.node->output) || read_from(i + 4, nodes_[i + 2].node->output) ||
      read_from(i + 5, dn.node->output))
    return -1;
  std::vector<Region> reads = {region(g.inputs[0]), region(g.inputs[1]), region(u.inputs[1]),
                               region(dn.inputs[1]), region(add.inputs[res])};
  if (i > 0 && nodes_[i - 1].node && nodes_[i - 1].node->op == Op::RmsNorm)
    for (const TensorRef& r : nodes_[i - 1].inputs) reads.push_back(region(r));
  const Region sum = region(add.output);
  for (const Region& r : reads)
    if (r.overlaps(sum)) return -1;
  return res;
}
// Whether the fused FFN at i (ffn_down_fusable) may also take the RmsNorm at i + 5 of
// its sum and round the norm's output into the planes the GEMV after it reads as x:
// with atomics its last workgroup, which holds the whole sum, a block of 32 a thread (at
// most 256 blocks; NEXT_NORM in matmul_gemv_q.glsl), with parts the reduce after it
// (NEXT_NORM in parts_reduce.comp). The conditions are those of a norm run inside that
// GEMV (norm_into_gemv: only those matmuls read its output, a weight read 4 at a time),
// whose output is then never written.
bool FusionRules::norm_after_ffn(size_t i) const {
  const size_t n = i + 5;
  if (!set_.ffn_down || !set_.ffn_next_norm || n >= nodes_.size() || !nodes_[n].node ||
      nodes_[n].node->op != Op::RmsNorm || nodes_[n].node->inputs.empty() ||
      nodes_[n].node->inputs[0] != nodes_[i + 4].node->output ||
      !(region(nodes_[n].inputs[0]) == region(nodes_[i + 4].output)))
    return false;
  const int64_t H = nodes_[i + 4].output.shape.numel();
  return H % 32 == 0 && H / 32 <= kGemvQThreadsShared && norm_into_gemv(n);
}
// Which input of node i + 2 is the residual when attention i (one token), the o matmul
// i + 1 of its output and the Add i + 2 of o's product may run as one grid (O_WORKERS in
// attention_decode.glsl, settings.attn_o); -1 when not. The grid writes the attention's
// output and the sum, not o's product: nothing after may read that, and the sum may
// not overlap what the grid reads (the attention's inputs, o's weight, the residual) or
// the attention's output.
int FusionRules::attn_o_fusable(size_t i) const {
  // attention_o.glsl reads q4_0 / q8_0 only.
  if (!set_.attn_o || !set_.int_dot || !phys_.atomic_float_add || i + 2 >= nodes_.size() ||
      !nodes_[i + 1].node || !nodes_[i + 2].node || !gemv_q(i + 1) ||
      nodes_[i + 1].inputs[1].dtype == DType::Q4_1)
    return -1;
  const BoundNode &at = nodes_[i], &o = nodes_[i + 1];
  if (at.output.shape.rows() != 1 || o.inputs.size() != 2 || o.node->inputs[0] != at.node->output ||
      !(region(o.inputs[0]) == region(at.output)) || read_from(i + 3, o.node->output))
    return -1;
  const int res = residual_add(i + 1);
  if (res < 0) return -1;
  const Region sum = region(nodes_[i + 2].output);
  std::vector<Region> touched = {region(at.output), region(o.inputs[1]),
                                 region(nodes_[i + 2].inputs[res])};
  for (const TensorRef& r : at.inputs) touched.push_back(region(r));
  for (const Region& t : touched)
    if (t.overlaps(sum)) return -1;
  return res;
}
// Whether the decode attention at i with o and its Add (attn_o_fusable) may also take the
// RmsNorm at i + 3 of the sum (O_NEXT_NORM in attention_o.glsl: the last slice done, a
// block of 32 a thread of its 256) under the conditions of norm_after_ffn.
bool FusionRules::norm_after_attn_o(size_t i) const {
  const size_t n = i + 3;
  if (set_.attn_o != 2 || n >= nodes_.size() || !nodes_[n].node ||
      nodes_[n].node->op != Op::RmsNorm || nodes_[n].node->inputs.empty() ||
      nodes_[n].node->inputs[0] != nodes_[i + 2].node->output ||
      !(region(nodes_[n].inputs[0]) == region(nodes_[i + 2].output)))
    return false;
  const int64_t H = nodes_[i + 2].output.shape.numel();
  return H % 32 == 0 && H / 32 <= kAttnDecodeThreads && norm_into_gemv(n);
}
// Whether node i + 1 is an integer-dot GEMV whose x is exactly tensor t (node i's
// output), which node i's dispatch may then round for it.
bool FusionRules::feeds_int_dot_gemv(size_t i, const TensorRef& t) const {
  return set_.int_dot && i + 1 < nodes_.size() && gemv_q(i + 1) &&
         region(nodes_[i + 1].inputs[0]) == region(t);
}
// How many of nodes_ i, i + 1, i + 2 (q/k/v) run as one matmul_gemv_q dispatch (MODE
// 2): matmuls without bias of the same x by quantized matrices of one dtype and K,
// whose outputs overlap nothing the others read or write.
size_t FusionRules::gemv_segments(size_t i) const {
  if (!gemv_q(i) || nodes_[i].inputs.size() != 2) return 1;
  const TensorRef &x0 = nodes_[i].inputs[0], &w0 = nodes_[i].inputs[1];
  std::vector<Region> outs = {region(nodes_[i].output)}, ins = {region(x0), region(w0)};
  size_t n = 1;
  for (size_t j = i + 1; j < nodes_.size() && n < 3; j++, n++) {
    const BoundNode& b = nodes_[j];
    if (!gemv_q(j) || b.inputs.size() != 2 || b.inputs[0].buffer != x0.buffer ||
        b.inputs[0].offset != x0.offset || b.inputs[0].shape.numel() != x0.shape.numel() ||
        b.inputs[1].dtype != w0.dtype || b.inputs[1].shape.row_len() != w0.shape.row_len())
      break;
    const Region o = region(b.output);
    ins.push_back(region(b.inputs[1]));
    bool clash = false;
    for (const Region& r : outs) clash |= r.overlaps(o);
    for (const Region& r : ins) clash |= r.overlaps(o);
    if (clash) break;
    outs.push_back(o);
  }
  for (const Region& o : outs)
    for (const Region& r : ins)
      if (o.overlaps(r)) return 1;
  return n;
}
FusionRules::GemvGroup FusionRules::gemv_group(size_t i) const {
  GemvGroup g;
  g.res = residual_add(i);
  g.glu = g.res < 0 && nodes_[i].inputs.size() == 2 && ffn_fusable(i);
  g.segs = g.res < 0 && !g.glu ? gemv_segments(i) : 1;
  return g;
}
// Whether a node from index j on reads tensor t.
bool FusionRules::read_from(size_t j, TensorId t) const {
  for (; j < nodes_.size(); j++)
    if (nodes_[j].node &&
        std::count(nodes_[j].node->inputs.begin(), nodes_[j].node->inputs.end(), t))
      return true;
  return false;
}
// Whether the GEMV of node i (gemv_q) keeps x's planes in shared memory
// (matmul_gemv_qdot_sx): rows of at most LLM_VULKAN_GEMV_SX_MAX_K (default 8192)
// weights, as longer ones copy so much x per workgroup that they ran slower (H200, 7b
// down, K = 11008: 27.2 µs against 17.7), while 1b's down (K = 8192) gained (tg128
// 1,105 -> 1,137).
bool FusionRules::uses_shared_x(size_t i) const {
  static const int64_t sx_max_k = [] {
    const char* e = std::getenv("LLM_VULKAN_GEMV_SX_MAX_K");
    return e ? std::atoll(e) : int64_t{8192};
  }();
  const int64_t T = nodes_[i].inputs[0].shape.rows(), K = nodes_[i].inputs[0].shape.row_len();
  // At the default workgroup size, with the most partial sums (gate and up, 2 rows).
  return set_.shared_x && K <= sx_max_k &&
         gemv_shared_bytes(T, K, 2 * 2 * static_cast<uint64_t>(T), kGemvQThreadsShared) <=
             phys_.props.limits.maxComputeSharedMemorySize;
}
// Whether RmsNorm node i runs inside the GEMV dispatch of node i + 1 (each workgroup
// normalizes x itself, NORM in matmul_gemv_q.glsl): that GEMV keeps x in shared
// memory, only the matmuls it computes read the norm's output (as their x), and
// nothing that dispatch writes touches the norm's input or weight.
// LLM_VULKAN_NORM_FUSE=0 keeps the norm apart (for measuring).
bool FusionRules::norm_into_gemv(size_t i) const {
  static const bool on = [] {
    const char* e = std::getenv("LLM_VULKAN_NORM_FUSE");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  const size_t m = i + 1;
  if (!on || m >= nodes_.size() || !nodes_[m].node || !gemv_q(m) || !uses_shared_x(m)) return false;
  const BoundNode& nb = nodes_[i];
  if (nb.node->op != Op::RmsNorm || nb.inputs.size() != 2 || nb.node->inputs.empty() ||
      nodes_[m].node->inputs[0] != nb.node->output)
    return false;
  const TensorRef &x = nb.inputs[0], &w = nb.inputs[1];
  const int64_t T = x.shape.rows(), K = x.shape.row_len();
  // The shader reads the weight 4 elements at a time.
  if (x.dtype != DType::F32 || x.offset % 16 || K % 32 || T > 8 ||
      w.offset % (w.dtype == DType::F32 ? 16 : 8) ||
      (w.dtype != DType::F32 && w.dtype != DType::F16 && w.dtype != DType::BF16) ||
      !(region(nodes_[m].inputs[0]) == region(nb.output)))
    return false;
  // The matmuls of the GEMV dispatch.
  const GemvGroup g = gemv_group(m);
  const size_t last = g.glu ? m + 1 : m + g.segs - 1;
  for (size_t j = m; j < nodes_.size(); j++) {
    if (!nodes_[j].node) continue;
    const std::vector<TensorId>& ins = nodes_[j].node->inputs;
    for (size_t k = 0; k < ins.size(); k++)
      if (ins[k] == nb.node->output && !(j <= last && k == 0)) return false;
  }
  // What the dispatch may write: those matmuls' outputs and the nodes_ it may fuse after
  // them (the SiluMul after gate/up, an Add after one matrix; ropes and cache appends
  // after q/k/v). A Sample after the head has a dispatch of its own, so its id may
  // take the dead norm input's memory.
  const size_t written_to = std::min(nodes_.size(), last + (last == m + 2 ? 5 : 2));
  for (size_t j = m; j < written_to; j++) {
    if (!nodes_[j].node || (j > last && nodes_[j].node->op == Op::Sample)) continue;
    if (region(nodes_[j].output).overlaps(region(x)) ||
        region(nodes_[j].output).overlaps(region(w)))
      return false;
  }
  return true;
}
// Whether node i + 1 appends node i's rope output to an f32 cache, which the rope
// dispatch can write without races (the cache overlaps nothing the rope touches).
bool FusionRules::rope_store_fusable(size_t i) const {
  if (i + 1 >= nodes_.size()) return false;
  const BoundNode &r = nodes_[i], &kv = nodes_[i + 1];
  if (!kv.node || kv.node->op != Op::KvAppend || kv.inputs.size() != 3 || kv.node->inputs.empty() ||
      kv.node->inputs[0] != r.node->output || kv.output.dtype != DType::F32 ||
      kv.output.shape.row_len() != r.output.shape.row_len() || kv.output.offset % 4 != 0)
    return false;
  const Region cache = region(kv.output);
  for (const TensorRef* t : {&r.inputs[0], &r.inputs[1], &r.inputs[2], &r.output, &kv.inputs[1]})
    if (cache.overlaps(region(*t))) return false;
  return true;
}
// Whether q/k/v matmuls at i..i + 2 (one GEMV dispatch) are followed by Rope(q),
// Rope(k), KvAppend(rotated k) and KvAppend(v), which that dispatch can then compute
// (matmul_gemv_qdot_rope, integer dots only): one rope setting and position and slot
// tensor for both, caches of one dtype, and outputs that overlap nothing else the
// dispatch touches (a rope's output may be its input exactly).
int FusionRules::rope_kv_fusable(size_t i) const {
  if (i + 6 >= nodes_.size()) return -1;
  for (size_t j = i; j <= i + 6; j++)
    if (!nodes_[j].node || nodes_[j].node->inputs.size() != nodes_[j].inputs.size()) return -1;
  const BoundNode &rq = nodes_[i + 3], &rk = nodes_[i + 4], &ak = nodes_[i + 5],
                  &av = nodes_[i + 6];
  if (rq.node->op != Op::Rope || rk.node->op != Op::Rope || ak.node->op != Op::KvAppend ||
      av.node->op != Op::KvAppend || rq.inputs.size() != 3 || rk.inputs.size() != 3 ||
      ak.inputs.size() != 3 || av.inputs.size() != 3)
    return -1;
  const Node &q = *rq.node, &k = *rk.node, &a = *ak.node, &v = *av.node;
  const OpParams &pq = q.params, &pk = k.params;
  const int64_t T = nodes_[i].inputs[0].shape.rows();
  const int64_t nq = nodes_[i].output.shape.row_len(), nk = nodes_[i + 1].output.shape.row_len(),
                nv = nodes_[i + 2].output.shape.row_len();
  if (q.inputs[0] != nodes_[i].node->output || k.inputs[0] != nodes_[i + 1].node->output ||
      a.inputs[0] != k.output || v.inputs[0] != nodes_[i + 2].node->output ||
      q.inputs[1] != k.inputs[1] || q.inputs[2] != k.inputs[2] || a.inputs[1] != v.inputs[1] ||
      pq.head_dim != pk.head_dim || pq.rot_dims != pk.rot_dims || pq.rope_style != pk.rope_style ||
      pq.head_dim % 2 != 0 || pq.rot_dims % 2 != 0 || pq.rot_dims > pq.head_dim ||
      int64_t{pq.n_heads} * pq.head_dim != nq || int64_t{pk.n_heads} * pk.head_dim != nk ||
      nv % 2 != 0 || ak.output.dtype != av.output.dtype || ak.output.shape.row_len() != nk ||
      av.output.shape.row_len() != nv || ak.output.shape.rows() != av.output.shape.rows() ||
      rq.inputs[1].shape.numel() < T || ak.inputs[1].shape.numel() < T ||
      rq.inputs[1].dtype != DType::I32 || rq.inputs[2].dtype != DType::F32 ||
      ak.inputs[1].dtype != DType::I32)
    return -1;
  const DType ct = ak.output.dtype;
  if (ct != DType::F32 && ct != DType::F16 && ct != DType::BF16) return -1;
  if (rq.output.offset % 4 || rk.output.offset % 4 || ak.output.offset % 4 || av.output.offset % 4)
    return -1;
  // Not x itself: the dispatch reads its planes (the outputs may take x's place).
  std::vector<Region> reads = {region(rq.inputs[1]), region(rq.inputs[2]), region(ak.inputs[1])};
  for (size_t j = i; j < i + 3; j++) reads.push_back(region(nodes_[j].inputs[1]));
  const Region prods[3] = {region(nodes_[i].output), region(nodes_[i + 1].output),
                           region(nodes_[i + 2].output)};
  const Region outs[4] = {region(rq.output), region(rk.output), region(ak.output),
                          region(av.output)};
  for (int o = 0; o < 4; o++) {
    for (const Region& r : reads)
      if (r.overlaps(outs[o])) return -1;
    for (int o2 = 0; o2 < o; o2++)
      if (outs[o2].overlaps(outs[o])) return -1;
  }
  // The products (and the rotated k) are written unless they share memory with
  // another output (the planner reuses a dead q for the rotated k, say); then nothing
  // after the group may read them.
  auto read_after = [&](TensorId t) { return read_from(i + 7, t); };
  // own: the tensor; mine: the output its thread writes right after it (an exact
  // overlap there is the same element, written in order).
  auto clashes = [&](const Region& own, int mine) {
    for (int o = 0; o < 4; o++)
      if (own.overlaps(outs[o]) && !(o == mine && own == outs[o])) return true;
    return false;
  };
  int mask = 0;
  for (int m = 0; m < 3; m++) {
    if (!clashes(prods[m], m < 2 ? m : -1)) {
      mask |= 1 << m;
    } else if (read_after(nodes_[i + m].node->output)) {
      return -1;
    }
  }
  // The rotated k (outs[1]) against the products written.
  bool k_clash = false;
  for (int m = 0; m < 3; m++)
    if ((mask >> m & 1) && outs[1].overlaps(prods[m]) && !(m == 1 && outs[1] == prods[1]))
      k_clash = true;
  if (!k_clash)
    mask |= 8;
  else if (read_after(k.output))
    return -1;
  return mask;
}

}  // namespace vk
}  // namespace llm
