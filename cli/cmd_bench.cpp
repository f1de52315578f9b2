// llmcli bench MODEL -p 512 -n 128 [-d N]: prefill and decode tokens/s in the manner
// of llama-bench (separate pp and tg tests on a fresh sequence, random tokens, a
// warm-up run, mean ± std over -r runs); with --profile, then the time per kernel of
// both steps.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/common.h"
#include "core/engine/engine.h"
#include "core/engine/sampler.h"
#include "core/engine/session.h"
#include "core/error.h"
#include "core/trace.h"

namespace llm::cli {

namespace {

struct BenchOptions {
  ModelOptions model;
  int n_prompt = 512;
  int n_gen = 128;
  int depth = 0;  // tokens in the context before each test (-d)
  int repetitions = 3;
  std::string batch = "1";
  bool json = false;
  bool profile = false;
};

struct Stat {
  double mean = 0, std = 0;
};

Stat stats(const std::vector<double>& v) {
  Stat s;
  for (double x : v) s.mean += x;
  s.mean /= v.size();
  for (double x : v) s.std += (x - s.mean) * (x - s.mean);
  s.std = v.size() > 1 ? std::sqrt(s.std / (v.size() - 1)) : 0;
  return s;
}

void print_profile(const StepProfile& p, double bandwidth_gbs) {
  if (p.runs == 0) return;
  int calls = 0;
  for (const KernelStat& k : p.kernels) calls += k.calls;
  std::printf("\n%s: %.3f ms per step (%d dispatches, mean of %d runs)\n", p.step.c_str(),
              p.step_ms, calls, p.runs);
  std::printf(
      "| kernel | ops | ms | calls | avg µs | %% step | MB | GB/s | %% peak | GFLOP | TFLOP/s |\n");
  std::printf("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (const KernelStat& k : p.kernels) {
    const double s = k.ms / 1e3;
    const double gbs = s > 0 ? k.bytes / s / 1e9 : 0;
    char peak[32] = "-", flops[32] = "-", tflops[32] = "-";
    if (bandwidth_gbs > 0) std::snprintf(peak, sizeof(peak), "%.1f", 100 * gbs / bandwidth_gbs);
    if (k.flops > 0) {
      std::snprintf(flops, sizeof(flops), "%.4f", k.flops / 1e9);
      std::snprintf(tflops, sizeof(tflops), "%.3f", s > 0 ? k.flops / s / 1e12 : 0.0);
    }
    std::printf("| %s | %s | %.3f | %d | %.1f | %.1f | %.3f | %.1f | %s | %s | %s |\n",
                k.kernel.c_str(), k.ops.c_str(), k.ms, k.calls, k.calls ? k.ms * 1e3 / k.calls : 0,
                p.step_ms > 0 ? 100 * k.ms / p.step_ms : 0, k.bytes / 1e6, gbs, peak, flops,
                tflops);
  }
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// --batch B1,B2,...: B sequences of -p random prompt tokens and -n greedy tokens
// each, submitted together to the engine (continuous batching), like
// llama-batched-bench: aggregate prefill tokens/s until every sequence has its first
// token, then aggregate decode tokens/s until the last one finishes.
void run_batched(const BenchOptions& o) {
  std::vector<int> batches;
  for (int32_t b : parse_int_list(o.batch, "--batch", "batch size")) {
    if (b < 1) fail("--batch: sizes must be positive, got %d", b);
    batches.push_back(b);
  }
  if (o.n_prompt < 1 || o.n_gen < 2) fail("--batch needs -p >= 1 and -n >= 2");
  if (o.profile) fail("--profile runs with --batch 1 only");
  if (o.model.context_size > 0 && o.model.context_size < o.n_prompt + o.n_gen)
    fail("-p %d and -n %d need a context of %d tokens; --context-size is %d", o.n_prompt, o.n_gen,
         o.n_prompt + o.n_gen, o.model.context_size);
  LoadedModel lm = load_model(o.model);
  const ModelConfig& cfg = lm.model->config();
  const int max_b = *std::max_element(batches.begin(), batches.end());
  EngineOptions eo;
  eo.context_size = o.model.context_size > 0 ? o.model.context_size : o.n_prompt + o.n_gen + 1;
  eo.max_seqs = max_b;
  eo.kv_dtype = kv_cache_dtype(o.model);
  eo.prefill_chunk_size = std::max(512, max_b);
  eo.kv_cache_tokens = int64_t(max_b) * eo.context_size;
  Engine engine(*lm.model, nullptr, eo);
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> tok(0, cfg.vocab_size - 1);
  nlohmann::json results = nlohmann::json::array();
  for (int B : batches) {
    std::vector<double> pp, tg;
    for (int rep = 0; rep <= o.repetitions; rep++) {  // run 0 warms up
      using Clock = std::chrono::steady_clock;
      std::vector<std::shared_ptr<RequestStream>> streams;
      const Clock::time_point t0 = Clock::now();
      for (int b = 0; b < B; b++) {
        GenerationRequest r;
        r.prompt.resize(o.n_prompt);
        for (int32_t& t : r.prompt) t = tok(rng);
        r.max_tokens = o.n_gen;
        r.ignore_eos = true;
        streams.push_back(engine.submit(std::move(r)));
      }
      // Timed by when the engine queued each stream's events (this thread may read them
      // late): prefill until every stream has its first token, decode until the last.
      Clock::time_point all_first{}, t1{};
      for (auto& st : streams) {
        int tokens = 0;
        FinishReason finish = FinishReason::None;
        while (finish == FinishReason::None) {
          const GenerationEvent ev = st->next();
          if (tokens == 0 && !ev.tokens.empty()) all_first = std::max(all_first, ev.queued_at);
          if (!ev.tokens.empty()) t1 = std::max(t1, ev.queued_at);
          tokens += static_cast<int>(ev.tokens.size());
          finish = ev.finish;
          if (finish == FinishReason::Error) fail("batch %d: %s", B, ev.error.c_str());
        }
        if (tokens != o.n_gen)
          fail("batch %d: a sequence stopped after %d of %d tokens (%s)", B, tokens, o.n_gen,
               finish_reason_name(finish));
      }
      if (rep == 0) continue;
      const double prefill_s = std::chrono::duration<double>(all_first - t0).count();
      const double decode_s = std::chrono::duration<double>(t1 - all_first).count();
      pp.push_back(double(B) * o.n_prompt / prefill_s);
      tg.push_back(double(B) * (o.n_gen - 1) / decode_s);
    }
    const Stat p = stats(pp), t = stats(tg);
    results.push_back({{"batch", B},
                       {"pp_tokens_per_second", p.mean},
                       {"tg_tokens_per_second", t.mean},
                       {"tg_stddev", t.std}});
  }
  const DeviceInfo dev = lm.model->backend().info();
  if (o.json) {
    std::printf("%s\n",
                nlohmann::json{{"model", o.model.model}, {"device", dev.id}, {"results", results}}
                    .dump(2)
                    .c_str());
    return;
  }
  std::printf("| model | device | batch | pp%d t/s (all) | tg%d t/s (all) |\n", o.n_prompt,
              o.n_gen);
  std::printf("| --- | --- | ---: | ---: | ---: |\n");
  for (const auto& r : results)
    std::printf("| %s | %s | %d | %.1f | %.1f ± %.1f |\n", o.model.model.c_str(), dev.id.c_str(),
                r["batch"].get<int>(), r["pp_tokens_per_second"].get<double>(),
                r["tg_tokens_per_second"].get<double>(), r["tg_stddev"].get<double>());
}

// One of llama-bench's tests: each run starts a fresh sequence, prefills `depth` random
// tokens untimed, then times a prefill of n_prompt tokens (pp) or n_gen greedy decode
// steps (tg); run 0 warms up (graph building, allocation, CUDA graph capture). The test
// has a session of its own whose context is sized to it (depth + its tokens), as
// llama-bench sizes each test's context, unless --context-size says otherwise.
struct BenchTest {
  bool decode = false;
  int n = 0;  // tokens prefilled (pp) or generated (tg)
  std::vector<double> samples;
};

void run_test(const BenchOptions& o, Model& model, const std::vector<int32_t>& depth_tokens,
              const std::vector<int32_t>& prompt, std::mt19937& rng, BenchTest& test, Profiler& pre,
              Profiler& dec, std::string& method) {
  const int needed = o.depth + test.n;
  if (o.model.context_size > 0 && o.model.context_size < needed)
    fail("%s%d at depth %d needs a context of %d tokens; --context-size is %d",
         test.decode ? "tg" : "pp", test.n, o.depth, needed, o.model.context_size);
  SessionOptions so;
  so.context_size = o.model.context_size > 0 ? o.model.context_size : needed;
  so.prefill_chunk_size = std::max({1, o.n_prompt, o.depth});
  so.kv_dtype = kv_cache_dtype(o.model);
  Session session(model, so);
  Backend& be = model.backend();
  std::uniform_int_distribution<int32_t> tok(0, model.config().vocab_size - 1);
  auto start = [&] {
    session.reset();
    if (!depth_tokens.empty()) session.forward(depth_tokens, false);
  };
  for (int rep = 0; rep <= o.repetitions; rep++) {
    start();
    const int32_t first = tok(rng);
    be.synchronize();
    const double t0 = now_s();
    if (test.decode) {
      // Greedy decoding with each token fed to the next step on the device and read
      // while later steps run (Session::decode_greedy): every id still reaches the host.
      session.decode_greedy({first}, test.n);
    } else {
      session.forward(prompt, false);
    }
    be.synchronize();
    if (rep > 0) test.samples.push_back(test.n / (now_s() - t0));
  }
  if (!o.profile) return;
  // Profiled runs come after the timed ones and are not the speed above: recording
  // costs time (how the backend measures is printed with the tables). The depth's
  // prefill is not profiled.
  bool on = false, measured = true;
  session.observe_steps(
      [&](Executor& ex, int n_past, const std::vector<double>& ms) {
        if (!on) return;
        if (ms.empty()) {
          measured = false;
          return;
        }
        method = ex.program().profile_method();
        const char* step = test.decode ? "decode" : "prefill";
        (test.decode ? dec : pre).add(trace_step(ex, step, n_past), ms);
      },
      /*profile=*/true);
  for (int rep = 0; rep < o.repetitions && measured; rep++) {
    on = false;
    start();
    on = true;
    if (test.decode) {
      int32_t next = tok(rng);
      for (int i = 0; i < test.n; i++) next = session.forward_greedy({next});
    } else {
      session.forward_greedy(prompt);
    }
  }
  session.observe_steps(nullptr, false);
  if (!measured) fail("--profile: device %s cannot time its kernels", be.info().id.c_str());
}

void run_bench(const BenchOptions& o) {
  if (o.n_prompt < 0 || o.n_gen < 0 || (o.n_prompt == 0 && o.n_gen == 0))
    fail("-p and -n must be >= 0 and not both 0");
  if (o.depth < 0) fail("-d must be >= 0");
  if (o.repetitions <= 0) fail("-r must be positive");
  if (o.batch != "1") {
    if (o.depth > 0) fail("-d runs with --batch 1 only");
    return run_batched(o);
  }
  LoadedModel lm = load_model(o.model);
  const ModelConfig& cfg = lm.model->config();
  Backend& be = lm.model->backend();

  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> tok(0, cfg.vocab_size - 1);
  auto random_tokens = [&](int n) {
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (int32_t& t : v) t = tok(rng);
    return v;
  };
  const std::vector<int32_t> depth_tokens = random_tokens(o.depth);
  const std::vector<int32_t> prompt = random_tokens(o.n_prompt);

  Profiler pre("prefill"), dec("decode");
  std::string method;
  std::vector<BenchTest> tests;
  if (o.n_prompt > 0) tests.push_back({false, o.n_prompt, {}});
  if (o.n_gen > 0) tests.push_back({true, o.n_gen, {}});
  for (BenchTest& t : tests) run_test(o, *lm.model, depth_tokens, prompt, rng, t, pre, dec, method);

  const DeviceInfo dev = be.info();
  const std::string quant = o.model.quantization.empty() ? "as stored" : o.model.quantization;
  nlohmann::json results = nlohmann::json::array();
  for (const BenchTest& t : tests) {
    const Stat s = stats(t.samples);
    // llama-bench's names: pp512, tg128, tg128 @ d4096.
    std::string name = (t.decode ? "tg" : "pp") + std::to_string(t.n);
    if (o.depth > 0) name += " @ d" + std::to_string(o.depth);
    results.push_back({{"test", name},
                       {"depth", o.depth},
                       {"tokens_per_second", s.mean},
                       {"stddev", s.std},
                       {"samples", t.samples}});
  }
  if (o.json) {
    nlohmann::json j{{"model", o.model.model},
                     {"device", dev.id},
                     {"device_name", dev.name},
                     {"quantization", quant},
                     {"weight_bytes", lm.model->weight_bytes()},
                     {"results", results}};
    if (o.profile)
      j["profile"] = {
          {"bandwidth_gbs", dev.bandwidth_gbs},
          {"method", method},
          {"steps",
           {to_json(pre.result(), dev.bandwidth_gbs), to_json(dec.result(), dev.bandwidth_gbs)}}};
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("| model | weights | quant | device | test | t/s |\n");
  std::printf("| --- | ---: | --- | --- | ---: | ---: |\n");
  for (const auto& r : results)
    std::printf("| %s | %s | %s | %s (%s) | %s | %.2f ± %.2f |\n", o.model.model.c_str(),
                format_bytes(lm.model->weight_bytes()).c_str(), quant.c_str(), dev.id.c_str(),
                dev.name.c_str(), r["test"].get<std::string>().c_str(),
                r["tokens_per_second"].get<double>(), r["stddev"].get<double>());
  if (o.profile) {
    if (!method.empty()) std::printf("\nTimed by %s.\n", method.c_str());
    print_profile(pre.result(), dev.bandwidth_gbs);
    print_profile(dec.result(), dev.bandwidth_gbs);
  }
}

}  // namespace

void register_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Measure prefill and decode speed (llama-bench style)");
  auto o = std::make_shared<BenchOptions>();
  add_model_options(cmd, o->model);
  cmd->add_option("-p,--n-prompt", o->n_prompt, "Prompt tokens (prefill test)")
      ->capture_default_str();
  cmd->add_option("-n,--n-gen", o->n_gen, "Generated tokens (decode test)")->capture_default_str();
  cmd->add_option("-d,--depth", o->depth,
                  "Tokens already in the context before each test (prefilled, not timed), "
                  "as llama-bench's -d")
      ->capture_default_str();
  cmd->add_option("-r,--repetitions", o->repetitions, "Timed runs after one warm-up")
      ->capture_default_str();
  cmd->add_option("--batch", o->batch,
                  "Concurrent sequences, e.g. 1,8,32,64: through the batching engine "
                  "(aggregate tokens/s, llama-batched-bench style)")
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "Print JSON");
  cmd->add_flag("--profile", o->profile,
                "Then time each kernel of the prefill and decode steps (-r more runs)");
  cmd->callback([o]() { run_bench(*o); });
}

}  // namespace llm::cli
