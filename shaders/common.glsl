// Shared by the compute shaders: dtype codes, bit-exact f16/bf16 conversions, byte
// access into uint arrays, accurate sin/cos/erf, and the error bits. Every buffer is
// bound whole and addressed from a 4-byte aligned element offset in push constants.
#ifndef LLM_COMMON_GLSL
#define LLM_COMMON_GLSL

// Weight/table/cache dtypes (specialization constants), as in VulkanBackend.
#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2
#define DT_Q8_0 3
#define DT_Q4_0 4
#define DT_Q4_1 5

// Bits of the error buffer (bad indices read from device memory).
#define ERR_ROW_ID 1u
#define ERR_SLOT 2u
#define ERR_SEQ_OR_POS 4u
#define ERR_PAGE 8u

// f16 bits -> f32, exact for subnormals, inf and nan (unpackHalf2x16 may flush). Selects
// only, no branches: a branch on a loaded scale makes the thread wait for that load before
// it may issue the loads after it (H100, 7b decode 366 -> 395 tok/s against the branches).
float f16_bits_to_f32(uint h) {
  const uint em = h & 0x7fffu;
  const float sub = float(em) * 5.9604644775390625e-08;  // exponent 0: m 2^-24, a normal f32
  const uint nrm = em >= 0x7c00u ? (em << 13) | 0x7f800000u : (em << 13) + 0x38000000u;
  return uintBitsToFloat((em < 0x400u ? floatBitsToUint(sub) : nrm) | ((h & 0x8000u) << 16));
}

float bf16_bits_to_f32(uint h) { return uintBitsToFloat(h << 16); }

// Four halves (f16 or bf16 by dt, loaded as one uvec2) as floats.
vec4 halves4(uvec2 u, int dt) {
  if (dt == DT_F16) return vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
  return vec4(uintBitsToFloat(u.x << 16), uintBitsToFloat(u.x & 0xffff0000u),
              uintBitsToFloat(u.y << 16), uintBitsToFloat(u.y & 0xffff0000u));
}

// f32 -> f16 bits, round to nearest even (llm::f32_to_f16).
uint f32_to_f16_bits(float f) {
  const uint x = floatBitsToUint(f);
  const uint sign = (x >> 16) & 0x8000u;
  const uint a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) return sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u);
  if (a >= 0x477ff000u) return sign | 0x7c00u;
  if (a < 0x38800000u) {
    if (a < 0x33000000u) return sign;
    const uint e = a >> 23;
    const uint mant = (a & 0x7fffffu) | 0x800000u;
    const uint shift = 126u - e;
    uint r = mant >> shift;
    const uint rem = mant & ((1u << shift) - 1u);
    const uint half_ = 1u << (shift - 1u);
    if (rem > half_ || (rem == half_ && (r & 1u) != 0u)) r++;
    return sign | r;
  }
  uint r = a - 0x38000000u;
  const uint rem = r & 0x1fffu;
  r >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u) != 0u)) r++;
  return sign | r;
}

// f32 -> bf16 bits, round to nearest even (llm::f32_to_bf16).
uint f32_to_bf16_bits(float f) {
  uint x = floatBitsToUint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return ((x >> 16) | 0x40u) & 0xffffu;
  x += 0x7fffu + ((x >> 16) & 1u);
  return x >> 16;
}

// sin and cos of x in float32 to about 1 ulp for |x| < 1e5 (rope angles), whatever
// the driver's sin/cos do outside [-pi, pi]: Cody-Waite reduction by pi/2 in four
// parts (the first three of 8 significant bits, so j * part is exact for j < 2^16),
// then Cephes' minimax polynomials.
void sincos_accurate(float x, out float s, out float c) {
  const float j = round(x * 0.636619772367581343f);
  precise float r = x - j * 1.5703125f;
  r = r - j * 0.000484466552734375f;
  r = r - j * -6.407499313354492e-07f;
  r = r - j * 9.92093629470503e-10f;
  const float z = r * r;
  const float sn = r + r * z * (-1.6666654611e-1f + z * (8.3321608736e-3f + z * -1.9515295891e-4f));
  const float cs = 1.0f - 0.5f * z +
                   z * z * (4.166664568298827e-2f + z * (-1.388731625493765e-3f + z * 2.443315711809948e-5f));
  const int q = int(j) & 3;
  if (q == 0) { s = sn; c = cs; }
  else if (q == 1) { s = cs; c = -sn; }
  else if (q == 2) { s = -sn; c = -cs; }
  else { s = -cs; c = sn; }
}

// erf(x) with absolute error below 1.2e-7 (Numerical Recipes' erfc Chebyshev fit).
float erf_accurate(float x) {
  const float z = abs(x);
  const float t = 1.0f / (1.0f + 0.5f * z);
  const float r = t * exp(-z * z - 1.26551223f +
                          t * (1.00002368f + t * (0.37409196f + t * (0.09678418f +
                          t * (-0.18628806f + t * (0.27886807f + t * (-1.13520398f +
                          t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f)))))))));
  return x >= 0.0f ? 1.0f - r : r - 1.0f;
}

float tanh_accurate(float x) {
  // tanh through exp of a non-positive argument: no overflow, good relative error.
  const float e = exp(-2.0f * abs(x));
  const float t = (1.0f - e) / (1.0f + e);
  return x < 0.0f ? -t : t;
}

// Threads are numbered over a 2-d grid of workgroups (x at most 65535 groups), so one
// dispatch covers more than 65535 * local_size items.
uint flat_id() {
  return gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * gl_WorkGroupSize.x;
}
uint flat_group() { return gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x; }

// Element i of a float tensor (f32/f16/bf16 by dt) at word offset off of a uint array.
#define HALF_BITS(buf, h) ((buf[(h) >> 1] >> (((h) & 1u) * 16u)) & 0xffffu)
#define LOAD_FLOAT(buf, dt, off, i)                                          \
  ((dt) == DT_F32 ? uintBitsToFloat(buf[(off) + (i)])                        \
   : (dt) == DT_F16 ? f16_bits_to_f32(HALF_BITS(buf, (off) * 2u + (i)))      \
                    : bf16_bits_to_f32(HALF_BITS(buf, (off) * 2u + (i))))
// Byte a / 16-bit value at (even) byte a of a uint array.
#define LOAD_BYTE(buf, a) ((buf[(a) >> 2] >> (((a) & 3u) * 8u)) & 0xffu)
#define LOAD_U16(buf, a) ((buf[(a) >> 2] >> (((a) & 2u) * 8u)) & 0xffffu)

#endif
