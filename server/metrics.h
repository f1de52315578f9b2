// Server metrics in Prometheus' text format (GET /metrics): request counters by
// route and status, token counters, and latency histograms. Thread-safe; the
// engine's gauges (queue length, KV pages) are read when the page is rendered.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace llm::server {

// A cumulative histogram with fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // Lines "name_bucket{le=...} n", "name_sum", "name_count".
  void render(const std::string& name, std::string& out) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bound, not cumulative; one more for +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct Gauge {
  std::string name;
  std::string help;
  std::function<double()> read;
};

class Metrics {
 public:
  Metrics();
  void count_request(const std::string& route, int status);
  void add_tokens(int prompt, int generated);
  void observe_ttft(double seconds);
  void observe_token_latency(double seconds);
  void observe_request(double seconds);
  // Values read at render time (engine queue length, KV pages in use ...).
  void add_gauge(Gauge g);
  std::string render() const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0;
  uint64_t generated_tokens_ = 0;
  Histogram ttft_;
  Histogram token_latency_;
  Histogram request_duration_;
  std::vector<Gauge> gauges_;
};

}  // namespace llm::server
