#include "core/engine/engine.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "core/engine/draft_model.h"
#include "core/engine/json_grammar.h"
#include "core/engine/kv_pages.h"
#include "core/engine/ngram_draft.h"
#include "core/engine/step_runner.h"
#include "core/engine/stop_matcher.h"

namespace llm {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None:
      return "none";
    case FinishReason::Stop:
      return "stop";
    case FinishReason::Length:
      return "length";
    case FinishReason::Cancelled:
      return "cancelled";
    case FinishReason::Error:
      return "error";
  }
  return "?";
}

// ---------------------------------------------------------------- RequestStream

void RequestStream::push(GenerationEvent ev) {
  ev.queued_at = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(ev));
  }
  cv_.notify_all();
}

bool RequestStream::next(GenerationEvent& ev, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return false;
  ev = std::move(events_.front());
  events_.pop_front();
  return true;
}

GenerationEvent RequestStream::next() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !events_.empty(); });
  GenerationEvent ev = std::move(events_.front());
  events_.pop_front();
  return ev;
}

// ---------------------------------------------------------------- Sequence

struct Engine::Sequence {
  Sequence(GenerationRequest r, const Tokenizer* tok)
      : req(std::move(r)), sampler(req.sampling), stop(req.stop) {
    if (tok) decoder = std::make_unique<StreamDecoder>(*tok, !req.keep_special);
  }
  std::shared_ptr<RequestStream> stream;
  GenerationRequest req;
  std::vector<int32_t> tokens;  // prompt and generated tokens fed (or to feed) to the model
  int n_prompt = 0;
  int n_cached = 0;        // tokens whose KV is in the cache
  int prompt_cached = -1;  // prompt tokens the prefix cache held at the first admission
  int n_generated = 0;
  uint64_t admitted = 0;  // admission order: the youngest is preempted first
  PageTable pages;
  int state_slot = -1;
  Sampler sampler;
  TokenHistory history;
  std::unique_ptr<StreamDecoder> decoder;
  StopMatcher stop;
  bool done = false;
  int take = 0;                   // tokens of this sequence in the current step
  std::optional<JsonReply> json;  // JSON mode: where the reply stands in its object
  // Prefix caching: the hash of the tokens up to the end of each of its first pages
  // that are published (or were adopted).
  std::vector<uint64_t> page_hashes;
  // An embedding request: its rows are pooled here instead of sampled.
  std::optional<EmbeddingPool> embedding;
  std::vector<int32_t> draft;  // speculative tokens fed after its next one in this step
  // Tokens the draft model proposes next (EngineOptions::draft_tokens at most): two more
  // after a draft kept whole, one fewer after a rejection (Hugging Face's assisted
  // generation schedule), so a draft that rarely agrees costs about one step a token.
  int draft_len = 0;
  bool drafted_by_model = false;  // this step's draft came from the draft model
  // Sampled on the device: each of a draft's rows draws its token (with the u the
  // sequence would use there), and the draft is kept up to the first row that differs.
  bool may_speculate() const { return samples_on_device() && !embedding; }
  // Its tokens are drawn by the step's Op::Sample (no logits cross to the host).
  bool samples_on_device() const {
    return sampler.samples_on_device() && req.top_logprobs < 0 && !json;
  }
};

// ---------------------------------------------------------------- Engine

Engine::Engine(Model& model, const Tokenizer* tokenizer, EngineOptions opts)
    : model_(model), tokenizer_(tokenizer), opts_(opts) {
  const ModelConfig& cfg = model.config();
  context_size_ =
      opts_.context_size > 0 ? opts_.context_size : std::min(cfg.max_position_embeddings, 4096);
  if (context_size_ <= 0) fail("context size must be positive");
  if (opts_.max_seqs <= 0) fail("max sequences must be positive, got %d", opts_.max_seqs);
  if (opts_.page_size <= 0) fail("page size must be positive, got %d", opts_.page_size);
  if (opts_.prefill_chunk_size < opts_.max_seqs)
    fail("prefill chunk size (%d) must be at least the number of sequences (%d)",
         opts_.prefill_chunk_size, opts_.max_seqs);
  if (opts_.max_queue < 0) fail("max queue must be >= 0, got %d", opts_.max_queue);

  for (int id : cfg.eos_token_ids) eos_ids_.push_back(id);
  if (tokenizer_)
    for (int32_t id : tokenizer_->eos_ids())
      if (std::find(eos_ids_.begin(), eos_ids_.end(), id) == eos_ids_.end()) eos_ids_.push_back(id);

  // Size the KV cache.
  check_kv_dtype(opts_.kv_dtype);
  const int64_t per_token = int64_t(cfg.num_layers) * 2 * cfg.num_kv_heads * cfg.head_dim *
                            int64_t(dtype_row_bytes(opts_.kv_dtype, 1));
  int64_t tokens = opts_.kv_cache_tokens;
  const int64_t most = int64_t(opts_.max_seqs) * context_size_;
  const size_t free_bytes = model.backend().info().free_memory;
  // Checked before allocating: a huge context would otherwise take all host memory
  // before failing (or be killed).
  auto check_fits = [&](int64_t n, const char* what) {
    if (free_bytes > 0 && per_token > 0 && double(n) * double(per_token) > double(free_bytes))
      fail(
          "%s of %lld tokens needs a KV cache of %.1f GiB, more than the %.1f GiB free on %s; "
          "lower --context-size%s",
          what, static_cast<long long>(n), double(n) * double(per_token) / double(1 << 30),
          double(free_bytes) / double(1 << 30), model.backend().info().id.c_str(),
          opts_.kv_cache_tokens > 0 ? " or --kv-cache-size" : " or use --kv-cache-type f16");
  };
  check_fits(context_size_, "a context window");
  if (tokens > 0) check_fits(tokens, "--kv-cache-size");
  if (tokens <= 0) {
    tokens = most;
    if (free_bytes > 0 && per_token > 0)
      tokens = std::min<int64_t>(most, int64_t(free_bytes * opts_.kv_memory_fraction) / per_token);
    tokens = std::max<int64_t>(tokens, context_size_);
  }
  if (tokens < context_size_)
    fail(
        "a KV cache of %lld tokens cannot hold one context window of %d tokens; raise "
        "--kv-cache-size or lower --context-size",
        static_cast<long long>(tokens), context_size_);
  const int n_pages = static_cast<int>((tokens + opts_.page_size - 1) / opts_.page_size);
  pages_ = std::make_unique<PagePool>(n_pages, opts_.page_size);

  StepRunnerOptions ro;
  ro.n_pages = n_pages;
  ro.page_size = opts_.page_size;
  ro.max_pages_per_seq = (context_size_ + opts_.page_size - 1) / opts_.page_size;
  ro.max_seqs = opts_.max_seqs;
  ro.max_tokens = opts_.prefill_chunk_size;
  ro.kv_dtype = opts_.kv_dtype;
  runner_ = std::make_unique<StepRunner>(model, ro);
  // Allocate the cache now, so that running out of memory shows at start-up.
  runner_->executor_for(1, 1);
  const char* ahead_env = std::getenv("LLM_DECODE_AHEAD");
  const int ahead = ahead_env && (!std::strcmp(ahead_env, "0") || !std::strcmp(ahead_env, "1"))
                        ? std::atoi(ahead_env)
                        : opts_.decode_ahead;
  decode_ahead_ = !runner_->has_recurrent_state() &&
                  (ahead < 0 ? model.backend().downloads_overlap() : ahead == 1);
  if (const char* draft_env = std::getenv("LLM_LOOKUP_DRAFT"))
    opts_.lookup_draft = std::atoi(draft_env);
  if (opts_.lookup_draft < 0 || opts_.lookup_draft > 32)
    fail("lookup draft must be in 0..32 tokens, got %d", opts_.lookup_draft);
  // A recurrent state takes every token fed, a rejected draft's too: no drafts there.
  if (runner_->has_recurrent_state()) opts_.lookup_draft = 0;
  if (opts_.draft_model) {
    if (runner_->has_recurrent_state())
      fail("a draft model needs a model whose cache can take tokens back (not %s)",
           model.config().model_type.c_str());
    // Sizes may differ by the padding of the embeddings (Qwen2.5: 151,936 rows in 0.5B,
    // 152,064 in 7B), as llama.cpp allows 128; the CLI compares the tokenizers' texts.
    const int32_t draft_vocab = opts_.draft_model->config().vocab_size;
    if (std::abs(draft_vocab - model.config().vocab_size) > 128)
      fail("the draft model's vocabulary (%d tokens) is not the model's (%d)", draft_vocab,
           model.config().vocab_size);
    if (opts_.draft_tokens < 1 || opts_.draft_tokens > 32)
      fail("draft tokens must be in 1..32, got %d", opts_.draft_tokens);
    SessionOptions so;
    so.context_size = context_size_;
    so.page_size = opts_.page_size;
    so.prefill_chunk_size = opts_.prefill_chunk_size;
    so.kv_dtype = opts_.kv_dtype;
    draft_ = std::make_unique<DraftModel>(*opts_.draft_model, so, model.config().vocab_size);
  }
  // Drafts are checked on the host.
  if (opts_.lookup_draft > 0 || draft_) decode_ahead_ = false;
  // The steps that check one sequence's draft (its token and up to most_drafted more) are
  // compiled now: on Vulkan each new shape builds pipelines, which stalled the first
  // drafts (H100, 1b drafting for itself: 121 tok/s on a fresh pipeline cache).
  const int most_drafted =
      std::min(draft_ ? opts_.draft_tokens : opts_.lookup_draft, opts_.prefill_chunk_size - 1);
  for (int n = 2; n <= most_drafted + 1; n++) runner_->prepare(n, 1, StepOutput::AllRows);
  // So are decode steps of 2-4 sequences, which Vulkan runs on GEMVs built for that many
  // tokens (more take the GEMM, whose pipelines do not depend on the count).
  for (int n = 2; n <= std::min(opts_.max_seqs, 4); n++)
    runner_->prepare(n, n, StepOutput::LastRows);
  const char* prefix_env = std::getenv("LLM_PREFIX_CACHE");
  prefix_cache_ = opts_.prefix_cache && !runner_->has_recurrent_state() &&
                  !(prefix_env && !std::strcmp(prefix_env, "0"));
  for (int i = opts_.max_seqs - 1; i >= 0; i--) free_state_slots_.push_back(i);
  stats_.pages_total = n_pages;
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  shutdown();
  if (thread_.joinable()) thread_.join();
}

void Engine::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
}

size_t Engine::cache_bytes() const { return runner_->cache_bytes(); }

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s = stats_;
  s.waiting += static_cast<int>(incoming_.size());
  return s;
}

void Engine::check_prompt(const std::vector<int32_t>& prompt) const {
  const int n_vocab = model_.config().vocab_size;
  const int n = static_cast<int>(prompt.size());
  if (n == 0) fail("the prompt is empty");
  for (int32_t id : prompt)
    if (id < 0 || id >= n_vocab) fail("token id %d is out of range (vocab size %d)", id, n_vocab);
  if (n > context_size_)
    fail("prompt of %d tokens exceeds the context window of %d tokens", n, context_size_);
}

std::shared_ptr<RequestStream> Engine::submit(GenerationRequest req) {
  const int n_vocab = model_.config().vocab_size;
  check_prompt(req.prompt);
  validate(req.sampling, n_vocab);
  if (req.top_logprobs > 20) fail("top_logprobs must be at most 20, got %d", req.top_logprobs);
  bool has_stop = false;
  for (const auto& s : req.stop) has_stop |= !s.empty();
  if (has_stop && !tokenizer_) fail("stop strings need a tokenizer");
  if (req.max_tokens == 0) fail("max_tokens must be at least 1");
  if (req.json) {
    if (!tokenizer_) fail("JSON mode needs a tokenizer");
    std::call_once(json_once_, [&] {
      std::vector<std::string> bytes(static_cast<size_t>(n_vocab));
      for (int id = 0; id < n_vocab && id < tokenizer_->vocab_size(); id++)
        if (!tokenizer_->is_special(id))
          bytes[static_cast<size_t>(id)] = tokenizer_->token_bytes(id);
      json_mask_ = std::make_unique<JsonTokenMask>(std::move(bytes));
    });
  }

  auto seq = std::make_unique<Sequence>(std::move(req), tokenizer_);
  if (seq->req.json) seq->json.emplace(*seq->req.json);
  return enqueue(std::move(seq));
}

std::shared_ptr<RequestStream> Engine::submit_embedding(EmbeddingRequest req) {
  check_prompt(req.prompt);
  GenerationRequest g;
  g.prompt = std::move(req.prompt);
  auto seq = std::make_unique<Sequence>(std::move(g), nullptr);
  seq->embedding.emplace(req.pooling, model_.config().hidden_size,
                         static_cast<int>(seq->req.prompt.size()), req.normalize);
  return enqueue(std::move(seq));
}

std::shared_ptr<RequestStream> Engine::enqueue(std::unique_ptr<Sequence> seq) {
  seq->tokens = seq->req.prompt;
  seq->n_prompt = static_cast<int>(seq->tokens.size());
  for (int32_t id : seq->tokens) seq->history.add_prompt(id);
  auto stream = std::make_shared<RequestStream>();
  seq->stream = stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) fail("the engine is shutting down");
    if (opts_.max_queue > 0 &&
        static_cast<int>(incoming_.size()) + stats_.waiting >= opts_.max_queue)
      throw QueueFullError("the request queue is full (" + std::to_string(opts_.max_queue) +
                           " waiting); retry later");
    stream->id_ = next_id_++;
    incoming_.push_back(std::move(seq));
  }
  cv_.notify_all();
  return stream;
}

void Engine::finish(Sequence& s, FinishReason why, const std::string& error) {
  if (s.done) return;
  s.done = true;
  if (draft_ && s.stream) draft_->drop(s.stream->id());
  s.pages.release(*pages_);
  if (s.state_slot >= 0) free_state_slots_.push_back(s.state_slot);
  s.state_slot = -1;
  publish_stats();  // before the last event, so a client never sees its pages in use
  if (why == FinishReason::Cancelled || why == FinishReason::Error) {
    GenerationEvent ev;
    ev.finish = why;
    ev.error = error;
    ev.prompt_tokens = s.n_prompt;
    ev.cached_tokens = std::max(0, s.prompt_cached);
    ev.completion_tokens = s.n_generated;
    s.stream->push(std::move(ev));
  }
}

void Engine::publish_stats() {
  int running = 0;
  for (const auto& s : running_) running += s->done ? 0 : 1;
  std::lock_guard<std::mutex> lock(mu_);
  stats_.running = running;
  stats_.waiting = static_cast<int>(waiting_.size());
  stats_.pages_used = pages_->used_pages();
  stats_.pages_cached = pages_->cached_pages();
}

void Engine::admit() {
  while (!waiting_.empty() && !free_state_slots_.empty() &&
         static_cast<int>(running_.size()) < opts_.max_seqs) {
    Sequence& s = *waiting_.front();
    // An embedding pooled over every row computes every row.
    const bool all_rows = s.embedding && s.embedding->needs_all_rows();
    const int adopted = all_rows ? 0 : adopt_cached_prefix(s);
    // Keep a page in hand for each running sequence's next decode token.
    const int n_tokens = std::min(static_cast<int>(s.tokens.size()) + 1, context_size_);
    const int need = pages_->pages_for(n_tokens) - adopted;
    if ((pages_->free_pages() < need + static_cast<int>(running_.size()) && !running_.empty()) ||
        !s.pages.reserve(*pages_, n_tokens)) {
      s.pages.release(*pages_);  // the adopted pages stay cached
      s.page_hashes.clear();
      break;
    }
    s.state_slot = free_state_slots_.back();
    free_state_slots_.pop_back();
    if (runner_->has_recurrent_state()) runner_->clear_state_row(s.state_slot);
    s.n_cached = adopted * pages_->page_size();
    if (s.prompt_cached < 0) s.prompt_cached = std::min(s.n_cached, s.n_prompt);
    if (s.embedding) s.embedding->reset();  // preempted before: it starts over
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.prefix_cached_tokens += static_cast<uint64_t>(s.n_cached);
    }
    s.admitted = ++admit_counter_;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

void Engine::preempt_one(const Sequence* keep) {
  // The youngest running sequence goes back to the front of the queue; its KV is
  // recomputed when it is admitted again.
  auto youngest = running_.end();
  for (auto it = running_.begin(); it != running_.end(); ++it)
    if (!(*it)->done && it->get() != keep &&
        (youngest == running_.end() || (*it)->admitted > (*youngest)->admitted))
      youngest = it;
  if (youngest == running_.end()) fail("internal: nothing to preempt");
  Sequence& s = **youngest;
  s.pages.release(*pages_);
  s.page_hashes.clear();
  free_state_slots_.push_back(s.state_slot);
  s.state_slot = -1;
  s.n_cached = 0;
  waiting_.push_front(std::move(*youngest));
  running_.erase(youngest);
  std::lock_guard<std::mutex> lock(mu_);
  stats_.preemptions++;
}

int Engine::adopt_cached_prefix(Sequence& s) {
  if (!prefix_cache_) return 0;
  const int ps = pages_->page_size();
  // Whole pages only, and not the last token: its logits are what the step computes.
  const int limit = (static_cast<int>(s.tokens.size()) - 1) / ps;
  uint64_t h = 0;
  for (int j = 0; j < limit; j++) {
    h = prefix_page_hash(h, s.tokens.data() + static_cast<size_t>(j) * ps, ps);
    const int page = pages_->adopt(h);
    if (page < 0) break;
    s.pages.append(page);
    s.page_hashes.push_back(h);
  }
  return static_cast<int>(s.page_hashes.size());
}

void Engine::publish_full_pages(Sequence& s) {
  if (!prefix_cache_) return;
  const int ps = pages_->page_size();
  const int written = std::min(s.n_cached, static_cast<int>(s.tokens.size()));
  for (size_t j = s.page_hashes.size(); static_cast<int>(j + 1) * ps <= written; j++) {
    const uint64_t h = prefix_page_hash(j > 0 ? s.page_hashes[j - 1] : 0,
                                        s.tokens.data() + j * static_cast<size_t>(ps), ps);
    pages_->publish(s.pages.pages()[j], h);
    s.page_hashes.push_back(h);
  }
}

void Engine::emit_token(Sequence& s, int32_t token, const float* logits) {
  const int n_vocab = model_.config().vocab_size;
  s.history.add_output(token);
  s.n_generated++;
  GenerationEvent ev;
  ev.tokens = {token};
  if (s.req.top_logprobs >= 0)
    ev.logprobs.push_back(token_logprobs(logits, n_vocab, token, s.req.top_logprobs));
  const auto& stops = s.req.stop_token_ids;
  const bool eos =
      (!s.req.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end()) ||
      std::find(stops.begin(), stops.end(), token) != stops.end();
  if (!eos && s.decoder) ev.text = s.stop.push(s.decoder->push(token));

  // JSON mode: the object closed with this token, so the reply is complete.
  const bool json_done =
      s.json && json_mask_ && s.json->feed(json_mask_->bytes(token)) && s.json->done();
  FinishReason why = FinishReason::None;
  if (eos || s.stop.stopped() || json_done)
    why = FinishReason::Stop;
  else if ((s.req.max_tokens > 0 && s.n_generated >= s.req.max_tokens) ||
           static_cast<int>(s.tokens.size()) + 1 > context_size_)
    why = FinishReason::Length;
  if (why != FinishReason::None && !s.stop.stopped() && s.decoder) {
    ev.text += s.stop.push(s.decoder->flush());
    ev.text += s.stop.flush();
    if (s.stop.stopped()) why = FinishReason::Stop;
  }
  ev.finish = why;
  if (s.stop.stopped()) ev.stop_string = s.stop.matched();
  ev.prompt_tokens = s.n_prompt;
  ev.cached_tokens = std::max(0, s.prompt_cached);
  ev.completion_tokens = s.n_generated;
  if (why != FinishReason::None)
    finish(s, why);
  else
    s.tokens.push_back(token);
  s.stream->push(std::move(ev));
}

// What one step runs: its sequences in row order, and how each one's token is drawn.
struct Engine::StepPlan {
  std::vector<Sequence*> in_step;
  std::vector<StepSeq> seqs;
  std::vector<char> on_host;  // sampled on the host (its logits copied back)
  bool any_host = false, any_device = false;
  bool speculative = false;  // every token's row sampled (drafts to check)
  // The row of sequence i's last token.
  size_t row(size_t i) const {
    return speculative ? static_cast<size_t>(seqs[i].first + seqs[i].count - 1) : i;
  }
};

bool Engine::step() {
  if (ahead_.empty()) {
    // Embedding steps take turns with generation steps while both have work.
    bool embeds = false, generates = false;
    for (const auto& s : running_) (s->embedding ? embeds : generates) |= !s->done;
    if (embeds && (embed_turn_ || !generates)) {
      embed_turn_ = false;
      return embed_step();
    }
    embed_turn_ = true;
  }
  StepPlan plan;
  if (!ahead_.empty())
    take_ahead_step(plan);
  else if (!run_next_step(plan))
    return false;
  finish_step(plan, sample_step(plan));
  return true;
}

void Engine::take_ahead_step(StepPlan& plan) {
  // The step queued ahead: one device-sampled token for each of its sequences (those
  // finished since are skipped when its tokens are taken).
  plan.in_step = std::move(ahead_);
  ahead_.clear();
  for (size_t i = 0; i < plan.in_step.size(); i++) {
    StepSeq q;
    q.first = static_cast<int>(i);
    q.count = 1;
    q.wants_logits = true;
    plan.seqs.push_back(q);
    plan.on_host.push_back(false);
  }
  plan.any_device = true;
}

bool Engine::run_next_step(StepPlan& plan) {
  // Every decode token needs its slot: grow page tables oldest first, preempting
  // the youngest sequences when pages run out.
  std::sort(running_.begin(), running_.end(),
            [](const auto& a, const auto& b) { return a->admitted < b->admitted; });
  for (size_t i = 0; i < running_.size(); i++) {
    Sequence* s = running_[i].get();
    const int want = static_cast<int>(s->tokens.size());
    while (!s->pages.reserve(*pages_, want)) {
      if (running_.size() == 1) fail("internal: the KV cache cannot hold one sequence");
      const bool self_youngest = running_.back().get() == s;
      preempt_one(self_youngest ? nullptr : s);
      if (self_youngest) break;
    }
  }
  if (running_.empty()) return false;

  // Decode tokens first, then prompt chunks in admission order (embeddings run in
  // steps of their own).
  int budget = opts_.prefill_chunk_size;
  for (auto& s : running_) {
    const int pending = static_cast<int>(s->tokens.size()) - s->n_cached;
    s->take = pending == 1 && !s->embedding ? 1 : 0;
    budget -= s->take;
  }
  for (auto& s : running_) {
    const int pending = static_cast<int>(s->tokens.size()) - s->n_cached;
    if (pending > 1 && budget > 0 && !s->embedding) {
      s->take = std::min(pending, budget);
      budget -= s->take;
    }
  }
  plan.speculative = plan_drafts(budget);
  // Rows without logit bias, penalties or logprobs are sampled on the device by
  // the step's Op::Sample (R ids cross the bus, not R x vocab logits); the others need
  // their logits on the host.
  std::vector<int32_t> tokens, positions;
  for (auto& s : running_) {
    if (s->take == 0) continue;
    StepSeq q;
    q.pages = &s->pages.pages();
    q.state_slot = s->state_slot;
    q.first = static_cast<int>(tokens.size());
    q.count = s->take + static_cast<int>(s->draft.size());
    q.wants_logits = s->n_cached + s->take == static_cast<int>(s->tokens.size());
    for (int i = 0; i < s->take; i++) {
      tokens.push_back(s->tokens[s->n_cached + i]);
      positions.push_back(s->n_cached + i);
    }
    for (size_t i = 0; i < s->draft.size(); i++) {
      tokens.push_back(s->draft[i]);
      positions.push_back(s->n_cached + s->take + static_cast<int>(i));
    }
    const bool host = q.wants_logits && !s->samples_on_device();
    if (q.wants_logits && !host) q.sample = s->sampler.device_params();
    if (!s->draft.empty())
      q.more_samples = s->sampler.peek_device_params(static_cast<int>(s->draft.size()));
    (host ? plan.any_host : plan.any_device) |= q.wants_logits;
    plan.on_host.push_back(host);
    plan.seqs.push_back(q);
    plan.in_step.push_back(s.get());
  }
  if (plan.seqs.empty()) return false;
  runner_->run(tokens, positions, plan.seqs,
               plan.speculative ? StepOutput::AllRows : StepOutput::LastRows);
  return true;
}

bool Engine::plan_drafts(int& budget) {
  // Only in decode-only steps: sequences sampled on the device take a draft of the tokens
  // that followed their latest n-gram before, checked by sampling every token's row.
  bool decode_only = opts_.lookup_draft > 0 || draft_;
  for (auto& s : running_) decode_only = decode_only && s->take <= 1;
  // The draft model runs one sequence at a time: worth it while one runs.
  const bool by_model = draft_ && running_.size() == 1;
  const int most = by_model ? opts_.draft_tokens : opts_.lookup_draft;
  bool any = false;
  for (auto& s : running_) {
    s->draft.clear();
    if (!decode_only || s->take != 1 || !s->may_speculate()) continue;
    if (by_model && s->draft_len <= 0) s->draft_len = most;
    int room = std::min({by_model ? s->draft_len : most, budget,
                         context_size_ - static_cast<int>(s->tokens.size())});
    if (s->req.max_tokens > 0) room = std::min(room, s->req.max_tokens - s->n_generated - 1);
    if (room <= 0) continue;
    s->draft = by_model ? draft_->propose(s->stream->id(), s->tokens, room)
                        : lookup_draft(s->tokens, room);
    s->drafted_by_model = by_model;
    // Its slots, without preempting anyone.
    if (!s->draft.empty() &&
        !s->pages.reserve(*pages_, static_cast<int>(s->tokens.size() + s->draft.size())))
      s->draft.clear();
    budget -= static_cast<int>(s->draft.size());
    any = any || !s->draft.empty();
  }
  return any;
}

std::vector<int32_t> Engine::sample_step(const StepPlan& plan) {
  const std::vector<Sequence*>& in_step = plan.in_step;
  std::vector<int32_t> sampled(in_step.size(), -1);
  if (plan.any_device) {
    std::vector<int32_t> ids;
    if (plan.any_host || !queue_ahead(in_step, ids)) ids = runner_->sampled();
    for (size_t i = 0; i < in_step.size(); i++)
      if (plan.seqs[i].wants_logits && !plan.on_host[i]) sampled[i] = ids[plan.row(i)];
  }
  if (!plan.any_host) return sampled;
  const int n_vocab = model_.config().vocab_size;
  const std::vector<float>& logits = runner_->logits();
  // Sampling reads every logit of a row (softmax); with many rows the host
  // threads share them. Each sequence has its own sampler, so rows are independent.
  auto sample_rows = [&](size_t first, size_t step) {
    std::vector<float> masked;
    for (size_t i = first; i < in_step.size(); i += step) {
      if (!plan.on_host[i]) continue;
      Sequence& s = *in_step[i];
      const float* row = logits.data() + plan.row(i) * size_t(n_vocab);
      if (s.json) {
        // JSON mode: only tokens that keep the reply inside its object (-1: none can).
        masked.assign(row, row + n_vocab);
        if (!json_mask_->apply(*s.json, masked.data(), n_vocab)) {
          sampled[i] = -1;
          continue;
        }
        row = masked.data();
      }
      sampled[i] = s.sampler.sample(row, n_vocab, &s.history);
    }
  };
  const size_t n_threads =
      std::min<size_t>({in_step.size(), std::max(1u, std::thread::hardware_concurrency()), 16});
  if (n_threads > 1 && in_step.size() * size_t(n_vocab) >= (1u << 20)) {
    std::vector<std::thread> pool;
    for (size_t t = 1; t < n_threads; t++) pool.emplace_back(sample_rows, t, n_threads);
    sample_rows(0, n_threads);
    for (auto& t : pool) t.join();
  } else {
    sample_rows(0, 1);
  }
  return sampled;
}

void Engine::finish_step(const StepPlan& plan, const std::vector<int32_t>& sampled) {
  const int n_vocab = model_.config().vocab_size;
  uint64_t prompt_run = 0, generated = 0;
  for (size_t i = 0; i < plan.in_step.size(); i++) {
    Sequence& s = *plan.in_step[i];
    if (s.done) continue;  // finished while its step was queued ahead
    const bool was_prefill = s.take > 1 || s.n_cached < s.n_prompt;
    if (was_prefill) prompt_run += s.take;
    s.n_cached += s.take;
    publish_full_pages(s);
    if (!plan.seqs[i].wants_logits) continue;
    int32_t next = sampled[i];
    if (next < 0) {
      finish(s, FinishReason::Error, "JSON mode: no token of the vocabulary continues the object");
      continue;
    }
    if (!s.draft.empty()) {
      // The draft's tokens that the rows drew too, in order: each one's KV is then valid,
      // and each drawn as it would be without the draft (a token drawn from the row's
      // distribution, kept when it is the draft's: exact speculative sampling for a
      // draft of one candidate). Row first + j holds the draw after the j-th token fed.
      const std::vector<int32_t>& ids = runner_->sampled();
      const size_t first = static_cast<size_t>(plan.seqs[i].first);
      size_t a = 0;
      while (a < s.draft.size() && s.draft[a] == ids[first + a]) a++;
      if (s.drafted_by_model)
        s.draft_len = a == s.draft.size() ? std::min(s.draft_len + 2, opts_.draft_tokens)
                                          : std::max(s.draft_len - 1, 1);
      {
        // Counted before its tokens go out: a client reading the stats once its reply
        // has ended (generate, chat's /stats) sees this step's drafts.
        std::lock_guard<std::mutex> lock(mu_);
        stats_.draft_tokens += s.draft.size();
        stats_.draft_accepted += a;
      }
      for (size_t j = 0; j < a && !s.done; j++) {
        emit_token(s, s.draft[j], nullptr);
        generated++;
        if (s.done) break;
        s.n_cached++;
        publish_full_pages(s);
      }
      next = ids[first + a];
      s.sampler.skip_device_params(static_cast<int>(a));  // the draws of the kept rows
      s.draft.clear();
      if (s.done) continue;
    }
    emit_token(
        s, next,
        plan.on_host[i] ? runner_->logits().data() + plan.row(i) * size_t(n_vocab) : nullptr);
    generated++;
  }
  erase_done();
  std::lock_guard<std::mutex> lock(mu_);
  stats_.prompt_tokens += prompt_run;
  stats_.generated_tokens += generated;
  stats_.steps++;
}

bool Engine::embed_step() {
  // Every embedding prompt's pages are reserved at admission, so no preemption here.
  int budget = opts_.prefill_chunk_size;
  std::vector<Sequence*> in_step;
  std::vector<StepSeq> seqs;
  std::vector<int32_t> tokens, positions;
  for (auto& s : running_) {
    const int pending = static_cast<int>(s->tokens.size()) - s->n_cached;
    if (!s->embedding || s->done || pending <= 0 || budget <= 0) continue;
    if (!s->pages.reserve(*pages_, static_cast<int>(s->tokens.size())))
      fail("internal: an embedding prompt's pages were not reserved");
    StepSeq q;
    q.pages = &s->pages.pages();
    q.state_slot = s->state_slot;
    q.first = static_cast<int>(tokens.size());
    q.count = std::min(pending, budget);
    budget -= q.count;
    for (int i = 0; i < q.count; i++) {
      tokens.push_back(s->tokens[static_cast<size_t>(s->n_cached + i)]);
      positions.push_back(s->n_cached + i);
    }
    seqs.push_back(q);
    in_step.push_back(s.get());
  }
  if (seqs.empty()) return false;
  runner_->run(tokens, positions, seqs, StepOutput::Hidden);
  const std::vector<float>& rows = runner_->hidden();
  const size_t D = static_cast<size_t>(model_.config().hidden_size);
  uint64_t prompt_run = 0;
  for (size_t i = 0; i < in_step.size(); i++) {
    Sequence& s = *in_step[i];
    s.embedding->add(rows.data() + static_cast<size_t>(seqs[i].first) * D, s.n_cached,
                     seqs[i].count);
    s.n_cached += seqs[i].count;
    prompt_run += static_cast<uint64_t>(seqs[i].count);
    publish_full_pages(s);
    if (s.n_cached < static_cast<int>(s.tokens.size())) continue;
    GenerationEvent ev;
    ev.embedding = s.embedding->result();
    ev.finish = FinishReason::Stop;
    ev.prompt_tokens = s.n_prompt;
    ev.cached_tokens = std::max(0, s.prompt_cached);
    finish(s, FinishReason::Stop);
    s.stream->push(std::move(ev));
  }
  erase_done();
  std::lock_guard<std::mutex> lock(mu_);
  stats_.prompt_tokens += prompt_run;
  stats_.steps++;
  return true;
}

bool Engine::queue_ahead(const std::vector<Sequence*>& in_step, std::vector<int32_t>& last_ids) {
  if (!decode_ahead_ || !waiting_.empty()) return false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!incoming_.empty() || stop_) return false;
  }
  // Every running sequence decodes one device-sampled token in this step and does not
  // stop at it by length (a stop at EOS or a stop string cannot be known: the step
  // after it is then wasted).
  size_t live = 0;
  for (const auto& s : running_) live += s->done ? 0 : 1;
  if (live != in_step.size()) return false;
  for (const Sequence* s : in_step) {
    const int next_len = static_cast<int>(s->tokens.size()) + 1;
    if (s->done || s->take != 1 || s->n_cached + 1 != static_cast<int>(s->tokens.size()) ||
        !s->samples_on_device() ||
        (s->req.max_tokens > 0 && s->n_generated + 1 >= s->req.max_tokens) ||
        next_len > context_size_)
      return false;
  }
  if (!runner_->can_run_ahead(static_cast<int>(in_step.size()))) return false;
  // The next token's slot (at position tokens.size()), without preempting anyone.
  for (Sequence* s : in_step)
    if (!s->pages.reserve(*pages_, static_cast<int>(s->tokens.size()) + 1)) return false;
  std::vector<int32_t> positions;
  std::vector<StepSeq> seqs;
  for (size_t i = 0; i < in_step.size(); i++) {
    Sequence* s = in_step[i];
    StepSeq q;
    q.pages = &s->pages.pages();
    q.state_slot = s->state_slot;
    q.first = static_cast<int>(i);
    q.count = 1;
    q.wants_logits = true;
    q.sample = s->sampler.device_params();
    positions.push_back(static_cast<int>(s->tokens.size()));
    seqs.push_back(q);
  }
  if (!runner_->run_ahead(positions, seqs, last_ids)) return false;
  ahead_ = in_step;
  std::lock_guard<std::mutex> lock(mu_);
  stats_.steps_ahead++;
  return true;
}

void Engine::erase_done() {
  running_.erase(std::remove_if(running_.begin(), running_.end(),
                                [&](const auto& s) {
                                  return s->done && std::find(ahead_.begin(), ahead_.end(),
                                                              s.get()) == ahead_.end();
                                }),
                 running_.end());
}

void Engine::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        return stop_ || !incoming_.empty() || !running_.empty() || !waiting_.empty();
      });
      while (!incoming_.empty()) {
        waiting_.push_back(std::move(incoming_.front()));
        incoming_.pop_front();
      }
      if (stop_) break;
    }
    // Cancellations, wherever the request is.
    for (auto& s : running_)
      if (s->stream->cancel_requested()) finish(*s, FinishReason::Cancelled);
    erase_done();
    for (auto& s : waiting_)
      if (s->stream->cancel_requested()) finish(*s, FinishReason::Cancelled);
    waiting_.erase(
        std::remove_if(waiting_.begin(), waiting_.end(), [](const auto& s) { return s->done; }),
        waiting_.end());

    admit();
    try {
      step();
    } catch (const std::exception& e) {
      // A failed step (device error, out of memory) ends the requests it held.
      for (auto& s : running_) finish(*s, FinishReason::Error, e.what());
      ahead_.clear();
      running_.clear();
    }
    publish_stats();
  }
  for (auto& s : running_) finish(*s, FinishReason::Cancelled);
  for (auto& s : waiting_) finish(*s, FinishReason::Cancelled);
  ahead_.clear();
  running_.clear();
  waiting_.clear();
}

}  // namespace llm
