// y[T, N] = x[T, K] · Wᵀ (+ bias) for many tokens: 64 x 64 output tiles, 256 threads
// of 4 x 4 outputs each, K in steps of 16 through shared memory (weights dequantized
// to float32 on the way in). The portable path: no vendor extension.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define BM 64
#define BN 64
#define BK 16
layout(local_size_x = 256) in;
layout(constant_id = 0) const int WDT = DT_F32;
layout(constant_id = 1) const int BDT = DT_F32;
layout(constant_id = 2) const int SPLIT = 0;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { uint wts[]; };
layout(std430, binding = 2) readonly buffer Bias { uint bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
  uint x_off, w_off, b_off, y_off, T, K, N, has_bias;
} p;
#include "weights.glsl"

shared float xs[BK][BM + 1];
shared float ws[BK][BN + 1];

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM;
  const uint tx = tid % 16u, ty = tid / 16u;
  float acc[4][4];
  for (uint i = 0u; i < 4u; i++)
    for (uint j = 0u; j < 4u; j++) acc[i][j] = 0.0;
  for (uint k0 = 0u; k0 < p.K; k0 += BK) {
    for (uint l = 0u; l < 4u; l++) {
      const uint idx = tid + l * 256u;
      const uint kk = idx % BK, r = idx / BK;
      const uint k = k0 + kk;
      xs[kk][r] = (m0 + r < p.T && k < p.K) ? x[p.x_off + (m0 + r) * p.K + k] : 0.0;
      ws[kk][r] = (n0 + r < p.N && k < p.K) ? weight_at(p.w_off, n0 + r, p.K, k) : 0.0;
    }
    barrier();
    for (uint kk = 0u; kk < BK; kk++) {
      float a[4], b[4];
      for (uint i = 0u; i < 4u; i++) a[i] = xs[kk][ty * 4u + i];
      for (uint j = 0u; j < 4u; j++) b[j] = ws[kk][tx * 4u + j];
      for (uint i = 0u; i < 4u; i++)
        for (uint j = 0u; j < 4u; j++) acc[i][j] += a[i] * b[j];
    }
    barrier();
  }
  for (uint i = 0u; i < 4u; i++) {
    const uint m = m0 + ty * 4u + i;
    if (m >= p.T) continue;
    for (uint j = 0u; j < 4u; j++) {
      const uint n = n0 + tx * 4u + j;
      if (n >= p.N) continue;
      const float b = p.has_bias != 0u ? LOAD_FLOAT(bias, BDT, p.b_off, n) : 0.0;
      y[p.y_off + m * p.N + n] = acc[i][j] + b;
    }
  }
}
