// Picks the next token from a row of logits.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace llm {

struct SamplingParams {
  float temperature = 0.f;  // 0: greedy (argmax)
  float top_p = 1.f;        // nucleus: smallest set with cumulative probability >= top_p
  int top_k = 0;            // 0: off
  float min_p = 0.f;        // drop tokens with p < min_p * p_max; 0: off
  uint64_t seed = 0;        // same seed, same logits: same tokens
};

// Throws llm::Error naming the first invalid field.
void validate(const SamplingParams& p);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  int32_t sample(const float* logits, int n_vocab);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

// Index of the largest value (the first one on ties).
int32_t argmax(const float* values, int n);

}  // namespace llm
