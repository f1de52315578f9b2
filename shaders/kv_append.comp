// cache[slots[t], :] = src[t, :] in the cache's dtype (round to nearest even). 16-bit
// elements are written with atomics on their word, as the neighbour half may belong to
// another thread. Bad slots are skipped and reported (ERR_SLOT).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const int CDT = DT_F32;
layout(std430, binding = 0) readonly buffer Src { float src[]; };
layout(std430, binding = 1) readonly buffer Slots { int slots[]; };
layout(std430, binding = 2) buffer Cache { uint cache[]; };
layout(std430, binding = 3) buffer Err { uint err_bits[]; };
layout(push_constant) uniform P {
  uint src_off, slots_off, cache_off, T, W, cache_rows;
} p;

void main() {
  const uint e = flat_id();
  if (e >= p.T * p.W) return;
  const uint t = e / p.W, i = e % p.W;
  const int slot = slots[p.slots_off + t];
  if (slot < 0 || uint(slot) >= p.cache_rows) {
    if (i == 0u) atomicOr(err_bits[0], ERR_SLOT);
    return;
  }
  const float v = src[p.src_off + e];
  if (CDT == DT_F32) {
    cache[p.cache_off + uint(slot) * p.W + i] = floatBitsToUint(v);
    return;
  }
  const uint h = p.cache_off * 2u + uint(slot) * p.W + i;
  const uint bits = CDT == DT_F16 ? f32_to_f16_bits(v) : f32_to_bf16_bits(v);
  const uint shift = (h & 1u) * 16u;
  atomicAnd(cache[h >> 1], ~(0xffffu << shift));
  atomicOr(cache[h >> 1], bits << shift);
}
