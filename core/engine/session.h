// A single-sequence inference session: the KV cache (or recurrent state) of one sequence and the
// compiled step graphs, one per shape bucket. Used by `llmcli logits` and
// `llmcli generate`; the batching engine builds on the same graphs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "core/executor.h"
#include "core/model.h"

namespace llm {

struct SessionOptions {
  int context_size = 0;          // 0: the model's max_position_embeddings, capped at 4096
  int page_size = 16;            // KV cache page, tokens
  int prefill_chunk_size = 512;  // longer prompts run in chunks of this many tokens
  DType kv_dtype = DType::F32;   // KV cache elements: F32, F16 or BF16
};

class Session {
 public:
  explicit Session(Model& model, SessionOptions opts = {});

  // Appends tokens at the next positions and returns logits row-major:
  // [tokens.size(), vocab] when all_logits, else [1, vocab] for the last token.
  std::vector<float> forward(const std::vector<int32_t>& tokens, bool all_logits);
  // Like forward without all_logits, but returns the argmax of the last token's logits,
  // computed on the device (only the id crosses the bus): greedy decoding.
  int32_t forward_greedy(const std::vector<int32_t>& tokens);
  // Greedy decoding with the device a step ahead of the host: queue_greedy(tokens) runs
  // tokens and leaves the argmax of the last one on the device; each queue_greedy_next()
  // queues one more step whose token is that argmax, fed on the device, and returns the
  // argmax once it is copied out (while the new step runs); finish_greedy() returns
  // the argmax of the last step queued. The host never waits between steps, so a
  // decode step costs what the device takes for it.
  void queue_greedy(const std::vector<int32_t>& tokens);
  int32_t queue_greedy_next();
  int32_t finish_greedy();
  // n greedy tokens after `tokens` (the first is the argmax of the last of them), each
  // fed to the next step on the device, with the host `ahead` steps behind it (0: the
  // backend's steps_per_submission()): a backend that batches submissions sends that
  // many queued steps in one. ahead 1 is queue_greedy / queue_greedy_next.
  std::vector<int32_t> decode_greedy(const std::vector<int32_t>& tokens, int n, int ahead = 0);

  int position() const { return position_; }

  int context_size() const { return context_size_; }
  // Whether the model keeps a recurrent state (RWKV), which rewind() cannot take back.
  bool has_recurrent_state() const { return !recurrent_.empty(); }
  // Forgets the tokens from position n on (0 <= n <= position()): the next forward writes
  // their cache rows again. Throws llm::Error for a recurrent state (unless n is 0).
  void rewind(int n);
  // Compiles the step of n tokens (one logits row) now rather than on its first use: on
  // Vulkan a new shape builds its pipelines, a stall where it happens mid-generation.
  void prepare(int n_tokens) { executor_for(n_tokens, 1); }
  // Forgets the sequence (the cache is overwritten by the next forward).
  void reset() {
    position_ = 0;
    greedy_from_ = nullptr;
  }
  // Called after each step (each prefill chunk, each decode token) with the
  // executor that ran it, the tokens cached before it, and with profile the time
  // of each of its dispatches (Program::run_profiled, which the step then runs
  // through instead of run). For llmcli trace and bench --profile; the default,
  // no observer, adds nothing to a step.
  using StepObserver = std::function<void(Executor& ex, int n_past, const std::vector<double>& ms)>;
  void observe_steps(StepObserver fn, bool profile) {
    observer_ = std::move(fn);
    profile_ = profile;
  }
  // Bytes of KV cache (and recurrent state, RWKV) on the device.
  size_t cache_bytes() const { return cache_bytes_; }

 private:
  // Runs tokens in chunks (writing every row of logits when all_logits) and returns the
  // executor of the last chunk, whose outputs are current.
  Executor& run_chunks(const std::vector<int32_t>& tokens, bool all_logits, float* logits);
  // Runs T tokens at the next positions: from the host (tokens) or, for T = 1 and
  // tokens null, the Sampled output of fed_by. R: rows of logits (T or 1).
  Executor& run_step(int T, int R, const int32_t* tokens, const Executor* fed_by);
  Executor& executor_for(int n_tokens, int n_logit_rows);
  TensorRef resolve_state(const TensorInfo& t) const;

  Model& model_;
  SessionOptions opts_;
  int context_size_ = 0;
  int n_pages_ = 0;
  int position_ = 0;
  size_t cache_bytes_ = 0;
  std::map<std::string, std::unique_ptr<DeviceBuffer>> cache_;  // all State tensors
  std::vector<std::string> recurrent_;  // the non-KV ones, zeroed when a sequence starts
  std::map<std::pair<int, int>, std::unique_ptr<Executor>> executors_;
  Executor* greedy_from_ = nullptr;  // holds the argmax queue_greedy_next() feeds on
  StepObserver observer_;
  bool profile_ = false;
};

}  // namespace llm
