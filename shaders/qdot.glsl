// Integer dot products of quantized weights with x rounded to 16-bit integers per block
// of 32, kept as two int8 planes (s = 256 h + l; quantize_x.comp's layout): the
// integer-dot GEMVs and the decode attention's o workers.
#ifndef LLM_QDOT_GLSL
#define LLM_QDOT_GLSL

// OpSDot with PackedVectorFormat4x8Bit: the sum of the products of the 4 signed bytes.
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6018, 6019],
                  id = 4450) int sdot4x8(uint a, uint b, spirv_literal int packed_4x8);
int dot4(uint a, uint b) { return sdot4x8(a, b, 0); }

// Σ q s over one block of 32 weights and x's planes, without q4_0's offset of 8: quants
// qa (q8_0: qa, then qb; q4_0: qa's low nibbles pair with h0/l0, its high ones with
// h1/l1).
int block_dot_planes(bool q4, uvec4 qa, uvec4 qb, uvec4 h0, uvec4 h1, uvec4 l0, uvec4 l1) {
  int dh = 0, dl = 0;
  [[unroll]] for (int w = 0; w < 4; w++) {
    uint a = qa[w], b = qb[w];
    if (q4) {
      b = (a >> 4) & 0x0f0f0f0fu;
      a &= 0x0f0f0f0fu;
    }
    dh += dot4(a, h0[w]) + dot4(b, h1[w]);
    dl += dot4(a, l0[w]) + dot4(b, l1[w]);
  }
  return dh * 256 + dl;
}

#endif
