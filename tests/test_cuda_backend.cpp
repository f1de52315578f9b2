// The CUDA backend against the CPU backend (op by op, awkward sizes) and against the
// fixtures' transformers references (whole models). Without a CUDA device, or in a
// build without CUDA, every test reports itself skipped.
#include <catch2/catch.hpp>

#ifdef LLM_HAVE_CUDA

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend_op_checks.h"
#include "backend_test_util.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_devices.h"
#include "core/backend.h"
#include "core/dtype.h"
#include "core/engine/sampler.h"
#include "core/engine/session.h"
#include "core/error.h"
#include "core/formats/quantize.h"
#include "core/formats/safetensors.h"
#include "core/graph.h"
#include "core/model.h"
#include "test_util.h"

using namespace llm;
using namespace llm::test;

namespace {

using llm::test::Bytes;
using llm::test::to_bytes;
using llm::test::uniform;

bool have_cuda() {
  static const bool have = !cuda_list_devices().empty();
  return have;
}

#define SKIP_WITHOUT_CUDA()            \
  do {                                 \
    if (!have_cuda()) {                \
      WARN("no CUDA device: skipped"); \
      return;                          \
    }                                  \
  } while (0)

std::unique_ptr<Backend> cuda_backend_without_graphs() {
  ScopedEnv env("LLM_CUDA_GRAPHS", "0");
  return make_cuda_backend(0);
}

// Runs the node on the CPU and on CUDA (with CUDA graphs, run twice so the second run
// is a replay) and returns max |Δ| / max |cpu|.
double compare_with_cpu(const Node& node, const std::vector<HostT>& ins, const HostT& out,
                        int inplace = -1) {
  auto cpu = make_cpu_backend(2);
  auto gpu = make_cuda_backend(0);
  return compare_backends(*cpu, *gpu, node, ins, out, inplace);
}

// compare_with_cpu as the shared op checks take it (backend_op_checks.h).
double compare_cpu(const Node& node, const std::vector<HostT>& ins, const HostT& out) {
  return compare_with_cpu(node, ins, out);
}

std::string format_str(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format_str(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

}  // namespace

TEST_CASE("cuda backend describes its device", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  auto be = make_cuda_backend(0);
  const DeviceInfo d = be->info();
  CHECK(d.id == "cuda:0");
  CHECK(!d.name.empty());
  CHECK(d.total_memory > 0);
  CHECK(d.details.find("compute capability") != std::string::npos);
  CHECK_THROWS_WITH(make_cuda_backend(99), Catch::Contains("cuda:99 does not exist"));
}

TEST_CASE("cuda small copies keep the order they were asked in", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  // A decode step's traffic: small uploads, a device copy and small downloads, batched
  // into one launch where they do not touch each other (LLM_CUDA_SMALL_COPIES=0: the
  // copy engine for each). Each buffer is written again right after it is read, so a
  // copy batched with a later one it conflicts with would see the later bytes.
  for (const char* batch : {"1", "0"}) {
    DYNAMIC_SECTION("batched " << batch) {
      ScopedEnv env("LLM_CUDA_SMALL_COPIES", batch);
      auto be = make_cuda_backend(0);
      auto a = be->alloc(64, "a"), b = be->alloc(64, "b");
      std::vector<int32_t> ids(16), got(16), got2(3), again(16);
      std::iota(ids.begin(), ids.end(), 100);
      be->upload(*a, 0, ids.data(), 64);
      be->copy(*b, 4, *a, 0, 12);  // b[1..3] = 100..102
      const uint64_t t1 = be->start_download(*b, 4, got2.data(), 12);
      std::vector<int32_t> later(16, -7);
      be->upload(*a, 0, later.data(), 64);  // a changes after the copy read it
      be->upload(*b, 4, later.data(), 4);   // b[1] changes after the download read it
      const uint64_t t2 = be->start_download(*a, 0, got.data(), 64);
      be->copy(*a, 8, *b, 4, 8);  // a[2..3] = -7, 101: after t2 read a
      be->finish_download(t1);
      be->finish_download(t2);
      CHECK(got2 == std::vector<int32_t>{100, 101, 102});
      CHECK(got == later);
      be->download(*a, 0, again.data(), 64);
      std::vector<int32_t> want = later;
      want[2] = -7;
      want[3] = 101;
      CHECK(again == want);
    }
  }
}

TEST_CASE("cuda backend names what it cannot run and what does not fit", "[cuda][errors]") {
  SKIP_WITHOUT_CUDA();
  auto be = make_cuda_backend(0);
  TensorInfo x{"x", TensorKind::Input, DType::F32, {1, 64}, {}};
  TensorInfo out{"y", TensorKind::Intermediate, DType::F32, {1, 8}, {}};
  for (DType q : {DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    // Quantized matrices run; quantized KV caches do not (yet).
    TensorInfo w{"w", TensorKind::Weight, q, {8, 64}, {}};
    CHECK(be->check(make_node(Op::MatMul), {&x, &w}, out).empty());
    TensorInfo src{"k", TensorKind::Intermediate, DType::F32, {1, 64}, {}};
    TensorInfo slots{"s", TensorKind::Input, DType::I32, {1}, {}};
    TensorInfo cache{"c", TensorKind::State, q, {16, 64}, {}};
    const std::string why = be->check(make_node(Op::KvAppend), {&src, &slots, &cache}, cache);
    CHECK_THAT(why, Catch::Contains(dtype_name(q)) &&
                        Catch::Contains("not supported by the cuda backend yet"));
  }
  TensorInfo x40{"x", TensorKind::Input, DType::F32, {1, 40}, {}};
  TensorInfo w40{"w", TensorKind::Weight, DType::Q4_0, {8, 40}, {}};
  CHECK_THAT(be->check(make_node(Op::MatMul), {&x40, &w40}, out),
             Catch::Contains("multiple of 32"));
  CHECK_THROWS_WITH(be->alloc(size_t{1} << 52, "a test tensor"),
                    Catch::Contains("out of device memory on cuda:0 allocating") &&
                        Catch::Contains("MiB for a test tensor (free"));
  // The failed allocation leaves the device usable.
  auto buf = be->alloc(1024, "after");
  be->clear(*buf, 0, 1024);
  be->synchronize();
}

// The bound of a matmul of K = 200..256 on the tensor cores with x rounded to the 16-bit
// weights' type: 2^-11 (f16) or 2^-9 (bf16) of each |x·w|, at most K/4 of them against a
// largest output of about sqrt(K), so 2e-3 and 8e-3; float32 paths agree to 1e-5.
namespace {
double half_gemm_bound(DType wt) {
  return wt == DType::F16 ? 2e-3 : wt == DType::BF16 ? 8e-3 : 1e-5;
}
}  // namespace

TEST_CASE("cuda matmul matches the cpu (GEMV and GEMM paths, f32/f16/bf16)", "[cuda][ops]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(1);
  struct KN {
    int64_t K, N;
  };
  // f16/bf16 weights take the float GEMV for one token and the tensor cores for more;
  // with LLM_CUDA_HALF_GEMV_MAX_TOKENS=8 the GEMV takes up to 8 (float32 x).
  for (const char* gemv_max : {"", "8"}) {
    for (DType wt : {DType::F32, DType::F16, DType::BF16}) {
      if (*gemv_max && wt == DType::F32) continue;
      for (KN kn : {KN{67, 13}, KN{200, 96}, KN{256, 130}}) {
        for (int64_t T : {1, 2, 3, 7, 8, 9, 33}) {
          for (bool bias : {false, true}) {
            DYNAMIC_SECTION(dtype_name(wt)
                            << " T=" << T << " K=" << kn.K << " N=" << kn.N
                            << (bias ? " +bias" : "") << (*gemv_max ? " gemv up to 8" : "")) {
              std::vector<HostT> ins = {f32_tensor({T, kn.K}, uniform(T * kn.K, rng)),
                                        {wt, {kn.N, kn.K}, encode(wt, uniform(kn.N * kn.K, rng))}};
              if (bias) ins.push_back(f32_tensor({kn.N}, uniform(kn.N, rng)));
              const HostT out = f32_tensor({T, kn.N}, std::vector<float>(T * kn.N, 0.f));
              ScopedEnv env("LLM_CUDA_HALF_GEMV_MAX_TOKENS", *gemv_max ? gemv_max : nullptr);
              const double err = compare_with_cpu(make_node(Op::MatMul), ins, out);
              INFO("max rel err " << err);
              const int64_t gemv_tokens = *gemv_max ? 8 : 1;
              CHECK(err <= (T > gemv_tokens ? half_gemm_bound(wt) : 1e-5));
            }
          }
        }
      }
    }
  }
}

TEST_CASE("cuda matmuls of one x in a row (q/k/v) match the cpu", "[cuda][ops]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(11);
  for (DType wt : {DType::F32, DType::F16, DType::BF16}) {
    for (int64_t T : {1, 5, 12}) {
      DYNAMIC_SECTION(dtype_name(wt) << " T=" << T) {
        // Four matmuls of one x (more than one launch takes), with and without bias;
        // with 16-bit weights and T > 1 the tensor-core GEMMs after the first reuse the
        // first one's rounding of x.
        const int64_t K = 200;
        const int64_t Ns[] = {96, 13, 40, 7};
        const std::vector<float> x = uniform(T * K, rng);
        std::vector<std::vector<float>> w, b;
        for (int64_t N : Ns) {
          w.push_back(uniform(N * K, rng));
          b.push_back(uniform(N, rng));
        }
        auto run = [&](Backend& be) {
          std::vector<std::unique_ptr<DeviceBuffer>> bufs;
          auto put = [&](const Bytes& data) {
            bufs.push_back(be.alloc(data.size(), "test"));
            be.upload(*bufs.back(), 0, data.data(), data.size());
            return bufs.back().get();
          };
          std::vector<Node> nodes(4, make_node(Op::MatMul));
          std::vector<BoundNode> bound;
          const TensorRef xr{put(to_bytes(x)), 0, DType::F32, {T, K}};
          for (int i = 0; i < 4; i++) {
            BoundNode bn;
            bn.node = &nodes[i];
            bn.inputs = {xr, {put(encode(wt, w[i])), 0, wt, {Ns[i], K}}};
            if (i % 2) bn.inputs.push_back({put(to_bytes(b[i])), 0, DType::F32, {Ns[i]}});
            bn.output = {put(Bytes(T * Ns[i] * 4)), 0, DType::F32, {T, Ns[i]}};
            bound.push_back(bn);
          }
          auto prog = be.compile(bound);
          prog->run();
          prog->run();
          std::vector<std::vector<float>> outs;
          for (const BoundNode& bn : bound) {
            Bytes o(bn.output.buffer->size());
            be.download(*bn.output.buffer, 0, o.data(), o.size());
            outs.push_back(decode(DType::F32, o));
          }
          return outs;
        };
        auto cpu = make_cpu_backend(2);
        auto gpu = make_cuda_backend(0);
        const auto want = run(*cpu), got = run(*gpu);
        // The bounds of the single matmul test above (K = 200).
        const double tol = T == 1 ? 1e-5 : half_gemm_bound(wt);
        for (int i = 0; i < 4; i++) {
          INFO("matmul " << i);
          CHECK(max_rel_error(got[i], want[i]) <= tol);
        }
      }
    }
  }
}

TEST_CASE("cuda norms match the cpu", "[cuda][ops]") {
  SKIP_WITHOUT_CUDA();
  check_norm_ops(compare_cpu, {67, 200, 4096}, {DType::F32, DType::BF16}, false);
}

TEST_CASE("cuda rope matches the cpu (NeoX, GPT-J, partial rotary)", "[cuda][ops]") {
  SKIP_WITHOUT_CUDA();
  check_rope_ops(compare_cpu, 4095);
}

TEST_CASE("cuda element-wise ops match the cpu", "[cuda][ops]") {
  SKIP_WITHOUT_CUDA();
  check_elementwise_ops(compare_cpu, 4.f);
}

TEST_CASE("cuda slice and the RWKV ops match the cpu (state carried across runs)",
          "[cuda][ops][archs]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(41);
  const int64_t T = 7, D = 67;
  const HostT a = f32_tensor({T, D}, uniform(T * D, rng, -4.f, 4.f));
  const HostT b = f32_tensor({T, D}, uniform(T * D, rng, -4.f, 4.f));
  const HostT w = f32_tensor({1, 1, D}, uniform(D, rng, 0.f, 1.f));
  const HostT out = f32_tensor({T, D}, std::vector<float>(T * D, 0.f));
  CHECK(compare_with_cpu(make_node(Op::Mix), {a, b, w}, out) <= 1e-6);
  CHECK(compare_with_cpu(make_node(Op::SigmoidMul), {a, b}, out) <= 1e-6);
  CHECK(compare_with_cpu(make_node(Op::ReluSqr), {a}, out) <= 1e-6);
  OpParams sl;  // per-head columns 5..15 of 3 groups of 24 (gpt_neox qkv)
  sl.n_heads = 3;
  sl.head_dim = 10;
  sl.offset = 5;
  const HostT x3 = f32_tensor({T, 72}, uniform(T * 72, rng));
  CHECK(compare_with_cpu(make_node(Op::Slice, sl), {x3},
                         f32_tensor({T, 30}, std::vector<float>(T * 30, 0.f))) == 0.0);

  // Three sequences interleaved over 7 tokens, in state rows 4, 0 and 2 of 5; run
  // twice so the second run starts from the state the first one left.
  const HostT seq = i32_tensor({T}, {0, 1, 0, 2, 2, 0, 1});
  const HostT slots = i32_tensor({3}, {4, 0, 2});
  const int64_t n_slots = 5, A = 33;
  auto twice = [&](const Node& node, const std::vector<HostT>& ins, const HostT& o) {
    auto cpu = make_cpu_backend(2);
    auto gpu = make_cuda_backend(0);
    OneNode c(*cpu, node, ins, o), g(*gpu, node, ins, o);
    c.run();
    g.run();
    const double first = max_rel_error(decode(o.dtype, g.output()), decode(o.dtype, c.output()));
    c.run();
    g.run();
    return std::max(first, max_rel_error(decode(o.dtype, g.output()), decode(o.dtype, c.output())));
  };
  const HostT shift_state = f32_tensor({n_slots, D}, uniform(n_slots * D, rng));
  CHECK(twice(make_node(Op::TokenShift), {a, shift_state, seq, slots}, out) == 0.0);
  const HostT k = f32_tensor({T, A}, uniform(T * A, rng, -3.f, 3.f));
  const HostT v = f32_tensor({T, A}, uniform(T * A, rng, -3.f, 3.f));
  const HostT decay = f32_tensor({A}, uniform(A, rng, -2.f, 2.f));
  const HostT first = f32_tensor({A}, uniform(A, rng, -1.f, 1.f));
  const HostT wkv_state = f32_tensor({n_slots, 3 * A}, std::vector<float>(n_slots * 3 * A, 0.f));
  CHECK(twice(make_node(Op::Wkv), {k, v, decay, first, wkv_state, seq, slots},
              f32_tensor({T, A}, std::vector<float>(T * A, 0.f))) <= 1e-5);
}

TEST_CASE("cuda sample picks what the cpu picks (argmax and temperature; ties, NaN, long rows)",
          "[cuda][ops]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(11);
  for (const int64_t N : {7, 32000, 32003, 151936}) {
    CAPTURE(N);
    const HostT x = sample_rows_input(6, N, rng), params = sample_params_input(6, rng);
    CHECK(compare_with_cpu(make_node(Op::Sample), {x, params},
                           i32_tensor({6}, std::vector<int32_t>(6))) == 0.0);
  }
}

TEST_CASE("cuda sample's top-k, top-p and min-p cuts keep what the cpu keeps", "[cuda][ops]") {
  SKIP_WITHOUT_CUDA();
  auto gpu = make_cuda_backend(0);
  check_sample_cuts(*gpu);
}

TEST_CASE("cuda samples a token inside the quantized GEMV of its logits", "[cuda][ops][quant]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(17);
  const int64_t K = 256;
  // Tensor ids: x 0, norm weight 1, normalized x 2, head 3, logits 4, params 5, id 6.
  const Node norm = make_node(Op::RmsNorm, {0, 1}, 2), head = make_node(Op::MatMul, {2, 3}, 4),
             sample = make_node(Op::Sample, {4, 5}, 6);
  // Greedy, peaked and nearly flat draws, u at both ends; top-k cuts through the
  // planted equal maxima (kept by index) and through the flat rest.
  const std::vector<std::vector<float>> draws = {
      sample_row_params(0.f, 0.5f),        sample_row_params(0.7f, 0.3f),
      sample_row_params(50.f, 0.f),        sample_row_params(50.f, 0.62f),
      sample_row_params(50.f, 0.999f),     sample_row_params(0.7f, 0.9f, 3.f),
      sample_row_params(50.f, 0.62f, 40.f)};
  for (DType wt : {DType::Q4_0, DType::Q8_0, DType::Q4_1}) {
    // A few rows (two blocks of the grid) and many (every block, several rounds); the
    // weights through the shared-memory ring, and in registers (the kernels of devices
    // without room for the ring).
    for (int64_t N : {77, 20011})
      for (const char* staged : {"1", "0"})
        DYNAMIC_SECTION(dtype_name(wt) << " N=" << N << (*staged == '0' ? " in registers" : "")) {
          QuantMatrix w = quantize_random(wt, N, K, rng);
          const std::vector<float> x = uniform(K, rng), nw = uniform(K, rng, 0.5f, 1.5f);
          const PlantedHead ph = plant_head_maxima(w, wt, N, K, x, nw);
          // Programs with the fused launch (default) and with Sample's own.
          auto run = [&](bool fused) {
            ScopedEnv env("LLM_CUDA_FUSE_SAMPLE", fused ? "1" : "0"),
                ring("LLM_CUDA_QGEMV_STAGED", staged);
            auto gpu = make_cuda_backend(0);
            TestBuffers bufs(*gpu);
            const TensorRef xr{bufs.put(to_bytes(x)), 0, DType::F32, {1, K}};
            const TensorRef nr{bufs.put(to_bytes(nw)), 0, DType::F32, {K}};
            const TensorRef xnr{bufs.put(Bytes(K * 4)), 0, DType::F32, {1, K}};
            const TensorRef lr{bufs.put(Bytes(N * 4)), 0, DType::F32, {1, N}};
            DeviceBuffer* pb = bufs.put(Bytes(4 * kSampleParamCount));
            const TensorRef pr{pb, 0, DType::F32, {1, kSampleParamCount}};
            const TensorRef ir{bufs.put(Bytes(4)), 0, DType::I32, {1}};
            auto prog = gpu->compile({{&norm, {xr, nr}, xnr},
                                      {&head, {xnr, bufs.weight(w, wt, N, K, true)}, lr},
                                      {&sample, {lr, pr}, ir}});
            int with_sample = 0, alone = 0;
            for (const Program::Dispatch& d : prog->dispatches()) {
              with_sample += d.kernel.find("+sample") != std::string::npos;
              alone += d.kernel == "sample";
            }
            CHECK(with_sample == (fused ? 1 : 0));
            CHECK(alone == (fused ? 0 : 1));
            HeadSamples got;
            for (const std::vector<float>& p : draws) {
              gpu->upload(*pb, 0, p.data(), 4 * kSampleParamCount);
              prog->run();
              int32_t id = -1;
              gpu->download(*ir.buffer, 0, &id, 4);
              got.push_back({download_f32(*gpu, {lr}), id});
            }
            return got;
          };
          const auto fused = run(true), apart = run(false);
          check_head_samples(fused, apart, draws, ph, N);
        }
  }
}

TEST_CASE("cuda get_rows and kv_append match the cpu", "[cuda][ops]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(5);
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    DYNAMIC_SECTION(dtype_name(t)) {
      const int64_t V = 50, D = 67, R = 7;
      const HostT table{t, {V, D}, encode(t, uniform(V * D, rng))};
      const HostT ids = i32_tensor({R}, {3, 0, 49, 3, 17, 8, 22});
      CHECK(compare_with_cpu(make_node(Op::GetRows), {table, ids},
                             f32_tensor({R, D}, std::vector<float>(R * D, 0.f))) == 0.0);

      const int64_t slots = 40, W = 24, T = 5;
      const HostT cache{t, {slots, W}, encode(t, uniform(slots * W, rng))};
      const HostT src = f32_tensor({T, W}, uniform(T * W, rng, -100.f, 100.f));
      const HostT slot_ids = i32_tensor({T}, {39, 0, 12, 13, 7});
      CHECK(compare_with_cpu(make_node(Op::KvAppend), {src, slot_ids, cache}, cache, 2) == 0.0);
    }
  }
}

TEST_CASE("cuda attention matches the cpu (GQA, window, softcap, ragged batch, paged)",
          "[cuda][ops]") {
  SKIP_WITHOUT_CUDA();
  // Head dims of 64/128/256 with 1, 2, 4 or 8 query heads per kv head take the decode
  // kernel (8 tokens); the others the general one.
  using F = DType;
  check_attention_ops(compare_cpu, {{6, 2, 64, 0, 0.f, F::F32, F::F32},
                                    {6, 2, 64, 3, 0.f, F::F32, F::F32},
                                    {4, 4, 20, 0, 2.f, F::F32, F::F32},
                                    {6, 1, 36, 5, 0.f, F::F16, F::F16},
                                    {8, 2, 128, 0, 0.f, F::BF16, F::BF16},
                                    {2, 2, 256, 7, 1.5f, F::F32, F::F32},
                                    {8, 1, 64, 0, 0.f, F::F16, F::F16},
                                    {4, 2, 64, 5, 0.f, F::F32, F::F32},
                                    {4, 1, 256, 0, 0.f, F::F32, F::F32},
                                    {8, 1, 128, 0, 1.5f, F::F32, F::F32},
                                    {8, 1, 256, 3, 0.f, F::F16, F::F16}});
}

TEST_CASE("cuda split-context decode attention matches the cpu", "[cuda][ops]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(7);
  // One token over a long context: few (token, head) blocks, so the context is split
  // over blocks and merged. Pages of 16 and 12 slots (the kernel shifts for powers of two
  // and divides otherwise), GQA groups of 4 and 1.
  for (const int page : {16, 12}) {
    const int max_pages = 1024 / page + 1, cache_pages = max_pages + 16;
    std::vector<int32_t> table(cache_pages);
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng);
    table.resize(max_pages);
    for (const int heads : {4, 1}) {
      for (int window : {0, 300}) {
        for (int32_t position : {5, 200, 700, 1023}) {
          DYNAMIC_SECTION("page " << page << " heads " << heads << " position " << position
                                  << " window " << window) {
            OpParams p;
            p.n_heads = heads;
            p.n_kv_heads = 1;
            p.head_dim = 128;
            p.scale = 1.f / std::sqrt(128.f);
            p.window = window;
            p.page_size = page;
            const int64_t rows = int64_t{cache_pages} * page, W = 128, Q = heads * 128;
            const HostT k = f32_tensor({rows, W}, uniform(rows * W, rng, -2.f, 2.f));
            const HostT v = f32_tensor({rows, W}, uniform(rows * W, rng));
            const double err = compare_with_cpu(
                make_node(Op::Attention, p),
                {f32_tensor({1, Q}, uniform(Q, rng, -2.f, 2.f)), k, v, i32_tensor({1}, {position}),
                 i32_tensor({1}, {0}), i32_tensor({1, max_pages}, table)},
                f32_tensor({1, Q}, std::vector<float>(Q, 0.f)));
            INFO("max rel err " << err);
            CHECK(err <= 1e-5);
          }
        }
      }
    }
  }
}

// ---- Quantized matrices -------------------------------------------------------------------

namespace {

constexpr double kU16 = 1.0 / 2048;      // f16 unit roundoff
constexpr double kU32 = 1.0 / 16777216;  // f32 unit roundoff

// y = x · Wᵀ (+ b) for a quantized W on a backend. via_weight: W goes through
// upload_weight (the backend's own layout); else a plain buffer of GGUF blocks. The
// output starts as NaN, so unwritten elements fail every comparison.
std::vector<float> run_qmatmul(Backend& be, const std::vector<float>& x, int64_t T, int64_t K,
                               const QuantMatrix& w, DType wt, int64_t N,
                               const std::vector<float>* bias, bool via_weight) {
  const Node node = make_node(Op::MatMul);
  std::vector<std::unique_ptr<DeviceBuffer>> bufs;
  auto put = [&](const Bytes& data) {
    bufs.push_back(be.alloc(data.size(), "test"));
    be.upload(*bufs.back(), 0, data.data(), data.size());
    return bufs.back().get();
  };
  BoundNode bn;
  bn.node = &node;
  bn.inputs.push_back({put(to_bytes(x)), 0, DType::F32, {T, K}});
  if (via_weight) {
    bufs.push_back(be.upload_weight(HostTensor{wt, {N, K}, w.blocks.data(), w.blocks.size()}, "w"));
    bn.inputs.push_back({bufs.back().get(), 0, wt, {N, K}});
  } else {
    bn.inputs.push_back({put(w.blocks), 0, wt, {N, K}});
  }
  if (bias) bn.inputs.push_back({put(to_bytes(*bias)), 0, DType::F32, {N}});
  bn.output = {put(to_bytes(std::vector<float>(T * N, NAN))), 0, DType::F32, {T, N}};
  auto prog = be.compile({bn});
  prog->run();
  prog->run();
  Bytes o(T * N * 4);
  be.download(*bn.output.buffer, 0, o.data(), o.size());
  return decode(DType::F32, o);
}

}  // namespace

// Error bounds, per output element, against y = Σ_k x_k · w_k in exact arithmetic with the
// dequantized w (which the CPU also uses, in float32):
//  - decode GEMV (T <= 4, x fits shared memory): x is rounded to s · amax/32512 per block
//    of 32 (s a 16-bit integer), products are exact integers, so
//    |Δ| <= Σ_k |w_k| · amax_blk(k) / 65024 plus float32 rounding of the per-block terms
//    and their sum, <= (K/32 + 16) · 2^-24 · Σ_k |x_k w_k|;
//  - prefill (tensor cores): x and w are rounded to f16 (relative 2^-11 each, absolute
//    2^-25 for x below f16's normal range) and accumulated in float32 by cuBLAS, so
//    |Δ| <= (2 · 2^-11 + 2^-22 + K · 2^-24) · Σ_k |x_k w_k| + 2^-25 · Σ_k |w_k|.
TEST_CASE("cuda q8_0/q4_0/q4_1 matmul is within its derived bound (GEMV and GEMM paths)",
          "[cuda][ops][quant]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(21);
  auto cpu = make_cpu_backend(2);
  auto gpu = make_cuda_backend(0);
  struct Case {
    int64_t K, N;
    std::vector<int64_t> Ts;
  };
  // T of 9..256 take the MMA kernel (split over K where N is small), more cuBLAS.
  const Case cases[] = {{32, 7, {1, 9}},
                        {96, 130, {1, 2, 3, 8, 9, 33, 64}},
                        {2080, 130, {1, 2, 5, 8, 9, 17, 33, 100, 300}},
                        {4096, 300, {24, 65}},
                        {8192, 3, {1, 8}}};  // T = 8 does not fit shared memory: GEMM path
  int run = 0;
  for (DType wt : {DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    for (const Case& c : cases) {
      const QuantMatrix w = quantize_random(wt, c.N, c.K, rng);
      for (int64_t T : c.Ts) {
        run++;
        const bool bias = run % 2 == 0, via_weight = run % 3 != 0;
        DYNAMIC_SECTION(dtype_name(wt)
                        << " T=" << T << " K=" << c.K << " N=" << c.N << (bias ? " +bias" : "")
                        << (via_weight ? " (upload_weight)" : " (raw blocks)")) {
          const int64_t K = c.K, N = c.N;
          const std::vector<float> x = uniform(T * K, rng, -3.f, 3.f);
          const std::vector<float> b = uniform(N, rng);
          const std::vector<float> got =
              run_qmatmul(*gpu, x, T, K, w, wt, N, bias ? &b : nullptr, via_weight);
          // The fused GEMV takes up to 4 tokens (qgemv_max_tokens), the MMA kernel more.
          const bool gemv = T <= 4 && T * (2 * K + K / 4) <= 96 * 1024;
          double worst = 0;
          std::vector<double> bound(T * N), abs_sum(T * N), q16(T * N);
          for (int64_t t = 0; t < T; t++) {
            std::vector<double> amax(K / 32, 0.0);
            for (int64_t k = 0; k < K; k++)
              amax[k / 32] = std::max(amax[k / 32], std::fabs(double{x[t * K + k]}));
            for (int64_t n = 0; n < N; n++) {
              double y = bias ? b[n] : 0.0, a = 0, g = 0, wsum = 0;
              for (int64_t k = 0; k < K; k++) {
                const double xv = x[t * K + k], wv = w.values[n * K + k];
                y += xv * wv;
                a += std::fabs(xv * wv);
                g += std::fabs(wv) * amax[k / 32] / 65024.0;
                wsum += std::fabs(wv);
              }
              const double tol = gemv ? 1.02 * g + (K / 32 + 16) * kU32 * (a + std::fabs(y))
                                      : (2 * kU16 + 4 * kU32 + K * kU32) * 1.01 * a +
                                            wsum / 33554432.0 + 4 * kU32 * std::fabs(y);
              abs_sum[t * N + n] = a;
              q16[t * N + n] = g;
              bound[t * N + n] = tol;
              const double d = std::fabs(got[t * N + n] - y);
              worst = std::max(worst, std::isnan(d) ? 1e30 : d / tol);
            }
          }
          INFO("worst |Δ| / bound = " << worst << (gemv ? " (GEMV)" : " (GEMM)"));
          CHECK(worst <= 1.0);
          // The CPU backend on the same blocks, where it takes them: within the bound plus
          // its own error: float32 rounding, and on its integer GEMV path (few tokens)
          // x rounded to int8 per block of 32, under amax / 254 per element, 256 times
          // the 16-bit rounding's.
          TensorInfo xi{"x", TensorKind::Input, DType::F32, {T, K}, {}};
          TensorInfo wi{"w", TensorKind::Weight, wt, {N, K}, {}};
          TensorInfo oi{"y", TensorKind::Intermediate, DType::F32, {T, N}, {}};
          if (cpu->check(make_node(Op::MatMul), {&xi, &wi}, oi).empty()) {
            const std::vector<float> c_out =
                run_qmatmul(*cpu, x, T, K, w, wt, N, bias ? &b : nullptr, false);
            double cw = 0;
            for (int64_t i = 0; i < T * N; i++) {
              const double extra = (K + 2) * kU32 * abs_sum[i] + 256.5 * q16[i];
              const double d = std::fabs(double{got[i]} - c_out[i]);
              cw = std::max(cw, std::isnan(d) ? 1e30 : d / (bound[i] + extra));
            }
            INFO("against the cpu: worst |Δ| / bound = " << cw);
            CHECK(cw <= 1.0);
          }
        }
      }
    }
  }
}

TEST_CASE("cuda get_rows of q8_0/q4_0/q4_1 tables is exact", "[cuda][ops][quant]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(22);
  auto gpu = make_cuda_backend(0);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    for (int64_t D : {32, 96, 2080}) {
      for (bool via_weight : {false, true}) {
        DYNAMIC_SECTION(dtype_name(t) << " D=" << D << (via_weight ? " (upload_weight)" : "")) {
          const int64_t V = 50, R = 7;
          const QuantMatrix table = quantize_random(t, V, D, rng);
          const std::vector<int32_t> ids = {3, 0, 49, 3, 17, 8, 22};
          const Node node = make_node(Op::GetRows);
          std::vector<std::unique_ptr<DeviceBuffer>> bufs;
          auto put = [&](const Bytes& data) {
            bufs.push_back(gpu->alloc(data.size(), "test"));
            gpu->upload(*bufs.back(), 0, data.data(), data.size());
            return bufs.back().get();
          };
          BoundNode bn;
          bn.node = &node;
          if (via_weight) {
            bufs.push_back(gpu->upload_weight(
                HostTensor{t, {V, D}, table.blocks.data(), table.blocks.size()}, "table"));
            bn.inputs.push_back({bufs.back().get(), 0, t, {V, D}});
          } else {
            bn.inputs.push_back({put(table.blocks), 0, t, {V, D}});
          }
          bn.inputs.push_back({put(to_bytes(ids)), 0, DType::I32, {R}});
          bn.output = {put(to_bytes(std::vector<float>(R * D, NAN))), 0, DType::F32, {R, D}};
          auto prog = gpu->compile({bn});
          prog->run();
          Bytes o(R * D * 4);
          gpu->download(*bn.output.buffer, 0, o.data(), o.size());
          const std::vector<float> got = decode(DType::F32, o);
          std::vector<float> want;
          for (int32_t id : ids)
            want.insert(want.end(), table.values.begin() + id * D,
                        table.values.begin() + (id + 1) * D);
          CHECK(got == want);
        }
      }
    }
  }
}

TEST_CASE("cuda prefill attention (tiles of rows) matches the cpu across sequences",
          "[cuda][ops]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(23);
  // 40 tokens of three sequences in one step: 0 continues at 30..49 (20 tokens), 1 starts
  // at 0..11, 2 continues at 5..12; tiles of 16 rows mix sequences.
  const int page = 8, max_pages = 8, cache_pages = 24;
  std::vector<int32_t> table(3 * max_pages);
  std::vector<int32_t> pages(cache_pages);
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), rng);
  std::copy(pages.begin(), pages.begin() + 3 * max_pages, table.begin());
  std::vector<int32_t> pos, seq;
  for (int i = 0; i < 20; i++) pos.push_back(30 + i), seq.push_back(0);
  for (int i = 0; i < 12; i++) pos.push_back(i), seq.push_back(1);
  for (int i = 0; i < 8; i++) pos.push_back(5 + i), seq.push_back(2);
  const int64_t T = static_cast<int64_t>(pos.size());
  using F = DType;
  const AttentionCase cases[] = {{8, 2, 64, 0, 0.f, F::F32, F::F32},
                                 {4, 4, 128, 0, 0.f, F::F32, F::F32},
                                 {6, 2, 64, 9, 0.f, F::F16, F::F16},
                                 {4, 1, 128, 0, 1.5f, F::BF16, F::BF16},
                                 {12, 4, 64, 0, 0.f, F::F32, F::F32}};
  for (const AttentionCase& c : cases) {
    DYNAMIC_SECTION(attention_case_name(c)) {
      const int64_t Q = int64_t{c.heads} * c.head_dim;
      const double err = compare_with_cpu(
          make_node(Op::Attention, attention_params(c, page)),
          attention_inputs(c, int64_t{cache_pages} * page, pos, seq, table, max_pages, rng),
          f32_tensor({T, Q}, std::vector<float>(T * Q, 0.f)));
      INFO("max rel err " << err);
      CHECK(err <= 1e-5);
    }
  }
}

TEST_CASE("cuda graph replays read new inputs; graphs off gives the same bits", "[cuda][graphs]") {
  SKIP_WITHOUT_CUDA();
  std::mt19937 rng(8);
  const int64_t T = 3, K = 96, N = 40;
  const HostT w{DType::F16, {N, K}, encode(DType::F16, uniform(N * K, rng))};
  const HostT x0 = f32_tensor({T, K}, uniform(T * K, rng));
  const HostT out = f32_tensor({T, N}, std::vector<float>(T * N, 0.f));
  auto cpu = make_cpu_backend(1);
  auto with = make_cuda_backend(0);
  auto without = cuda_backend_without_graphs();
  CHECK(with->info().details.find("CUDA graphs on") != std::string::npos);
  CHECK(without->info().details.find("CUDA graphs off") != std::string::npos);
  const Node node = make_node(Op::MatMul);
  OneNode c(*cpu, node, {x0, w}, out), g(*with, node, {x0, w}, out),
      d(*without, node, {x0, w}, out);
  for (int step = 0; step < 4; step++) {
    const Bytes x = to_bytes(uniform(T * K, rng));
    c.set_input(0, x);
    g.set_input(0, x);
    d.set_input(0, x);
    c.run();
    g.run();
    d.run();
    const Bytes want = c.output(), got = g.output(), direct = d.output();
    // Three tokens of f16 weights: the tensor-core GEMM, x rounded to f16.
    CHECK(max_rel_error(decode(DType::F32, got), decode(DType::F32, want)) <=
          half_gemm_bound(DType::F16));
    CHECK(got == direct);
  }
}

TEST_CASE("cuda kernels report bad indices instead of reading out of bounds", "[cuda][errors]") {
  SKIP_WITHOUT_CUDA();
  auto be = make_cuda_backend(0);
  const HostT table = f32_tensor({4, 8}, std::vector<float>(32, 1.f));
  const HostT out = f32_tensor({2, 8}, std::vector<float>(16, 0.f));
  OneNode bad(*be, make_node(Op::GetRows), {table, i32_tensor({2}, {1, 4})}, out);
  bad.run();
  CHECK_THROWS_WITH(bad.output(), Catch::Contains("get_rows: a row id outside the table"));
  // Reported once; the backend goes on working.
  OneNode good(*be, make_node(Op::GetRows), {table, i32_tensor({2}, {1, 3})}, out);
  good.run();
  CHECK(decode(DType::F32, good.output()) == std::vector<float>(16, 1.f));
}

// ---- Whole models --------------------------------------------------------------------------

namespace {

// Prefill logits, then the logits of 6 decode steps, concatenated.
std::vector<float> prefill_and_decode(Backend& be, const std::string& name, const Reference& ref) {
  auto model = Model::load(model_dir(name), be);
  Session s(*model);
  std::vector<float> all = s.forward(ref.input_ids, true);
  for (int i = 0; i < 6; i++) {
    const std::vector<float> row = s.forward({ref.greedy_ids[i]}, false);
    all.insert(all.end(), row.begin(), row.end());
  }
  return all;
}

}  // namespace

TEST_CASE("cuda: fixtures match transformers logits and greedy ids", "[cuda][models]") {
  SKIP_WITHOUT_CUDA();
  for (const Fixture& f : kFixtures) {
    DYNAMIC_SECTION(f.name) {
      auto backend = make_cuda_backend(0);
      check_fixture_reference(*backend, f.name, f.tol);
    }
  }
}

TEST_CASE("cuda: an f16 KV cache stays close to the float32 one", "[cuda][models]") {
  SKIP_WITHOUT_CUDA();
  auto backend = make_cuda_backend(0);
  for (const Fixture& f : kFixtures) DYNAMIC_SECTION(f.name) {
      check_half_kv_cache(*backend, f.name, DType::F16, 1e-2);
    }
}

TEST_CASE("cuda: graph replay gives the logits of direct launches", "[cuda][models][graphs]") {
  SKIP_WITHOUT_CUDA();
  for (const Fixture& f : kFixtures) {
    DYNAMIC_SECTION(f.name) {
      const Reference ref = load_reference(f.name);
      auto with = make_cuda_backend(0);
      auto without = cuda_backend_without_graphs();
      const std::vector<float> a = prefill_and_decode(*with, f.name, ref);
      const std::vector<float> b = prefill_and_decode(*without, f.name, ref);
      REQUIRE(a.size() == b.size());
      CHECK(a == b);
    }
  }
}

TEST_CASE("cuda: decode through the cache equals a full forward pass", "[cuda][models]") {
  SKIP_WITHOUT_CUDA();
  for (const char* name : {"llama3", "qwen2", "mistral", "mistral_w5", "qwen2_f16_untied",
                           "llama_bf16_sharded", "gpt_neox", "gptj", "rwkv", "phi3"}) {
    DYNAMIC_SECTION(name) {
      const Reference ref = load_reference(name);
      auto backend = make_cuda_backend(0);
      auto model = Model::load(model_dir(name), *backend);
      Session full(*model);
      const std::vector<float> all = full.forward(ref.input_ids, true);
      Session inc(*model);
      const size_t split = 10;
      std::vector<int32_t> head(ref.input_ids.begin(), ref.input_ids.begin() + split);
      std::vector<float> got = inc.forward(head, true);
      for (size_t t = split; t < ref.input_ids.size(); t++) {
        const std::vector<float> row = inc.forward({ref.input_ids[t]}, false);
        got.insert(got.end(), row.begin(), row.end());
      }
      REQUIRE(got.size() == all.size());
      // f16/bf16 weights: the full pass's prefill runs on the tensor cores with x
      // rounded to their type (gemm_half), the decode steps' GEMV in float32: the bound
      // of the quantized models' tensor-core prefill (below), four times that for bf16's
      // coarser rounding; float32 models agree to 1e-5.
      const std::string n = name;
      CHECK(max_rel_error(got, all) <= (n == "qwen2_f16_untied"     ? 5e-3
                                        : n == "llama_bf16_sharded" ? 2e-2
                                                                    : 1e-5));
    }
  }
}

TEST_CASE("cuda: chunked prefill over small pages equals one pass", "[cuda][models]") {
  SKIP_WITHOUT_CUDA();
  const Reference ref = load_reference("mistral");  // sliding window 8 across chunks
  auto backend = make_cuda_backend(0);
  auto model = Model::load(model_dir("mistral"), *backend);
  SessionOptions opts;
  opts.prefill_chunk_size = 5;
  opts.page_size = 4;
  Session chunked(*model, opts);
  CHECK(max_rel_error(chunked.forward(ref.input_ids, true), ref.logits) <= 1e-4);
  chunked.reset();
  CHECK(max_rel_error(chunked.forward(ref.input_ids, true), ref.logits) <= 1e-4);
}

// ---- Quantized models ----------------------------------------------------------------------

// The same quantized weights on the CPU (as float32 values) and on CUDA (q8_0/q4_0 blocks).
// Prefill runs the tensor-core path (x and w rounded to f16: a relative error of about
// 2^-11 per product, so ~1e-3 of the logits' scale after the model's 15 matmuls); token
// by token runs the GEMV path (x rounded to 16-bit integers per block of 32: under
// amax/65024 per element, ~1e-5 per matmul). The tolerances are those estimates with a
// margin; on an H100 the errors were 3.4e-4..6.3e-4 (prefill, tolerance 5e-3) and
// 3e-5..5.7e-5 (token by token, tolerance 2e-4).
TEST_CASE("cuda: q8f16_1 / q4f16_1 models match the cpu on the same quantized weights",
          "[cuda][models][quant]") {
  SKIP_WITHOUT_CUDA();
  struct Scheme {
    const char* name;
    DType t;
  };
  for (const Scheme& q : {Scheme{"q8f16_1", DType::Q8_0}, Scheme{"q4f16_1", DType::Q4_0}}) {
    // llama3/qwen2: GQA, q/k/v bias; gptj/gpt_neox: partial rotary, interleaved and
    // NeoX (the q/k/v GEMV's rope epilogue); phi3: fused qkv weights.
    for (const char* name : {"llama3", "qwen2", "gptj", "gpt_neox", "phi3"}) {
      DYNAMIC_SECTION(name << " " << q.name) {
        const Reference ref = load_reference(name);
        TempDir dir;
        write_dequantized_fixture(name, q.t, dir.path());
        auto cpu = make_cpu_backend(2);
        auto gpu = make_cuda_backend(0);
        auto cm = Model::load(dir.path(), *cpu);
        auto gm = Model::load(model_dir(name), *gpu, LoadOptions{q.name});
        CHECK(gm->weight_bytes() * 3 < cm->weight_bytes());
        Session cs(*cm), gs(*gm);
        const std::vector<float> want = cs.forward(ref.input_ids, true);
        const std::vector<float> got = gs.forward(ref.input_ids, true);
        const double pre = max_rel_error(got, want);

        std::vector<int32_t> tokens = ref.input_ids;
        tokens.insert(tokens.end(), ref.greedy_ids.begin(), ref.greedy_ids.begin() + 6);
        cs.reset();
        gs.reset();
        std::vector<float> wd, gd;
        for (int32_t id : tokens) {
          const std::vector<float> a = cs.forward({id}, false), b = gs.forward({id}, false);
          wd.insert(wd.end(), a.begin(), a.end());
          gd.insert(gd.end(), b.begin(), b.end());
        }
        const double dec = max_rel_error(gd, wd);
        std::printf(
            "cuda %s %s vs cpu on the same weights: prefill max|Δ|/max|ref| %.3g, "
            "token by token %.3g\n",
            name, q.name, pre, dec);
        CHECK(pre <= 5e-3);
        CHECK(dec <= 2e-4);

        // Greedy decoding along the CPU's choices: the same argmax except where the CPU's
        // top two logits are closer than the error allows.
        cs.reset();
        gs.reset();
        std::vector<float> lc = cs.forward(ref.input_ids, false);
        std::vector<float> lg = gs.forward(ref.input_ids, false);
        int differ = 0;
        for (int step = 0; step < 16; step++) {
          const int32_t a = argmax(lc.data(), ref.vocab), b = argmax(lg.data(), ref.vocab);
          if (a != b) {
            float scale = 0.f;
            for (float v : lc) scale = std::max(scale, std::fabs(v));
            const double margin = lc[a] - lc[b];
            INFO("step " << step << ": cpu " << a << " cuda " << b << " margin " << margin);
            CHECK(margin <= 2 * (step == 0 ? 5e-3 : 2e-4) * scale);
            differ++;
          }
          lc = cs.forward({a}, false);
          lg = gs.forward({a}, false);
        }
        if (q.t == DType::Q8_0) CHECK(differ == 0);

        if (q.t == DType::Q4_0) {
          // Half-precision caches, written by the GEMV's rope epilogue in decode: token by
          // token against the CPU with the same cache type. Products that differ by the
          // GEMV's rounding may round to neighbouring halves: about one ulp of the cache
          // type (f16 2^-11, bf16 2^-8) on top of the float32 bound.
          for (DType kv : {DType::F16, DType::BF16}) {
            SessionOptions so;
            so.kv_dtype = kv;
            Session ch(*cm, so), gh(*gm, so);
            double worst = 0;
            for (int32_t id : tokens)
              worst =
                  std::max(worst, max_rel_error(gh.forward({id}, false), ch.forward({id}, false)));
            INFO(dtype_name(kv) << " cache: token by token max|Δ|/max|ref| " << worst);
            CHECK(worst <= (kv == DType::F16 ? 1e-3 : 4e-3));
          }
        }

        if (std::string(name) == "llama3" && q.t == DType::Q4_0) {
          // Fused launches replayed as a graph give the bits of direct launches.
          auto direct = cuda_backend_without_graphs();
          auto dm = Model::load(model_dir(name), *direct, LoadOptions{q.name});
          Session ds(*dm);
          gs.reset();
          CHECK(ds.forward(ref.input_ids, true) == gs.forward(ref.input_ids, true));
          for (int32_t id : ref.greedy_ids)
            CHECK(ds.forward({id}, false) == gs.forward({id}, false));
        }
      }
    }
  }
}

// ---- Speed (hidden: run with "[cuda-bench]"; never asserted) -------------------------------

namespace {

struct BenchShape {
  const char* name;
  int64_t D, F, L, H, Hkv, V;
};
// PERF.md's shapes (head_dim 128 for 7b, 64 for 1b).
const BenchShape kLlama1b{"llama-1b", 2048, 8192, 16, 32, 8, 32000};
const BenchShape kLlama7b{"llama-7b", 4096, 11008, 32, 32, 32, 32000};

// A llama-shaped model with random f16 weights. Layers share their host memory (speed does
// not depend on the values), so even 7b takes under 1 GB to build; the file is full size.
void write_bench_model(const std::string& dir, const BenchShape& m) {
  const int64_t D = m.D, F = m.F, Dh = D / m.H;
  write_file(dir + "/config.json",
             format_str("{\"vocab_size\": %lld, \"hidden_size\": %lld, \"intermediate_size\": "
                        "%lld, \"num_hidden_layers\": %lld, \"num_attention_heads\": %lld,"
                        " \"num_key_value_heads\": %lld, \"max_position_embeddings\": 4096,"
                        " \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0,"
                        " \"tie_word_embeddings\": false, \"hidden_act\": \"silu\","
                        " \"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"],"
                        " \"torch_dtype\": \"float16\"}",
                        (long long)m.V, (long long)D, (long long)F, (long long)m.L, (long long)m.H,
                        (long long)m.Hkv));
  std::mt19937 rng(9);
  std::vector<uint16_t> pool(1 << 20);
  for (uint16_t& h : pool)
    h = f32_to_f16(std::uniform_real_distribution<float>(-0.03f, 0.03f)(rng));
  std::map<std::string, std::unique_ptr<std::vector<uint16_t>>> store;
  size_t cursor = 0;
  auto data = [&](const std::string& role, int64_t n, bool ones) {
    auto& slot = store[role];
    if (!slot) {
      slot = std::make_unique<std::vector<uint16_t>>(n);
      for (int64_t i = 0; i < n; i++)
        (*slot)[i] = ones ? f32_to_f16(1.f) : pool[(cursor + i * 7) % pool.size()];
      cursor += 12345;
    }
    return slot->data();
  };
  std::vector<std::pair<std::string, HostTensor>> tensors;
  auto add = [&](const std::string& name, const std::string& role, Shape shape, bool ones) {
    const int64_t n = shape.numel();
    tensors.push_back({name, HostTensor{DType::F16, shape, data(role, n, ones), size_t(n) * 2}});
  };
  add("model.embed_tokens.weight", "embed", {m.V, D}, false);
  for (int64_t l = 0; l < m.L; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", "norm", {D}, true);
    add(p + "post_attention_layernorm.weight", "norm", {D}, true);
    add(p + "self_attn.q_proj.weight", "q", {m.H * Dh, D}, false);
    add(p + "self_attn.k_proj.weight", "k", {m.Hkv * Dh, D}, false);
    add(p + "self_attn.v_proj.weight", "v", {m.Hkv * Dh, D}, false);
    add(p + "self_attn.o_proj.weight", "o", {D, m.H * Dh}, false);
    add(p + "mlp.gate_proj.weight", "gate", {F, D}, false);
    add(p + "mlp.up_proj.weight", "up", {F, D}, false);
    add(p + "mlp.down_proj.weight", "down", {D, F}, false);
  }
  add("model.norm.weight", "norm", {D}, true);
  add("lm_head.weight", "head", {m.V, D}, false);
  write_safetensors(dir + "/model.safetensors", tensors);
}

// pp512, then 128 greedy decode steps after the prompt (context 641: llama-bench's
// tg128 @ d512, llmcli bench -d 512; its tg128 starts at an empty context); each step is
// a whole Session::forward
// (inputs up, graph replay, logits down, argmax on the host). Median of 3 after a warm-up.
void bench_model(const std::string& dir, const BenchShape& m, const char* scheme, bool pdl = true) {
  ScopedEnv env("LLM_CUDA_PDL", pdl ? "1" : "0");
  auto backend = make_cuda_backend(0);
  auto t0 = std::chrono::steady_clock::now();
  auto model = Model::load(dir, *backend, LoadOptions{scheme});
  const double load_s = seconds_since(t0);
  SessionOptions so;
  so.context_size = 512 + 128 + 1;
  so.prefill_chunk_size = 512;
  Session s(*model, so);
  std::mt19937 rng(42);
  std::vector<int32_t> ids(512);
  for (int32_t& t : ids) t = std::uniform_int_distribution<int32_t>(0, int32_t(m.V) - 1)(rng);
  s.forward(ids, false);  // warm-up: compiles and captures both shapes
  s.forward({1}, false);
  std::vector<double> pp, tg;
  for (int rep = 0; rep < 3; rep++) {
    s.reset();
    backend->synchronize();
    t0 = std::chrono::steady_clock::now();
    std::vector<float> logits = s.forward(ids, false);
    pp.push_back(512 / seconds_since(t0));
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 128; i++)
      logits = s.forward({argmax(logits.data(), static_cast<int>(m.V))}, false);
    tg.push_back(128 / seconds_since(t0));
  }
  std::sort(pp.begin(), pp.end());
  std::sort(tg.begin(), tg.end());
  std::printf(
      "BENCH | %s | %s | %.2f GB | pp512 %.0f tok/s | tg128 %.1f tok/s (%.3f ms/token) | "
      "load %.1f s | %s | PDL %s\n",
      m.name, scheme, model->weight_bytes() / 1e9, pp[1], tg[1], 1e3 / tg[1], load_s,
      backend->info().name.c_str(), pdl ? "on" : "off");
  std::fflush(stdout);
}

// Where the time goes: GPU time per launch label (printed when the programs are
// destroyed), launches direct with an event between each pair.
void profile_model(const std::string& dir, const BenchShape& m, const char* scheme) {
  ScopedEnv env("LLM_CUDA_PROFILE", "1");
  auto backend = make_cuda_backend(0);
  auto model = Model::load(dir, *backend, LoadOptions{scheme});
  SessionOptions so;
  so.context_size = 512 + 128 + 1;
  Session s(*model, so);
  std::vector<int32_t> ids(512);
  for (int i = 0; i < 512; i++) ids[i] = (i * 7919) % static_cast<int32_t>(m.V);
  std::printf("PROFILE %s %s (prefill 512, then 32 decode steps):\n", m.name, scheme);
  std::fflush(stdout);
  std::vector<float> logits = s.forward(ids, false);
  for (int i = 0; i < 32; i++)
    logits = s.forward({argmax(logits.data(), static_cast<int>(m.V))}, false);
}

// GEMV bandwidth (T = 1); bytes are the weights' (as stored on the device).
void bench_gemv(DType t, int64_t N, int64_t K) {
  auto be = make_cuda_backend(0);
  std::mt19937 rng(5);
  const Bytes w = t == DType::F16 ? encode(DType::F16, uniform(N * K, rng, -0.1f, 0.1f))
                                  : quantize_random(t, N, K, rng).blocks;
  const double per = time_matmuls(*be, t, w, N, K, 1, 32, 20);
  std::printf("GEMV | %s [%lld x %lld] | %.2f us | %.0f GB/s\n", dtype_name(t), (long long)N,
              (long long)K, per * 1e6, w.size() / per / 1e9);
  std::fflush(stdout);
}

// Quantized matmuls of T tokens: the MMA kernel against dequantize + cuBLAS
// (LLM_CUDA_QMMA_MAX_TOKENS=0).
void bench_qmm(DType t, int64_t N, int64_t K, int64_t T, bool mma) {
  ScopedEnv env("LLM_CUDA_QMMA_MAX_TOKENS", mma ? "100000" : "0");
  auto be = make_cuda_backend(0);
  std::mt19937 rng(5);
  const Bytes w = quantize_random(t, N, K, rng).blocks;
  const double per = time_matmuls(*be, t, w, N, K, T, 16, 10);
  std::printf("QMM | %s | %s [%lld x %lld] T=%lld | %.2f us | %.0f GB/s | %.1f TFLOP/s\n",
              mma ? "mma" : "cublas", dtype_name(t), (long long)N, (long long)K, (long long)T,
              per * 1e6, w.size() / per / 1e9, 2.0 * T * N * K / per / 1e12);
  std::fflush(stdout);
}

}  // namespace

// The fixtures have heads of 16 dims; the rope epilogue of the q/k/v GEMV indexes rows
// by head, so real head sizes (64 with GQA groups of 4, 128 with groups of 2) go token by
// token against the CPU on the same quantized weights, with f32 and f16 caches, after a
// prompt long enough for the batched (MMA) path.
TEST_CASE("cuda: q4 decode at real head sizes matches the cpu", "[cuda][models][quant]") {
  SKIP_WITHOUT_CUDA();
  const BenchShape shapes[] = {{"head64", 512, 1024, 2, 8, 2, 512},
                               {"head128", 512, 1024, 2, 4, 2, 512}};
  for (const BenchShape& m : shapes) {
    for (DType kv : {DType::F32, DType::F16}) {
      DYNAMIC_SECTION(m.name << " " << dtype_name(kv) << " cache") {
        TempDir src, deq;
        write_bench_model(src.path(), m);
        write_dequantized_model(src.path(), DType::Q4_0, deq.path());
        auto cpu = make_cpu_backend(2);
        auto gpu = make_cuda_backend(0);
        auto cm = Model::load(deq.path(), *cpu);
        auto gm = Model::load(src.path(), *gpu, LoadOptions{"q4f16_1"});
        SessionOptions so;
        so.kv_dtype = kv;
        Session cs(*cm, so), gs(*gm, so);
        // A prompt of 40 tokens (the MMA kernel with its fused norms, SiLU product and
        // residual adds; rope and cache appends in one launch), then token by token.
        std::vector<int32_t> prompt(40);
        for (size_t i = 0; i < prompt.size(); i++)
          prompt[i] = static_cast<int32_t>((i * 53 + 11) % m.V);
        const std::vector<float> pa = cs.forward(prompt, false), pb = gs.forward(prompt, false);
        const double prompt_err = max_rel_error(pb, pa);
        double worst = 0, scale = 0;
        for (int i = 0; i < 24; i++) {
          const int32_t id = (i * 37 + 5) % static_cast<int32_t>(m.V);
          const std::vector<float> a = cs.forward({id}, false), b = gs.forward({id}, false);
          worst = std::max(worst, max_rel_error(b, a));
          for (float v : a) scale = std::max(scale, static_cast<double>(std::fabs(v)));
        }
        INFO("prompt max|Δ|/max|ref| " << prompt_err << "; token by token " << worst
                                       << ", logits up to " << scale);
        CHECK(scale > 0);
        // The prompt's x and weights are rounded to f16 (the cuBLAS path's values), whose
        // relative error 2^-11 stays within 1e-2 through two layers; a misplaced rotation,
        // cache row or fused norm is off by the logits' own size.
        CHECK(prompt_err <= 1e-2);
        // K up to 1,024: the GEMV's 16-bit activations stay near 1e-4.
        CHECK(worst <= (kv == DType::F32 ? 1e-3 : 3e-3));
      }
    }
  }
}

TEST_CASE("cuda: quantized GEMM speed (MMA kernel against cuBLAS)", "[.][cuda-bench]") {
  SKIP_WITHOUT_CUDA();
  // LLM_BENCH_QMM_T=N: only T = N through the MMA kernel (for a profiler).
  const char* only = std::getenv("LLM_BENCH_QMM_T");
  std::vector<int64_t> Ts = {16, 32, 64, 128, 256, 512};
  std::vector<bool> paths = {true, false};
  if (only) {
    Ts = {std::atoll(only)};
    paths = {true};
  }
  for (int64_t T : Ts)
    for (bool mma : paths) {
      bench_qmm(DType::Q4_0, 4096, 4096, T, mma);
      bench_qmm(DType::Q4_0, 11008, 4096, T, mma);
      bench_qmm(DType::Q4_0, 4096, 11008, T, mma);
    }
}

TEST_CASE("cuda: GEMV bandwidth (q4_0, q8_0, f16)", "[.][cuda-bench]") {
  SKIP_WITHOUT_CUDA();
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::F16}) {
    bench_gemv(t, 4096, 4096);
    bench_gemv(t, 11008, 4096);
    bench_gemv(t, 4096, 11008);
    bench_gemv(t, 2048, 2048);
  }
}

TEST_CASE("cuda: prefill and decode speed of llama-1b and llama-7b shaped models",
          "[.][cuda-bench]") {
  SKIP_WITHOUT_CUDA();
  {
    TempDir dir;
    write_bench_model(dir.path(), kLlama1b);
    bench_model(dir.path(), kLlama1b, "q4f16_1");
    bench_model(dir.path(), kLlama1b, "q4f16_1", false);
    bench_model(dir.path(), kLlama1b, "q8f16_1");
    profile_model(dir.path(), kLlama1b, "q4f16_1");
  }
  {
    TempDir dir;
    write_bench_model(dir.path(), kLlama7b);
    bench_model(dir.path(), kLlama7b, "q4f16_1");
    bench_model(dir.path(), kLlama7b, "q4f16_1", false);
    profile_model(dir.path(), kLlama7b, "q4f16_1");
    bench_model(dir.path(), kLlama7b, "q0f16");
  }
}

#else  // !LLM_HAVE_CUDA

TEST_CASE("cuda backend", "[cuda]") { WARN("built without CUDA (LLM_CUDA=OFF): skipped"); }

#endif
