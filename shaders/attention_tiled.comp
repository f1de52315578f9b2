// Causal attention over the paged KV cache for many tokens (prefill): a workgroup per
// (tile of 32 consecutive tokens, query head), so each K/V row read from the cache
// serves the tile's 32 queries instead of one (attention.comp: a workgroup per token).
// Keys go in chunks of BKEY through shared memory, in four phases a chunk:
//   scores   a thread per (2 query rows, BKEY / 8 keys) accumulates q·k over the head
//            dims from shared memory (each q and k vec4 read serves several products);
//   softmax  4 threads a row fold the chunk's scores into the row's running maximum
//            and turn them into probabilities (exact online rescaling), while V's chunk
//            is loaded over K's;
//   output   a thread per (4 rows, 8 dims) adds probability × V to its accumulators.
// Tokens of one tile that belong to different sequences take one pass over the keys per
// sequence. Tiles are taken last first: under a causal mask they have the most keys.
// Heads of up to 128 dims, a multiple of 4, no sliding window (the host checks; other
// cases take attention.comp).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define WG 128
#define BQ 32                  // query rows per tile
#define MAXD 128               // head dims at most
#define RS4 (MAXD / 4 + 1)     // shared row stride in vec4s: rows start in different banks
layout(local_size_x = WG) in;
layout(constant_id = 0) const int KDT = DT_F32;
layout(constant_id = 1) const int VDT = DT_F32;
// 1: f32 K and V rows 16-byte aligned, read as vec4; 2: 16-bit K and V (one dtype)
// 8-byte aligned, four halves a load; 0: four scalar loads.
layout(constant_id = 2) const int KV_VEC4 = 0;
// Keys per chunk: 32 (39 KiB of shared memory), or 16 (28 KiB).
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
#define SS (BKEY + 1u)  // score row stride

shared vec4 qs[BQ * RS4];
shared vec4 kvs[BKEY * RS4];  // the chunk's K rows, then its V rows
shared float ss[BQ * SS];     // the chunk's scores, then probabilities, a row per query
shared float row_max_part[WG];
shared float row_alpha[BQ];   // the rescaling of each row's accumulators for the chunk
shared int row_seq[BQ];       // -1: no token, or one that does not index the table
shared int row_pos[BQ];
shared bool key_ok[BKEY];

vec4 load_k4(uint at) {
  if (KV_VEC4 == 1) return kc4[(p.k_off + at) / 4u];
  if (KV_VEC4 == 2) return halves4(kc2[(p.k_off * 2u + at) / 4u], KDT);
  vec4 x;
  for (uint e = 0u; e < 4u; e++) x[e] = LOAD_FLOAT(kc, KDT, p.k_off, at + e);
  return x;
}

vec4 load_v4(uint at) {
  if (KV_VEC4 == 1) return vc4[(p.v_off + at) / 4u];
  if (KV_VEC4 == 2) return halves4(vc2[(p.v_off * 2u + at) / 4u], VDT);
  vec4 x;
  for (uint e = 0u; e < 4u; e++) x[e] = LOAD_FLOAT(vc, VDT, p.v_off, at + e);
  return x;
}

// The cache row of key j of sequence s, or -1 (a page outside the cache).
int key_row(int s, uint j) {
  const int page = table[p.table_off + uint(s) * p.max_pages + j / p.page_size];
  if (page < 0 || uint(page) >= p.cache_rows / p.page_size) return -1;
  return page * int(p.page_size) + int(j % p.page_size);
}

// Keys base .. base + BKEY - 1 of sequence s (zeros past last_pos or on a bad page) into
// kvs, K's or V's.
void load_chunk(bool v, int s, uint base, uint last_pos, uint kv_row, uint kv_off) {
  const uint D4 = p.D / 4u;
  for (uint i = gl_LocalInvocationID.x; i < BKEY * D4; i += WG) {
    const uint r = i / D4, d4 = i % D4, j = base + r;
    vec4 x = vec4(0.0);
    const int row = j <= last_pos ? key_row(s, j) : -1;
    if (row >= 0) {
      const uint at = uint(row) * kv_row + kv_off + 4u * d4;
      x = v ? load_v4(at) : load_k4(at);
    }
    kvs[r * RS4 + d4] = x;
  }
}

void main() {
  const uint group = flat_group();
  const uint n_tiles = (p.T + BQ - 1u) / BQ;
  if (group >= n_tiles * p.H) return;
  const uint tile = n_tiles - 1u - group / p.H, h = group % p.H;
  const uint tid = gl_LocalInvocationID.x;
  const uint t0 = tile * BQ, t_end = min(p.T, t0 + BQ);
  const uint D = p.D, D4 = D / 4u, kv_row = p.Hkv * D, kv_off = (h / (p.H / p.Hkv)) * D;
  const float cap = p.softcap;

  if (tid < BQ) {
    const uint t = t0 + tid;
    int s = -1, pos = -1;
    if (t < t_end) {
      s = seq_ids[p.seq_off + t];
      pos = positions[p.pos_off + t];
      if (s < 0 || uint(s) >= p.n_seqs || pos < 0 || uint(pos) / p.page_size >= p.max_pages) {
        atomicOr(err_bits[0], ERR_SEQ_OR_POS);
        s = -1;
      }
    }
    row_seq[tid] = s;
    row_pos[tid] = s >= 0 ? pos : -1;
  }
  for (uint i = tid; i < BQ * D4; i += WG) {
    const uint r = i / D4, d4 = i % D4, t = t0 + r;
    vec4 x = vec4(0.0);
    if (t < t_end) {
      const uint at = p.q_off + (t * p.H + h) * D + 4u * d4;
      x = vec4(q[at], q[at + 1u], q[at + 2u], q[at + 3u]);
    }
    qs[r * RS4 + d4] = x;
  }

  // Scores: rows sr and sr + 16, keys sk + 8 j. Softmax: row xr, keys xq * BKEY / 4 on.
  // Output: rows orow + 8 i, dims of vec4s od and od + 16.
  const uint sr = tid / 8u, sk = tid % 8u;
  const uint xr = tid / 4u, xq = tid % 4u, xn = BKEY / 4u;
  const uint orow = tid / 16u, od = tid % 16u;
  float m_row = NEG_INF;  // xr's running maximum (the same in its 4 threads)
  vec4 acc[4][2];
  float l[4];
  for (uint i = 0u; i < 4u; i++) {
    acc[i][0] = vec4(0.0);
    acc[i][1] = vec4(0.0);
    l[i] = 0.0;
  }
  barrier();  // row_seq, row_pos and qs

  // One pass over the keys per sequence among the tile's valid tokens (almost always
  // one), at the first of its tokens. Shared values: every thread takes the same path.
  for (uint u = 0u; u < BQ; u++) {
    const int s = row_seq[u];
    if (s < 0) continue;
    bool seen = false;
    int last_pos = -1;
    for (uint v = 0u; v < BQ; v++) {
      if (row_seq[v] != s) continue;
      if (v < u) seen = true;
      last_pos = max(last_pos, row_pos[v]);
    }
    if (seen) continue;
    for (uint base = 0u; base <= uint(last_pos); base += BKEY) {
      barrier();  // the previous chunk's reads of kvs, ss and row_alpha are done
      if (tid < BKEY) {
        const uint j = base + tid;
        const bool ok = j <= uint(last_pos) && key_row(s, j) >= 0;
        if (j <= uint(last_pos) && !ok) atomicOr(err_bits[0], ERR_PAGE);
        key_ok[tid] = ok;
      }
      load_chunk(false, s, base, uint(last_pos), kv_row, kv_off);
      barrier();

      vec4 dot4[2][4];
      for (uint i = 0u; i < 2u; i++)
        for (uint j = 0u; j < 4u; j++) dot4[i][j] = vec4(0.0);
      for (uint d4 = 0u; d4 < D4; d4++) {
        const vec4 q0 = qs[sr * RS4 + d4], q1 = qs[(sr + 16u) * RS4 + d4];
        for (uint j = 0u; j < BKEY / 8u; j++) {
          const vec4 k = kvs[(sk + 8u * j) * RS4 + d4];
          dot4[0][j] += q0 * k;
          dot4[1][j] += q1 * k;
        }
      }
      for (uint i = 0u; i < 2u; i++) {
        const uint r = sr + 16u * i;
        for (uint j = 0u; j < BKEY / 8u; j++) {
          const uint k = sk + 8u * j;
          float sc = NEG_INF;
          if (row_seq[r] == s && key_ok[k] && int(base + k) <= row_pos[r]) {
            const vec4 d = dot4[i][j];
            sc = ((d.x + d.y) + (d.z + d.w)) * p.scale;
            if (cap > 0.0) sc = cap * tanh_accurate(sc / cap);
          }
          ss[r * SS + k] = sc;
        }
      }
      barrier();  // scores done: K's rows are free for V's

      load_chunk(true, s, base, uint(last_pos), kv_row, kv_off);
      float mx = NEG_INF;
      for (uint k = xq * xn; k < (xq + 1u) * xn; k++) mx = max(mx, ss[xr * SS + k]);
      row_max_part[tid] = mx;
      barrier();

      const float m_chunk = max(max(row_max_part[xr * 4u], row_max_part[xr * 4u + 1u]),
                                max(row_max_part[xr * 4u + 2u], row_max_part[xr * 4u + 3u]));
      const float m_new = max(m_row, m_chunk);
      for (uint k = xq * xn; k < (xq + 1u) * xn; k++) {
        const float sc = ss[xr * SS + k];
        ss[xr * SS + k] = sc == NEG_INF ? 0.0 : exp(sc - m_new);
      }
      // 0 while the row has had no key (its accumulators are zero anyway).
      if (xq == 0u) row_alpha[xr] = m_row == NEG_INF ? 0.0 : exp(m_row - m_new);
      m_row = m_new;
      barrier();  // probabilities, row_alpha and V's rows

      for (uint i = 0u; i < 4u; i++) {
        const float a = row_alpha[orow + 8u * i];
        acc[i][0] *= a;
        acc[i][1] *= a;
        l[i] *= a;
      }
      for (uint k = 0u; k < BKEY; k++) {
        const vec4 v0 = od < D4 ? kvs[k * RS4 + od] : vec4(0.0);
        const vec4 v1 = od + 16u < D4 ? kvs[k * RS4 + od + 16u] : vec4(0.0);
        for (uint i = 0u; i < 4u; i++) {
          const float pr = ss[(orow + 8u * i) * SS + k];
          acc[i][0] += pr * v0;
          acc[i][1] += pr * v1;
          l[i] += pr;
        }
      }
    }
  }

  for (uint i = 0u; i < 4u; i++) {
    const uint r = orow + 8u * i, t = t0 + r;
    if (t >= t_end) continue;
    const bool ok = row_seq[r] >= 0 && l[i] > 0.0;
    for (uint half_ = 0u; half_ < 2u; half_++) {
      const uint d4 = od + 16u * half_;
      if (d4 >= D4) continue;
      const vec4 o = ok ? acc[i][half_] / l[i] : vec4(0.0);
      const uint at = p.out_off + (t * p.H + h) * D + 4u * d4;
      for (uint e = 0u; e < 4u; e++) outv[at + e] = o[e];
    }
  }
}
