// RmsNorm (OP 0) and LayerNorm (OP 1): a workgroup per row, float32 statistics.
// RmsNorm: y = x * (1 / sqrt(mean(x^2) + eps)) * w. LayerNorm: two passes (mean, then
// squared deviations), y = (x - mean) * inv * w (+ b).
// QUANT 1: rows of at most WG * PER elements also go, rounded for the integer-dot GEMV
// that reads them, to `q` in quantize_x.comp's layout (one dispatch less before it).
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#define WG 256
layout(local_size_x = WG) in;
layout(constant_id = 0) const int OP = 0;
layout(constant_id = 1) const int WDT = DT_F32;
layout(constant_id = 2) const int BDT = DT_F32;
layout(constant_id = 3) const int QUANT = 0;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { uint w[]; };
layout(std430, binding = 2) readonly buffer B { uint b[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(std430, binding = 4) writeonly buffer Q { uvec4 q[]; };
layout(std430, binding = 4) writeonly buffer QM { uvec2 qm[]; };
layout(push_constant) uniform P {
  uint x_off, w_off, b_off, y_off, rows, d, has_bias;
  float eps;
  uint q_off;
} p;
#include "quantize_block.glsl"

shared float red[WG];

float block_sum(float v) {
  const uint tid = gl_LocalInvocationID.x;
  red[tid] = v;
  barrier();
  for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (tid < s) red[tid] += red[tid + s];
    barrier();
  }
  const float r = red[0];
  barrier();
  return r;
}

// Rows of up to WG * PER elements are held in registers: every load of a pass is
// issued at once (a strided loop waits for memory once per iteration), and x is read
// only once.
#define PER 16
shared vec4 row_out[QUANT != 0 ? WG * PER / 4 : 1];  // QUANT: the row's y, for the blocks

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const float fd = float(p.d);
  for (uint row = flat_group(); row < p.rows; row += gl_NumWorkGroups.x * gl_NumWorkGroups.y) {
    const uint base = p.x_off + row * p.d;
    if (p.d <= WG * PER) {
      // Every load of x and w first, unconditionally (indices clamped into the row), so
      // the thread waits for memory once: conditional loads were issued one by one (H200:
      // 11 us for a row of 4,096, 7.7 for 2,048).
      float v[PER], wv[PER];
      [[unroll]] for (uint i = 0u; i < PER; i++) {
        const uint k = min(tid + i * WG, p.d - 1u);
        v[i] = x[base + k];
        wv[i] = LOAD_FLOAT(w, WDT, p.w_off, k);
      }
      float s = 0.0;
      [[unroll]] for (uint i = 0u; i < PER; i++) {
        if (tid + i * WG >= p.d) v[i] = 0.0;
        s += OP == 0 ? v[i] * v[i] : v[i];
      }
      float inv, mean = 0.0;
      if (OP == 0) {
        inv = 1.0 / sqrt(block_sum(s) / fd + p.eps);
      } else {
        mean = block_sum(s) / fd;
        float q = 0.0;
        for (uint i = 0u; i < PER; i++)
          if (tid + i * WG < p.d) q += (v[i] - mean) * (v[i] - mean);
        inv = 1.0 / sqrt(block_sum(q) / fd + p.eps);
      }
      for (uint i = 0u; i < PER; i++) {
        const uint k = tid + i * WG;
        if (k >= p.d) break;
        float o = (OP == 0 ? v[i] * inv : (v[i] - mean) * inv) * wv[i];
        if (OP == 1 && p.has_bias != 0u) o += LOAD_FLOAT(b, BDT, p.b_off, k);
        y[p.y_off + row * p.d + k] = o;
        if (QUANT != 0) row_out[k / 4u][k % 4u] = o;
      }
      if (QUANT != 0) {
        barrier();
        const uint nb = p.d / 32u;
        for (uint blk = tid; blk < nb; blk += WG) {
          vec4 v[8];
          for (uint j = 0u; j < 8u; j++) v[j] = row_out[blk * 8u + j];
          const uint i = row * nb + blk;
          quantize_block(v, p.q_off / 4u + i * 4u, (p.q_off / 4u + p.rows * nb * 4u) * 2u + i);
        }
        barrier();
      }
      continue;
    }
    float inv, mean = 0.0;
    if (OP == 0) {
      float s = 0.0;
      for (uint i = tid; i < p.d; i += WG) s += x[base + i] * x[base + i];
      inv = 1.0 / sqrt(block_sum(s) / fd + p.eps);
    } else {
      float s = 0.0;
      for (uint i = tid; i < p.d; i += WG) s += x[base + i];
      mean = block_sum(s) / fd;
      float v = 0.0;
      for (uint i = tid; i < p.d; i += WG) v += (x[base + i] - mean) * (x[base + i] - mean);
      inv = 1.0 / sqrt(block_sum(v) / fd + p.eps);
    }
    for (uint i = tid; i < p.d; i += WG) {
      float o = (OP == 0 ? x[base + i] * inv : (x[base + i] - mean) * inv) * LOAD_FLOAT(w, WDT, p.w_off, i);
      if (OP == 1 && p.has_bias != 0u) o += LOAD_FLOAT(b, BDT, p.b_off, i);
      y[p.y_off + row * p.d + i] = o;
    }
  }
}
