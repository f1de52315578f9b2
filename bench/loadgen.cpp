// llmrt-loadgen: N concurrent streaming clients against an OpenAI-compatible
// server for a duration; reports requests/s, output tokens/s, time to first token
// and per-token latency (p50/p99).
//
//   llmrt-loadgen --url http://127.0.0.1:8000 -c 32 -d 30 --max-tokens 128
#include <httplib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Samples {
  std::mutex mu;
  std::vector<double> ttft, token_gap;
  uint64_t requests = 0, failed = 0, tokens = 0;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"llmrt-loadgen: concurrent streaming clients for an OpenAI-compatible server"};
  std::string url = "http://127.0.0.1:8000", api_key,
              prompt = "Write a long story about a lighthouse.";
  int concurrency = 8, max_tokens = 128;
  double temperature = 0.8;
  double duration = 30;
  bool chat = false, json_out = false;
  app.add_option("--url", url, "Server base URL")->capture_default_str();
  app.add_option("-c,--concurrency", concurrency, "Concurrent streaming clients")
      ->capture_default_str();
  app.add_option("-d,--duration", duration, "Seconds to run")->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "max_tokens per request")->capture_default_str();
  app.add_option("--prompt", prompt, "Prompt text (each client appends its number)");
  app.add_option("--api-key", api_key, "Bearer token");
  app.add_option("--temperature", temperature, "Sampling temperature (0: greedy)")
      ->capture_default_str();
  app.add_flag("--chat", chat, "Use /v1/chat/completions instead of /v1/completions");
  app.add_flag("--json", json_out, "Print the report as JSON");
  CLI11_PARSE(app, argc, argv);
  if (concurrency < 1 || duration <= 0 || max_tokens < 1) {
    std::fprintf(stderr, "error: -c, -d and --max-tokens must be positive\n");
    return 1;
  }

  Samples s;
  const auto start = Clock::now();
  const auto end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(duration));
  std::vector<std::thread> clients;
  for (int c = 0; c < concurrency; c++) {
    clients.emplace_back([&, c] {
      httplib::Client cli(url);
      cli.set_read_timeout(600, 0);
      if (!api_key.empty()) cli.set_bearer_token_auth(api_key);
      for (int n = 0; Clock::now() < end; n++) {
        nlohmann::json body = {{"max_tokens", max_tokens},
                               {"stream", true},
                               {"temperature", temperature},
                               {"seed", c * 100003 + n}};
        const std::string text = prompt + " (" + std::to_string(c) + "." + std::to_string(n) + ")";
        if (chat)
          body["messages"] = {{{"role", "user"}, {"content", text}}};
        else
          body["prompt"] = text;
        const auto t0 = Clock::now();
        auto last = t0;
        bool first = true;
        std::vector<double> gaps;
        double ttft = 0;
        uint64_t tokens = 0;
        std::string pending;
        httplib::Request req;
        req.method = "POST";
        req.path = chat ? "/v1/chat/completions" : "/v1/completions";
        req.body = body.dump();
        req.set_header("Content-Type", "application/json");
        if (!api_key.empty()) req.set_header("Authorization", "Bearer " + api_key);
        req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
          pending.append(data, len);
          size_t pos;
          while ((pos = pending.find("\n\n")) != std::string::npos) {
            const std::string ev = pending.substr(0, pos);
            pending.erase(0, pos + 2);
            if (ev.rfind("data: {", 0) != 0 || ev.find("\"choices\":[]") != std::string::npos)
              continue;
            // Each chunk with text is at least one token.
            if (ev.find(chat ? "\"content\":\"" : "\"text\":\"") == std::string::npos) continue;
            const auto now = Clock::now();
            if (first)
              ttft = std::chrono::duration<double>(now - t0).count();
            else
              gaps.push_back(std::chrono::duration<double>(now - last).count());
            first = false;
            last = now;
            tokens++;
          }
          return true;
        };
        auto res = cli.send(req);
        std::lock_guard<std::mutex> lock(s.mu);
        if (!res || res->status != 200 || first) {
          s.failed++;
          continue;
        }
        s.requests++;
        s.tokens += tokens;
        s.ttft.push_back(ttft);
        s.token_gap.insert(s.token_gap.end(), gaps.begin(), gaps.end());
      }
    });
  }
  for (auto& t : clients) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  nlohmann::json r = {{"concurrency", concurrency},
                      {"seconds", elapsed},
                      {"requests", s.requests},
                      {"failed", s.failed},
                      {"requests_per_s", s.requests / elapsed},
                      {"output_tokens_per_s", s.tokens / elapsed},
                      {"ttft_p50_ms", 1e3 * percentile(s.ttft, 0.5)},
                      {"ttft_p99_ms", 1e3 * percentile(s.ttft, 0.99)},
                      {"token_latency_p50_ms", 1e3 * percentile(s.token_gap, 0.5)},
                      {"token_latency_p99_ms", 1e3 * percentile(s.token_gap, 0.99)}};
  if (json_out) {
    std::printf("%s\n", r.dump().c_str());
  } else {
    std::printf("clients %d, %.1f s: %llu requests (%llu failed), %.2f req/s, %.1f output tok/s\n",
                concurrency, elapsed, static_cast<unsigned long long>(s.requests),
                static_cast<unsigned long long>(s.failed), s.requests / elapsed,
                s.tokens / elapsed);
    std::printf(
        "time to first token p50 %.1f ms, p99 %.1f ms; per token p50 %.2f ms, p99 %.2f ms\n",
        r["ttft_p50_ms"].get<double>(), r["ttft_p99_ms"].get<double>(),
        r["token_latency_p50_ms"].get<double>(), r["token_latency_p99_ms"].get<double>());
  }
  return s.requests > 0 ? 0 : 1;
}
