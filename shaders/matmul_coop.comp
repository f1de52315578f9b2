// y[T, N] = x[T, K] · Wᵀ (+ bias) for many tokens on tensor cores
// (GL_NV_cooperative_matrix): 128 x 128 output tiles, 256 threads in 8 subgroups of
// 32 (2 x 4, each 64 x 32 outputs as fragments of CM x CN), K in steps of 64 through
// shared memory, the next step's tiles loaded into registers during the current
// step's products. x is rounded to f16 and the weights dequantized to f16 on the way
// in (q4_0/q8_0 rows of the backend's layout a block per thread, other dtypes element
// by element); products accumulate in float32. Results leave through a per-subgroup
// scratch tile, so edges and the bias need no special case. An fp16 path: about 1e-3
// relative error against the float32 GEMM.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_NV_cooperative_matrix : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#define BM 128
#define BN 128
#define BK 64
#define SK (BK + 8)  // shared row stride in halves (16-byte aligned rows, fewer conflicts)
#define WM 64        // outputs per subgroup
#define WN 32
layout(local_size_x = 256) in;
layout(constant_id = 0) const int WDT = DT_F32;
layout(constant_id = 1) const int BDT = DT_F32;
layout(constant_id = 2) const int SPLIT = 0;
// 1: x rows 16-byte aligned (x_off and K multiples of 4), read as vec4.
layout(constant_id = 3) const int X_VEC4 = 0;
// The fragment shape (the host checks the device lists it for f16 x f16 + f32), fixed
// at compile time so the fragment loops unroll and fragments stay in registers.
#define CM 16u
#define CN 16u
#define CK 16u
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 0) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer W { uint wts[]; };
layout(std430, binding = 1) readonly buffer W4 { uvec4 wts4[]; };
layout(std430, binding = 2) readonly buffer Bias { uint bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
  uint x_off, w_off, b_off, y_off, T, K, N, has_bias;
} p;
#include "weights.glsl"

#define FM (WM / CM)
#define FN (WN / CN)
shared float16_t as[BM * SK];  // x tile, row-major [m][k]
shared float16_t bs[BN * SK];  // W tile [n][k]: Wᵀ column-major
shared float cs[8][CM * CN];   // a subgroup's output fragment on its way out

// The next K step's tiles, fetched into registers while the current one is multiplied
// (then stashed into shared memory): x as 8 vec4 per thread (row tid / 16 + 16 l, 4
// columns), the weights as one raw quantized block (row tid / 2, half tid % 2) or 32
// values of other dtypes.
vec4 rx[8];
uvec4 rq0, rq1;
float rd;
float rw[32];

void fetch(uint m0, uint n0, uint k0, uint tid) {
  for (uint l = 0u; l < 8u; l++) {
    const uint r = tid / 16u + l * 16u, k = k0 + (tid % 16u) * 4u, m = m0 + r;
    if (m >= p.T || k >= p.K) {
      rx[l] = vec4(0.0);
    } else if (X_VEC4 != 0) {
      rx[l] = x4[(p.x_off + m * p.K + k) / 4u];
    } else {
      const uint at = p.x_off + m * p.K + k;
      for (uint e = 0u; e < 4u; e++) rx[l][e] = k + e < p.K ? x[at + e] : 0.0;
    }
  }
  if (SPLIT != 0 && (WDT == DT_Q4_0 || WDT == DT_Q8_0)) {
    const uint n = n0 + tid / 2u, blk = k0 / 32u + tid % 2u;
    rd = 0.0;  // rows and blocks past the end: zeros
    rq0 = rq1 = uvec4(0u);
    if (n < p.N && blk < p.K / 32u) {
      const uint row = p.w_off * 4u + n * quant_row_bytes(p.K);
      const uint q = (row + split_scale_bytes(p.K)) / 16u + blk * (WDT == DT_Q8_0 ? 2u : 1u);
      rd = f16_bits_to_f32(LOAD_U16(wts, row + blk * 2u));
      rq0 = wts4[q];
      if (WDT == DT_Q8_0) rq1 = wts4[q + 1u];
    }
    return;
  }
  for (uint l = 0u; l < 32u; l++) {
    const uint idx = tid + l * 256u, r = idx / BK, kk = idx % BK;
    const uint n = n0 + r, k = k0 + kk;
    rw[l] = n < p.N && k < p.K ? weight_at(p.w_off, n, p.K, k) : 0.0;
  }
}

void stash(uint tid) {
  for (uint l = 0u; l < 8u; l++) {
    const uint at = (tid / 16u + l * 16u) * SK + (tid % 16u) * 4u;
    for (uint e = 0u; e < 4u; e++) as[at + e] = float16_t(rx[l][e]);
  }
  if (SPLIT != 0 && (WDT == DT_Q4_0 || WDT == DT_Q8_0)) {
    const uint base = (tid / 2u) * SK + (tid % 2u) * 32u;
    if (WDT == DT_Q4_0) {
      for (uint j = 0u; j < 16u; j++) {
        const uint byte_ = (rq0[j / 4u] >> (8u * (j % 4u))) & 0xffu;
        bs[base + j] = float16_t(float(int(byte_ & 15u) - 8) * rd);
        bs[base + j + 16u] = float16_t(float(int(byte_ >> 4) - 8) * rd);
      }
    } else {
      for (uint j = 0u; j < 16u; j++) {
        const uint sh = 8u * (j % 4u);
        bs[base + j] = float16_t(float(int(((rq0[j / 4u] >> sh) & 0xffu) << 24) >> 24) * rd);
        bs[base + 16u + j] = float16_t(float(int(((rq1[j / 4u] >> sh) & 0xffu) << 24) >> 24) * rd);
      }
    }
    return;
  }
  for (uint l = 0u; l < 32u; l++) {
    const uint idx = tid + l * 256u;
    bs[(idx / BK) * SK + idx % BK] = float16_t(rw[l]);
  }
}

void main() {
  const uint tid = gl_LocalInvocationID.x, sg = gl_SubgroupID;
  const uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM;
  const uint wm = (sg / 4u) * WM, wn = (sg % 4u) * WN;
  fcoopmatNV<32, gl_ScopeSubgroup, CM, CN> acc[FM][FN];
  [[unroll]] for (uint i = 0u; i < FM; i++)
    [[unroll]] for (uint j = 0u; j < FN; j++) acc[i][j] = fcoopmatNV<32, gl_ScopeSubgroup, CM, CN>(0.0);
  fetch(m0, n0, 0u, tid);
  for (uint k0 = 0u; k0 < p.K; k0 += BK) {
    stash(tid);
    barrier();
    if (k0 + BK < p.K) fetch(m0, n0, k0 + BK, tid);
    [[unroll]] for (uint kk = 0u; kk < BK; kk += CK) {
      fcoopmatNV<16, gl_ScopeSubgroup, CM, CK> a[FM];
      fcoopmatNV<16, gl_ScopeSubgroup, CK, CN> b[FN];
      [[unroll]] for (uint i = 0u; i < FM; i++)
        coopMatLoadNV(a[i], as, (wm + i * CM) * SK + kk, SK, false);
      [[unroll]] for (uint j = 0u; j < FN; j++)
        coopMatLoadNV(b[j], bs, (wn + j * CN) * SK + kk, SK, true);
      [[unroll]] for (uint i = 0u; i < FM; i++)
        [[unroll]] for (uint j = 0u; j < FN; j++) acc[i][j] = coopMatMulAddNV(a[i], b[j], acc[i][j]);
    }
    barrier();
  }
  const uint lane = gl_SubgroupInvocationID;
  [[unroll]] for (uint i = 0u; i < FM; i++)
    [[unroll]] for (uint j = 0u; j < FN; j++) {
      coopMatStoreNV(acc[i][j], cs[sg], 0, CN, false);
      subgroupMemoryBarrierShared();
      subgroupBarrier();
      for (uint e = lane; e < CM * CN; e += gl_SubgroupSize) {
        const uint m = m0 + wm + i * CM + e / CN, n = n0 + wn + j * CN + e % CN;
        if (m < p.T && n < p.N) {
          const float b = p.has_bias != 0u ? LOAD_FLOAT(bias, BDT, p.b_off, n) : 0.0;
          y[p.y_off + m * p.N + n] = cs[sg][e] + b;
        }
      }
      subgroupBarrier();
    }
}
