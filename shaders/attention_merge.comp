// Combines the splits of attention.comp (SPLITS > 1): out = Σ e^(m_s - M) acc_s /
// Σ e^(m_s - M) l_s with M the largest running max; a thread per output element.
// QUANT 1: the output also goes, rounded for the integer-dot GEMV that reads it (o), to
// `q` in quantize_x.comp's layout: a workgroup holds two blocks of 32 elements.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const int QUANT = 0;
layout(std430, binding = 0) readonly buffer Part { float part[]; };
layout(std430, binding = 1) writeonly buffer Out { float outv[]; };
layout(std430, binding = 2) writeonly buffer Q { uvec4 q[]; };
layout(std430, binding = 2) writeonly buffer QM { uvec2 qm[]; };
layout(push_constant) uniform P {
  uint out_off, items, D, splits, q_off;
} p;
#include "quantize_block.glsl"

shared float block_out[QUANT != 0 ? 64 : 1];

void main() {
  const uint e = flat_id();
  const uint n = p.items * p.D;
  float o = 0.0;
  if (e < n) {
    const uint item = e / p.D, d = e % p.D;
    const uint stride = p.D + 2u;
    const uint base = item * p.splits * stride;
    float M = uintBitsToFloat(0xff800000u);
    for (uint s = 0u; s < p.splits; s++) M = max(M, part[base + s * stride]);
    float num = 0.0, den = 0.0;
    for (uint s = 0u; s < p.splits; s++) {
      const float ms = part[base + s * stride];
      if (part[base + s * stride + 1u] <= 0.0) continue;  // a split without keys
      const float w = exp(ms - M);
      den += w * part[base + s * stride + 1u];
      num += w * part[base + s * stride + 2u + d];
    }
    o = den > 0.0 ? num / den : 0.0;
    outv[p.out_off + e] = o;
  }
  if (QUANT == 0) return;
  // Blocks of 32 consecutive elements (n is a multiple of 32, checked on the host).
  const uint tid = gl_LocalInvocationID.x;
  block_out[tid] = o;
  barrier();
  const uint blk = flat_group() * 2u + tid;
  if (tid < 2u && blk * 32u < n) {
    vec4 v[8];
    for (uint j = 0u; j < 8u; j++)
      v[j] = vec4(block_out[tid * 32u + 4u * j], block_out[tid * 32u + 4u * j + 1u],
                  block_out[tid * 32u + 4u * j + 2u], block_out[tid * 32u + 4u * j + 3u]);
    quantize_block(v, p.q_off / 4u + blk * 4u, (p.q_off / 4u + (n / 32u) * 4u) * 2u + blk);
  }
}
