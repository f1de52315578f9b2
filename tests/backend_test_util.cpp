#include "backend_test_util.h"

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "backends/cpu/cpu_backend.h"
#include "core/engine/sampler.h"
#include "core/engine/session.h"
#include "core/formats/quantize.h"
#include "core/formats/safetensors.h"
#include "core/model.h"

namespace llm::test {

std::vector<float> decode(DType t, const Bytes& b) {
  const size_t n = b.size() / dtype_row_bytes(t, 1);
  std::vector<float> v(n);
  if (t == DType::I32) {  // ids (exact in float below 2^24)
    for (size_t i = 0; i < n; i++) {
      int32_t x;
      std::memcpy(&x, b.data() + 4 * i, 4);
      v[i] = static_cast<float>(x);
    }
    return v;
  }
  convert_to_f32(t, b.data(), v.data(), static_cast<int64_t>(n));
  return v;
}

Bytes encode(DType t, const std::vector<float>& v) {
  if (t == DType::F32) return to_bytes(v);
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); i++)
    h[i] = t == DType::F16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
  return to_bytes(h);
}

HostT f32_tensor(Shape s, std::vector<float> v) { return {DType::F32, s, to_bytes(v)}; }
HostT i32_tensor(Shape s, const std::vector<int32_t>& v) { return {DType::I32, s, to_bytes(v)}; }

Node make_node(Op op, OpParams p) {
  Node n;
  n.op = op;
  n.name = "test";
  n.params = p;
  return n;
}

Node make_node(Op op, std::vector<TensorId> inputs, TensorId output) {
  Node n = make_node(op);
  n.inputs = std::move(inputs);
  n.output = output;
  return n;
}

OneNode::OneNode(Backend& be, const Node& node, const std::vector<HostT>& ins, const HostT& out,
                 int inplace, int weight)
    : be_(be), node_(node) {
  std::vector<TensorInfo> infos(ins.size());
  std::vector<const TensorInfo*> ptrs;
  for (size_t i = 0; i < ins.size(); i++) {
    infos[i].dtype = ins[i].dtype;
    infos[i].shape = ins[i].shape;
    ptrs.push_back(&infos[i]);
  }
  TensorInfo oi;
  oi.dtype = out.dtype;
  oi.shape = out.shape;
  const std::string why = be.check(node_, ptrs, oi);
  INFO(why);
  REQUIRE(why.empty());

  BoundNode bn;
  bn.node = &node_;
  for (size_t i = 0; i < ins.size(); i++) {
    const HostT& t = ins[i];
    if (static_cast<int>(i) == weight) {
      bufs_.push_back(be.upload_weight(HostTensor{t.dtype, t.shape, t.data.data(), t.data.size()},
                                       "test weight"));
    } else {
      bufs_.push_back(be.alloc(t.data.size(), "test input"));
      be.upload(*bufs_.back(), 0, t.data.data(), t.data.size());
    }
    bn.inputs.push_back({bufs_.back().get(), 0, t.dtype, t.shape});
  }
  if (inplace >= 0) {
    bn.output = bn.inputs[inplace];
    out_ = bufs_[inplace].get();
  } else {
    bufs_.push_back(be.alloc(out.data.size(), "test output"));
    be.upload(*bufs_.back(), 0, out.data.data(), out.data.size());
    out_ = bufs_.back().get();
    bn.output = {out_, 0, out.dtype, out.shape};
  }
  out_bytes_ = out.data.size();
  prog_ = be.compile({bn});
}

void OneNode::set_input(size_t i, const Bytes& data) {
  be_.upload(*bufs_[i], 0, data.data(), data.size());
}

Bytes OneNode::output() {
  Bytes b(out_bytes_);
  be_.download(*out_, 0, b.data(), b.size());
  return b;
}

double compare_backends(Backend& ref, Backend& dev, const Node& node, const std::vector<HostT>& ins,
                        const HostT& out, int inplace) {
  OneNode c(ref, node, ins, out, inplace);
  c.run();
  const std::vector<float> want = decode(out.dtype, c.output());
  OneNode g(dev, node, ins, out, inplace);
  g.run();
  if (inplace < 0) g.run();
  const std::vector<float> got = decode(out.dtype, g.output());
  return max_rel_error(got, want);
}

HostT sample_rows_input(int64_t R, int64_t N, std::mt19937& rng) {
  std::vector<float> x = uniform(R * N, rng, -10.f, 10.f);
  std::uniform_int_distribution<int64_t> col(0, N - 1);
  for (int64_t r = 0; r < R; r++) {
    float* row = x.data() + r * N;
    if (r == 0) {
      for (int64_t i = 0; i < N; i++) row[i] = i % 3 == 0 ? NAN : -INFINITY;
      continue;
    }
    // Odd rows: the same maximum at two columns. Every row: a NaN; row 1: at column 0.
    if (r % 2 == 1) {
      const int64_t a = col(rng), b = col(rng);
      row[a] = row[b] = 20.f + static_cast<float>(r);
    }
    row[col(rng)] = NAN;
    if (r == 1) row[0] = NAN;
  }
  return f32_tensor({R, N}, x);
}

HostT sample_params_input(int64_t R, std::mt19937& rng) {
  const float temps[] = {0.f, 0.7f, 1.3f};
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  std::vector<float> p;
  for (int64_t r = 0; r < R; r++) {
    const std::vector<float> row = sample_row_params(temps[r % 3], uni(rng));
    p.insert(p.end(), row.begin(), row.end());
  }
  return f32_tensor({R, kSampleParamCount}, p);
}

void check_sample_cuts(Backend& gpu) {
  auto cpu = make_cpu_backend(2);
  std::mt19937 rng(23);
  // (temperature, top_k, top_p, min_p)
  const std::vector<std::array<float, 4>> settings = {
      {0.7f, 40, 1, 0},      {1.f, 0, 0.9f, 0}, {1.3f, 0, 0.5f, 0.05f}, {0.8f, 1000, 0.95f, 0},
      {1.f, 5000, 1, 0.01f}, {0.6f, 1, 1, 0},   {1.f, 0, 0.999f, 0},    {2.f, 3, 0.3f, 0},
      {1.f, 0, 1, 0.2f},     {1.5f, 700, 1, 0}};
  const int kinds = 5;
  int compared = 0, total = 0;
  for (const int64_t N : {7, 1000, 32003, 151936}) {
    const int64_t R = static_cast<int64_t>(settings.size());
    for (int shift = 0; shift < kinds; shift++) {
      CAPTURE(N, shift);
      std::vector<float> x = uniform(R * N, rng, -10.f, 10.f);
      std::uniform_int_distribution<int64_t> col(0, N - 1);
      for (int64_t r = 0; r < R; r++) {
        float* row = x.data() + r * N;
        switch ((r + shift) % kinds) {
          case 1:  // a few tokens far above the rest
            for (float top : {20.f, 19.5f, 19.f, 18.f}) row[col(rng)] = top;
            break;
          case 2:  // few distinct values: long runs of equal ones
            for (int64_t i = 0; i < N; i++) row[i] = std::round(row[i] * 0.2f) * 0.5f;
            break;
          case 3:  // all equal
            std::fill(row, row + N, 1.f);
            break;
          case 4:  // NaN and -inf among them
            for (int64_t i = 0; i < N; i += 3) row[i] = i % 2 ? NAN : -INFINITY;
            break;
          default:
            break;
        }
      }
      std::uniform_real_distribution<float> uni(0.02f, 0.98f);
      std::vector<float> params;
      for (int64_t r = 0; r < R; r++) {
        const auto& st = settings[r];
        const std::vector<float> p = sample_row_params(st[0], uni(rng), st[1], st[2], st[3]);
        params.insert(params.end(), p.begin(), p.end());
      }
      const HostT xt = f32_tensor({R, N}, x);
      const HostT ids = i32_tensor({R}, std::vector<int32_t>(R, -1));
      auto pick = [&](Backend& be, const std::vector<float>& p) {
        OneNode n(be, make_node(Op::Sample), {xt, f32_tensor({R, kSampleParamCount}, p)}, ids);
        n.run();
        std::vector<int32_t> v(R);
        std::memcpy(v.data(), n.output().data(), 4 * R);
        return v;
      };
      const std::vector<int32_t> want = pick(*cpu, params), got = pick(gpu, params);
      // The CPU's picks with u, then top_p, nudged either way.
      std::vector<std::vector<int32_t>> nudged;
      for (int field : {1, 3})
        for (float d : {-2e-6f, 2e-6f}) {
          std::vector<float> p = params;
          for (int64_t r = 0; r < R; r++) {
            float& v = p[kSampleParamCount * r + field];
            if (field == 1 || v < 1.f) v = std::clamp(v + d, 0.f, field == 1 ? 0.999f : 1.f);
          }
          nudged.push_back(pick(*cpu, p));
        }
      for (int64_t r = 0; r < R; r++) {
        total++;
        bool stable = true;
        for (const auto& v : nudged) stable = stable && v[r] == want[r];
        if (!stable) continue;
        compared++;
        INFO("row " << r << " kind " << (r + shift) % kinds << " setting " << r);
        CHECK(got[r] == want[r]);
      }
    }
  }
  INFO(compared << " of " << total << " rows compared");
  CHECK(compared >= total * 8 / 10);
}

std::string attention_case_name(const AttentionCase& c) {
  std::ostringstream o;
  o << "heads " << c.heads << "/" << c.kv_heads << " head_dim " << c.head_dim << " window "
    << c.window << " softcap " << c.softcap << " " << dtype_name(c.k) << "/" << dtype_name(c.v);
  return o.str();
}

OpParams attention_params(const AttentionCase& c, int page_size) {
  OpParams p;
  p.n_heads = c.heads;
  p.n_kv_heads = c.kv_heads;
  p.head_dim = c.head_dim;
  p.scale = 1.f / std::sqrt(static_cast<float>(c.head_dim));
  p.window = c.window;
  p.page_size = page_size;
  p.softcap = c.softcap;
  return p;
}

std::vector<HostT> attention_inputs(const AttentionCase& c, int64_t cache_rows,
                                    const std::vector<int32_t>& pos,
                                    const std::vector<int32_t>& seq,
                                    const std::vector<int32_t>& table, int max_pages,
                                    std::mt19937& rng) {
  const int64_t T = static_cast<int64_t>(pos.size());
  const int64_t W = int64_t{c.kv_heads} * c.head_dim, Q = int64_t{c.heads} * c.head_dim;
  const int64_t n_rows = static_cast<int64_t>(table.size()) / max_pages;
  return {f32_tensor({T, Q}, uniform(T * Q, rng, -2.f, 2.f)),
          {c.k, {cache_rows, W}, encode(c.k, uniform(cache_rows * W, rng, -2.f, 2.f))},
          {c.v, {cache_rows, W}, encode(c.v, uniform(cache_rows * W, rng))},
          i32_tensor({T}, pos),
          i32_tensor({T}, seq),
          i32_tensor({n_rows, max_pages}, table)};
}

QuantMatrix quantize_random(DType t, int64_t N, int64_t K, std::mt19937& rng) {
  const std::vector<float> w = uniform(N * K, rng);
  QuantMatrix q;
  const size_t row = dtype_row_bytes(t, K);
  q.blocks.resize(row * N);
  q.values.resize(N * K);
  for (int64_t n = 0; n < N; n++) {
    quantize_row(t, w.data() + n * K, q.blocks.data() + n * row, K);
    dequantize_row(t, q.blocks.data() + n * row, q.values.data() + n * K, K);
  }
  return q;
}

PlantedHead plant_head_maxima(QuantMatrix& w, DType t, int64_t N, int64_t K,
                              const std::vector<float>& x, const std::vector<float>& nw) {
  const size_t row = dtype_row_bytes(t, K), block = dtype_row_bytes(t, 32);
  std::vector<float> xn(K);
  double ss = 0;
  for (float v : x) ss += double{v} * v;
  for (int64_t k = 0; k < K; k++)
    xn[k] = x[k] / static_cast<float>(std::sqrt(ss / K + 1e-5)) * nw[k];
  PlantedHead h;
  double top_v = -1e30;
  for (int64_t n = 0; n < N; n++) {
    double d = 0;
    for (int64_t k = 0; k < K; k++) d += double{xn[k]} * w.values[n * K + k];
    if (d > top_v) top_v = d, h.top = n;
  }
  REQUIRE(top_v > 0);
  // Every value of the row times 4: its scales (and q4_1's mins, which follow them).
  for (size_t b = 0; b < row; b += block)
    for (int i = 0; i < (t == DType::Q4_1 ? 2 : 1); i++) {
      uint8_t* d = w.blocks.data() + h.top * row + b + 2 * i;
      const uint16_t s = f32_to_f16(4.f * f16_to_f32(uint16_t(d[0] | d[1] << 8)));
      d[0] = static_cast<uint8_t>(s), d[1] = static_cast<uint8_t>(s >> 8);
    }
  h.lo = (h.top < 4 ? h.top + 2 : h.top / 2) & ~int64_t{1};
  h.pair = h.lo + 1;
  h.hi = (h.top + N) / 2 + 1;
  REQUIRE(h.pair < N);
  for (int64_t r : {h.lo, h.pair, h.hi})
    if (r < N) std::memcpy(w.blocks.data() + r * row, w.blocks.data() + h.top * row, row);
  h.nan_row = 1;
  while (h.nan_row == h.top || h.nan_row == h.lo || h.nan_row == h.pair || h.nan_row == h.hi)
    h.nan_row++;
  w.blocks[h.nan_row * row] = 0x00, w.blocks[h.nan_row * row + 1] = 0x7e;  // f16 NaN
  return h;
}

void check_head_samples(const HeadSamples& fused, const HeadSamples& apart,
                        const std::vector<std::vector<float>>& draws, const PlantedHead& ph,
                        int64_t N) {
  REQUIRE(fused.size() == draws.size());
  REQUIRE(apart.size() == draws.size());
  auto cpu = make_cpu_backend(1);
  for (size_t i = 0; i < draws.size(); i++) {
    INFO("temperature " << draws[i][0] << " u " << draws[i][1] << " top_k " << draws[i][2]);
    const std::vector<float>& logits = fused[i].first;
    // Bit for bit (a NaN is planted).
    REQUIRE(std::memcmp(logits.data(), apart[i].first.data(), N * 4) == 0);
    CHECK(std::isnan(logits[ph.nan_row]));
    if (ph.hi < N) CHECK(logits[ph.lo] == logits[ph.hi]);
    CHECK(logits[ph.lo] == logits[ph.top]);
    CHECK(logits[ph.pair] == logits[ph.top]);
    // The CPU's Sample of the very logits the GEMV wrote.
    OneNode ref(*cpu, make_node(Op::Sample),
                {f32_tensor({1, N}, logits), f32_tensor({1, kSampleParamCount}, draws[i])},
                i32_tensor({1}, {-1}));
    ref.run();
    int32_t want = -1;
    std::memcpy(&want, ref.output().data(), 4);
    CHECK(fused[i].second == want);
    CHECK(apart[i].second == want);
    if (draws[i][0] == 0.f) CHECK(want == ph.first());
  }
}

DeviceBuffer* TestBuffers::put(const Bytes& data) {
  bufs_.push_back(be_.alloc(std::max<size_t>(data.size(), 4), "test"));
  if (!data.empty()) be_.upload(*bufs_.back(), 0, data.data(), data.size());
  return bufs_.back().get();
}

TensorRef TestBuffers::weight(const QuantMatrix& q, DType t, int64_t N, int64_t K, bool quant) {
  if (!quant) return {put(to_bytes(q.values)), 0, DType::F32, {N, K}};
  bufs_.push_back(be_.upload_weight(HostTensor{t, {N, K}, q.blocks.data(), q.blocks.size()}, "w"));
  return {bufs_.back().get(), 0, t, {N, K}};
}

void write_dequantized_fixture(const std::string& name, DType t, const std::string& dir) {
  write_dequantized_model(model_dir(name), t, dir);
}

void write_dequantized_model(const std::string& src, DType t, const std::string& dir) {
  write_file(dir + "/config.json", read_file(src + "/config.json"));
  auto store = WeightStore::open_dir(src);
  std::vector<std::unique_ptr<std::vector<float>>> keep;
  std::vector<std::pair<std::string, HostTensor>> out;
  for (const std::string& n : store->names()) {
    const HostTensor* h = store->find(n);
    if (!dtype_info(h->dtype).is_float ||
        (n.find(".weight") == std::string::npos && n.find(".bias") == std::string::npos))
      continue;
    keep.push_back(std::make_unique<std::vector<float>>(h->shape.numel()));
    std::vector<float>& v = *keep.back();
    convert_to_f32(h->dtype, h->data, v.data(), h->shape.numel());
    // What --quantization converts: float matrices with rows of whole blocks.
    if (h->shape.rank == 2 && h->shape.row_len() % 32 == 0) {
      const int64_t K = h->shape.row_len();
      std::vector<uint8_t> row(dtype_row_bytes(t, K));
      for (int64_t r = 0; r < h->shape.rows(); r++) {
        float* p = v.data() + r * K;
        if (t == DType::Q8_0) {
          quantize_row_q8_0(p, row.data(), K);
          dequantize_row_q8_0(row.data(), p, K);
        } else {
          quantize_row_q4_0(p, row.data(), K);
          dequantize_row_q4_0(row.data(), p, K);
        }
      }
    }
    out.push_back({n, HostTensor{DType::F32, h->shape, v.data(), v.size() * 4}});
  }
  write_safetensors(dir + "/model.safetensors", out);
}

void check_fixture_reference(Backend& be, const char* name, double tol) {
  const Reference ref = load_reference(name);
  auto model = Model::load(model_dir(name), be);
  Session session(*model);
  const std::vector<float> logits = session.forward(ref.input_ids, true);
  const double err = max_rel_error(logits, ref.logits);
  INFO(name << ": max |Δ| / max |ref| = " << err);
  CHECK(err <= tol);
  session.reset();
  CHECK(greedy(session, ref.input_ids, 16, ref.vocab) == ref.greedy_ids);
  session.reset();
  CHECK(greedy_on_device(session, ref.input_ids, 16) == ref.greedy_ids);
  session.reset();
  CHECK(greedy_queued(session, ref.input_ids, 16) == ref.greedy_ids);
  session.reset();
  CHECK(session.decode_greedy(ref.input_ids, 16) == ref.greedy_ids);  // the backend's ahead
}

void check_half_kv_cache(Backend& be, const char* name, DType kv, double tol) {
  const Reference ref = load_reference(name);
  auto model = Model::load(model_dir(name), be);
  SessionOptions half_opts;
  half_opts.kv_dtype = kv;
  Session half(*model, half_opts), full(*model);
  std::vector<float> lh = half.forward(ref.input_ids, true);
  const double err = max_rel_error(lh, ref.logits);
  INFO(name << " " << dtype_name(kv) << " cache: prompt max |Δ| / max |ref| = " << err);
  CHECK(err <= tol);
  half.reset();
  std::vector<float> lf = full.forward(ref.input_ids, false);
  lh = half.forward(ref.input_ids, false);
  double worst = 0;
  for (int i = 0; i < 16; i++) {
    const int32_t next = argmax(lf.data(), ref.vocab);
    lf = full.forward({next}, false);
    lh = half.forward({next}, false);
    worst = std::max(worst, max_rel_error(lh, lf));
  }
  INFO(name << " " << dtype_name(kv) << " cache: decode max |Δ| / max |f32 cache| = " << worst);
  CHECK(worst <= tol);
}

std::vector<float> download_f32(Backend& be, const std::vector<TensorRef>& tensors) {
  std::vector<float> all;
  for (const TensorRef& r : tensors) {
    std::vector<float> v(r.shape.numel());
    be.download(*r.buffer, r.offset, v.data(), v.size() * 4);
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

double worst_q16_gemv_error(const std::vector<float>& x, const std::vector<float>& w,
                            const std::vector<float>* bias, int64_t T, int64_t K, int64_t N,
                            const std::vector<float>& got, double x_step_div) {
  constexpr double kU32 = 1.0 / 16777216;
  double worst = 0;
  for (int64_t t = 0; t < T; t++) {
    std::vector<double> amax(K / 32, 0.0);
    for (int64_t k = 0; k < K; k++)
      amax[k / 32] = std::max(amax[k / 32], std::fabs(double{x[t * K + k]}));
    for (int64_t n = 0; n < N; n++) {
      double y = bias ? (*bias)[n] : 0.0, a = 0, g = 0;
      for (int64_t k = 0; k < K; k++) {
        const double xv = x[t * K + k], wv = w[n * K + k];
        y += xv * wv;
        a += std::fabs(xv * wv);
        g += std::fabs(wv) * amax[k / 32] / x_step_div;
      }
      const double tol = 1.02 * g + (K / 32 + 16) * kU32 * (a + std::fabs(y));
      const double d = std::fabs(got[t * N + n] - y);
      worst = std::max(worst, std::isnan(d) ? 1e30 : d / tol);
    }
  }
  return worst;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double time_matmuls(Backend& be, DType t, const Bytes& w, int64_t N, int64_t K, int64_t T, int n,
                    int reps, const Bytes* w_back) {
  std::mt19937 rng(5);
  std::vector<std::unique_ptr<DeviceBuffer>> bufs;
  std::vector<Node> nodes(n, make_node(Op::MatMul));
  bufs.push_back(be.alloc(T * K * 4, "x"));
  const Bytes x = to_bytes(uniform(T * K, rng));
  be.upload(*bufs.back(), 0, x.data(), x.size());
  TensorRef in{bufs.back().get(), 0, DType::F32, {T, K}};
  std::vector<BoundNode> bound;
  for (int i = 0; i < n; i++) {
    // Chained: odd matmuls take the [K, N] weight back to K.
    const bool back = w_back && i % 2 == 1;
    const int64_t rows = back ? K : N, cols = back ? N : K;
    const Bytes& wi = back ? *w_back : w;
    BoundNode bn;
    bn.node = &nodes[i];
    bufs.push_back(be.upload_weight(HostTensor{t, {rows, cols}, wi.data(), wi.size()}, "w"));
    bn.inputs.push_back(in);
    bn.inputs.push_back({bufs.back().get(), 0, t, {rows, cols}});
    bufs.push_back(be.alloc(T * rows * 4, "y"));
    bn.output = {bufs.back().get(), 0, DType::F32, {T, rows}};
    if (w_back) in = bn.output;
    bound.push_back(bn);
  }
  auto prog = be.compile(bound);
  // Warm up for a quarter of a second first: an idle GPU runs its cores at a low clock
  // for a while (H200: 345 MHz), and a few runs of microseconds measured that clock,
  // 3-5x slower than the same kernels inside a model's decode.
  auto w0 = std::chrono::steady_clock::now();
  int warm_runs = 0;
  while (warm_runs < 3 || seconds_since(w0) < 0.25) {
    prog->run();
    if (++warm_runs % 8 == 0) be.synchronize();
  }
  be.synchronize();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; i++) prog->run();
  be.synchronize();
  return seconds_since(t0) / reps / n;
}

}  // namespace llm::test
