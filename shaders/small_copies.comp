// A queued transfer's small copies in one dispatch (Context::queue_upload / queue_copy /
// queue_download): on NVIDIA's driver each copy command goes through the copy engine
// between compute work, which costs a few microseconds a decode step. Up to six copies
// of whole words, none of which touches another's bytes (the context flushes before an
// overlapping one), so they run side by side: each thread takes every WG-th word of
// each copy. Sources and destinations name a binding: 0 the upload ring (host data
// written before the submission), 1 the readback memory, 2 and 3 device buffers.
#version 450
#define WG 256
layout(local_size_x = WG) in;
layout(std430, binding = 0) readonly buffer Upload { uint upload[]; };
layout(std430, binding = 1) buffer Readback { uint readback[]; };
layout(std430, binding = 2) buffer Dev0 { uint dev0[]; };
layout(std430, binding = 3) buffer Dev1 { uint dev1[]; };
// ops[5 k ..]: source binding, source word, destination binding, destination word, words.
layout(push_constant) uniform P {
  uint n;
  uint ops[30];
} p;

uint load_word(uint b, uint i) {
  if (b == 0u) return upload[i];
  if (b == 1u) return readback[i];
  if (b == 2u) return dev0[i];
  return dev1[i];
}

void store_word(uint b, uint i, uint v) {
  if (b == 1u)
    readback[i] = v;
  else if (b == 2u)
    dev0[i] = v;
  else if (b == 3u)
    dev1[i] = v;
}

void main() {
  const uint t = gl_LocalInvocationID.x;
  for (uint k = 0u; k < p.n; k++) {
    const uint src = p.ops[5u * k], src_at = p.ops[5u * k + 1u];
    const uint dst = p.ops[5u * k + 2u], dst_at = p.ops[5u * k + 3u];
    const uint words = p.ops[5u * k + 4u];
    for (uint i = t; i < words; i += WG) store_word(dst, dst_at + i, load_word(src, src_at + i));
  }
}
