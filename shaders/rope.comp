// Rotary embedding on x [T, H * D]: a thread per (token, head, dim). Threads of the
// first rot/2 dims rotate a pair (NeoX: i, i + rot/2; GPT-J: 2i, 2i + 1), those past
// rot copy; no element is touched by two threads, so y may be x. With store, each
// value also goes to its token's cache row (the fused KvAppend of k).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Pos { int pos[]; };
layout(std430, binding = 2) readonly buffer F { float inv_freq[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
// store: the KvAppend of y that follows in the graph (an f32 cache of rows H * D).
layout(std430, binding = 4) readonly buffer Slots { int slots[]; };
layout(std430, binding = 5) writeonly buffer Cache { float cache[]; };
layout(std430, binding = 6) buffer Err { uint err_bits[]; };
layout(push_constant) uniform P {
  uint x_off, pos_off, f_off, y_off, T, H, D, rot, gptj, slots_off, cache_off, cache_rows, store;
} p;

void put(uint t, uint row, uint i, float v) {
  y[p.y_off + row * p.D + i] = v;
  if (p.store == 0u) return;
  const int slot = slots[p.slots_off + t];
  if (slot < 0 || uint(slot) >= p.cache_rows) {
    if (row % p.H == 0u && i == 0u) atomicOr(err_bits[0], ERR_SLOT);
    return;
  }
  cache[p.cache_off + uint(slot) * p.H * p.D + (row % p.H) * p.D + i] = v;
}

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
    put(t, row, i0, a * c - b * s);
    put(t, row, i1, b * c + a * s);
  } else if (i >= p.rot) {
    put(t, row, i, x[p.x_off + base + i]);
  }
}
