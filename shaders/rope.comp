// Rotary embedding on x [T, H * D]: a thread per (token, head, dim). Threads of the
// first rot/2 dims rotate a pair (NeoX: i, i + rot/2; GPT-J: 2i, 2i + 1), those past
// rot copy; no element is touched by two threads, so y may be x.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Pos { int pos[]; };
layout(std430, binding = 2) readonly buffer F { float inv_freq[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
  uint x_off, pos_off, f_off, y_off, T, H, D, rot, gptj;
} p;

void main() {
  const uint e = flat_id();
  if (e >= p.T * p.H * p.D) return;
  const uint i = e % p.D, row = e / p.D, t = row / p.H;
  const uint base = row * p.D;
  const uint half_ = p.rot / 2u;
  if (i < half_) {
    const float theta = float(pos[p.pos_off + t]) * inv_freq[p.f_off + i];
    float s, c;
    sincos_accurate(theta, s, c);
    const uint i0 = p.gptj != 0u ? 2u * i : i;
    const uint i1 = p.gptj != 0u ? 2u * i + 1u : i + half_;
    const float a = x[p.x_off + base + i0], b = x[p.x_off + base + i1];
    y[p.y_off + base + i0] = a * c - b * s;
    y[p.y_off + base + i1] = b * c + a * s;
  } else if (i >= p.rot) {
    y[p.y_off + base + i] = x[p.x_off + base + i];
  }
}
