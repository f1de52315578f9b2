// out[r, :] = f32(table[ids[r], :]). A thread per output element; bad ids give zero
// rows and ERR_ROW_ID.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const int WDT = DT_F32;
layout(constant_id = 1) const int SPLIT = 0;
layout(std430, binding = 0) readonly buffer Table { uint wts[]; };
layout(std430, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, binding = 2) writeonly buffer Out { float outv[]; };
layout(std430, binding = 3) buffer Err { uint err_bits[]; };
layout(push_constant) uniform P {
  uint table_off, ids_off, out_off, V, D, R;
} p;
#include "weights.glsl"

void main() {
  const uint e = flat_id();
  if (e >= p.R * p.D) return;
  const uint r = e / p.D, i = e % p.D;
  const int id = ids[p.ids_off + r];
  float v = 0.0;
  if (id < 0 || uint(id) >= p.V) {
    if (i == 0u) atomicOr(err_bits[0], ERR_ROW_ID);
  } else {
    v = weight_at(p.table_off, uint(id), p.D, i);
  }
  outv[p.out_off + e] = v;
}
