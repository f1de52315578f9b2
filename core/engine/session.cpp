#include "core/engine/session.h"

#include <algorithm>
#include <deque>
#include <numeric>

#include "core/error.h"

namespace llm {

Session::Session(Model& model, SessionOptions opts) : model_(model), opts_(opts) {
  const ModelConfig& cfg = model.config();
  context_size_ =
      opts.context_size > 0 ? opts.context_size : std::min(cfg.max_position_embeddings, 4096);
  if (context_size_ <= 0) fail("context size must be positive");
  if (opts_.page_size <= 0 || opts_.prefill_chunk_size <= 0)
    fail("page size and prefill chunk size must be positive");
  n_pages_ = (context_size_ + opts_.page_size - 1) / opts_.page_size;
  // Every State tensor the architecture declares: KV caches and recurrent states
  // (one row, n_state_slots = 1: this session runs one sequence).
  StepShape probe;
  probe.max_pages_per_seq = n_pages_;
  probe.page_size = opts_.page_size;
  probe.n_cache_slots = n_pages_ * opts_.page_size;
  check_kv_dtype(opts_.kv_dtype);
  probe.kv_dtype = opts_.kv_dtype;
  const Graph g =
      build_step_graph(cfg, probe, [&](const std::string& n) { return model.weight_dtype(n); });
  Backend& be = model.backend();
  for (const TensorInfo& t : g.tensors()) {
    if (t.kind != TensorKind::State) continue;
    const size_t bytes = tensor_bytes(t.dtype, t.shape);
    const bool kv = t.name.compare(0, 6, "cache.") == 0;
    cache_[t.name] = be.alloc(bytes, kv ? "KV cache (" + std::to_string(context_size_) +
                                              " tokens; lower it with --context-size)"
                                        : "recurrent state '" + t.name + "'");
    be.clear(*cache_[t.name], 0, bytes);
    if (!kv) recurrent_.push_back(t.name);
    cache_bytes_ += bytes;
  }
}

TensorRef Session::resolve_state(const TensorInfo& t) const {
  auto it = cache_.find(t.name);
  if (it == cache_.end()) fail("session has no state tensor '%s'", t.name.c_str());
  return {it->second.get(), 0, t.dtype, t.shape};
}

Executor& Session::executor_for(int n_tokens, int n_logit_rows) {
  auto key = std::make_pair(n_tokens, n_logit_rows);
  auto it = executors_.find(key);
  if (it != executors_.end()) return *it->second;
  StepShape shape;
  shape.n_tokens = n_tokens;
  shape.n_seqs = 1;
  shape.max_pages_per_seq = n_pages_;
  shape.n_logit_rows = n_logit_rows;
  shape.page_size = opts_.page_size;
  shape.n_cache_slots = n_pages_ * opts_.page_size;
  shape.kv_dtype = opts_.kv_dtype;
  Graph g = build_step_graph(model_.config(), shape,
                             [&](const std::string& n) { return model_.weight_dtype(n); });
  auto ex = std::make_unique<Executor>(
      model_.backend(), std::move(g), [&](const TensorInfo& t) { return model_.resolve(t); },
      [&](const TensorInfo& t) { return resolve_state(t); });
  Executor& ref = *ex;
  executors_[key] = std::move(ex);
  // The block table of this single sequence is the identity and never changes.
  std::vector<int32_t> table(n_pages_);
  std::iota(table.begin(), table.end(), 0);
  ref.set_input(step_io::kBlockTable, table.data(), table.size() * sizeof(int32_t));
  if (ref.graph().find(step_io::kStateSlots) >= 0) {
    const int32_t row = 0;
    ref.set_input(step_io::kStateSlots, &row, sizeof(row));
  }
  return ref;
}

std::vector<float> Session::forward(const std::vector<int32_t>& tokens, bool all_logits) {
  greedy_from_ = nullptr;
  const size_t rows = all_logits ? tokens.size() : 1;
  std::vector<float> logits(rows * static_cast<size_t>(model_.config().vocab_size));
  Executor& ex = run_chunks(tokens, all_logits, logits.data());
  if (!all_logits) ex.read_output(step_io::kLogits, logits.data(), logits.size() * sizeof(float));
  return logits;
}

int32_t Session::forward_greedy(const std::vector<int32_t>& tokens) {
  greedy_from_ = nullptr;
  Executor& ex = run_chunks(tokens, false, nullptr);
  int32_t id = 0;
  ex.read_output(step_io::kSampled, &id, sizeof(id));  // temperature 0: the argmax
  return id;
}

void Session::queue_greedy(const std::vector<int32_t>& tokens) {
  greedy_from_ = nullptr;
  greedy_from_ = &run_chunks(tokens, false, nullptr);
}

int32_t Session::queue_greedy_next() {
  if (!greedy_from_) fail("queue_greedy_next: no step queued (call queue_greedy first)");
  // A full context leaves the last step queued: finish_greedy() still returns its id.
  if (position_ + 1 > context_size_)
    fail("context window of %d tokens is full (%d tokens used, 1 more asked)", context_size_,
         position_);
  Executor& prev = *greedy_from_;
  greedy_from_ = nullptr;
  int32_t id = 0;
  Backend& be = model_.backend();
  if (!be.downloads_overlap()) {
    // Nothing to overlap: the id goes through the host, as in forward_greedy.
    prev.read_output(step_io::kSampled, &id, sizeof(id));
    greedy_from_ = &run_step(1, 1, &id, nullptr);
    return id;
  }
  // The copy out is queued before the step that overwrites the argmax.
  const uint64_t ticket = prev.start_read_output(step_io::kSampled, &id, sizeof(id));
  Executor& ex = run_step(1, 1, nullptr, &prev);
  be.finish_download(ticket);
  greedy_from_ = &ex;
  return id;
}

int32_t Session::finish_greedy() {
  if (!greedy_from_) fail("finish_greedy: no step queued (call queue_greedy first)");
  int32_t id = 0;
  greedy_from_->read_output(step_io::kSampled, &id, sizeof(id));
  greedy_from_ = nullptr;
  return id;
}

std::vector<int32_t> Session::decode_greedy(const std::vector<int32_t>& tokens, int n, int ahead) {
  if (n <= 0) return {};
  // Checked up front: a failure inside the loop would leave downloads unfinished.
  if (position_ + static_cast<int64_t>(tokens.size()) + n - 1 > context_size_)
    fail("context window of %d tokens is full (%d tokens used, %zu more asked)", context_size_,
         position_, tokens.size() + static_cast<size_t>(n) - 1);
  Backend& be = model_.backend();
  if (ahead <= 0) ahead = be.steps_per_submission();
  std::vector<int32_t> ids(static_cast<size_t>(n));
  queue_greedy(tokens);
  if (!be.downloads_overlap()) {
    for (int i = 1; i < n; i++) ids[static_cast<size_t>(i) - 1] = queue_greedy_next();
    ids.back() = finish_greedy();
    return ids;
  }
  // The id of step i is copied out in step i + 1's transfer and read after step i + ahead
  // is queued: the host waits only for steps already sent (ahead 1: queue_greedy_next).
  std::deque<uint64_t> tickets;
  auto finish_oldest = [&] {
    const uint64_t t = tickets.front();
    tickets.pop_front();
    be.finish_download(t);
  };
  be.set_steps_per_submission(ahead);
  try {
    for (int i = 1; i < n; i++) {
      Executor& prev = *greedy_from_;
      greedy_from_ = nullptr;
      tickets.push_back(
          prev.start_read_output(step_io::kSampled, &ids[static_cast<size_t>(i) - 1], 4));
      greedy_from_ = &run_step(1, 1, nullptr, &prev);
      while (static_cast<int>(tickets.size()) >= ahead) finish_oldest();
    }
    be.set_steps_per_submission(1);
    while (!tickets.empty()) finish_oldest();
  } catch (...) {
    // The backend's queue stays usable: the remaining downloads are collected (their
    // errors are the first one's) and what is held is sent.
    be.set_steps_per_submission(1);
    greedy_from_ = nullptr;
    for (uint64_t t : tickets) {
      try {
        be.finish_download(t);
      } catch (...) {
      }
    }
    throw;
  }
  ids.back() = finish_greedy();
  return ids;
}

Executor& Session::run_chunks(const std::vector<int32_t>& tokens, bool all_logits, float* logits) {
  const ModelConfig& cfg = model_.config();
  const int n = static_cast<int>(tokens.size());
  if (n == 0) fail("no tokens to run");
  for (int32_t id : tokens)
    if (id < 0 || id >= cfg.vocab_size)
      fail("token id %d is out of range (vocab size %d)", id, cfg.vocab_size);
  if (position_ + n > context_size_) {
    if (position_ == 0)
      fail("prompt of %d tokens exceeds the context window of %d tokens", n, context_size_);
    fail("context window of %d tokens is full (%d tokens used, %d more asked)", context_size_,
         position_, n);
  }
  const int V = cfg.vocab_size;
  Executor* last = nullptr;
  for (int begin = 0; begin < n; begin += opts_.prefill_chunk_size) {
    const int T = std::min(opts_.prefill_chunk_size, n - begin);
    // Without all_logits, earlier chunks only fill the cache; their one row is ignored.
    const int R = all_logits ? T : 1;
    Executor& ex = run_step(T, R, tokens.data() + begin, nullptr);
    if (all_logits)
      ex.read_output(step_io::kLogits, logits + static_cast<size_t>(begin) * V,
                     static_cast<size_t>(R) * V * sizeof(float));
    last = &ex;
  }
  return *last;
}

Executor& Session::run_step(int T, int R, const int32_t* tokens, const Executor* fed_by) {
  // A (re)started sequence begins from zero recurrent state.
  if (position_ == 0)
    for (const std::string& name : recurrent_) {
      DeviceBuffer& b = *cache_.at(name);
      model_.backend().clear(b, 0, b.size());
    }
  Executor& ex = executor_for(T, R);
  std::vector<int32_t> pos(T), seq(T, 0), rows(R);
  for (int t = 0; t < T; t++) pos[t] = position_ + t;
  if (R == T)
    std::iota(rows.begin(), rows.end(), 0);
  else
    rows[0] = T - 1;
  if (tokens)
    ex.set_input(step_io::kTokens, tokens, T * sizeof(int32_t));
  else
    ex.feed_input(step_io::kTokens, *fed_by, step_io::kSampled);
  ex.set_input(step_io::kPositions, pos.data(), T * sizeof(int32_t));
  ex.set_context_used(int64_t{position_} + T);
  ex.set_input(step_io::kSeqIds, seq.data(), T * sizeof(int32_t));
  ex.set_input(step_io::kSlots, pos.data(), T * sizeof(int32_t));  // identity page table
  ex.set_input(step_io::kLogitRows, rows.data(), R * sizeof(int32_t));
  const std::vector<float> greedy = greedy_sample_rows(static_cast<size_t>(R));
  ex.set_input(step_io::kSampleParams, greedy.data(), greedy.size() * sizeof(float));
  if (observer_ && profile_) {
    observer_(ex, position_, ex.run_profiled());
  } else {
    ex.run();
    if (observer_) observer_(ex, position_, {});
  }
  position_ += T;
  return ex;
}

void Session::rewind(int n) {
  if (n < 0 || n > position_)
    fail("session rewind to %d: the sequence has %d tokens", n, position_);
  if (n > 0 && n < position_ && has_recurrent_state())
    fail("session rewind: a recurrent state cannot take tokens back");
  position_ = n;
  greedy_from_ = nullptr;
}

}  // namespace llm
