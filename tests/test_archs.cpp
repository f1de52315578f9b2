// The non-llama architectures (gpt_neox, gptj, rwkv, phi3) on the CPU backend:
// transformers' logits and greedy ids, the KV cache / recurrent state across
// steps, other settings of the same architectures with random weights, GGUF and
// convert.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "backends/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/formats/gguf.h"
#include "core/formats/gguf_writer.h"
#include "core/formats/safetensors.h"
#include "core/model.h"
#include "core/models/architecture.h"
#include "test_util.h"

using namespace llm;
using namespace llm::test;
using json = nlohmann::json;

namespace {

const char* kArchs[] = {"gpt_neox", "gptj", "rwkv", "phi3"};

// Logits of the prompt fed in pieces: `first` tokens at once, then one by one.
std::vector<float> stepwise_logits(Model& m, const std::vector<int32_t>& ids, size_t first) {
  Session s(m);
  std::vector<float> got = s.forward(std::vector<int32_t>(ids.begin(), ids.begin() + first), true);
  for (size_t t = first; t < ids.size(); t++) {
    const std::vector<float> row = s.forward({ids[t]}, false);
    got.insert(got.end(), row.begin(), row.end());
  }
  return got;
}

// A model folder for config `cfg` with random weights for every tensor its graph
// names: matrices uniform with the variance of 1/fan_in, norm weights near 1,
// biases near 0, RWKV mixing coefficients in (0, 1) and decays in (-1, 1).
void write_random_model(const json& cfg, const std::string& dir, uint32_t seed) {
  write_file(dir + "/config.json", cfg.dump(2));
  const ModelConfig mc = parse_hf_config(cfg.dump());
  const Graph g = build_step_graph(mc, StepShape{}, [](const std::string&) { return DType::F32; });
  std::mt19937 rng(seed);
  std::vector<std::vector<float>> keep;
  std::vector<std::pair<std::string, HostTensor>> tensors;
  for (const TensorInfo& t : g.tensors()) {
    if (t.kind != TensorKind::Weight) continue;
    const size_t n = t.shape.numel();
    const auto has = [&](const char* s) { return t.name.find(s) != std::string::npos; };
    std::vector<float> v;
    if (t.shape.rank == 2 && !has("embed") && !has("wte")) {
      const float a = std::sqrt(3.f / t.shape.row_len());
      v = uniform(n, rng, -a, a);
    } else if (has("time_mix")) {
      v = uniform(n, rng, 0.05f, 0.95f);
    } else if (has(".bias") || has("time_")) {
      v = uniform(n, rng, -0.1f, 0.1f);
      if (has("time_decay")) v = uniform(n, rng, -1.f, 1.f);
    } else if (t.shape.rank == 1) {
      v = uniform(n, rng, 0.9f, 1.1f);
    } else {
      v = uniform(n, rng);  // embeddings
    }
    keep.push_back(std::move(v));
    tensors.push_back({t.name, HostTensor{DType::F32, t.shape, keep.back().data(), n * 4}});
  }
  write_safetensors(dir + "/model.safetensors", tensors);
}

std::vector<int32_t> prompt(int n, int vocab) {
  std::vector<int32_t> ids(n);
  for (int i = 0; i < n; i++) ids[i] = (i * 37 + 11) % vocab;
  return ids;
}

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

TEST_CASE("gpt_neox, gptj, rwkv and phi3 fixtures match transformers", "[archs][models][cpu]") {
  for (const char* name : kArchs) {
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
        session.reset();
        CHECK(greedy(session, ref.input_ids, 16, ref.vocab) == ref.greedy_ids);
        session.reset();  // rwkv: the recurrent state restarts with the queued steps too
        CHECK(greedy_queued(session, ref.input_ids, 16) == ref.greedy_ids);
      }
    }
  }
}

TEST_CASE("token by token and chunked prefill equal one pass (KV cache, RWKV state)",
          "[archs][models][cpu]") {
  for (const char* name : kArchs) {
    DYNAMIC_SECTION(name) {
      const Reference ref = load_reference(name);
      auto backend = make_cpu_backend();
      auto model = Model::load(model_dir(name), *backend);
      CHECK(max_rel_error(stepwise_logits(*model, ref.input_ids, 10), ref.logits) <= 1e-4);
      CHECK(max_rel_error(stepwise_logits(*model, ref.input_ids, 1), ref.logits) <= 1e-4);
      SessionOptions opts;
      opts.prefill_chunk_size = 5;
      opts.page_size = 4;
      Session chunked(*model, opts);
      CHECK(max_rel_error(chunked.forward(ref.input_ids, true), ref.logits) <= 1e-4);
      // reset() starts from zero state again (RWKV: the recurrent rows are cleared).
      chunked.reset();
      CHECK(max_rel_error(chunked.forward(ref.input_ids, true), ref.logits) <= 1e-4);
    }
  }
}

TEST_CASE("other settings of the architectures run, prefill equals token by token",
          "[archs][models][cpu]") {
  struct Variant {
    const char* name;
    json cfg;
  };
  const std::vector<Variant> variants = {
      {"gpt_neox parallel residual, full rotary, tanh gelu",
       {{"model_type", "gpt_neox"},
        {"vocab_size", 96},
        {"hidden_size", 48},
        {"intermediate_size", 80},
        {"num_hidden_layers", 3},
        {"num_attention_heads", 3},
        {"rotary_pct", 1.0},
        {"use_parallel_residual", true},
        {"hidden_act", "gelu_new"},
        {"rotary_emb_base", 500},
        {"layer_norm_eps", 1e-5}}},
      {"gpt_neox sequential, rotary in rope_parameters, tied",
       {{"model_type", "gpt_neox"},
        {"vocab_size", 96},
        {"hidden_size", 64},
        {"intermediate_size", 128},
        {"num_hidden_layers", 2},
        {"num_attention_heads", 2},
        {"use_parallel_residual", false},
        {"tie_word_embeddings", true},
        {"rope_parameters",
         {{"rope_type", "default"}, {"rope_theta", 1000.0}, {"partial_rotary_factor", 0.5}}}}},
      {"gptj full rotary, erf gelu",
       {{"model_type", "gptj"},
        {"vocab_size", 80},
        {"n_embd", 48},
        {"n_layer", 3},
        {"n_head", 4},
        {"rotary_dim", 12},
        {"n_inner", 96},
        {"activation_function", "gelu"}}},
      {"rwkv attention_hidden_size != hidden_size, rescale_every 2",
       {{"model_type", "rwkv"},
        {"vocab_size", 64},
        {"hidden_size", 32},
        {"attention_hidden_size", 48},
        {"intermediate_size", 64},
        {"num_hidden_layers", 5},
        {"rescale_every", 2}}},
      {"phi3 MQA, partial rotary, sliding window",
       {{"model_type", "phi3"},
        {"vocab_size", 72},
        {"hidden_size", 64},
        {"intermediate_size", 96},
        {"num_hidden_layers", 2},
        {"num_attention_heads", 4},
        {"num_key_value_heads", 1},
        {"partial_rotary_factor", 0.75},
        {"sliding_window", 6}}},
  };
  for (const Variant& v : variants) {
    DYNAMIC_SECTION(v.name) {
      TempDir dir;
      write_random_model(v.cfg, dir.path(), 7);
      auto backend = make_cpu_backend();
      auto model = Model::load(dir.path(), *backend);
      const std::vector<int32_t> ids = prompt(20, model->config().vocab_size);
      const std::vector<float> all = Session(*model).forward(ids, true);
      CHECK(all_finite(all));
      CHECK(max_rel_error(stepwise_logits(*model, ids, 1), all) <= 1e-5);
      CHECK(max_rel_error(stepwise_logits(*model, ids, 7), all) <= 1e-5);
    }
  }
}

TEST_CASE("rwkv rescale_every changes the scale of the residual, not the logits",
          "[archs][models][cpu]") {
  // HF halves the residual every rescale_every layers and divides the output
  // weights to match; LayerNorm undoes the scale, so only eps can tell (tiny).
  // Dropping either half of the rescaling changes the logits by far more.
  json cfg = {{"model_type", "rwkv"},    {"vocab_size", 64},       {"hidden_size", 32},
              {"intermediate_size", 64}, {"num_hidden_layers", 6}, {"rescale_every", 0}};
  TempDir a, b;
  write_random_model(cfg, a.path(), 3);
  cfg["rescale_every"] = 2;
  write_random_model(cfg, b.path(), 3);
  auto backend = make_cpu_backend();
  auto ma = Model::load(a.path(), *backend);
  auto mb = Model::load(b.path(), *backend);
  const std::vector<int32_t> ids = prompt(12, 64);
  const std::vector<float> la = Session(*ma).forward(ids, true);
  const std::vector<float> lb = Session(*mb).forward(ids, true);
  CHECK(max_rel_error(lb, la) <= 1e-3);
}

TEST_CASE("phi3 GGUF from llama.cpp gives the safetensors logits", "[archs][models][cpu][gguf]") {
  const Reference ref = load_reference("phi3");
  auto backend = make_cpu_backend();
  auto st = Model::load(model_dir("phi3"), *backend);
  auto gguf = Model::load(model_dir("phi3") + "/model-f32.gguf", *backend);
  CHECK(gguf->config().model_type == "phi3");
  CHECK(gguf->config().num_kv_heads == 2);
  Session a(*st), b(*gguf);
  CHECK(max_rel_error(b.forward(ref.input_ids, true), a.forward(ref.input_ids, true)) <= 1e-5);
  b.reset();
  CHECK(greedy(b, ref.input_ids, 16, ref.vocab) == ref.greedy_ids);
}

TEST_CASE("gpt_neox GGUF in llama.cpp's layout gives the safetensors logits",
          "[archs][models][cpu][gguf]") {
  // What llama.cpp's converter (GPTNeoXModel) writes: its tensor names, and
  // query_key_value regrouped from per head [q_h k_h v_h] to [q | k | v] (weight and bias).
  const std::string src = model_dir("gpt_neox");
  const ModelConfig cfg = load_hf_config(src);
  auto store = WeightStore::open_dir(src);
  const int64_t H = cfg.num_heads, Dh = cfg.head_dim, D = cfg.hidden_size;
  auto gguf_name = [](const std::string& hf) -> std::string {
    const std::pair<const char*, const char*> kMap[] = {
        {"gpt_neox.embed_in.weight", "token_embd.weight"},
        {"gpt_neox.final_layer_norm.", "output_norm."},
        {"embed_out.weight", "output.weight"},
        {"input_layernorm.", "attn_norm."},
        {"attention.query_key_value.", "attn_qkv."},
        {"attention.dense.", "attn_output."},
        {"post_attention_layernorm.", "ffn_norm."},
        {"mlp.dense_h_to_4h.", "ffn_up."},
        {"mlp.dense_4h_to_h.", "ffn_down."}};
    std::string n = hf;
    if (n.rfind("gpt_neox.layers.", 0) == 0) n = "blk." + n.substr(16);
    for (const auto& [from, to] : kMap) {
      const size_t at = n.find(from);
      if (at != std::string::npos) n.replace(at, std::strlen(from), to);
    }
    return n;
  };
  std::vector<std::pair<std::string, std::vector<float>>> tensors;
  for (const std::string& name : store->names()) {
    const HostTensor* t = store->find(name);
    std::vector<float> v(t->shape.numel());
    std::memcpy(v.data(), t->data, v.size() * 4);
    if (name.find("query_key_value") != std::string::npos) {
      const int64_t row = t->shape.rank == 2 ? t->shape[1] : 1;  // elements per output row
      std::vector<float> r(v.size());
      for (int64_t h = 0; h < H; h++)
        for (int64_t part = 0; part < 3; part++)
          for (int64_t i = 0; i < Dh; i++)
            std::memcpy(&r[((part * D) + h * Dh + i) * row], &v[((h * 3 + part) * Dh + i) * row],
                        row * 4);
      v = r;
    }
    tensors.push_back({name, v});
  }
  TempDir tmp;
  const std::string path = tmp.file("neox.gguf");
  GgufWriter w;
  w.set("general.architecture", gguf_string("gptneox"));
  w.set("gptneox.context_length", gguf_u32(cfg.max_position_embeddings));
  w.set("gptneox.embedding_length", gguf_u32(D));
  w.set("gptneox.block_count", gguf_u32(cfg.num_layers));
  w.set("gptneox.feed_forward_length", gguf_u32(cfg.intermediate_size));
  w.set("gptneox.rope.dimension_count", gguf_u32(cfg.rotary_dims));
  w.set("gptneox.attention.head_count", gguf_u32(H));
  w.set("gptneox.use_parallel_residual", gguf_bool(cfg.parallel_residual));
  w.set("gptneox.attention.layer_norm_epsilon", gguf_f32(cfg.norm_eps));
  for (const auto& [name, v] : tensors)
    w.add_tensor(gguf_name(name), DType::F32, store->find(name)->shape);
  w.begin(path);
  for (const auto& [name, v] : tensors) w.write_tensor(v.data(), v.size() * 4);
  w.finish();

  const Reference ref = load_reference("gpt_neox");
  auto backend = make_cpu_backend();
  auto model = Model::load(path, *backend);
  CHECK(model->config().qkv_blocked);
  CHECK(model->config().rotary_dims == cfg.rotary_dims);
  CHECK_FALSE(model->config().parallel_residual);
  Session s(*model);
  const std::vector<float> logits = s.forward(ref.input_ids, true);
  CHECK(max_rel_error(logits, ref.logits) <= 1e-4);
  // llmcli convert writes it as a native folder (config.json with llmrt_qkv_blocked): the
  // same logits as the GGUF, and as quantizing it at load.
  for (const char* scheme : {"q0f32", "q8f16_1"}) {
    INFO(scheme);
    const std::string out = tmp.file(std::string("native-") + scheme);
    const CommandResult r = run_cli({"convert", path, "-o", out, "--quantization", scheme});
    INFO("stderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    auto conv = Model::load(out, *backend);
    CHECK(conv->config().qkv_blocked);
    CHECK(conv->config().rotary_dims == cfg.rotary_dims);
    const std::vector<float> got = Session(*conv).forward(ref.input_ids, true);
    const std::vector<float> want = std::string(scheme) == "q0f32"
                                        ? logits
                                        : Session(*Model::load(path, *backend, LoadOptions{scheme}))
                                              .forward(ref.input_ids, true);
    CHECK(got == want);
  }
}

TEST_CASE("convert q8f16_1 / q4f16_1 of each architecture reloads within the bounds",
          "[archs][convert][cpu]") {
  // Bounds of tests/test_quantize.cpp (weight rounding: q8 ~1e-2, q4 ~0.2 of the
  // logits' scale); the converted folder gives exactly the logits of quantizing at load.
  struct Case {
    const char* scheme;
    double tol;
  };
  for (const char* name : kArchs) {
    for (const Case& c : {Case{"q8f16_1", 2.5e-2}, Case{"q4f16_1", 0.3}}) {
      DYNAMIC_SECTION(name << " " << c.scheme) {
        const Reference ref = load_reference(name);
        TempDir tmp;
        const std::string out = tmp.file("out");
        const CommandResult r =
            run_cli({"convert", model_dir(name), "-o", out, "--quantization", c.scheme});
        INFO("stderr: " << r.err);
        REQUIRE(r.exit_code == 0);
        auto backend = make_cpu_backend();
        auto conv = Model::load(out, *backend);
        auto at_load = Model::load(model_dir(name), *backend, LoadOptions{c.scheme});
        CHECK(conv->weight_bytes() * 2 < Model::load(model_dir(name), *backend)->weight_bytes());
        const std::vector<float> got = Session(*conv).forward(ref.input_ids, true);
        const std::vector<float> want = Session(*at_load).forward(ref.input_ids, true);
        REQUIRE(got.size() == want.size());
        CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
        const double err = max_rel_error(got, ref.logits);
        INFO("max |Δ| / max |ref| = " << err);
        CHECK(err <= c.tol);
      }
    }
  }
}

TEST_CASE("config errors of the new architectures name the field", "[archs][errors]") {
  const auto err = [](const json& j) {
    try {
      parse_hf_config(j.dump());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const json neox = {{"model_type", "gpt_neox"}, {"vocab_size", 8},
                     {"hidden_size", 16},        {"intermediate_size", 32},
                     {"num_hidden_layers", 1},   {"num_attention_heads", 2}};
  CHECK(parse_hf_config(neox.dump()).rotary_dims == 2);  // default rotary_pct 0.25 of 8
  json bad = neox;
  bad["rotary_pct"] = 1.5;
  CHECK_THAT(err(bad), Catch::Contains("'rotary_pct' must be in (0, 1]"));
  bad = neox;
  bad["rotary_pct"] = 0.1;
  CHECK_THAT(err(bad), Catch::Contains("rotary_pct"));
  bad = neox;
  bad["hidden_act"] = "swish";
  CHECK_THAT(err(bad), Catch::Contains("activation 'swish' is not supported"));
  bad = neox;
  bad.erase("intermediate_size");
  CHECK_THAT(err(bad), Catch::Contains("missing field 'intermediate_size'"));
  CHECK_THAT(err({{"model_type", "gptj"},
                  {"vocab_size", 8},
                  {"n_embd", 16},
                  {"n_layer", 1},
                  {"n_head", 2},
                  {"rotary_dim", 10}}),
             Catch::Contains("rotary_dim (10) must be even and at most the head size (8)"));
  CHECK_THAT(err({{"model_type", "rwkv"}, {"vocab_size", 8}, {"num_hidden_layers", 1}}),
             Catch::Contains("missing field 'hidden_size'"));
}

TEST_CASE("phi3 longrope: short/long factors by context, attention factor", "[archs][cpu]") {
  // The phi3 fixture with rope_scaling added: factors of 1 change nothing; short
  // factors of 2 equal linear scaling by 2; beyond the original context the long
  // factors apply; a longer max_position_embeddings scales q·k.
  auto backend = make_cpu_backend(2);
  const Reference ref = load_reference("phi3");
  auto run = [&](const nlohmann::json& rope_scaling, int orig, int max_pos, int context) {
    TempDir dir;
    copy_model("phi3", dir.path());
    auto cfg = nlohmann::json::parse(read_file(dir.file("config.json")));
    cfg["rope_scaling"] = rope_scaling;
    if (orig > 0) cfg["original_max_position_embeddings"] = orig;
    cfg["max_position_embeddings"] = max_pos;
    write_file(dir.file("config.json"), cfg.dump());
    auto model = Model::load(dir.path(), *backend);
    SessionOptions so;
    so.context_size = context;
    Session s(*model, so);
    return std::make_pair(s.forward(ref.input_ids, true), rope_attention_factor(model->config()));
  };
  const int half = 8;  // head_dim 16 / 2
  auto longrope = [&](float sf, float lf) {
    return nlohmann::json{{"type", "longrope"},
                          {"short_factor", std::vector<float>(half, sf)},
                          {"long_factor", std::vector<float>(half, lf)}};
  };
  const auto ones = run(longrope(1, 1), 128, 128, 64);
  CHECK(ones.second == 1.f);
  CHECK(max_rel_error(ones.first, ref.logits) <= 1e-4);
  const auto linear2 = run({{"type", "linear"}, {"factor", 2.0}}, 0, 128, 64);
  CHECK(max_rel_error(run(longrope(2, 1), 128, 128, 64).first, linear2.first) <= 1e-6);
  // Context beyond the original 64: the long factors (2) are used.
  CHECK(max_rel_error(run(longrope(1, 2), 64, 64, 128).first, linear2.first) <= 1e-6);
  // max_position_embeddings 4x the original: cos/sin scaled by sqrt(1 + ln 4 / ln 32).
  const auto scaled = run(longrope(1, 1), 32, 128, 32);
  CHECK(scaled.second == Approx(std::sqrt(1.0 + std::log(4.0) / std::log(32.0))));
  CHECK(max_rel_error(scaled.first, ref.logits) > 1e-3);
  CHECK_THROWS_WITH(
      run({{"type", "longrope"}, {"short_factor", {1}}, {"long_factor", {1, 2}}}, 64, 64, 32),
      Catch::Contains("differ in length"));
}

TEST_CASE("phi3 longrope from GGUF (llama.cpp's factor tensors and keys)", "[archs][gguf][cpu]") {
  // The phi3 fixture's GGUF (written by llama.cpp) with the longrope tensors and keys
  // that llama.cpp's converter adds, against the same settings in config.json.
  auto backend = make_cpu_backend(2);
  const Reference ref = load_reference("phi3");
  const int half = 8;  // rope.dimension_count 16 / 2
  // Writes the fixture's GGUF with context_length max_pos and the given factors and keys
  // (a missing tensor or key where its value is empty / 0), returns its path in dir.
  auto gguf = [&](const TempDir& dir, const std::vector<float>& sf, const std::vector<float>& lf,
                  int orig, int max_pos, float attn) {
    GgufFile in(model_dir("phi3") + "/model-f32.gguf");
    GgufWriter w;
    for (const auto& [k, v] : in.metadata())
      if (k != "general.alignment" && k != "phi3.rope.scaling.original_context_length") w.set(k, v);
    w.set("phi3.context_length", gguf_u32(max_pos));
    if (orig > 0) w.set("phi3.rope.scaling.original_context_length", gguf_u32(orig));
    if (attn > 0) w.set("phi3.rope.scaling.attn_factor", gguf_f32(attn));
    for (const GgufTensorInfo& t : in.tensors()) w.add_tensor(t.name, DType::F32, t.shape);
    if (!lf.empty()) w.add_tensor("rope_factors_long.weight", DType::F32, {int64_t(lf.size())});
    if (!sf.empty()) w.add_tensor("rope_factors_short.weight", DType::F32, {int64_t(sf.size())});
    const std::string path = dir.file("phi3.gguf");
    w.begin(path);
    for (const GgufTensorInfo& t : in.tensors()) w.write_tensor(t.data, t.nbytes);
    if (!lf.empty()) w.write_tensor(lf.data(), lf.size() * 4);
    if (!sf.empty()) w.write_tensor(sf.data(), sf.size() * 4);
    w.finish();
    return path;
  };
  // The logits of the prompt at a context of `context`, and the cos/sin factor.
  auto run = [&](const std::string& model, int context) {
    auto m = Model::load(model, *backend);
    SessionOptions so;
    so.context_size = context;
    Session s(*m, so);
    return std::make_pair(s.forward(ref.input_ids, true), rope_attention_factor(m->config()));
  };
  auto hf = [&](const TempDir& dir, float sf, float lf, int orig, int max_pos) {
    copy_model("phi3", dir.path());
    auto cfg = json::parse(read_file(dir.file("config.json")));
    cfg["rope_scaling"] = {{"type", "longrope"},
                           {"short_factor", std::vector<float>(half, sf)},
                           {"long_factor", std::vector<float>(half, lf)}};
    cfg["original_max_position_embeddings"] = orig;
    cfg["max_position_embeddings"] = max_pos;
    write_file(dir.file("config.json"), cfg.dump());
    return dir.path();
  };
  // Within the original context the short factors apply, beyond it the long ones.
  for (int context : {64, 128}) {
    DYNAMIC_SECTION("context " << context) {
      TempDir a, b;
      const std::vector<float> sf(half, 2.f), lf(half, 3.f);
      const auto got = run(gguf(a, sf, lf, 64, 64, 0), context);
      const auto want = run(hf(b, 2.f, 3.f, 64, 64), context);
      CHECK(max_rel_error(got.first, want.first) <= 1e-6);
      CHECK(max_rel_error(got.first, ref.logits) > 1e-3);  // the factors did change them
      CHECK(got.second == 1.f);
      // llmcli convert keeps them (llm-config.json's rope_scaling).
      const std::string out = a.file("native");
      const CommandResult r =
          run_cli({"convert", a.file("phi3.gguf"), "-o", out, "--quantization", "q0f32"});
      INFO("stderr: " << r.err);
      REQUIRE(r.exit_code == 0);
      CHECK(run(out, context).first == got.first);
    }
  }
  {
    // The converter's attn_factor is taken as written; without it, derived.
    TempDir a, b, c;
    const std::vector<float> ones(half, 1.f);
    CHECK(run(gguf(a, ones, ones, 32, 128, 1.25f), 32).second == 1.25f);
    CHECK(run(gguf(b, ones, ones, 32, 128, 0), 32).second ==
          Approx(std::sqrt(1.0 + std::log(4.0) / std::log(32.0))));
    CHECK(max_rel_error(run(gguf(c, ones, ones, 32, 32, 0), 32).first, ref.logits) <= 1e-4);
  }
  // Broken files are refused by name.
  TempDir d1, d2, d3;
  CHECK_THROWS_WITH(Model::load(gguf(d1, {}, std::vector<float>(half, 1.f), 64, 64, 0), *backend),
                    Catch::Contains("rope_factors_short.weight must be f32 [8]"));
  CHECK_THROWS_WITH(Model::load(gguf(d2, std::vector<float>(half + 1, 1.f),
                                     std::vector<float>(half, 1.f), 64, 64, 0),
                                *backend),
                    Catch::Contains("rope_factors_short.weight must be f32 [8]"));
  CHECK_THROWS_WITH(
      Model::load(gguf(d3, std::vector<float>(half, 1.f), std::vector<float>(half, 1.f), -1, 64, 0),
                  *backend),
      Catch::Contains("rope.scaling.original_context_length"));
}
