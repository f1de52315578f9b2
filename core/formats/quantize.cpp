#include "core/formats/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include "core/error.h"
#include "core/formats/parallel_rows.h"

namespace llm {

namespace {

constexpr int kBlock = 32;

void check_row(int64_t n) {
  if (n % kBlock != 0)
    fail("quantization needs rows that are a multiple of %d, got %lld", kBlock,
         static_cast<long long>(n));
}

}  // namespace

void quantize_row_q8_0(const float* src, void* dst, int64_t n) {
  check_row(n);
  uint8_t* out = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / kBlock; b++, src += kBlock, out += 34) {
    float amax = 0.f;
    for (int j = 0; j < kBlock; j++) amax = std::max(amax, std::fabs(src[j]));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    const uint16_t dh = f32_to_f16(d);
    std::memcpy(out, &dh, 2);
    for (int j = 0; j < kBlock; j++)
      out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(src[j] * id)));
  }
}

void quantize_row_q4_0(const float* src, void* dst, int64_t n) {
  check_row(n);
  uint8_t* out = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / kBlock; b++, src += kBlock, out += 18) {
    // The scale keeps the sign of the largest magnitude, so that value maps to -8 exactly.
    float amax = 0.f, max = 0.f;
    for (int j = 0; j < kBlock; j++) {
      if (amax < std::fabs(src[j])) {
        amax = std::fabs(src[j]);
        max = src[j];
      }
    }
    const float d = max / -8.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    const uint16_t dh = f32_to_f16(d);
    std::memcpy(out, &dh, 2);
    for (int j = 0; j < kBlock / 2; j++) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(src[j] * id + 8.5f)));
      const int hi =
          std::min(15, static_cast<int>(static_cast<int8_t>(src[j + kBlock / 2] * id + 8.5f)));
      out[2 + j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void dequantize_row_q8_0(const void* src, float* dst, int64_t n) {
  check_row(n);
  const uint8_t* in = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kBlock; b++, in += 34, dst += kBlock) {
    uint16_t dh;
    std::memcpy(&dh, in, 2);
    const float d = f16_to_f32(dh);
    for (int j = 0; j < kBlock; j++) dst[j] = static_cast<int8_t>(in[2 + j]) * d;
  }
}

void dequantize_row_q4_0(const void* src, float* dst, int64_t n) {
  check_row(n);
  const uint8_t* in = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kBlock; b++, in += 18, dst += kBlock) {
    uint16_t dh;
    std::memcpy(&dh, in, 2);
    const float d = f16_to_f32(dh);
    for (int j = 0; j < kBlock / 2; j++) {
      dst[j] = ((in[2 + j] & 0x0f) - 8) * d;
      dst[j + kBlock / 2] = ((in[2 + j] >> 4) - 8) * d;
    }
  }
}

// ggml's quantize_row_q4_1_ref: d = (max - min) / 15, m = min, q rounded half up.
void quantize_row_q4_1(const float* src, void* dst, int64_t n) {
  check_row(n);
  uint8_t* out = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / kBlock; b++, src += kBlock, out += 20) {
    float min = src[0], max = src[0];
    for (int j = 1; j < kBlock; j++) {
      min = std::min(min, src[j]);
      max = std::max(max, src[j]);
    }
    const float d = (max - min) / 15.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    const uint16_t dh = f32_to_f16(d), mh = f32_to_f16(min);
    std::memcpy(out, &dh, 2);
    std::memcpy(out + 2, &mh, 2);
    for (int j = 0; j < kBlock / 2; j++) {
      const int lo =
          std::min(15, static_cast<int>(static_cast<int8_t>((src[j] - min) * id + 0.5f)));
      const int hi = std::min(
          15, static_cast<int>(static_cast<int8_t>((src[j + kBlock / 2] - min) * id + 0.5f)));
      out[4 + j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void dequantize_row_q4_1(const void* src, float* dst, int64_t n) {
  check_row(n);
  const uint8_t* in = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / kBlock; b++, in += 20, dst += kBlock) {
    uint16_t dh, mh;
    std::memcpy(&dh, in, 2);
    std::memcpy(&mh, in + 2, 2);
    const float d = f16_to_f32(dh), m = f16_to_f32(mh);
    for (int j = 0; j < kBlock / 2; j++) {
      dst[j] = (in[4 + j] & 0x0f) * d + m;
      dst[j + kBlock / 2] = (in[4 + j] >> 4) * d + m;
    }
  }
}

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
  switch (t) {
    case DType::Q8_0:
      return quantize_row_q8_0(src, dst, n);
    case DType::Q4_0:
      return quantize_row_q4_0(src, dst, n);
    case DType::Q4_1:
      return quantize_row_q4_1(src, dst, n);
    default:
      fail("cannot quantize to %s", dtype_name(t));
  }
}

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  switch (t) {
    case DType::Q8_0:
      return dequantize_row_q8_0(src, dst, n);
    case DType::Q4_0:
      return dequantize_row_q4_0(src, dst, n);
    case DType::Q4_1:
      return dequantize_row_q4_1(src, dst, n);
    default:
      fail("%s is not a quantized type", dtype_name(t));
  }
}

std::vector<uint8_t> quantize_tensor(const HostTensor& src, DType target, int n_threads) {
  if (!is_float(src.dtype) && !is_quant(src.dtype))
    fail("cannot quantize a %s tensor", dtype_name(src.dtype));
  if (!is_quant(target)) fail("cannot quantize to %s", dtype_name(target));
  const int64_t rows = src.shape.rows(), cols = src.shape.row_len();
  check_row(cols);
  const size_t in_row = dtype_row_bytes(src.dtype, cols), out_row = dtype_row_bytes(target, cols);
  std::vector<uint8_t> out(out_row * rows);
  auto work = [&](int64_t r0, int64_t r1) {
    std::vector<float> row(cols);
    for (int64_t r = r0; r < r1; r++) {
      const uint8_t* in = static_cast<const uint8_t*>(src.data) + r * in_row;
      if (is_float(src.dtype))
        convert_to_f32(src.dtype, in, row.data(), cols);
      else
        dequantize_row(src.dtype, in, row.data(), cols);
      quantize_row(target, row.data(), out.data() + r * out_row, cols);
    }
  };
  parallel_rows(rows, n_threads, work);
  return out;
}

namespace {

const QuantScheme kSchemes[] = {{"q0f32", DType::F32},
                                {"q0f16", DType::F16},
                                {"q0bf16", DType::BF16},
                                {"q8f16_1", DType::Q8_0},
                                {"q4f16_1", DType::Q4_0}};

}  // namespace

QuantScheme parse_quant_scheme(const std::string& name) {
  for (const QuantScheme& s : kSchemes)
    if (s.name == name) return s;
  fail("unknown quantization '%s' (known: %s)", name.c_str(), quant_scheme_names().c_str());
}

std::string quant_scheme_names() {
  std::string names;
  for (const QuantScheme& s : kSchemes) names += (names.empty() ? "" : ", ") + s.name;
  return names;
}

}  // namespace llm
