// The Vulkan backend against the CPU backend (op by op, awkward sizes, every dtype) and
// against the fixtures' transformers references (whole models). Runs on any Vulkan
// device, Mesa's lavapipe included; with LLM_VULKAN_VALIDATION=1 the validation layer
// is on and every test fails on a validation error. Without a device, or in a build
// without Vulkan, every test reports itself skipped.
#include <catch2/catch.hpp>

#ifdef LLM_HAVE_VULKAN

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend_op_checks.h"
#include "backend_test_util.h"
#include "backends/cpu/cpu_backend.h"
#include "backends/registry.h"
#include "backends/vulkan/vulkan_backend.h"
#include "backends/vulkan/vulkan_devices.h"
#include "core/backend.h"
#include "core/engine/sampler.h"
#include "core/engine/session.h"
#include "core/formats/quantize.h"
#include "core/model.h"
#include "test_util.h"

using namespace llm;
using namespace llm::test;

namespace {

bool have_vulkan() {
  static const bool have = !vulkan_list_devices().empty();
  return have;
}

// Skips without a device; at the end of the test, fails on validation errors. Backends
// made in a test take the float32 path (the tensor-core GEMM is fp16, tested on its own).
class VulkanTest {
 public:
  VulkanTest() : before_(vulkan_validation_errors()) {}
  ~VulkanTest() { CHECK(vulkan_validation_errors() == before_); }

 private:
  ScopedEnv fp32_{"LLM_VULKAN_COOPMAT", "0"};
  int before_;
};

bool has_coop_gemm(const Backend& be) {
  return be.info().details.find("tensor-core GEMM") != std::string::npos;
}

#define VULKAN_TEST()                  \
  if (!have_vulkan()) {                \
    WARN("no Vulkan device: skipped"); \
    return;                            \
  }                                    \
  VulkanTest vulkan_test_guard_

// One backend per GEMM path for the whole run: NVIDIA's driver refuses new instances
// after a few hundred in one process, and every section re-runs its test's body. They
// are never destroyed: NVIDIA's driver crashed tearing down two at exit. The default
// one takes the float32 paths everywhere; int_dot: its quantized GEMVs use integer dot
// products where the device has them at all (emulated ones included: lavapipe), with
// x's planes in shared memory unless shared_x is false, those on the fixed grid of
// workgroups that loop over the rows (persist 1: the default size; 2: two workgroups,
// so that every group takes many tasks, of 64 threads, loading two blocks per row at
// once) or one pass (persist 0; 3: one pass whose threads load two blocks per row at
// once); see the workgroup sizes below.
Backend& shared_vulkan(bool tensor_cores = false, bool int_dot = false, bool shared_x = true,
                       int persist = 1) {
  static Backend* backends[2][2][2][4] = {};
  Backend*& b = backends[tensor_cores][int_dot][shared_x][persist];
  if (!b) {
    ScopedEnv env("LLM_VULKAN_COOPMAT", tensor_cores ? "1" : "0");
    ScopedEnv dot("LLM_VULKAN_INT_DOT", int_dot ? "1" : "0");
    ScopedEnv sx("LLM_VULKAN_GEMV_SX", shared_x ? "1" : "0");
    ScopedEnv pe("LLM_VULKAN_GEMV_PERSIST", persist == 0 || persist == 3 ? "0" : "1");
    ScopedEnv wgs("LLM_VULKAN_GEMV_WGS", persist == 2 ? "2" : nullptr);
    ScopedEnv unroll("LLM_VULKAN_GEMV_UNROLL", persist >= 2 ? "2" : nullptr);
    // Tasks of 64 threads on the two-workgroup grid (several subgroups a task, their
    // sums met in shared memory, round after round).
    ScopedEnv ptpr("LLM_VULKAN_PERSIST_TPR", persist == 2 ? "64" : nullptr);
    // Workgroups of 1,024 threads on one pass, 256 on the two-workgroup grid, and
    // chosen per matrix on the others.
    ScopedEnv threads("LLM_VULKAN_GEMV_THREADS", persist == 0   ? "1024"
                                                 : persist == 2 ? "256"
                                                                : nullptr);
    b = make_vulkan_backend().release();
  }
  return *b;
}

bool has_int_dot_gemv(const Backend& be) {
  return be.info().details.find("int8-dot GEMV") != std::string::npos;
}

// The backends whose quantized GEMVs differ: float32 x, and integer dots where the
// device has them, with x's planes in shared memory and without.
std::vector<Backend*> gemv_backends() {
  std::vector<Backend*> out = {&shared_vulkan()};
  if (shared_vulkan().info().details.find("int8 dot no") == std::string::npos &&
      has_int_dot_gemv(shared_vulkan(false, true))) {
    out.push_back(&shared_vulkan(false, true));
    out.push_back(&shared_vulkan(false, true, true, 2));
    out.push_back(&shared_vulkan(false, true, true, 0));
    out.push_back(&shared_vulkan(false, true, true, 3));
    out.push_back(&shared_vulkan(false, true, false));
    out.push_back(&shared_vulkan(false, true, false, 3));
  }
  return out;
}

// The integer-dot GEMV backend (x's planes in shared memory), or null, with a warning,
// where the device has none.
Backend* int_dot_gemv_backend() {
  const std::vector<Backend*> gpus = gemv_backends();
  if (gpus.size() >= 2) return gpus[1];
  WARN("the Vulkan device has no integer dot products (or no subgroup ops): skipped");
  return nullptr;
}

// Checks run(gpu, true, &dispatches) of each GEMV backend against the CPU's
// run(cpu, false, nullptr): within 1e-4 with integer dots (x rounded to 16 bits per
// block), 1e-5 without, or within tol(gpu) when given; then check(gpu, dispatches).
template <class Run, class Check, class Tol>
void check_gemv_backends(Run run, Check check, Tol tol) {
  auto cpu = make_cpu_backend(1);
  const std::vector<float> want = run(*cpu, false, nullptr);
  for (Backend* gpu : gemv_backends()) {
    INFO(gpu->info().details);
    std::vector<Program::Dispatch> ds;
    const std::vector<float> got = run(*gpu, true, &ds);
    CHECK(max_rel_error(got, want) <= tol(*gpu));
    check(*gpu, ds);
  }
}
template <class Run, class Check>
void check_gemv_backends(Run run, Check check) {
  check_gemv_backends(run, check,
                      [](const Backend& gpu) { return has_int_dot_gemv(gpu) ? 1e-4 : 1e-5; });
}

// The dispatches' kernels without the quantize_x ones before integer-dot GEMVs.
std::vector<Program::Dispatch> without_quantize(std::vector<Program::Dispatch> ds) {
  ds.erase(std::remove_if(
               ds.begin(), ds.end(),
               [](const Program::Dispatch& d) { return d.kernel.rfind("quantize_x", 0) == 0; }),
           ds.end());
  return ds;
}

// The backend with the tensor-core GEMM, or null where the device has none (a second
// backend is made only where it can be used).
Backend* coop_backend() {
  if (shared_vulkan().info().details.find("coopmat NV (") == std::string::npos) return nullptr;
  Backend& b = shared_vulkan(true);
  return has_coop_gemm(b) ? &b : nullptr;
}

double compare_with_cpu(const Node& node, const std::vector<HostT>& ins, const HostT& out,
                        int inplace = -1) {
  static auto cpu = make_cpu_backend(2);
  Backend& gpu = shared_vulkan();
  return compare_backends(*cpu, gpu, node, ins, out, inplace);
}

// compare_with_cpu as the shared op checks take it (backend_op_checks.h).
double compare_cpu(const Node& node, const std::vector<HostT>& ins, const HostT& out) {
  return compare_with_cpu(node, ins, out);
}

HostT zeros(Shape s) { return f32_tensor(s, std::vector<float>(s.numel(), 0.f)); }

// Inputs of a matmul [T, K] x [N, K]ᵀ with weights of dtype wt (random), for the GPU and
// for the CPU reference, which multiplies by the same dequantized values in float32
// (its own quantized path rounds x to 8 bits, which this backend does not).
struct MatMulInputs {
  std::vector<HostT> gpu, cpu;
};
MatMulInputs matmul_inputs(DType wt, int64_t T, int64_t K, int64_t N, bool bias,
                           std::mt19937& rng) {
  const HostT x = f32_tensor({T, K}, uniform(T * K, rng, -2.f, 2.f));
  MatMulInputs m{{x}, {x}};
  if (is_quant(wt)) {
    const QuantMatrix q = quantize_random(wt, N, K, rng);
    m.gpu.push_back({wt, {N, K}, q.blocks});
    m.cpu.push_back(f32_tensor({N, K}, q.values));
  } else {
    const HostT w{wt, {N, K}, encode(wt, uniform(N * K, rng))};
    m.gpu.push_back(w);
    m.cpu.push_back(w);
  }
  if (bias) {
    const HostT b{DType::BF16, {N}, encode(DType::BF16, uniform(N, rng))};
    m.gpu.push_back(b);
    m.cpu.push_back(b);
  }
  return m;
}

}  // namespace

TEST_CASE("vulkan backend describes its device", "[vulkan]") {
  VULKAN_TEST();
  auto be = make_vulkan_backend();
  const DeviceInfo d = be->info();
  CHECK(d.id.rfind("vulkan:", 0) == 0);
  CHECK(!d.name.empty());
  CHECK(d.details.find("subgroup") != std::string::npos);
  CHECK(d.details.find("fp16") != std::string::npos);
  CHECK(d.details.find("coopmat") != std::string::npos);
  CHECK_THROWS_WITH(make_vulkan_backend(99), Catch::Contains("vulkan:99 does not exist"));
  // --device vulkan takes the best device; auto passes over CPU-type Vulkan devices.
  CHECK(create_backend("vulkan")->info().id == d.id);
  if (d.type == "cpu") CHECK(auto_device_id().rfind("vulkan:", 0) != 0);
}

TEST_CASE("vulkan queued copies keep the order they were asked in", "[vulkan]") {
  VULKAN_TEST();
  // A decode step's traffic queued behind the work in flight: small uploads, a device
  // copy and downloads collected later, with a large upload (which waits instead) in
  // between. Each buffer is written again right after it is read, so a command that
  // ran out of order would see the later bytes.
  Backend& be = shared_vulkan();
  auto a = be.alloc(64, "a"), b = be.alloc(64, "b"), big = be.alloc(256 << 10, "big");
  std::vector<int32_t> ids(16), got(16), got2(3), again(16), big_got(4);
  std::iota(ids.begin(), ids.end(), 100);
  be.upload(*a, 0, ids.data(), 64);
  be.copy(*b, 4, *a, 0, 12);  // b[1..3] = 100..102
  const uint64_t t1 = be.start_download(*b, 4, got2.data(), 12);
  std::vector<int32_t> later(16, -7);
  be.upload(*a, 0, later.data(), 64);  // a changes after the copy read it
  be.upload(*b, 4, later.data(), 4);   // b[1] changes after the download read it
  std::vector<int32_t> large((256 << 10) / 4);
  std::iota(large.begin(), large.end(), 0);
  be.upload(*big, 0, large.data(), large.size() * 4);  // over 64 KiB: not queued
  const uint64_t t2 = be.start_download(*a, 0, got.data(), 64);
  const uint64_t t3 = be.start_download(*big, 4096, big_got.data(), 16);
  be.copy(*a, 8, *b, 4, 8);  // a[2..3] = -7, 101: after t2 read a
  CHECK(be.downloads_overlap());
  be.finish_download(t1);
  be.finish_download(t2);
  be.finish_download(t3);
  CHECK(got2 == std::vector<int32_t>{100, 101, 102});
  CHECK(got == later);
  CHECK(big_got == std::vector<int32_t>{1024, 1025, 1026, 1027});
  be.download(*a, 0, again.data(), 64);
  std::vector<int32_t> want = later;
  want[2] = -7;
  want[3] = 101;
  CHECK(again == want);
  CHECK_THROWS_WITH(be.finish_download(t3 + 1), Catch::Contains("out of order"));
}

TEST_CASE("vulkan queued copies among many buffers at once", "[vulkan]") {
  VULKAN_TEST();
  // One queued transfer over 24 buffers: its small copies take a dispatch per two
  // device buffers, more than a transfer has descriptor sets for (the rest go as copy
  // commands), each buffer uploaded, copied on into the next and downloaded.
  Backend& be = shared_vulkan();
  const int n = 24;
  std::vector<std::unique_ptr<DeviceBuffer>> bufs;
  std::vector<std::vector<int32_t>> got(n, std::vector<int32_t>(8, -1));
  for (int i = 0; i < n; i++) bufs.push_back(be.alloc(64, "b" + std::to_string(i)));
  be.synchronize();
  std::vector<uint64_t> tickets;
  for (int i = 0; i < n; i++) {
    std::vector<int32_t> v(8);
    std::iota(v.begin(), v.end(), 100 * i);
    be.upload(*bufs[i], 0, v.data(), 32);                   // words 0-7
    if (i > 0) be.copy(*bufs[i], 32, *bufs[i - 1], 0, 32);  // words 8-15: the last's
    tickets.push_back(be.start_download(*bufs[i], 0, got[i].data(), 32));
  }
  for (uint64_t t : tickets) be.finish_download(t);
  for (int i = 0; i < n; i++) {
    INFO("buffer " << i);
    std::vector<int32_t> want(8);
    std::iota(want.begin(), want.end(), 100 * i);
    CHECK(got[i] == want);
    if (i > 0) {
      std::vector<int32_t> copied(8);
      be.download(*bufs[i], 32, copied.data(), 32);
      std::iota(want.begin(), want.end(), 100 * (i - 1));
      CHECK(copied == want);
    }
  }
}

TEST_CASE("vulkan downloads collected behind later ones wrap around the readback memory",
          "[vulkan]") {
  VULKAN_TEST();
  // A host several steps behind the device never has all its downloads collected, so
  // the readback memory (64 KiB, 16 bytes a download) is reused as a ring: 5,000
  // downloads, each collected three later, go around it once.
  Backend& be = shared_vulkan();
  const int n = 5000;
  std::vector<int32_t> values(n), got(n, -1);
  std::iota(values.begin(), values.end(), 7);
  auto buf = be.alloc(n * 4, "values");
  be.upload(*buf, 0, values.data(), values.size() * 4);
  std::deque<uint64_t> tickets;
  for (int i = 0; i < n; i++) {
    tickets.push_back(be.start_download(*buf, static_cast<size_t>(i) * 4, &got[i], 4));
    if (tickets.size() > 3) {
      be.finish_download(tickets.front());
      tickets.pop_front();
    }
  }
  for (uint64_t t : tickets) be.finish_download(t);
  CHECK(got == values);
}

TEST_CASE("vulkan backend names what it cannot run and what does not fit", "[vulkan][errors]") {
  VULKAN_TEST();
  auto be = make_vulkan_backend();
  TensorInfo q{"q", TensorKind::Intermediate, DType::F32, {1, 2048}, {}};
  TensorInfo c{"c", TensorKind::State, DType::F32, {16, 2048}, {}};
  TensorInfo i{"i", TensorKind::Input, DType::I32, {1}, {}};
  TensorInfo t{"t", TensorKind::Input, DType::I32, {1, 4}, {}};
  OpParams p;
  p.n_heads = 1;
  p.n_kv_heads = 1;
  p.head_dim = 2048;
  p.page_size = 4;
  CHECK_THAT(be->check(make_node(Op::Attention, p), {&q, &c, &c, &i, &i, &t}, q),
             Catch::Contains("head_dim 2048 is larger than the vulkan shader's 1024"));
  TensorInfo x{"x", TensorKind::Input, DType::F32, {1, 64}, {}};
  TensorInfo w{"w", TensorKind::Weight, DType::Q4_0, {8, 40}, {}};
  TensorInfo out{"y", TensorKind::Intermediate, DType::F32, {1, 8}, {}};
  CHECK(!be->check(make_node(Op::MatMul), {&x, &w}, out).empty());
  CHECK_THROWS_WITH(
      be->alloc(size_t{1} << 50, "a test tensor"),
      Catch::Contains("out of device memory on vulkan:") && Catch::Contains("for a test tensor"));
  // The failed allocation leaves the device usable.
  auto buf = be->alloc(1024, "after");
  be->clear(*buf, 0, 1024);
  be->synchronize();
}

TEST_CASE("vulkan matmul matches the cpu (GEMV and tiled paths, every dtype)", "[vulkan][ops]") {
  VULKAN_TEST();
  std::mt19937 rng(1);
  auto cpu = make_cpu_backend(2);
  Backend* gpu = &shared_vulkan();
  struct KN {
    int64_t K, N;
  };
  for (DType wt : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    const bool quant = is_quant(wt);
    for (KN kn : {KN{67, 13}, KN{96, 130}, KN{160, 70}}) {
      if (quant && kn.K % 32) continue;
      for (int64_t T : {1, 3, 8, 9, 70}) {
        const bool bias = (T + kn.N) % 2 == 1;
        // Quantized weights through upload_weight (the backend's row layout) or as raw
        // GGUF blocks in a plain buffer.
        const bool via_weight = quant && (T + kn.K / 32) % 2 == 0;
        DYNAMIC_SECTION(dtype_name(wt)
                        << " T=" << T << " K=" << kn.K << " N=" << kn.N << (bias ? " +bias" : "")
                        << (via_weight ? " (upload_weight)" : "")) {
          const MatMulInputs mi = matmul_inputs(wt, T, kn.K, kn.N, bias, rng);
          const HostT out = zeros({T, kn.N});
          OneNode c(*cpu, make_node(Op::MatMul), mi.cpu, out);
          c.run();
          OneNode g(*gpu, make_node(Op::MatMul), mi.gpu, out, -1, via_weight ? 1 : -1);
          g.run();
          g.run();
          const std::string kernel = g.program().dispatches().at(0).kernel;
          INFO(kernel);
          CHECK(kernel.rfind(T > 8 ? "matmul_tiled" : "matmul_gemv", 0) == 0);
          const bool subgroup_ops = gpu->info().details.find("subgroup ops") != std::string::npos;
          if (via_weight && T <= 8 && subgroup_ops) CHECK(kernel.rfind("matmul_gemv_q", 0) == 0);
          // Float rows of whole 16-byte loads: a subgroup per row (matmul_gemv_f).
          if (!quant && T <= 8 && subgroup_ops && kn.K % (wt == DType::F32 ? 4 : 8) == 0)
            CHECK(kernel.find("subgroup rows") != std::string::npos);
          const double err =
              max_rel_error(decode(DType::F32, g.output()), decode(DType::F32, c.output()));
          INFO("max rel err " << err);
          CHECK(err <= 1e-5);
        }
      }
    }
  }
}

// The quantized GEMV with x rounded to 16-bit integers per block and integer dot
// products, where the device has them (emulated ones included): within the bound that
// rounding gives (the CUDA GEMV's, backend_test_util.h).
TEST_CASE("vulkan integer-dot GEMV matches the cpu (q4_0, q8_0, long rows, several tokens)",
          "[vulkan][ops]") {
  VULKAN_TEST();
  Backend* int_dot = int_dot_gemv_backend();
  if (!int_dot) return;
  Backend& gpu = *int_dot;
  std::mt19937 rng(21);
  auto cpu = make_cpu_backend(2);
  struct KN {
    int64_t K, N;
  };
  for (DType wt : {DType::Q4_0, DType::Q8_0, DType::Q4_1})
    for (KN kn : {KN{96, 130}, KN{4096, 70}, KN{11008, 33}})
      for (int64_t T : {1, 3, 8}) {
        const bool bias = (T + kn.N) % 2 == 0;
        DYNAMIC_SECTION(dtype_name(wt)
                        << " T=" << T << " K=" << kn.K << " N=" << kn.N << (bias ? " +bias" : "")) {
          const MatMulInputs mi = matmul_inputs(wt, T, kn.K, kn.N, bias, rng);
          const HostT out = zeros({T, kn.N});
          OneNode c(*cpu, make_node(Op::MatMul), mi.cpu, out);
          c.run();
          OneNode g(gpu, make_node(Op::MatMul), mi.gpu, out, -1, 1);
          g.run();
          g.run();
          const std::vector<Program::Dispatch> ds = g.program().dispatches();
          REQUIRE(ds.size() == 2);
          CHECK(ds[0].kernel.rfind("quantize_x", 0) == 0);
          CHECK(ds[1].kernel.rfind("matmul_gemv_q", 0) == 0);
          CHECK(ds[1].nodes == std::vector<int>{0});
          const std::vector<float> bv =
              bias ? decode(DType::BF16, mi.cpu[2].data) : std::vector<float>{};
          const double worst = worst_q16_gemv_error(
              decode(DType::F32, mi.cpu[0].data), decode(DType::F32, mi.cpu[1].data),
              bias ? &bv : nullptr, T, kn.K, kn.N, decode(DType::F32, g.output()));
          INFO("worst |Δ| / bound = " << worst);
          CHECK(worst <= 1.0);
          {
            // LLM_VULKAN_GEMV_LOOP=0: the next block issued at the end of each iteration
            // (the old loop) sums the same products in the same order: the same bits.
            ScopedEnv loop("LLM_VULKAN_GEMV_LOOP", "0");
            OneNode g0(gpu, make_node(Op::MatMul), mi.gpu, out, -1, 1);
            g0.run();
            CHECK(decode(DType::F32, g0.output()) == decode(DType::F32, g.output()));
          }
          {
            // LLM_VULKAN_GEMV_PRELOAD=0: the first blocks issued after x's copy, the same
            // products in the same order.
            ScopedEnv preload("LLM_VULKAN_GEMV_PRELOAD", "0");
            OneNode gp(gpu, make_node(Op::MatMul), mi.gpu, out, -1, 1);
            gp.run();
            CHECK(decode(DType::F32, gp.output()) == decode(DType::F32, g.output()));
          }
          if (T > 1) {
            // LLM_VULKAN_GEMV_X8: x's high plane alone, within the int8 rounding's bound.
            ScopedEnv x8("LLM_VULKAN_GEMV_X8", "1");
            OneNode g8(gpu, make_node(Op::MatMul), mi.gpu, out, -1, 1);
            g8.run();
            const double worst8 = worst_q16_gemv_error(
                decode(DType::F32, mi.cpu[0].data), decode(DType::F32, mi.cpu[1].data),
                bias ? &bv : nullptr, T, kn.K, kn.N, decode(DType::F32, g8.output()), 253.0);
            INFO("x8: worst |Δ| / bound = " << worst8);
            CHECK(worst8 <= 1.0);
          }
        }
      }
}

// Scales at the edges of f16 (subnormal, the smallest and largest normal, either sign)
// become the same floats in the quantized GEMV as on the cpu.
TEST_CASE("vulkan quantized GEMV converts subnormal and extreme f16 scales exactly",
          "[vulkan][ops]") {
  VULKAN_TEST();
  Backend* int_dot = int_dot_gemv_backend();
  if (!int_dot) return;
  Backend& gpu = *int_dot;
  std::mt19937 rng(23);
  const int64_t T = 1, K = 4096, N = 70;
  const uint16_t edges[] = {0x0001, 0x03ff, 0x8155, 0x0400, 0x8400, 0x7bff, 0x0000, 0x3c00};
  for (DType wt : {DType::Q4_0, DType::Q8_0, DType::Q4_1}) {
    DYNAMIC_SECTION(dtype_name(wt)) {
      MatMulInputs mi = matmul_inputs(wt, T, K, N, false, rng);
      // Row n's scales (q4_1: its d) all edges[n % 8], so that a subnormal flushed to zero
      // shows in its own outputs; the cpu's weights decoded again from the changed blocks.
      std::vector<uint8_t>& blocks = mi.gpu[1].data;
      const size_t block = dtype_row_bytes(wt, 32), row = dtype_row_bytes(wt, K);
      for (size_t b = 0; b < blocks.size(); b += block) {
        const uint16_t h = edges[b / row % (sizeof(edges) / sizeof(edges[0]))];
        blocks[b] = static_cast<uint8_t>(h & 0xff);
        blocks[b + 1] = static_cast<uint8_t>(h >> 8);
      }
      std::vector<float> w(N * K);
      for (int64_t n = 0; n < N; n++)
        dequantize_row(wt, blocks.data() + n * row, w.data() + n * K, K);
      mi.cpu[1] = f32_tensor({N, K}, w);
      const HostT out = zeros({T, N});
      OneNode g(gpu, make_node(Op::MatMul), mi.gpu, out, -1, 1);
      g.run();
      const double worst = worst_q16_gemv_error(decode(DType::F32, mi.cpu[0].data), w, nullptr, T,
                                                K, N, decode(DType::F32, g.output()));
      INFO("worst |Δ| / bound = " << worst);
      CHECK(worst <= 1.0);
    }
  }
}

// The tensor-core GEMM (GL_NV_cooperative_matrix, fp16 inputs, float32 sums) where the
// device has it: every dtype, edges of its 128 x 128 tiles and of its K steps.
TEST_CASE("vulkan tensor-core matmul matches the cpu within the fp16 bound", "[vulkan][ops]") {
  VULKAN_TEST();
  Backend* gpu = coop_backend();
  if (!gpu) {
    WARN("no VK_NV_cooperative_matrix GEMM on " << shared_vulkan().info().name << ": skipped");
    return;
  }
  std::mt19937 rng(3);
  auto cpu = make_cpu_backend(2);
  struct TKN {
    int64_t T, K, N;
  };
  for (DType wt : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    const bool quant = is_quant(wt);
    // Token tiles of 16, 32, 64 and 128; K split over 2-4 workgroups (partials added by
    // matmul_reduce, with the bias) in the 20-, 40- and 64-token cases.
    for (TKN s : {TKN{9, 96, 13}, TKN{70, 160, 130}, TKN{200, 67, 300}, TKN{130, 288, 257},
                  TKN{20, 1024, 101}, TKN{40, 640, 130}, TKN{64, 1056, 257}}) {
      if (quant && s.K % 32) continue;
      const bool bias = s.N % 2 == 1, via_weight = quant && s.T % 2 == 0;
      DYNAMIC_SECTION(dtype_name(wt)
                      << " T=" << s.T << " K=" << s.K << " N=" << s.N << (bias ? " +bias" : "")
                      << (via_weight ? " (upload_weight)" : "")) {
        const MatMulInputs mi = matmul_inputs(wt, s.T, s.K, s.N, bias, rng);
        const HostT out = zeros({s.T, s.N});
        OneNode c(*cpu, make_node(Op::MatMul), mi.cpu, out);
        c.run();
        OneNode g(*gpu, make_node(Op::MatMul), mi.gpu, out, -1, via_weight ? 1 : -1);
        g.run();
        const auto& ds = g.program().dispatches();
        CHECK(ds.at(0).kernel.rfind("matmul_coop", 0) == 0);
        if (s.K >= 512) CHECK(ds.at(1).kernel.rfind("matmul_reduce", 0) == 0);
        const double err =
            max_rel_error(decode(DType::F32, g.output()), decode(DType::F32, c.output()));
        INFO("max rel err " << err);
        CHECK(err <= 1e-2);
        CHECK(err > 0.0);  // really the fp16 path
      }
    }
  }
}

// Batched decode: the split-K reduce of the tensor-core GEMM also computes the SiluMul
// of gate and up (after up) and the residual Add (after o), as the separate nodes would.
TEST_CASE("vulkan's tensor-core GEMM adds the residual and the SiLU product in its reduce",
          "[vulkan][ops]") {
  VULKAN_TEST();
  Backend* gpu = coop_backend();
  if (!gpu) {
    WARN("no VK_NV_cooperative_matrix GEMM on " << shared_vulkan().info().name << ": skipped");
    return;
  }
  std::mt19937 rng(14);
  const int64_t T = 40, K = 1024, F = 130, N = 96;  // K >= 512: the columns are split
  // Tensor ids: x 0, gate/up/o weights 1/2/6, gate 3, up 4, act 5, o 7, residual 8, sum 9.
  const Node mg = make_node(Op::MatMul, {0, 1}, 3), mu = make_node(Op::MatMul, {0, 2}, 4),
             act = make_node(Op::SiluMul, {3, 4}, 5), mo = make_node(Op::MatMul, {0, 6}, 7),
             add = make_node(Op::Add, {8, 7}, 9);
  for (DType wt : {DType::Q4_0, DType::Q8_0, DType::Q4_1}) {
    DYNAMIC_SECTION(dtype_name(wt)) {
      const QuantMatrix wg = quantize_random(wt, F, K, rng), wu = quantize_random(wt, F, K, rng),
                        wo = quantize_random(wt, N, K, rng);
      const std::vector<float> x = uniform(T * K, rng), res = uniform(T * N, rng);
      auto run = [&](Backend& be, bool quant, std::vector<Program::Dispatch>* ds) {
        TestBuffers b(be);
        const TensorRef xr{b.put(to_bytes(x)), 0, DType::F32, {T, K}};
        auto out = [&](int64_t n) {
          return TensorRef{b.put(Bytes(T * n * 4)), 0, DType::F32, {T, n}};
        };
        // act takes the gate's place, as the memory planner lays them out.
        const TensorRef gr = out(F), ur = out(F), ar = gr, yr = out(N), sr = out(N);
        const TensorRef rr{b.put(to_bytes(res)), 0, DType::F32, {T, N}};
        auto prog = be.compile({BoundNode{&mg, {xr, b.weight(wg, wt, F, K, quant)}, gr},
                                BoundNode{&mu, {xr, b.weight(wu, wt, F, K, quant)}, ur},
                                BoundNode{&act, {gr, ur}, ar},
                                BoundNode{&mo, {xr, b.weight(wo, wt, N, K, quant)}, yr},
                                BoundNode{&add, {rr, yr}, sr}});
        prog->run();
        if (ds) *ds = prog->dispatches();
        return download_f32(be, {gr, ur, ar, yr, sr});
      };
      auto cpu = make_cpu_backend(2);
      std::vector<Program::Dispatch> ds;
      const std::vector<float> want = run(*cpu, false, nullptr);
      const std::vector<float> got = run(*gpu, true, &ds);
      const double err = max_rel_error(got, want);
      INFO("max rel err " << err);
      CHECK(err <= 1e-2);  // x and the weights in fp16, as every tensor-core product
      std::map<std::string, std::vector<int>> fused;
      for (const Program::Dispatch& d : ds)
        if (d.kernel.rfind("matmul_reduce", 0) == 0 && d.nodes.size() > 1) {
          fused[d.kernel.substr(d.kernel.find('+'))] = d.nodes;
        }
      CHECK(fused["+silu_mul"] == std::vector<int>{1, 2});
      CHECK(fused["+add"] == std::vector<int>{3, 4});
    }
  }
}

TEST_CASE("vulkan: fixtures through the tensor-core GEMM stay within the fp16 bound",
          "[vulkan][models]") {
  VULKAN_TEST();
  Backend* backend = coop_backend();
  if (!backend) {
    WARN("no VK_NV_cooperative_matrix GEMM on " << shared_vulkan().info().name << ": skipped");
    return;
  }
  for (const Fixture& f : kFixtures) {
    DYNAMIC_SECTION(f.name) { check_fixture_reference(*backend, f.name, 1e-2); }
  }
}

TEST_CASE("vulkan: an f16 KV cache stays close to the float32 one", "[vulkan][models]") {
  VULKAN_TEST();
  for (const Fixture& f : kFixtures) DYNAMIC_SECTION(f.name) {
      check_half_kv_cache(shared_vulkan(), f.name, DType::F16, 1e-2);
    }
}

TEST_CASE("vulkan fuses a residual add into the quantized GEMV before it", "[vulkan][ops]") {
  VULKAN_TEST();
  std::mt19937 rng(12);
  const int64_t T = 2, K = 128, N = 70;
  const QuantMatrix w = quantize_random(DType::Q4_0, N, K, rng);
  const std::vector<float> x = uniform(T * K, rng), res = uniform(T * N, rng);
  // Tensor ids: x 0, w 1, y 2, residual 3, sum 4 (the fusion follows ids).
  Node mm = make_node(Op::MatMul), add = make_node(Op::Add);
  mm.inputs = {0, 1};
  mm.output = 2;
  add.inputs = {3, 2};
  add.output = 4;
  auto run = [&](Backend& be, const Bytes& wdata, DType wt, bool as_weight,
                 std::vector<Program::Dispatch>* ds) {
    std::vector<std::unique_ptr<DeviceBuffer>> bufs;
    auto put = [&](const Bytes& data) {
      bufs.push_back(be.alloc(data.size(), "test"));
      be.upload(*bufs.back(), 0, data.data(), data.size());
      return bufs.back().get();
    };
    const TensorRef xr{put(to_bytes(x)), 0, DType::F32, {T, K}};
    DeviceBuffer* wb = nullptr;
    if (as_weight) {
      bufs.push_back(be.upload_weight(HostTensor{wt, {N, K}, wdata.data(), wdata.size()}, "w"));
      wb = bufs.back().get();
    } else {
      wb = put(wdata);
    }
    const TensorRef yr{put(Bytes(T * N * 4)), 0, DType::F32, {T, N}};
    const TensorRef rr{put(to_bytes(res)), 0, DType::F32, {T, N}};
    const TensorRef sr{put(Bytes(T * N * 4)), 0, DType::F32, {T, N}};
    BoundNode a{&mm, {xr, {wb, 0, wt, {N, K}}}, yr}, b{&add, {rr, yr}, sr};
    auto prog = be.compile({a, b});
    prog->run();
    if (ds) *ds = prog->dispatches();
    return download_f32(be, {yr, sr});
  };
  // The CPU takes the float matrix, the GPUs its q4 blocks through upload_weight.
  auto run_either = [&](Backend& be, bool quant, std::vector<Program::Dispatch>* ds) {
    return quant ? run(be, w.blocks, DType::Q4_0, true, ds)
                 : run(be, to_bytes(w.values), DType::F32, false, ds);
  };
  check_gemv_backends(run_either, [](const Backend& gpu, std::vector<Program::Dispatch> ds) {
    if (gpu.info().details.find("subgroup ops") == std::string::npos) return;
    // Integer dots: x is quantized by a dispatch of its own first.
    CHECK(ds.size() == (has_int_dot_gemv(gpu) ? 2u : 1u));
    ds = without_quantize(ds);
    REQUIRE(ds.size() == 1);
    CHECK(ds[0].kernel.find("+add") != std::string::npos);
    CHECK(ds[0].nodes == std::vector<int>{0, 1});
  });
}

// An FFN block of random weights, gate and up [F x K], down [K x F], and x [T x K].
struct GateUpDown {
  DType wt;
  int64_t T, K, F;
  QuantMatrix wg, wu, wd;
  std::vector<float> x;
  GateUpDown(DType wt_, int64_t T_, int64_t K_, int64_t F_, std::mt19937& rng)
      : wt(wt_),
        T(T_),
        K(K_),
        F(F_),
        wg(quantize_random(wt, F, K, rng)),
        wu(quantize_random(wt, F, K, rng)),
        wd(quantize_random(wt, K, F, rng)),
        x(uniform(T * K, rng)) {}
  // Gate, up, SiluMul and down (the GPUs take the blocks where quant, the CPU their
  // values), x and the activation sharing memory as the memory planner lays them out.
  // Returns gate, up, the activation and down.
  std::vector<float> run(Backend& be, bool quant, std::vector<Program::Dispatch>* ds) const {
    // Tensor ids: x 0, gate/up/down weights 1/2/6, gate 3, up 4, act 5, down 7.
    const Node mg = make_node(Op::MatMul, {0, 1}, 3), mu = make_node(Op::MatMul, {0, 2}, 4),
               act = make_node(Op::SiluMul, {3, 4}, 5), md = make_node(Op::MatMul, {5, 6}, 7);
    TestBuffers b(be);
    auto weight = [&](const QuantMatrix& q, int64_t n, int64_t k) {
      return b.weight(q, wt, n, k, quant);
    };
    DeviceBuffer* arena = b.put(Bytes(T * K * 4 + T * F * 12 + 4096));
    be.upload(*arena, 0, x.data(), x.size() * 4);
    const TensorRef xr{arena, 0, DType::F32, {T, K}};
    const TensorRef gr{arena, static_cast<size_t>(1024 + T * K * 4), DType::F32, {T, F}};
    const TensorRef ur{
        arena, static_cast<size_t>(2048 + T * K * 4 + T * F * 4), DType::F32, {T, F}};
    const TensorRef ar{arena, 0, DType::F32, {T, F}};
    const TensorRef dr{b.put(Bytes(T * K * 4)), 0, DType::F32, {T, K}};
    auto prog = be.compile(
        {BoundNode{&mg, {xr, weight(wg, F, K)}, gr}, BoundNode{&mu, {xr, weight(wu, F, K)}, ur},
         BoundNode{&act, {gr, ur}, ar}, BoundNode{&md, {ar, weight(wd, K, F)}, dr}});
    prog->run();
    if (ds) *ds = prog->dispatches();
    return download_f32(be, {gr, ur, ar, dr});
  }
};

TEST_CASE("vulkan fuses gate, up and silu_mul into one quantized GEMV, down reads it",
          "[vulkan][ops]") {
  VULKAN_TEST();
  std::mt19937 rng(13);
  const int64_t F = 96;
  // K = 4096: 128 blocks a row, which gate/up that round the activation cut in parts
  // (3 rounds of 32 rows leave most workgroups of the fixed grid idle; 2,048 is too short
  // for parts of four blocks a thread). K = 4096 with 3 tokens: x's planes leave too
  // little shared memory for workgroups of 1,024 threads on lavapipe (32 KB), which the
  // backend forcing that size must then not take.
  for (int64_t K : {192, 2048, 4096})
    for (DType wt : {DType::Q4_0, DType::Q8_0, DType::Q4_1})
      for (int64_t T : {1, 3}) {
        DYNAMIC_SECTION(dtype_name(wt) << " T=" << T << " K=" << K) {
          const GateUpDown ffn(wt, T, K, F, rng);
          auto run = [&](Backend& be, bool quant, std::vector<Program::Dispatch>* ds) {
            return ffn.run(be, quant, ds);
          };
          check_gemv_backends(run, [&](const Backend& gpu, std::vector<Program::Dispatch> ds) {
            const std::string& details = gpu.info().details;
            if (details.find("subgroup ops") == std::string::npos) return;
            // Integer dots: a quantize_x before each GEMV; the second copies the activation.
            // With x in shared memory and one token, gate/up round the activation for down
            // themselves, which copies it to its place.
            const bool rounds_act =
                T == 1 && details.find("x in shared memory") != std::string::npos;
            if (has_int_dot_gemv(gpu) && rounds_act) {
              REQUIRE(ds.size() == 3);
              CHECK(ds[0].kernel.find("quantize_x") == 0);
              CHECK(ds[1].kernel.find("x2 +silu_mul +quantize") != std::string::npos);
              // K in parts where the fixed grid has room for them (6 workgroups or more).
              const size_t at = details.find("x in shared memory, ");
              const int wgs = at == std::string::npos ? 0 : std::atoi(details.c_str() + at + 20);
              CHECK((ds[1].kernel.find("(K in 2 parts)") != std::string::npos) ==
                    (K == 4096 && wgs >= 6));
            } else if (has_int_dot_gemv(gpu)) {
              REQUIRE(ds.size() == 4);
              CHECK(ds[2].kernel.find("quantize_x") == 0);
              CHECK(ds[2].kernel.find("+copy") != std::string::npos);
            }
            ds = without_quantize(ds);
            REQUIRE(ds.size() == 2);
            CHECK(ds[0].kernel.find("+silu_mul") != std::string::npos);
            CHECK(ds[0].nodes == std::vector<int>{0, 1, 2});
            CHECK(ds[1].nodes == std::vector<int>{3});
          });
        }
      }
}

TEST_CASE("vulkan gate/up round the activation alike in workgroups of 256, 512 and 1,024",
          "[vulkan][ops]") {
  VULKAN_TEST();
  std::mt19937 rng(37);
  // 256 rows: whole rounds of 1,024-thread workgroups (128 rows a round, 4 blocks of down's
  // x).
  const int64_t F = 256;
  for (int64_t K : {192, 2048})
    for (DType wt : {DType::Q4_0, DType::Q8_0, DType::Q4_1}) {
      const GateUpDown ffn(wt, 1, K, F, rng);
      auto cpu = make_cpu_backend(1);
      const std::vector<float> want = ffn.run(*cpu, false, nullptr);
      int runs = 0;
      for (Backend* gpu : gemv_backends()) {
        const std::string& details = gpu->info().details;
        if (!has_int_dot_gemv(*gpu) || details.find("x in shared memory") == std::string::npos)
          continue;
        for (const char* split : {"1", "2"}) {
          ScopedEnv parts("LLM_VULKAN_GLU_SPLIT", split);
          std::vector<float> first;
          for (const char* threads : {"256", "512", "1024"}) {
            INFO(details << ": " << dtype_name(wt) << " K=" << K << " parts=" << split
                         << " LLM_VULKAN_GLU_THREADS=" << threads);
            ScopedEnv size("LLM_VULKAN_GLU_THREADS", threads);
            std::vector<Program::Dispatch> ds;
            const std::vector<float> got = ffn.run(*gpu, true, &ds);
            CHECK(max_rel_error(got, want) <= 1e-4);
            // quantize_x, gate/up rounding the activation, down.
            REQUIRE(ds.size() == 3);
            CHECK(ds[1].kernel.find("x2 +silu_mul +quantize") != std::string::npos);
            CHECK((ds[1].kernel.find("(K in 2 parts)") != std::string::npos) == (split[0] == '2'));
            // Over 256 threads, the QOUT_WIDE variant (rounds of several blocks).
            const std::string wide = std::string(" in ") + threads + " threads";
            CHECK((ds[1].kernel.find(wide) != std::string::npos) == (threads[0] != '2'));
            // The same sums and roundings whatever the workgroup's size.
            if (first.empty())
              first = got;
            else
              CHECK(got == first);
            runs++;
          }
        }
      }
      if (runs == 0) WARN("no shared-x integer-dot GEMV: skipped");
    }
}

// The backend whose single-token gate/up dispatches also compute down and its residual
// Add (LLM_VULKAN_FFN_FUSE, integer dots forced): mode 1 sums down's parts with float
// atomics, 2 in a reduce dispatch after it, 3 as 1 with the next RmsNorm's rounding
// (LLM_VULKAN_FFN_NEXT_NORM=1), 4 as 3 on a fixed grid of two workgroups (each loops
// over the rounds), 5 as 2 with the next RmsNorm's rounding in the reduce. Null where the
// device lacks float atomics or integer dots.
Backend* ffn_down_vulkan(int mode) {
  static Backend* backends[6] = {};
  Backend*& b = backends[mode];
  if (!b) {
    ScopedEnv coop("LLM_VULKAN_COOPMAT", "0");
    ScopedEnv dot("LLM_VULKAN_INT_DOT", "1");
    ScopedEnv ffn("LLM_VULKAN_FFN_FUSE", mode == 2 || mode == 5 ? "2" : "1");
    ScopedEnv next_norm("LLM_VULKAN_FFN_NEXT_NORM", mode >= 3 ? "1" : nullptr);
    ScopedEnv wgs("LLM_VULKAN_GEMV_WGS", mode == 4 ? "2" : nullptr);
    b = make_vulkan_backend().release();
  }
  return b->info().details.find("down inside gate/up") != std::string::npos ? b : nullptr;
}

TEST_CASE("vulkan runs down and its residual add inside the gate/up GEMV (FFN_DOWN)",
          "[vulkan][ops]") {
  VULKAN_TEST();
  if (!ffn_down_vulkan(1)) {
    WARN("no float atomics or integer dots on this Vulkan device: skipped");
    return;
  }
  std::mt19937 rng(29);
  auto cpu = make_cpu_backend(1);
  // Tensor ids: x 0, gate/up/down weights 1/2/6, gate 3, up 4, act 5, down 7, the sum 8,
  // then the next layer's RmsNorm of the sum (weight 9, output 10) and a matmul of it
  // (weight 11, output 12).
  const Node mg = make_node(Op::MatMul, {0, 1}, 3), mu = make_node(Op::MatMul, {0, 2}, 4),
             act = make_node(Op::SiluMul, {3, 4}, 5), md = make_node(Op::MatMul, {5, 6}, 7),
             add = make_node(Op::Add, {0, 7}, 8), mq = make_node(Op::MatMul, {10, 11}, 12);
  Node norm = make_node(Op::RmsNorm, {8, 9}, 10);
  norm.params.eps = 1e-5f;
  const int64_t Q = 40;  // the next matmul's rows
  // F: gate/up rows (rounds of 32); K: down's rows, fewer than a workgroup's threads
  // (192) or many of them (2048, whose gate/up the fixed grid also cuts in K parts).
  for (int mode : {1, 2, 3, 5})
    for (int64_t F : {96, 320})
      for (int64_t K : {192, 2048})
        for (DType wt : {DType::Q4_0, DType::Q8_0})
          DYNAMIC_SECTION("mode " << mode << " " << dtype_name(wt) << " F=" << F << " K=" << K) {
            Backend* gpu = ffn_down_vulkan(mode);
            const QuantMatrix wg = quantize_random(wt, F, K, rng),
                              wu = quantize_random(wt, F, K, rng),
                              wd = quantize_random(wt, K, F, rng),
                              wq = quantize_random(wt, Q, K, rng);
            const std::vector<float> nw = uniform(K, rng, 0.5f, 1.5f);
            // Two runs of the same program on different x: the accumulator and the count
            // must be back to zero after each.
            const std::vector<float> xs[2] = {uniform(K, rng), uniform(K, rng, -3.f, 3.f)};
            auto run = [&](Backend& be, bool quant, std::vector<Program::Dispatch>* ds) {
              TestBuffers b(be);
              auto weight = [&](const QuantMatrix& q, int64_t n, int64_t k) {
                return b.weight(q, wt, n, k, quant);
              };
              DeviceBuffer* arena = b.put(Bytes(K * 4 + F * 12 + 4096));
              const TensorRef xr{arena, 0, DType::F32, {1, K}};
              const TensorRef gr{arena, static_cast<size_t>(1024 + K * 4), DType::F32, {1, F}};
              const TensorRef ur{
                  arena, static_cast<size_t>(2048 + K * 4 + F * 4), DType::F32, {1, F}};
              const TensorRef ar{
                  arena, static_cast<size_t>(3072 + K * 4 + F * 8), DType::F32, {1, F}};
              const TensorRef dr{b.put(Bytes(K * 4)), 0, DType::F32, {1, K}};
              const TensorRef sr{b.put(Bytes(K * 4)), 0, DType::F32, {1, K}};
              const TensorRef nwr{b.put(to_bytes(nw)), 0, DType::F32, {K}};
              const TensorRef nr{b.put(Bytes(K * 4)), 0, DType::F32, {1, K}};
              const TensorRef qr{b.put(Bytes(Q * 4)), 0, DType::F32, {1, Q}};
              auto prog = be.compile(
                  {BoundNode{&mg, {xr, weight(wg, F, K)}, gr},
                   BoundNode{&mu, {xr, weight(wu, F, K)}, ur}, BoundNode{&act, {gr, ur}, ar},
                   BoundNode{&md, {ar, weight(wd, K, F)}, dr}, BoundNode{&add, {xr, dr}, sr},
                   BoundNode{&norm, {sr, nwr}, nr}, BoundNode{&mq, {nr, weight(wq, Q, K)}, qr}});
              std::vector<float> out;
              for (const std::vector<float>& x : xs) {
                be.upload(*arena, 0, x.data(), x.size() * 4);
                prog->run();
                const std::vector<float> got = download_f32(be, {sr, qr});
                out.insert(out.end(), got.begin(), got.end());
              }
              if (ds) *ds = prog->dispatches();
              return out;
            };
            const std::vector<float> want = run(*cpu, false, nullptr);
            std::vector<Program::Dispatch> ds;
            const std::vector<float> got = run(*gpu, true, &ds);
            // x and the activations rounded to 16 bits a block, down's sums in any order;
            // the sums and the next matmul's outputs checked apart (their scales differ).
            auto part = [&](const std::vector<float>& v, int run_index, bool next) {
              const auto at = v.begin() + run_index * (K + Q) + (next ? K : 0);
              return std::vector<float>(at, at + (next ? Q : K));
            };
            for (int r = 0; r < 2; r++)
              for (bool next : {false, true}) {
                INFO("run " << r << (next ? ": the next matmul" : ": the sum"));
                CHECK(max_rel_error(part(got, r, next), part(want, r, next)) <= 1e-4);
              }
            ds = without_quantize(ds);
            REQUIRE(ds.size() == (mode == 2 || mode == 5 ? 3u : 2u));
            CHECK(ds[0].kernel.find("x2 +silu_mul +quantize") != std::string::npos);
            CHECK(ds[0].kernel.find("+down +add") != std::string::npos);
            const Program::Dispatch& last = ds.back();
            CHECK(last.kernel.find("matmul_gemv_q") != std::string::npos);
            if (mode == 1) {
              CHECK(ds[0].nodes == std::vector<int>{0, 1, 2, 3, 4});
              CHECK(last.nodes == std::vector<int>{5, 6});  // the norm inside the GEMV
            } else if (mode == 2) {
              // The parts added in a fixed order: the same bits every run.
              CHECK(ds[0].nodes == std::vector<int>{0, 1, 2, 3});
              CHECK(ds[1].kernel.find("parts_reduce") == 0);
              CHECK(ds[1].nodes == std::vector<int>{4});
              CHECK(run(*gpu, true, nullptr) == got);
            } else if (mode == 5) {
              // ... and the norm rounded by the reduce, the GEMV on its planes.
              CHECK(ds[0].nodes == std::vector<int>{0, 1, 2, 3});
              CHECK(ds[1].kernel.find("parts_reduce") == 0);
              CHECK(ds[1].kernel.find("+rms_norm") != std::string::npos);
              CHECK(ds[1].nodes == std::vector<int>{4, 5});
              CHECK(last.nodes == std::vector<int>{6});
              CHECK(last.kernel.rfind("rms_norm", 0) == std::string::npos);
              CHECK(run(*gpu, true, nullptr) == got);
            } else {
              // The norm rounded by the last workgroup of the FFN, the GEMV on its planes.
              CHECK(ds[0].kernel.find("+rms_norm") != std::string::npos);
              CHECK(ds[0].nodes == std::vector<int>{0, 1, 2, 3, 4, 5});
              CHECK(last.nodes == std::vector<int>{6});
              CHECK(last.kernel.rfind("rms_norm", 0) == std::string::npos);
            }
          }
}

// The final norm, the head and a Sample of its one row of logits, the id placed over the
// norm's input (dead once the norm has read it, as the step planner may do). Tensor ids:
// the norm's input 0 and weight 1, x 2, head 3, logits 4, params 5, id 6.
struct NormHeadSample {
  NormHeadSample() { norm.params.eps = 1e-5f; }
  // Compiles it on be over the input h, the norm weight nw and the head w ([N, K]);
  // params: one row of Op::Sample's.
  std::unique_ptr<Program> compile(Backend& be, TestBuffers& b, const std::vector<float>& h,
                                   const std::vector<float>& nw, const TensorRef& w,
                                   const std::vector<float>& params) {
    const int64_t K = static_cast<int64_t>(h.size()), N = w.shape.rows();
    h_buf = b.put(to_bytes(h));
    params_buf = b.put(to_bytes(params));
    // One float into their buffer (no descriptor alignment absorbs it): shaders must
    // add the logits' offset.
    logits = {b.put(Bytes(N * 4 + 4)), 4, DType::F32, {1, N}};
    const TensorRef hr{h_buf, 0, DType::F32, {1, K}};
    const TensorRef nr{b.put(to_bytes(nw)), 0, DType::F32, {K}};
    const TensorRef xr{b.put(Bytes(K * 4)), 0, DType::F32, {1, K}};
    const TensorRef pr{params_buf, 0, DType::F32, {1, kSampleParamCount}};
    const TensorRef ir{h_buf, 0, DType::I32, {1}};
    return be.compile(
        {{&norm, {hr, nr}, xr}, {&head, {xr, w}, logits}, {&sample, {logits, pr}, ir}});
  }
  // The id the last run wrote (over the input, which the next run needs again).
  int32_t id(Backend& be) const {
    int32_t v = -1;
    be.download(*h_buf, 0, &v, 4);
    return v;
  }

  Node norm = make_node(Op::RmsNorm, {0, 1}, 2);
  const Node head = make_node(Op::MatMul, {2, 3}, 4);
  const Node sample = make_node(Op::Sample, {4, 5}, 6);
  DeviceBuffer* h_buf = nullptr;
  DeviceBuffer* params_buf = nullptr;
  TensorRef logits;
};

TEST_CASE("vulkan runs the final norm in the head GEMV when the sampled id takes its input",
          "[vulkan][ops]") {
  VULKAN_TEST();
  std::mt19937 rng(15);
  const int64_t K = 128, V = 300;
  const QuantMatrix w = quantize_random(DType::Q4_0, V, K, rng);
  const std::vector<float> h = uniform(K, rng), nw = uniform(K, rng, 0.5f, 1.5f);
  auto run = [&](Backend& be, bool quant, std::vector<Program::Dispatch>* ds) {
    TestBuffers b(be);
    NormHeadSample g;
    auto prog = g.compile(be, b, h, nw, b.weight(w, DType::Q4_0, V, K, quant),
                          sample_row_params(0.f, 0.5f));
    prog->run();
    if (ds) *ds = prog->dispatches();
    std::vector<float> out = download_f32(be, {g.logits});
    // The id: the argmax of the very logits.
    CHECK(g.id(be) == argmax(out.data(), static_cast<int>(V)));
    return out;
  };
  check_gemv_backends(run, [&](const Backend& gpu, std::vector<Program::Dispatch> ds) {
    if (gpu.info().details.find("x in shared memory") == std::string::npos) return;
    REQUIRE(ds.size() == 2);
    CHECK(ds[0].kernel.rfind("rms_norm + matmul_gemv_q", 0) == 0);
    CHECK(ds[1].kernel == "sample");
  });
}

TEST_CASE("vulkan runs q, k and v as one quantized GEMV after their norm", "[vulkan][ops]") {
  VULKAN_TEST();
  std::mt19937 rng(14);
  const int64_t K = 128, Nq = 96, Nkv = 32;
  // Tensor ids: x 0, weights 1/2/3, q/k/v 4/5/6, the norm's input 7 and weight 8 (x
  // is the norm's output), x + the norm's input 9.
  Node norm = make_node(Op::RmsNorm, {7, 8}, 0);
  norm.params.eps = 1e-5f;
  const Node mq = make_node(Op::MatMul, {0, 1}, 4), mk = make_node(Op::MatMul, {0, 2}, 5),
             mv = make_node(Op::MatMul, {0, 3}, 6), add = make_node(Op::Add, {7, 0}, 9);
  for (DType wt : {DType::Q4_0, DType::Q8_0, DType::Q4_1})
    for (int64_t T : {1, 3})
      for (int segs : {2, 3})
        for (bool reader : {false, true}) {
          DYNAMIC_SECTION(dtype_name(wt) << " T=" << T << " " << segs << " matrices"
                                         << (reader ? ", the norm's output read after" : "")) {
            const QuantMatrix wq = quantize_random(wt, Nq, K, rng),
                              wk = quantize_random(wt, Nkv, K, rng),
                              wv = quantize_random(wt, Nkv, K, rng);
            const std::vector<float> x = uniform(T * K, rng), nw = uniform(K, rng);
            auto run = [&](Backend& be, bool quant, std::vector<Program::Dispatch>* ds) {
              TestBuffers b(be);
              const TensorRef x0{b.put(to_bytes(x)), 0, DType::F32, {T, K}};
              // The norm's weight in f16 with two matrices (the fused norm reads both).
              const DType nwt = segs == 2 ? DType::F16 : DType::F32;
              const TensorRef wr{b.put(encode(nwt, nw)), 0, nwt, {K}};
              const TensorRef xr{b.put(Bytes(T * K * 4)), 0, DType::F32, {T, K}};
              const TensorRef outs[3] = {{b.put(Bytes(T * Nq * 4)), 0, DType::F32, {T, Nq}},
                                         {b.put(Bytes(T * Nkv * 4)), 0, DType::F32, {T, Nkv}},
                                         {b.put(Bytes(T * Nkv * 4)), 0, DType::F32, {T, Nkv}}};
              std::vector<BoundNode> nodes = {
                  BoundNode{&norm, {x0, wr}, xr},
                  BoundNode{&mq, {xr, b.weight(wq, wt, Nq, K, quant)}, outs[0]},
                  BoundNode{&mk, {xr, b.weight(wk, wt, Nkv, K, quant)}, outs[1]},
                  BoundNode{&mv, {xr, b.weight(wv, wt, Nkv, K, quant)}, outs[2]}};
              nodes.resize(1 + segs);
              std::vector<TensorRef> results(outs, outs + segs);
              if (reader) {
                // Another reader of the norm's output after the matmuls: x + norm(x).
                results.push_back({b.put(Bytes(T * K * 4)), 0, DType::F32, {T, K}});
                nodes.push_back(BoundNode{&add, {x0, xr}, results.back()});
              }
              auto prog = be.compile(nodes);
              prog->run();
              if (ds) *ds = prog->dispatches();
              return download_f32(be, results);
            };
            check_gemv_backends(run, [&](const Backend& gpu, std::vector<Program::Dispatch> ds) {
              if (gpu.info().details.find("x in shared memory") != std::string::npos) {
                // x in shared memory: each workgroup of the GEMV takes the norm itself, unless
                // another node reads the norm's output.
                if (reader) {
                  REQUIRE(ds.size() == 3);
                  CHECK(ds[0].kernel == "rms_norm +quantize");
                } else {
                  REQUIRE(ds.size() == 1);
                  CHECK(ds[0].kernel.rfind("rms_norm + matmul_gemv_q", 0) == 0);
                  CHECK(ds[0].kernel.find(segs == 3 ? "[96 + 32 + 32 x 128]" : "[96 + 32 x 128]") !=
                        std::string::npos);
                  std::vector<int> want_nodes(segs + 1);
                  std::iota(want_nodes.begin(), want_nodes.end(), 0);
                  CHECK(ds[0].nodes == want_nodes);
                }
              } else if (gpu.info().details.find("subgroup ops") != std::string::npos && !reader) {
                // Integer dots: the norm rounds its output for the GEMV (no quantize_x).
                REQUIRE(ds.size() == 2);
                CHECK(ds[0].kernel ==
                      std::string(has_int_dot_gemv(gpu) ? "rms_norm +quantize" : "rms_norm"));
                CHECK(ds[1].kernel.find(segs == 3 ? "[96 + 32 + 32 x 128]" : "[96 + 32 x 128]") !=
                      std::string::npos);
                std::vector<int> want_nodes(segs);
                std::iota(want_nodes.begin(), want_nodes.end(), 1);
                CHECK(ds[1].nodes == want_nodes);
              }
            });
          }
        }
}

// The fused norm rounds x with 8 threads a block where subgroups hold 8 (NORM_PAR), else a
// thread a block: the same values, so the same planes and outputs, over rows of several
// rounds of the workgroup (K = 2,080: 520 vec4s a token) and a partial last round.
TEST_CASE("vulkan's fused norm rounds x alike with one or eight threads a block", "[vulkan][ops]") {
  VULKAN_TEST();
  Backend& gpu = shared_vulkan(false, true);
  if (gpu.info().details.find("x in shared memory") == std::string::npos) {
    WARN("no shared-x integer-dot GEMV on " << gpu.info().name << ": skipped");
    return;
  }
  std::mt19937 rng(27);
  const int64_t K = 2080, Nq = 96, Nkv = 32;
  Node norm = make_node(Op::RmsNorm, {7, 8}, 0);
  norm.params.eps = 1e-5f;
  const Node mq = make_node(Op::MatMul, {0, 1}, 4), mk = make_node(Op::MatMul, {0, 2}, 5),
             mv = make_node(Op::MatMul, {0, 3}, 6);
  auto cpu = make_cpu_backend(1);
  for (int64_t T : {1, 3}) {
    const QuantMatrix wq = quantize_random(DType::Q4_0, Nq, K, rng),
                      wk = quantize_random(DType::Q4_0, Nkv, K, rng),
                      wv = quantize_random(DType::Q4_0, Nkv, K, rng);
    const std::vector<float> x = uniform(T * K, rng), nw = uniform(K, rng);
    auto run = [&](Backend& be, bool quant, std::string* kernel) {
      TestBuffers b(be);
      const TensorRef x0{b.put(to_bytes(x)), 0, DType::F32, {T, K}};
      const TensorRef wr{b.put(encode(DType::F16, nw)), 0, DType::F16, {K}};
      const TensorRef xr{b.put(Bytes(T * K * 4)), 0, DType::F32, {T, K}};
      const TensorRef outs[3] = {{b.put(Bytes(T * Nq * 4)), 0, DType::F32, {T, Nq}},
                                 {b.put(Bytes(T * Nkv * 4)), 0, DType::F32, {T, Nkv}},
                                 {b.put(Bytes(T * Nkv * 4)), 0, DType::F32, {T, Nkv}}};
      const std::vector<BoundNode> nodes = {
          BoundNode{&norm, {x0, wr}, xr},
          BoundNode{&mq, {xr, b.weight(wq, DType::Q4_0, Nq, K, quant)}, outs[0]},
          BoundNode{&mk, {xr, b.weight(wk, DType::Q4_0, Nkv, K, quant)}, outs[1]},
          BoundNode{&mv, {xr, b.weight(wv, DType::Q4_0, Nkv, K, quant)}, outs[2]}};
      auto prog = be.compile(nodes);
      prog->run();
      if (kernel) *kernel = prog->dispatches().at(0).kernel;
      return download_f32(be, std::vector<TensorRef>(outs, outs + 3));
    };
    const std::vector<float> want = run(*cpu, false, nullptr);
    // A thread a block; 8 threads a block with x and the norm weight loaded round by
    // round, with the first round loaded before the sum of squares (the rest after), and
    // with as many rounds loaded before it as fit (NORM_PRE: single tokens only); that
    // with the first weights issued before the norm (LLM_VULKAN_GEMV_PRELOAD=2).
    const char* settings[5][3] = {
        {"0", "0", "0"}, {"1", "0", "0"}, {"1", "1", "0"}, {"1", "4", "0"}, {"1", "4", "2"}};
    std::vector<float> got[5];
    for (int k = 0; k < 5; k++) {
      INFO("T=" << T << " LLM_VULKAN_NORM_PAR=" << settings[k][0] << " LLM_VULKAN_NORM_PRE="
                << settings[k][1] << " LLM_VULKAN_GEMV_PRELOAD=" << settings[k][2]);
      ScopedEnv par("LLM_VULKAN_NORM_PAR", settings[k][0]);
      ScopedEnv pre("LLM_VULKAN_NORM_PRE", settings[k][1]);
      ScopedEnv preload("LLM_VULKAN_GEMV_PRELOAD", settings[k][2]);
      std::string kernel;
      got[k] = run(gpu, true, &kernel);
      CHECK(kernel.rfind("rms_norm + matmul_gemv_q", 0) == 0);
      CHECK(max_rel_error(got[k], want) <= 1e-4);
      CHECK(got[k] == got[0]);
    }
  }
}

TEST_CASE("vulkan runs q/k/v, their ropes and cache appends as one quantized GEMV",
          "[vulkan][ops]") {
  VULKAN_TEST();
  std::mt19937 rng(15);
  // Tensor ids: x 0, weights 1/2/3, q/k/v 4/5/6, positions 7, inv_freq 8, rotated q/k
  // 9/10, slots 11, k/v caches 12/13.
  struct Case {
    int heads, kv_heads, head_dim, rot;
    RopeStyle style;
    DType cache;
  };
  const int64_t K = 160, cache_rows = 9;
  for (const Case c : {Case{4, 2, 32, 32, RopeStyle::NeoX, DType::F32},
                       Case{3, 1, 64, 32, RopeStyle::NeoX, DType::F16},
                       Case{4, 2, 32, 16, RopeStyle::GptJ, DType::BF16}})
    for (int64_t T : {1, 3}) {
      DYNAMIC_SECTION((c.style == RopeStyle::NeoX ? "neox" : "gptj")
                      << " heads " << c.heads << "/" << c.kv_heads << " head_dim " << c.head_dim
                      << " rot " << c.rot << " " << dtype_name(c.cache) << " T=" << T) {
        const int64_t Nq = int64_t{c.heads} * c.head_dim, Nkv = int64_t{c.kv_heads} * c.head_dim;
        OpParams pq, pk;
        pq.n_heads = c.heads;
        pk.n_heads = c.kv_heads;
        for (OpParams* p : {&pq, &pk}) {
          p->head_dim = c.head_dim;
          p->rot_dims = c.rot;
          p->rope_style = c.style;
        }
        Node rq = make_node(Op::Rope, {4, 7, 8}, 9), rk = make_node(Op::Rope, {5, 7, 8}, 10);
        rq.params = pq;
        rk.params = pk;
        const Node mq = make_node(Op::MatMul, {0, 1}, 4), mk = make_node(Op::MatMul, {0, 2}, 5),
                   mv = make_node(Op::MatMul, {0, 3}, 6),
                   ak = make_node(Op::KvAppend, {10, 11, 12}, 12),
                   av = make_node(Op::KvAppend, {6, 11, 13}, 13);
        // q4_1 (mins beside the scales) in the T = 3 cases.
        const DType wt = T == 1 ? DType::Q4_0 : DType::Q4_1;
        const QuantMatrix wq = quantize_random(wt, Nq, K, rng),
                          wk = quantize_random(wt, Nkv, K, rng),
                          wv = quantize_random(wt, Nkv, K, rng);
        const std::vector<float> x = uniform(T * K, rng);
        const std::vector<int32_t> pos = {5, 1000, 17}, slots = {8, 0, 3};
        std::vector<float> freq(c.rot / 2);
        for (int i = 0; i < c.rot / 2; i++)
          freq[i] = 1.f / std::pow(10000.f, 2.f * i / static_cast<float>(c.rot));
        const std::vector<float> kc0 = uniform(cache_rows * Nkv, rng),
                                 vc0 = uniform(cache_rows * Nkv, rng);
        // The products, the rotated q and k, then both caches, as floats.
        auto run = [&](Backend& be, bool quant, std::vector<Program::Dispatch>* ds) {
          TestBuffers b(be);
          const TensorRef xr{b.put(to_bytes(x)), 0, DType::F32, {T, K}};
          const TensorRef outs[5] = {{b.put(Bytes(T * Nq * 4)), 0, DType::F32, {T, Nq}},
                                     {b.put(Bytes(T * Nkv * 4)), 0, DType::F32, {T, Nkv}},
                                     {b.put(Bytes(T * Nkv * 4)), 0, DType::F32, {T, Nkv}},
                                     {b.put(Bytes(T * Nq * 4)), 0, DType::F32, {T, Nq}},
                                     {b.put(Bytes(T * Nkv * 4)), 0, DType::F32, {T, Nkv}}};
          const TensorRef pr{b.put(to_bytes(std::vector<int32_t>(pos.begin(), pos.begin() + T))),
                             0,
                             DType::I32,
                             {T}};
          const TensorRef fr{b.put(to_bytes(freq)), 0, DType::F32, {c.rot / 2}};
          const TensorRef sr{
              b.put(to_bytes(std::vector<int32_t>(slots.begin(), slots.begin() + T))),
              0,
              DType::I32,
              {T}};
          const TensorRef kc{b.put(encode(c.cache, kc0)), 0, c.cache, {cache_rows, Nkv}};
          const TensorRef vc{b.put(encode(c.cache, vc0)), 0, c.cache, {cache_rows, Nkv}};
          auto prog = be.compile({BoundNode{&mq, {xr, b.weight(wq, wt, Nq, K, quant)}, outs[0]},
                                  BoundNode{&mk, {xr, b.weight(wk, wt, Nkv, K, quant)}, outs[1]},
                                  BoundNode{&mv, {xr, b.weight(wv, wt, Nkv, K, quant)}, outs[2]},
                                  BoundNode{&rq, {outs[0], pr, fr}, outs[3]},
                                  BoundNode{&rk, {outs[1], pr, fr}, outs[4]},
                                  BoundNode{&ak, {outs[4], sr, kc}, kc},
                                  BoundNode{&av, {outs[2], sr, vc}, vc}});
          prog->run();
          if (ds) *ds = prog->dispatches();
          std::vector<float> got = download_f32(be, std::vector<TensorRef>(outs, outs + 5));
          for (const TensorRef& cache : {kc, vc}) {
            Bytes raw(tensor_bytes(c.cache, cache.shape));
            be.download(*cache.buffer, 0, raw.data(), raw.size());
            const std::vector<float> v = decode(c.cache, raw);
            got.insert(got.end(), v.begin(), v.end());
          }
          return got;
        };
        // Groups of the default size on the fixed grid, of 16 threads (clustered halves of
        // wider subgroups, or two subgroups of 8) and of 32 (LLM_VULKAN_QKV_TPR).
        for (const char* qkv_tpr : {"0", "16", "32"}) {
          INFO("LLM_VULKAN_QKV_TPR=" << qkv_tpr);
          ScopedEnv tpr_env("LLM_VULKAN_QKV_TPR", qkv_tpr);
          check_gemv_backends(
              run,
              [](const Backend& gpu, std::vector<Program::Dispatch> ds) {
                // With x in shared memory the ropes and appends join the GEMV.
                if (gpu.info().details.find("x in shared memory") == std::string::npos) return;
                ds = without_quantize(ds);
                REQUIRE(ds.size() == 1);
                CHECK(ds[0].kernel.find("+rope +kv_append") != std::string::npos);
                CHECK(ds[0].nodes == std::vector<int>{0, 1, 2, 3, 4, 5, 6});
              },
              // The caches round to 16 bits in two of the cases.
              [&](const Backend& gpu) {
                return c.cache == DType::F32 ? (has_int_dot_gemv(gpu) ? 1e-4 : 1e-5) : 1e-2;
              });
        }
      }
    }
}

TEST_CASE("vulkan sample picks what the cpu picks (argmax and temperature; ties, NaN, long rows)",
          "[vulkan][ops]") {
  VULKAN_TEST();
  std::mt19937 rng(11);
  for (const int64_t N : {7, 32003, 151936}) {
    CAPTURE(N);
    const HostT x = sample_rows_input(5, N, rng), params = sample_params_input(5, rng);
    CHECK(compare_with_cpu(make_node(Op::Sample), {x, params},
                           i32_tensor({5}, std::vector<int32_t>(5))) == 0.0);
  }
  // A row of a vocabulary is read by several workgroups, and the last to finish merges
  // their bests: runs after the first must merge too (the counters start at zero again),
  // and the best's index may lie in any part.
  const int64_t R = 3, N = 32000;
  const HostT params = f32_tensor({R, kSampleParamCount}, greedy_sample_rows(R));
  const HostT ids = i32_tensor({R}, std::vector<int32_t>(R, -1));
  auto cpu = make_cpu_backend(1);
  HostT x = f32_tensor({R, N}, uniform(R * N, rng, -10.f, 10.f));
  OneNode ref(*cpu, make_node(Op::Sample), {x, params}, ids),
      gpu(shared_vulkan(), make_node(Op::Sample), {x, params}, ids);
  bool split = false;
  for (const Program::Dispatch& d : gpu.program().dispatches())
    split = split || d.kernel.rfind("sample x", 0) == 0;
  CHECK(split);
  for (int run = 0; run < 6; run++) {
    std::vector<float> v = uniform(R * N, rng, -10.f, 10.f);
    for (int64_t r = 0; r < R; r++) v[r * N + (run * 5003 + r * 9001) % N] = 50.f;
    const Bytes b = to_bytes(v);
    ref.set_input(0, b);
    gpu.set_input(0, b);
    ref.run();
    gpu.run();
    CHECK(gpu.output() == ref.output());
  }
}

TEST_CASE("vulkan sample's top-k, top-p and min-p cuts keep what the cpu keeps", "[vulkan][ops]") {
  VULKAN_TEST();
  check_sample_cuts(shared_vulkan());
}

TEST_CASE("vulkan norms match the cpu", "[vulkan][ops]") {
  VULKAN_TEST();
  check_norm_ops(compare_cpu, {67, 600}, {DType::F32, DType::F16, DType::BF16}, true);
}

TEST_CASE("vulkan rope matches the cpu (NeoX, GPT-J, partial rotary)", "[vulkan][ops]") {
  VULKAN_TEST();
  check_rope_ops(compare_cpu, 40000);
}

TEST_CASE("vulkan element-wise ops match the cpu", "[vulkan][ops]") {
  VULKAN_TEST();
  check_elementwise_ops(compare_cpu, 6.f);
}

TEST_CASE("vulkan get_rows and kv_append are exact", "[vulkan][ops]") {
  VULKAN_TEST();
  std::mt19937 rng(5);
  const std::vector<int32_t> ids = {3, 0, 49, 3, 17, 8, 22};
  const int64_t V = 50, R = 7;
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    DYNAMIC_SECTION(dtype_name(t)) {
      const int64_t D = 67;
      const HostT table{t, {V, D}, encode(t, uniform(V * D, rng))};
      CHECK(compare_with_cpu(make_node(Op::GetRows), {table, i32_tensor({R}, ids)},
                             zeros({R, D})) == 0.0);
      // Odd rows of 16-bit elements: neighbouring slots share 32-bit words.
      for (int64_t W : {24, 13}) {
        const int64_t slots = 40, T = 5;
        const HostT cache{t, {slots, W}, encode(t, uniform(slots * W, rng))};
        const HostT src = f32_tensor({T, W}, uniform(T * W, rng, -100.f, 100.f));
        CHECK(compare_with_cpu(make_node(Op::KvAppend),
                               {src, i32_tensor({T}, {39, 0, 12, 13, 7}), cache}, cache, 2) == 0.0);
      }
    }
  }
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    DYNAMIC_SECTION(dtype_name(t)) {
      const int64_t D = 96;
      const QuantMatrix table = quantize_random(t, V, D, rng);
      Backend* gpu = &shared_vulkan();
      for (int weight : {-1, 0}) {
        OneNode g(*gpu, make_node(Op::GetRows), {{t, {V, D}, table.blocks}, i32_tensor({R}, ids)},
                  zeros({R, D}), -1, weight);
        g.run();
        std::vector<float> want;
        for (int32_t id : ids)
          want.insert(want.end(), table.values.begin() + id * D,
                      table.values.begin() + (id + 1) * D);
        CHECK(decode(DType::F32, g.output()) == want);
      }
    }
  }
}

TEST_CASE("vulkan attention matches the cpu (GQA, window, softcap, ragged batch, paged)",
          "[vulkan][ops]") {
  VULKAN_TEST();
  using F = DType;
  check_attention_ops(compare_cpu, {{6, 2, 64, 0, 0.f, F::F32, F::F32},
                                    {6, 2, 64, 3, 0.f, F::F32, F::F32},
                                    {4, 4, 20, 0, 2.f, F::F32, F::F32},
                                    {6, 1, 36, 5, 0.f, F::F16, F::F16},
                                    {8, 2, 130, 0, 0.f, F::BF16, F::BF16},
                                    {2, 2, 256, 7, 1.5f, F::F16, F::BF16},
                                    // attention_decode (heads of up to 128 dims, a multiple
                                    // of 16) with 16-bit caches, a soft cap and a window;
                                    // the others above take attention.comp.
                                    {4, 2, 32, 0, 1.5f, F::F16, F::BF16},
                                    {4, 1, 128, 5, 0.f, F::BF16, F::F16},
                                    // K and V of one 16-bit dtype: four halves a load.
                                    {4, 2, 64, 0, 0.f, F::F16, F::F16},
                                    {4, 1, 128, 3, 1.5f, F::BF16, F::BF16}});
}

namespace {

// The tiled prefill attention (attention_tiled.comp) checked for one program: its
// output against the CPU's and, where `tiled`, that it took the tiled shader (or that it
// did not).
void check_prefill_attention(const AttentionCase& a, int page, int cache_pages, int max_pages,
                             const std::vector<int32_t>& pos, const std::vector<int32_t>& seq,
                             const std::vector<int32_t>& table, bool tiled, std::mt19937& rng) {
  const int64_t T = static_cast<int64_t>(pos.size());
  const Node node = make_node(Op::Attention, attention_params(a, page));
  const std::vector<HostT> ins =
      attention_inputs(a, int64_t{cache_pages} * page, pos, seq, table, max_pages, rng);
  const HostT out = zeros({T, int64_t{a.heads} * a.head_dim});
  const double err = compare_with_cpu(node, ins, out);
  INFO("max rel err " << err);
  CHECK(err <= 1e-5);
  OneNode g(shared_vulkan(), node, ins, out);
  const auto ds = g.program().dispatches();
  REQUIRE(!ds.empty());
  if (tiled) {
    CHECK(ds.size() == 1);
    CHECK(ds[0].kernel.find("attention tiled") != std::string::npos);
  }
  for (const auto& d : ds)
    if (!tiled) CHECK(d.kernel.find("attention tiled") == std::string::npos);
}

}  // namespace

TEST_CASE("vulkan prefill attention in tiles of 16 queries matches the cpu", "[vulkan][ops]") {
  VULKAN_TEST();
  std::mt19937 rng(17);
  // 53 tokens of three sequences; sequence 0's come in two runs around sequence 1's, so
  // tiles hold one, two or three sequences (a pass over the keys for each).
  const int page = 8, max_pages = 8, cache_pages = 24;
  std::vector<int32_t> table(cache_pages);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  std::vector<int32_t> pos, seq;
  auto run = [&](int s, int first, int n) {
    for (int i = 0; i < n; i++) {
      pos.push_back(first + i);
      seq.push_back(s);
    }
  };
  run(0, 30, 12);
  run(1, 0, 7);
  run(0, 42, 9);
  run(2, 5, 25);
  // A fourth block-table row makes it under 16 tokens per sequence (a decode batch),
  // which keeps a workgroup per token.
  std::vector<int32_t> table4 = table;
  table4.insert(table4.end(), table.begin(), table.begin() + max_pages);
  // One sequence of 100 tokens after 37 cached ones: tiles of 2 to 5 chunks of 32 keys
  // (4 to 9 of 16), the last tile short.
  const int long_page = 16, long_max_pages = 10, long_cache_pages = 12;
  std::vector<int32_t> long_table(long_cache_pages);
  std::iota(long_table.begin(), long_table.end(), 0);
  std::shuffle(long_table.begin(), long_table.end(), rng);
  long_table.resize(long_max_pages);
  std::vector<int32_t> long_pos(100);
  std::iota(long_pos.begin(), long_pos.end(), 37);
  struct Case {
    AttentionCase a;
    bool tiled;
    const std::vector<int32_t>* table;
  };
  const Case cases[] = {{{8, 2, 64, 0, 0.f, DType::F32, DType::F32}, true, &table},
                        {{4, 4, 128, 0, 1.5f, DType::F16, DType::F16}, true, &table},
                        {{4, 2, 64, 0, 0.f, DType::BF16, DType::BF16}, true, &table},
                        {{6, 3, 20, 0, 0.f, DType::BF16, DType::F32}, true, &table},
                        {{4, 1, 100, 0, 0.f, DType::F32, DType::F32}, true, &table},
                        {{4, 2, 64, 9, 0.f, DType::F32, DType::F32}, false, &table},
                        {{2, 1, 130, 0, 0.f, DType::F32, DType::F32}, false, &table},
                        {{8, 2, 64, 0, 0.f, DType::F32, DType::F32}, false, &table4}};
  // Chunks of 32 keys where the device has the shared memory (not lavapipe), and of 16.
  for (const char* bkey : {"32", "16"}) {
    ScopedEnv chunk("LLM_VULKAN_ATTN_BKEY", bkey);
    for (const Case& c : cases) {
      DYNAMIC_SECTION("chunks of " << bkey << ", " << attention_case_name(c.a) << ", "
                                   << c.table->size() / max_pages << " block-table rows") {
        check_prefill_attention(c.a, page, cache_pages, max_pages, pos, seq, *c.table, c.tiled,
                                rng);
      }
    }
    for (const AttentionCase& a : {AttentionCase{8, 2, 128, 0, 0.f, DType::F32, DType::F32},
                                   AttentionCase{4, 4, 80, 0, 0.f, DType::F16, DType::F16}}) {
      DYNAMIC_SECTION("chunks of " << bkey << ", " << attention_case_name(a)
                                   << ", 100 tokens after 37") {
        check_prefill_attention(a, long_page, long_cache_pages, long_max_pages, long_pos,
                                std::vector<int32_t>(long_pos.size(), 0), long_table, true, rng);
      }
    }
  }
}

TEST_CASE("vulkan attention over a long context (several chunks of keys)", "[vulkan][ops]") {
  VULKAN_TEST();
  std::mt19937 rng(7);
  const int page = 16, max_pages = 24, cache_pages = 30;
  std::vector<int32_t> table(cache_pages);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  table.resize(max_pages);
  for (int window : {0, 300})
    for (bool by_subgroup : {true, false}) {
      DYNAMIC_SECTION("window " << window << (by_subgroup ? "" : ", chunks of 32 by trees")) {
        // Where the device has subgroup sums, chunks of 64 keys (attention_decode_sg);
        // LLM_VULKAN_ATTN_SUBGROUP=0 takes attention_decode (devices without them).
        ScopedEnv sg("LLM_VULKAN_ATTN_SUBGROUP", by_subgroup ? nullptr : "0");
        OpParams p;
        p.n_heads = 4;
        p.n_kv_heads = 1;
        p.head_dim = 64;
        p.scale = 0.125f;
        p.window = window;
        p.page_size = page;
        const int64_t rows = int64_t{cache_pages} * page, W = 64, Q = 4 * 64;
        const std::vector<int32_t> positions = {5, 200, 383};
        const int64_t T = 3;
        const std::vector<HostT> ins = {f32_tensor({T, Q}, uniform(T * Q, rng, -2.f, 2.f)),
                                        f32_tensor({rows, W}, uniform(rows * W, rng, -2.f, 2.f)),
                                        f32_tensor({rows, W}, uniform(rows * W, rng)),
                                        i32_tensor({T}, positions),
                                        i32_tensor({T}, {0, 0, 0}),
                                        i32_tensor({1, max_pages}, table)};
        const double err = compare_with_cpu(make_node(Op::Attention, p), ins, zeros({T, Q}));
        INFO("max rel err " << err);
        CHECK(err <= 1e-5);
        // 12 (token, head) pairs: the keys are split over workgroups, which the last
        // of each pair to finish merges (compare_with_cpu runs it twice: the counters
        // are back at zero for the replay).
        Backend* gpu = &shared_vulkan();
        OneNode g(*gpu, make_node(Op::Attention, p), ins, zeros({T, Q}));
        const auto ds = g.program().dispatches();
        REQUIRE(ds.size() == 1);
        CHECK(ds[0].kernel.find("+merge") != std::string::npos);
        const bool sg_ops = gpu->info().details.find("subgroup ops") != std::string::npos;
        CHECK((ds[0].kernel.rfind("attention decode/64 ", 0) == 0) == (by_subgroup && sg_ops));
      }
    }
}

// A decode step is planned (and its command buffer recorded) for the whole context, 32
// splits a (token, head) here, and replayed at any length: short contexts leave most
// splits few keys or none, and the merge must still be exact.
TEST_CASE("vulkan decode attention planned for a long context runs short ones", "[vulkan][ops]") {
  VULKAN_TEST();
  std::mt19937 rng(23);
  const int page = 16, max_pages = 128;
  std::vector<int32_t> table(max_pages);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), rng);
  // From 1 key (31 splits without one) to 2,048 (64 a split), in one batch.
  const std::vector<int32_t> positions = {0, 1, 63, 64, 65, 700, 2047, 1499};
  const int64_t T = static_cast<int64_t>(positions.size());
  const AttentionCase c{4, 2, 64, 0, 0.f, DType::F32, DType::F32};
  const Node node = make_node(Op::Attention, attention_params(c, page));
  for (bool by_subgroup : {true, false}) {
    DYNAMIC_SECTION((by_subgroup ? "chunks of 64" : "chunks of 32 by trees")) {
      ScopedEnv sg("LLM_VULKAN_ATTN_SUBGROUP", by_subgroup ? nullptr : "0");
      const std::vector<HostT> ins =
          attention_inputs(c, int64_t{max_pages} * page, positions, std::vector<int32_t>(T, 0),
                           table, max_pages, rng);
      const HostT out = zeros({T, int64_t{c.heads} * c.head_dim});
      // compare_with_cpu replays the program: the merge counters are back at zero for the
      // second run.
      const double err = compare_with_cpu(node, ins, out);
      INFO("max rel err " << err);
      CHECK(err <= 1e-5);
      OneNode g(shared_vulkan(), node, ins, out);
      const auto ds = g.program().dispatches();
      REQUIRE(ds.size() == 1);
      CHECK(ds[0].kernel.find("x32 +merge") != std::string::npos);
    }
  }
  // One token, told how long its context is (Program::set_context_used): the program
  // replays a recording with fewer splits (1, 2, 4, 12, 24), or the planned 32.
  auto cpu = make_cpu_backend(2);
  const std::vector<HostT> ins1 =
      attention_inputs(c, int64_t{max_pages} * page, {0}, {0}, table, max_pages, rng);
  const HostT out1 = zeros({1, int64_t{c.heads} * c.head_dim});
  OneNode ref(*cpu, node, ins1, out1), g(shared_vulkan(), node, ins1, out1);
  // The program created every split count's pipeline when it was built: a step that
  // compiled one would stall (hundreds of ms on NVIDIA's driver).
  const int pipelines_built = vulkan_pipelines_created();
  for (const int32_t pos : {0, 100, 250, 700, 1500, 2047, 30}) {
    DYNAMIC_SECTION("one token at position " << pos) {
      for (OneNode* n : {&ref, &g}) n->set_input(3, i32_tensor({1}, {pos}).data);
      ref.run();
      g.program().set_context_used(pos + 1);
      for (int rep = 0; rep < 2; rep++) g.run();  // the counters are back at zero
      const double err =
          max_rel_error(decode(DType::F32, g.output()), decode(DType::F32, ref.output()));
      INFO("max rel err " << err);
      CHECK(err <= 1e-5);
      CHECK(vulkan_pipelines_created() == pipelines_built);
    }
  }
}

TEST_CASE("vulkan decode attention rounds its output for the o GEMV (one split and merged ones)",
          "[vulkan][ops][quant]") {
  VULKAN_TEST();
  const std::vector<Backend*> gpus = gemv_backends();
  if (gpus.size() < 2) {
    WARN("the Vulkan device has no integer dot products (or no subgroup ops): skipped");
    return;
  }
  // A context of 256 keys (split over workgroups, merged by the last) and one of 32 (a
  // single workgroup per head); heads of 64 dims (attention_decode.comp) and of 256
  // (attention.comp).
  for (const int head_dim : {64, 256})
    for (const int max_pages : {8, 2}) {
      DYNAMIC_SECTION("head_dim " << head_dim << " max_pages " << max_pages) {
        std::mt19937 rng(16);
        const AttentionCase c{4, 2, head_dim, 0, 0.f, DType::F32, DType::F32};
        const int page = 16;
        const int64_t cache_rows = 2 * max_pages * page, T = 2, Q = 4 * head_dim, N = 96;
        std::vector<int32_t> table(2 * max_pages);
        std::iota(table.begin(), table.end(), 0);
        const std::vector<int32_t> positions =
            max_pages == 8 ? std::vector<int32_t>{120, 37} : std::vector<int32_t>{30, 7};
        const std::vector<HostT> ins =
            attention_inputs(c, cache_rows, positions, {0, 1}, table, max_pages, rng);
        const OpParams ap = attention_params(c, page);
        // Tensor ids: attention inputs 0-5, its output 6, o's weight 7 and output 8.
        std::vector<TensorId> ids = {0, 1, 2, 3, 4, 5};
        Node att = make_node(Op::Attention, ids, 6);
        att.params = ap;
        const Node mo = make_node(Op::MatMul, {6, 7}, 8);
        const QuantMatrix wo = quantize_random(DType::Q4_0, N, Q, rng);
        auto run = [&](Backend& be, bool quant, std::vector<Program::Dispatch>* ds) {
          TestBuffers b(be);
          std::vector<TensorRef> in;
          for (const HostT& h : ins) in.push_back({b.put(h.data), 0, h.dtype, h.shape});
          const TensorRef ar{b.put(Bytes(T * Q * 4)), 0, DType::F32, {T, Q}};
          const TensorRef yr{b.put(Bytes(T * N * 4)), 0, DType::F32, {T, N}};
          auto prog =
              be.compile({BoundNode{&att, in, ar},
                          BoundNode{&mo, {ar, b.weight(wo, DType::Q4_0, N, Q, quant)}, yr}});
          // A first run on other queries: the split counters must be back at zero for the
          // second, whose result is checked.
          const std::vector<float> q2 = uniform(T * Q, rng);
          be.upload(*in[0].buffer, 0, q2.data(), q2.size() * 4);
          prog->run();
          be.upload(*in[0].buffer, 0, ins[0].data.data(), ins[0].data.size());
          prog->run();
          if (ds) *ds = prog->dispatches();
          return download_f32(be, {ar, yr});
        };
        auto cpu = make_cpu_backend(1);
        const std::vector<float> want = run(*cpu, false, nullptr);
        std::vector<Program::Dispatch> ds;
        const std::vector<float> got = run(*gpus[1], true, &ds);
        CHECK(max_rel_error(got, want) <= 1e-4);
        REQUIRE(ds.size() == 2);
        CHECK(ds[0].kernel.find(max_pages == 8 ? "+merge +quantize" : "+quantize") !=
              std::string::npos);
        CHECK((ds[0].kernel.find("attention decode") == 0) == (head_dim == 64));
        if (max_pages == 2) CHECK(ds[0].kernel.find("+merge") == std::string::npos);
        CHECK(ds[1].kernel.rfind("matmul_gemv_q", 0) == 0);
      }
    }
}

// The backend whose single-token decode attention runs o and its residual Add in its
// grid (LLM_VULKAN_ATTN_O=1; =2 with the RmsNorm after them; integer dots forced), or
// null where the device lacks float atomics, integer dots or subgroup arithmetic.
Backend* attn_o_vulkan(int mode) {
  static Backend* backends[3] = {};
  Backend*& b = backends[mode];
  if (!b) {
    ScopedEnv coop("LLM_VULKAN_COOPMAT", "0");
    ScopedEnv dot("LLM_VULKAN_INT_DOT", "1");
    ScopedEnv attn_o("LLM_VULKAN_ATTN_O", mode == 2 ? "2" : "1");
    b = make_vulkan_backend().release();
  }
  return b->info().details.find("o inside the decode attention") != std::string::npos ? b : nullptr;
}

TEST_CASE("vulkan runs o and its residual add in the decode attention's grid (O_WORKERS)",
          "[vulkan][ops][quant]") {
  VULKAN_TEST();
  if (!attn_o_vulkan(1)) {
    WARN("no float atomics, integer dots or subgroup ops on this Vulkan device: skipped");
    return;
  }
  // One token (decode) of 8 heads over 2 kv heads; a context of 200 keys (split over
  // workgroups, merged by the last) and one of 20 (a workgroup per head); o of 96 rows
  // (under a workgroup per worker), 600 and 608, then the next RmsNorm and a matmul of
  // it (which mode 2 rounds in the grid where o's rows are whole blocks: 96 and 608;
  // for 600 the matmul is f32 and the norm its own dispatch).
  // Slices a head, rows a thread loaded before the wait and spins: the planner's (2
  // slices on lavapipe's 16 units), one slice without prefetch and no wait (the head's
  // workgroups take most slices), and 5 uneven slices with 4 rows prefetched.
  struct Variant {
    int mode;
    const char *parts, *pf, *spin;
  };
  for (const Variant o : {Variant{1, nullptr, nullptr, nullptr}, Variant{1, "1", "0", "0"},
                          Variant{1, "5", "4", nullptr}, Variant{2, nullptr, nullptr, nullptr}})
    for (const int head_dim : {64, 128})
      for (const int max_pages : {16, 2})
        for (const int64_t N : {96, 600, 608})
          for (DType wt : {DType::Q4_0, DType::Q8_0})
            DYNAMIC_SECTION("mode " << o.mode << " slices " << (o.parts ? o.parts : "planned")
                                    << " head_dim " << head_dim << " max_pages " << max_pages
                                    << " N " << N << " " << dtype_name(wt)) {
              ScopedEnv parts("LLM_VULKAN_ATTN_O_PARTS", o.parts);
              ScopedEnv pf("LLM_VULKAN_ATTN_O_PF", o.pf);
              ScopedEnv spin("LLM_VULKAN_ATTN_O_SPIN", o.spin);
              Backend* gpu = attn_o_vulkan(o.mode);
              std::mt19937 rng(31);
              const AttentionCase c{8, 2, head_dim, 0, 0.f, DType::F32, DType::F32};
              const int page = 16;
              const int64_t cache_rows = max_pages * page, Q = 8 * head_dim, M = 40;
              std::vector<int32_t> table(max_pages);
              std::iota(table.begin(), table.end(), 0);
              std::shuffle(table.begin(), table.end(), rng);
              const std::vector<int32_t> positions = {max_pages == 16 ? 199 : 19};
              const std::vector<HostT> ins =
                  attention_inputs(c, cache_rows, positions, {0}, table, max_pages, rng);
              // Tensor ids: attention inputs 0-5, its output 6, o's weight 7 and output 8,
              // the residual 9 and the sum 10, the norm's weight 11 and output 12, the
              // next matmul's weight 13 and output 14.
              Node att = make_node(Op::Attention, {0, 1, 2, 3, 4, 5}, 6);
              att.params = attention_params(c, page);
              const Node mo = make_node(Op::MatMul, {6, 7}, 8);
              const Node add = make_node(Op::Add, {9, 8}, 10);
              Node norm = make_node(Op::RmsNorm, {10, 11}, 12);
              norm.params.eps = 1e-5f;
              const Node mq = make_node(Op::MatMul, {12, 13}, 14);
              // The next matmul: quantized where o's rows are whole blocks, else f32 (the
              // norm then runs on its own).
              const bool blocks = N % 32 == 0;
              const QuantMatrix wo = quantize_random(wt, N, Q, rng),
                                wq = quantize_random(wt, M, blocks ? N : 32, rng);
              const std::vector<float> wq32 = uniform(M * N, rng);
              const std::vector<float> res = uniform(N, rng, -2.f, 2.f),
                                       nw = uniform(N, rng, 0.5f, 1.5f);
              auto run = [&](Backend& be, bool quant, std::vector<Program::Dispatch>* ds) {
                TestBuffers b(be);
                std::vector<TensorRef> in;
                for (const HostT& h : ins) in.push_back({b.put(h.data), 0, h.dtype, h.shape});
                const TensorRef ar{b.put(Bytes(Q * 4)), 0, DType::F32, {1, Q}};
                const TensorRef yr{b.put(Bytes(N * 4)), 0, DType::F32, {1, N}};
                const TensorRef rr{b.put(to_bytes(res)), 0, DType::F32, {1, N}};
                const TensorRef sr{b.put(Bytes(N * 4)), 0, DType::F32, {1, N}};
                const TensorRef nwr{b.put(to_bytes(nw)), 0, DType::F32, {N}};
                const TensorRef nr{b.put(Bytes(N * 4)), 0, DType::F32, {1, N}};
                const TensorRef qr{b.put(Bytes(M * 4)), 0, DType::F32, {1, M}};
                const TensorRef wqr = blocks
                                          ? b.weight(wq, wt, M, N, quant)
                                          : TensorRef{b.put(to_bytes(wq32)), 0, DType::F32, {M, N}};
                auto prog =
                    be.compile({BoundNode{&att, in, ar},
                                BoundNode{&mo, {ar, b.weight(wo, wt, N, Q, quant)}, yr},
                                BoundNode{&add, {rr, yr}, sr}, BoundNode{&norm, {sr, nwr}, nr},
                                BoundNode{&mq, {nr, wqr}, qr}});
                // A first run on other queries: the states, sums and counter must be back
                // at zero for the second, whose result is checked.
                const std::vector<float> q2 = uniform(Q, rng);
                be.upload(*in[0].buffer, 0, q2.data(), q2.size() * 4);
                prog->run();
                be.upload(*in[0].buffer, 0, ins[0].data.data(), ins[0].data.size());
                prog->run();
                if (ds) *ds = prog->dispatches();
                return std::vector<std::vector<float>>{
                    download_f32(be, {ar}), download_f32(be, {sr}), download_f32(be, {qr})};
              };
              auto cpu = make_cpu_backend(1);
              const auto want = run(*cpu, false, nullptr);
              std::vector<Program::Dispatch> ds;
              const auto got = run(*gpu, true, &ds);
              CHECK(max_rel_error(got[0], want[0]) <= 1e-5);
              CHECK(max_rel_error(got[1], want[1]) <= 1e-4);
              CHECK(max_rel_error(got[2], want[2]) <= 1e-4);
              ds = without_quantize(ds);
              REQUIRE(ds.size() >= 2);
              // The planner's count depends on the device (units / heads: 2 on lavapipe,
              // 16 on an H200).
              CHECK(ds[0].kernel.find(o.parts
                                          ? std::string("+o (") + o.parts + " slices"
                                          : std::string(" slices a head")) != std::string::npos);
              CHECK((ds[0].kernel.find("+merge") != std::string::npos) == (max_pages == 16));
              const bool norm_in = o.mode == 2 && blocks;
              CHECK((ds[0].kernel.find("+add +rms_norm") != std::string::npos) == norm_in);
              CHECK(ds[0].nodes ==
                    (norm_in ? std::vector<int>{0, 1, 2, 3} : std::vector<int>{0, 1, 2}));
              CHECK(ds.size() == (blocks ? 2u : 3u));  // the norm inside the matmul
            }
}

TEST_CASE("vulkan replays read new inputs; dispatches are named and timed", "[vulkan][replay]") {
  VULKAN_TEST();
  std::mt19937 rng(8);
  const int64_t T = 3, K = 96, N = 40;
  const HostT w{DType::F16, {N, K}, encode(DType::F16, uniform(N * K, rng))};
  const HostT x0 = f32_tensor({T, K}, uniform(T * K, rng));
  auto cpu = make_cpu_backend(1);
  Backend* gpu = &shared_vulkan();
  const Node node = make_node(Op::MatMul);
  OneNode c(*cpu, node, {x0, w}, zeros({T, N})), g(*gpu, node, {x0, w}, zeros({T, N}));
  for (int step = 0; step < 4; step++) {
    const Bytes x = to_bytes(uniform(T * K, rng));
    c.set_input(0, x);
    g.set_input(0, x);
    c.run();
    g.run();
    CHECK(max_rel_error(decode(DType::F32, g.output()), decode(DType::F32, c.output())) <= 1e-5);
  }
  const auto ds = g.program().dispatches();
  REQUIRE(ds.size() == 1);
  CHECK(ds[0].kernel.find("matmul_gemv f16") != std::string::npos);
  CHECK(ds[0].nodes == std::vector<int>{0});
  const Bytes before = g.output();
  const std::vector<double> ms = g.program().run_profiled();
  CHECK(g.output() == before);  // the profiled run computes what run() does
  if (!ms.empty()) {
    REQUIRE(ms.size() == 1);
    CHECK(ms[0] >= 0.0);
  }
}

TEST_CASE("vulkan measuring aids: repeated or left-out dispatches, the dispatch list",
          "[vulkan][replay]") {
  VULKAN_TEST();
  std::mt19937 rng(9);
  const int64_t T = 2, K = 64, N = 24;
  const HostT w{DType::F16, {N, K}, encode(DType::F16, uniform(N * K, rng))};
  const HostT x = f32_tensor({T, K}, uniform(T * K, rng));
  auto cpu = make_cpu_backend(1);
  const Node node = make_node(Op::MatMul);
  OneNode c(*cpu, node, {x, w}, zeros({T, N}));
  c.run();
  // LLM_VULKAN_REPEAT runs the GEMV 3 more times in the replay: y = W x again, so the
  // output stays the product (a repeat that broke the recording would not).
  {
    ScopedEnv repeat("LLM_VULKAN_REPEAT", "matmul_gemv:3");
    auto be = make_vulkan_backend();
    OneNode g(*be, node, {x, w}, zeros({T, N}));
    g.run();
    CHECK(max_rel_error(decode(DType::F32, g.output()), decode(DType::F32, c.output())) <= 1e-5);
  }
  // ... and with -1 leaves it out: the output keeps the zeros it started with.
  {
    ScopedEnv skip("LLM_VULKAN_REPEAT", "matmul_gemv:-1");
    auto be = make_vulkan_backend();
    OneNode g(*be, node, {x, w}, zeros({T, N}));
    g.run();
    CHECK(decode(DType::F32, g.output()) == std::vector<float>(static_cast<size_t>(T * N), 0.f));
    CHECK(decode(DType::F32, c.output()) != std::vector<float>(static_cast<size_t>(T * N), 0.f));
  }
  // LLM_VULKAN_DUMP=1 lists each dispatch with its grid (llmcli's stderr).
  const Reference ref = load_reference("llama3");
  ScopedEnv dump("LLM_VULKAN_DUMP", "1");
  const CommandResult gen =
      run_cli({"generate", model_dir("llama3"), "--device", "vulkan", "--token-ids",
               join_ids(ref.input_ids), "-n", "1", "--temperature", "0"});
  INFO(gen.err);
  REQUIRE(gen.exit_code == 0);
  CHECK(gen.err.find("vulkan:0: a program of") != std::string::npos);
  CHECK(gen.err.find("get_rows") != std::string::npos);
  CHECK(gen.err.find("| groups ") != std::string::npos);
}

TEST_CASE("vulkan shaders report bad indices instead of reading out of bounds",
          "[vulkan][errors]") {
  VULKAN_TEST();
  auto be = make_vulkan_backend();
  const HostT table = f32_tensor({4, 8}, std::vector<float>(32, 1.f));
  OneNode bad(*be, make_node(Op::GetRows), {table, i32_tensor({2}, {1, 4})}, zeros({2, 8}));
  bad.run();
  CHECK_THROWS_WITH(bad.output(), Catch::Contains("get_rows: a row id outside the table"));
  // Reported once; the backend goes on working.
  OneNode good(*be, make_node(Op::GetRows), {table, i32_tensor({2}, {1, 3})}, zeros({2, 8}));
  good.run();
  CHECK(decode(DType::F32, good.output()) == std::vector<float>(16, 1.f));
}

TEST_CASE("vulkan pipeline cache is kept on disk", "[vulkan]") {
  VULKAN_TEST();
  TempDir dir;
  ScopedEnv env("LLMRT_CACHE", dir.path().c_str());
  {
    auto be = make_vulkan_backend();
    OneNode n(*be, make_node(Op::Gelu), {f32_tensor({1, 3}, {0.f, 1.f, 2.f})}, zeros({1, 3}));
    n.run();
    n.output();
  }
  const std::string path = dir.file("vulkan-pipelines.bin");
  REQUIRE(std::filesystem::exists(path));
  CHECK(std::filesystem::file_size(path) > 16);
  // A second backend starts from it (and a damaged file is ignored).
  { auto be = make_vulkan_backend(); }
  write_file(path, "not a pipeline cache");
  { auto be = make_vulkan_backend(); }
}

// ---- Whole models --------------------------------------------------------------------------

TEST_CASE("vulkan: fixtures match transformers logits and greedy ids", "[vulkan][models]") {
  VULKAN_TEST();
  Backend* backend = &shared_vulkan();
  for (const Fixture& f : kFixtures) {
    DYNAMIC_SECTION(f.name) { check_fixture_reference(*backend, f.name, f.tol); }
  }
}

TEST_CASE("vulkan: staged transfers (the discrete-GPU path) give the same logits",
          "[vulkan][models]") {
  VULKAN_TEST();
  const Reference ref = load_reference("qwen2");
  auto unified = make_vulkan_backend();
  std::unique_ptr<Backend> staged;
  {
    ScopedEnv env("LLM_VULKAN_STAGING", "1");
    staged = make_vulkan_backend();
  }
  CHECK(staged->info().details.find("staged uploads") != std::string::npos);
  std::vector<std::vector<float>> logits;
  for (Backend* be : {unified.get(), staged.get()}) {
    auto model = Model::load(model_dir("qwen2"), *be, LoadOptions{"q4f16_1"});
    Session s(*model);
    std::vector<float> all = s.forward(ref.input_ids, true);
    for (int i = 0; i < 3; i++) {
      const std::vector<float> row = s.forward({ref.greedy_ids[i]}, false);
      all.insert(all.end(), row.begin(), row.end());
    }
    logits.push_back(all);
  }
  CHECK(logits[0] == logits[1]);
  // Transfers of odd sizes and offsets, and clears, through the staging buffer.
  auto buf = staged->alloc(1001, "odd");
  std::vector<uint8_t> data(1001);
  for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(i * 7);
  staged->upload(*buf, 0, data.data(), data.size());
  staged->clear(*buf, 3, 10);
  std::fill(data.begin() + 3, data.begin() + 13, 0);
  std::vector<uint8_t> back(998);
  staged->download(*buf, 3, back.data(), back.size());
  CHECK(back == std::vector<uint8_t>(data.begin() + 3, data.end()));
}

TEST_CASE("vulkan: decode through the cache equals a full forward pass", "[vulkan][models]") {
  VULKAN_TEST();
  Backend* backend = &shared_vulkan();
  for (const char* name : {"llama3", "mistral_w5", "qwen2_f16_untied"}) {
    DYNAMIC_SECTION(name) {
      const Reference ref = load_reference(name);
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
      CHECK(max_rel_error(got, all) <= 1e-5);
    }
  }
}

// Queued greedy decoding (the device one or more steps ahead of the host) in each way of submitting
// a step's transfer (LLM_VULKAN_SUBMIT bits: 1 transfer/compute-only barriers, 2 the
// transfer in the step's submission, its downloads read when its event is set): every
// mode gives the reference's greedy ids.
TEST_CASE("vulkan: queued greedy steps give the reference ids in every submission mode",
          "[vulkan][models]") {
  VULKAN_TEST();
  const Reference ref = load_reference("llama3");
  const std::vector<int32_t> want(ref.greedy_ids.begin(), ref.greedy_ids.begin() + 12);
  for (const char* mode : {"0", "1", "2", "3"}) {
    DYNAMIC_SECTION("LLM_VULKAN_SUBMIT=" << mode) {
      ScopedEnv env("LLM_VULKAN_SUBMIT", mode);
      auto backend = make_vulkan_backend();
      REQUIRE(backend->downloads_overlap());
      auto model = Model::load(model_dir("llama3"), *backend);
      Session s(*model);
      CHECK(greedy_queued(s, ref.input_ids, 12) == want);
      // Again from a rewound sequence, behind the work of the first run.
      s.reset();
      CHECK(greedy_queued(s, ref.input_ids, 12) == want);
      // The host 2 to 4 steps behind, the steps sent that many to a submission (and
      // an uneven last batch), each run behind the last.
      int alone = 0;                              // submissions with a step a submission
      for (int ahead = 1; ahead <= 4; ahead++) {  // 4: the most it holds
        INFO("ahead " << ahead);
        s.reset();
        const int before = vulkan_submissions();
        CHECK(s.decode_greedy(ref.input_ids, 12, ahead) == want);
        const int made = vulkan_submissions() - before;
        if (ahead == 1) alone = made;
        // The 11 fed steps go `ahead` to a submission, with their transfers where those
        // go with the step.
        if (std::atoi(mode) & 2) CHECK(made == alone - 11 + (11 + ahead - 1) / ahead);
      }
      // A plain step right after: nothing is left held.
      s.reset();
      CHECK(greedy_on_device(s, ref.input_ids, 3) ==
            std::vector<int32_t>(want.begin(), want.begin() + 3));
    }
  }
}

// The same quantized weights on the CPU (as float32 values) and on Vulkan (q8_0/q4_0
// blocks, which the shaders dequantize exactly and multiply in float32).
TEST_CASE("vulkan: q8f16_1 / q4f16_1 models match the cpu on the same quantized weights",
          "[vulkan][models][quant]") {
  VULKAN_TEST();
  struct Scheme {
    const char* name;
    DType t;
  };
  auto cpu = make_cpu_backend(2);
  const std::vector<Backend*> gpus = gemv_backends();
  for (const Scheme& q : {Scheme{"q8f16_1", DType::Q8_0}, Scheme{"q4f16_1", DType::Q4_0}})
    for (Backend* gpu : gpus)
      DYNAMIC_SECTION("llama3 " << q.name << (has_int_dot_gemv(*gpu) ? " (int8 dot)" : "")) {
        const Reference ref = load_reference("llama3");
        TempDir dir;
        write_dequantized_fixture("llama3", q.t, dir.path());
        auto cm = Model::load(dir.path(), *cpu);
        auto gm = Model::load(model_dir("llama3"), *gpu, LoadOptions{q.name});
        CHECK(gm->weight_bytes() * 3 < cm->weight_bytes());
        Session cs(*cm), gs(*gm);
        CHECK(max_rel_error(gs.forward(ref.input_ids, true), cs.forward(ref.input_ids, true)) <=
              1e-4);
        cs.reset();
        gs.reset();
        const int32_t vocab = ref.vocab;
        CHECK(greedy(gs, ref.input_ids, 8, vocab) == greedy(cs, ref.input_ids, 8, vocab));
      }
}

// Decode through the integer-dot GEMVs (x in shared memory) after a prompt long enough
// for the attention to split its keys: its merge rounds its output for o, the GEMVs of
// q/k/v, gate/up and the head take the RmsNorm before them (no norm or quantize_x
// dispatch), gate/up round the activation for down, and the q/k/v GEMV does the ropes
// and the cache appends.
TEST_CASE("vulkan: integer-dot decode after a long prompt matches the cpu",
          "[vulkan][models][quant]") {
  VULKAN_TEST();
  const std::vector<Backend*> gpus = gemv_backends();
  if (gpus.size() < 2) {
    WARN("the Vulkan device has no integer dot products (or no subgroup ops): skipped");
    return;
  }
  auto cpu = make_cpu_backend(2);
  const Reference ref = load_reference("llama3");
  TempDir dir;
  write_dequantized_fixture("llama3", DType::Q4_0, dir.path());
  // The default grid (one pass at these sizes), two workgroups looping over the rows,
  // and down inside the gate/up dispatch where the device has float atomics.
  std::vector<Backend*> runs = {gpus[1], gpus[2]};
  for (int mode : {1, 2, 3, 4, 5})
    if (Backend* ffn = ffn_down_vulkan(mode)) runs.push_back(ffn);
  for (Backend* gpu : runs) DYNAMIC_SECTION(gpu->info().details) {
      const bool ffn_down = gpu->info().details.find("down inside") != std::string::npos;
      const bool next_norm = gpu->info().details.find("next norm") != std::string::npos;
      auto cm = Model::load(dir.path(), *cpu);
      auto gm = Model::load(model_dir("llama3"), *gpu, LoadOptions{"q4f16_1"});
      std::vector<int32_t> prompt;
      while (prompt.size() < 100)
        prompt.insert(prompt.end(), ref.input_ids.begin(), ref.input_ids.end());
      Session cs(*cm), gs(*gm);
      std::vector<std::string> kernels;
      gs.observe_steps(
          [&](Executor& ex, int, const std::vector<double>&) {
            for (const Program::Dispatch& d : ex.program().dispatches())
              kernels.push_back(d.kernel);
          },
          false);
      std::vector<float> c = cs.forward(prompt, false), g = gs.forward(prompt, false);
      CHECK(max_rel_error(g, c) <= 1e-4);
      kernels.clear();  // the decode steps' dispatches only
      for (int step = 0; step < 3; step++) {
        const int32_t next = static_cast<int32_t>(std::max_element(c.begin(), c.end()) - c.begin());
        c = cs.forward({next}, false);
        g = gs.forward({next}, false);
        INFO("decode step " << step);
        CHECK(max_rel_error(g, c) <= 1e-4);
      }
      auto count = [&](const std::string& prefix, const std::string& part) {
        return std::count_if(kernels.begin(), kernels.end(), [&](const std::string& k) {
          return k.rfind(prefix, 0) == 0 && k.find(part) != std::string::npos;
        });
      };
      // The fixture's heads (16 dims) are not whole blocks of 32: o's x is rounded by a
      // quantize_x (the merge rounds whole heads; tested on its own below).
      CHECK(count("attention", "+merge") > 0);
      // Only the final norm may keep its dispatch (the logits may take its input's place).
      CHECK(count("rms_norm +quantize", "") <= 3);
      // Gate/up round the activation for down: no quantize_x before it.
      CHECK(count("rms_norm + matmul_gemv_q", "x2 +silu_mul +quantize") > 0);
      CHECK((count("rms_norm + matmul_gemv_q", "+down +add") > 0) == ffn_down);
      CHECK((count("matmul_gemv_q", "[64 x 160] +add") > 0) == !ffn_down);
      CHECK(count("quantize_x", "K=160") == 0);
      CHECK(count("rms_norm + matmul_gemv_q", " x2 +silu_mul") > 0);
      // q/k/v as one dispatch, with x in shared memory their ropes and cache appends too.
      CHECK(count("rms_norm + matmul_gemv_q", " + ") > 0);
      CHECK(count("rms_norm + matmul_gemv_q", "+rope +kv_append") > 0);
      // With the next norm inside the FFN, layer 1's q/k/v read the planes it rounded.
      CHECK((count("rms_norm + matmul_gemv_q", "+down +add +rms_norm") +
                 count("parts_reduce", "+rms_norm") >
             0) == next_norm);
      CHECK((count("matmul_gemv_q", "+rope +kv_append") > 0) == next_norm);
      CHECK(count("rope", "") == 0);
      CHECK(count("kv_append", "") == 0);
    }
}

TEST_CASE("vulkan: llmcli runs models with --device vulkan", "[vulkan][cli]") {
  VULKAN_TEST();
  const CommandResult devices = run_cli({"devices"});
  REQUIRE(devices.exit_code == 0);
  CHECK(devices.out.find("vulkan:0") != std::string::npos);
  CHECK(devices.out.find("subgroup") != std::string::npos);
  const Reference ref = load_reference("llama3");
  const CommandResult gen =
      run_cli({"generate", model_dir("llama3"), "--device", "vulkan", "--token-ids",
               join_ids(ref.input_ids), "-n", "8", "--temperature", "0", "--json"});
  INFO(gen.err);
  REQUIRE(gen.exit_code == 0);
  std::vector<int32_t> want(ref.greedy_ids.begin(), ref.greedy_ids.begin() + 8);
  CHECK(gen.out.find(join_ids(want)) != std::string::npos);
}

// What a decode GEMV streams on its own (llmrt_tests "[vulkan-bench]" on a GPU; hidden):
// 32 distinct matrices in one program, independent (nothing orders them, so they may
// overlap; the planner fuses quantized ones that share x three to a dispatch, as q/k/v)
// and chained (each multiplies the output of the one before, [N, K] and [K, N]
// in turn, a barrier between them as in a model). The backend is llmcli's default one
// (integer dots, x in shared memory where the device has them); LLM_VULKAN_* knobs apply.
// GB/s are the weights' bytes as stored.
TEST_CASE("vulkan: GEMV bandwidth (q4_0, q8_0, f16), independent and chained",
          "[.][vulkan-bench]") {
  if (!have_vulkan()) {
    WARN("no Vulkan device: skipped");
    return;
  }
  auto be = make_vulkan_backend();
  if (be->info().type == "cpu") {
    // ctest runs hidden tests by name: minutes of shaders on the CPU, measuring nothing.
    WARN("a CPU Vulkan driver (" << be->info().name << "): skipped");
    return;
  }
  std::printf("device: %s (%s)\n", be->info().name.c_str(), be->info().details.c_str());
  const std::pair<int64_t, int64_t> shapes[] = {
      {4096, 4096}, {11008, 4096}, {2048, 2048}, {8192, 2048}};
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::F16})
    for (const auto& [N, K] : shapes) {
      std::mt19937 rng(5);
      auto blocks = [&](int64_t rows, int64_t cols) {
        return t == DType::F16 ? encode(DType::F16, uniform(rows * cols, rng, -0.1f, 0.1f))
                               : quantize_random(t, rows, cols, rng).blocks;
      };
      const Bytes w = blocks(N, K), w_back = blocks(K, N);
      const double alone = time_matmuls(*be, t, w, N, K, 1, 32, 20);
      const double chained = time_matmuls(*be, t, w, N, K, 1, 32, 20, &w_back);
      std::printf(
          "GEMV | %s [%lld x %lld] | independent %.2f us, %.0f GB/s | chained with [%lld x "
          "%lld] %.2f us, %.0f GB/s\n",
          dtype_name(t), (long long)N, (long long)K, alone * 1e6, w.size() / alone / 1e9,
          (long long)K, (long long)N, chained * 1e6, w.size() / chained / 1e9);
      std::fflush(stdout);
    }
}

#else  // !LLM_HAVE_VULKAN

TEST_CASE("vulkan backend", "[vulkan]") { WARN("built without Vulkan (LLM_VULKAN=OFF): skipped"); }

#endif
