#include "core/engine/step_runner.h"

#include <algorithm>

#include "core/error.h"

namespace llm {

StepRunner::StepRunner(Model& model, const StepRunnerOptions& opts) : model_(model), opts_(opts) {
  if (opts_.n_pages <= 0 || opts_.page_size <= 0 || opts_.max_pages_per_seq <= 0 ||
      opts_.max_seqs <= 0 || opts_.max_tokens <= 0)
    fail(
        "step runner: pages, page size, pages per sequence, sequences and tokens must be positive");
  // One extra page and one extra state row absorb the writes of padding tokens.
  scratch_page_ = opts_.n_pages;
  scratch_row_ = opts_.max_seqs;
}

int StepRunner::bucket(int n, int limit) {
  int b = 1;
  while (b < n) b *= 2;
  return std::min(b, std::max(limit, n));
}

TensorRef StepRunner::resolve_state(const TensorInfo& t) {
  auto it = states_.find(t.name);
  if (it == states_.end()) {
    const size_t bytes = tensor_bytes(t.dtype, t.shape);
    const bool is_cache =
        t.shape.rank > 0 && t.shape[0] == int64_t(opts_.n_pages + 1) * opts_.page_size;
    std::string what = is_cache ? "KV cache (" + std::to_string(opts_.n_pages) + " pages of " +
                                      std::to_string(opts_.page_size) +
                                      " tokens; lower it with --kv-cache-size or --context-size)"
                                : "recurrent state '" + t.name + "'";
    auto buf = model_.backend().alloc(bytes, what);
    model_.backend().clear(*buf, 0, bytes);
    cache_bytes_ += bytes;
    if (!is_cache) {
      recurrent_rows_ = opts_.max_seqs + 1;
      recurrent_row_bytes_[t.name] = bytes / recurrent_rows_;
    }
    it = states_.emplace(t.name, std::move(buf)).first;
  }
  return {it->second.get(), 0, t.dtype, t.shape};
}

void StepRunner::clear_state_row(int slot) {
  for (const auto& [name, row_bytes] : recurrent_row_bytes_)
    model_.backend().clear(*states_.at(name), row_bytes * slot, row_bytes);
}

Executor& StepRunner::executor_for(int n_tokens, int n_seqs, StepOutput output) {
  auto& executors = output == StepOutput::Hidden    ? hidden_executors_
                    : output == StepOutput::AllRows ? all_rows_executors_
                                                    : executors_;
  const auto key = std::make_pair(n_tokens, n_seqs);
  auto it = executors.find(key);
  if (it != executors.end()) return *it->second;
  StepShape shape;
  shape.n_tokens = n_tokens;
  shape.n_seqs = n_seqs;
  shape.max_pages_per_seq = opts_.max_pages_per_seq;
  shape.n_logit_rows = output == StepOutput::AllRows ? n_tokens : n_seqs;
  shape.page_size = opts_.page_size;
  shape.n_cache_slots = (opts_.n_pages + 1) * opts_.page_size;
  shape.n_state_slots = opts_.max_seqs + 1;
  shape.kv_dtype = opts_.kv_dtype;
  shape.hidden_output = output == StepOutput::Hidden;
  Graph g = build_step_graph(model_.config(), shape,
                             [&](const std::string& n) { return model_.weight_dtype(n); });
  auto ex = std::make_unique<Executor>(
      model_.backend(), std::move(g), [&](const TensorInfo& t) { return model_.resolve(t); },
      [&](const TensorInfo& t) { return resolve_state(t); });
  return *executors.emplace(key, std::move(ex)).first->second;
}

std::pair<int, int> StepRunner::buckets(int n_tokens, int n_seqs) const {
  const int T = bucket(n_tokens, opts_.max_tokens);
  // Padding tokens belong to a padding sequence, so keep a row for it.
  const int S = bucket(n_seqs + (T > n_tokens ? 1 : 0), opts_.max_seqs + 1);
  return {T, S};
}

void StepRunner::set_step_inputs(Executor& ex, int T, int S, int n,
                                 const std::vector<int32_t>& positions,
                                 const std::vector<StepSeq>& seqs, StepOutput output) {
  const bool all_rows = output == StepOutput::AllRows;
  const int R = all_rows ? T : S;
  const int s_real = static_cast<int>(seqs.size());
  const int P = opts_.max_pages_per_seq;
  const int ps = opts_.page_size;
  in_pos_.assign(T, 0);
  in_seq_.assign(T, s_real < S ? s_real : 0);
  in_slots_.resize(T);
  in_table_.assign(static_cast<size_t>(S) * P, scratch_page_);
  in_rows_.assign(R, 0);
  if (all_rows)
    for (int t = 0; t < T; t++) in_rows_[t] = t;
  in_states_.assign(S, scratch_row_);
  in_params_ = greedy_sample_rows(static_cast<size_t>(R));
  std::copy(positions.begin(), positions.end(), in_pos_.begin());
  for (int t = n; t < T; t++) in_slots_[t] = scratch_page_ * ps + (t - n) % ps;
  for (int s = 0; s < s_real; s++) {
    const StepSeq& q = seqs[s];
    const std::vector<int>& pages = *q.pages;
    if (static_cast<int>(pages.size()) > P) fail("internal: page table longer than the window");
    std::copy(pages.begin(), pages.end(), in_table_.begin() + static_cast<size_t>(s) * P);
    for (int t = q.first; t < q.first + q.count; t++) {
      const int pos = positions[t];
      in_seq_[t] = s;
      in_slots_[t] = pages[pos / ps] * ps + pos % ps;
    }
    if (all_rows) {
      for (int t = q.first; t < q.first + q.count; t++) {
        const size_t j = static_cast<size_t>(t - q.first);
        const SampleRow& row =
            j == 0 || j > q.more_samples.size() ? q.sample : q.more_samples[j - 1];
        std::copy(row.begin(), row.end(), in_params_.begin() + kSampleParamCount * t);
      }
    } else {
      in_rows_[s] = q.first + q.count - 1;
      std::copy(q.sample.begin(), q.sample.end(), in_params_.begin() + kSampleParamCount * s);
    }
    in_states_[s] = q.state_slot;
  }
  auto set = [&](const char* name, const std::vector<int32_t>& v) {
    ex.set_input(name, v.data(), v.size() * sizeof(int32_t));
  };
  set(step_io::kPositions, in_pos_);
  ex.set_context_used(int64_t{*std::max_element(positions.begin(), positions.begin() + n)} + 1);
  set(step_io::kSeqIds, in_seq_);
  set(step_io::kSlots, in_slots_);
  set(step_io::kBlockTable, in_table_);
  set(step_io::kLogitRows, in_rows_);
  ex.set_input(step_io::kSampleParams, in_params_.data(), in_params_.size() * sizeof(float));
  if (ex.graph().find(step_io::kStateSlots) >= 0) set(step_io::kStateSlots, in_states_);
}

void StepRunner::run(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions,
                     const std::vector<StepSeq>& seqs) {
  run(tokens, positions, seqs, StepOutput::LastRows);
}

void StepRunner::run(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions,
                     const std::vector<StepSeq>& seqs, StepOutput output) {
  const int n_real = static_cast<int>(tokens.size());
  const int s_real = static_cast<int>(seqs.size());
  if (n_real == 0 || s_real == 0) fail("internal: empty step");
  if (n_real > opts_.max_tokens || s_real > opts_.max_seqs)
    fail("internal: step of %d tokens / %d sequences exceeds %d / %d", n_real, s_real,
         opts_.max_tokens, opts_.max_seqs);
  const auto [T, S] = buckets(n_real, s_real);
  Executor& ex = executor_for(T, S, output);
  in_tokens_.assign(T, 0);
  std::copy(tokens.begin(), tokens.end(), in_tokens_.begin());
  ex.set_input(step_io::kTokens, in_tokens_.data(), in_tokens_.size() * sizeof(int32_t));
  set_step_inputs(ex, T, S, n_real, positions, seqs, output);
  have_logits_ = have_sampled_ = have_hidden_ = false;
  last_ = nullptr;
  ex.run();
  last_ = &ex;
  last_rows_ = output == StepOutput::AllRows ? n_real : s_real;
  last_tokens_ = n_real;
  last_output_ = output;
}

bool StepRunner::can_run_ahead(int n_seqs) const {
  if (!last_ || last_output_ != StepOutput::LastRows || n_seqs <= 0 || n_seqs != last_rows_)
    return false;
  // The token input takes the sampled ids whole: one row per token, same executor.
  const auto [T, S] = buckets(n_seqs, n_seqs);
  const auto it = executors_.find({T, S});
  return T == S && it != executors_.end() && it->second.get() == last_;
}

bool StepRunner::run_ahead(const std::vector<int32_t>& positions, const std::vector<StepSeq>& seqs,
                           std::vector<int32_t>& last_ids) {
  const int n = static_cast<int>(seqs.size());
  if (!can_run_ahead(n) || static_cast<int>(positions.size()) != n) return false;
  for (int s = 0; s < n; s++)
    if (seqs[s].first != s || seqs[s].count != 1) return false;
  const auto [T, S] = buckets(n, n);
  Executor& ex = *last_;
  // Queued in this order: the ids' download, their copy into the token input, the step
  // (which then overwrites them).
  sampled_.resize(static_cast<size_t>(n));
  const uint64_t ticket =
      ex.start_read_output(step_io::kSampled, sampled_.data(), sampled_.size() * sizeof(int32_t));
  ex.feed_input(step_io::kTokens, ex, step_io::kSampled);
  set_step_inputs(ex, T, S, n, positions, seqs);
  have_logits_ = have_sampled_ = false;
  ex.run();
  model_.backend().finish_download(ticket);
  last_ids = sampled_;
  return true;
}

const std::vector<float>& StepRunner::hidden() {
  if (!last_ || last_output_ != StepOutput::Hidden)
    fail("internal: hidden rows without an embedding step");
  if (!have_hidden_) {
    hidden_.resize(static_cast<size_t>(last_tokens_) * model_.config().hidden_size);
    last_->read_output(step_io::kHidden, hidden_.data(), hidden_.size() * sizeof(float));
    have_hidden_ = true;
  }
  return hidden_;
}

const std::vector<float>& StepRunner::logits() {
  if (!last_ || last_output_ == StepOutput::Hidden) fail("internal: logits before a step");
  if (!have_logits_) {
    const size_t V = model_.config().vocab_size;
    logits_.resize(static_cast<size_t>(last_rows_) * V);
    last_->read_output(step_io::kLogits, logits_.data(), logits_.size() * sizeof(float));
    have_logits_ = true;
  }
  return logits_;
}

const std::vector<int32_t>& StepRunner::sampled() {
  if (!last_ || last_output_ == StepOutput::Hidden) fail("internal: sampled ids before a step");
  if (!have_sampled_) {
    sampled_.resize(static_cast<size_t>(last_rows_));
    last_->read_output(step_io::kSampled, sampled_.data(), sampled_.size() * sizeof(int32_t));
    have_sampled_ = true;
  }
  return sampled_;
}

}  // namespace llm
