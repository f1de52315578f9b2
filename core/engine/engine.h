// The engine: a scheduler thread that runs many generation requests together
// (continuous batching) over the paged KV cache. Each step mixes one decode
// token of every running sequence with chunks of the prompts being prefilled;
// requests are admitted while pages are free and preempted (recomputed later)
// when decode runs out of them. The CLI (chat, generate) and the HTTP server
// share this API: submit a request, read its stream of events, cancel it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/engine/embedding.h"
#include "core/engine/json_schema.h"
#include "core/engine/sampler.h"
#include "core/error.h"
#include "core/model.h"
#include "core/tokenizer/tokenizer.h"

namespace llm {

struct EngineOptions {
  int context_size = 0;  // per sequence; 0: the model's max_position_embeddings, at most 4096
  int max_seqs = 16;     // sequences decoded together
  int prefill_chunk_size = 512;  // tokens per step (prefill chunks plus decode tokens)
  int page_size = 16;
  // KV cache size in tokens, all sequences together; 0: as much as fits in
  // kv_memory_fraction of the device's free memory, between one context window
  // and max_seqs of them.
  int64_t kv_cache_tokens = 0;
  double kv_memory_fraction = 0.5;
  int max_queue = 0;  // waiting requests before submit() refuses; 0: unlimited
  // KV cache elements: F32 (exact), F16 or BF16 (half the memory and bandwidth).
  DType kv_dtype = DType::F32;
  // Decode a step ahead of the host: while the sequences of a decode step all sample on
  // the device, the next step is queued (its tokens fed on the device) before the ids
  // are read, so the device does not wait for the host between tokens. A sequence that
  // stops at a token wastes the step queued after it. -1: where the backend overlaps
  // downloads with work (CUDA, Vulkan; LLM_DECODE_AHEAD=0|1 overrides), 0: off, 1: on.
  int decode_ahead = -1;
  // Prefix caching: full pages of keys and values stay cached by the hash of the tokens
  // up to their end, and a prompt that starts with the same tokens (a system prompt, the
  // earlier turns of a chat) takes them instead of computing them again. Off for
  // recurrent state (RWKV); LLM_PREFIX_CACHE=0 turns it off.
  bool prefix_cache = true;
  // Speculative decoding by prompt lookup (core/engine/ngram_draft.h): a sequence sampled
  // on the device whose latest tokens occurred before gets up to this many of the tokens
  // that followed them as a draft, checked in the same step (each row draws its token with
  // the sequence's next u); the draft is kept up to the first row that drew otherwise, so
  // the output is the same, seed for seed, and a step may give several tokens. 0: off.
  // Steps are then not queued ahead of the host. Off for recurrent state (RWKV), which
  // cannot take back a rejected draft. LLM_LOOKUP_DRAFT=N overrides.
  int lookup_draft = 0;
  // Speculative decoding with a draft model (core/engine/draft_model.h): a small model of
  // the same vocabulary, on the same backend, proposes up to draft_tokens tokens greedily
  // (fewer after rejections) while one sequence runs that samples on the device; they are
  // checked as lookup drafts are (the output is the same), in place of them. Not with a
  // recurrent state (RWKV), and not while several sequences run (the draft model runs one
  // sequence at a time).
  Model* draft_model = nullptr;
  int draft_tokens = 4;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  int max_tokens = 256;           // < 0: until the context window is full
  std::vector<std::string> stop;  // stop strings (not included in the output)
  bool ignore_eos = false;
  // More tokens that end the reply (not shown), even with ignore_eos: e.g. a fill-in-the-
  // middle prompt's padding and file separators, or vLLM's stop_token_ids.
  std::vector<int32_t> stop_token_ids;
  int top_logprobs = -1;  // -1: no logprobs; 0..20: the chosen token's and this many others
  // Control tokens appear in the text (a reply's tool-call markers may be such tokens).
  bool keep_special = false;
  // A constrained reply: one JSON object (JsonSchema::any_object(), JSON mode) or one
  // that follows a compiled schema. Tokens that would leave it are masked and the
  // request stops when the object closes. Needs a tokenizer; samples on the host.
  std::shared_ptr<const JsonSchema> json;
};

// An embedding of a prompt: its final-norm rows pooled (core/engine/embedding.h). The
// prompt's KV is computed as for generation (and shared with the prefix cache), in steps
// of their own between generation steps.
struct EmbeddingRequest {
  std::vector<int32_t> prompt;
  Pooling pooling = Pooling::Mean;
  bool normalize = true;  // L2
};

enum class FinishReason { None, Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled", "error"

struct GenerationEvent {
  std::string text;                     // new text (stop strings and unfinished UTF-8 held back)
  std::vector<int32_t> tokens;          // new token ids
  std::vector<TokenLogprobs> logprobs;  // one per new token when asked
  FinishReason finish = FinishReason::None;  // set on the last event of a request
  std::string error;                         // FinishReason::Error
  std::string stop_string;                   // the stop string that ended it, if one did
  int prompt_tokens = 0;
  // Of those, the ones whose KV the prefix cache held when the request was first admitted.
  int cached_tokens = 0;
  int completion_tokens = 0;  // so far
  // An embedding request's result (its one event before an error or cancellation):
  // [hidden] pooled, [prompt_tokens, hidden] for Pooling::None.
  std::vector<float> embedding;
  // When the engine queued it (the reader may take it later): for timings.
  std::chrono::steady_clock::time_point queued_at;
};

// Thrown by submit() when the queue is full (the server answers 429).
class QueueFullError : public Error {
 public:
  using Error::Error;
};

// The events of one request, in order. Thread-safe.
class RequestStream {
 public:
  // Waits up to timeout for the next event; false on timeout.
  bool next(GenerationEvent& ev, std::chrono::milliseconds timeout);
  // Waits as long as it takes.
  GenerationEvent next();
  // Asks the engine to stop this request; a final event (Cancelled) follows.
  void cancel() { cancelled_ = true; }
  bool cancel_requested() const { return cancelled_; }
  uint64_t id() const { return id_; }

 private:
  friend class Engine;
  void push(GenerationEvent ev);
  uint64_t id_ = 0;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenerationEvent> events_;
};

struct EngineStats {
  int running = 0;
  int waiting = 0;
  int pages_used = 0;
  int pages_total = 0;
  uint64_t prompt_tokens = 0;  // prompt tokens run, preemption recompute included
  uint64_t generated_tokens = 0;
  uint64_t steps = 0;
  uint64_t steps_ahead = 0;  // decode steps queued before the ids of the one before were read
  uint64_t preemptions = 0;
  uint64_t prefix_cached_tokens = 0;  // prompt tokens taken from the prefix cache
  int pages_cached = 0;               // pages holding a cached prefix (in use or not)
  uint64_t draft_tokens = 0;          // speculative draft tokens checked
  uint64_t draft_accepted = 0;        // of which the model agreed with
};

class Engine {
 public:
  // tokenizer may be null: then events carry no text and stop strings are refused.
  Engine(Model& model, const Tokenizer* tokenizer, EngineOptions opts = {});
  ~Engine();  // cancels what is left and joins the scheduler
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request. Throws llm::Error for an invalid one (a prompt longer than
  // the context, bad sampling values) and QueueFullError when the queue is full.
  std::shared_ptr<RequestStream> submit(GenerationRequest req);
  // Queues an embedding; its stream gets one event (finish Stop) with the embedding.
  // Throws as submit() does.
  std::shared_ptr<RequestStream> submit_embedding(EmbeddingRequest req);
  int hidden_size() const { return model_.config().hidden_size; }
  EngineStats stats() const;
  int context_size() const { return context_size_; }
  int vocab_size() const { return model_.config().vocab_size; }
  size_t cache_bytes() const;
  const EngineOptions& options() const { return opts_; }
  // Stops admitting work; cancels everything queued or running.
  void shutdown();

 private:
  struct Sequence;
  struct StepPlan;
  void loop();
  void admit();
  // One step of the scheduler: an embedding step, the step queued ahead, or the next
  // one planned from the running sequences; false when there was nothing to run.
  bool step();
  void take_ahead_step(StepPlan& plan);
  bool run_next_step(StepPlan& plan);
  // Drafts for the decode-only step being planned (speculative decoding), within the
  // step's token budget; true if any sequence has one.
  bool plan_drafts(int& budget);
  // The token each sequence of the step draws (-1: a JSON reply that cannot go on).
  std::vector<int32_t> sample_step(const StepPlan& plan);
  // Takes the step's tokens: KV accounting, drafts kept, events out, stats.
  void finish_step(const StepPlan& plan, const std::vector<int32_t>& sampled);
  // Checks a prompt against the vocabulary and the context window.
  void check_prompt(const std::vector<int32_t>& prompt) const;
  std::shared_ptr<RequestStream> enqueue(std::unique_ptr<Sequence> seq);
  // A step of embedding prompts only (their graph ends at the final norm); false if
  // there is none to run. Between generation steps, turn by turn.
  bool embed_step();
  void finish(Sequence& s, FinishReason why, const std::string& error = {});
  void preempt_one(const Sequence* keep);
  void publish_stats();  // scheduler thread: running/waiting/pages into stats_
  void emit_token(Sequence& s, int32_t token, const float* logits);
  // Queues the next decode step of in_step (each sequence's next token fed on the device)
  // where every running sequence is in it and will go on; then last_ids holds the ids
  // of the step before it. False (nothing queued) otherwise.
  bool queue_ahead(const std::vector<Sequence*>& in_step, std::vector<int32_t>& last_ids);
  // Removes finished sequences from running_ (not those of a step queued ahead).
  void erase_done();
  // Prefix caching: takes the cached pages that start s's tokens (at admission), and
  // publishes the pages s has filled since.
  int adopt_cached_prefix(Sequence& s);
  void publish_full_pages(Sequence& s);

  Model& model_;
  const Tokenizer* tokenizer_;
  EngineOptions opts_;
  std::once_flag json_once_;
  std::unique_ptr<class JsonTokenMask> json_mask_;  // built for the first JSON-mode request
  int context_size_ = 0;
  std::vector<int32_t> eos_ids_;
  std::unique_ptr<class StepRunner> runner_;
  std::unique_ptr<class DraftModel> draft_;  // EngineOptions::draft_model's follower
  std::unique_ptr<class PagePool> pages_;
  std::vector<int> free_state_slots_;
  uint64_t admit_counter_ = 0;

  mutable std::mutex mu_;  // guards incoming_, stop_, stats_
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Sequence>> incoming_;
  bool stop_ = false;
  EngineStats stats_;
  uint64_t next_id_ = 1;

  // Owned by the scheduler thread.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  bool decode_ahead_ = false;
  bool prefix_cache_ = false;
  bool embed_turn_ = true;  // the next step goes to embeddings when both wait
  // The sequences of the decode step queued ahead, in row order (empty: none queued).
  std::vector<Sequence*> ahead_;
  std::thread thread_;
};

}  // namespace llm
