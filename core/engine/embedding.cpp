#include "core/engine/embedding.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace llm {

const char* pooling_name(Pooling p) {
  switch (p) {
    case Pooling::None:
      return "none";
    case Pooling::Mean:
      return "mean";
    case Pooling::Cls:
      return "cls";
    case Pooling::Last:
      return "last";
  }
  return "?";
}

Pooling parse_pooling(const std::string& name) {
  for (Pooling p : {Pooling::None, Pooling::Mean, Pooling::Cls, Pooling::Last})
    if (name == pooling_name(p)) return p;
  fail("unknown pooling '%s' (expected mean, last, cls or none)", name.c_str());
}

Pooling default_pooling(const std::string& model_pooling) {
  return model_pooling.empty() ? Pooling::Mean : parse_pooling(model_pooling);
}

EmbeddingPool::EmbeddingPool(Pooling pooling, int dim, int n_tokens, bool normalize)
    : pooling_(pooling), dim_(dim), n_tokens_(n_tokens), normalize_(normalize) {
  if (dim <= 0 || n_tokens <= 0)
    fail("internal: embedding of %d tokens of %d values", n_tokens, dim);
  reset();
}

void EmbeddingPool::reset() {
  const size_t d = static_cast<size_t>(dim_);
  sum_.assign(pooling_ == Pooling::Mean ? d : 0, 0.0);
  rows_.assign(pooling_ == Pooling::None   ? d * static_cast<size_t>(n_tokens_)
               : pooling_ == Pooling::Mean ? 0
                                           : d,
               0.f);
}

void EmbeddingPool::add(const float* rows, int first, int count) {
  if (first < 0 || count < 0 || first + count > n_tokens_)
    fail("internal: embedding rows [%d, %d) of a %d-token prompt", first, first + count, n_tokens_);
  const size_t d = static_cast<size_t>(dim_);
  for (int i = 0; i < count; i++) {
    const int pos = first + i;
    const float* row = rows + static_cast<size_t>(i) * d;
    switch (pooling_) {
      case Pooling::Mean:
        for (size_t j = 0; j < d; j++) sum_[j] += row[j];
        break;
      case Pooling::None:
        std::copy(row, row + d, rows_.begin() + static_cast<ptrdiff_t>(pos * d));
        break;
      case Pooling::Cls:
        if (pos == 0) std::copy(row, row + d, rows_.begin());
        break;
      case Pooling::Last:
        if (pos == n_tokens_ - 1) std::copy(row, row + d, rows_.begin());
        break;
    }
  }
}

std::vector<float> EmbeddingPool::result() const {
  std::vector<float> out = rows_;
  if (pooling_ == Pooling::Mean) {
    out.resize(sum_.size());
    for (size_t j = 0; j < sum_.size(); j++) out[j] = static_cast<float>(sum_[j] / n_tokens_);
  }
  if (normalize_)
    for (size_t at = 0; at < out.size(); at += static_cast<size_t>(dim_))
      l2_normalize(out.data() + at, static_cast<size_t>(dim_));
  return out;
}

void l2_normalize(float* v, size_t n) {
  double ss = 0;
  for (size_t i = 0; i < n; i++) ss += double(v[i]) * v[i];
  if (ss <= 0) return;
  const double inv = 1.0 / std::sqrt(ss);
  for (size_t i = 0; i < n; i++) v[i] = static_cast<float>(v[i] * inv);
}

}  // namespace llm
