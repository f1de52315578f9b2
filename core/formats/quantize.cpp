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

std::vector<uint8_t> quantize_tensor(const HostTensor& src, DType target, int n_threads) {
  if (!dtype_info(src.dtype).is_float) fail("cannot quantize a %s tensor", dtype_name(src.dtype));
  if (target != DType::Q8_0 && target != DType::Q4_0)
    fail("cannot quantize to %s", dtype_name(target));
  const int64_t rows = src.shape.rows(), cols = src.shape.row_len();
  check_row(cols);
  const size_t in_row = dtype_row_bytes(src.dtype, cols), out_row = dtype_row_bytes(target, cols);
  std::vector<uint8_t> out(out_row * rows);
  auto work = [&](int64_t r0, int64_t r1) {
    std::vector<float> row(cols);
    for (int64_t r = r0; r < r1; r++) {
      convert_to_f32(src.dtype, static_cast<const uint8_t*>(src.data) + r * in_row, row.data(),
                     cols);
      if (target == DType::Q8_0)
        quantize_row_q8_0(row.data(), out.data() + r * out_row, cols);
      else
        quantize_row_q4_0(row.data(), out.data() + r * out_row, cols);
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
