// GGUF block types decoded at load (core/formats/gguf_quants.h): Q4_1, Q5_0,
// Q5_1, Q4_K, Q5_K, Q6_K. The decoder is checked bit for bit against reference
// decoders written here in ggml's loop form, on random blocks and on blocks
// encoded here from known floats; models stored in these types are checked
// against the float32 model with the same (dequantized) values and against the
// original float weights.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "backend_test_util.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/registry.h"
#include "core/engine/session.h"
#include "core/error.h"
#include "core/formats/gguf.h"
#include "core/formats/gguf_model.h"
#include "core/formats/gguf_quants.h"
#include "core/formats/gguf_writer.h"
#include "core/formats/native_folder.h"
#include "core/formats/quantize.h"
#include "core/formats/safetensors.h"
#include "core/model.h"
#include "core/models/synth.h"
#include "test_util.h"

using namespace llm;
using namespace llm::test;
using Catch::Contains;

namespace {

struct TypeCase {
  uint32_t type;
  const char* name;
  int block;  // values per block
  size_t bytes;
};
const TypeCase kTypes[] = {
    {kGgmlQ4_1, "Q4_1", 32, 20},   {kGgmlQ5_0, "Q5_0", 32, 22},   {kGgmlQ5_1, "Q5_1", 32, 24},
    {kGgmlQ4_K, "Q4_K", 256, 144}, {kGgmlQ5_K, "Q5_K", 256, 176}, {kGgmlQ6_K, "Q6_K", 256, 210},
};

float h2f(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}
void put_h(uint8_t* p, float f) {
  const uint16_t h = f32_to_f16(f);
  std::memcpy(p, &h, 2);
}

// ---- reference decoders: ggml's dequantize_row_* loops, one block each -------------

void ref_q4_1(const uint8_t* b, float* y) {
  const float d = h2f(b), m = h2f(b + 2);
  for (int j = 0; j < 16; ++j) {
    const int x0 = b[4 + j] & 0x0F, x1 = b[4 + j] >> 4;
    y[j] = x0 * d + m;
    y[j + 16] = x1 * d + m;
  }
}

void ref_q5(const uint8_t* b, float* y, bool has_min) {
  const float d = h2f(b), m = has_min ? h2f(b + 2) : 0.f;
  uint32_t qh;
  std::memcpy(&qh, b + (has_min ? 4 : 2), 4);
  const uint8_t* qs = b + (has_min ? 8 : 6);
  for (int j = 0; j < 16; ++j) {
    const uint8_t xh0 = ((qh >> (j + 0)) << 4) & 0x10;
    const uint8_t xh1 = ((qh >> (j + 12))) & 0x10;
    const int x0 = ((qs[j] & 0x0F) | xh0) - (has_min ? 0 : 16);
    const int x1 = ((qs[j] >> 4) | xh1) - (has_min ? 0 : 16);
    y[j] = has_min ? x0 * d + m : x0 * d;
    y[j + 16] = has_min ? x1 * d + m : x1 * d;
  }
}

void ref_scale_min(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

void ref_q45_K(const uint8_t* b, float* y, bool five) {
  const float d = h2f(b), mn = h2f(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* q = b + (five ? 48 : 16);
  int is = 0;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < 256; j += 64) {
    uint8_t sc, m;
    ref_scale_min(is + 0, scales, &sc, &m);
    const float d1 = d * sc, m1 = mn * m;
    ref_scale_min(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = mn * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * ((q[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * ((q[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - m2;
    q += 32;
    is += 2;
    u1 <<= 2;
    u2 <<= 2;
  }
}

void ref_q6_K(const uint8_t* b, float* y) {
  const float d = h2f(b + 208);
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  for (int n = 0; n < 256; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int8_t q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * sc[is + 0] * q1;
      y[l + 32] = d * sc[is + 2] * q2;
      y[l + 64] = d * sc[is + 4] * q3;
      y[l + 96] = d * sc[is + 6] * q4;
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

std::vector<float> ref_decode(uint32_t type, const std::vector<uint8_t>& blocks, int64_t n) {
  const TypeCase* tc = nullptr;
  for (const TypeCase& t : kTypes)
    if (t.type == type) tc = &t;
  REQUIRE(tc != nullptr);
  std::vector<float> y(n);
  for (int64_t i = 0; i < n / tc->block; i++) {
    const uint8_t* b = &blocks[i * tc->bytes];
    float* out = &y[i * tc->block];
    switch (type) {
      case kGgmlQ4_1:
        ref_q4_1(b, out);
        break;
      case kGgmlQ5_0:
        ref_q5(b, out, false);
        break;
      case kGgmlQ5_1:
        ref_q5(b, out, true);
        break;
      case kGgmlQ4_K:
        ref_q45_K(b, out, false);
        break;
      case kGgmlQ5_K:
        ref_q45_K(b, out, true);
        break;
      case kGgmlQ6_K:
        ref_q6_K(b, out);
        break;
    }
  }
  return y;
}

// ---- encoders: plain round-to-nearest, enough to put known floats in blocks ---------

int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

// Q4_1 / Q5_1: x ~ q * d + min with q in [0, 2^bits).
void enc_min_type(const float* x, uint8_t* b, int bits) {
  float lo = x[0], hi = x[0];
  for (int i = 0; i < 32; i++) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  const int qmax = (1 << bits) - 1;
  put_h(b, (hi - lo) / qmax);
  put_h(b + 2, lo);
  const float d = h2f(b), m = h2f(b + 2);
  uint32_t qh = 0;
  uint8_t* qs = b + (bits == 5 ? 8 : 4);
  std::memset(qs, 0, 16);
  for (int i = 0; i < 32; i++) {
    const int q = d > 0 ? clampi(static_cast<int>(std::lround((x[i] - m) / d)), 0, qmax) : 0;
    qs[i % 16] |= (q & 15) << (i < 16 ? 0 : 4);
    qh |= uint32_t(q >> 4) << i;
  }
  if (bits == 5) std::memcpy(b + 4, &qh, 4);
}

// Q5_0: x ~ (q - 16) * d.
void enc_q5_0(const float* x, uint8_t* b) {
  float amax = 0;
  for (int i = 0; i < 32; i++) amax = std::max(amax, std::fabs(x[i]));
  put_h(b, amax / 15.5f);
  const float d = h2f(b);
  uint32_t qh = 0;
  std::memset(b + 6, 0, 16);
  for (int i = 0; i < 32; i++) {
    const int q = d > 0 ? clampi(static_cast<int>(std::lround(x[i] / d)) + 16, 0, 31) : 16;
    b[6 + i % 16] |= (q & 15) << (i < 16 ? 0 : 4);
    qh |= uint32_t(q >> 4) << i;
  }
  std::memcpy(b + 2, &qh, 4);
}

// Q4_K / Q5_K: eight sub-blocks of 32, x ~ d*sc * q - dmin*m, 6-bit sc and m.
void enc_q45_K(const float* x, uint8_t* b, bool five) {
  const int qmax = five ? 31 : 15;
  float scale[8], offset[8];
  float smax = 0, omax = 0;
  for (int j = 0; j < 8; j++) {
    float lo = 0, hi = 0;  // the offset must be >= 0, so lo <= 0
    for (int l = 0; l < 32; l++) lo = std::min(lo, x[j * 32 + l]), hi = std::max(hi, x[j * 32 + l]);
    scale[j] = (hi - lo) / qmax;
    offset[j] = -lo;
    smax = std::max(smax, scale[j]);
    omax = std::max(omax, offset[j]);
  }
  put_h(b, smax / 63);
  put_h(b + 2, omax / 63);
  const float d = h2f(b), dmin = h2f(b + 2);
  int sc[8], mn[8];
  for (int j = 0; j < 8; j++) {
    sc[j] = d > 0 ? clampi(static_cast<int>(std::lround(scale[j] / d)), 0, 63) : 0;
    mn[j] = dmin > 0 ? clampi(static_cast<int>(std::lround(offset[j] / dmin)), 0, 63) : 0;
  }
  uint8_t* s = b + 4;
  for (int j = 0; j < 4; j++) {
    s[j] = uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = uint8_t(mn[j] | ((mn[j + 4] >> 4) << 6));
    s[j + 8] = uint8_t((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
  uint8_t* qh = b + 16;
  uint8_t* qs = b + (five ? 48 : 16);
  if (five) std::memset(qh, 0, 32);
  std::memset(qs, 0, 128);
  for (int j = 0; j < 8; j++) {
    const float dl = d * sc[j], ml = dmin * mn[j];
    for (int l = 0; l < 32; l++) {
      const int q =
          dl > 0 ? clampi(static_cast<int>(std::lround((x[j * 32 + l] + ml) / dl)), 0, qmax) : 0;
      qs[(j / 2) * 32 + l] |= (q & 15) << ((j % 2) * 4);
      if (five) qh[l] |= uint8_t((q >> 4) << j);
    }
  }
}

// Q6_K: sixteen sub-blocks of 16, x ~ d * sc * (q - 32), int8 sc.
void enc_q6_K(const float* x, uint8_t* b) {
  float scale[16], smax = 0;
  for (int j = 0; j < 16; j++) {
    float amax = 0;
    for (int l = 0; l < 16; l++) amax = std::max(amax, std::fabs(x[j * 16 + l]));
    scale[j] = amax / 31.5f;
    smax = std::max(smax, scale[j]);
  }
  put_h(b + 208, smax / 127);
  const float d = h2f(b + 208);
  int8_t* sc = reinterpret_cast<int8_t*>(b + 192);
  for (int j = 0; j < 16; j++)
    sc[j] = static_cast<int8_t>(
        d > 0 ? clampi(static_cast<int>(std::lround(scale[j] / d)), -127, 127) : 0);
  uint8_t* ql = b;
  uint8_t* qh = b + 128;
  std::memset(ql, 0, 192);
  for (int i = 0; i < 256; i++) {
    const float dl = d * sc[i / 16];
    const int q = dl != 0 ? clampi(static_cast<int>(std::lround(x[i] / dl)), -32, 31) + 32 : 32;
    const int half = i / 128, k = (i % 128) / 32, l = i % 32;
    ql[half * 64 + l + 32 * (k % 2)] |= (q & 15) << (4 * (k / 2));
    qh[half * 32 + l] |= uint8_t((q >> 4) << (2 * k));
  }
}

// Encodes a row (a multiple of the block size) into blocks of type.
std::vector<uint8_t> encode(uint32_t type, const float* x, int64_t n) {
  const GgmlBlockLayout* l = ggml_block_layout(type);
  REQUIRE(l != nullptr);
  std::vector<uint8_t> out(n / l->block_elems * l->block_bytes);
  for (int64_t i = 0; i < n / l->block_elems; i++) {
    const float* xb = x + i * l->block_elems;
    uint8_t* b = &out[i * l->block_bytes];
    switch (type) {
      case kGgmlQ4_1:
        enc_min_type(xb, b, 4);
        break;
      case kGgmlQ5_0:
        enc_q5_0(xb, b);
        break;
      case kGgmlQ5_1:
        enc_min_type(xb, b, 5);
        break;
      case kGgmlQ4_K:
        enc_q45_K(xb, b, false);
        break;
      case kGgmlQ5_K:
        enc_q45_K(xb, b, true);
        break;
      case kGgmlQ6_K:
        enc_q6_K(xb, b);
        break;
    }
  }
  return out;
}

// Random blocks: every bit pattern of the quants, scales finite (f16 in [-2, 2]).
std::vector<uint8_t> random_blocks(const TypeCase& t, int n_blocks, std::mt19937& rng) {
  std::vector<uint8_t> b(t.bytes * n_blocks);
  for (uint8_t& v : b) v = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  for (int i = 0; i < n_blocks; i++) {
    uint8_t* p = &b[i * t.bytes];
    switch (t.type) {
      case kGgmlQ5_0:
        put_h(p, u(rng));
        break;
      case kGgmlQ6_K:
        put_h(p + 208, u(rng));
        break;
      default:
        put_h(p, u(rng)), put_h(p + 2, u(rng));  // d and min / dmin first
    }
  }
  return b;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

}  // namespace

TEST_CASE("GGUF block layouts: sizes as in ggml", "[gguf][kquant]") {
  for (const TypeCase& t : kTypes) {
    INFO(t.name);
    const GgmlBlockLayout* l = ggml_block_layout(t.type);
    REQUIRE(l != nullptr);
    CHECK(std::string(l->name) == t.name);
    CHECK(l->block_elems == t.block);
    CHECK(l->block_bytes == t.bytes);
  }
  CHECK(ggml_block_layout(2) == nullptr);   // Q4_0: a DType of its own
  CHECK(ggml_block_layout(10) == nullptr);  // Q2_K: not supported
}

TEST_CASE("GGUF block decoders match ggml's loops bit for bit on random blocks", "[gguf][kquant]") {
  std::mt19937 rng(7);
  for (const TypeCase& t : kTypes) {
    INFO(t.name);
    const int n_blocks = 8;
    const std::vector<uint8_t> b = random_blocks(t, n_blocks, rng);
    const int64_t n = int64_t(n_blocks) * t.block;
    std::vector<float> got(n);
    dequantize_ggml_row(t.type, b.data(), got.data(), n);
    const std::vector<float> want = ref_decode(t.type, b, n);
    CHECK(bit_equal(got, want));
  }
  std::vector<float> out(48);
  CHECK_THROWS_WITH(dequantize_ggml_row(kGgmlQ4_K, nullptr, out.data(), 48),
                    Contains("Q4_K rows must be a multiple of 256"));
}

// Known floats through the encoders above and back: the decoder must give each
// value within its quantization step. Per block the step is d (legacy types) or
// d*sc of the sub-block; with rounding to nearest the error is <= step / 2, plus
// the f16 rounding of the scales (relative 2^-11 of the largest value) and the
// 6-bit rounding of K sub-scales, which the bounds below cover with margin.
TEST_CASE("GGUF block decoders give back known floats within the quantization step",
          "[gguf][kquant]") {
  std::mt19937 rng(11);
  std::normal_distribution<float> g(0.f, 1.f);
  struct Bound {
    uint32_t type;
    double rel;  // max |x - y| / max |x| over a block
  };
  // Half a step: range/15/2 (4 bits with min), 2*amax/31/2 (5 bits symmetric),
  // range/31/2 (5 bits with min); K types add the coarser 6-bit sub-scales.
  for (const Bound& b : {Bound{kGgmlQ4_1, 0.075}, Bound{kGgmlQ5_0, 0.04}, Bound{kGgmlQ5_1, 0.04},
                         Bound{kGgmlQ4_K, 0.1}, Bound{kGgmlQ5_K, 0.05}, Bound{kGgmlQ6_K, 0.025}}) {
    const GgmlBlockLayout* l = ggml_block_layout(b.type);
    INFO(l->name);
    const int64_t n = 4 * 256;
    std::vector<float> x(n);
    for (int64_t i = 0; i < n; i++) x[i] = g(rng) * (1 + (i / 256) * 10);  // magnitudes 1..31
    const std::vector<uint8_t> q = encode(b.type, x.data(), n);
    std::vector<float> y(n);
    dequantize_ggml_row(b.type, q.data(), y.data(), n);
    CHECK(bit_equal(y, ref_decode(b.type, q, n)));
    double worst = 0;
    for (int64_t blk = 0; blk < n / l->block_elems; blk++) {
      double amax = 0, err = 0;
      for (int64_t i = blk * l->block_elems; i < (blk + 1) * l->block_elems; i++) {
        amax = std::max(amax, double(std::fabs(x[i])));
        err = std::max(err, double(std::fabs(x[i] - y[i])));
      }
      worst = std::max(worst, err / amax);
    }
    CHECK(worst <= b.rel);
    CHECK(worst > 0);  // really quantized: the encoders are not lossless
  }
}

TEST_CASE("transcode_ggml_tensor: exact f32, rounded f16/bf16, requantized q8_0",
          "[gguf][kquant]") {
  std::mt19937 rng(3);
  for (const TypeCase& t : kTypes) {
    INFO(t.name);
    const Shape shape{5, 2 * 256};
    const int64_t n = shape.numel();
    const std::vector<uint8_t> b = random_blocks(t, static_cast<int>(n / t.block), rng);
    const std::vector<float> want = ref_decode(t.type, b, n);
    for (int threads : {1, 3}) {
      const std::vector<uint8_t> f32 =
          transcode_ggml_tensor(t.type, b.data(), shape, DType::F32, threads);
      REQUIRE(f32.size() == size_t(n) * 4);
      CHECK(std::memcmp(f32.data(), want.data(), f32.size()) == 0);
      for (DType half : {DType::F16, DType::BF16}) {
        CAPTURE(dtype_name(half));
        const std::vector<uint8_t> h16 =
            transcode_ggml_tensor(t.type, b.data(), shape, half, threads);
        REQUIRE(h16.size() == size_t(n) * 2);
        bool same16 = true;
        for (int64_t i = 0; i < n; i++) {
          uint16_t h;
          std::memcpy(&h, &h16[i * 2], 2);
          same16 = same16 && h == (half == DType::F16 ? f32_to_f16(want[i]) : f32_to_bf16(want[i]));
        }
        CHECK(same16);
      }
      const std::vector<uint8_t> q8 =
          transcode_ggml_tensor(t.type, b.data(), shape, DType::Q8_0, threads);
      std::vector<uint8_t> want_q8(dtype_row_bytes(DType::Q8_0, n));
      for (int64_t r = 0; r < shape[0]; r++)
        quantize_row_q8_0(&want[r * shape[1]], &want_q8[r * dtype_row_bytes(DType::Q8_0, shape[1])],
                          shape[1]);
      CHECK(q8 == want_q8);
    }
  }
  CHECK_THROWS_WITH(transcode_ggml_tensor(kGgmlQ6_K, nullptr, Shape{1, 256}, DType::Q4_0),
                    Contains("not q4_0"));
}

// Q4_K sub-blocks are 4-bit values with a scale d*sc and a min dmin*mn: q4_1 blocks hold
// the same values, with only those two rounded to f16 (relative 2^-11 each).
TEST_CASE("transcode_ggml_tensor: Q4_K and Q4_1 to q4_1", "[gguf][kquant]") {
  std::mt19937 rng(5);
  const Shape shape{3, 2 * 256};
  const int64_t n = shape.numel();
  const TypeCase& q4k = kTypes[3];
  REQUIRE(q4k.type == kGgmlQ4_K);
  const std::vector<uint8_t> b = random_blocks(q4k, static_cast<int>(n / 256), rng);
  const std::vector<float> want = ref_decode(kGgmlQ4_K, b, n);
  for (int threads : {1, 2}) {
    const std::vector<uint8_t> q =
        transcode_ggml_tensor(kGgmlQ4_K, b.data(), shape, DType::Q4_1, threads);
    REQUIRE(q.size() == dtype_row_bytes(DType::Q4_1, shape[1]) * shape[0]);
    std::vector<float> got(n);
    dequantize_row_q4_1(q.data(), got.data(), n);
    // Per sub-block: |d*sc| * 15 + |dmin*mn| bounds its values; 2^-11 of that (f16's
    // rounding of both) plus float rounding bounds the difference.
    double worst = 0;
    bool changed = false;
    for (int64_t blk = 0; blk < n / 32; blk++) {
      const uint8_t* sb = &b[blk / 8 * 144];
      uint8_t sc, mn;
      ref_scale_min(static_cast<int>(blk % 8), sb + 4, &sc, &mn);
      const double range = std::fabs(h2f(sb) * sc) * 15 + std::fabs(h2f(sb + 2) * mn);
      for (int64_t i = blk * 32; i < blk * 32 + 32; i++) {
        const double err = std::fabs(double(got[i]) - want[i]);
        worst = std::max(worst, err / (range * (0x1p-11 + 0x1p-22) + 1e-30));
        changed = changed || err > 0;
      }
    }
    CHECK(worst <= 1.0);
    CHECK(changed);  // the random scales really needed rounding
  }
  // Q4_1 stays as it is; other types have no q4_1 form.
  const std::vector<uint8_t> q41 = random_blocks(kTypes[0], 32, rng);
  CHECK(transcode_ggml_tensor(kGgmlQ4_1, q41.data(), Shape{2, 512}, DType::Q4_1) == q41);
  CHECK_THROWS_WITH(transcode_ggml_tensor(kGgmlQ6_K, nullptr, Shape{1, 256}, DType::Q4_1),
                    Contains("Q6_K tensors do not transcode to q4_1"));
  // A scale past f16's range (d = 60000, sc = 63) is refused; the loader takes q8_0 then.
  std::vector<uint8_t> big(144, 0);
  put_h(&big[0], 60000.f);
  big[4] = 63;
  CHECK_THROWS_WITH(transcode_ggml_tensor(kGgmlQ4_K, big.data(), Shape{1, 256}, DType::Q4_1),
                    Contains("range"));
}

TEST_CASE("gguf_transcode_target follows the scheme's float type, else q8_0", "[gguf][kquant]") {
  CHECK(gguf_transcode_target("") == DType::Q8_0);
  CHECK(gguf_transcode_target("q0f32") == DType::F32);
  CHECK(gguf_transcode_target("q0f16") == DType::F16);
  CHECK(gguf_transcode_target("q0bf16") == DType::BF16);
  CHECK(gguf_transcode_target("q8f16_1") == DType::Q8_0);
  CHECK(gguf_transcode_target("q4f16_1") == DType::Q8_0);  // Q5_K, Q6_K ...: no 4-bit form
  CHECK_THROWS_WITH(gguf_transcode_target("q2"), Contains("unknown quantization 'q2'"));
  // Q4_1 / Q4_K as q4_1 where the backend runs it: unless a float type or q8_0 is asked for.
  CHECK(gguf_keeps_q4_1(""));
  CHECK(gguf_keeps_q4_1("q4f16_1"));
  CHECK_FALSE(gguf_keeps_q4_1("q8f16_1"));
  CHECK_FALSE(gguf_keeps_q4_1("q0f16"));
}

// ---- models stored in these types ------------------------------------------------------

namespace {

// Copies the GGUF at src to dst with the tensors `pick` names re-encoded in a block
// type (0: kept as they are), plus extra metadata. When fake is not empty it also
// writes there the float32 model holding exactly the values dst decodes to (by the
// reference decoders above).
void rewrite_gguf(const std::string& src, const std::string& dst,
                  const std::function<uint32_t(const GgufTensorInfo&)>& pick,
                  const std::map<std::string, GgufValue>& extra = {},
                  const std::string& fake = "") {
  GgufFile in(src);
  GgufWriter w, wf;
  for (const auto& [k, v] : in.metadata()) {
    if (k == "general.alignment") continue;
    w.set(k, v);
    wf.set(k, v);
  }
  for (const auto& [k, v] : extra) w.set(k, v), wf.set(k, v);
  std::vector<std::vector<uint8_t>> data, fake_data;
  for (const GgufTensorInfo& t : in.tensors()) {
    const uint32_t type = pick(t);
    DType dt;
    REQUIRE(dtype_from_ggml_type(t.ggml_type, &dt));
    const uint8_t* p = t.data;
    if (type == 0) {
      w.add_tensor(t.name, dt, t.shape);
      data.emplace_back(p, p + t.nbytes);
      wf.add_tensor(t.name, dt, t.shape);
      fake_data.push_back(data.back());
      continue;
    }
    REQUIRE(dt == DType::F32);
    const float* x = reinterpret_cast<const float*>(t.data);
    std::vector<uint8_t> blocks;
    for (int64_t r = 0; r < t.shape.rows(); r++) {
      const std::vector<uint8_t> row = encode(type, x + r * t.shape.row_len(), t.shape.row_len());
      blocks.insert(blocks.end(), row.begin(), row.end());
    }
    w.add_ggml_tensor(t.name, type, t.shape);
    wf.add_tensor(t.name, DType::F32, t.shape);
    fake_data.push_back(to_bytes(ref_decode(type, blocks, t.shape.numel())));
    data.push_back(std::move(blocks));
  }
  w.begin(dst);
  for (const auto& d : data) w.write_tensor(d.data(), d.size());
  w.finish();
  if (fake.empty()) return;
  wf.begin(fake);
  for (const auto& d : fake_data) wf.write_tensor(d.data(), d.size());
  wf.finish();
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<float> logits_of(const std::string& path, const std::vector<int32_t>& ids,
                             const std::string& quantization = "") {
  auto backend = make_cpu_backend(2);
  auto m = Model::load(path, *backend, LoadOptions{quantization});
  return Session(*m).forward(ids, true);
}

// What both model tests check. Under q8f16_1 / q0f16 / q0bf16 / q0f32 the block-type
// model q loads as q8_0 / f16 / bf16 / f32 copies of its decoded values, so it must give
// the logits of the float32 model `fake` holding those values quantized the same way
// at load: the same weights reach the same kernels (bound 1e-6; measured 0, once
// 3e-7). By default (and under q4f16_1) the CPU keeps Q4_1 and Q4_K matrices as q4_1
// and the others as q8_0 copies; against the exact values (the prompts are prefills of
// over 8 tokens: float32 products) that leaves the q8_0 copies' rounding and q4_1's f16
// scales (2^-11 of a Q4_K sub-block's range): measured 1.7e-2 / 7.7e-3 (the Q4_1+Q5 /
// Q4_K+Q5_K+Q6_K models), where all-q8_0 copies measure 1.8e-2 / 1.3e-2; bound 3e-2.
void check_against_fake(const std::string& q, const std::string& fake,
                        const std::vector<int32_t>& ids) {
  CHECK(max_rel_error(logits_of(q, ids, "q8f16_1"), logits_of(fake, ids, "q8f16_1")) <= 1e-6);
  CHECK(max_rel_error(logits_of(q, ids, "q4f16_1"), logits_of(q, ids)) <= 1e-6);
  CHECK(max_rel_error(logits_of(q, ids), logits_of(fake, ids)) <= 3e-2);
  CHECK(max_rel_error(logits_of(q, ids, "q0f16"), logits_of(fake, ids, "q0f16")) <= 1e-6);
  CHECK(max_rel_error(logits_of(q, ids, "q0bf16"), logits_of(fake, ids, "q0bf16")) <= 1e-6);
  CHECK(max_rel_error(logits_of(q, ids, "q0f32"), logits_of(fake, ids)) <= 1e-6);
}

}  // namespace

// llama2 (hidden 64, ffn 160: rows of 32-value blocks) with every matrix in Q4_1,
// Q5_0 or Q5_1. Against transformers' float32 logits the error is that of the
// weights: 4 bits with a min step range/15 (like q4_0's amax/8 per block, whose
// llama3 logits measured 0.20 of max |logit|, bound 0.3 in test_quantize.cpp), 5
// bits half that, then the q8_0 requantization (~0.01). Measured here 0.13; bound
// 0.25. Decoding mistakes are caught exactly by the fake-model comparison.
TEST_CASE("GGUF Q4_1/Q5_0/Q5_1 model: the logits of its decoded values", "[gguf][kquant][models]") {
  const Reference ref = load_reference("llama2");
  TempDir dir;
  const std::string q = dir.file("q.gguf"), fake = dir.file("fake.gguf");
  const std::map<std::string, uint32_t> types = {
      {"token_embd", kGgmlQ5_0}, {"output", kGgmlQ5_1}, {"attn_q", kGgmlQ4_1},
      {"attn_k", kGgmlQ5_0},     {"attn_v", kGgmlQ5_1}, {"attn_output", kGgmlQ4_1},
      {"ffn_gate", kGgmlQ5_0},   {"ffn_up", kGgmlQ4_1}, {"ffn_down", kGgmlQ5_1}};
  rewrite_gguf(
      model_dir("llama2") + "/model-f32.gguf", q,
      [&](const GgufTensorInfo& t) -> uint32_t {
        for (const auto& [k, type] : types)
          if (ends_with(t.name, k + ".weight") && t.shape.rank == 2) return type;
        return 0;
      },
      {}, fake);
  int n_block = 0;
  const GgufFile qf(q);
  for (const GgufTensorInfo& t : qf.tensors()) n_block += ggml_block_layout(t.ggml_type) != nullptr;
  CHECK(n_block == 2 + 2 * 7);
  check_against_fake(q, fake, ref.input_ids);
  const double err = max_rel_error(logits_of(q, ref.input_ids), ref.logits);
  CHECK(err <= 0.25);
  CHECK(err > 1e-3);  // the weights really changed
}

namespace {

// A random llama (synth) with K-quant-sized rows (hidden 256, ffn 512) as f32.gguf
// in dir, and as q.gguf with its matrices in Q4_K, Q5_K and Q6_K as a Q4_K_M file
// mixes them; fake.gguf holds the f32 values q.gguf decodes to.
void write_kquant_model(const TempDir& dir) {
  ModelConfig cfg = synth_config("tiny", 256);
  cfg.hidden_size = 256;
  cfg.intermediate_size = 512;
  cfg.num_layers = 2;
  cfg.num_heads = 4;
  cfg.num_kv_heads = 2;
  cfg.head_dim = 64;
  cfg.max_position_embeddings = 64;
  write_llama_gguf(dir.file("f32.gguf"), cfg, synth_tensors(cfg, DType::F32, 5, 2),
                   GgufModelOptions{"k", nullptr, {}});
  rewrite_gguf(
      dir.file("f32.gguf"), dir.file("q.gguf"),
      [](const GgufTensorInfo& t) -> uint32_t {
        if (t.shape.rank != 2) return 0;
        if (ends_with(t.name, "ffn_down.weight") || t.name == "output.weight") return kGgmlQ6_K;
        if (ends_with(t.name, "attn_v.weight")) return kGgmlQ5_K;
        return kGgmlQ4_K;
      },
      {}, dir.file("fake.gguf"));
}

const std::vector<int32_t> kKquantIds = {1, 17, 42, 99, 3, 250, 128, 7, 64, 200, 31, 5};

}  // namespace

// The model of write_kquant_model. Against the float32 model it
// came from the error is that of 4-bit weights with 6-bit sub-scales: measured
// 0.13 of max |logit|; bound 0.25.
TEST_CASE("GGUF Q4_K/Q5_K/Q6_K model: the logits of its decoded values", "[gguf][kquant][models]") {
  TempDir dir;
  write_kquant_model(dir);
  const std::string f32 = dir.file("f32.gguf"), q = dir.file("q.gguf"),
                    fake = dir.file("fake.gguf");
  std::set<uint32_t> seen;
  const GgufFile qf(q);
  for (const GgufTensorInfo& t : qf.tensors()) seen.insert(t.ggml_type);
  CHECK(seen == std::set<uint32_t>{0, kGgmlQ4_K, kGgmlQ5_K, kGgmlQ6_K});
  const std::vector<int32_t>& ids = kKquantIds;
  check_against_fake(q, fake, ids);
  const double err = max_rel_error(logits_of(q, ids), logits_of(f32, ids));
  CHECK(err <= 0.25);
  CHECK(err > 1e-3);

  SECTION("on the CPU, Q4_K matrices load as q4_1, Q5_K and Q6_K ones as q8_0") {
    auto cpu = make_cpu_backend(2);
    auto m = Model::load(q, *cpu);
    auto m8 = Model::load(q, *cpu, LoadOptions{"q8f16_1"});
    const std::string l0 = "model.layers.0.";
    CHECK(m->weight_dtype(l0 + "self_attn.q_proj.weight") == DType::Q4_1);
    CHECK(m->weight_dtype(l0 + "mlp.up_proj.weight") == DType::Q4_1);
    CHECK(m->weight_dtype(l0 + "self_attn.v_proj.weight") == DType::Q8_0);
    CHECK(m->weight_dtype(l0 + "mlp.down_proj.weight") == DType::Q8_0);
    CHECK(m8->weight_dtype(l0 + "self_attn.q_proj.weight") == DType::Q8_0);
    // 20 bytes a block of 32 instead of 34.
    CHECK(m->weight_bytes() < m8->weight_bytes());
    // What each dtype costs: the q4_1 matrices at 20 bytes a block of 32 are q8_0 ones
    // at 34 under q8f16_1; the norms stay f32.
    const std::map<DType, size_t>& by = m->weight_bytes_by_dtype();
    const std::map<DType, size_t>& by8 = m8->weight_bytes_by_dtype();
    REQUIRE(by.count(DType::Q4_1) == 1);
    REQUIRE(by.count(DType::Q8_0) == 1);
    REQUIRE(by.count(DType::F32) == 1);  // the norms
    CHECK(by8.count(DType::Q4_1) == 0);
    CHECK(by.at(DType::Q4_1) % 20 == 0);
    CHECK(by.at(DType::Q4_1) / 20 * 34 + by.at(DType::Q8_0) == by8.at(DType::Q8_0));
    CHECK(by.at(DType::F32) == by8.at(DType::F32));
  }
  SECTION("a tensor of a type we do not read fails naming the file and the tensor") {
    // Patch blk.1.ffn_up's type in its tensor info: Q4_K (12) -> Q2_K (10), whose
    // smaller blocks still lie inside the file.
    std::string bytes = read_file(q);
    const std::string name = "blk.1.ffn_up.weight";
    const size_t at = bytes.find(name);
    REQUIRE(at != std::string::npos);
    const size_t type_at = at + name.size() + 4 + 2 * 8;  // n_dims, two dims
    uint32_t type;
    std::memcpy(&type, &bytes[type_at], 4);
    REQUIRE(type == kGgmlQ4_K);
    type = 10;
    std::memcpy(&bytes[type_at], &type, 4);
    const std::string bad = dir.file("bad.gguf");
    write_file(bad, bytes);
    auto backend = make_cpu_backend(1);
    CHECK_THROWS_WITH(Model::load(bad, *backend), Contains(bad) && Contains(name) &&
                                                      Contains("ggml type 10") && Contains("Q6_K"));
  }
  SECTION("convert writes the transcoded tensors and reloads with the same logits") {
    GenConfigOptions o;
    o.quantization = "q4f16_1";
    convert_model(q, dir.file("native"), o);
    CHECK(max_rel_error(logits_of(dir.file("native"), ids), logits_of(q, ids, "q4f16_1")) <= 1e-6);
    auto cpu = make_cpu_backend(1);
    CHECK(Model::load(dir.file("native"), *cpu)
              ->weight_dtype("model.layers.1.mlp.gate_proj.weight") == DType::Q4_1);
  }
}

// mistral's sliding window in a GGUF: llama.cpp's converter leaves
// llama.attention.sliding_window out (the fixture has none), other writers and ours
// put it in. With the key the model attends over the window like transformers.
TEST_CASE("GGUF llama.attention.sliding_window gives the HF config's window", "[gguf][models]") {
  const Reference ref = load_reference("mistral");
  TempDir dir;
  const std::string plain = model_dir("mistral") + "/model-f32.gguf";
  const std::string win = dir.file("w8.gguf");
  rewrite_gguf(plain, win, [](const GgufTensorInfo&) { return 0u; },
               {{"llama.attention.sliding_window", gguf_u32(8)}});
  const ModelConfig hf = load_hf_config(model_dir("mistral"));
  REQUIRE(hf.sliding_window == 8);
  CHECK(config_from_gguf(GgufFile(win)).sliding_window == 8);
  CHECK(config_from_gguf(GgufFile(win)).model_type == "mistral");
  CHECK(config_from_gguf(GgufFile(plain)).sliding_window == 0);

  auto backend = make_cpu_backend(2);
  auto m = Model::load(win, *backend);
  Session s(*m);
  CHECK(max_rel_error(s.forward(ref.input_ids, true), ref.logits) <= 1e-4);
  s.reset();
  CHECK(greedy(s, ref.input_ids, 16, ref.vocab) == ref.greedy_ids);
  // Without the key every position past 8 sees too much: far from the reference.
  CHECK(max_rel_error(logits_of(plain, ref.input_ids), ref.logits) > 1e-2);

  SECTION("a window of 5 written by write_llama_gguf from the HF config") {
    const Reference r5 = load_reference("mistral_w5");
    const ModelConfig c5 = load_hf_config(model_dir("mistral_w5"));
    REQUIRE(c5.sliding_window == 5);
    SafetensorsFile st(model_dir("mistral_w5") + "/model.safetensors");
    std::vector<TensorSource> ts;
    for (const auto& [name, t] : st.tensors()) {
      TensorSource src;
      src.name = name;
      src.dtype = t.dtype;
      src.shape = t.shape;
      src.fill = [h = t](uint8_t* dst) { std::memcpy(dst, h.data, h.nbytes); };
      ts.push_back(src);
    }
    const std::string g5 = dir.file("w5.gguf");
    write_llama_gguf(g5, c5, ts, GgufModelOptions{"w5", nullptr, {}});
    CHECK(config_from_gguf(GgufFile(g5)).sliding_window == 5);
    CHECK(max_rel_error(logits_of(g5, r5.input_ids), r5.logits) <= 1e-4);
    CHECK(max_rel_error(logits_of(g5, r5.input_ids),
                        logits_of(model_dir("mistral_w5"), r5.input_ids)) <= 1e-5);
  }
}

// The model's shape keys are checked before use, each error naming its key: a zero
// embedding length divided by the head count, a zero block count loaded a model with no
// layers, and 0xffffffff became -1.
TEST_CASE("GGUF shape keys out of range are errors that name the key", "[gguf][models]") {
  TempDir dir;
  const std::string src = model_dir("llama3") + "/model-f32.gguf";
  struct Bad {
    const char* key;
    GgufValue value;
    const char* says;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Bad> cases = {
      {"llama.embedding_length", gguf_u32(0), "llama.embedding_length is 0"},
      {"llama.embedding_length", gguf_u32(0xffffffffu), "is 4294967295"},
      {"llama.block_count", gguf_u32(0), "llama.block_count is 0"},
      {"llama.block_count", gguf_u32(1), "past llama.block_count (1)"},
      {"llama.feed_forward_length", gguf_u32(0), "llama.feed_forward_length is 0"},
      {"llama.attention.head_count", gguf_u32(0), "llama.attention.head_count is 0"},
      {"llama.attention.head_count_kv", gguf_u32(3), "not a multiple of head_count_kv (3)"},
      {"llama.attention.key_length", gguf_u32(0), "llama.attention.key_length is 0"},
      {"llama.context_length", gguf_u32(0xffffffffu), "llama.context_length is 4294967295"},
      {"llama.attention.layer_norm_rms_epsilon", gguf_f32(-1.f), "must be a finite positive"},
      {"llama.rope.freq_base", gguf_f32(nan), "llama.rope.freq_base is nan"},
      {"tokenizer.ggml.eos_token_id", gguf_u32(999999), "past the vocabulary (256)"},
  };
  auto cpu = make_cpu_backend(1);
  for (const Bad& b : cases) {
    const std::string bad = dir.file("bad.gguf");
    rewrite_gguf(src, bad, [](const GgufTensorInfo&) { return 0u; }, {{b.key, b.value}});
    INFO(b.key << " -> " << b.says);
    CHECK_THROWS_WITH(config_from_gguf(GgufFile(bad)), Contains(b.says) && Contains("bad.gguf"));
    CHECK_THROWS_AS(Model::load(bad, *cpu), Error);
  }
  // The untouched file still loads.
  CHECK(config_from_gguf(GgufFile(src)).num_layers == 2);
}

TEST_CASE("WeightStore::release_owned frees owned tensors only", "[gguf][kquant]") {
  WeightStore store;
  store.add_owned("a", DType::F32, {2}, std::vector<uint8_t>(8, 1));
  const std::vector<float> ext = {1.f, 2.f};
  store.add_external("b", HostTensor{DType::F32, {2}, ext.data(), 8}, nullptr);
  store.release_owned("a");
  store.release_owned("b");
  store.release_owned("missing");
  REQUIRE(store.find("a") != nullptr);
  CHECK(store.find("a")->data == nullptr);
  CHECK(store.find("a")->shape == Shape{2});
  CHECK(store.find("b")->data == ext.data());
}

namespace {

bool have_device(const std::string& prefix) {
  for (const DeviceEntry& d : list_devices())
    if (d.info.id.compare(0, prefix.size(), prefix) == 0) return true;
  return false;
}

// The K-quant model on a GPU backend, against the CPU with the same weights: q4_1 where
// the backend runs it (its Q4_K matrices, Q5_K/Q6_K as q8_0: the CPU's default load),
// else q8_0 for every K-quant matrix (the CPU under q8f16_1), from the GGUF directly and
// from a native folder holding q4_1 (convert's output, requantized at upload). The
// transcoded tensors are uploaded and their host copies freed
// (WeightStore::release_owned). Prefill logits and those of a decode step after it (the
// fused single-token GEMVs) must be the CPU's within `tol`, the decode step's against the
// CPU's prefill of all the ids (which multiplies in float32: its own decode rounds x to 8
// bits).
void check_gpu_kquant(Backend& gpu, double tol) {
  const bool q4_1 = gpu.runs_weight_dtype(DType::Q4_1);
  if (!q4_1) {
    Graph g;
    const TensorId x = g.input("x", DType::F32, {2, 64});
    const TensorId w = g.weight("w", DType::Q4_1, {16, 64});
    g.add(Op::MatMul, "mm", {x, w}, DType::F32, {2, 16});
    const Node& mm = g.nodes()[0];
    CHECK_THAT(
        gpu.check(mm, {&g.tensor(mm.inputs[0]), &g.tensor(mm.inputs[1])}, g.tensor(mm.output)),
        Contains("q4_1 weights are not supported by the"));
  }
  TempDir dir;
  write_kquant_model(dir);
  auto cpu = make_cpu_backend(2);
  const std::string q = dir.file("q.gguf");
  auto cm = Model::load(q, *cpu, LoadOptions{q4_1 ? "" : "q8f16_1"});
  auto gm = Model::load(q, gpu);
  const std::string wq = "model.layers.0.self_attn.q_proj.weight";
  CHECK(gm->weight_dtype(wq) == (q4_1 ? DType::Q4_1 : DType::Q8_0));
  CHECK(gm->weight_bytes() == cm->weight_bytes());
  // Prefill of all but the last id, then the last one as a decode step.
  const std::vector<int32_t> prompt(kKquantIds.begin(), kKquantIds.end() - 1),
      last = {kKquantIds.back()};
  Session cs(*cm), gs(*gm);
  CHECK(max_rel_error(gs.forward(prompt, true), cs.forward(prompt, true)) <= tol);
  cs.reset();
  const std::vector<float> all = cs.forward(kKquantIds, true);
  const std::vector<float> want(all.end() - all.size() / kKquantIds.size(), all.end());
  CHECK(max_rel_error(gs.forward(last, false), want) <= tol);

  GenConfigOptions o;
  o.quantization = "q4f16_1";  // Q4_K matrices written as q4_1
  convert_model(q, dir.file("native"), o);
  auto nm = Model::load(dir.file("native"), gpu);
  CHECK(nm->weight_dtype(wq) == (q4_1 ? DType::Q4_1 : DType::Q8_0));
  Session ns(*nm);
  ns.forward(prompt, false);
  // Without q4_1: q4_1 -> f32 -> q8_0 rounds values that q4_1's f16 scales moved a
  // little, so some land on the other q8_0 step (max|x| / 254 a block): measured 6.0e-3
  // on lavapipe.
  CHECK(max_rel_error(ns.forward(last, false), want) <= (q4_1 ? tol : 2e-2));
}

}  // namespace

// Within what test_cuda_backend.cpp allows for q8f16_1 prefill (5e-3).
TEST_CASE("cuda: a K-quant GGUF gives the cpu's logits", "[cuda][gguf][kquant]") {
  if (!have_device("cuda:")) {
    WARN("no CUDA device: skipped");
    return;
  }
  auto gpu = create_backend("cuda:0");
  check_gpu_kquant(*gpu, 5e-3);
}

// The float32 GEMM path (the tensor-core one is fp16 and tested on its own).
TEST_CASE("vulkan: a K-quant GGUF gives the cpu's logits", "[vulkan][gguf][kquant]") {
  if (!have_device("vulkan:")) {
    WARN("no Vulkan device: skipped");
    return;
  }
  ScopedEnv fp32("LLM_VULKAN_COOPMAT", "0");
  SECTION("float GEMVs") {
    ScopedEnv no_dot("LLM_VULKAN_INT_DOT", "0");
    auto gpu = create_backend("vulkan:0");
    check_gpu_kquant(*gpu, 1e-4);
  }
  SECTION("integer-dot GEMVs (emulated on lavapipe)") {
    ScopedEnv dot("LLM_VULKAN_INT_DOT", "1");
    auto gpu = create_backend("vulkan:0");
    check_gpu_kquant(*gpu, 1e-3);
  }
}
