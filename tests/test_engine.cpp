// The engine: paged KV bookkeeping, stop strings, penalties, and continuous
// batching that gives every request exactly the tokens it gets alone.
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>
#include <tuple>

#include "backends/registry.h"
#include "core/engine/draft_model.h"
#include "core/engine/engine.h"
#include "core/engine/kv_pages.h"
#include "core/engine/ngram_draft.h"
#include "core/engine/session.h"
#include "core/engine/stop_matcher.h"
#include "test_util.h"

using namespace llm;
using namespace std::chrono_literals;

namespace {

struct Collected {
  std::vector<int32_t> tokens;
  std::string text;
  FinishReason finish = FinishReason::None;
  std::string error;
  std::vector<TokenLogprobs> logprobs;
  int events = 0;
};

Collected collect(RequestStream& s) {
  Collected c;
  for (;;) {
    GenerationEvent ev;
    REQUIRE(s.next(ev, 60s));  // a hang fails the test instead of blocking it
    c.events++;
    c.tokens.insert(c.tokens.end(), ev.tokens.begin(), ev.tokens.end());
    c.text += ev.text;
    c.logprobs.insert(c.logprobs.end(), ev.logprobs.begin(), ev.logprobs.end());
    if (ev.finish != FinishReason::None) {
      c.finish = ev.finish;
      c.error = ev.error;
      return c;
    }
  }
}

// Waits until the scheduler has returned every page (it updates its stats after
// the events of a step are out).
void wait_idle(const Engine& e) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((e.stats().pages_used != 0 || e.stats().running != 0) &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
}

GenerationRequest greedy_request(std::vector<int32_t> prompt, int max_tokens) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

// Prompts of different lengths from a fixed seed, ids in [3, vocab).
std::vector<std::vector<int32_t>> make_prompts(int n, int vocab, int min_len, int max_len) {
  std::mt19937 rng(1234);
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < n; i++) {
    const int len = min_len + static_cast<int>(rng() % (max_len - min_len + 1));
    std::vector<int32_t> p(len);
    for (auto& t : p) t = 3 + static_cast<int32_t>(rng() % (vocab - 3));
    out.push_back(p);
  }
  return out;
}

// The tiny synthetic llama with the Llama 2 vocabulary (a real tokenizer).
struct TinyChatModel {
  std::unique_ptr<Backend> backend = create_backend("cpu", 2);
  std::unique_ptr<Model> model = Model::load(test::tiny_chat_model("q0f32", 3), *backend);
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::load(test::tiny_chat_model("q0f32", 3));
};

}  // namespace

TEST_CASE("page pool hands out each page once and takes them back", "[engine]") {
  PagePool pool(4, 16);
  CHECK(pool.pages_for(1) == 1);
  CHECK(pool.pages_for(16) == 1);
  CHECK(pool.pages_for(17) == 2);
  PageTable a, b;
  REQUIRE(a.reserve(pool, 20));  // 2 pages
  CHECK(a.pages().size() == 2);
  REQUIRE(a.reserve(pool, 32));  // still 2
  CHECK(pool.free_pages() == 2);
  CHECK_FALSE(b.reserve(pool, 49));  // 4 pages: too many, and nothing taken
  CHECK(pool.free_pages() == 2);
  REQUIRE(b.reserve(pool, 32));
  CHECK(pool.free_pages() == 0);
  std::vector<int> all = a.pages();
  all.insert(all.end(), b.pages().begin(), b.pages().end());
  std::sort(all.begin(), all.end());
  CHECK(all == std::vector<int>{0, 1, 2, 3});
  CHECK(a.slot(17, 16) == a.pages()[1] * 16 + 1);
  a.release(pool);
  CHECK(pool.free_pages() == 2);
  CHECK(a.pages().empty());
  CHECK_THROWS_WITH(pool.give_back({b.pages()[0], b.pages()[0]}),
                    Catch::Contains("returned twice"));
}

TEST_CASE("cached prefix pages are shared, kept while idle and evicted oldest first",
          "[engine][prefix]") {
  PagePool pool(3, 4);
  const int32_t toks[] = {1, 2, 3, 4, 5, 6, 7, 8};
  const uint64_t ha = prefix_page_hash(0, toks, 4), hb = prefix_page_hash(ha, toks + 4, 4);
  CHECK(ha != hb);
  CHECK(prefix_page_hash(0, toks, 4) == ha);
  CHECK(prefix_page_hash(1, toks, 4) != ha);  // the chain matters, not just the tokens
  CHECK(pool.adopt(ha) == -1);
  const int a = pool.take(), b = pool.take();
  pool.publish(a, ha);
  pool.publish(b, hb);
  pool.publish(b, ha);  // a prefix is cached once
  CHECK(pool.cached_pages() == 2);
  // Shared: a second holder, and the page stays until both let go.
  CHECK(pool.adopt(ha) == a);
  pool.give_back({a});
  CHECK(pool.free_pages() == 1);
  pool.give_back({a, b});  // idle now, still cached, and free to take
  CHECK(pool.free_pages() == 3);
  CHECK(pool.used_pages() == 0);
  CHECK(pool.cached_pages() == 2);
  CHECK_THROWS_WITH(pool.give_back({a}), Catch::Contains("returned twice"));
  // Taking: the never-published page first, then the idle page used least recently (a).
  const int c = pool.take();
  CHECK(c != a);
  CHECK(c != b);
  CHECK(pool.take() == a);
  CHECK(pool.adopt(ha) == -1);
  CHECK(pool.adopt(hb) == b);
  CHECK(pool.take() == -1);
}

TEST_CASE("stop strings are found across pushes and held back until decided", "[engine]") {
  StopMatcher m({"</s>", "STOP"});
  CHECK(m.push("Hello <") == "Hello ");
  CHECK(m.push("/") == "");
  CHECK(m.push("x") == "</x");  // not a stop string after all
  CHECK(m.push(" wo") == " wo");
  CHECK(m.push("rd ST") == "rd ");
  CHECK_FALSE(m.stopped());
  CHECK(m.push("OP and more") == "");
  CHECK(m.stopped());
  CHECK(m.matched() == "STOP");
  CHECK(m.push("ignored") == "");
  CHECK(m.flush() == "");

  StopMatcher tail({"abc"});
  CHECK(tail.push("xxab") == "xx");
  CHECK(tail.flush() == "ab");  // the generation ended: nothing is a stop string

  StopMatcher earliest({"bc", "a"});
  CHECK(earliest.push("xabc") == "x");
  CHECK(earliest.matched() == "a");

  StopMatcher none({});
  CHECK(none.push("anything") == "anything");
}

TEST_CASE("logit bias and penalties change the logits as documented", "[engine][sampling]") {
  std::vector<float> logits = {1.f, 2.f, -1.f, 0.5f};
  TokenHistory h;
  h.add_prompt(0);
  h.add_output(2);
  h.add_output(2);
  h.add_output(3);
  SamplingParams p;
  p.repetition_penalty = 2.f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  p.logit_bias = {{1, -3.f}};
  Sampler s(p);
  std::vector<float> out = logits;
  s.adjust(out.data(), 4, &h);
  CHECK(out[0] == Approx(0.5f));                      // prompt token: 1 / 2
  CHECK(out[1] == Approx(-1.f));                      // bias only
  CHECK(out[2] == Approx(-2.f - 0.5f - 0.25f * 2));   // -1 * 2, then presence + 2 * frequency
  CHECK(out[3] == Approx(0.25f - 0.5f - 0.25f * 1));  // 0.5 / 2, then penalties
  // Greedy follows the adjusted logits: token 0 is now the largest.
  CHECK(s.sample(logits.data(), 4, &h) == 0);

  SamplingParams bad;
  bad.logit_bias = {{7, 1.f}};
  CHECK_THROWS_WITH(validate(bad, 4), Catch::Contains("out of range"));
  bad.logit_bias = {{1, 500.f}};
  CHECK_THROWS_WITH(validate(bad), Catch::Contains("logit_bias"));
  SamplingParams neg;
  neg.repetition_penalty = 0.f;
  CHECK_THROWS_WITH(validate(neg), Catch::Contains("repetition_penalty"));
}

TEST_CASE("token logprobs are a log-softmax with the top alternatives", "[engine][sampling]") {
  std::vector<float> logits = {0.f, 1.f, 2.f};
  const TokenLogprobs lp = token_logprobs(logits.data(), 3, 1, 2);
  const double z = std::log(std::exp(0.0) + std::exp(1.0) + std::exp(2.0));
  CHECK(lp.logprob == Approx(1.0 - z));
  REQUIRE(lp.top.size() == 2);
  CHECK(lp.top[0].first == 2);
  CHECK(lp.top[0].second == Approx(2.0 - z));
  CHECK(lp.top[1].first == 1);
}

TEST_CASE("engine: one request alone gives the reference greedy ids", "[engine]") {
  auto backend = create_backend("cpu", 2);
  for (const char* name : {"llama2", "qwen2", "mistral"}) {
    DYNAMIC_SECTION(name) {
      auto model = Model::load(test::model_dir(name), *backend);
      const test::Reference ref = test::load_reference(name);
      Engine engine(*model, nullptr, EngineOptions{});
      auto s =
          engine.submit(greedy_request(ref.input_ids, static_cast<int>(ref.greedy_ids.size())));
      const Collected c = collect(*s);
      CHECK(c.finish == FinishReason::Length);
      CHECK(c.tokens == ref.greedy_ids);
    }
  }
}

namespace {

// Greedy tokens of each prompt, all submitted at once (each `gap` after the last);
// afterwards every page is back in the pool. With max_seqs 1 this is each prompt alone.
std::vector<std::vector<int32_t>> decode_all(Model& model,
                                             const std::vector<std::vector<int32_t>>& prompts,
                                             int n_new, const EngineOptions& o,
                                             std::chrono::milliseconds gap = 0ms,
                                             uint64_t* preemptions = nullptr,
                                             uint64_t* steps_ahead = nullptr) {
  Engine engine(model, nullptr, o);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& p : prompts) {
    streams.push_back(engine.submit(greedy_request(p, n_new)));
    if (gap.count() > 0) std::this_thread::sleep_for(gap);
  }
  std::vector<std::vector<int32_t>> out;
  for (auto& s : streams) out.push_back(collect(*s).tokens);
  wait_idle(engine);
  CHECK(engine.stats().pages_used == 0);
  if (preemptions) *preemptions = engine.stats().preemptions;
  if (steps_ahead) *steps_ahead = engine.stats().steps_ahead;
  return out;
}

EngineOptions batch_options(int max_seqs, int prefill_chunk) {
  EngineOptions o;
  o.max_seqs = max_seqs;
  o.prefill_chunk_size = prefill_chunk;
  return o;
}

}  // namespace

TEST_CASE("engine: prompts decoded together give exactly the tokens of each alone",
          "[engine][batch]") {
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama2"), *backend);
  const auto prompts = make_prompts(7, model->config().vocab_size, 1, 40);
  const int n_new = 24;
  // Alone: one sequence at a time, long prompts in several chunks.
  const auto alone = decode_all(*model, prompts, n_new, batch_options(1, 16));
  for (const auto& a : alone) REQUIRE(a.size() == size_t(n_new));

  SECTION("all at once, mixed prefill and decode") {
    CHECK(decode_all(*model, prompts, n_new, batch_options(8, 32)) == alone);
  }
  SECTION("a KV cache so small that sequences are preempted and recomputed") {
    EngineOptions o = batch_options(4, 32);
    o.context_size = 64;
    o.kv_cache_tokens = 96;  // 6 pages of 16: not enough for 4 sequences of ~60 tokens
    uint64_t preemptions = 0;
    CHECK(decode_all(*model, prompts, n_new, o, 0ms, &preemptions) == alone);
    CHECK(preemptions > 0);
  }
  SECTION("requests arriving while others decode") {
    CHECK(decode_all(*model, prompts, n_new, batch_options(4, 8), 2ms) == alone);
  }
}

namespace {

// N prompts decoded together give the tokens each gets alone (greedy), on a GPU
// backend; also against the reference greedy ids of the fixture.
// Speculation with a draft model gives the tokens of decoding without it: the model as its
// own draft (every draft kept) and its q4 quantization (some not), greedy and sampled.
void check_draft_model(Model& model) {
  auto q4 = Model::load(test::model_dir("llama2"), model.backend(), LoadOptions("q4f16_1"));
  const auto prompts = make_prompts(2, model.config().vocab_size, 5, 30);
  GenerationRequest sampled = greedy_request(prompts[1], 24);
  sampled.sampling.temperature = 0.7f;
  sampled.sampling.top_k = 30;
  sampled.sampling.seed = 5;
  Engine plain_engine(model, nullptr, batch_options(1, 16));
  const auto want_greedy = collect(*plain_engine.submit(greedy_request(prompts[0], 24))).tokens;
  const auto want_sampled = collect(*plain_engine.submit(sampled)).tokens;
  for (Model* draft : {&model, q4.get()}) {
    DYNAMIC_SECTION((draft == &model ? "the model as its own draft" : "a q4 draft")) {
      EngineOptions o = batch_options(1, 16);
      o.draft_model = draft;
      o.draft_tokens = 3;
      Engine engine(model, nullptr, o);
      CHECK(collect(*engine.submit(greedy_request(prompts[0], 24))).tokens == want_greedy);
      wait_idle(engine);
      const EngineStats st = engine.stats();
      CHECK(st.draft_tokens > 0);
      if (draft == &model) CHECK(st.draft_accepted == st.draft_tokens);
      CHECK(st.steps < 24);  // several tokens a step
      CHECK(collect(*engine.submit(sampled)).tokens == want_sampled);
    }
  }
}

void check_batch_invariance(const std::string& device) {
  if (!test::has_device(device + ":")) {
    WARN("no " << device << " device: skipped");
    return;
  }
  auto backend = create_backend(device);
  const test::Reference ref = test::load_reference("llama2");
  auto model = Model::load(test::model_dir("llama2"), *backend);
  // GPU backends decode a step ahead of the host by default.
  uint64_t ahead = 0;
  CHECK(decode_all(*model, {ref.input_ids}, int(ref.greedy_ids.size()), batch_options(1, 16), 0ms,
                   nullptr, &ahead)[0] == ref.greedy_ids);
  CHECK(ahead > 0);
  const auto prompts = make_prompts(12, model->config().vocab_size, 1, 40);
  const int n_new = 20;
  const auto alone = decode_all(*model, prompts, n_new, batch_options(1, 16));
  CHECK(decode_all(*model, prompts, n_new, batch_options(8, 32)) == alone);
  {
    // The reference prompt again on the same engine: its full pages come from the prefix
    // cache, and the tokens are the same.
    const int n = static_cast<int>(ref.greedy_ids.size());
    std::vector<int32_t> twice = ref.input_ids;
    twice.insert(twice.end(), ref.input_ids.begin(), ref.input_ids.end());
    EngineOptions no_cache = batch_options(1, 16);
    no_cache.prefix_cache = false;
    const std::vector<int32_t> want = decode_all(*model, {twice}, n, no_cache)[0];
    Engine engine(*model, nullptr, batch_options(1, 16));
    for (int run = 0; run < 2; run++)
      CHECK(collect(*engine.submit(greedy_request(twice, n))).tokens == want);
    wait_idle(engine);
    CHECK(engine.stats().prefix_cached_tokens >= (twice.size() - 1) / 16 * 16);
  }
  // Sampling with top-k / top-p / min-p stays on the device, a step ahead, and a seed
  // repeats its tokens.
  GenerationRequest r = greedy_request(ref.input_ids, 16);
  r.sampling.temperature = 0.8f;
  r.sampling.top_k = 40;
  r.sampling.top_p = 0.95f;
  r.sampling.min_p = 0.02f;
  r.sampling.seed = 11;
  std::vector<std::vector<int32_t>> sampled;
  for (int run = 0; run < 2; run++) {
    Engine engine(*model, nullptr, batch_options(1, 16));
    sampled.push_back(collect(*engine.submit(r)).tokens);
    wait_idle(engine);
    CHECK(engine.stats().steps_ahead > 0);
  }
  CHECK(sampled[0].size() == 16);
  CHECK(sampled[0] == sampled[1]);
  // Speculation by prompt lookup: the same greedy tokens, several per step.
  std::vector<std::vector<int32_t>> repeated;
  for (auto p : make_prompts(6, model->config().vocab_size, 8, 20)) {
    p.insert(p.end(), p.begin(), p.end());
    repeated.push_back(p);
  }
  const auto plain = decode_all(*model, repeated, 24, batch_options(4, 32));
  EngineOptions spec = batch_options(4, 32);
  spec.lookup_draft = 4;
  Engine engine(*model, nullptr, spec);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& p : repeated) streams.push_back(engine.submit(greedy_request(p, 24)));
  for (size_t i = 0; i < repeated.size(); i++) CHECK(collect(*streams[i]).tokens == plain[i]);
  wait_idle(engine);
  CHECK(engine.stats().draft_accepted > 0);
  // ... and sampled ones, seed for seed.
  GenerationRequest warm = greedy_request(repeated[0], 24);
  warm.sampling.temperature = 0.3f;
  warm.sampling.top_k = 20;
  warm.sampling.seed = 3;
  Engine one(*model, nullptr, batch_options(1, 16));
  const auto want_sampled = collect(*one.submit(warm)).tokens;
  EngineOptions spec_one = batch_options(1, 16);
  spec_one.lookup_draft = 4;
  Engine drafted(*model, nullptr, spec_one);
  CHECK(collect(*drafted.submit(warm)).tokens == want_sampled);
  check_draft_model(*model);
}

}  // namespace

TEST_CASE("engine: prompts that share a prefix reuse its cached pages and decode the same",
          "[engine][prefix]") {
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama2"), *backend);
  const int vocab = model->config().vocab_size;
  EngineOptions cached = batch_options(4, 32), plain = cached;
  plain.prefix_cache = false;
  // A 40-token "system prompt" before each request's own tokens.
  const auto shared = make_prompts(1, vocab, 40, 40)[0];
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& own : make_prompts(6, vocab, 3, 20)) {
    prompts.push_back(shared);
    prompts.back().insert(prompts.back().end(), own.begin(), own.end());
  }
  const auto want = decode_all(*model, prompts, 12, plain);

  SECTION("one after another: every prompt after the first takes the two full pages") {
    Engine engine(*model, nullptr, cached);
    std::vector<std::vector<int32_t>> got;
    for (const auto& p : prompts)
      got.push_back(collect(*engine.submit(greedy_request(p, 12))).tokens);
    CHECK(got == want);
    wait_idle(engine);
    CHECK(engine.stats().prefix_cached_tokens == 5 * 32);
    CHECK(engine.stats().pages_cached > 0);
    CHECK(engine.stats().pages_used == 0);
  }
  SECTION("a chat: the next turn's prompt starts with the last one and its answer") {
    Engine engine(*model, nullptr, cached);
    std::vector<int32_t> turn = prompts[0];
    const auto answer = collect(*engine.submit(greedy_request(turn, 30))).tokens;
    wait_idle(engine);
    const uint64_t before = engine.stats().prefix_cached_tokens;
    turn.insert(turn.end(), answer.begin(), answer.end());
    turn.insert(turn.end(), prompts[1].begin() + 40, prompts[1].end());
    const auto next = collect(*engine.submit(greedy_request(turn, 12))).tokens;
    wait_idle(engine);
    // The pages written while answering are cached too (the prompt was 40 + own tokens).
    CHECK(engine.stats().prefix_cached_tokens - before >=
          static_cast<uint64_t>((prompts[0].size() + answer.size() - 1) / 16 * 16));
    Engine fresh(*model, nullptr, plain);
    CHECK(next == collect(*fresh.submit(greedy_request(turn, 12))).tokens);
  }
  SECTION("together, in a cache so small that cached pages are evicted") {
    EngineOptions tight = cached;
    tight.context_size = 96;
    tight.kv_cache_tokens = 160;  // 10 pages of 16 for 4 sequences of up to 72 tokens
    uint64_t preemptions = 0;
    CHECK(decode_all(*model, prompts, 12, tight, 0ms, &preemptions) == want);
    CHECK(decode_all(*model, prompts, 12, tight, 3ms) == want);
  }
}

TEST_CASE("session rewind takes tokens back", "[engine][draft]") {
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama2"), *backend);
  const auto p = make_prompts(2, model->config().vocab_size, 12, 12);
  SessionOptions so;
  so.context_size = 64;
  Session s(*model, so), fresh(*model, so);
  s.forward(p[0], false);
  s.rewind(5);
  CHECK(s.position() == 5);
  std::vector<int32_t> want(p[0].begin(), p[0].begin() + 5);
  want.insert(want.end(), p[1].begin(), p[1].end());
  const std::vector<float> got = s.forward(p[1], true), all = fresh.forward(want, true);
  REQUIRE(all.size() > got.size());
  float diff = 0;
  for (size_t i = 0; i < got.size(); i++)
    diff = std::max(diff, std::abs(got[i] - all[all.size() - got.size() + i]));
  CHECK(diff <= 1e-4f);
  CHECK_THROWS_WITH(s.rewind(100), "session rewind to 100: the sequence has 17 tokens");
}

TEST_CASE("engine: a draft model decodes as the model alone; mismatches are refused",
          "[engine][draft]") {
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama2"), *backend);
  check_draft_model(*model);
  // A proposal after the model took another token than the draft's first: the draft
  // model takes back what it ran past that point, as if it had never seen it.
  SessionOptions so;
  so.context_size = 64;
  const int32_t V = model->config().vocab_size;
  DraftModel follower(*model, so, V), fresh(*model, so, V);
  std::vector<int32_t> seq = make_prompts(1, model->config().vocab_size, 10, 10)[0];
  const std::vector<int32_t> first = follower.propose(7, seq, 4);
  REQUIRE(first.size() == 4);
  seq.push_back((first[0] + 1) % model->config().vocab_size);
  CHECK(follower.propose(7, seq, 4) == fresh.propose(1, seq, 4));
  // ... and one after it kept two of them and added its own.
  seq.resize(seq.size() - 1);
  seq.insert(seq.end(), first.begin(), first.begin() + 2);
  seq.push_back(3);
  CHECK(follower.propose(7, seq, 4) == DraftModel(*model, so, V).propose(1, seq, 4));
  CHECK(follower.followed() == 1);
  follower.drop(7);
  CHECK(follower.followed() == 0);
  // The next sequence takes over the dropped one's session from the start.
  CHECK(follower.propose(8, seq, 4) == DraftModel(*model, so, V).propose(1, seq, 4));
  // Vocabularies padded differently: no draft id the large model lacks, and no drafts
  // once the sequence holds an id the draft model lacks.
  const std::vector<int32_t> full = DraftModel(*model, so, V).propose(1, seq, 4);
  REQUIRE(full.size() == 4);
  const int32_t limit = full[2];
  std::vector<int32_t> below;
  for (int32_t id : full) {
    if (id >= limit) break;
    below.push_back(id);
  }
  CHECK(DraftModel(*model, so, limit).propose(1, seq, 4) == below);
  DraftModel wide(*model, so, V + 64);
  std::vector<int32_t> padded = seq;
  padded.push_back(V + 3);
  CHECK(wide.propose(2, padded, 4).empty());
  padded.push_back(5);
  CHECK(wide.propose(2, padded, 4).empty());
  CHECK(wide.propose(3, seq, 4) == full);
  auto other = Model::load(test::tiny_chat_model("q0f32", 11), *backend);
  {
    // A draft that hardly ever agrees (random weights of another seed): its proposals
    // shrink to one token, so drafting costs about one draft step a token, not four.
    auto stranger = Model::load(test::tiny_chat_model("q0f32", 12), *backend);
    const auto prompt = make_prompts(1, other->config().vocab_size, 6, 6)[0];
    Engine plain(*other, nullptr, batch_options(1, 16));
    const auto want = collect(*plain.submit(greedy_request(prompt, 40))).tokens;
    EngineOptions o = batch_options(1, 16);
    o.draft_model = stranger.get();
    o.draft_tokens = 4;
    Engine engine(*other, nullptr, o);
    CHECK(collect(*engine.submit(greedy_request(prompt, 40))).tokens == want);
    wait_idle(engine);
    const EngineStats st = engine.stats();
    INFO(st.draft_accepted << " of " << st.draft_tokens << " kept");
    CHECK(st.draft_accepted < st.draft_tokens / 4);
    CHECK(st.draft_tokens < 60);  // 4 + 3 + 2 + 1 + one a token after
  }
  EngineOptions o = batch_options(1, 16);
  o.draft_model = other.get();
  CHECK_THROWS_WITH(Engine(*model, nullptr, o),
                    "the draft model's vocabulary (32000 tokens) is not the model's (256)");
  o.draft_model = model.get();
  o.draft_tokens = 0;
  CHECK_THROWS_WITH(Engine(*model, nullptr, o), "draft tokens must be in 1..32, got 0");
}

TEST_CASE("engine on cuda: a batch decodes exactly as each prompt alone", "[cuda][engine]") {
  check_batch_invariance("cuda");
}

TEST_CASE("engine on vulkan: a batch decodes exactly as each prompt alone", "[vulkan][engine]") {
  check_batch_invariance("vulkan");
}

TEST_CASE("lookup drafts: the tokens after the latest earlier occurrence of the longest n-gram",
          "[engine][speculative]") {
  using V = std::vector<int32_t>;
  CHECK(lookup_draft({1, 2, 3, 4, 1, 2}, 3) == V{3, 4, 1});
  CHECK(lookup_draft({1, 2, 3, 4, 1, 2}, 10) == V{3, 4, 1, 2});  // up to the end
  CHECK(lookup_draft({1, 2, 3}, 3).empty());                     // nothing repeats
  CHECK(lookup_draft({5, 1, 7, 1, 8, 1}, 2) == V{8, 1});         // the latest occurrence
  CHECK(lookup_draft({1, 2, 9, 3, 2, 8, 1, 2}, 2) == V{9, 3});   // the longer n-gram first
  CHECK(lookup_draft({4, 4, 4, 4}, 3) == V{4});
  CHECK(lookup_draft({1, 2, 1, 2}, 0).empty());
  CHECK(lookup_draft({}, 4).empty());
  CHECK(lookup_draft({7}, 4).empty());
}

TEST_CASE("engine: speculation by prompt lookup gives exactly the greedy tokens",
          "[engine][speculative]") {
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama2"), *backend);
  const int vocab = model->config().vocab_size;
  // Prompts that repeat themselves (as code being edited does), and plain ones.
  std::vector<std::vector<int32_t>> prompts = make_prompts(4, vocab, 1, 30);
  for (auto p : make_prompts(4, vocab, 5, 20)) {
    p.insert(p.end(), p.begin(), p.end());
    prompts.push_back(p);
  }
  const int n_new = 40;
  const auto want = decode_all(*model, prompts, n_new, batch_options(1, 16));
  auto run = [&](EngineOptions o, EngineStats* stats) {
    o.lookup_draft = 5;
    Engine engine(*model, nullptr, o);
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (const auto& p : prompts) streams.push_back(engine.submit(greedy_request(p, n_new)));
    std::vector<std::vector<int32_t>> got;
    for (auto& s : streams) got.push_back(collect(*s).tokens);
    wait_idle(engine);
    CHECK(engine.stats().pages_used == 0);
    *stats = engine.stats();
    return got;
  };
  EngineStats st;
  SECTION("one sequence at a time") {
    CHECK(run(batch_options(1, 16), &st) == want);
    CHECK(st.draft_tokens > 0);
    CHECK(st.draft_accepted > 0);
    CHECK(st.draft_accepted <= st.draft_tokens);
    // Fewer steps than tokens: accepted drafts give several tokens a step.
    CHECK(st.steps < st.generated_tokens);
  }
  SECTION("batched, with prefill chunks and decode in the same engine") {
    CHECK(run(batch_options(8, 32), &st) == want);
    CHECK(st.draft_accepted > 0);
  }
  SECTION("a KV cache so small that sequences are preempted") {
    EngineOptions o = batch_options(4, 32);
    o.context_size = 96;
    o.kv_cache_tokens = 160;
    CHECK(run(o, &st) == want);
  }
  // Another model's tokens with drafts, against its plain decoding.
  auto same_with_drafts = [&](const char* name, int n) {
    auto other = Model::load(test::model_dir(name), *backend);
    const auto plain = decode_all(*other, prompts, n, batch_options(4, 32));
    EngineOptions o = batch_options(4, 32);
    o.lookup_draft = 5;
    Engine engine(*other, nullptr, o);
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (const auto& p : prompts) streams.push_back(engine.submit(greedy_request(p, n)));
    for (size_t i = 0; i < prompts.size(); i++) CHECK(collect(*streams[i]).tokens == plain[i]);
    wait_idle(engine);
    return engine.stats();
  };
  SECTION("a sliding window (mistral): rejected drafts' keys are never attended") {
    const EngineStats m = same_with_drafts("mistral", 24);
    CHECK(m.draft_accepted > 0);
    CHECK(m.draft_accepted < m.draft_tokens);
  }
  SECTION("recurrent state (RWKV) cannot take back a draft: none is made") {
    CHECK(same_with_drafts("rwkv", 12).draft_tokens == 0);
  }
  SECTION("sampled replies (temperature, top-k, top-p, min-p): the same tokens, seed for seed") {
    auto sampled = [&](int draft, EngineStats* stats) {
      EngineOptions o = batch_options(4, 32);
      o.lookup_draft = draft;
      Engine engine(*model, nullptr, o);
      std::vector<std::shared_ptr<RequestStream>> streams;
      for (size_t i = 0; i < prompts.size(); i++) {
        GenerationRequest r = greedy_request(prompts[i], n_new);
        r.sampling.temperature = 0.3f;
        r.sampling.top_k = 20;
        r.sampling.top_p = 0.9f;
        r.sampling.min_p = 0.01f;
        r.sampling.seed = 100 + i;
        streams.push_back(engine.submit(r));
      }
      std::vector<std::vector<int32_t>> got;
      for (auto& s : streams) got.push_back(collect(*s).tokens);
      wait_idle(engine);
      *stats = engine.stats();
      return got;
    };
    EngineStats none;
    const auto want_sampled = sampled(0, &none);
    CHECK(want_sampled != want);  // not the greedy tokens
    CHECK(sampled(5, &st) == want_sampled);
    CHECK(st.draft_accepted > 0);
    CHECK(st.draft_accepted < st.draft_tokens);  // some rows drew otherwise
  }
  SECTION("max_tokens and the context window end a draft's tokens where they must") {
    EngineOptions o = batch_options(2, 16);
    o.context_size = 48;
    Engine plain(*model, nullptr, o);
    o.lookup_draft = 5;
    Engine spec(*model, nullptr, o);
    for (const auto& p : prompts) {
      for (int max_tokens : {1, 3, 7, -1}) {
        INFO("max_tokens " << max_tokens << ", prompt of " << p.size());
        const Collected a = collect(*plain.submit(greedy_request(p, max_tokens)));
        const Collected b = collect(*spec.submit(greedy_request(p, max_tokens)));
        CHECK(b.tokens == a.tokens);
        CHECK(b.finish == a.finish);
        if (max_tokens > 0) CHECK(b.tokens.size() <= size_t(max_tokens));
      }
    }
  }
}

TEST_CASE("engine: cancelled requests return their pages, the rest finish", "[engine]") {
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama2"), *backend);
  EngineOptions o;
  o.max_seqs = 4;
  o.context_size = 128;
  Engine engine(*model, nullptr, o);
  const auto prompts = make_prompts(6, model->config().vocab_size, 5, 30);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const auto& p : prompts) streams.push_back(engine.submit(greedy_request(p, -1)));
  // Cancel some at once (possibly still queued) and the others after a first token.
  streams[4]->cancel();
  streams[5]->cancel();
  for (int i = 0; i < 4; i++) {
    GenerationEvent ev;
    REQUIRE(streams[i]->next(ev, 60s));
    streams[i]->cancel();
  }
  for (int i = 0; i < 6; i++) {
    const Collected c = collect(*streams[i]);
    CHECK((c.finish == FinishReason::Cancelled || c.finish == FinishReason::Length));
  }
  wait_idle(engine);
  CHECK(engine.stats().pages_used == 0);
  CHECK(engine.stats().running == 0);
}

TEST_CASE("engine: invalid requests are refused with a clear error", "[engine]") {
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama2"), *backend);
  EngineOptions o;
  o.context_size = 32;
  o.max_queue = 1;
  Engine engine(*model, nullptr, o);
  CHECK_THROWS_WITH(engine.submit(greedy_request(std::vector<int32_t>(33, 5), 4)),
                    Catch::Contains("prompt of 33 tokens exceeds the context window of 32"));
  CHECK_THROWS_WITH(engine.submit(greedy_request({}, 4)), Catch::Contains("empty"));
  CHECK_THROWS_WITH(engine.submit(greedy_request({5, 999}, 4)), Catch::Contains("out of range"));
  GenerationRequest stop = greedy_request({5, 6}, 4);
  stop.stop = {"x"};
  CHECK_THROWS_WITH(engine.submit(stop), Catch::Contains("tokenizer"));

  // A prompt that fills the context leaves room for one token, then "length".
  const Collected full = collect(*engine.submit(greedy_request(std::vector<int32_t>(32, 5), 10)));
  CHECK(full.tokens.size() == 1);
  CHECK(full.finish == FinishReason::Length);
  // max_tokens < 0 runs to the end of the context.
  const Collected rest = collect(*engine.submit(greedy_request({5, 6, 7}, -1)));
  CHECK(rest.tokens.size() == 30);
}

TEST_CASE("engine: the queue refuses requests beyond max_queue", "[engine]") {
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama2"), *backend);
  EngineOptions o;
  o.max_seqs = 1;
  o.max_queue = 2;
  Engine engine(*model, nullptr, o);
  std::vector<std::shared_ptr<RequestStream>> streams;
  bool refused = false;
  for (int i = 0; i < 10 && !refused; i++) {
    try {
      streams.push_back(engine.submit(greedy_request({5, 6, 7}, 100)));
    } catch (const QueueFullError& e) {
      refused = true;
      CHECK_THAT(e.what(), Catch::Contains("queue is full"));
    }
  }
  CHECK(refused);
  for (auto& s : streams) s->cancel();
  for (auto& s : streams) collect(*s);
}

TEST_CASE("engine: text, stop strings across token boundaries, logprobs", "[engine][stop]") {
  TinyChatModel m;
  Engine engine(*m.model, m.tokenizer.get(), EngineOptions{});
  const std::vector<int32_t> prompt = m.tokenizer->encode("Once upon a time", true);
  GenerationRequest r = greedy_request(prompt, 24);
  r.top_logprobs = 3;
  const Collected full = collect(*engine.submit(r));
  REQUIRE(full.tokens.size() == 24);
  CHECK(full.text == m.tokenizer->decode(full.tokens, true));
  REQUIRE(full.logprobs.size() == 24);
  for (size_t i = 0; i < full.logprobs.size(); i++) {
    CHECK(full.logprobs[i].token == full.tokens[i]);
    REQUIRE(full.logprobs[i].top.size() == 3);
    // Greedy picks the most likely token.
    CHECK(full.logprobs[i].top[0].first == full.tokens[i]);
    CHECK(full.logprobs[i].logprob <= 0.f);
  }

  // A stop string made of the last character of one token's text and the first
  // of the next one's, where it first occurs in the text.
  std::string before, stop;
  for (size_t i = 2; i + 1 < full.tokens.size() && stop.empty(); i++) {
    const std::string a = m.tokenizer->decode({full.tokens.begin(), full.tokens.begin() + i}, true);
    const std::string b =
        m.tokenizer->decode({full.tokens.begin(), full.tokens.begin() + i + 1}, true);
    if (a.empty() || b.size() <= a.size() || (a.back() & 0x80) || (b[a.size()] & 0x80)) continue;
    const std::string candidate = std::string(1, a.back()) + b[a.size()];
    if (full.text.find(candidate) != a.size() - 1) continue;
    stop = candidate;
    before = a.substr(0, a.size() - 1);
  }
  REQUIRE_FALSE(stop.empty());
  GenerationRequest rs = greedy_request(prompt, 24);
  rs.stop = {stop};
  const Collected stopped = collect(*engine.submit(rs));
  CHECK(stopped.finish == FinishReason::Stop);
  CHECK(stopped.text == before);
  CHECK(stopped.tokens.size() < full.tokens.size());

  // A stop token id (vLLM's stop_token_ids; a fill-in-the-middle prompt's separators) ends
  // the reply at its first occurrence like EOS, even with ignore_eos: the id is the last
  // token, its text not shown.
  const int32_t stop_id = full.tokens[6];
  const size_t first = static_cast<size_t>(
      std::find(full.tokens.begin(), full.tokens.end(), stop_id) - full.tokens.begin());
  GenerationRequest rt = greedy_request(prompt, 24);
  rt.stop_token_ids = {stop_id};
  const Collected by_id = collect(*engine.submit(rt));
  CHECK(by_id.finish == FinishReason::Stop);
  CHECK(by_id.tokens == std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + first + 1));
  CHECK(by_id.text ==
        m.tokenizer->decode(std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + first),
                            true));
}

TEST_CASE("engine: seeded sampling is reproducible per request, also in a batch",
          "[engine][sampling]") {
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama2"), *backend);
  EngineOptions o;
  o.max_seqs = 4;
  Engine engine(*model, nullptr, o);
  GenerationRequest r = greedy_request({5, 17, 33}, 20);
  r.sampling.temperature = 1.0f;
  r.sampling.top_p = 0.9f;
  r.sampling.seed = 42;
  const auto alone = collect(*engine.submit(r)).tokens;
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 3; i++) streams.push_back(engine.submit(r));
  GenerationRequest other = r;
  other.sampling.seed = 43;
  auto s_other = engine.submit(other);
  for (auto& s : streams) CHECK(collect(*s).tokens == alone);
  CHECK(collect(*s_other).tokens != alone);
}

TEST_CASE("engine: decoding a step ahead gives the tokens of step-by-step decoding",
          "[engine][ahead]") {
  // The CPU backend does not overlap downloads (so the default is off there); forced
  // on, the engine still queues each decode step before reading the ids before it.
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama2"), *backend);
  const test::Reference ref = test::load_reference("llama2");
  EngineOptions on = batch_options(1, 16), off = batch_options(1, 16);
  on.decode_ahead = 1;
  off.decode_ahead = 0;
  {
    Engine engine(*model, nullptr, on);
    const Collected c = collect(
        *engine.submit(greedy_request(ref.input_ids, static_cast<int>(ref.greedy_ids.size()))));
    CHECK(c.finish == FinishReason::Length);
    CHECK(c.tokens == ref.greedy_ids);
    wait_idle(engine);
    CHECK(engine.stats().steps_ahead > 0);
    CHECK(engine.stats().pages_used == 0);
  }
  {
    // No step is queued ahead past a known end (max_tokens 1: none at all).
    Engine engine(*model, nullptr, on);
    CHECK(collect(*engine.submit(greedy_request(ref.input_ids, 1))).tokens.size() == 1);
    wait_idle(engine);
    CHECK(engine.stats().steps_ahead == 0);
  }
  const auto prompts = make_prompts(6, model->config().vocab_size, 1, 40);
  const auto alone = decode_all(*model, prompts, 20, off);
  EngineOptions batch_on = batch_options(8, 32);
  batch_on.decode_ahead = 1;
  CHECK(decode_all(*model, prompts, 20, batch_on) == alone);
  CHECK(decode_all(*model, prompts, 20, batch_on, 2ms) == alone);  // arriving while others run

  // Device sampling with a temperature, and with top-k / top-p / min-p cuts: a seed
  // gives the same tokens either way, and the cuts too are drawn a step ahead.
  for (const auto& [top_k, top_p, min_p] :
       std::vector<std::tuple<int, float, float>>{{0, 1.f, 0.f}, {40, 0.9f, 0.05f}}) {
    CAPTURE(top_k, top_p, min_p);
    GenerationRequest r = greedy_request({5, 17, 33}, 20);
    r.sampling.temperature = 1.0f;
    r.sampling.top_k = top_k;
    r.sampling.top_p = top_p;
    r.sampling.min_p = min_p;
    r.sampling.seed = 7;
    std::vector<std::vector<int32_t>> sampled;
    for (const EngineOptions& o : {off, on}) {
      Engine engine(*model, nullptr, o);
      sampled.push_back(collect(*engine.submit(r)).tokens);
      wait_idle(engine);
      CHECK((engine.stats().steps_ahead > 0) == (o.decode_ahead == 1));
    }
    CHECK(sampled[0].size() == 20);
    CHECK(sampled[0] == sampled[1]);
  }
}

TEST_CASE("engine: a step ahead past a stop string is dropped", "[engine][ahead][stop]") {
  TinyChatModel m;
  EngineOptions on;
  on.decode_ahead = 1;
  Engine engine(*m.model, m.tokenizer.get(), on);
  const std::vector<int32_t> prompt = m.tokenizer->encode("Once upon a time", true);
  const Collected full = collect(*engine.submit(greedy_request(prompt, 24)));
  REQUIRE(full.tokens.size() == 24);
  // Stop at the text of the 6th token: the step queued after it is wasted, not emitted.
  const std::string head =
      m.tokenizer->decode({full.tokens.begin(), full.tokens.begin() + 5}, true);
  const std::string six = m.tokenizer->decode({full.tokens.begin(), full.tokens.begin() + 6}, true);
  REQUIRE(six.size() > head.size());
  GenerationRequest rs = greedy_request(prompt, 24);
  rs.stop = {six.substr(head.size())};
  const Collected stopped = collect(*engine.submit(rs));
  CHECK(stopped.finish == FinishReason::Stop);
  CHECK(stopped.tokens.size() <= 6);
  CHECK(full.text.rfind(stopped.text, 0) == 0);
  wait_idle(engine);
  CHECK(engine.stats().steps_ahead > 0);
  CHECK(engine.stats().pages_used == 0);
}
