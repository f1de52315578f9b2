// The CPU backend against naive double-precision references, one op per graph.
// Sizes are deliberately awkward (not multiples of any vector width or tile).
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/thread_pool.h"
#include "core/backend.h"
#include "core/dtype.h"
#include "core/engine/sampler.h"
#include "core/error.h"
#include "core/formats/quantize.h"
#include "core/graph.h"
#include "test_util.h"

namespace {

using namespace llm;

using llm::test::Bytes;
using llm::test::sample_row_params;
using llm::test::to_bytes;
using llm::test::uniform;

std::vector<float> to_floats(const Bytes& b) {
  std::vector<float> v(b.size() / sizeof(float));
  if (!v.empty()) std::memcpy(v.data(), b.data(), b.size());
  return v;
}

// Rounds floats to a float dtype: the encoded bytes, and the values they decode to
// (which the double reference uses).
Bytes encode(DType t, std::vector<float>& v) {
  if (t == DType::F32) return to_bytes(v);
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); i++) {
    h[i] = t == DType::F16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
    v[i] = t == DType::F16 ? f16_to_f32(h[i]) : bf16_to_f32(h[i]);
  }
  return to_bytes(h);
}

// Runs the single node of `g` on `be`. All its tensors live in one arena buffer at
// non-zero offsets; inputs come from `data` (missing ones are zero). Runs the
// program twice (a program must be replayable) and returns the output bytes.
Bytes run_node(Backend& be, const Graph& g, const std::map<TensorId, Bytes>& data) {
  REQUIRE(g.nodes().size() == 1);
  const Node& node = g.nodes()[0];
  std::vector<TensorId> ids = node.inputs;
  ids.push_back(node.output);
  std::map<TensorId, size_t> offset;
  size_t total = 192;  // the first tensor does not start at the buffer's base
  for (TensorId id : ids) {
    if (offset.count(id)) continue;
    offset[id] = total;
    total += (tensor_bytes(g.tensor(id).dtype, g.tensor(id).shape) + 64 + 63) / 64 * 64;
  }
  std::unique_ptr<DeviceBuffer> arena = be.alloc(total, "test arena");
  be.clear(*arena, 0, total);
  for (const auto& d : data) {
    REQUIRE(offset.count(d.first));
    REQUIRE(d.second.size() == tensor_bytes(g.tensor(d.first).dtype, g.tensor(d.first).shape));
    be.upload(*arena, offset[d.first], d.second.data(), d.second.size());
  }

  std::vector<const TensorInfo*> infos;
  for (TensorId id : node.inputs) infos.push_back(&g.tensor(id));
  REQUIRE(be.check(node, infos, g.tensor(node.output)) == "");

  auto ref = [&](TensorId id) {
    TensorRef r;
    r.buffer = arena.get();
    r.offset = offset[id];
    r.dtype = g.tensor(id).dtype;
    r.shape = g.tensor(id).shape;
    return r;
  };
  BoundNode bn;
  bn.node = &node;
  for (TensorId id : node.inputs) bn.inputs.push_back(ref(id));
  bn.output = ref(node.output);
  std::unique_ptr<Program> prog = be.compile({bn});
  prog->run();
  prog->run();

  const TensorInfo& out = g.tensor(node.output);
  Bytes result(tensor_bytes(out.dtype, out.shape));
  be.download(*arena, offset[node.output], result.data(), result.size());
  return result;
}

// max |got - ref| <= tol * max |ref|.
void expect_close(const std::vector<float>& got, const std::vector<double>& ref,
                  double tol = 1e-5) {
  REQUIRE(got.size() == ref.size());
  double max_ref = 0, max_err = 0;
  size_t worst = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    max_ref = std::max(max_ref, std::fabs(ref[i]));
    const double err = std::fabs(got[i] - ref[i]);
    if (!(err <= max_err)) {  // also catches nan
      max_err = err;
      worst = i;
    }
  }
  INFO("max abs error " << max_err << " at " << worst << " (got " << got[worst] << ", want "
                        << ref[worst] << "), max |ref| " << max_ref);
  CHECK(max_err <= tol * std::max(max_ref, 1e-30));
}

// The x86 levels whose matmul / decoding code paths this machine can run: the
// AVX-512, AVX2 and SSE2 kernels are all checked on an AVX-512 machine.
std::vector<int> x86_levels() {
#if LLM_CPU_X86_MULTIVERSION
  std::vector<int> v;
  for (int level : {4, 3, 1})
    if (level <= cpu::x86_level()) v.push_back(level);
  return v;
#else
  return {0};
#endif
}

// Caps the x86 level for its lifetime.
struct LevelCap {
  explicit LevelCap(int level) {
#if LLM_CPU_X86_MULTIVERSION
    cpu::set_x86_level_cap(level);
#endif
    (void)level;
  }
  ~LevelCap() {
#if LLM_CPU_X86_MULTIVERSION
    cpu::set_x86_level_cap(4);
#endif
  }
};

std::vector<std::unique_ptr<Backend>> backends_1_and_3() {
  std::vector<std::unique_ptr<Backend>> v;
  v.push_back(make_cpu_backend(1));
  v.push_back(make_cpu_backend(3));
  return v;
}

// ---- MatMul ------------------------------------------------------------------------------

void check_matmul(Backend& be, int64_t T, int64_t K, int64_t N, DType wt, bool with_bias,
                  DType bias_type = DType::F32) {
  CAPTURE(T, K, N, dtype_name(wt), with_bias, dtype_name(bias_type));
  std::mt19937 rng(static_cast<uint32_t>(T * 1000003 + K * 1009 + N));
  std::vector<float> x = uniform(T * K, rng), w = uniform(N * K, rng), b = uniform(N, rng);
  const Bytes w_bytes = encode(wt, w);
  const Bytes b_bytes = encode(bias_type, b);

  Graph g;
  const TensorId tx = g.input("x", DType::F32, {T, K});
  const TensorId tw = g.weight("w", wt, {N, K});
  std::vector<TensorId> ins = {tx, tw};
  std::map<TensorId, Bytes> data = {{tx, to_bytes(x)}, {tw, w_bytes}};
  if (with_bias) {
    const TensorId tb = g.weight("b", bias_type, {N});
    ins.push_back(tb);
    data[tb] = b_bytes;
  }
  g.add(Op::MatMul, "mm", ins, DType::F32, {T, N});
  const std::vector<float> y = to_floats(run_node(be, g, data));

  std::vector<double> ref(T * N);
  for (int64_t t = 0; t < T; t++)
    for (int64_t n = 0; n < N; n++) {
      double s = with_bias ? b[n] : 0.0;
      for (int64_t k = 0; k < K; k++) s += double(x[t * K + k]) * w[n * K + k];
      ref[t * N + n] = s;
    }
  expect_close(y, ref);
}

TEST_CASE("cpu matmul f32/f16/bf16 matches a double reference", "[cpu][matmul]") {
  struct Size {
    int64_t T, K, N;
  };
  // Decode, small prefill, K over two K slices, more tokens than a token block, K = 1,
  // a single output row, decode over several slices, one token tile over two slices.
  const Size sizes[] = {{1, 67, 13}, {7, 67, 13},  {5, 2100, 37}, {70, 130, 9}, {3, 1, 5},
                        {2, 9, 1},   {1, 300, 67}, {1, 1100, 21}, {4, 600, 10}};
  const std::vector<int> levels = x86_levels();  // before any cap
  for (int level : levels) {
    LevelCap cap(level);
    for (auto& be : backends_1_and_3()) {
      CAPTURE(level, be->info().details);
      for (DType wt : {DType::F32, DType::F16, DType::BF16})
        for (const Size& s : sizes)
          for (bool bias : {false, true}) check_matmul(*be, s.T, s.K, s.N, wt, bias);
    }
  }
}

TEST_CASE("cpu matmul takes f16 and bf16 biases", "[cpu][matmul]") {
  auto be = make_cpu_backend(2);
  check_matmul(*be, 4, 40, 11, DType::F16, true, DType::F16);
  check_matmul(*be, 1, 40, 11, DType::F32, true, DType::BF16);
}

// ---- Quantized weights (q8_0 / q4_0 / q4_1) ----------------------------------------------

// Quantizes rows of k floats to t; v becomes the values the bytes decode to.
Bytes quantize_rows(DType t, std::vector<float>& v, int64_t k) {
  const int64_t rows = static_cast<int64_t>(v.size()) / k;
  const size_t rb = dtype_row_bytes(t, k);
  Bytes q(rb * rows);
  for (int64_t r = 0; r < rows; r++) {
    quantize_row(t, &v[r * k], &q[r * rb], k);
    dequantize_row(t, &q[r * rb], &v[r * k], k);
  }
  return q;
}

// Decode with quantized weights (up to cpu::kQuantGemvMaxTokens tokens) quantizes each
// block of 32 values of x to int8 with d = max|x| / 127, so x is off by at most d / 2
// per element, and output n by at most sum_blocks d / 2 * sum_block |w[n, k]| (w as
// dequantized; q4_1's min term takes the sum of the rounded x, so the same bound) plus
// float32 rounding: each output is checked against that bound.
// Typically: x uniform in [-1, 1] has d ~ 1/127, an rms error of d / sqrt(12) per
// element against an rms x of 1 / sqrt(3), so y's rms error is ~3.9e-3 of its rms
// (independent of K). Measured max |err| / max |y|: 3.1e-3 .. 5.1e-3 over these sizes
// (several outputs each); kQuantRelTol gives 2x margin, while a wrong nibble order or
// scale is off by the order of max |y|. Prefill (more tokens) runs in float32 on the
// dequantized weights and is only off by float32 rounding.
constexpr double kQuantRelTol = 1e-2;

// What x holds: uniform values; one large outlier; values on the q8 grid (per block
// k / 128 with |k| <= 127, and +-127 / 128 present), which 8-bit activations represent
// exactly, so the integer path must then match to float32 rounding.
enum class XKind { kUniform, kOutlier, kOnGrid };

void check_matmul_quant(Backend& be, int64_t T, int64_t K, int64_t N, DType wt, bool with_bias,
                        XKind kind) {
  CAPTURE(T, K, N, dtype_name(wt), with_bias, static_cast<int>(kind));
  std::mt19937 rng(static_cast<uint32_t>(T * 7919 + K * 31 + N));
  std::vector<float> x = uniform(T * K, rng), w = uniform(N * K, rng), b = uniform(N, rng);
  if (kind == XKind::kOnGrid) {
    for (size_t i = 0; i < x.size(); i++) x[i] = std::round(x[i] * 127) / 128;
    for (size_t i = 0; i < x.size(); i += 32)
      x[i + i / 32 % 32] = i % 64 ? 127.f / 128 : -127.f / 128;
  }
  // A block of x that is all zero (d = 0), and one with a single large value (its
  // block's d grows with it, and so does the error: checked against the bound only).
  if (K >= 64) std::fill(x.begin() + 32, x.begin() + 64, 0.f);
  if (kind == XKind::kOutlier) x[K - 5] = 40.f;
  const Bytes w_bytes = quantize_rows(wt, w, K);

  Graph g;
  const TensorId tx = g.input("x", DType::F32, {T, K});
  const TensorId tw = g.weight("w", wt, {N, K});
  std::vector<TensorId> ins = {tx, tw};
  std::map<TensorId, Bytes> data = {{tx, to_bytes(x)}, {tw, w_bytes}};
  if (with_bias) {
    const TensorId tb = g.weight("b", DType::F32, {N});
    ins.push_back(tb);
    data[tb] = to_bytes(b);
  }
  g.add(Op::MatMul, "mm", ins, DType::F32, {T, N});
  const std::vector<float> y = to_floats(run_node(be, g, data));

  std::vector<double> ref(T * N), bound(T * N);
  for (int64_t t = 0; t < T; t++)
    for (int64_t n = 0; n < N; n++) {
      double s = with_bias ? b[n] : 0.0, e = 0.0, mag = 0.0;
      for (int64_t k0 = 0; k0 < K; k0 += 32) {
        double amax = 0, wsum = 0;
        for (int64_t k = k0; k < k0 + 32; k++) {
          const double xv = x[t * K + k], wv = w[n * K + k];
          s += xv * wv;
          amax = std::max(amax, std::fabs(xv));
          wsum += std::fabs(wv);
          mag += std::fabs(xv * wv);
        }
        e += amax / 127 / 2 * wsum;
      }
      ref[t * N + n] = s;
      const bool int8_path = T <= cpu::kQuantGemvMaxTokens && kind != XKind::kOnGrid;
      // float32 rounding: measured <= 6e-8 of sum |x w|.
      bound[t * N + n] = (int8_path ? e * (1 + 1e-4) : 0.0) + 1e-6 * (mag + 1.0);
    }
  size_t over = 0;
  double max_ref = 0, max_err = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    const double err = std::fabs(y[i] - ref[i]);
    if (!(err <= bound[i])) over++;
    max_ref = std::max(max_ref, std::fabs(ref[i]));
    max_err = std::max(max_err, err);
  }
  CHECK(over == 0);
  INFO("max abs error " << max_err << ", max |ref| " << max_ref);
  if (kind == XKind::kUniform && T * N >= 6) CHECK(max_err <= kQuantRelTol * max_ref);
}

TEST_CASE("cpu matmul q8_0/q4_0/q4_1 matches a double reference on the dequantized weights",
          "[cpu][matmul][quant]") {
  struct Size {
    int64_t T, K, N;
  };
  // Decode and a few tokens (integer path, up to cpu::kQuantGemvMaxTokens), prefill
  // (float path) within and over a token block, a long K (three float K slices), N
  // not a multiple of the row tiles, a single block and row, both sides of the switch.
  const Size sizes[] = {{1, 96, 13},  {1, 2080, 13}, {3, 96, 13},   {7, 96, 13},
                        {7, 2080, 9}, {12, 96, 13},  {70, 96, 13},  {70, 2080, 5},
                        {1, 32, 1},   {2, 64, 6},    {8, 2080, 13}, {9, 64, 7}};
  const std::vector<int> levels = x86_levels();
  for (int level : levels) {
    LevelCap cap(level);
    for (auto& be : backends_1_and_3()) {
      CAPTURE(level, be->info().details, cpu::matmul_q_isa());
      for (DType wt : {DType::Q8_0, DType::Q4_0, DType::Q4_1})
        for (const Size& s : sizes)
          for (bool bias : {false, true})
            for (XKind kind : {XKind::kUniform, XKind::kOutlier, XKind::kOnGrid})
              check_matmul_quant(*be, s.T, s.K, s.N, wt, bias, kind);
    }
  }
}

// q4_1's q * d + m may round once (a fused multiply-add) or twice: within 2^-23 of |m| + 15 |d|.
TEST_CASE("cpu get_rows from q8_0/q4_0/q4_1 tables is exact", "[cpu][get_rows][quant]") {
  const int64_t V = 11, D = 96;
  const std::vector<int32_t> ids = {3, 0, 10, 3, 7};
  auto be = make_cpu_backend(3);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    CAPTURE(dtype_name(t));
    std::mt19937 rng(6);
    std::vector<float> table = uniform(V * D, rng, -3.f, 3.f);
    const Bytes tb = quantize_rows(t, table, D);
    Graph g;
    const TensorId tt = g.weight("table", t, {V, D});
    const TensorId ti = g.input("ids", DType::I32, {static_cast<int64_t>(ids.size())});
    g.add(Op::GetRows, "embed", {tt, ti}, DType::F32, {static_cast<int64_t>(ids.size()), D});
    const auto y = to_floats(run_node(*be, g, {{tt, tb}, {ti, to_bytes(ids)}}));
    std::vector<float> want(ids.size() * D);
    const size_t rb = dtype_row_bytes(t, D);
    for (size_t r = 0; r < ids.size(); r++) dequantize_row(t, &tb[ids[r] * rb], &want[r * D], D);
    if (t != DType::Q4_1) {
      CHECK(std::memcmp(y.data(), want.data(), want.size() * 4) == 0);
      continue;
    }
    double worst = 0;  // in units of the bound: values in [-3, 3] give |m| + 15 |d| <= 9
    for (size_t i = 0; i < want.size(); i++)
      worst = std::max(worst, std::fabs(double(y[i]) - want[i]) / (9 * 0x1p-23));
    CHECK(worst <= 1.0);
  }
}

TEST_CASE("cpu check takes quantized matmul weights and tables, and nothing else quantized",
          "[cpu][quant]") {
  auto be = make_cpu_backend(1);
  auto why = [&](const Graph& g) {
    const Node& n = g.nodes()[0];
    std::vector<const TensorInfo*> ins;
    for (TensorId id : n.inputs) ins.push_back(&g.tensor(id));
    return be->check(n, ins, g.tensor(n.output));
  };
  for (DType wt : {DType::Q4_0, DType::Q8_0, DType::Q4_1}) {
    CAPTURE(dtype_name(wt));
    {
      Graph g;
      const TensorId x = g.input("x", DType::F32, {2, 64});
      const TensorId w = g.weight("w", wt, {16, 64});
      g.add(Op::MatMul, "mm", {x, w}, DType::F32, {2, 16});
      CHECK(why(g) == "");
    }
    {
      Graph g;
      const TensorId t = g.weight("table", wt, {16, 64});
      const TensorId ids = g.input("ids", DType::I32, {3});
      g.add(Op::GetRows, "embed", {t, ids}, DType::F32, {3, 64});
      CHECK(why(g) == "");
    }
    {  // rows must be whole blocks
      Graph g;
      const TensorId x = g.input("x", DType::F32, {2, 40});
      const TensorId w = g.weight("w", wt, {16, 40});
      g.add(Op::MatMul, "mm", {x, w}, DType::F32, {2, 16});
      CHECK_THAT(why(g), Catch::Contains("multiple of 32"));
    }
    {  // a quantized bias
      Graph g;
      const TensorId x = g.input("x", DType::F32, {2, 64});
      const TensorId w = g.weight("w", DType::F32, {32, 64});
      const TensorId b = g.weight("b", wt, {32});
      g.add(Op::MatMul, "mm", {x, w, b}, DType::F32, {2, 32});
      CHECK_THAT(why(g), Catch::Contains(dtype_name(wt)) && Catch::Contains("not supported"));
    }
    {  // quantized norm weights
      Graph g;
      const TensorId x = g.input("x", DType::F32, {2, 64});
      const TensorId w = g.weight("w", wt, {64});
      OpParams p;
      p.eps = 1e-5f;
      g.add(Op::RmsNorm, "norm", {x, w}, DType::F32, {2, 64}, p);
      CHECK_THAT(why(g), Catch::Contains(dtype_name(wt)) && Catch::Contains("not supported"));
    }
    {  // a quantized x
      Graph g;
      const TensorId x = g.input("x", wt, {2, 64});
      const TensorId w = g.weight("w", DType::F32, {16, 64});
      g.add(Op::MatMul, "mm", {x, w}, DType::F32, {2, 16});
      CHECK_THAT(why(g), Catch::Contains(dtype_name(wt)));
    }
  }
}

// Every backend checks nodes through check_op (and adds its own limits): its reasons
// name the backend that asked.
TEST_CASE("check_op names the backend in its reasons", "[cpu][errors]") {
  TensorInfo src{"k", TensorKind::Intermediate, DType::F32, {1, 64}, {}};
  TensorInfo slots{"s", TensorKind::Input, DType::I32, {1}, {}};
  TensorInfo cache{"c", TensorKind::State, DType::Q8_0, {16, 64}, {}};
  Node append;
  append.op = Op::KvAppend;
  for (const char* backend : {"cpu", "cuda", "vulkan"}) {
    CAPTURE(backend);
    const std::string why = check_op(append, {&src, &slots, &cache}, cache, backend);
    CHECK_THAT(why, Catch::Contains("kv_append: q8_0 caches are not supported by the " +
                                    std::string(backend) + " backend yet"));
    Node bad;
    bad.op = Op::kCount;
    CHECK(check_op(bad, {&src, &src}, src, backend) ==
          "op " + std::to_string(static_cast<int>(Op::kCount)) + " is not implemented by the " +
              backend + " backend");
  }
}

// ---- Attention ---------------------------------------------------------------------------

struct AttnCase {
  int n_heads, n_kv_heads, head_dim, page_size;
  int window = 0;
  float softcap = 0.f;
  float scale = 0.f;  // 0: 1/sqrt(head_dim)
  DType cache_type = DType::F32;
  std::vector<int32_t> seq_ids, positions;
  std::vector<std::vector<int32_t>> block_table;  // per sequence, padded with -1
  int n_pages = 10;
};

void check_attention(Backend& be, const AttnCase& c) {
  CAPTURE(c.n_heads, c.n_kv_heads, c.head_dim, c.window, c.softcap, dtype_name(c.cache_type));
  const int64_t T = static_cast<int64_t>(c.positions.size());
  const int64_t H = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim, ps = c.page_size;
  const int64_t rows = int64_t{c.n_pages} * ps;
  const int64_t S = static_cast<int64_t>(c.block_table.size());
  int64_t P = 0;
  for (const auto& r : c.block_table) P = std::max<int64_t>(P, static_cast<int64_t>(r.size()));
  std::vector<int32_t> bt(S * P, -1);
  for (int64_t s = 0; s < S; s++)
    std::copy(c.block_table[s].begin(), c.block_table[s].end(), bt.begin() + s * P);

  std::mt19937 rng(1234);
  std::vector<float> q = uniform(T * H * D, rng);
  // The whole cache is random, so reading a slot outside the context shows.
  std::vector<float> kc = uniform(rows * Hkv * D, rng), vc = uniform(rows * Hkv * D, rng);
  const Bytes kb = encode(c.cache_type, kc), vb = encode(c.cache_type, vc);
  OpParams p;
  p.n_heads = c.n_heads;
  p.n_kv_heads = c.n_kv_heads;
  p.head_dim = c.head_dim;
  p.page_size = c.page_size;
  p.window = c.window;
  p.softcap = c.softcap;
  p.scale = c.scale > 0 ? c.scale : 1.f / std::sqrt(static_cast<float>(D));

  Graph g;
  const TensorId tq = g.input("q", DType::F32, {T, H * D});
  const TensorId tk = g.state("k", c.cache_type, {rows, Hkv * D});
  const TensorId tv = g.state("v", c.cache_type, {rows, Hkv * D});
  const TensorId tp = g.input("pos", DType::I32, {T});
  const TensorId ts = g.input("seq", DType::I32, {T});
  const TensorId tb = g.input("bt", DType::I32, {S, P});
  g.add(Op::Attention, "attn", {tq, tk, tv, tp, ts, tb}, DType::F32, {T, H * D}, p);
  const std::vector<float> out = to_floats(run_node(be, g,
                                                    {{tq, to_bytes(q)},
                                                     {tk, kb},
                                                     {tv, vb},
                                                     {tp, to_bytes(c.positions)},
                                                     {ts, to_bytes(c.seq_ids)},
                                                     {tb, to_bytes(bt)}}));

  std::vector<double> ref(T * H * D);
  for (int64_t t = 0; t < T; t++) {
    const int64_t pos = c.positions[t], s = c.seq_ids[t];
    const int64_t lo = c.window > 0 ? std::max<int64_t>(0, pos - c.window + 1) : 0;
    for (int64_t h = 0; h < H; h++) {
      const int64_t kvh = h / (H / Hkv);
      std::vector<double> w;
      std::vector<int64_t> slots;
      for (int64_t j = lo; j <= pos; j++) {
        const int64_t slot = int64_t{bt[s * P + j / ps]} * ps + j % ps;
        double d = 0;
        for (int64_t i = 0; i < D; i++)
          d += double(q[(t * H + h) * D + i]) * kc[slot * Hkv * D + kvh * D + i];
        d *= p.scale;
        if (c.softcap > 0) d = c.softcap * std::tanh(d / c.softcap);
        w.push_back(d);
        slots.push_back(slot);
      }
      const double mx = *std::max_element(w.begin(), w.end());
      double sum = 0;
      for (double& x : w) sum += (x = std::exp(x - mx));
      for (int64_t i = 0; i < D; i++) {
        double acc = 0;
        for (size_t j = 0; j < w.size(); j++) acc += w[j] * vc[slots[j] * Hkv * D + kvh * D + i];
        ref[(t * H + h) * D + i] = acc / sum;
      }
    }
  }
  expect_close(out, ref);
}

// Two sequences in one ragged batch: sequence 0 prefills positions 0..6 on pages
// {7, 2}; sequence 1 continues at positions 10..12 on pages {3, 9, 0, 6}.
AttnCase ragged_case() {
  AttnCase c;
  c.n_heads = 6;
  c.n_kv_heads = 2;  // GQA: 3 query heads per kv head
  c.head_dim = 20;
  c.page_size = 4;
  for (int i = 0; i < 7; i++) {
    c.seq_ids.push_back(0);
    c.positions.push_back(i);
  }
  for (int i = 10; i < 13; i++) {
    c.seq_ids.push_back(1);
    c.positions.push_back(i);
  }
  c.block_table = {{7, 2}, {3, 9, 0, 6}};
  return c;
}

TEST_CASE("cpu attention over a paged cache matches a double reference", "[cpu][attention]") {
  std::vector<std::pair<const char*, AttnCase>> cases;
  cases.push_back({"ragged batch, GQA", ragged_case()});
  {
    AttnCase c = ragged_case();
    c.window = 3;
    cases.push_back({"sliding window", c});
  }
  {
    AttnCase c = ragged_case();
    c.softcap = 5.f;
    c.scale = 1.f;  // large enough scores that tanh bends them
    cases.push_back({"softcap", c});
  }
  {
    AttnCase c = ragged_case();
    c.cache_type = DType::F16;
    c.window = 5;
    cases.push_back({"f16 cache", c});
  }
  {
    AttnCase c = ragged_case();
    c.cache_type = DType::BF16;
    c.head_dim = 128;
    cases.push_back({"bf16 cache, head_dim 128", c});
  }
  {
    AttnCase c;
    c.n_heads = 4;
    c.n_kv_heads = 1;  // MQA
    c.head_dim = 17;
    c.page_size = 4;
    c.seq_ids = {1, 0};  // decode of two sequences, listed out of order
    c.positions = {22, 5};
    c.block_table = {{8, 1}, {4, 0, 9, 2, 6, 3}};
    cases.push_back({"decode, MQA", c});
  }
  for (int level : x86_levels()) {  // f16/bf16 caches go through the row decoders
    LevelCap cap(level);
    for (auto& be : backends_1_and_3()) {
      for (const auto& c : cases) {
        CAPTURE(level, c.first, be->info().details);
        check_attention(*be, c.second);
      }
    }
  }
}

TEST_CASE("cpu attention rejects a position beyond the block table", "[cpu][attention]") {
  auto be = make_cpu_backend(2);
  AttnCase c = ragged_case();
  c.positions[2] = 9;  // sequence 0 has two pages: positions 0..7
  CHECK_THROWS_AS(check_attention(*be, c), Error);
}

// ---- Rope --------------------------------------------------------------------------------

void check_rope(Backend& be, RopeStyle style, int rot_dims) {
  CAPTURE(style == RopeStyle::NeoX ? "neox" : "gptj", rot_dims);
  const int64_t T = 5, H = 3, D = 12;
  std::mt19937 rng(7);
  std::vector<float> x = uniform(T * H * D, rng);
  const std::vector<int32_t> pos = {0, 3, 17, 42, 99};
  std::vector<float> inv_freq(rot_dims / 2);
  for (int i = 0; i < rot_dims / 2; i++)
    inv_freq[i] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / rot_dims));
  OpParams p;
  p.n_heads = H;
  p.head_dim = D;
  p.rot_dims = rot_dims;
  p.rope_style = style;

  Graph g;
  const TensorId tx = g.input("x", DType::F32, {T, H * D});
  const TensorId tp = g.input("pos", DType::I32, {T});
  const TensorId tf = g.constant("inv_freq", DType::F32, {rot_dims / 2}, inv_freq.data());
  g.add(Op::Rope, "rope", {tx, tp, tf}, DType::F32, {T, H * D}, p);
  const std::vector<float> y = to_floats(
      run_node(be, g, {{tx, to_bytes(x)}, {tp, to_bytes(pos)}, {tf, to_bytes(inv_freq)}}));

  std::vector<double> ref(x.begin(), x.end());
  const int half = rot_dims / 2;
  for (int64_t t = 0; t < T; t++)
    for (int64_t h = 0; h < H; h++) {
      const int64_t o = (t * H + h) * D;
      for (int i = 0; i < half; i++) {
        // The angle is a float32 product, as in HF; cos/sin of it in double.
        const double th = static_cast<float>(pos[t]) * inv_freq[i];
        const int64_t i0 = style == RopeStyle::NeoX ? i : 2 * i;
        const int64_t i1 = style == RopeStyle::NeoX ? i + half : 2 * i + 1;
        const double a = x[o + i0], b = x[o + i1];
        ref[o + i0] = a * std::cos(th) - b * std::sin(th);
        ref[o + i1] = b * std::cos(th) + a * std::sin(th);
      }
    }
  expect_close(y, ref);
}

TEST_CASE("cpu rope NeoX and GPT-J, full and partial", "[cpu][rope]") {
  for (auto& be : backends_1_and_3())
    for (RopeStyle s : {RopeStyle::NeoX, RopeStyle::GptJ})
      for (int rot : {12, 8, 6}) check_rope(*be, s, rot);
}

// ---- Norms -------------------------------------------------------------------------------

TEST_CASE("cpu rms_norm and layer_norm", "[cpu][norm]") {
  const int64_t R = 5, D = 67;
  const float eps = 1e-5f;
  std::mt19937 rng(11);
  std::vector<float> x = uniform(R * D, rng, -2.f, 4.f);  // mean far from 0
  std::vector<float> w = uniform(D, rng, 0.5f, 1.5f), b = uniform(D, rng);
  SECTION("rms_norm") {
    for (auto& be : backends_1_and_3()) {
      for (DType wt : {DType::F32, DType::BF16}) {
        std::vector<float> wr = w;
        const Bytes wb = encode(wt, wr);
        Graph g;
        OpParams p;
        p.eps = eps;
        const TensorId tx = g.input("x", DType::F32, {R, D});
        const TensorId tw = g.weight("w", wt, {D});
        g.add(Op::RmsNorm, "norm", {tx, tw}, DType::F32, {R, D}, p);
        const auto y = to_floats(run_node(*be, g, {{tx, to_bytes(x)}, {tw, wb}}));
        std::vector<double> ref(R * D);
        for (int64_t r = 0; r < R; r++) {
          double ss = 0;
          for (int64_t i = 0; i < D; i++) ss += double(x[r * D + i]) * x[r * D + i];
          const double inv = 1.0 / std::sqrt(ss / D + eps);
          for (int64_t i = 0; i < D; i++) ref[r * D + i] = x[r * D + i] * inv * wr[i];
        }
        expect_close(y, ref);
      }
    }
  }
  SECTION("layer_norm") {
    for (auto& be : backends_1_and_3()) {
      for (bool with_bias : {false, true}) {
        Graph g;
        OpParams p;
        p.eps = eps;
        const TensorId tx = g.input("x", DType::F32, {R, D});
        const TensorId tw = g.weight("w", DType::F32, {D});
        std::vector<TensorId> ins = {tx, tw};
        std::map<TensorId, Bytes> data = {{tx, to_bytes(x)}, {tw, to_bytes(w)}};
        if (with_bias) {
          const TensorId tb = g.weight("b", DType::F32, {D});
          ins.push_back(tb);
          data[tb] = to_bytes(b);
        }
        g.add(Op::LayerNorm, "norm", ins, DType::F32, {R, D}, p);
        const auto y = to_floats(run_node(*be, g, data));
        std::vector<double> ref(R * D);
        for (int64_t r = 0; r < R; r++) {
          double mean = 0, var = 0;
          for (int64_t i = 0; i < D; i++) mean += x[r * D + i];
          mean /= D;
          for (int64_t i = 0; i < D; i++) var += (x[r * D + i] - mean) * (x[r * D + i] - mean);
          var /= D;
          for (int64_t i = 0; i < D; i++)
            ref[r * D + i] =
                (x[r * D + i] - mean) / std::sqrt(var + eps) * w[i] + (with_bias ? b[i] : 0.0);
        }
        expect_close(y, ref);
      }
    }
  }
}

// ---- Element-wise ------------------------------------------------------------------------

double ref_silu(double x) { return x / (1 + std::exp(-x)); }
double ref_gelu(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double ref_gelu_tanh(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

// Runs a unary or binary element-wise op on a [R, D] (b: [R, D] or [D]).
void check_elementwise(Backend& be, Op op, int64_t R, int64_t D, bool b_row = false) {
  CAPTURE(op_name(op), R, D, b_row);
  std::mt19937 rng(static_cast<uint32_t>(static_cast<int>(op) * 31 + R));
  std::vector<float> a = uniform(R * D, rng, -4.f, 4.f);
  std::vector<float> b = uniform(b_row ? D : R * D, rng, -2.f, 2.f);
  const bool binary = op == Op::SiluMul || op == Op::GeluMul || op == Op::Add || op == Op::Mul;
  OpParams p;
  p.scale = 0.37f;
  Graph g;
  const TensorId ta = g.input("a", DType::F32, {R, D});
  std::vector<TensorId> ins = {ta};
  std::map<TensorId, Bytes> data = {{ta, to_bytes(a)}};
  if (binary) {
    const TensorId tb = b_row ? g.input("b", DType::F32, {D}) : g.input("b", DType::F32, {R, D});
    ins.push_back(tb);
    data[tb] = to_bytes(b);
  }
  g.add(op, "op", ins, DType::F32, {R, D}, p);
  const auto y = to_floats(run_node(be, g, data));
  std::vector<double> ref(R * D);
  for (int64_t i = 0; i < R * D; i++) {
    const double x = a[i], y2 = binary ? b[b_row ? i % D : i] : 0.0;
    switch (op) {
      case Op::SiluMul:
        ref[i] = ref_silu(x) * y2;
        break;
      case Op::GeluMul:
        ref[i] = ref_gelu(x) * y2;
        break;
      case Op::Gelu:
        ref[i] = ref_gelu(x);
        break;
      case Op::GeluTanh:
        ref[i] = ref_gelu_tanh(x);
        break;
      case Op::Add:
        ref[i] = x + y2;
        break;
      case Op::Mul:
        ref[i] = x * y2;
        break;
      case Op::Scale:
        ref[i] = x * double(p.scale);
        break;
      default:
        FAIL("not an element-wise op");
    }
  }
  expect_close(y, ref);
}

TEST_CASE("cpu element-wise ops", "[cpu][elementwise]") {
  for (auto& be : backends_1_and_3()) {
    for (Op op : {Op::SiluMul, Op::GeluMul, Op::Gelu, Op::GeluTanh, Op::Add, Op::Mul, Op::Scale}) {
      check_elementwise(*be, op, 7, 37);
      check_elementwise(*be, op, 1, 5);
      check_elementwise(*be, op, 60, 1001);  // several parallel chunks
    }
    for (Op op : {Op::Add, Op::Mul}) {
      check_elementwise(*be, op, 7, 37, true);
      check_elementwise(*be, op, 60, 1001, true);
    }
  }
}

namespace {

// Runs Op::Sample on rows x [R, N] with params [R, 5]; the ids.
std::vector<int32_t> run_sample(Backend& be, const std::vector<float>& x, int64_t R, int64_t N,
                                const std::vector<float>& params) {
  Graph g;
  const TensorId tx = g.input("x", DType::F32, {R, N});
  const TensorId tp = g.input("params", DType::F32, {R, kSampleParamCount});
  g.add(Op::Sample, "ids", {tx, tp}, DType::I32, {R});
  const Bytes y = run_node(be, g, {{tx, to_bytes(x)}, {tp, to_bytes(params)}});
  std::vector<int32_t> ids(static_cast<size_t>(R));
  std::memcpy(ids.data(), y.data(), y.size());
  return ids;
}

}  // namespace

TEST_CASE("cpu sample at temperature 0: the first of equal maxima, NaN below every number",
          "[cpu][sample]") {
  const std::vector<std::vector<float>> rows = {
      {1.f, 3.f, 3.f, 2.f},       {NAN, -INFINITY, -5.f, -5.f},
      {NAN, NAN, NAN, NAN},       {-INFINITY, -INFINITY, -INFINITY, -INFINITY},
      {NAN, -INFINITY, NAN, NAN}, {2.f, NAN, 7.f, 7.f}};
  const std::vector<int32_t> want = {1, 2, 0, 0, 1, 2};
  std::vector<float> x;
  for (const auto& r : rows) x.insert(x.end(), r.begin(), r.end());
  const int64_t R = static_cast<int64_t>(rows.size());
  for (auto& be : backends_1_and_3())
    CHECK(run_sample(*be, x, R, 4, greedy_sample_rows(R)) == want);
  // Against llm::argmax (the host sampler's greedy pick) on rows without NaN.
  std::mt19937 rng(3);
  auto be = make_cpu_backend(2);
  const int64_t N = 32003;
  std::vector<float> v = uniform(9 * N, rng, -4.f, 4.f);
  v[5 * N + 17] = v[5 * N + 900] = 9.f;
  const std::vector<int32_t> ids = run_sample(*be, v, 9, N, greedy_sample_rows(9));
  for (int64_t r = 0; r < 9; r++) CHECK(ids[r] == argmax(v.data() + r * N, static_cast<int>(N)));
}

TEST_CASE("cpu sample with a temperature picks where the running sum passes u * sum",
          "[cpu][sample]") {
  auto be = make_cpu_backend(2);
  // Weights at temperature 1: 1, 2, 3, 0, 0 (sum 6); at 0.5: 1, 4, 9, 0, 0 (sum 14).
  const std::vector<float> row = {0.f, std::log(2.f), std::log(3.f), -INFINITY, NAN};
  const std::vector<std::pair<float, float>> cases = {{1.f, 0.1f},  {1.f, 0.2f},  {1.f, 0.5f},
                                                      {1.f, 0.99f}, {0.5f, 0.3f}, {0.5f, 0.01f}};
  const std::vector<int32_t> want = {0, 1, 2, 2, 1, 0};
  std::vector<float> x, params;
  for (const auto& c : cases) {
    x.insert(x.end(), row.begin(), row.end());
    const std::vector<float> p = sample_row_params(c.first, c.second);
    params.insert(params.end(), p.begin(), p.end());
  }
  CHECK(run_sample(*be, x, static_cast<int64_t>(cases.size()), 5, params) == want);

  // Frequencies over many draws follow softmax(x / T).
  std::mt19937 rng(9);
  const std::vector<float> logits = {0.3f, -1.2f, 1.1f, 0.f, 2.f};
  const float T = 0.8f;
  const int n = 20000;
  std::vector<float> xs, ps;
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  for (int i = 0; i < n; i++) {
    xs.insert(xs.end(), logits.begin(), logits.end());
    const std::vector<float> p = sample_row_params(T, uni(rng));
    ps.insert(ps.end(), p.begin(), p.end());
  }
  const std::vector<int32_t> ids = run_sample(*be, xs, n, 5, ps);
  std::vector<double> p(5);
  double z = 0;
  for (int i = 0; i < 5; i++) z += p[i] = std::exp(logits[i] / T);
  for (int i = 0; i < 5; i++) {
    const double freq = std::count(ids.begin(), ids.end(), i) / static_cast<double>(n);
    INFO("token " << i);
    CHECK(std::abs(freq - p[i] / z) < 0.015);
  }
}

TEST_CASE("cpu sample with top-k, top-p and min-p keeps the right prefix of the order",
          "[cpu][sample]") {
  auto be = make_cpu_backend(2);
  // Weights at temperature 1 relative to the largest: 0.25, 1, 0.5, 0.75 (order 1, 3, 2,
  // 0; the sum 2.5), then -inf and NaN, never kept.
  const std::vector<float> row = {std::log(0.25f), 0.f,       std::log(0.5f),
                                  std::log(0.75f), -INFINITY, NAN};
  struct Case {
    float top_k, top_p, min_p, u;
    int32_t want;
  };
  const std::vector<Case> cases = {
      // top_k 2 keeps {1, 3} (weights 1, 0.75 in index order): u * 1.75 against 1.
      {2, 1, 0, 0.5f, 1},
      {2, 1, 0, 0.6f, 3},
      // top_p 0.5: 1.25 of 2.5 needs 1 and 3; top_p 0.4 (1.0) needs 1 alone.
      {0, 0.5f, 0, 0.2f, 1},
      {0, 0.5f, 0, 0.9f, 3},
      {0, 0.4f, 0, 0.9f, 1},
      // min_p 0.6 keeps weights >= 0.6: {1, 3}; 0.8: {1}.
      {0, 1, 0.6f, 0.9f, 3},
      {0, 1, 0.8f, 0.9f, 1},
      // top_k 3 then top_p 0.8 of its 2.25 (1.8): 1, 3, 2 (1.75 < 1.8); index order 1, 2,
      // 3 with weights 1, 0.5, 0.75: u = 0.5 reaches 1.125 at 2.
      {3, 0.8f, 0, 0.5f, 2},
      {3, 0.8f, 0, 0.1f, 1},
      // top_k past the row's numbers: nothing is cut, and -inf / NaN still weigh 0.
      {6, 1, 0, 0.99f, 3},
      // No cut: all four by index, 0.25 of 2.5 covers index 0 up to u = 0.1.
      {0, 1, 0, 0.09f, 0},
  };
  std::vector<float> x, params;
  std::vector<int32_t> want;
  for (const Case& c : cases) {
    x.insert(x.end(), row.begin(), row.end());
    const std::vector<float> p = sample_row_params(1.f, c.u, c.top_k, c.top_p, c.min_p);
    params.insert(params.end(), p.begin(), p.end());
    want.push_back(c.want);
  }
  CHECK(run_sample(*be, x, static_cast<int64_t>(cases.size()), 6, params) == want);

  // Equal values are ordered by index: top_k 2 of four equal keeps 0 and 1, as does
  // top_p 0.5.
  const std::vector<float> flat(4, 3.f);
  std::vector<float> fx, fp;
  for (const auto& [k, tp, u] : std::vector<std::tuple<float, float, float>>{
           {2, 1, 0.25f}, {2, 1, 0.75f}, {0, 0.5f, 0.75f}, {3, 1, 0.9f}}) {
    fx.insert(fx.end(), flat.begin(), flat.end());
    const std::vector<float> p = sample_row_params(0.7f, u, k, tp);
    fp.insert(fp.end(), p.begin(), p.end());
  }
  CHECK(run_sample(*be, fx, 4, 4, fp) == std::vector<int32_t>{0, 1, 1, 2});
}

TEST_CASE("cpu sample's cuts draw from the truncated, renormalized softmax", "[cpu][sample]") {
  auto be = make_cpu_backend(2);
  std::mt19937 rng(21);
  const std::vector<float> logits = {0.3f, -1.2f, 1.1f, 0.f, 2.f, 1.1f, -0.4f, 0.9f};
  const int64_t N = static_cast<int64_t>(logits.size());
  const float T = 0.9f;
  // (top_k, top_p, min_p)
  for (const auto& [k, tp, mp] : std::vector<std::tuple<int, float, float>>{
           {3, 1.f, 0.f}, {0, 0.7f, 0.f}, {0, 1.f, 0.3f}, {5, 0.8f, 0.1f}}) {
    CAPTURE(k, tp, mp);
    // The kept set from a plain sort (value descending, index ascending).
    std::vector<int> order(N);
    for (int i = 0; i < N; i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return logits[a] > logits[b]; });
    std::vector<double> w(N);
    for (int i = 0; i < N; i++) w[i] = std::exp((logits[i] - 2.f) / T);
    int keep = k > 0 ? k : static_cast<int>(N);
    double s_k = 0;
    for (int i = 0; i < keep; i++) s_k += w[order[i]];
    double run = 0;
    int n_p = keep, n_m = 0;
    for (int i = 0; i < keep; i++) {
      run += w[order[i]];
      if (run >= tp * s_k) {
        n_p = i + 1;
        break;
      }
    }
    for (int i = 0; i < keep; i++) n_m += w[order[i]] >= mp ? 1 : 0;
    keep = std::min({keep, n_p, n_m});
    std::vector<double> p(N, 0.0);
    double z = 0;
    for (int i = 0; i < keep; i++) z += p[order[i]] = w[order[i]];
    const int n = 20000;
    std::vector<float> xs, ps;
    std::uniform_real_distribution<float> uni(0.f, 1.f);
    for (int i = 0; i < n; i++) {
      xs.insert(xs.end(), logits.begin(), logits.end());
      const std::vector<float> row = sample_row_params(T, uni(rng), k, tp, mp);
      ps.insert(ps.end(), row.begin(), row.end());
    }
    const std::vector<int32_t> ids = run_sample(*be, xs, n, N, ps);
    for (int i = 0; i < N; i++) {
      const double freq = std::count(ids.begin(), ids.end(), i) / static_cast<double>(n);
      INFO("token " << i);
      CHECK(std::abs(freq - p[i] / z) < 0.015);
    }
  }
}

// ---- GetRows / KvAppend ------------------------------------------------------------------

TEST_CASE("cpu get_rows decodes f32/f16/bf16 table rows", "[cpu][get_rows]") {
  const int64_t V = 11, D = 37;
  const std::vector<int32_t> ids = {3, 0, 10, 3, 7};
  auto be = make_cpu_backend(3);
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    CAPTURE(dtype_name(t));
    std::mt19937 rng(5);
    std::vector<float> table = uniform(V * D, rng, -3.f, 3.f);
    const Bytes tb = encode(t, table);
    Graph g;
    const TensorId tt = g.weight("table", t, {V, D});
    const TensorId ti = g.input("ids", DType::I32, {static_cast<int64_t>(ids.size())});
    g.add(Op::GetRows, "embed", {tt, ti}, DType::F32, {static_cast<int64_t>(ids.size()), D});
    const auto y = to_floats(run_node(*be, g, {{tt, tb}, {ti, to_bytes(ids)}}));
    std::vector<float> want;
    for (int32_t id : ids) want.insert(want.end(), &table[id * D], &table[id * D] + D);
    CHECK(y == want);
  }
}

TEST_CASE("cpu f16 decoding is bit exact over all 65536 values", "[cpu][get_rows]") {
  // Every f16 bit pattern as a [1024, 64] table, read back through get_rows.
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); i++) all[i] = static_cast<uint16_t>(i);
  std::vector<int32_t> ids(1024);
  for (int i = 0; i < 1024; i++) ids[i] = i;
  auto be = make_cpu_backend(2);
  Graph g;
  const TensorId tt = g.weight("table", DType::F16, {1024, 64});
  const TensorId ti = g.input("ids", DType::I32, {1024});
  g.add(Op::GetRows, "embed", {tt, ti}, DType::F32, {1024, 64});
  for (int level : x86_levels()) {
    CAPTURE(level);
    LevelCap cap(level);
    const Bytes y = run_node(*be, g, {{tt, to_bytes(all)}, {ti, to_bytes(ids)}});
    size_t mismatches = 0;
    for (size_t i = 0; i < all.size(); i++) {
      const float want = f16_to_f32(all[i]);
      float got;
      std::memcpy(&got, &y[i * 4], 4);
      // F16C quiets signalling NaNs; any NaN will do.
      const bool ok = std::isnan(want) ? std::isnan(got) : std::memcmp(&got, &want, 4) == 0;
      if (!ok) mismatches++;
    }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("cpu kv_append writes rows into f32/f16/bf16 caches", "[cpu][kv_append]") {
  const int64_t rows = 12, W = 20;
  const std::vector<int32_t> slots = {7, 2, 11};
  const int64_t T = static_cast<int64_t>(slots.size());
  auto be = make_cpu_backend(3);
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    CAPTURE(dtype_name(t));
    std::mt19937 rng(9);
    std::vector<float> cache = uniform(rows * W, rng), src = uniform(T * W, rng);
    const Bytes cb = encode(t, cache);
    Graph g;
    const TensorId ts = g.input("src", DType::F32, {T, W});
    const TensorId tl = g.input("slots", DType::I32, {T});
    const TensorId tc = g.state("cache", t, {rows, W});
    g.add_inplace(Op::KvAppend, "kv", {ts, tl, tc}, tc);
    const Bytes got = run_node(*be, g, {{ts, to_bytes(src)}, {tl, to_bytes(slots)}, {tc, cb}});

    std::vector<float> want_f = cache;
    for (int64_t i = 0; i < T; i++) std::copy(&src[i * W], &src[i * W] + W, &want_f[slots[i] * W]);
    const Bytes want = encode(t, want_f);
    CHECK(got == want);
  }
}

TEST_CASE("cpu kv_append rejects a slot outside the cache", "[cpu][kv_append]") {
  auto be = make_cpu_backend(1);
  Graph g;
  const TensorId ts = g.input("src", DType::F32, {1, 4});
  const TensorId tl = g.input("slots", DType::I32, {1});
  const TensorId tc = g.state("cache", DType::F32, {3, 4});
  g.add_inplace(Op::KvAppend, "kv", {ts, tl, tc}, tc);
  CHECK_THROWS_AS(run_node(*be, g, {{tl, to_bytes(std::vector<int32_t>{3})}}), Error);
}

// ---- Programs ----------------------------------------------------------------------------

TEST_CASE("cpu program runs its nodes in order", "[cpu][program]") {
  // y = (2x + x) * (2x + x), through two intermediates, in one program.
  const int64_t R = 3, D = 19;
  std::mt19937 rng(3);
  const std::vector<float> x = uniform(R * D, rng);
  Graph g;
  OpParams two;
  two.scale = 2.f;
  const TensorId tx = g.input("x", DType::F32, {R, D});
  const TensorId t1 = g.add(Op::Scale, "scale", {tx}, DType::F32, {R, D}, two);
  const TensorId t2 = g.add(Op::Add, "add", {t1, tx}, DType::F32, {R, D});
  const TensorId t3 = g.add(Op::Mul, "mul", {t2, t2}, DType::F32, {R, D});
  auto be = make_cpu_backend(2);
  const size_t bytes = R * D * sizeof(float);
  std::map<TensorId, std::unique_ptr<DeviceBuffer>> bufs;
  for (TensorId id : {tx, t1, t2, t3}) bufs[id] = be->alloc(bytes, "t");
  be->upload(*bufs[tx], 0, x.data(), bytes);
  std::vector<BoundNode> bound;
  for (const Node& n : g.nodes()) {
    BoundNode bn;
    bn.node = &n;
    for (TensorId id : n.inputs) bn.inputs.push_back({bufs[id].get(), 0, DType::F32, {R, D}});
    bn.output = {bufs[n.output].get(), 0, DType::F32, {R, D}};
    bound.push_back(bn);
  }
  auto prog = be->compile(bound);
  prog->run();
  std::vector<float> y(R * D);
  be->download(*bufs[t3], 0, y.data(), bytes);
  std::vector<double> ref(R * D);
  for (int64_t i = 0; i < R * D; i++) ref[i] = 9.0 * x[i] * x[i];
  expect_close(y, ref);
}

TEST_CASE("cpu compile rejects what check rejects", "[cpu][program]") {
  auto be = make_cpu_backend(1);
  Graph g;
  const TensorId x = g.input("x", DType::F32, {2, 64});
  const TensorId w = g.weight("w", DType::Q4_0, {32, 64});
  const TensorId b = g.weight("b", DType::Q4_0, {32});
  g.add(Op::MatMul, "layers.0.mlp.up", {x, w, b}, DType::F32, {2, 32});
  auto bx = be->alloc(2 * 64 * 4, "x"), bw = be->alloc(32 * 2 * 18, "w"), by = be->alloc(256, "y");
  auto bb = be->alloc(18, "b");
  BoundNode bn;
  bn.node = &g.nodes()[0];
  bn.inputs = {{bx.get(), 0, DType::F32, {2, 64}},
               {bw.get(), 0, DType::Q4_0, {32, 64}},
               {bb.get(), 0, DType::Q4_0, {32}}};
  bn.output = {by.get(), 0, DType::F32, {2, 32}};
  try {
    be->compile({bn});
    FAIL("compile accepted a q4_0 bias");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("layers.0.mlp.up") != std::string::npos);
    CHECK(std::string(e.what()).find("q4_0") != std::string::npos);
  }
}

// ---- Buffers, info, thread pool ----------------------------------------------------------

TEST_CASE("cpu from_host aliases host memory", "[cpu][buffer]") {
  auto be = make_cpu_backend(1);
  std::vector<float> host(16, 1.f);
  {
    auto buf = be->from_host(host.data(), host.size() * sizeof(float), "weights");
    host[3] = 42.f;  // visible through the buffer: no copy was made
    float got = 0;
    be->download(*buf, 3 * sizeof(float), &got, sizeof(got));
    CHECK(got == 42.f);
  }
  CHECK(host[0] == 1.f);  // destroying the buffer left the host memory alone
}

TEST_CASE("cpu alloc, upload, download, clear, bounds", "[cpu][buffer]") {
  auto be = make_cpu_backend(1);
  auto buf = be->alloc(100, "test");
  CHECK(buf->size() == 100);
  std::vector<uint8_t> in(100), out(100);
  for (int i = 0; i < 100; i++) in[i] = static_cast<uint8_t>(i + 1);
  be->upload(*buf, 0, in.data(), 100);
  be->clear(*buf, 10, 5);
  be->download(*buf, 0, out.data(), 100);
  for (int i = 10; i < 15; i++) in[i] = 0;
  CHECK(out == in);
  CHECK_THROWS_AS(be->upload(*buf, 90, in.data(), 11), Error);
}

TEST_CASE("cpu info", "[cpu]") {
  auto be = make_cpu_backend(3);
  const DeviceInfo d = be->info();
  CHECK(d.id == "cpu");
  CHECK(d.type == "cpu");
  CHECK(!d.name.empty());
  CHECK(d.total_memory > 0);
  CHECK(d.free_memory <= d.total_memory);
  CHECK(d.details.find("3 threads") != std::string::npos);
}

TEST_CASE("cpu thread pool covers every item exactly once", "[cpu][thread_pool]") {
  for (int threads : {1, 2, 3, 5}) {
    cpu::ThreadPool pool(threads);
    CHECK(pool.n_threads() == threads);
    for (int rep = 0; rep < 50; rep++)
      for (int64_t n : {0, 1, 2, 7, 100, 1001})
        for (int64_t grain : {1, 3, 64}) {
          std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
          for (auto& h : hits) h = 0;
          pool.parallel_for(
              n,
              [&](int64_t b, int64_t e) {
                for (int64_t i = b; i < e; i++) hits[i]++;
              },
              grain);
          bool ok = true;
          for (auto& h : hits) ok &= h.load() == 1;
          REQUIRE(ok);
        }
  }
}

TEST_CASE("cpu thread pool: nested calls run inline, exceptions propagate", "[cpu][thread_pool]") {
  cpu::ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  pool.parallel_for(10, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++)
      pool.parallel_for(10, [&](int64_t b2, int64_t e2) { total += e2 - b2; });
  });
  CHECK(total == 100);
  CHECK_THROWS_AS(pool.parallel_for(100,
                                    [](int64_t b, int64_t) {
                                      if (b == 0) throw std::runtime_error("boom");
                                    }),
                  std::runtime_error);
  // Still usable afterwards.
  std::atomic<int64_t> n{0};
  pool.parallel_for(100, [&](int64_t b, int64_t e) { n += e - b; });
  CHECK(n == 100);
}

}  // namespace
