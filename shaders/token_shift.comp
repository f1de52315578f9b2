// Op::TokenShift: a thread per (sequence, channel) walks the step's tokens in
// order: out[t] = the previous token's x of its sequence, or the state row for its
// first token; the state row then holds the last token's x.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer X { float xv[]; };
layout(std430, binding = 1) buffer State { float st[]; };
layout(std430, binding = 2) readonly buffer Seq { int seq_ids[]; };
layout(std430, binding = 3) readonly buffer Slots { int slots[]; };
layout(std430, binding = 4) writeonly buffer Out { float outv[]; };
layout(push_constant) uniform P {
  uint x_off, st_off, seq_off, slot_off, out_off, T, D, S, n_slots;
} p;

void main() {
  const uint i = flat_id();
  if (i >= p.S * p.D) return;
  const uint s = i / p.D, c = i % p.D;
  const int slot = slots[p.slot_off + s];
  if (slot < 0 || uint(slot) >= p.n_slots) return;
  const uint row = p.st_off + uint(slot) * p.D + c;
  float prev = st[row];
  bool any = false;
  for (uint t = 0; t < p.T; t++) {
    if (seq_ids[p.seq_off + t] != int(s)) continue;
    outv[p.out_off + t * p.D + c] = prev;
    prev = xv[p.x_off + t * p.D + c];
    any = true;
  }
  if (any) st[row] = prev;
}
