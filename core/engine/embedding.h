// Sentence embeddings from a causal LM: the final norm's rows of a prompt, pooled into
// one vector (mean, first or last token) or kept per token, and L2-normalized.
#pragma once

#include <string>
#include <vector>

namespace llm {

enum class Pooling { None, Mean, Cls, Last };
const char* pooling_name(Pooling p);  // "none", "mean", "cls", "last"
// Parses a pooling name; throws llm::Error naming the choices for any other.
Pooling parse_pooling(const std::string& name);
// The pooling a model's metadata names (ModelConfig::pooling), mean where it names none:
// decoder LMs without embedding metadata have no pooling of their own, and the mean of
// their rows is the choice that depends least on how a prompt ends.
Pooling default_pooling(const std::string& model_pooling);

// Pools the rows of one sequence as its steps produce them (in position order).
class EmbeddingPool {
 public:
  EmbeddingPool(Pooling pooling, int dim, int n_tokens, bool normalize);
  // Starts over: the sequence was preempted and its rows are computed again.
  void reset();
  // Rows [count, dim] of positions [first, first + count).
  void add(const float* rows, int first, int count);
  // Whether every position's row is needed (else only the last: its KV prefix may come
  // from the prefix cache).
  bool needs_all_rows() const { return pooling_ != Pooling::Last; }
  // The embedding: [dim] pooled, or [n_tokens, dim] for Pooling::None; each vector
  // L2-normalized when asked (a zero vector stays zero).
  std::vector<float> result() const;

 private:
  Pooling pooling_;
  int dim_;
  int n_tokens_;
  bool normalize_;
  std::vector<double> sum_;  // Mean: the sum of the rows so far
  std::vector<float> rows_;  // Cls / Last: the row; None: every row
};

// Scales v to unit L2 norm (a zero vector is left as it is).
void l2_normalize(float* v, size_t n);

}  // namespace llm
