// Quantizes rows of x for the integer-dot GEMV (matmul_gemv_qdot.comp): per block of
// 32 elements s = round(x * 32512 / amax), kept as two int8 planes s = 256 h + l with
// h = (s + 128) >> 8 (|h| <= 127) and l in [-128, 127], so the GEMV's dot products
// keep 16 bits of x (within amax / 65024 per element, as the CUDA GEMV's).
//
// Layout of `q`, in 16-byte units: block b of token t at (t * nb + b) * 4 holds h of
// elements 0-15, h of 16-31, l of 0-15, l of 16-31 (element 4i + j in byte j of word i,
// the order of q4_0's nibbles and q8_0's bytes); after the T * nb blocks, one uvec2 per
// (t, b): the block's scale amax / 32512 (float bits) and Σ s.
//
// With copy_n > 0 x is also copied to `copy` (the fused FFN's activation to its place,
// see matmul_gemv_q.glsl).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer X { vec4 x4[]; };
layout(std430, binding = 1) writeonly buffer Q { uvec4 q[]; };
layout(std430, binding = 1) writeonly buffer QM { uvec2 qm[]; };
layout(std430, binding = 2) writeonly buffer C { float copy[]; };
layout(push_constant) uniform P { uint x_off, q_off, T, K, copy_off, copy_n; } p;
#include "quantize_block.glsl"

void main() {
  const uint i = flat_id(), nb = p.K / 32u;
  if (i >= p.T * nb) return;
  const uint t = i / nb, b = i % nb;
  // x rows are 16-byte aligned (x_off and K multiples of 4, checked on the host).
  const uint xb = (p.x_off + t * p.K + b * 32u) / 4u;
  vec4 v[8];
  for (uint k = 0u; k < 8u; k++) v[k] = x4[xb + k];
  if (p.copy_n > 0u)
    for (uint k = 0u; k < 8u; k++)
      for (uint j = 0u; j < 4u; j++) copy[p.copy_off + t * p.K + b * 32u + 4u * k + j] = v[k][j];
  const uint qi = p.q_off / 4u + i * 4u;
  quantize_block(v, qi, (p.q_off / 4u + p.T * nb * 4u) * 2u + i);
}
