// llmrt-vk-probe: what dependent dispatches, shared-memory changes, grid-wide barriers
// and weight streams cost on a Vulkan device, through the backend's own context and
// program replay (shaders/dispatch_probe.comp). Times are host wall-clock over many
// replays, differenced between two sizes, so fixed submission costs cancel.
// "Dependent" dispatches read and write one region, so make_program puts a barrier
// before each; "independent" ones have no regions, no barriers, and may overlap.
//
//   llmrt-vk-probe [vulkan device index] [gemv: the GEMV-shaped reads only] [zeros]
//
// The weights are pseudo-random words, as quantized weights are; "zeros" fills them with
// zeros instead (GPUs may read such memory faster than real weights, e.g. compressed).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backends/vulkan/vulkan_context.h"
#include "backends/vulkan/vulkan_program.h"

using namespace llm;
using namespace llm::vk;

namespace {

struct Probe {
  std::shared_ptr<Context> ctx;
  std::shared_ptr<Buffer> sync, weights, out;
  uint32_t units = 0;

  // A grid of 4 workgroups of 256 a multiprocessor.
  uint32_t wave() const { return units * 4; }

  // Microseconds per replay of the program, over n replays after a warm-up.
  double time_runs(Program& prog, int n) {
    prog.run();
    ctx->wait_idle();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; i++) prog.run();
    ctx->wait_idle();
    const auto t1 = std::chrono::steady_clock::now();
    return std::chrono::duration<double, std::micro>(t1 - t0).count() / n;
  }

  // pattern, tpr, threads, coherent: mode 7's layout, threads a row, workgroup size and
  // `coherent` weights (the shader's PATTERN, TPR, constant 8 and COHERENT).
  Recorded dispatch(bool dependent, int mode, uint32_t groups, uint32_t rounds, uint32_t base = 0,
                    int smem = 1, int tag = 0, int loads = 1, int prefetch = 0, int pattern = 0,
                    int tpr = 16, int threads = 256, int coherent = 0) {
    Recorded r;
    if (dependent) r.reads = r.writes = {Region{out.get(), 0, 65536}};
    r.pipeline =
        &ctx->pipeline("dispatch_probe", 4,
                       {mode, smem, tag, loads, prefetch, pattern, tpr, 1, threads, coherent});
    r.bindings = {{sync.get(), 0, 256},
                  {weights.get(), 0, weights->size()},
                  {out.get(), 0, 65536},
                  {weights.get(), 0, size_t{16} << 20}};
    r.push[0] = rounds;
    r.push[1] = base;
    r.push_words = 2;
    r.groups_x = groups;
    r.label = "probe";
    return r;
  }

  // The shader's counts (outw[16]: words read wrong, outw[17]: waits given up), then
  // zeroed for the next measurement.
  std::pair<uint32_t, uint32_t> take_counts() {
    uint32_t c[2] = {0, 0};
    ctx->copy_to_host(*out, 16 * 4, c, sizeof c);
    ctx->fill_zero(*out, 16 * 4, sizeof c);
    return {c[0], c[1]};
  }

  double run(std::vector<Recorded> ds, int n) {
    auto prog = make_program(ctx, std::move(ds), {});
    return time_runs(*prog, n);
  }
};

// What one dispatch costs, dependent or not, by grid and shared-memory size.
void print_dispatch_costs(Probe& pr) {
  std::printf("\nA dispatch, per dispatch: dependent (a barrier before each) / independent\n");
  struct Shape {
    const char* what;
    uint32_t groups;
    int smem_a, smem_b, tag_b;
  };
  const Shape shapes[] = {
      {"one word a workgroup, 64 workgroups", 64, 1, 1, 0},
      {"one word a workgroup, 4 a unit", pr.wave(), 1, 1, 0},
      {"two pipelines alternating, 4 a unit", pr.wave(), 1, 1, 1},
      {"8 KB shared memory, 4 a unit", pr.wave(), 2048, 2048, 0},
      {"40 KB shared memory, 4 a unit", pr.wave(), 10240, 10240, 0},
      {"8 KB / 16 KB shared memory alternating", pr.wave(), 2048, 4096, 1},
      {"8 KB / 40 KB shared memory alternating", pr.wave(), 2048, 10240, 1},
  };
  for (const Shape& s : shapes) {
    double per[2];
    for (int dep = 1; dep >= 0; dep--) {
      double us[2];
      for (int k = 0; k < 2; k++) {
        std::vector<Recorded> ds;
        const int n = k ? 402 : 2;
        for (int i = 0; i < n; i++)
          ds.push_back(i % 2 ? pr.dispatch(dep, 3, s.groups, 0, 0, s.smem_b, s.tag_b)
                             : pr.dispatch(dep, 3, s.groups, 0, 0, s.smem_a, 0));
        us[k] = pr.run(std::move(ds), 50);
      }
      per[dep] = (us[1] - us[0]) / 400;
    }
    std::printf("  %-42s %6.3f / %6.3f us\n", s.what, per[1], per[0]);
  }
}

// What a grid-wide barrier (an atomic counter) costs inside one dispatch.
void print_grid_barrier_costs(Probe& pr) {
  std::printf("\nA grid-wide barrier inside one dispatch (atomic counter), per barrier:\n");
  for (uint32_t per_unit : {1u, 2u, 4u}) {
    const uint32_t g = pr.units * per_unit;
    pr.take_counts();
    const double one = pr.run({pr.dispatch(false, 1, g, 1)}, 20);
    const double many = pr.run({pr.dispatch(false, 1, g, 401)}, 20);
    std::printf("  %4u workgroups (%u a unit)                 %6.3f us (%u waits given up)\n", g,
                per_unit, (many - one) / 400, pr.take_counts().second);
  }
}

// Whether neighbours' words read after a grid-wide barrier are the ones written.
void print_barrier_coherence(Probe& pr) {
  std::printf("\nNeighbours' words read after a grid-wide barrier (should all match)\n");
  for (int coherent : {0, 1}) {
    const uint32_t g = pr.wave(), rounds = 101;
    const int replays = 10;  // and a warm-up each
    pr.take_counts();
    const double one = pr.run({pr.dispatch(false, 6, g, 1, 0, 1, 0, 1, coherent)}, replays);
    const double many = pr.run({pr.dispatch(false, 6, g, rounds, 0, 1, 0, 1, coherent)}, replays);
    const auto [wrong, given_up] = pr.take_counts();
    const double reads = (replays + 1.0) * (1 + rounds) * g * 256;
    std::printf("  %s loads: %u of %.0f words wrong, %u waits given up; %.3f us a barrier\n",
                coherent ? "coherent" : "plain", wrong, reads, given_up,
                (many - one) / (rounds - 1));
  }
}

// Streaming weights in phases: a dispatch a phase against one dispatch with grid barriers.
void print_weight_streams(Probe& pr) {
  std::printf("\nStreaming 64 phases of weights (%u workgroups): per phase\n", pr.wave());
  for (int loads : {1, 4, 8}) {
    const uint32_t phases = 64;
    const double mb = double(pr.wave()) * 256 * 16 * loads / 1e6;
    if (mb * 1e6 * phases > double(pr.weights->size())) continue;
    double per_dispatch[2];
    for (int dep = 0; dep < 2; dep++) {
      std::vector<Recorded> ds;
      for (uint32_t i = 0; i < phases; i++)
        ds.push_back(pr.dispatch(dep, 4, pr.wave(), 0, i, 1, 0, loads));
      per_dispatch[dep] = pr.run(std::move(ds), 20) / phases;
    }
    double synced[2];
    pr.take_counts();
    for (int pf : {0, 1})
      synced[pf] =
          pr.run({pr.dispatch(false, 5, pr.wave(), phases, 0, 1, 0, loads, pf)}, 20) / phases;
    std::printf(
        "  %6.2f MB a phase: a dependent dispatch each %6.2f us (%4.0f GB/s), independent "
        "%6.2f us; one dispatch with grid barriers %6.2f us, loads issued before the "
        "barrier %6.2f us (%u waits given up)\n",
        mb, per_dispatch[1], mb * 1e3 / per_dispatch[1], per_dispatch[0], synced[0], synced[1],
        pr.take_counts().second);
  }
}

// What a dispatch of MODE 7 (a GEMV's reads) takes: microseconds, its workgroups and its
// bytes (0 where 16 of them do not fit the weights buffer: nothing was timed).
struct GemvReads {
  double us = 0;
  uint32_t workgroups = 0;
  size_t bytes = 0;
};

// 16 dependent dispatches of MODE 7, each over its own weights (no L2 hits between them).
GemvReads time_gemv_reads(Probe& pr, uint32_t total_rows, uint32_t rows, uint32_t iters,
                          uint32_t tpr, uint32_t threads, int pattern, int prefetch, int coherent) {
  const uint32_t groups = threads / tpr;
  GemvReads r;
  r.workgroups = (total_rows + groups * rows - 1) / (groups * rows);
  const size_t units = size_t{r.workgroups} * threads * rows * iters;  // 16-byte units
  const size_t bytes = units * 16 + units * 2;
  if (bytes * 16 > pr.weights->size()) return r;
  std::vector<Recorded> ds;
  for (uint32_t i = 0; i < 16; i++) {
    // 16-byte aligned regions, quants then scales, one after another.
    const uint32_t base = static_cast<uint32_t>(i * ((bytes + 15) / 16));
    ds.push_back(pr.dispatch(true, 7, r.workgroups, iters, base, 1, 0, static_cast<int>(rows),
                             prefetch, pattern, static_cast<int>(tpr), static_cast<int>(threads),
                             coherent));
  }
  r.us = pr.run(std::move(ds), 20) / 16;
  r.bytes = bytes;
  return r;
}

// A GEMV's reads by layout and by loads in flight (workgroups of 256).
void print_gemv_reads(Probe& pr) {
  std::printf("\nGEMV-shaped reads, 16 dependent dispatches: per dispatch\n");
  struct GemvShapeProbe {
    const char* what;
    uint32_t tpr, rows, iters, total_rows;
  };
  const GemvShapeProbe gshapes[] = {
      {"gate/up 2 x [11008 x 4096]", 16, 4, 8, 22016},
      {"q/k/v 3 x [4096 x 4096]", 32, 2, 4, 12288},
      {"down [4096 x 11008] (K rounded to 10,240)", 64, 2, 5, 4096},
      {"o [4096 x 4096]", 32, 2, 4, 4096},
  };
  for (const GemvShapeProbe& gs : gshapes)
    for (int pattern : {0, 1})
      for (int pf : {0, 1}) {
        const GemvReads r =
            time_gemv_reads(pr, gs.total_rows, gs.rows, gs.iters, gs.tpr, 256, pattern, pf, 0);
        if (!r.bytes) continue;
        std::printf("  %-42s %-10s %-9s %7.2f us %5.0f GB/s (%u workgroups, %.1f MB)\n", gs.what,
                    pattern ? "tile-major" : "row-major", pf ? "prefetch" : "plain", r.us,
                    r.bytes / r.us / 1e3, r.workgroups, r.bytes / 1e6);
      }
}

// The GEMVs' reads in the backend's launch shapes (gate/up in workgroups of 256, 512 and
// 1,024 threads, its four rows a group from one matrix or two, gate's and up's, as its
// tasks read them; or each row's scales at its start, the backend's split rows), through
// plain loads and through `coherent` ones as the backend's.
void print_gemv_launch_shapes(Probe& pr) {
  std::printf(
      "\nGEMV-shaped reads by launch shape, 16 dependent dispatches: per dispatch, "
      "plain / coherent loads\n");
  struct LaunchShape {
    const char* what;
    uint32_t tpr, rows, iters, total_rows, threads;
    int pattern;
  };
  const LaunchShape shapes[] = {
      {"gate/up, one matrix", 16, 4, 8, 22016, 256, 0},
      {"gate/up, one matrix", 16, 4, 8, 22016, 512, 0},
      {"gate/up, one matrix", 16, 4, 8, 22016, 1024, 0},
      {"gate/up, two matrices", 16, 4, 8, 22016, 256, 2},
      {"gate/up, two matrices", 16, 4, 8, 22016, 512, 2},
      {"gate/up, two matrices", 16, 4, 8, 22016, 1024, 2},
      {"q/k/v", 32, 2, 4, 12288, 256, 0},
      {"q/k/v", 32, 2, 4, 12288, 1024, 0},
      {"down (K rounded to 10,240)", 64, 2, 5, 4096, 128, 0},
      {"o", 32, 2, 4, 4096, 1024, 0},
      {"gate/up, split rows", 16, 4, 8, 22016, 512, 3},
      {"q/k/v, split rows", 32, 2, 4, 12288, 1024, 3},
      {"down, split rows", 64, 2, 5, 4096, 128, 3},
      {"o, split rows", 32, 2, 4, 4096, 1024, 3},
  };
  for (const LaunchShape& ls : shapes) {
    GemvReads r[2];
    for (int coherent : {0, 1})
      r[coherent] = time_gemv_reads(pr, ls.total_rows, ls.rows, ls.iters, ls.tpr, ls.threads,
                                    ls.pattern, 0, coherent);
    if (!r[0].bytes) continue;
    std::printf(
        "  %-27s %4u threads  %7.2f / %7.2f us  %5.0f / %5.0f GB/s (%u workgroups, "
        "%.1f MB)\n",
        ls.what, ls.threads, r[0].us, r[1].us, r[0].bytes / r[0].us / 1e3,
        r[1].bytes / r[1].us / 1e3, r[0].workgroups, r[0].bytes / 1e6);
  }
}

// Fills buf with pseudo-random words (xorshift), a chunk at a time through the host.
void fill_random(Context& ctx, Buffer& buf, size_t bytes) {
  const size_t chunk = size_t{64} << 20;
  std::vector<uint32_t> words(chunk / 4);
  uint32_t x = 2463534242u;
  for (size_t off = 0; off < bytes; off += chunk) {
    const size_t n = std::min(chunk, bytes - off);
    for (size_t i = 0; i < n / 4; i++) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      words[i] = x;
    }
    ctx.copy_to_device(buf, off, words.data(), n);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int index = argc > 1 ? std::atoi(argv[1]) : 0;
    auto instance = std::make_unique<Instance>(false);
    const std::vector<VkPhysicalDevice> devs = instance->physical_devices();
    if (index < 0 || index >= static_cast<int>(devs.size())) {
      std::fprintf(stderr, "llmrt-vk-probe: no Vulkan device %d\n", index);
      return 1;
    }
    const PhysicalInfo ph = describe(*instance, devs[index]);
    Probe pr;
    pr.ctx = std::make_shared<Context>(std::move(instance), ph, index);
    pr.units = ph.compute_units ? ph.compute_units : 4;
    std::printf("%s (%u compute units)\n", ph.props.deviceName, pr.units);
    const size_t weight_bytes = size_t{1200} << 20;
    pr.sync = std::make_shared<Buffer>(*pr.ctx, pr.ctx, 256, "counters");
    pr.weights = std::make_shared<Buffer>(*pr.ctx, pr.ctx, weight_bytes, "weights");
    pr.out = std::make_shared<Buffer>(*pr.ctx, pr.ctx, 65536, "out");
    pr.ctx->fill_zero(*pr.sync, 0, 256);
    bool gemv_only = false, zeros = false;
    for (int i = 2; i < argc; i++) {
      const std::string a = argv[i];
      if (a == "gemv") {
        gemv_only = true;
      } else if (a == "zeros") {
        zeros = true;
      } else {
        std::fprintf(stderr, "llmrt-vk-probe: unknown argument '%s'\n", a.c_str());
        return 1;
      }
    }
    if (zeros)
      pr.ctx->fill_zero(*pr.weights, 0, weight_bytes);
    else
      fill_random(*pr.ctx, *pr.weights, weight_bytes);
    std::printf("weights: %s\n", zeros ? "zeros" : "pseudo-random words");
    if (!gemv_only) {
      print_dispatch_costs(pr);
      print_grid_barrier_costs(pr);
      print_barrier_coherence(pr);
      print_weight_streams(pr);
    }
    print_gemv_reads(pr);
    print_gemv_launch_shapes(pr);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llmrt-vk-probe: %s\n", e.what());
    return 1;
  }
}
