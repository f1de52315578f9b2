#include "core/formats/gguf_quants.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "core/formats/parallel_rows.h"
#include "core/formats/quantize.h"

namespace llm {

namespace {

constexpr int kQK = 32;    // values per block of the legacy types
constexpr int kQKK = 256;  // values per super-block of the K-quants

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// block_q4_1 (20 bytes): f16 d, f16 m, 16 bytes of nibbles; x = q * d + m.
// Byte j holds value j (low nibble) and value j + 16 (high nibble).
void decode_q4_1(const uint8_t* b, float* y) {
  const float d = half_at(b), m = half_at(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < kQK / 2; j++) {
    y[j] = (qs[j] & 0x0F) * d + m;
    y[j + kQK / 2] = (qs[j] >> 4) * d + m;
  }
}

// The fifth bit of value i sits in bit i of the 32-bit qh word (q5_0 / q5_1).
int q5_value(const uint8_t* qs, uint32_t qh, int i) {
  const int lo = i < kQK / 2 ? (qs[i] & 0x0F) : (qs[i - kQK / 2] >> 4);
  return lo | static_cast<int>(((qh >> i) & 1u) << 4);
}

// block_q5_0 (22 bytes): f16 d, u32 qh, 16 bytes of nibbles; x = (q - 16) * d.
void decode_q5_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  const uint32_t qh = u32_at(b + 2);
  for (int i = 0; i < kQK; i++) y[i] = (q5_value(b + 6, qh, i) - 16) * d;
}

// block_q5_1 (24 bytes): f16 d, f16 m, u32 qh, 16 bytes of nibbles; x = q * d + m.
void decode_q5_1(const uint8_t* b, float* y) {
  const float d = half_at(b), m = half_at(b + 2);
  const uint32_t qh = u32_at(b + 4);
  for (int i = 0; i < kQK; i++) y[i] = q5_value(b + 8, qh, i) * d + m;
}

// The 6-bit scale and min of sub-block j (0..7) packed into 12 bytes (q4_K /
// q5_K): sub-blocks 0-3 use the low 6 bits of bytes j and j + 4; sub-blocks 4-7
// take their low 4 bits from byte j + 4 and their top 2 from bytes j - 4 / j.
void k_scale_min(const uint8_t* s, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// block_q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of
// nibbles. Eight sub-blocks of 32: x = d*sc * q - dmin*mn. Each 32 bytes of qs
// hold two sub-blocks: the low nibbles the first, the high nibbles the second.
// block_q5_K (176 bytes) puts 32 bytes qh before the nibbles: bit j of qh[l] is
// the fifth bit of value l of sub-block j.
void decode_q45_K(const uint8_t* b, float* y, bool five) {
  const float d = half_at(b), dmin = half_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + (five ? 48 : 16);
  for (int j = 0; j < 8; j++) {
    int sc, mn;
    k_scale_min(scales, j, &sc, &mn);
    const float dl = d * sc, ml = dmin * mn;
    const uint8_t* q = qs + (j / 2) * 32;
    const int shift = (j % 2) * 4;
    for (int l = 0; l < 32; l++) {
      const int hi = five ? ((qh[l] >> j) & 1) << 4 : 0;
      y[j * 32 + l] = dl * (((q[l] >> shift) & 0x0F) | hi) - ml;
    }
  }
}

void decode_q4_K(const uint8_t* b, float* y) { decode_q45_K(b, y, false); }
void decode_q5_K(const uint8_t* b, float* y) { decode_q45_K(b, y, true); }

// block_q6_K (210 bytes): 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits),
// 16 int8 scales, f16 d. x = d * scale[i / 16] * (q - 32). Each half of 128
// values uses 64 bytes of ql and 32 of qh: value l + 32k (k = 0..3, l < 32)
// takes nibble k / 2 of ql[l + 32 (k % 2)] and bits 2k..2k+1 of qh[l].
void decode_q6_K(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half_at(b + 208);
  for (int half = 0; half < 2; half++) {
    const uint8_t* l4 = ql + half * 64;
    const uint8_t* h2 = qh + half * 32;
    for (int k = 0; k < 4; k++) {
      for (int l = 0; l < 32; l++) {
        const int i = half * 128 + k * 32 + l;
        const int lo = (l4[l + 32 * (k % 2)] >> (4 * (k / 2))) & 0x0F;
        const int hi = (h2[l] >> (2 * k)) & 3;
        // ggml's order: (d * scale) * q, in float.
        y[i] = d * sc[i / 16] * static_cast<float>((lo | (hi << 4)) - 32);
      }
    }
  }
}

// A q4_K super-block as eight q4_1 blocks (value = q * d + m): sub-block j's nibbles
// regrouped (q4_1 pairs value i with value i + 16 in a byte), d = d*sc and m = -dmin*mn
// rounded to f16. False if one of them leaves f16's range.
bool q4_K_to_q4_1(const uint8_t* b, uint8_t* out) {
  const float d = half_at(b), dmin = half_at(b + 2);
  const uint8_t* qs = b + 16;
  for (int j = 0; j < 8; j++, out += 20) {
    int sc, mn;
    k_scale_min(b + 4, j, &sc, &mn);
    const uint16_t dh = f32_to_f16(d * sc), mh = f32_to_f16(-(dmin * mn));
    if (!std::isfinite(f16_to_f32(dh)) || !std::isfinite(f16_to_f32(mh))) return false;
    std::memcpy(out, &dh, 2);
    std::memcpy(out + 2, &mh, 2);
    const uint8_t* q = qs + (j / 2) * 32;
    const int shift = (j % 2) * 4;
    for (int i = 0; i < 16; i++) {
      const int lo = (q[i] >> shift) & 0x0F, hi = (q[i + 16] >> shift) & 0x0F;
      out[4 + i] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
  return true;
}

using DecodeFn = void (*)(const uint8_t*, float*);

struct Entry {
  uint32_t type;
  GgmlBlockLayout layout;
  DecodeFn decode;
};

const Entry kEntries[] = {
    {kGgmlQ4_1, {"Q4_1", kQK, 20}, decode_q4_1},   {kGgmlQ5_0, {"Q5_0", kQK, 22}, decode_q5_0},
    {kGgmlQ5_1, {"Q5_1", kQK, 24}, decode_q5_1},   {kGgmlQ4_K, {"Q4_K", kQKK, 144}, decode_q4_K},
    {kGgmlQ5_K, {"Q5_K", kQKK, 176}, decode_q5_K}, {kGgmlQ6_K, {"Q6_K", kQKK, 210}, decode_q6_K},
};

const Entry* find_entry(uint32_t t) {
  for (const Entry& e : kEntries)
    if (e.type == t) return &e;
  return nullptr;
}

}  // namespace

const GgmlBlockLayout* ggml_block_layout(uint32_t ggml_type) {
  const Entry* e = find_entry(ggml_type);
  return e ? &e->layout : nullptr;
}

void dequantize_ggml_row(uint32_t ggml_type, const void* src, float* dst, int64_t n) {
  const Entry* e = find_entry(ggml_type);
  if (e == nullptr) fail("ggml type %u cannot be decoded", ggml_type);
  if (n % e->layout.block_elems != 0)
    fail("%s rows must be a multiple of %lld values, got %lld", e->layout.name,
         static_cast<long long>(e->layout.block_elems), static_cast<long long>(n));
  const uint8_t* b = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n / e->layout.block_elems; i++)
    e->decode(b + i * e->layout.block_bytes, dst + i * e->layout.block_elems);
}

std::vector<uint8_t> transcode_ggml_tensor(uint32_t ggml_type, const void* src, const Shape& shape,
                                           DType target, int n_threads) {
  const GgmlBlockLayout* layout = ggml_block_layout(ggml_type);
  if (layout == nullptr) fail("ggml type %u cannot be decoded", ggml_type);
  const bool to_q4_1 = target == DType::Q4_1;
  if (to_q4_1 && !ggml_to_q4_1(ggml_type))
    fail("%s tensors do not transcode to q4_1 (Q4_1 and Q4_K do)", layout->name);
  if (!is_float(target) && target != DType::Q8_0 && !to_q4_1)
    fail("%s tensors transcode to f32, f16, bf16 or q8_0, not %s", layout->name,
         dtype_name(target));
  const int64_t cols = shape.row_len(), rows = shape.rows();
  if (cols % layout->block_elems != 0)  // checked before threads start: they must not throw
    fail("%s rows must be a multiple of %lld values, got %lld", layout->name,
         static_cast<long long>(layout->block_elems), static_cast<long long>(cols));
  const size_t src_row = static_cast<size_t>(cols / layout->block_elems) * layout->block_bytes;
  const size_t dst_row = dtype_row_bytes(target, cols);
  std::vector<uint8_t> out(dst_row * rows);
  const uint8_t* in = static_cast<const uint8_t*>(src);
  if (to_q4_1 && ggml_type == kGgmlQ4_1) {
    std::memcpy(out.data(), in, out.size());
    return out;
  }
  std::atomic<bool> in_range{true};
  auto work = [&](int64_t r0, int64_t r1) {
    std::vector<float> f(cols);
    for (int64_t r = r0; r < r1; r++) {
      if (to_q4_1) {  // q4_K: each super-block is 8 q4_1 blocks, no float decode
        const uint8_t* b = in + r * src_row;
        uint8_t* dst = out.data() + r * dst_row;
        for (int64_t i = 0; i < cols / kQKK; i++)
          if (!q4_K_to_q4_1(b + i * 144, dst + i * 8 * 20)) in_range = false;
        continue;
      }
      dequantize_ggml_row(ggml_type, static_cast<const uint8_t*>(src) + r * src_row, f.data(),
                          cols);
      uint8_t* dst = out.data() + r * dst_row;
      if (is_float(target)) {
        convert_from_f32(target, f.data(), dst, cols);
      } else {
        quantize_row_q8_0(f.data(), dst, cols);
      }
    }
  };
  parallel_rows(rows, n_threads, work);
  if (!in_range) fail("a Q4_K scale or min exceeds the range of q4_1's f16 scales");
  return out;
}

bool ggml_to_q4_1(uint32_t ggml_type) { return ggml_type == kGgmlQ4_1 || ggml_type == kGgmlQ4_K; }

}  // namespace llm
