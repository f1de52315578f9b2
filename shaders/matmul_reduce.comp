// The split-K partials of matmul_coop, [splits][n] floats, added in split order (the
// same sum whatever the batch), plus the bias of the output's column: y = Σ partials + b.
// EPI computes the element-wise node after the matmul as well, into o2: 1 a residual
// Add (o2 = a + y), 2 the SiluMul of an earlier product a (gate) and this one (up):
// o2 = silu(a) * y, with the expressions of elementwise.comp (the same bits).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const int BDT = DT_F32;
layout(constant_id = 1) const int EPI = 0;
layout(std430, binding = 0) readonly buffer Partials { float part[]; };
layout(std430, binding = 1) readonly buffer Bias { uint bias[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(std430, binding = 3) readonly buffer A { float a[]; };
layout(std430, binding = 4) writeonly buffer O2 { float o2[]; };
layout(push_constant) uniform P {
  uint b_off, y_off, n, N, splits, has_bias, a_off, o2_off;
} p;

void main() {
  const uint i = flat_id();
  if (i >= p.n) return;
  float s = 0.0;
  for (uint k = 0u; k < p.splits; k++) s += part[k * p.n + i];
  if (p.has_bias != 0u) s += LOAD_FLOAT(bias, BDT, p.b_off, i % p.N);
  y[p.y_off + i] = s;
  if (EPI == 1) {
    o2[p.o2_off + i] = a[p.a_off + i] + s;
  } else if (EPI == 2) {
    const float av = a[p.a_off + i];
    o2[p.o2_off + i] = av / (1.0 + exp(-av)) * s;
  }
}
