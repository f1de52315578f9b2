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
}

int32_t argmax(const float* values, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; i++)
    if (values[i] > values[best]) best = i;
  return best;
}

Sampler::Sampler(const SamplingParams& p) : params_(p), rng_(p.seed) { validate(p); }

int32_t Sampler::sample(const float* logits, int n_vocab) {
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

}  // namespace llm
