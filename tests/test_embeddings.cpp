// Embeddings: the final norm's rows of every fixture (checked through the head against
// transformers' logits), their pooling, and embedding requests batched with generation.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "backends/registry.h"
#include "core/engine/engine.h"
#include "core/formats/gguf_model.h"
#include "core/formats/gguf_writer.h"
#include "core/formats/safetensors.h"
#include "core/models/model_config.h"
#include "test_util.h"

using namespace llm;
using namespace std::chrono_literals;

namespace {

const char* kFixtures[] = {"llama3", "llama2",   "qwen2", "mistral",
                           "phi3",   "gpt_neox", "gptj",  "rwkv"};

// The one event of an embedding request.
std::vector<float> embedding_of(RequestStream& s) {
  GenerationEvent ev;
  REQUIRE(s.next(ev, 60s));
  INFO(ev.error);
  REQUIRE(ev.finish == FinishReason::Stop);
  return ev.embedding;
}

std::vector<float> embed(Engine& e, const std::vector<int32_t>& prompt, Pooling p,
                         bool normalize = false) {
  EmbeddingRequest r;
  r.prompt = prompt;
  r.pooling = p;
  r.normalize = normalize;
  return embedding_of(*e.submit_embedding(r));
}

// rows [T, D] · headᵀ (+ bias): the logits the fixture's head would give.
std::vector<float> head_logits(const std::string& name, const ModelConfig& cfg,
                               const std::vector<float>& rows) {
  auto store = WeightStore::open_dir(test::model_dir(name));
  const char* head_name =
      cfg.model_type == "rwkv" ? "head.weight"
      : cfg.model_type == "gpt_neox"
          ? (cfg.tie_word_embeddings ? "gpt_neox.embed_in.weight" : "embed_out.weight")
      : cfg.tie_word_embeddings ? "model.embed_tokens.weight"
                                : "lm_head.weight";
  const HostTensor* head = store->find(head_name);
  REQUIRE(head);
  REQUIRE(head->dtype == DType::F32);
  const HostTensor* bias = cfg.model_type == "gptj" ? store->find("lm_head.bias") : nullptr;
  const size_t V = static_cast<size_t>(cfg.vocab_size), D = static_cast<size_t>(cfg.hidden_size);
  const float* w = static_cast<const float*>(head->data);
  const size_t T = rows.size() / D;
  std::vector<float> out(T * V);
  for (size_t t = 0; t < T; t++)
    for (size_t v = 0; v < V; v++) {
      double acc = bias ? static_cast<const float*>(bias->data)[v] : 0.0;
      for (size_t d = 0; d < D; d++) acc += double(rows[t * D + d]) * w[v * D + d];
      out[t * V + v] = static_cast<float>(acc);
    }
  return out;
}

EngineOptions small_chunks(int max_seqs = 4, int chunk = 8) {
  EngineOptions o;
  o.max_seqs = max_seqs;
  o.prefill_chunk_size = chunk;
  return o;
}

// Every fixture's per-token rows (in chunks of 8 of the 24-token prompt) through its
// head give transformers' logits.
void check_rows_against_reference(const std::string& device, double tolerance) {
  if (device != "cpu" && !test::has_device(device + ":")) {
    WARN("no " << device << " device: skipped");
    return;
  }
  auto backend = device == "cpu" ? create_backend("cpu", 2) : create_backend(device);
  // Where multi-token steps multiply on NVIDIA's cooperative matrices (fp16 products), the
  // fp16 path's tolerance, as for the Vulkan fixture logits (measured on the H100: 3e-4 to
  // 7e-4).
  if (backend->info().details.find("coopmat NV (") != std::string::npos) tolerance = 1e-2;
  for (const char* name : kFixtures) {
    DYNAMIC_SECTION(name) {
      auto model = Model::load(test::model_dir(name), *backend);
      const test::Reference ref = test::load_reference(name);
      Engine engine(*model, nullptr, small_chunks());
      const std::vector<float> rows = embed(engine, ref.input_ids, Pooling::None);
      REQUIRE(rows.size() == ref.input_ids.size() * size_t(model->config().hidden_size));
      const double err = test::max_rel_error(head_logits(name, model->config(), rows), ref.logits);
      INFO("max |Δ| / max |ref| = " << err);
      CHECK(err <= tolerance);
    }
  }
}

double norm(const float* v, size_t n) {
  double ss = 0;
  for (size_t i = 0; i < n; i++) ss += double(v[i]) * v[i];
  return std::sqrt(ss);
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); i++) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

}  // namespace

TEST_CASE("embeddings: each fixture's final-norm rows give transformers' logits through its head",
          "[embeddings]") {
  check_rows_against_reference("cpu", 1e-4);
}

TEST_CASE("embeddings on vulkan: final-norm rows give the reference logits",
          "[vulkan][embeddings]") {
  check_rows_against_reference("vulkan", 1e-4);
}

TEST_CASE("embeddings on cuda: final-norm rows give the reference logits", "[cuda][embeddings]") {
  check_rows_against_reference("cuda", 1e-4);
}

TEST_CASE("embeddings: mean, first and last token pooling, normalized or not", "[embeddings]") {
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama3"), *backend);
  const test::Reference ref = test::load_reference("llama3");
  const size_t D = static_cast<size_t>(model->config().hidden_size);
  const size_t T = ref.input_ids.size();
  Engine engine(*model, nullptr, small_chunks());
  const std::vector<float> rows = embed(engine, ref.input_ids, Pooling::None);
  REQUIRE(rows.size() == T * D);

  std::vector<float> mean(D, 0.f);
  for (size_t t = 0; t < T; t++)
    for (size_t d = 0; d < D; d++) mean[d] += rows[t * D + d] / static_cast<float>(T);
  const std::vector<float> first(rows.begin(), rows.begin() + static_cast<ptrdiff_t>(D));
  const std::vector<float> last(rows.end() - static_cast<ptrdiff_t>(D), rows.end());
  CHECK(max_abs_diff(embed(engine, ref.input_ids, Pooling::Mean), mean) < 1e-5);
  CHECK(max_abs_diff(embed(engine, ref.input_ids, Pooling::Cls), first) < 1e-6);
  CHECK(max_abs_diff(embed(engine, ref.input_ids, Pooling::Last), last) < 1e-6);

  // Normalized: the same direction at unit length (per token for Pooling::None).
  const std::vector<float> unit = embed(engine, ref.input_ids, Pooling::Mean, true);
  CHECK(std::fabs(norm(unit.data(), D) - 1.0) < 1e-6);
  const double len = norm(mean.data(), D);
  for (size_t d = 0; d < D; d++) CHECK(std::fabs(unit[d] * len - mean[d]) < 1e-5);
  const std::vector<float> unit_rows = embed(engine, ref.input_ids, Pooling::None, true);
  for (size_t t = 0; t < T; t++) CHECK(std::fabs(norm(unit_rows.data() + t * D, D) - 1.0) < 1e-6);

  // A prompt's embedding does not depend on the tokens after it (causal attention): the
  // last row of a prefix is the prefix's row in the longer prompt.
  const std::vector<int32_t> prefix(ref.input_ids.begin(), ref.input_ids.begin() + 10);
  CHECK(max_abs_diff(embed(engine, prefix, Pooling::Last),
                     std::vector<float>(rows.begin() + 9 * static_cast<ptrdiff_t>(D),
                                        rows.begin() + 10 * static_cast<ptrdiff_t>(D))) < 1e-5);
}

TEST_CASE("embeddings: batched with generation, each request gets what it gets alone",
          "[embeddings][batch]") {
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama2"), *backend);
  const test::Reference ref = test::load_reference("llama2");
  const int vocab = model->config().vocab_size;
  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 6; i++) {
    std::vector<int32_t> p(5 + rng() % 40);
    for (auto& t : p) t = 3 + static_cast<int32_t>(rng() % (vocab - 3));
    prompts.push_back(p);
  }
  std::vector<std::vector<float>> alone;
  {
    Engine engine(*model, nullptr, small_chunks(1, 16));
    for (const auto& p : prompts) alone.push_back(embed(engine, p, Pooling::Mean, true));
  }
  auto run_mixed = [&](EngineOptions o, uint64_t* preemptions) {
    Engine engine(*model, nullptr, o);
    GenerationRequest g;
    g.prompt = ref.input_ids;
    g.max_tokens = static_cast<int>(ref.greedy_ids.size());
    g.ignore_eos = true;
    auto gen = engine.submit(g);
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (const auto& p : prompts) {
      EmbeddingRequest r;
      r.prompt = p;
      streams.push_back(engine.submit_embedding(r));
      std::this_thread::sleep_for(1ms);
    }
    for (size_t i = 0; i < prompts.size(); i++) {
      INFO("prompt " << i);
      CHECK(max_abs_diff(embedding_of(*streams[i]), alone[i]) < 1e-5);
    }
    std::vector<int32_t> tokens;
    for (;;) {
      GenerationEvent ev;
      REQUIRE(gen->next(ev, 60s));
      tokens.insert(tokens.end(), ev.tokens.begin(), ev.tokens.end());
      if (ev.finish != FinishReason::None) break;
    }
    CHECK(tokens == ref.greedy_ids);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (engine.stats().pages_used != 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(1ms);
    CHECK(engine.stats().pages_used == 0);
    if (preemptions) *preemptions = engine.stats().preemptions;
  };
  SECTION("steps of 8 tokens, 4 sequences at once") { run_mixed(small_chunks(4, 8), nullptr); }
  SECTION("a KV cache so small that sequences are preempted and recomputed") {
    EngineOptions o = small_chunks(4, 16);
    o.context_size = 64;
    o.kv_cache_tokens = 96;
    uint64_t preemptions = 0;
    run_mixed(o, &preemptions);
  }
}

TEST_CASE("embeddings: last-token pooling takes a cached prefix, the others compute it",
          "[embeddings][prefix]") {
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama2"), *backend);
  const test::Reference ref = test::load_reference("llama2");
  std::vector<int32_t> twice = ref.input_ids;  // 48 tokens: two full pages of 16 cached
  twice.insert(twice.end(), ref.input_ids.begin(), ref.input_ids.end());
  EngineOptions plain = small_chunks(2, 16);
  plain.prefix_cache = false;
  Engine fresh(*model, nullptr, plain);
  const std::vector<float> want_last = embed(fresh, twice, Pooling::Last);
  const std::vector<float> want_mean = embed(fresh, twice, Pooling::Mean);

  Engine engine(*model, nullptr, small_chunks(2, 16));
  CHECK(max_abs_diff(embed(engine, twice, Pooling::Mean), want_mean) < 1e-6);
  CHECK(engine.stats().prefix_cached_tokens == 0);
  CHECK(max_abs_diff(embed(engine, twice, Pooling::Mean), want_mean) < 1e-6);
  CHECK(engine.stats().prefix_cached_tokens == 0);  // mean needs every row
  CHECK(max_abs_diff(embed(engine, twice, Pooling::Last), want_last) < 1e-5);
  CHECK(engine.stats().prefix_cached_tokens == 32);
}

TEST_CASE("embeddings: invalid requests are refused with a clear error", "[embeddings]") {
  auto backend = create_backend("cpu", 2);
  auto model = Model::load(test::model_dir("llama3"), *backend);
  EngineOptions o;
  o.context_size = 32;
  Engine engine(*model, nullptr, o);
  EmbeddingRequest r;
  CHECK_THROWS_WITH(engine.submit_embedding(r), Catch::Contains("empty"));
  r.prompt = std::vector<int32_t>(33, 5);
  CHECK_THROWS_WITH(engine.submit_embedding(r), Catch::Contains("exceeds the context window"));
  r.prompt = {5, model->config().vocab_size};
  CHECK_THROWS_WITH(engine.submit_embedding(r), Catch::Contains("out of range"));
  CHECK_THROWS_WITH(parse_pooling("max"), Catch::Contains("mean, last, cls or none"));
}

TEST_CASE("embeddings: a model's pooling from sentence-transformers and GGUF metadata",
          "[embeddings]") {
  CHECK(parse_st_pooling(R"({"word_embedding_dimension": 1024, "pooling_mode_lasttoken": true,
                             "pooling_mode_mean_tokens": false})") == "last");
  CHECK(parse_st_pooling(R"({"pooling_mode_cls_token": true})") == "cls");
  CHECK(parse_st_pooling(R"({"pooling_mode_mean_tokens": true})") == "mean");
  CHECK(parse_st_pooling(R"({"pooling_mode_max_tokens": true})").empty());
  CHECK_THROWS(parse_st_pooling("[1]"));
  CHECK(default_pooling("") == Pooling::Mean);
  CHECK(default_pooling("last") == Pooling::Last);

  // A Hugging Face folder with a 1_Pooling/config.json.
  test::TempDir dir;
  test::copy_model("llama3", dir.path());
  CHECK(load_hf_config(dir.path()).pooling.empty());
  std::filesystem::create_directories(dir.file("1_Pooling"));
  test::write_file(dir.file("1_Pooling/config.json"), R"({"pooling_mode_lasttoken": true})");
  CHECK(load_hf_config(dir.path()).pooling == "last");

  // llama.cpp's GGUF key: the llama3 fixture's file again, with pooling_type 2 (cls).
  const GgufFile src(test::model_dir("llama3") + "/model-f32.gguf");
  CHECK(config_from_gguf(src).pooling.empty());
  GgufWriter w;
  for (const auto& [key, value] : src.metadata()) w.set(key, value);
  w.set("llama.pooling_type", gguf_u32(2));
  for (const GgufTensorInfo& t : src.tensors()) {
    DType dt = DType::F32;
    REQUIRE(dtype_from_ggml_type(t.ggml_type, &dt));
    w.add_tensor(t.name, dt, t.shape);
  }
  w.begin(dir.file("cls.gguf"));
  for (const GgufTensorInfo& t : src.tensors()) w.write_tensor(t.data, t.nbytes);
  w.finish();
  CHECK(config_from_gguf(GgufFile(dir.file("cls.gguf"))).pooling == "cls");
}

TEST_CASE("llmcli embed: one JSON array per input, from -p, --file or --token-ids",
          "[embeddings][cli]") {
  // Per-token rows of the reference prompt, through the head: transformers' logits.
  const test::Reference ref = test::load_reference("llama3");
  auto r = test::run_cli({"embed", test::model_dir("llama3"), "--device", "cpu", "--token-ids",
                          test::join_ids(ref.input_ids), "--pooling", "none", "--no-normalize"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto rows = nlohmann::json::parse(r.out).get<std::vector<std::vector<float>>>();
  REQUIRE(rows.size() == ref.input_ids.size());
  std::vector<float> flat;
  for (const auto& row : rows) flat.insert(flat.end(), row.begin(), row.end());
  const ModelConfig cfg = load_hf_config(test::model_dir("llama3"));
  CHECK(test::max_rel_error(head_logits("llama3", cfg, flat), ref.logits) <= 1e-4);

  // Texts: -p twice, or the same two lines in a file (blank lines skipped).
  const std::string& model = test::tiny_chat_model("q0f32", 3);
  r = test::run_cli({"embed", model, "--device", "cpu", "-p", "Hello world", "-p", "The sky"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 2);
  const auto first = nlohmann::json::parse(r.out.substr(0, r.out.find('\n')));
  CHECK(first.size() == 64);
  CHECK(first != nlohmann::json::parse(r.out.substr(r.out.find('\n') + 1)));
  test::TempDir dir;
  test::write_file(dir.file("inputs.txt"), "Hello world\n\nThe sky\n");
  const auto f =
      test::run_cli({"embed", model, "--device", "cpu", "--file", dir.file("inputs.txt")});
  REQUIRE(f.exit_code == 0);
  CHECK(f.out == r.out);

  const auto none = test::run_cli({"embed", model, "--device", "cpu"});
  CHECK(none.exit_code != 0);
  CHECK_THAT(none.err, Catch::Contains("give exactly one of"));
  const auto empty = test::run_cli({"embed", model, "--device", "cpu", "-p", ""});
  CHECK(empty.exit_code != 0);
  CHECK_THAT(empty.err, Catch::Contains("empty"));
  CHECK(test::run_cli({"embed", model, "--pooling", "max", "-p", "x"}).exit_code != 0);
  const auto blank = test::run_cli({"embed", model, "--device", "cpu", "--file", dir.file("none")});
  CHECK(blank.exit_code != 0);
  CHECK_THAT(blank.err, Catch::Contains("cannot read"));
}
