// Combines the splits of attention.comp (SPLITS > 1): out = Σ e^(m_s - M) acc_s /
// Σ e^(m_s - M) l_s with M the largest running max; a thread per output element.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Part { float part[]; };
layout(std430, binding = 1) writeonly buffer Out { float outv[]; };
layout(push_constant) uniform P {
  uint out_off, items, D, splits;
} p;

void main() {
  const uint e = flat_id();
  if (e >= p.items * p.D) return;
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
  outv[p.out_off + e] = den > 0.0 ? num / den : 0.0;
}
