#include "core/engine/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace llm {

void validate(const SamplingParams& p) {
  if (!(p.temperature >= 0.f) || !std::isfinite(p.temperature))
    fail("temperature must be >= 0, got %g", p.temperature);
  if (!(p.top_p > 0.f && p.top_p <= 1.f)) fail("top_p must be in (0, 1], got %g", p.top_p);
  if (p.top_k < 0) fail("top_k must be >= 0, got %d", p.top_k);
  if (!(p.min_p >= 0.f && p.min_p <= 1.f)) fail("min_p must be in [0, 1], got %g", p.min_p);
  if (!(p.repetition_penalty > 0.f) || !std::isfinite(p.repetition_penalty))
    fail("repetition_penalty must be > 0, got %g", p.repetition_penalty);
  if (!(p.presence_penalty >= -2.f && p.presence_penalty <= 2.f))
    fail("presence_penalty must be in [-2, 2], got %g", p.presence_penalty);
  if (!(p.frequency_penalty >= -2.f && p.frequency_penalty <= 2.f))
    fail("frequency_penalty must be in [-2, 2], got %g", p.frequency_penalty);
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0) fail("logit_bias: token id %d is negative", id);
    if (!std::isfinite(bias) || bias < -100.f || bias > 100.f)
      fail("logit_bias for token %d must be in [-100, 100], got %g", id, bias);
  }
}

void validate(const SamplingParams& p, int n_vocab) {
  validate(p);
  for (const auto& kv : p.logit_bias)
    if (kv.first >= n_vocab)
      fail("logit_bias: token id %d is out of range (vocab size %d)", kv.first, n_vocab);
}

int32_t argmax(const float* values, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; i++)
    if (values[i] > values[best]) best = i;
  return best;
}

Sampler::Sampler(const SamplingParams& p) : params_(p), rng_(p.seed) { validate(p); }

bool Sampler::adjusts() const {
  return !params_.logit_bias.empty() || params_.repetition_penalty != 1.f ||
         params_.presence_penalty != 0.f || params_.frequency_penalty != 0.f;
}

void Sampler::adjust(float* logits, int n_vocab, const TokenHistory* history) const {
  for (const auto& [id, bias] : params_.logit_bias)
    if (id < n_vocab) logits[id] += bias;
  if (!history) return;
  if (params_.repetition_penalty != 1.f) {
    auto penalize = [&](int32_t id) {
      if (id < 0 || id >= n_vocab) return;
      float& l = logits[id];
      l = l > 0 ? l / params_.repetition_penalty : l * params_.repetition_penalty;
    };
    for (const auto& kv : history->prompt()) penalize(kv.first);
    for (const auto& kv : history->output())
      if (!history->prompt().count(kv.first)) penalize(kv.first);
  }
  if (params_.presence_penalty != 0.f || params_.frequency_penalty != 0.f) {
    for (const auto& [id, count] : history->output())
      if (id >= 0 && id < n_vocab)
        logits[id] -= params_.presence_penalty + params_.frequency_penalty * count;
  }
}

int32_t Sampler::sample(const float* logits, int n_vocab, const TokenHistory* history) {
  if (adjusts()) {
    adjusted_.assign(logits, logits + n_vocab);
    adjust(adjusted_.data(), n_vocab, history);
    logits = adjusted_.data();
  }
  if (params_.temperature == 0.f) return argmax(logits, n_vocab);

  candidates_.resize(n_vocab);
  for (int i = 0; i < n_vocab; i++) candidates_[i] = {logits[i] / params_.temperature, i};
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = candidates_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
    keep = params_.top_k;
    std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), by_logit);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  candidates_.resize(keep);

  // Softmax over the survivors (sorted, so the first is the maximum).
  const float max_logit = candidates_[0].first;
  double sum = 0;
  for (auto& c : candidates_) {
    c.first = std::exp(c.first - max_logit);
    sum += c.first;
  }
  for (auto& c : candidates_) c.first = static_cast<float>(c.first / sum);

  if (params_.min_p > 0.f) {
    const float threshold = params_.min_p * candidates_[0].first;
    size_t n = 1;
    while (n < candidates_.size() && candidates_[n].first >= threshold) n++;
    candidates_.resize(n);
  }
  if (params_.top_p < 1.f) {
    double cum = 0;
    size_t n = 0;
    while (n < candidates_.size()) {
      cum += candidates_[n].first;
      n++;
      if (cum >= params_.top_p) break;
    }
    candidates_.resize(n);
  }
  double total = 0;
  for (const auto& c : candidates_) total += c.first;
  std::uniform_real_distribution<double> uni(0.0, total);
  double r = uni(rng_);
  for (const auto& c : candidates_) {
    r -= c.first;
    if (r < 0) return c.second;
  }
  return candidates_.back().second;
}

TokenLogprobs token_logprobs(const float* logits, int n_vocab, int32_t token, int top_n) {
  float max_logit = logits[0];
  for (int i = 1; i < n_vocab; i++) max_logit = std::max(max_logit, logits[i]);
  double sum = 0;
  for (int i = 0; i < n_vocab; i++) sum += std::exp(double(logits[i]) - max_logit);
  const float log_z = static_cast<float>(max_logit + std::log(sum));
  TokenLogprobs r;
  r.token = token;
  r.logprob = logits[token] - log_z;
  top_n = std::min(top_n, n_vocab);
  if (top_n > 0) {
    std::vector<int32_t> ids(n_vocab);
    for (int i = 0; i < n_vocab; i++) ids[i] = i;
    std::partial_sort(ids.begin(), ids.begin() + top_n, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int i = 0; i < top_n; i++) r.top.emplace_back(ids[i], logits[ids[i]] - log_z);
  }
  return r;
}

}  // namespace llm
