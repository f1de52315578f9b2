// The split-K partials of matmul_coop, [splits][n] floats, added in split order (the
// same sum whatever the batch), plus the bias of the output's column: y = Σ partials + b.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const int BDT = DT_F32;
layout(std430, binding = 0) readonly buffer Partials { float part[]; };
layout(std430, binding = 1) readonly buffer Bias { uint bias[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
  uint b_off, y_off, n, N, splits, has_bias;
} p;

void main() {
  const uint i = flat_id();
  if (i >= p.n) return;
  float s = 0.0;
  for (uint k = 0u; k < p.splits; k++) s += part[k * p.n + i];
  if (p.has_bias != 0u) s += LOAD_FLOAT(bias, BDT, p.b_off, i % p.N);
  y[p.y_off + i] = s;
}
