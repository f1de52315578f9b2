// Sums of many parts in a fixed order, y = Σ_k part[k][i], and the residual Add after
// them, o2 = a + y: the fused FFN's down product with FFN_PARTS (a part per gate/up
// round, hundreds of them; matmul_reduce's thread a sum suits a few). Each workgroup
// takes 64 outputs and LANES threads each (specialization constant 0), a thread summing
// every LANES-th part 8 loads at a time (loads of consecutive outputs side by side);
// then the first lane adds the LANES sums in order.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
layout(local_size_x = 64, local_size_y = 16) in;
layout(local_size_y_id = 0) in;
layout(std430, binding = 0) readonly buffer Parts { float part[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };
layout(std430, binding = 2) readonly buffer A { float a[]; };
layout(std430, binding = 3) writeonly buffer O2 { float o2[]; };
layout(push_constant) uniform P {
  uint y_off, n, parts, a_off, o2_off;
} p;

shared float sums[gl_WorkGroupSize.y][64];

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
  if (ly != 0u || i >= p.n) return;
  float t = 0.0;
  for (uint j = 0u; j < lanes; j++) t += sums[j][lx];
  y[p.y_off + i] = t;
  o2[p.o2_off + i] = a[p.a_off + i] + t;
}
