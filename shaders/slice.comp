// Op::Slice: in [T, G*Win] viewed as [T, G, Win]; out [T, G, W] takes columns
// off .. off+W of each group (splits fused qkv / gate_up projections). A thread
// per output element.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer In { float inv[]; };
layout(std430, binding = 1) writeonly buffer Out { float outv[]; };
layout(push_constant) uniform P {
  uint in_off, out_off, n, G, w_in, W, off;
} p;

void main() {
  const uint e = flat_id();
  if (e >= p.n) return;
  const uint j = e % p.W;
  const uint g = (e / p.W) % p.G;
  const uint t = e / (p.W * p.G);
  outv[p.out_off + e] = inv[p.in_off + t * p.G * p.w_in + g * p.w_in + p.off + j];
}
