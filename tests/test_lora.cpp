// LoRA adapters merged at load: a PEFT adapter and a GGUF adapter on the llama3 fixture
// give the logits of a checkpoint whose weights the test merged itself (in double), on a
// Hugging Face base and on the fixture's GGUF (Q/K rows in llama.cpp's order); errors.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "backends/cpu/cpu_backend.h"
#include "core/engine/session.h"
#include "core/error.h"
#include "core/formats/gguf.h"
#include "core/formats/gguf_writer.h"
#include "core/model.h"
#include "test_util.h"

using namespace llm;

namespace {

namespace fs = std::filesystem;

// A float tensor the test owns, by name.
struct Owned {
  Shape shape;
  std::vector<float> data;
  HostTensor host() const { return {DType::F32, shape, data.data(), data.size() * sizeof(float)}; }
};
using Tensors = std::map<std::string, Owned>;

Tensors read_all(const std::string& file) {
  Tensors out;
  SafetensorsFile f(file);
  for (const auto& [name, t] : f.tensors()) {
    REQUIRE(t.dtype == DType::F32);
    const float* p = static_cast<const float*>(t.data);
    out[name] = {t.shape, std::vector<float>(p, p + t.shape.numel())};
  }
  return out;
}

void write_all(const std::string& file, const Tensors& tensors) {
  std::vector<std::pair<std::string, HostTensor>> list;
  for (const auto& [name, t] : tensors) list.emplace_back(name, t.host());
  write_safetensors(file, list);
}

std::vector<float> logits(const std::string& model, const std::vector<int32_t>& ids,
                          const std::vector<LoraSpec>& loras = {}) {
  auto backend = make_cpu_backend(2);
  LoadOptions lo;
  lo.loras = loras;
  auto m = Model::load(model, *backend, lo);
  Session s(*m);
  return s.forward(ids, true);
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0;
  for (size_t i = 0; i < a.size(); i++) d = std::max(d, std::fabs(double(a[i]) - double(b[i])));
  return d;
}

// One adapted matrix: A [r, in], B [out, r] (an embedding's A [r, vocab], B [hidden, r]).
struct Factors {
  Owned a, b;
  bool embedding = false;
};

Owned random_tensor(Shape shape, std::mt19937& rng, float scale) {
  std::normal_distribution<float> n(0.f, scale);
  Owned t{shape, std::vector<float>(static_cast<size_t>(shape.numel()))};
  for (float& x : t.data) x = n(rng);
  return t;
}

// W += s * B A (embeddings: W += s * (B A)^T), in double.
void merge_in_test(Owned& w, const Factors& f, double s) {
  const int64_t rows = w.shape[0], cols = w.shape[1], r = f.a.shape[0];
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) {
      double acc = 0;
      for (int64_t k = 0; k < r; k++)
        acc += f.embedding ? double(f.b.data[j * r + k]) * f.a.data[k * rows + i]
                           : double(f.b.data[i * r + k]) * f.a.data[k * cols + j];
      w.data[i * cols + j] = static_cast<float>(w.data[i * cols + j] + s * acc);
    }
}

// The llama3 fixture's q/k/v/down of both layers and its embedding, rank 4.
std::map<std::string, Factors> make_factors(const Tensors& base, int r, uint32_t seed) {
  std::mt19937 rng(seed);
  std::map<std::string, Factors> out;
  for (int l = 0; l < 2; l++)
    for (const char* m :
         {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj"}) {
      const std::string name = "model.layers." + std::to_string(l) + "." + m;
      const Shape w = base.at(name + ".weight").shape;
      out[name] = {random_tensor({r, w[1]}, rng, 0.3f), random_tensor({w[0], r}, rng, 0.3f)};
    }
  const Shape e = base.at("model.embed_tokens.weight").shape;
  out["model.embed_tokens"] = {random_tensor({r, e[0]}, rng, 0.3f),
                               random_tensor({e[1], r}, rng, 0.3f), true};
  return out;
}

void write_peft(const std::string& dir, const std::map<std::string, Factors>& factors, int r,
                float alpha, bool rslora) {
  fs::create_directories(dir);
  Tensors t;
  for (const auto& [module, f] : factors) {
    const std::string p = "base_model.model." + module;
    t[p + (f.embedding ? ".lora_embedding_A" : ".lora_A.weight")] = f.a;
    t[p + (f.embedding ? ".lora_embedding_B" : ".lora_B.weight")] = f.b;
  }
  write_all(dir + "/adapter_model.safetensors", t);
  nlohmann::json cfg = {{"peft_type", "LORA"},
                        {"r", r},
                        {"lora_alpha", alpha},
                        {"use_rslora", rslora},
                        {"use_dora", false},
                        {"fan_in_fan_out", false},
                        {"target_modules", {"q_proj", "k_proj", "v_proj", "down_proj"}}};
  test::write_file(dir + "/adapter_config.json", cfg.dump());
}

}  // namespace

TEST_CASE("LoRA: a PEFT adapter gives the logits of the merged checkpoint", "[lora]") {
  test::TempDir dir;
  const std::string src = test::model_dir("llama3");
  const test::Reference ref = test::load_reference("llama3");
  const Tensors base = read_all(src + "/model.safetensors");
  const int r = 4;
  const auto factors = make_factors(base, r, 7);

  for (const bool rslora : {false, true}) {
    const float alpha = 8.f, user = 0.5f;
    const double s = user * alpha / (rslora ? std::sqrt(double(r)) : double(r));
    const std::string adapter = dir.file(rslora ? "peft-rs" : "peft");
    write_peft(adapter, factors, r, alpha, rslora);
    // The checkpoint merged by the test.
    const std::string merged = dir.file(rslora ? "merged-rs" : "merged");
    fs::create_directories(merged);
    fs::copy_file(src + "/config.json", merged + "/config.json");
    Tensors m = base;
    for (const auto& [module, f] : factors) merge_in_test(m.at(module + ".weight"), f, s);
    write_all(merged + "/model.safetensors", m);

    const std::vector<float> want = logits(merged, ref.input_ids);
    const std::vector<float> got = logits(src, ref.input_ids, {{adapter, user}});
    INFO("rslora " << rslora);
    CHECK(max_abs_diff(got, want) <= 2e-5);
    CHECK(max_abs_diff(got, logits(src, ref.input_ids)) > 1e-2);  // it did change them
    // The adapter's safetensors file alone (config beside it) is the same adapter.
    CHECK(logits(src, ref.input_ids, {{adapter + "/adapter_model.safetensors", user}}) == got);
  }

  // Scale 0 and a zero B are no change at all; two adapters add up.
  const std::vector<float> plain = logits(src, ref.input_ids);
  CHECK(logits(src, ref.input_ids, {{dir.file("peft"), 0.f}}) == plain);
  const std::vector<float> twice =
      logits(src, ref.input_ids, {{dir.file("peft"), 0.25f}, {dir.file("peft"), 0.25f}});
  CHECK(max_abs_diff(twice, logits(src, ref.input_ids, {{dir.file("peft"), 0.5f}})) <= 2e-5);
}

TEST_CASE("LoRA: Q/K rows in llama.cpp's order for GGUF bases and GGUF adapters", "[lora]") {
  test::TempDir dir;
  const std::string src = test::model_dir("llama3");
  const test::Reference ref = test::load_reference("llama3");
  const Tensors base = read_all(src + "/model.safetensors");
  const ModelConfig cfg = load_hf_config(src);
  const int r = 3;
  auto factors = make_factors(base, r, 11);
  factors.erase("model.embed_tokens");  // llama.cpp's converter has no embedding LoRA
  write_peft(dir.file("peft"), factors, r, 6.f, false);

  // llama.cpp's adapter: blk.N.attn_q.weight.lora_a / lora_b, B's Q/K rows permuted as
  // its converter permutes the base weights.
  GgufWriter w;
  w.set("general.architecture", gguf_string("llama"));
  w.set("general.type", gguf_string("adapter"));
  w.set("adapter.type", gguf_string("lora"));
  w.set("adapter.lora.alpha", gguf_f32(6.f));
  std::vector<std::pair<std::string, Owned>> out;
  for (const auto& [module, f] : factors) {
    const std::string g = gguf_tensor_name(module + ".weight");
    REQUIRE(!g.empty());
    Owned b = f.b;
    const bool q = module.find("q_proj") != std::string::npos;
    if (q || module.find("k_proj") != std::string::npos)
      permute_qk_rows(reinterpret_cast<const uint8_t*>(f.b.data.data()),
                      reinterpret_cast<uint8_t*>(b.data.data()), b.shape[0], r * sizeof(float),
                      q ? cfg.num_heads : cfg.num_kv_heads, true);
    out.emplace_back(g + ".lora_a", f.a);
    out.emplace_back(g + ".lora_b", b);
  }
  for (const auto& [name, t] : out) w.add_tensor(name, DType::F32, t.shape);
  const std::string gguf_adapter = dir.file("adapter.gguf");
  w.begin(gguf_adapter);
  for (const auto& [name, t] : out) w.write_tensor(t.data.data(), t.data.size() * sizeof(float));
  w.finish();

  const std::string gguf_base = src + "/model-f32.gguf";
  const std::vector<float> hf_peft = logits(src, ref.input_ids, {{dir.file("peft"), 1.f}});
  CHECK(max_abs_diff(hf_peft, logits(src, ref.input_ids)) > 1e-2);
  // Each adapter format on each base format: the same logits.
  CHECK(max_abs_diff(logits(gguf_base, ref.input_ids, {{gguf_adapter, 1.f}}), hf_peft) <= 1e-4);
  CHECK(max_abs_diff(logits(gguf_base, ref.input_ids, {{dir.file("peft"), 1.f}}), hf_peft) <= 1e-4);
  CHECK(max_abs_diff(logits(src, ref.input_ids, {{gguf_adapter, 1.f}}), hf_peft) <= 1e-5);
}

TEST_CASE("LoRA: adapters that do not fit the model are refused with a clear error", "[lora]") {
  test::TempDir dir;
  const std::string src = test::model_dir("llama3");
  auto backend = make_cpu_backend(1);
  auto load_with = [&](const std::string& adapter) {
    LoadOptions lo;
    lo.loras = {{adapter, 1.f}};
    return Model::load(src, *backend, lo);
  };
  auto adapter = [&](const std::string& name, const Tensors& t, nlohmann::json cfg) {
    const std::string d = dir.file(name);
    fs::create_directories(d);
    write_all(d + "/adapter_model.safetensors", t);
    test::write_file(d + "/adapter_config.json", cfg.dump());
    return d;
  };
  std::mt19937 rng(3);
  const nlohmann::json cfg = {{"r", 2}, {"lora_alpha", 2}};
  const std::string q = "base_model.model.model.layers.0.self_attn.q_proj";
  const Tensors good = {{q + ".lora_A.weight", random_tensor({2, 64}, rng, 1.f)},
                        {q + ".lora_B.weight", random_tensor({64, 2}, rng, 1.f)}};
  CHECK_NOTHROW(load_with(adapter("good", good, cfg)));

  Tensors other = good;
  other["base_model.model.model.layers.7.mlp.up_proj.lora_A.weight"] =
      random_tensor({2, 64}, rng, 1.f);
  other["base_model.model.model.layers.7.mlp.up_proj.lora_B.weight"] =
      random_tensor({160, 2}, rng, 1.f);
  CHECK_THROWS_WITH(
      load_with(adapter("other", other, cfg)),
      Catch::Contains("model.layers.7.mlp.up_proj.weight") && Catch::Contains("does not have"));
  Tensors wide = {{q + ".lora_A.weight", random_tensor({2, 128}, rng, 1.f)},
                  {q + ".lora_B.weight", random_tensor({64, 2}, rng, 1.f)}};
  CHECK_THROWS_WITH(load_with(adapter("wide", wide, cfg)), Catch::Contains("its factors are"));
  Tensors half = {{q + ".lora_A.weight", random_tensor({2, 64}, rng, 1.f)}};
  CHECK_THROWS_WITH(load_with(adapter("half", half, cfg)), Catch::Contains("only one of"));
  CHECK_THROWS_WITH(load_with(adapter("dora", good, {{"r", 2}, {"use_dora", true}})),
                    Catch::Contains("DoRA"));
  CHECK_THROWS_WITH(load_with(dir.file("missing")), Catch::Contains("does not exist"));
  const std::string no_cfg = dir.file("nocfg");
  fs::create_directories(no_cfg);
  write_all(no_cfg + "/adapter_model.safetensors", good);
  CHECK_THROWS_WITH(load_with(no_cfg), Catch::Contains("adapter_config.json"));
  // A model file is not an adapter.
  CHECK_THROWS_WITH(load_with(src + "/model-f32.gguf"), Catch::Contains("not a LoRA adapter"));

  // The CLI: --lora and --lora-scaled on any model command; a bad scale is an error.
  const std::string good_dir = dir.file("good");
  auto ok = test::run_cli({"logits", src, "--device", "cpu", "--token-ids", "1,2,3", "--out",
                           dir.file("x.safetensors"), "--lora-scaled", good_dir, "0.5"});
  INFO(ok.err);
  CHECK(ok.exit_code == 0);
  auto bad = test::run_cli({"logits", src, "--device", "cpu", "--token-ids", "1,2,3", "--out",
                            dir.file("y.safetensors"), "--lora-scaled", good_dir, "half"});
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.err, Catch::Contains("the scale must be a number"));
}
