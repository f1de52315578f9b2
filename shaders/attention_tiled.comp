// Causal attention over the paged KV cache for many tokens (prefill): a workgroup per
// (tile of 16 consecutive tokens, query head), so each K/V row read from the cache
// serves the tile's 16 queries instead of one (attention.comp: a workgroup per token).
// Keys go in chunks of BKEY through shared memory: a thread per (query row, BKEY / 8
// keys) computes the scores q·k, then each thread folds the chunk into its row's
// online softmax (running max and sum, exact rescaling) and its 16 output dims.
// Tokens of one tile that belong to different sequences take one pass over the keys per
// sequence. Heads of up to 128 dims, no sliding window (the host checks; other cases
// take attention.comp).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define WG 128
#define BQ 16           // query rows per tile
#define MAXD 128        // head dims at most
#define RS (MAXD + 4)   // shared row stride (floats): 16-byte rows, 4 banks apart
#define PER_T (MAXD / 8) // output dims per thread
layout(local_size_x = WG) in;
layout(constant_id = 0) const int KDT = DT_F32;
layout(constant_id = 1) const int VDT = DT_F32;
// 1: f32 K and V rows 16-byte aligned with D % 4 == 0, read as vec4; 2: 16-bit K and V
// (one dtype) 8-byte aligned, four halves a load.
layout(constant_id = 2) const int KV_VEC4 = 0;
// Keys per chunk: 32, or 16 where shared memory is under 44 KiB.
layout(constant_id = 3) const uint BKEY = 32;
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer KC { uint kc[]; };
layout(std430, binding = 1) readonly buffer KC4 { vec4 kc4[]; };
layout(std430, binding = 2) readonly buffer VC { uint vc[]; };
layout(std430, binding = 2) readonly buffer VC4 { vec4 vc4[]; };
layout(std430, binding = 1) readonly buffer KC2 { uvec2 kc2[]; };
layout(std430, binding = 2) readonly buffer VC2 { uvec2 vc2[]; };
layout(std430, binding = 3) readonly buffer Pos { int positions[]; };
layout(std430, binding = 4) readonly buffer Seq { int seq_ids[]; };
layout(std430, binding = 5) readonly buffer Table { int table[]; };
layout(std430, binding = 6) writeonly buffer Out { float outv[]; };
layout(std430, binding = 7) buffer Err { uint err_bits[]; };
layout(push_constant) uniform P {
  uint q_off, k_off, v_off, pos_off, seq_off, table_off, out_off;
  uint T, H, Hkv, D, window, page_size, n_seqs, max_pages, cache_rows;
  float scale, softcap;
} p;

#define NEG_INF uintBitsToFloat(0xff800000u)

shared float qs[BQ * RS];
shared float ks[BKEY * RS];
shared float vs[BKEY * RS];
shared float ss[BQ * (BKEY + 1u)];  // the chunk's scores, a row per query
shared bool key_ok[BKEY];

// Whether token t's sequence id and position index the block table.
bool row_valid(uint t) {
  const int s = seq_ids[p.seq_off + t], pos = positions[p.pos_off + t];
  return s >= 0 && uint(s) < p.n_seqs && pos >= 0 && uint(pos) / p.page_size < p.max_pages;
}

void main() {
  const uint group = flat_group();
  const uint n_tiles = (p.T + BQ - 1u) / BQ;
  if (group >= n_tiles * p.H) return;
  const uint tile = group / p.H, h = group % p.H;
  const uint tid = gl_LocalInvocationID.x, qi = tid / 8u, lane = tid % 8u;
  const uint t0 = tile * BQ, t_end = min(p.T, t0 + BQ);
  const uint D = p.D, kv_row = p.Hkv * D, kv_off = (h / (p.H / p.Hkv)) * D;
  const uint n_pages = p.cache_rows / p.page_size;
  const uint t = t0 + qi;
  const bool mine = t < t_end && row_valid(t);
  if (t < t_end && !mine && lane == 0u) atomicOr(err_bits[0], ERR_SEQ_OR_POS);
  const int my_seq = mine ? seq_ids[p.seq_off + t] : -1;
  const int my_pos = mine ? positions[p.pos_off + t] : -1;

  for (uint i = tid; i < BQ * (MAXD / 4u); i += WG) {
    const uint r = i / (MAXD / 4u), d = 4u * (i % (MAXD / 4u));
    for (uint e = 0u; e < 4u; e++)
      qs[r * RS + d + e] = t0 + r < t_end && d + e < D ? q[p.q_off + ((t0 + r) * p.H + h) * D + d + e] : 0.0;
  }

  float acc[PER_T];
  for (uint i = 0u; i < PER_T; i++) acc[i] = 0.0;
  float m = NEG_INF, l = 0.0;
  const float cap = p.softcap;

  // One pass over the keys per sequence among the tile's valid tokens (almost always
  // one), at the first of its tokens.
  for (uint u = t0; u < t_end; u++) {
    if (!row_valid(u)) continue;
    const int s = seq_ids[p.seq_off + u];
    bool seen = false;
    int last_pos = -1;
    for (uint v = t0; v < t_end; v++) {
      if (!row_valid(v) || seq_ids[p.seq_off + v] != s) continue;
      if (v < u) seen = true;
      last_pos = max(last_pos, positions[p.pos_off + v]);
    }
    if (seen) continue;
    const bool in_seq = mine && my_seq == s;
    for (uint base = 0u; base <= uint(last_pos); base += BKEY) {
      barrier();  // the previous chunk's reads of ks, vs and ss are done
      if (tid < BKEY) {
        const uint j = base + tid;
        bool ok = j <= uint(last_pos);
        if (ok) {
          const int page = table[p.table_off + uint(s) * p.max_pages + j / p.page_size];
          ok = page >= 0 && uint(page) < n_pages;
          if (!ok) atomicOr(err_bits[0], ERR_PAGE);
        }
        key_ok[tid] = ok;
      }
      for (uint i = tid; i < BKEY * (MAXD / 4u); i += WG) {
        const uint r = i / (MAXD / 4u), d = 4u * (i % (MAXD / 4u)), j = base + r;
        vec4 kv = vec4(0.0), vv = vec4(0.0);
        if (j <= uint(last_pos) && d < D) {
          const int page = table[p.table_off + uint(s) * p.max_pages + j / p.page_size];
          if (page >= 0 && uint(page) < n_pages) {
            const uint at = (uint(page) * p.page_size + j % p.page_size) * kv_row + kv_off + d;
            if (KV_VEC4 == 1) {
              kv = kc4[(p.k_off + at) / 4u];
              vv = vc4[(p.v_off + at) / 4u];
            } else if (KV_VEC4 == 2) {
              kv = halves4(kc2[(p.k_off * 2u + at) / 4u], KDT);
              vv = halves4(vc2[(p.v_off * 2u + at) / 4u], VDT);
            } else {
              for (uint e = 0u; e < 4u; e++) {
                kv[e] = d + e < D ? LOAD_FLOAT(kc, KDT, p.k_off, at + e) : 0.0;
                vv[e] = d + e < D ? LOAD_FLOAT(vc, VDT, p.v_off, at + e) : 0.0;
              }
            }
          }
        }
        for (uint e = 0u; e < 4u; e++) {
          ks[r * RS + d + e] = kv[e];
          vs[r * RS + d + e] = vv[e];
        }
      }
      barrier();
      // Scores: keys lane, lane + 8, ... of this row.
      for (uint k = lane; k < BKEY; k += 8u) {
        const uint j = base + k;
        float sc = NEG_INF;
        if (in_seq && key_ok[k] && int(j) <= my_pos) {
          vec4 d4 = vec4(0.0);
          for (uint d = 0u; d < D; d += 4u)
            d4 += vec4(qs[qi * RS + d], qs[qi * RS + d + 1u], qs[qi * RS + d + 2u],
                       qs[qi * RS + d + 3u]) *
                  vec4(ks[k * RS + d], ks[k * RS + d + 1u], ks[k * RS + d + 2u], ks[k * RS + d + 3u]);
          sc = ((d4.x + d4.y) + (d4.z + d4.w)) * p.scale;
          if (cap > 0.0) sc = cap * tanh_accurate(sc / cap);
        }
        ss[qi * (BKEY + 1u) + k] = sc;
      }
      barrier();
      if (!in_seq) continue;
      float mx = NEG_INF;
      for (uint k = 0u; k < BKEY; k++) mx = max(mx, ss[qi * (BKEY + 1u) + k]);
      if (mx == NEG_INF) continue;  // no key of this chunk for this row
      const float m_new = max(m, mx);
      const float alpha = exp(m - m_new);  // 0 while m is -inf
      l *= alpha;
      for (uint i = 0u; i < PER_T; i++) acc[i] *= alpha;
      for (uint k = 0u; k < BKEY; k++) {
        const float sc = ss[qi * (BKEY + 1u) + k];
        if (sc == NEG_INF) continue;
        const float pr = exp(sc - m_new);
        l += pr;
        for (uint i = 0u; i < PER_T; i++) acc[i] += pr * vs[k * RS + lane + 8u * i];
      }
      m = m_new;
    }
  }

  if (t < t_end)
    for (uint i = 0u; i < PER_T; i++) {
      const uint d = lane + 8u * i;
      if (d < D) outv[p.out_off + (t * p.H + h) * D + d] = mine && l > 0.0 ? acc[i] / l : 0.0;
    }
}
