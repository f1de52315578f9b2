// y[T, N] = x[T, K] · Wᵀ (+ bias) for many tokens on tensor cores
// (GL_NV_cooperative_matrix): tiles of BM tokens x 128 weight rows, 256 threads in 8
// subgroups, SG_ROWS x (8 / SG_ROWS) of them, each BM / SG_ROWS x 128 / (8 / SG_ROWS)
// outputs as 16 x 16 fragments. Prefill takes tiles of 64 tokens in 1 x 8 subgroups
// (64 x 16 outputs each, four float32 accumulators): on the H200 (NVIDIA's driver) the
// products of 128-token tiles in 2 x 4 subgroups (eight accumulators each) ran at
// under half that rate, and 7b prefill went from 2,389 to 5,570 tokens/s. Decode
// batches of 16-32 tokens take 16/32-token tiles. K goes in steps of 64 through shared
// memory, the next step's tiles loaded into registers during the current step's
// products. x is rounded to f16 and the weights dequantized to f16 on the way in
// (q4_0/q8_0 rows of the backend's layout a block per thread with packed f16 math,
// other dtypes 8 values per thread, one or two 16-byte loads where K and the offset
// allow), stored 8 halves at a time; products accumulate in
// float32. An fp16 path: about 1e-3 relative error against the float32 GEMM.
//
// Split-K: with few tiles (a decode batch: N / 128 x 1 of them) the workgroups of a
// tile column take slices of K (gl_WorkGroupID.y = split * m_tiles + tile) and write
// float32 partials [split][T][N], which matmul_reduce adds in split order (with the
// bias); without a split the results and bias go straight to y.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#define BN 128
#define BK 64
#define SK (BK + 8)  // shared row stride in halves (16-byte aligned rows, fewer conflicts)
layout(local_size_x = 256) in;
layout(constant_id = 0) const int WDT = DT_F32;
layout(constant_id = 1) const int BDT = DT_F32;
layout(constant_id = 2) const int SPLIT = 0;
// 1: x rows 16-byte aligned (x_off and K multiples of 4), read as vec4.
layout(constant_id = 3) const int X_VEC4 = 0;
// Tokens per tile: 16, 32, 64 or 128.
layout(constant_id = 4) const int BM = 64;
// Rows of subgroups (1 or 2; BM / SG_M rows each, at most 64).
layout(constant_id = 5) const int SG_ROWS = 1;
// 1: float weights (f32/f16/bf16) with K a multiple of 8 and a 16-byte aligned offset,
// fetched 8 values at a time (one uvec4 of halves, two of f32) instead of value by value.
layout(constant_id = 6) const int W_VEC = 0;
// The fragment shape (the host checks the device lists it for f16 x f16 + f32), fixed
// at compile time so the fragment loops unroll and fragments stay in registers.
#define CM 16u
#define CN 16u
#define CK 16u
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer W { uint wts[]; };
layout(std430, binding = 1) readonly buffer W4 { uvec4 wts4[]; };
// Quantized weights are read through `coherent` aliases: on NVIDIA's driver such loads
// skip L1 (each workgroup copies its tiles to shared memory once), which made 7b q4's
// pp512 6% faster on the H200 (f16 weights lost 2% that way, so they stay plain).
layout(std430, binding = 1) readonly coherent buffer WQ { uint wq[]; };
layout(std430, binding = 1) readonly coherent buffer WQ4 { uvec4 wq4[]; };
layout(std430, binding = 2) readonly buffer Bias { uint bias[]; };
// y, or the partials [splits][T][N] when splits > 1.
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
  uint x_off, w_off, b_off, y_off, T, K, N, has_bias, m_tiles, splits, k_per_split;
} p;
#include "weights.glsl"

// Subgroup layout: SG_M x SG_N subgroups, each WM x WN outputs as FM x FN fragments.
const uint SG_M = uint(SG_ROWS);
const uint SG_N = 8u / SG_M;
const uint WM = uint(BM) / SG_M;
const uint WN = BN / SG_N;
const uint FM = WM / CM;  // 1..4
const uint FN = WN / CN;  // 1..2
const uint XP = (uint(BM) + 31u) / 32u;  // x rows per thread per step (8 threads per row)
const uint SKV = SK / 8u;  // shared row stride in uvec4 (8 halves)

// Tiles as f16, 8 to a uvec4, so each thread stores 16 bytes at once; the fragment
// loads index them in uvec4 units.
shared uvec4 as[128 * SKV];  // x tile, row-major [m][k]
shared uvec4 bs[BN * SKV];   // W tile [n][k]: Wᵀ column-major
shared float cs[8][CM * CN];  // a subgroup's output fragment on its way out

// The next K step's tiles, fetched into registers while the current one is multiplied
// (then stashed into shared memory): x as 8 consecutive columns of rows tid / 8 + 32 l,
// the weights as one raw quantized block (row tid / 2, half tid % 2) or 8 consecutive
// values of rows tid / 8 + 32 l of other dtypes.
vec4 rx[8];
uvec4 rq0, rq1;
float rd, rm;  // the block's scale (and q4_1's min)
float rw[32];
uvec4 rv[8];  // W_VEC: rows tid / 8 + 32 l as raw uvec4 (l for halves, 2 l, 2 l + 1 for f32)

void fetch(uint m0, uint n0, uint k0, uint k_end, uint tid) {
  [[unroll]] for (uint l = 0u; l < 4u; l++) {
    if (l >= XP) break;
    const uint r = tid / 8u + l * 32u, k = k0 + (tid % 8u) * 8u, m = m0 + r;
    if (r >= uint(BM) || m >= p.T || k >= k_end) {
      rx[2u * l] = rx[2u * l + 1u] = vec4(0.0);
    } else if (X_VEC4 != 0 && k + 8u <= k_end) {
      rx[2u * l] = x4[(p.x_off + m * p.K + k) / 4u];
      rx[2u * l + 1u] = x4[(p.x_off + m * p.K + k) / 4u + 1u];
    } else {
      const uint at = p.x_off + m * p.K + k;
      [[unroll]] for (uint e = 0u; e < 8u; e++)
        rx[2u * l + e / 4u][e % 4u] = k + e < k_end ? x[at + e] : 0.0;
    }
  }
  if (SPLIT != 0 && (WDT == DT_Q4_0 || WDT == DT_Q8_0 || WDT == DT_Q4_1)) {
    const uint n = n0 + tid / 2u, blk = k0 / 32u + tid % 2u;
    rd = rm = 0.0;  // rows and blocks past the end: zeros
    rq0 = rq1 = uvec4(0u);
    if (n < p.N && blk < k_end / 32u) {
      const uint row = p.w_off * 4u + n * quant_row_bytes(p.K);
      const uint q = (row + split_meta_bytes(p.K)) / 16u + blk * (WDT == DT_Q8_0 ? 2u : 1u);
      rd = f16_bits_to_f32(LOAD_U16(wq, row + blk * split_scale_stride()));
      if (WDT == DT_Q4_1) rm = f16_bits_to_f32(LOAD_U16(wq, row + blk * 4u + 2u));
      rq0 = wq4[q];
      if (WDT == DT_Q8_0) rq1 = wq4[q + 1u];
    }
    return;
  }
  if (W_VEC != 0) {
    // k is a multiple of 8 and so is k_end: a row's 8 values are all in or all out.
    [[unroll]] for (uint l = 0u; l < 4u; l++) {
      const uint r = tid / 8u + l * 32u, n = n0 + r, k = k0 + (tid % 8u) * 8u;
      const bool in_range = n < p.N && k < k_end;
      if (WDT == DT_F32) {
        const uint at = (p.w_off + n * p.K + k) / 4u;
        rv[2u * l] = in_range ? wts4[at] : uvec4(0u);
        rv[2u * l + 1u] = in_range ? wts4[at + 1u] : uvec4(0u);
      } else {
        rv[l] = in_range ? wts4[(p.w_off * 2u + n * p.K + k) / 8u] : uvec4(0u);
      }
    }
    return;
  }
  [[unroll]] for (uint l = 0u; l < 4u; l++) {
    const uint r = tid / 8u + l * 32u, n = n0 + r, k = k0 + (tid % 8u) * 8u;
    [[unroll]] for (uint e = 0u; e < 8u; e++)
      rw[8u * l + e] = n < p.N && k + e < k_end ? weight_at(p.w_off, n, p.K, k + e) : 0.0;
  }
}

// 1024 + q for the 4-bit q at bits 0-3 and 16-19 of v, as two halves.
f16vec2 nib2(uint v) { return unpackFloat2x16(v | 0x64006400u); }
// Two weights from the nibbles at bits 0-3 and 16-19 of v, as packed halves: (q - 8) d
// (q4_0: the product of two f16 values rounds once, as in float32 then f16), or q d + m
// (q4_1: in float32, rounded once).
uint q4_pair(uint v) {
  if (WDT == DT_Q4_1) return packFloat2x16(f16vec2((vec2(nib2(v)) - 1024.0) * rd + rm));
  return packFloat2x16((nib2(v) - f16vec2(float16_t(1032.0))) * f16vec2(float16_t(rd)));
}
uint pack2(vec2 v) { return packFloat2x16(f16vec2(v)); }

void stash(uint tid) {
  [[unroll]] for (uint l = 0u; l < 4u; l++) {
    if (l >= XP) break;
    const uint r = tid / 8u + l * 32u;
    if (r < uint(BM))
      as[r * SKV + tid % 8u] = uvec4(pack2(rx[2u * l].xy), pack2(rx[2u * l].zw),
                                     pack2(rx[2u * l + 1u].xy), pack2(rx[2u * l + 1u].zw));
  }
  if (SPLIT != 0 && (WDT == DT_Q4_0 || WDT == DT_Q8_0 || WDT == DT_Q4_1)) {
    // Row tid / 2, elements 32 (tid % 2) .. +32: four uvec4 of 8 halves.
    const uint base = (tid / 2u) * SKV + (tid % 2u) * 4u;
    if (WDT != DT_Q8_0) {
      // Word w: elements 4w..4w+3 in its low nibbles, 16+4w.. in its high ones.
      uint lo[8], hi[8];
      [[unroll]] for (uint w = 0u; w < 4u; w++) {
        const uint v = rq0[w];
        lo[2u * w] = q4_pair((v & 0xfu) | ((v & 0xf00u) << 8));
        lo[2u * w + 1u] = q4_pair(((v >> 16) & 0xfu) | ((v >> 8) & 0xf0000u));
        hi[2u * w] = q4_pair(((v >> 4) & 0xfu) | ((v << 4) & 0xf0000u));
        hi[2u * w + 1u] = q4_pair(((v >> 20) & 0xfu) | ((v >> 12) & 0xf0000u));
      }
      bs[base] = uvec4(lo[0], lo[1], lo[2], lo[3]);
      bs[base + 1u] = uvec4(lo[4], lo[5], lo[6], lo[7]);
      bs[base + 2u] = uvec4(hi[0], hi[1], hi[2], hi[3]);
      bs[base + 3u] = uvec4(hi[4], hi[5], hi[6], hi[7]);
    } else {
      [[unroll]] for (uint h = 0u; h < 2u; h++) {
        const uvec4 q = h == 0u ? rq0 : rq1;
        [[unroll]] for (uint v = 0u; v < 2u; v++) {
          uint o[4];
          [[unroll]] for (uint j = 0u; j < 4u; j++) {
            const uint word = q[2u * v + j / 2u], sh = 16u * (j % 2u);
            const float a = float(int((word >> sh) << 24) >> 24);
            const float b = float(int((word >> (sh + 8u)) << 24) >> 24);
            o[j] = packFloat2x16(f16vec2(float16_t(a * rd), float16_t(b * rd)));
          }
          bs[base + 2u * h + v] = uvec4(o[0], o[1], o[2], o[3]);
        }
      }
    }
    return;
  }
  if (W_VEC != 0) {
    // As the value-by-value path rounds them: f16 as they are, bf16 and f32 to f16.
    [[unroll]] for (uint l = 0u; l < 4u; l++) {
      const uint r = tid / 8u + l * 32u;
      if (WDT == DT_F16) {
        bs[r * SKV + tid % 8u] = rv[l];
        continue;
      }
      const vec4 a = WDT == DT_BF16 ? halves4(rv[l].xy, DT_BF16) : uintBitsToFloat(rv[2u * l]);
      const vec4 b = WDT == DT_BF16 ? halves4(rv[l].zw, DT_BF16) : uintBitsToFloat(rv[2u * l + 1u]);
      bs[r * SKV + tid % 8u] = uvec4(pack2(a.xy), pack2(a.zw), pack2(b.xy), pack2(b.zw));
    }
    return;
  }
  [[unroll]] for (uint l = 0u; l < 4u; l++) {
    const uint r = tid / 8u + l * 32u;
    bs[r * SKV + tid % 8u] =
        uvec4(pack2(vec2(rw[8u * l], rw[8u * l + 1u])), pack2(vec2(rw[8u * l + 2u], rw[8u * l + 3u])),
              pack2(vec2(rw[8u * l + 4u], rw[8u * l + 5u])), pack2(vec2(rw[8u * l + 6u], rw[8u * l + 7u])));
  }
}

void main() {
  const uint tid = gl_LocalInvocationID.x, sg = gl_SubgroupID;
  const uint split = gl_WorkGroupID.y / p.m_tiles;
  const uint n0 = gl_WorkGroupID.x * BN, m0 = (gl_WorkGroupID.y % p.m_tiles) * uint(BM);
  const uint k_begin = split * p.k_per_split, k_end = min(p.K, k_begin + p.k_per_split);
  const uint wm = (sg / SG_N) * WM, wn = (sg % SG_N) * WN;
  fcoopmatNV<32, gl_ScopeSubgroup, CM, CN> acc[4][2];
  [[unroll]] for (uint i = 0u; i < FM; i++)
    [[unroll]] for (uint j = 0u; j < FN; j++) acc[i][j] = fcoopmatNV<32, gl_ScopeSubgroup, CM, CN>(0.0);
  fetch(m0, n0, k_begin, k_end, tid);
  fcoopmatNV<16, gl_ScopeSubgroup, CM, CK> a[4];
  fcoopmatNV<16, gl_ScopeSubgroup, CK, CN> b[2];
  for (uint k0 = k_begin; k0 < k_end; k0 += BK) {
    stash(tid);
    barrier();
    if (k0 + BK < k_end) fetch(m0, n0, k0 + BK, k_end, tid);
    [[unroll]] for (uint kk = 0u; kk < BK; kk += CK) {
      [[unroll]] for (uint i = 0u; i < FM; i++)
        coopMatLoadNV(a[i], as, (wm + i * CM) * SKV + kk / 8u, SKV, false);
      [[unroll]] for (uint j = 0u; j < FN; j++)
        coopMatLoadNV(b[j], bs, (wn + j * CN) * SKV + kk / 8u, SKV, true);
      [[unroll]] for (uint i = 0u; i < FM; i++)
        [[unroll]] for (uint j = 0u; j < FN; j++) acc[i][j] = coopMatMulAddNV(a[i], b[j], acc[i][j]);
    }
    barrier();
  }
  const uint lane = gl_SubgroupInvocationID;
  const uint out_off = p.y_off + split * p.T * p.N;
  const bool add_bias = p.has_bias != 0u && p.splits == 1u;
  [[unroll]] for (uint i = 0u; i < FM; i++)
    [[unroll]] for (uint j = 0u; j < FN; j++) {
      coopMatStoreNV(acc[i][j], cs[sg], 0, CN, false);
      subgroupMemoryBarrierShared();
      subgroupBarrier();
      for (uint e = lane; e < CM * CN; e += gl_SubgroupSize) {
        const uint m = m0 + wm + i * CM + e / CN, n = n0 + wn + j * CN + e % CN;
        if (m < p.T && n < p.N) {
          const float b = add_bias ? LOAD_FLOAT(bias, BDT, p.b_off, n) : 0.0;
          y[out_off + m * p.N + n] = cs[sg][e] + b;
        }
      }
      subgroupBarrier();
    }
}
