// y[T, N] = x[T, K] · Wᵀ (+ bias) for few tokens (T = NT <= 8) and float weights
// (f32, f16, bf16): a subgroup per output row, the row in 16-byte loads (4 floats or 8
// halves), two in flight per invocation, x as vec4s, the row's sums by subgroupAdd (no
// shared memory, no barriers). A workgroup takes ROWS rows, its subgroups looping over
// them (a driver may run fewer, wider subgroups than the host assumed). The host takes
// this shader for rows of whole loads with W and x 16-byte aligned, on devices with
// subgroup arithmetic; matmul_gemv.comp otherwise.
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#include "common.glsl"
#define WG 128
layout(local_size_x = WG) in;
layout(constant_id = 0) const int WDT = DT_F32;
layout(constant_id = 1) const int BDT = DT_F32;
layout(constant_id = 2) const uint NT = 1;    // tokens
layout(constant_id = 3) const uint ROWS = 4;  // rows per workgroup
layout(std430, binding = 0) readonly buffer X { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer W { uvec4 w4[]; };
layout(std430, binding = 2) readonly buffer Bias { uint bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
  uint x_off, w_off, b_off, y_off, T, K, N, has_bias;
} p;

// Elements of one 16-byte load.
const uint PER = WDT == DT_F32 ? 4u : 8u;

// Load i of a row against x's vec4s from xb: its dot product with each token's x.
void accumulate(uvec4 u, uint i, inout float acc[NT]) {
  if (WDT == DT_F32) {
    const vec4 w = uintBitsToFloat(u);
    [[unroll]] for (uint t = 0u; t < NT; t++) acc[t] += dot(x4[p.x_off / 4u + t * (p.K / 4u) + i], w);
  } else {
    const vec4 lo = halves4(u.xy, WDT), hi = halves4(u.zw, WDT);
    [[unroll]] for (uint t = 0u; t < NT; t++) {
      const uint xb = p.x_off / 4u + t * (p.K / 4u) + 2u * i;
      acc[t] += dot(x4[xb], lo) + dot(x4[xb + 1u], hi);
    }
  }
}

void main() {
  const uint lane = gl_SubgroupInvocationID, sg = gl_SubgroupSize;
  const uint loads = p.K / PER;  // per row
  const uint first = flat_group() * ROWS;
  const uint end = min(p.N, first + ROWS);
  for (uint n = first + gl_SubgroupID; n < end; n += gl_NumSubgroups) {  // uniform per subgroup
    const uint row = p.w_off / 4u + n * loads;
    float acc[NT];
    [[unroll]] for (uint t = 0u; t < NT; t++) acc[t] = 0.0;
    for (uint i = lane; i < loads; i += 2u * sg) {
      const uint i2 = i + sg;
      const uvec4 u0 = w4[row + i];
      const uvec4 u1 = i2 < loads ? w4[row + i2] : uvec4(0u);
      accumulate(u0, i, acc);
      if (i2 < loads) accumulate(u1, i2, acc);
    }
    const float b = p.has_bias != 0u ? LOAD_FLOAT(bias, BDT, p.b_off, n) : 0.0;
    [[unroll]] for (uint t = 0u; t < NT; t++) {
      const float s = subgroupAdd(acc[t]);
      if (subgroupElect()) y[p.y_off + t * p.N + n] = s + b;
    }
  }
}
