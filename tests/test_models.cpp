// The llama-family fixtures on the CPU backend against transformers' outputs.
#include <catch2/catch.hpp>

#include "backend_test_util.h"
#include "backends/cpu/cpu_backend.h"
#include "core/engine/sampler.h"
#include "core/engine/session.h"
#include "core/model.h"
#include "test_util.h"

using namespace llm;
using namespace llm::test;

namespace {

const char* kLlamaFamily[] = {"llama3", "llama2", "qwen2", "mistral"};

// Other sizes of the same families (scripts/make_fixtures.py): GQA 3:1 with a
// hidden size of 72, MQA with head_dim != hidden/heads plus llama3 rope in the
// rope_parameters form and biases, bf16 shards, f16 untied qwen2, window 5.
const char* kOtherSizes[] = {"llama_gqa3", "llama_mqa_bias", "llama_bf16_sharded",
                             "qwen2_f16_untied", "mistral_w5"};

}  // namespace

TEST_CASE("other sizes of the llama family match transformers", "[models][cpu]") {
  for (const char* name : kOtherSizes) {
    DYNAMIC_SECTION(name) {
      const Reference ref = load_reference(name);
      auto backend = make_cpu_backend();
      auto model = Model::load(model_dir(name), *backend);
      Session session(*model);
      const std::vector<float> logits = session.forward(ref.input_ids, true);
      const double err = max_rel_error(logits, ref.logits);
      INFO("max |Δ| / max |ref| = " << err);
      CHECK(err <= 1e-4);
      session.reset();
      CHECK(greedy(session, ref.input_ids, 16, ref.vocab) == ref.greedy_ids);
    }
  }
}

TEST_CASE("llama-family fixtures match transformers logits on the CPU", "[models][cpu]") {
  for (const char* name : kLlamaFamily) {
    for (int threads : {1, 2}) {
      DYNAMIC_SECTION(name << " with " << threads << " threads") {
        const Reference ref = load_reference(name);
        auto backend = make_cpu_backend(threads);
        auto model = Model::load(model_dir(name), *backend);
        Session session(*model);
        const std::vector<float> logits = session.forward(ref.input_ids, true);
        const double err = max_rel_error(logits, ref.logits);
        INFO("max |Δ| / max |ref| = " << err);
        CHECK(err <= 1e-4);
      }
    }
  }
}

TEST_CASE("f16 and bf16 KV caches stay close to the float32 one", "[models][cpu]") {
  auto backend = make_cpu_backend();
  for (const Fixture& f : kFixtures) DYNAMIC_SECTION(f.name << " f16") {
      check_half_kv_cache(*backend, f.name, DType::F16, 1e-2);
    }
  // bf16 keeps 8 bits of mantissa: a coarser bound.
  SECTION("llama3 bf16") { check_half_kv_cache(*backend, "llama3", DType::BF16, 5e-2); }
}

TEST_CASE("llama-family fixtures give the reference greedy ids", "[models][cpu]") {
  for (const char* name : kLlamaFamily) {
    DYNAMIC_SECTION(name) {
      const Reference ref = load_reference(name);
      auto backend = make_cpu_backend();
      auto model = Model::load(model_dir(name), *backend);
      Session session(*model);
      CHECK(greedy(session, ref.input_ids, 16, ref.vocab) == ref.greedy_ids);
      session.reset();
      CHECK(greedy_on_device(session, ref.input_ids, 16) == ref.greedy_ids);
    }
  }
}

TEST_CASE("decode with the KV cache equals a full forward pass", "[models][cpu]") {
  for (const char* name : kLlamaFamily) {
    DYNAMIC_SECTION(name) {
      const Reference ref = load_reference(name);
      auto backend = make_cpu_backend();
      auto model = Model::load(model_dir(name), *backend);
      Session full(*model);
      const std::vector<float> all = full.forward(ref.input_ids, true);

      // Prefill 10 tokens, then one token per step through the cache.
      Session inc(*model);
      const int split = 10;
      std::vector<int32_t> head(ref.input_ids.begin(), ref.input_ids.begin() + split);
      std::vector<float> got = inc.forward(head, true);
      for (size_t t = split; t < ref.input_ids.size(); t++) {
        std::vector<float> row = inc.forward({ref.input_ids[t]}, false);
        got.insert(got.end(), row.begin(), row.end());
      }
      REQUIRE(got.size() == all.size());
      CHECK(max_rel_error(got, all) <= 1e-5);
      CHECK(inc.position() == static_cast<int>(ref.input_ids.size()));
    }
  }
}

TEST_CASE("chunked prefill equals one pass, and reset starts over", "[models][cpu]") {
  const Reference ref = load_reference("mistral");  // sliding window 8 across chunks
  auto backend = make_cpu_backend();
  auto model = Model::load(model_dir("mistral"), *backend);
  SessionOptions opts;
  opts.prefill_chunk_size = 5;
  opts.page_size = 4;
  Session chunked(*model, opts);
  std::vector<float> logits = chunked.forward(ref.input_ids, true);
  CHECK(max_rel_error(logits, ref.logits) <= 1e-4);
  chunked.reset();
  logits = chunked.forward(ref.input_ids, true);
  CHECK(max_rel_error(logits, ref.logits) <= 1e-4);
}

TEST_CASE("session errors name the problem", "[models][cpu][errors]") {
  auto backend = make_cpu_backend(1);
  auto model = Model::load(model_dir("llama3"), *backend);
  SessionOptions opts;
  opts.context_size = 8;
  Session s(*model, opts);
  CHECK_THROWS_WITH(s.forward({1, 2, 256}, true),
                    Catch::Contains("token id 256 is out of range (vocab size 256)"));
  CHECK_THROWS_WITH(s.forward({-1}, true), Catch::Contains("token id -1 is out of range"));
  CHECK_THROWS_WITH(s.forward(std::vector<int32_t>(9, 1), true),
                    Catch::Contains("prompt of 9 tokens exceeds the context window of 8 tokens"));
  s.forward(std::vector<int32_t>(8, 1), false);
  CHECK_THROWS_WITH(s.forward({1}, false), Catch::Contains("context window of 8 tokens is full"));
  // Queued greedy decoding: misuse, and a full context that keeps the last step's id.
  s.reset();
  CHECK_THROWS_WITH(s.queue_greedy_next(), Catch::Contains("no step queued"));
  CHECK_THROWS_WITH(s.finish_greedy(), Catch::Contains("no step queued"));
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6};
  const std::vector<int32_t> want = greedy_on_device(s, prompt, 3);  // fills the 8 positions
  s.reset();
  s.queue_greedy(prompt);
  CHECK(s.queue_greedy_next() == want[0]);
  CHECK(s.queue_greedy_next() == want[1]);
  CHECK_THROWS_WITH(s.queue_greedy_next(), Catch::Contains("context window of 8 tokens is full"));
  CHECK(s.finish_greedy() == want[2]);
  // decode_greedy checks the whole run against the context before it starts.
  s.reset();
  CHECK_THROWS_WITH(s.decode_greedy(prompt, 4, 2),
                    Catch::Contains("context window of 8 tokens is full (0 tokens used, 9 more"));
  CHECK(s.position() == 0);
  CHECK(s.decode_greedy(prompt, 3, 2) == want);
}

TEST_CASE("GGUF files from llama.cpp's converter give the safetensors logits",
          "[models][cpu][gguf]") {
  // llama.cpp permutes Q/K rows of llama checkpoints (rope then rotates
  // interleaved pairs) and stores llama3 scaling as rope_freqs.weight.
  // mistral's GGUF is left out: llama.cpp's converter drops sliding_window.
  for (const char* name : {"llama3", "llama2", "qwen2"}) {
    DYNAMIC_SECTION(name) {
      const Reference ref = load_reference(name);
      auto backend = make_cpu_backend();
      auto st = Model::load(model_dir(name), *backend);
      auto gguf = Model::load(model_dir(name) + "/model-f32.gguf", *backend);
      CHECK(gguf->config().num_kv_heads == st->config().num_kv_heads);
      CHECK(gguf->config().tie_word_embeddings == st->config().tie_word_embeddings);
      Session a(*st), b(*gguf);
      const std::vector<float> la = a.forward(ref.input_ids, true);
      const std::vector<float> lb = b.forward(ref.input_ids, true);
      CHECK(max_rel_error(lb, la) <= 1e-5);
      CHECK(max_rel_error(lb, ref.logits) <= 1e-4);
      b.reset();
      CHECK(greedy(b, ref.input_ids, 16, ref.vocab) == ref.greedy_ids);
    }
  }
}
