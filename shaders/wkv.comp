// Op::Wkv (RWKV-4): a thread per (sequence, channel) scans the step's tokens of its
// sequence, carrying (num, den, max) in the state row [3*A] (see core/graph.h).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer K { float kv[]; };
layout(std430, binding = 1) readonly buffer V { float vv[]; };
layout(std430, binding = 2) readonly buffer Decay { float decay[]; };
layout(std430, binding = 3) readonly buffer First { float first[]; };
layout(std430, binding = 4) buffer State { float st[]; };
layout(std430, binding = 5) readonly buffer Seq { int seq_ids[]; };
layout(std430, binding = 6) readonly buffer Slots { int slots[]; };
layout(std430, binding = 7) writeonly buffer Out { float outv[]; };
layout(push_constant) uniform P {
  uint k_off, v_off, decay_off, first_off, st_off, seq_off, slot_off, out_off, T, A, S, n_slots;
} p;

void main() {
  const uint i = flat_id();
  if (i >= p.S * p.A) return;
  const uint s = i / p.A, c = i % p.A;
  const int slot = slots[p.slot_off + s];
  if (slot < 0 || uint(slot) >= p.n_slots) return;
  const uint base = p.st_off + uint(slot) * 3u * p.A;
  float num = st[base + c], den = st[base + p.A + c], mx = st[base + 2u * p.A + c];
  const float w = -exp(decay[p.decay_off + c]), u = first[p.first_off + c];
  for (uint t = 0; t < p.T; t++) {
    if (seq_ids[p.seq_off + t] != int(s)) continue;
    const float kt = kv[p.k_off + t * p.A + c], vt = vv[p.v_off + t * p.A + c];
    const float mo = max(mx, kt + u);
    const float e1 = exp(mx - mo), e2 = exp(kt + u - mo);
    outv[p.out_off + t * p.A + c] = (e1 * num + e2 * vt) / (e1 * den + e2);
    const float ms = max(mx + w, kt);
    const float f1 = exp(mx + w - ms), f2 = exp(kt - ms);
    num = f1 * num + f2 * vt;
    den = f1 * den + f2;
    mx = ms;
  }
  st[base + c] = num;
  st[base + p.A + c] = den;
  st[base + 2u * p.A + c] = mx;
}
