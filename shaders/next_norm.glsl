// NEXT_NORM of a fused GEMV whose last workgroup holds a whole sum (the fused FFN's
// down, the attention's o): block b of 32 sums, residual + accumulator (which it leaves
// at zero), stored, and the block of sum ⊙ weight rounded into the planes of the GEMV
// after (scale-free: meta's scale still takes 1 / rms). Returns the block's part of the
// sum of squares. The includer defines NN_WEIGHT(i) (the norm weight's element i),
// NN_RES(i) (the residual's), NN_ACC (the accumulator array), NN_OUT(i) and NN_PLANE(j)
// (the sum's element i and the planes' uvec4 j, as lvalues).
#ifndef LLM_NEXT_NORM_GLSL
#define LLM_NEXT_NORM_GLSL

float next_norm_block(uint b, out uvec2 meta) {
  const uint r0 = 32u * b;
  vec4 w[8], v[8];
  // Every load and exchange before any store (the buffers might alias).
  [[unroll]] for (uint k = 0u; k < 8u; k++)
    [[unroll]] for (uint c = 0u; c < 4u; c++) {
      w[k][c] = NN_WEIGHT(r0 + 4u * k + c);
      v[k][c] = NN_RES(r0 + 4u * k + c);
    }
  [[unroll]] for (uint k = 0u; k < 8u; k++)
    [[unroll]] for (uint c = 0u; c < 4u; c++)
      v[k][c] += atomicExchange(NN_ACC[r0 + 4u * k + c], 0.0);
  [[unroll]] for (uint k = 0u; k < 8u; k++)
    [[unroll]] for (uint c = 0u; c < 4u; c++) NN_OUT(r0 + 4u * k + c) = v[k][c];
  uvec4 h0, h1, l0, l1;
  const float ss = norm_block_planes(v, w, h0, h1, l0, l1, meta);
  NN_PLANE(4u * b) = h0;
  NN_PLANE(4u * b + 1u) = h1;
  NN_PLANE(4u * b + 2u) = l0;
  NN_PLANE(4u * b + 3u) = l1;
  return ss;
}

#endif
