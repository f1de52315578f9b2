// Sums of many parts in a fixed order, y = Σ_k part[k][i], and the residual Add after
// them, o2 = a + y: the fused FFN's down product with FFN_PARTS (a part per gate/up
// round, hundreds of them; matmul_reduce's thread a sum suits a few). Each workgroup
// takes 64 outputs and LANES threads each (specialization constant 0), a thread summing
// every LANES-th part 8 loads at a time (loads of consecutive outputs side by side);
// then the first lane adds the LANES sums in order.
//
// NEXT_NORM: the RmsNorm of o2 that follows (weight of dtype NNWDT), rounded into the
// integer-dot planes the GEMV after it reads as x. Rounding is scale-free, so each
// workgroup rounds its blocks of o2 ⊙ weight and writes its part of Σ o2²; the last
// workgroup to finish (a counter) adds the parts in order and multiplies every block's
// scale by 1 / rms.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#define QUANTIZE_PLANES_ONLY 1
#include "quantize_block.glsl"
layout(local_size_x = 64, local_size_y = 16) in;
layout(local_size_y_id = 0) in;
layout(constant_id = 1) const int NEXT_NORM = 0;
layout(constant_id = 2) const int NNWDT = DT_F32;
layout(std430, binding = 0) readonly buffer Parts { float part[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(std430, binding = 2) readonly buffer A { float a[]; };
layout(std430, binding = 3) writeonly buffer O2 { float o2[]; };
// NEXT_NORM: the norm weight, the planes (and each block's scale and Σ s after them),
// the count of workgroups done and each workgroup's Σ o2².
layout(std430, binding = 4) readonly buffer NormW { uint nw[]; };
layout(std430, binding = 5) writeonly buffer Planes { uvec4 nq[]; };
layout(std430, binding = 5) coherent buffer Meta { uvec2 nm[]; };
layout(std430, binding = 6) buffer Count { uint count[]; };
layout(std430, binding = 7) coherent buffer SumSq { float sumsq[]; };
layout(push_constant) uniform P {
  uint y_off, n, parts, a_off, o2_off;
  uint nn_w_off, nn_q_off;  // NEXT_NORM: the weight's offset, the planes' (words)
  float nn_eps;
} p;

shared float sums[gl_WorkGroupSize.y][64];
shared float normed[64];  // NEXT_NORM: o2 ⊙ weight
shared bool last;
shared float inv_rms;

void main() {
  const uint lx = gl_LocalInvocationID.x, ly = gl_LocalInvocationID.y, lanes = gl_WorkGroupSize.y;
  const uint i = gl_WorkGroupID.x * 64u + lx;
  float s = 0.0;
  if (i < p.n) {
    for (uint k0 = ly; k0 < p.parts; k0 += 8u * lanes) {
      float v[8];
      [[unroll]] for (uint u = 0u; u < 8u; u++) {
        const uint k = k0 + u * lanes;
        v[u] = k < p.parts ? part[k * p.n + i] : 0.0;
      }
      [[unroll]] for (uint u = 0u; u < 8u; u++) s += v[u];
    }
  }
  sums[ly][lx] = s;
  barrier();
  if (ly == 0u && i < p.n) {
    float t = 0.0;
    for (uint j = 0u; j < lanes; j++) t += sums[j][lx];
    y[p.y_off + i] = t;
    const float o = a[p.a_off + i] + t;
    o2[p.o2_off + i] = o;
    if (NEXT_NORM != 0) {
      sums[0][lx] = o * o;
      normed[lx] = o * LOAD_FLOAT(nw, NNWDT, p.nn_w_off, i);
    }
  }
  if (NEXT_NORM == 0) return;
  barrier();
  // This workgroup's blocks (n is a multiple of 32) and its part of Σ o2², in order.
  const uint nb = p.n / 32u, blk = gl_WorkGroupID.x * 2u + lx;
  if (ly == 0u && lx < 2u && blk < nb) {
    vec4 v[8];
    for (uint k = 0u; k < 8u; k++)
      v[k] = vec4(normed[32u * lx + 4u * k], normed[32u * lx + 4u * k + 1u],
                  normed[32u * lx + 4u * k + 2u], normed[32u * lx + 4u * k + 3u]);
    uvec4 h0, h1, l0, l1;
    uvec2 meta;
    quantize_planes(v, h0, h1, l0, l1, meta);
    const uint q = p.nn_q_off / 4u + 4u * blk;
    nq[q] = h0;
    nq[q + 1u] = h1;
    nq[q + 2u] = l0;
    nq[q + 3u] = l1;
    nm[(p.nn_q_off / 4u + nb * 4u) * 2u + blk] = meta;  // the scale before 1 / rms
  }
  if (ly == 0u && lx == 0u) {
    float ss = 0.0;
    for (uint k = 0u; k < 64u && gl_WorkGroupID.x * 64u + k < p.n; k++) ss += sums[0][k];
    sumsq[gl_WorkGroupID.x] = ss;
  }
  memoryBarrierBuffer();
  barrier();
  if (lx == 0u && ly == 0u) last = atomicAdd(count[0], 1u) == gl_NumWorkGroups.x - 1u;
  barrier();
  if (!last) return;
  memoryBarrierBuffer();
  if (lx == 0u && ly == 0u) {
    count[0] = 0u;
    float ss = 0.0;
    for (uint w = 0u; w < gl_NumWorkGroups.x; w++) ss += sumsq[w];
    inv_rms = 1.0 / sqrt(ss / float(p.n) + p.nn_eps);
  }
  barrier();
  for (uint b = ly * 64u + lx; b < nb; b += 64u * lanes) {
    const uint m = (p.nn_q_off / 4u + nb * 4u) * 2u + b;
    const uvec2 meta = nm[m];
    nm[m] = uvec2(floatBitsToUint(uintBitsToFloat(meta.x) * inv_rms), meta.y);
  }
}
