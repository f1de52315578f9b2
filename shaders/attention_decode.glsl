// Attention for few tokens (decode; heads of up to 128 dims, a multiple of 16): a
// workgroup per (token, query head, split of the context), built so that a chunk of
// keys (KPC, a quarter of the workgroup's threads) costs two waits for memory instead
// of one per few keys. q·k: four threads per key, each a quarter of the head with all
// its loads issued at once, summed in shared memory. p·V: groups of 32 threads
// (GROUPS) take every GROUPS-th key of the chunk, a thread 4 dims of it, eight keys'
// loads at once; the groups' sums are added at the end.
// The online softmax, the splits, the merge by the last split and its
// rounding for the o GEMV (QUANT) are attention.comp's (attention_common.glsl).
//
// The body of attention_decode.comp and, with SUBGROUP_CHUNK, of
// attention_decode_sg.comp, whose workgroups of 256 take chunks of 64 keys (a split of
// the default 64 keys is then one chunk: one round of waits instead of two), and
// whose chunk max and sum are subgroup reductions over the (up to eight) subgroups
// that hold the chunk, their parts met in shared memory: three barriers instead of
// fourteen for trees.
#include "common.glsl"
#ifndef WG
#define WG 128
#endif
#define MAX_D 128
#define PER_T 1
#ifndef KPC
#define KPC 32  // keys per chunk
#endif
#define LPK (WG / KPC)    // threads per key for q·k
#define GROUPS (WG / 32)  // key groups for p·V
layout(local_size_x = WG) in;
#include "attention_common.glsl"
// 1: f32 K and V rows 16-byte aligned, read as vec4; 2: 16-bit K and V (one dtype)
// 8-byte aligned, four halves a load.
layout(constant_id = 5) const int KV_VEC4 = 0;
layout(std430, binding = 2) readonly buffer VC4 { vec4 vc4[]; };
layout(std430, binding = 1) readonly buffer KC2 { uvec2 kc2[]; };
layout(std430, binding = 2) readonly buffer VC2 { uvec2 vc2[]; };

shared float qk_part[WG];
shared float probs[KPC];
shared int slot_of[KPC];
shared vec4 group_acc[GROUPS][MAX_D / 4];
shared float chunk_red[8];  // SUBGROUP_CHUNK: each subgroup's max, then sum, of the chunk

vec4 k_at(uint e) {
  if (KV_VEC4 == 1) return kc4[(p.k_off + e) / 4u];
  if (KV_VEC4 == 2) return halves4(kc2[(p.k_off * 2u + e) / 4u], KDT);
  return vec4(LOAD_FLOAT(kc, KDT, p.k_off, e), LOAD_FLOAT(kc, KDT, p.k_off, e + 1u),
              LOAD_FLOAT(kc, KDT, p.k_off, e + 2u), LOAD_FLOAT(kc, KDT, p.k_off, e + 3u));
}

vec4 v_at(uint e) {
  if (KV_VEC4 == 1) return vc4[(p.v_off + e) / 4u];
  if (KV_VEC4 == 2) return halves4(vc2[(p.v_off * 2u + e) / 4u], VDT);
  return vec4(LOAD_FLOAT(vc, VDT, p.v_off, e), LOAD_FLOAT(vc, VDT, p.v_off, e + 1u),
              LOAD_FLOAT(vc, VDT, p.v_off, e + 2u), LOAD_FLOAT(vc, VDT, p.v_off, e + 3u));
}

void main() {
  const uint group = flat_group();
#ifdef O_WORKERS
  if (group >= p.T * p.H * SPLITS) {
    if (group < p.T * p.H * SPLITS + p.H * p.o_parts) o_worker(group - p.T * p.H * SPLITS);
    return;
  }
#endif
  if (group >= p.T * p.H * SPLITS) return;
  const uint item = group / SPLITS, split = group % SPLITS;
  const uint tid = gl_LocalInvocationID.x;
  const uint t = item / p.H, h = item % p.H;
  const uint D = p.D;
  float acc[PER_T];
  acc[0] = 0.0;
  const int pos = positions[p.pos_off + t];
  const int s = seq_ids[p.seq_off + t];
  // q's element (D <= MAX_D <= WG: one a thread) loaded with the position and the
  // sequence, in one trip to memory instead of a second one after their check.
  const float q_elem = tid < D ? qry[p.q_off + item * D + tid] : 0.0;
  if (s < 0 || uint(s) >= p.n_seqs || pos < 0 || uint(pos) / p.page_size >= p.max_pages) {
    if (tid == 0u) atomicOr(err_bits[0], ERR_SEQ_OR_POS);
    finish(item, split, NEG_INF, 0.0, acc);
    if (SPLITS > 1u) merge_if_last(item);
    return;
  }
  const uint kv_row = p.Hkv * D;
  const uint kv_off = (h / (p.H / p.Hkv)) * D;
  const uint n_pages = p.cache_rows / p.page_size;
  if (tid < D) qs[tid] = q_elem;
  barrier();

  // This split's keys: [lo, hi] of the token's context lo0..pos cut in SPLITS parts.
  const uint lo0 = p.window > 0u ? uint(max(0, pos - int(p.window) + 1)) : 0u;
  const uint per = (uint(pos) - lo0 + SPLITS) / SPLITS;
  const uint lo = lo0 + split * per;
  const uint hi = min(uint(pos), lo + per - 1u);
  // q·k roles: key kq of the chunk, quarter qq of the head (dq dims, a multiple of 4).
  const uint kq = tid / LPK, qq = tid % LPK, dq = D / LPK;
  // p·V roles: key group g, dims 4 lane .. 4 lane + 3 (lanes past D / 4 idle).
  const uint g = tid / 32u, lane = tid % 32u;
  const uint dv = min(4u * lane, D - 4u);
  float m = NEG_INF, l = 0.0;
  vec4 av = vec4(0.0);
  for (uint base = lo; base <= hi; base += KPC) {
    const uint j = base + kq;
    int slot = -1;
    float part_dot = 0.0;
    if (j <= hi) {
      const int page = table[p.table_off + uint(s) * p.max_pages + j / p.page_size];
      if (page < 0 || uint(page) >= n_pages) {
        if (qq == 0u) atomicOr(err_bits[0], ERR_PAGE);
      } else {
        slot = page * int(p.page_size) + int(j % p.page_size);
        const uint kb = uint(slot) * kv_row + kv_off + qq * dq;
        // Every load of the quarter first (indices clamped into it), then the sums.
        vec4 kv[MAX_D / LPK / 4];
        [[unroll]] for (uint i = 0u; i < MAX_D / LPK / 4u; i++) kv[i] = k_at(kb + min(4u * i, dq - 4u));
        vec4 s4 = vec4(0.0);
        [[unroll]] for (uint i = 0u; i < MAX_D / LPK / 4u; i++) {
          if (4u * i >= dq) break;
          const uint e = qq * dq + 4u * i;
          s4 += vec4(qs[e], qs[e + 1u], qs[e + 2u], qs[e + 3u]) * kv[i];
        }
        part_dot = (s4.x + s4.y) + (s4.z + s4.w);
      }
    }
    qk_part[tid] = part_dot;
    if (qq == 0u) slot_of[kq] = slot;
    barrier();
    float sc = NEG_INF;
    if (tid < KPC && slot_of[tid] >= 0) {
      const float qk = (qk_part[LPK * tid] + qk_part[LPK * tid + 1u]) +
                       (qk_part[LPK * tid + 2u] + qk_part[LPK * tid + 3u]);
      sc = qk * p.scale;
      if (p.softcap > 0.0) sc = p.softcap * tanh_accurate(sc / p.softcap);
    }
    float new_m, csum;
#ifdef SUBGROUP_CHUNK
    if (gl_SubgroupSize * 8u >= KPC) {
      // The chunk's lanes fill the first nsg subgroups (their other lanes pass
      // identities); their maxima, then their sums, meet in shared memory.
      const uint nsg = (KPC + gl_SubgroupSize - 1u) / gl_SubgroupSize;
      if (gl_SubgroupID < nsg) {
        const float mx = subgroupMax(sc);
        if (subgroupElect()) chunk_red[gl_SubgroupID] = mx;
      }
      barrier();
      new_m = m;
      for (uint k = 0u; k < nsg; k++) new_m = max(new_m, chunk_red[k]);
      barrier();  // chunk_red takes the sums next
      const float pr = tid < KPC && slot_of[tid] >= 0 ? exp(sc - new_m) : 0.0;
      if (tid < KPC) probs[tid] = pr;
      if (gl_SubgroupID < nsg) {
        const float sm = subgroupAdd(pr);
        if (subgroupElect()) chunk_red[gl_SubgroupID] = sm;
      }
      barrier();  // also publishes probs
      csum = 0.0;
      for (uint k = 0u; k < nsg; k++) csum += chunk_red[k];
    } else
#endif
    {
      new_m = max(m, tree_max(sc, KPC));
      const float pr = tid < KPC && slot_of[tid] >= 0 ? exp(sc - new_m) : 0.0;
      if (tid < KPC) probs[tid] = pr;
      csum = tree_sum(pr, KPC);  // its barriers also publish probs
    }
    if (new_m == NEG_INF) continue;  // every key of the chunk was skipped
    const float alpha = exp(m - new_m);
    l = l * alpha + csum;
    m = new_m;
    // p·V: this group's keys g, g + GROUPS, ... of the chunk, all loads first.
    vec4 vv[KPC / GROUPS];
    [[unroll]] for (uint i = 0u; i < KPC / GROUPS; i++) {
      const int sl = slot_of[g + GROUPS * i];
      vv[i] = sl >= 0 ? v_at(uint(sl) * kv_row + kv_off + dv) : vec4(0.0);
    }
    av *= alpha;
    [[unroll]] for (uint i = 0u; i < KPC / GROUPS; i++) av += probs[g + GROUPS * i] * vv[i];
    barrier();  // probs and slot_of are rewritten by the next chunk
  }
  // The groups' sums, then a thread per output dim (PER_T = 1: d = tid).
  if (4u * lane < D) group_acc[g][lane] = av;
  barrier();
  if (tid < D) {
    float o = 0.0;
    for (uint k = 0u; k < GROUPS; k++) o += group_acc[k][tid / 4u][tid % 4u];
    acc[0] = o;
  }
  finish(item, split, m, l, acc);
  if (SPLITS > 1u) merge_if_last(item);
}
