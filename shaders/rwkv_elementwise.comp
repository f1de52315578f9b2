// RWKV element-wise ops, OP: 0 Mix out = a*w + b*(1-w) (w one row [D]);
// 1 SigmoidMul out = sigmoid(a)*b; 2 ReluSqr out = relu(a)^2. A thread per element.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const int OP = 0;
layout(std430, binding = 0) readonly buffer A { float av[]; };
layout(std430, binding = 1) readonly buffer B { float bv[]; };
layout(std430, binding = 2) readonly buffer W { float wv[]; };
layout(std430, binding = 3) writeonly buffer Out { float outv[]; };
layout(push_constant) uniform P {
  uint a_off, b_off, w_off, out_off, n, d;
} p;

void main() {
  const uint e = flat_id();
  if (e >= p.n) return;
  const float a = av[p.a_off + e];
  float y;
  if (OP == 0) {
    const float w = wv[p.w_off + e % p.d];
    y = a * w + bv[p.b_off + e] * (1.0 - w);
  } else if (OP == 1) {
    y = bv[p.b_off + e] / (1.0 + exp(-a));
  } else {
    const float r = max(a, 0.0);
    y = r * r;
  }
  outv[p.out_off + e] = y;
}
