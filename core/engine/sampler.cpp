#include "core/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

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

namespace {

SampleRow device_row(const SamplingParams& p, std::mt19937_64& rng) {
  if (p.temperature == 0.f) return kGreedySampleRow;
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  return {p.temperature, std::min(static_cast<float>(u), 0x1.fffffep-1f),  // u stays below 1
          static_cast<float>(p.top_k), p.top_p, p.min_p};
}

}  // namespace

SampleRow Sampler::device_params() { return device_row(params_, rng_); }

std::vector<SampleRow> Sampler::peek_device_params(int n) const {
  std::mt19937_64 rng = rng_;
  std::vector<SampleRow> rows;
  for (int i = 0; i < n; i++) rows.push_back(device_row(params_, rng));
  return rows;
}

void Sampler::skip_device_params(int n) {
  for (int i = 0; i < n; i++) device_row(params_, rng_);
}

bool Sampler::samples_on_device() const {
  static const bool cuts_on_device = [] {
    const char* e = std::getenv("LLM_SAMPLE_CUTS_ON_DEVICE");
    return !(e && std::string(e) == "0");
  }();
  const bool cuts = params_.temperature > 0.f &&
                    (params_.top_k > 0 || params_.top_p < 1.f || params_.min_p > 0.f);
  return !adjusts() && (cuts_on_device || !cuts);
}

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

  // top-k, then softmax over the survivors, then min-p and top-p on those
  // probabilities. Only the most likely tokens need to be in order: the sorted
  // prefix grows (8x) until the cut-offs are inside it, so a 128k vocabulary
  // costs a linear pass and a small partial sort, not a full sort per token.
  // Candidates hold exp((logit - max) / T): ordered like the logits, so sorting
  // them orders the tokens, and each exponential is taken once.
  float max_logit = logits[0];
  for (int i = 1; i < n_vocab; i++) max_logit = std::max(max_logit, logits[i]);
  candidates_.resize(n_vocab);
  const float inv_t = 1.f / params_.temperature;
  for (int i = 0; i < n_vocab; i++) candidates_[i] = {std::exp((logits[i] - max_logit) * inv_t), i};
  auto by_weight = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t n = candidates_.size();
  size_t sorted = 0;
  auto sort_prefix = [&](size_t k) {
    k = std::min(k, n);
    if (k <= sorted) return;
    if (k > n / 4) k = n;  // a flat distribution: one full sort beats growing further
    std::partial_sort(candidates_.begin(), candidates_.begin() + k, candidates_.begin() + n,
                      by_weight);
    sorted = k;
  };
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
    sort_prefix(params_.top_k);
    n = params_.top_k;
  }
  double sum = 0;
  for (size_t i = 0; i < n; i++) sum += candidates_[i].first;

  // How many of the most likely tokens survive min-p (weight >= min_p * the
  // largest, which is 1) and top-p.
  size_t keep = n;
  if (params_.min_p > 0.f || params_.top_p < 1.f) {
    const double target = params_.top_p * sum;
    double cum = 0;
    sort_prefix(128);
    size_t i = 0;
    for (; i < n; i++) {
      if (i == sorted) sort_prefix(sorted * 8);
      if (i > 0 && candidates_[i].first < params_.min_p) break;
      cum += candidates_[i].first;
      if (params_.top_p < 1.f && cum >= target) {
        i++;
        break;
      }
    }
    keep = std::max<size_t>(i, 1);
  }
  double total = 0;
  for (size_t i = 0; i < keep; i++) total += candidates_[i].first;
  std::uniform_real_distribution<double> uni(0.0, total);
  double r = uni(rng_);
  for (size_t i = 0; i < keep; i++) {
    r -= candidates_[i].first;
    if (r < 0) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;
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
