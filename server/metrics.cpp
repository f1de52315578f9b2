#include "server/metrics.h"

#include <algorithm>
#include <cstdio>

namespace llm::server {

namespace {

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void header(std::string& out, const std::string& name, const char* type, const char* help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  counts_[i]++;
  sum_ += v;
  count_++;
}

void Histogram::render(const std::string& name, std::string& out) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); i++) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + num(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + num(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      token_latency_({0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28}),
      request_duration_({0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}) {}

void Metrics::count_request(const std::string& route, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  requests_[{route, status}]++;
}

void Metrics::add_tokens(int prompt, int generated) {
  std::lock_guard<std::mutex> lock(mu_);
  prompt_tokens_ += static_cast<uint64_t>(prompt);
  generated_tokens_ += static_cast<uint64_t>(generated);
}

void Metrics::observe_ttft(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  ttft_.observe(s);
}

void Metrics::observe_token_latency(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  token_latency_.observe(s);
}

void Metrics::observe_request(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  request_duration_.observe(s);
}

void Metrics::add_gauge(Gauge g) {
  std::lock_guard<std::mutex> lock(mu_);
  gauges_.push_back(std::move(g));
}

std::string Metrics::render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  header(out, "llmrt_requests_total", "counter", "HTTP requests by route and status.");
  for (const auto& [key, n] : requests_)
    out += "llmrt_requests_total{route=\"" + key.first + "\",status=\"" +
           std::to_string(key.second) + "\"} " + std::to_string(n) + "\n";
  header(out, "llmrt_prompt_tokens_total", "counter", "Prompt tokens processed.");
  out += "llmrt_prompt_tokens_total " + std::to_string(prompt_tokens_) + "\n";
  header(out, "llmrt_generation_tokens_total", "counter", "Tokens generated.");
  out += "llmrt_generation_tokens_total " + std::to_string(generated_tokens_) + "\n";
  header(out, "llmrt_time_to_first_token_seconds", "histogram",
         "Time from a request's arrival to its first generated token.");
  ttft_.render("llmrt_time_to_first_token_seconds", out);
  header(out, "llmrt_time_per_output_token_seconds", "histogram",
         "Time between consecutive generated tokens of a request.");
  token_latency_.render("llmrt_time_per_output_token_seconds", out);
  header(out, "llmrt_request_duration_seconds", "histogram",
         "Time from arrival to the last token.");
  request_duration_.render("llmrt_request_duration_seconds", out);
  for (const Gauge& g : gauges_) {
    header(out, g.name, "gauge", g.help.c_str());
    out += g.name + " " + num(g.read()) + "\n";
  }
  return out;
}

}  // namespace llm::server
