// Element-wise ops (OP): 0 silu_mul, 1 gelu_mul, 2 gelu, 3 gelu_tanh, 4 add, 5 mul,
// 6 scale. b is a's shape, or one row of d broadcast over the rows (b_bcast).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const int OP = 0;
layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
  uint a_off, b_off, y_off, n, d, b_bcast;
  float scale;
} p;

float gelu_erf(float v) { return 0.5 * v * (1.0 + erf_accurate(v * 0.70710678118654752)); }
float gelu_tanh(float v) {
  return 0.5 * v * (1.0 + tanh_accurate(0.79788456080286536 * (v + 0.044715 * v * v * v)));
}

void main() {
  const uint i = flat_id();
  if (i >= p.n) return;
  const float av = a[p.a_off + i];
  float bv = 0.0;
  if (OP == 0 || OP == 1 || OP == 4 || OP == 5) bv = b[p.b_off + (p.b_bcast != 0u ? i % p.d : i)];
  float o;
  if (OP == 0) o = av / (1.0 + exp(-av)) * bv;
  else if (OP == 1) o = gelu_erf(av) * bv;
  else if (OP == 2) o = gelu_erf(av);
  else if (OP == 3) o = gelu_tanh(av);
  else if (OP == 4) o = av + bv;
  else if (OP == 5) o = av * bv;
  else o = av * p.scale;
  y[p.y_off + i] = o;
}
