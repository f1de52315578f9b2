// Picks the next token from a row of logits: logit bias and penalties, then
// greedy or temperature / top-k / min-p / top-p sampling.
#pragma once

#include <array>
#include <cstdint>
#include <random>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/graph.h"

namespace llm {

struct SamplingParams {
  float temperature = 0.f;  // 0: greedy (argmax)
  float top_p = 1.f;        // nucleus: smallest set with cumulative probability >= top_p
  int top_k = 0;            // 0: off
  float min_p = 0.f;        // drop tokens with p < min_p * p_max; 0: off
  uint64_t seed = 0;        // same seed, same logits: same tokens
  // HF-style: logits of tokens seen in prompt or output are divided by it when
  // positive, multiplied when negative. 1: off.
  float repetition_penalty = 1.f;
  // OpenAI-style, over output tokens: logit -= presence * (count > 0) + frequency * count.
  float presence_penalty = 0.f;
  float frequency_penalty = 0.f;
  std::unordered_map<int32_t, float> logit_bias;  // token id -> added to its logit
};

// Throws llm::Error naming the first invalid field.
void validate(const SamplingParams& p);
// Like validate, and checks that logit_bias ids are < n_vocab.
void validate(const SamplingParams& p, int n_vocab);

// Token counts a sequence has seen, for the penalties.
class TokenHistory {
 public:
  void add_prompt(int32_t id) { prompt_.emplace(id, 0).first->second++; }
  void add_output(int32_t id) { output_.emplace(id, 0).first->second++; }
  const std::unordered_map<int32_t, int>& prompt() const { return prompt_; }
  const std::unordered_map<int32_t, int>& output() const { return output_; }

 private:
  std::unordered_map<int32_t, int> prompt_, output_;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // Samples from logits (not modified). history may be null when no penalty is set.
  int32_t sample(const float* logits, int n_vocab, const TokenHistory* history = nullptr);
  // Applies logit bias and penalties in place (what sample() does first).
  void adjust(float* logits, int n_vocab, const TokenHistory* history) const;
  const SamplingParams& params() const { return params_; }
  // Whether Op::Sample on the device can draw for this sampler: everything but logit
  // bias and penalties (greedy, temperature, top-k, top-p, min-p). Its draw follows the
  // same distribution as sample(), though not the same token for a given seed: the
  // device walks the kept tokens in index order, sample() most likely first.
  // LLM_SAMPLE_CUTS_ON_DEVICE=0 sends rows with a cut to the host instead (to compare).
  bool samples_on_device() const;
  // Op::Sample's parameters for one token (temperature, u, top_k, top_p, min_p), with
  // u, the uniform draw in [0, 1), from the sampler's own generator (0 when greedy), so
  // a seed repeats its tokens.
  SampleRow device_params();
  // The parameters of the n tokens after the next one, without drawing them (the
  // generator is copied), and skip(n) to draw them after all: speculative decoding gives
  // each of a draft's rows its own u, then keeps as many draws as it keeps tokens, so a
  // seed gives the tokens it gives without speculation.
  std::vector<SampleRow> peek_device_params(int n) const;
  void skip_device_params(int n);

 private:
  bool adjusts() const;
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> adjusted_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

// Index of the largest value (the first one on ties).
int32_t argmax(const float* values, int n);

// log_softmax(logits)[token] and the top_n (token, logprob) pairs, most likely first.
struct TokenLogprobs {
  int32_t token = 0;
  float logprob = 0.f;
  std::vector<std::pair<int32_t, float>> top;
};
TokenLogprobs token_logprobs(const float* logits, int n_vocab, int32_t token, int top_n);

}  // namespace llm
