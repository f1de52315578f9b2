// One block of 32 floats into the integer-dot GEMV's x layout (quantize_x.comp): the
// includer declares `uvec4 q[]` and `uvec2 qm[]` (one buffer); the planes go to uvec4
// q[qi .. qi + 3], the block's (scale, Σ s) to qm[mi]. With QUANTIZE_PLANES_ONLY
// defined, only quantize_planes (no buffers).
#ifndef LLM_QUANTIZE_BLOCK_GLSL
#define LLM_QUANTIZE_BLOCK_GLSL

uint pack4(ivec4 v) {
  return (uint(v.x) & 0xffu) | ((uint(v.y) & 0xffu) << 8) | ((uint(v.z) & 0xffu) << 16) |
         (uint(v.w) << 24);
}

// The factor of a block whose largest |x| is amax: s = round(x * 32512 / amax).
float quantize_inv(float amax) { return amax > 0.0 ? 32512.0 / amax : 0.0; }

// The (scale, Σ s) of a block.
uvec2 quantize_meta(float amax, int sum) {
  return uvec2(floatBitsToUint(amax / 32512.0), uint(sum));
}

// Four elements of a block: their h and l bytes packed into a word each; returns Σ s.
int quantize4(vec4 v, float inv, out uint h, out uint l) {
  const ivec4 s = ivec4(roundEven(v * inv));
  const ivec4 hi = (s + 128) >> 8;  // arithmetic shift: floor
  h = pack4(hi);
  l = pack4(s - hi * 256);
  return s.x + s.y + s.z + s.w;
}

// The planes of one block of 32 floats (h of elements 0-15, h of 16-31, l of 0-15, l
// of 16-31) and its (scale, Σ s).
void quantize_planes(vec4 v[8], out uvec4 h0, out uvec4 h1, out uvec4 l0, out uvec4 l1,
                     out uvec2 meta) {
  float amax = 0.0;
  for (uint k = 0u; k < 8u; k++)
    amax = max(amax, max(max(abs(v[k].x), abs(v[k].y)), max(abs(v[k].z), abs(v[k].w))));
  const float inv = quantize_inv(amax);
  int sum = 0;
  uint h[8], l[8];
  for (uint k = 0u; k < 8u; k++) sum += quantize4(v[k], inv, h[k], l[k]);
  h0 = uvec4(h[0], h[1], h[2], h[3]);
  h1 = uvec4(h[4], h[5], h[6], h[7]);
  l0 = uvec4(l[0], l[1], l[2], l[3]);
  l1 = uvec4(l[4], l[5], l[6], l[7]);
  meta = quantize_meta(amax, sum);
}

// A block of 32 sums v of an RmsNorm (weight w) rounded into planes, scale-free: meta's
// scale still takes 1 / rms once the whole row's sum of squares is known. Returns the
// block's part of that sum (the fused FFN's and the attention's o's NEXT_NORM).
float norm_block_planes(vec4 v[8], vec4 w[8], out uvec4 h0, out uvec4 h1, out uvec4 l0,
                        out uvec4 l1, out uvec2 meta) {
  float ss = 0.0;
  for (uint k = 0u; k < 8u; k++) {
    ss += dot(v[k], v[k]);
    v[k] *= w[k];
  }
  quantize_planes(v, h0, h1, l0, l1, meta);
  return ss;
}

#ifndef QUANTIZE_PLANES_ONLY
void quantize_block(vec4 v[8], uint qi, uint mi) {
  uvec4 h0, h1, l0, l1;
  uvec2 meta;
  quantize_planes(v, h0, h1, l0, l1, meta);
  q[qi] = h0;
  q[qi + 1u] = h1;
  q[qi + 2u] = l0;
  q[qi + 3u] = l1;
  qm[mi] = meta;
}
#endif

#endif
