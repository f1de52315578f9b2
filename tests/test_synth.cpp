// llmcli synth and the GGUF writer: shapes, seeded values, the tiny model with the
// Llama 2 vocab in both formats (same logits), GGUF keys read back, and files that
// match llama.cpp's own converter bit for bit.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "backends/cpu/cpu_backend.h"
#include "core/engine/sampler.h"
#include "core/engine/session.h"
#include "core/error.h"
#include "core/formats/gguf.h"
#include "core/formats/gguf_writer.h"
#include "core/formats/native_folder.h"
#include "core/formats/quantize.h"
#include "core/model.h"
#include "core/models/synth.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

using namespace llm;
using namespace llm::test;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

const std::string kSpmVocab = data_dir() + "/tokenizers/ggml-vocab-llama-spm.gguf";
const std::vector<int32_t> kPrompt = {1,     15043, 3186,
                                      29892, 920,   526};  // "<s> Hello world, how are"

std::vector<uint8_t> fill(const TensorSource& t) {
  std::vector<uint8_t> out(t.nbytes());
  t.fill(out.data());
  return out;
}

const TensorSource& find(const std::vector<TensorSource>& ts, const std::string& name) {
  for (const TensorSource& t : ts)
    if (t.name == name) return t;
  FAIL("no tensor " << name);
  throw 0;
}

// Runs llmcli synth; REQUIREs success.
void synth(const std::vector<std::string>& args) {
  std::vector<std::string> all = {"synth"};
  all.insert(all.end(), args.begin(), args.end());
  const CommandResult r = run_cli(all);
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
}

// Logits of the prompt on the CPU, or empty (with a warning) when the CPU backend
// cannot run the weights' dtype yet.
std::vector<float> cpu_logits(const std::string& model, const LoadOptions& lo = {}) {
  auto backend = make_cpu_backend();
  std::unique_ptr<Model> m;
  try {
    m = Model::load(model, *backend, lo);
    Session s(*m);
    return s.forward(kPrompt, true);
  } catch (const Error& e) {
    if (std::string(e.what()).find("not supported by the cpu backend yet") == std::string::npos)
      throw;
    WARN("skipped until the CPU backend runs these weights: " << e.what());
    return {};
  }
}

bool same_value(const GgufValue& a, const GgufValue& b) {
  if (a.type != b.type) return false;
  switch (a.type) {
    case GgufType::STRING:
      return a.str == b.str;
    case GgufType::F32:
    case GgufType::F64:
      return a.f == b.f;
    case GgufType::ARRAY:
      if (a.array_type != b.array_type || a.array.size() != b.array.size()) return false;
      for (size_t i = 0; i < a.array.size(); i++)
        if (!same_value(a.array[i], b.array[i])) return false;
      return true;
    default:
      return a.u == b.u;
  }
}

}  // namespace

TEST_CASE("synth shapes have the real hyper-parameters", "[synth]") {
  struct Want {
    const char* shape;
    int hidden, layers, heads, kv, ffn, vocab;
    double params_b;  // billions, from PERF.md
  };
  const Want wants[] = {{"llama-1b", 2048, 16, 32, 8, 8192, 32000, 1.10},
                        {"llama-7b", 4096, 32, 32, 32, 11008, 32000, 6.74},
                        {"llama-8b", 4096, 32, 32, 8, 14336, 128256, 8.03},
                        {"tiny", 64, 2, 4, 2, 160, 32000, 0.0042}};
  for (const Want& w : wants) {
    DYNAMIC_SECTION(w.shape) {
      const ModelConfig c = synth_config(w.shape);
      CHECK(c.model_type == "llama");
      CHECK(c.hidden_size == w.hidden);
      CHECK(c.num_layers == w.layers);
      CHECK(c.num_heads == w.heads);
      CHECK(c.num_kv_heads == w.kv);
      CHECK(c.intermediate_size == w.ffn);
      CHECK(c.vocab_size == w.vocab);
      double params = 0;
      for (const TensorSource& t : synth_tensors(c, DType::Q4_0, 0)) params += t.shape.numel();
      CHECK(params / 1e9 == Approx(w.params_b).epsilon(0.01));
    }
  }
  CHECK(synth_config("tiny", 32000).vocab_size == 32000);
  REQUIRE_THROWS_WITH(synth_config("llama-70b"),
                      "unknown shape 'llama-70b' (known: tiny, llama-1b, llama-7b, llama-8b)");
}

TEST_CASE("synth values depend on the seed only, and are well scaled", "[synth]") {
  const ModelConfig c = synth_config("tiny");
  const auto one = synth_tensors(c, DType::F32, 7, 1);
  const auto three = synth_tensors(c, DType::F32, 7, 3);
  const auto other = synth_tensors(c, DType::F32, 8, 2);
  REQUIRE(one.size() == 2 + 9 * 2 + 1);
  for (size_t i = 0; i < one.size(); i++) {
    INFO(one[i].name);
    CHECK(fill(one[i]) == fill(three[i]));
    CHECK(fill(one[i]) != fill(other[i]));
  }
  auto stats = [](const TensorSource& t, double* mean, double* sd) {
    const std::vector<uint8_t> b = fill(t);
    const float* v = reinterpret_cast<const float*>(b.data());
    const int64_t n = t.shape.numel();
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) s += v[i];
    *mean = s / n;
    for (int64_t i = 0; i < n; i++) s2 += (v[i] - *mean) * (v[i] - *mean);
    *sd = std::sqrt(s2 / n);
  };
  double mean, sd;
  stats(find(one, "model.layers.0.mlp.down_proj.weight"), &mean, &sd);
  CHECK(std::fabs(mean) < 0.01);
  CHECK(sd == Approx(1 / std::sqrt(160.0)).epsilon(0.03));  // 1/sqrt(fan_in)
  stats(find(one, "model.embed_tokens.weight"), &mean, &sd);
  CHECK(sd == Approx(1.0).epsilon(0.01));
  stats(find(one, "model.norm.weight"), &mean, &sd);
  CHECK(mean == Approx(1.0).epsilon(0.05));

  // Quantized tensors are the quantized float values, row by row.
  const auto q4 = synth_tensors(c, DType::Q4_0, 7, 2);
  const TensorSource& f = find(one, "model.layers.1.self_attn.q_proj.weight");
  const std::vector<uint8_t> fb = fill(f), qb = fill(find(q4, f.name));
  std::vector<uint8_t> want(qb.size());
  for (int64_t r = 0; r < f.shape[0]; r++)
    quantize_row_q4_0(reinterpret_cast<const float*>(fb.data()) + r * 64, want.data() + r * 36, 64);
  CHECK(qb == want);

  // f16 / bf16 matrices are the float values rounded to nearest even; norms stay f32.
  for (DType t : {DType::F16, DType::BF16}) {
    CAPTURE(dtype_name(t));
    const auto half = synth_tensors(c, t, 7, 2);
    REQUIRE(half.size() == one.size());
    for (size_t i = 0; i < one.size(); i++) {
      INFO(one[i].name);
      REQUIRE(half[i].name == one[i].name);
      const std::vector<uint8_t> fv = fill(one[i]), hv = fill(half[i]);
      if (one[i].shape.rank == 1) {
        CHECK(half[i].dtype == DType::F32);
        CHECK(hv == fv);
        continue;
      }
      REQUIRE(half[i].dtype == t);
      REQUIRE(hv.size() == fv.size() / 2);
      const float* v = reinterpret_cast<const float*>(fv.data());
      const uint16_t* h = reinterpret_cast<const uint16_t*>(hv.data());
      int64_t wrong = 0;
      for (int64_t j = 0; j < one[i].shape.numel(); j++)
        wrong += h[j] != (t == DType::F16 ? f32_to_f16(v[j]) : f32_to_bf16(v[j]));
      CHECK(wrong == 0);
    }
  }
}

TEST_CASE("llmcli synth tiny with the Llama 2 vocab: a native folder that runs", "[synth][cli]") {
  TempDir tmp;
  const std::string dir = tmp.file("tiny");
  synth({"--shape", "tiny", "--quantization", "q4f16_1", "--vocab", kSpmVocab, "-o", dir});
  REQUIRE(is_native_folder(dir));
  CHECK(fs::exists(dir + "/model-00001-of-00001.safetensors"));
  CHECK(fs::file_size(dir + "/model-00001-of-00001.safetensors") < 3'000'000);

  const NativeConfig nc = read_native_config(dir);
  CHECK(nc.model_type == "llama");
  CHECK(nc.quantization == "q4f16_1");
  CHECK(nc.model.vocab_size == 32000);
  CHECK(nc.model.hidden_size == 64);
  CHECK(nc.conv_template == "llama-2");
  CHECK(nc.tokenizer_files == std::vector<std::string>{"tokenizer.gguf"});
  CHECK(nc.bos_token_id == 1);
  CHECK(nc.eos_token_ids == std::vector<int>{2});
  CHECK(nc.context_window_size == 2048);

  // The vocab-only GGUF tokenizes like the source vocab.
  GgufFile vocab(kSpmVocab);
  auto want = Tokenizer::from_gguf(vocab);
  auto got = Tokenizer::load(dir + "/tokenizer.gguf");
  CHECK(got->encode("Hello world, how are", true) == want->encode("Hello world, how are", true));
  CHECK(got->encode("Hello world, how are", true) ==
        std::vector<int32_t>(kPrompt.begin(), kPrompt.end()));

  auto backend = make_cpu_backend();
  WeightStore::open_dir(dir);  // a plain safetensors reader sees the quantized tensors too
  auto store = open_native_weights(dir);
  CHECK(store->find("model.layers.0.mlp.down_proj.weight")->dtype == DType::Q4_0);
  CHECK(store->find("model.layers.0.mlp.down_proj.weight")->shape == Shape{64, 160});
  CHECK(store->find("model.norm.weight")->dtype == DType::F32);

  const std::vector<float> logits = cpu_logits(dir);
  if (!logits.empty()) {
    // Random but spread: a clear argmax, no NaN.
    double s = 0, s2 = 0;
    int bad = 0;
    for (float v : logits) {
      bad += !std::isfinite(v);
      s += v;
      s2 += double(v) * v;
    }
    REQUIRE(bad == 0);
    const double sd = std::sqrt(s2 / logits.size() - (s / logits.size()) * (s / logits.size()));
    CHECK(sd > 0.3);
    const CommandResult r = run_cli({"generate", dir, "--device", "cpu", "--token-ids",
                                     join_ids(kPrompt), "-n", "4", "--temperature", "0", "--json"});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(nlohmann::json::parse(r.out)["ids"].size() == 4);
  }
}

TEST_CASE("synth GGUF and native folder of the same seed give the same logits", "[synth][gguf]") {
  struct Case {
    const char* q;
    DType matrices;
    uint32_t ggml_type, file_type;  // of the matrices; llama_ftype
  };
  const Case cases[] = {{"q0f16", DType::F16, 1, 1},
                        {"q0bf16", DType::BF16, 30, 32},
                        {"q8f16_1", DType::Q8_0, 8, 7},
                        {"q4f16_1", DType::Q4_0, 2, 2}};
  for (const Case& k : cases) {
    const char* q = k.q;
    DYNAMIC_SECTION(q) {
      TempDir tmp;
      const std::string dir = tmp.file("native"), gguf = tmp.file("tiny.gguf");
      synth(
          {"--shape", "tiny", "--quantization", q, "--vocab", kSpmVocab, "--seed", "5", "-o", dir});
      synth({"--shape", "tiny", "--quantization", q, "--vocab", kSpmVocab, "--seed", "5",
             "--format", "gguf", "-o", gguf});
      // Both hold the matrices in the scheme's type (GGUF: its ggml type and file type).
      CHECK(read_native_config(dir).quantization == q);
      auto store = open_native_weights(dir);
      CHECK(store->find("model.embed_tokens.weight")->dtype == k.matrices);
      CHECK(store->find("model.layers.1.mlp.down_proj.weight")->dtype == k.matrices);
      CHECK(store->find("model.norm.weight")->dtype == DType::F32);
      GgufFile f(gguf);
      CHECK(f.get_int("general.file_type") == k.file_type);
      for (const GgufTensorInfo& t : f.tensors()) {
        INFO(t.name);
        CHECK(t.ggml_type == (t.shape.rank == 1 ? 0u : k.ggml_type));
      }
      const std::vector<float> a = cpu_logits(dir), b = cpu_logits(gguf);
      if (a.empty() || b.empty()) continue;
      REQUIRE(a.size() == kPrompt.size() * 32000);
      // Only the rope layout differs (llama.cpp's interleaved Q/K rows).
      CHECK(max_rel_error(b, a) <= 1e-5);
    }
  }
}

// q4_1 stands in for a Q4_K file's matrices in benchmarks: GGUF only, since no
// quantization scheme (and so no native folder's llm-config.json) names it.
TEST_CASE("synth q4_1 writes a GGUF of Q4_1 matrices that the CPU runs as q4_1", "[synth][gguf]") {
  TempDir tmp;
  const std::string gguf = tmp.file("tiny.gguf");
  synth({"--shape", "tiny", "--quantization", "q4_1", "--vocab", kSpmVocab, "--seed", "5",
         "--format", "gguf", "-o", gguf});
  GgufFile f(gguf);
  CHECK(f.get_int("general.file_type") == 3);  // LLAMA_FTYPE_MOSTLY_Q4_1
  for (const GgufTensorInfo& t : f.tensors()) {
    INFO(t.name);
    CHECK(t.ggml_type == (t.shape.rank == 1 ? 0u : 3u));
  }
  auto cpu = make_cpu_backend(2);
  auto m = Model::load(gguf, *cpu);
  CHECK(m->weight_dtype("model.layers.0.mlp.down_proj.weight") == DType::Q4_1);
  CHECK(m->weight_dtype("model.embed_tokens.weight") == DType::Q4_1);
  // The same random values as q0f32's, within a 4-bit step: the logits stay close.
  const std::string f32 = tmp.file("f32.gguf");
  synth({"--shape", "tiny", "--quantization", "q0f32", "--vocab", kSpmVocab, "--seed", "5",
         "--format", "gguf", "-o", f32});
  const double err = max_rel_error(cpu_logits(gguf), cpu_logits(f32));
  CHECK(err <= 0.3);
  CHECK(err > 1e-3);
  const CommandResult r =
      run_cli({"synth", "--shape", "tiny", "--quantization", "q4_1", "-o", tmp.file("n")});
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Catch::Contains("q4_1 writes GGUF files only"));
}

TEST_CASE("synth q0bf16 is the q0f32 model of the same seed rounded to bf16", "[synth]") {
  TempDir tmp;
  const std::string f32 = tmp.file("f32"), bf16 = tmp.file("bf16");
  synth({"--shape", "tiny", "--quantization", "q0f32", "--seed", "9", "-o", f32});
  synth({"--shape", "tiny", "--quantization", "q0bf16", "--seed", "9", "-o", bf16});
  auto a = open_native_weights(f32), b = open_native_weights(bf16);
  REQUIRE(a->names() == b->names());
  for (const std::string& name : a->names()) {
    INFO(name);
    const HostTensor &x = *a->find(name), &y = *b->find(name);
    REQUIRE(x.dtype == DType::F32);
    REQUIRE(y.shape == x.shape);
    const float* v = static_cast<const float*>(x.data);
    if (x.shape.rank == 1) {  // norms stay f32
      CHECK(y.dtype == DType::F32);
      CHECK(std::memcmp(x.data, y.data, x.nbytes) == 0);
      continue;
    }
    REQUIRE(y.dtype == DType::BF16);
    const uint16_t* h = static_cast<const uint16_t*>(y.data);
    int64_t wrong = 0;
    for (int64_t i = 0; i < x.shape.numel(); i++) wrong += h[i] != f32_to_bf16(v[i]);
    CHECK(wrong == 0);
  }
  // The same weights reach the same kernels as rounding the f32 model at load.
  const std::vector<float> want = cpu_logits(f32, {"q0bf16"}), got = cpu_logits(bf16);
  REQUIRE(got.size() == kPrompt.size() * 32000);
  CHECK(got == want);
  CHECK(got != cpu_logits(f32));  // really rounded
}

TEST_CASE("a synth GGUF carries every key written and the vocab's keys", "[synth][gguf]") {
  TempDir tmp;
  const std::string path = tmp.file("tiny.gguf");
  synth({"--shape", "tiny", "--quantization", "q4f16_1", "--vocab", kSpmVocab, "--format", "gguf",
         "-o", path});
  GgufFile f(path);
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 32);
  CHECK(f.get_string("general.architecture") == "llama");
  CHECK(f.get_int("general.file_type") == 2);  // LLAMA_FTYPE_MOSTLY_Q4_0
  CHECK(f.get_int("general.quantization_version") == 2);
  CHECK(f.find("general.alignment")->type == GgufType::U32);
  const std::pair<const char*, int64_t> ints[] = {
      {"llama.context_length", 2048},     {"llama.embedding_length", 64},
      {"llama.block_count", 2},           {"llama.feed_forward_length", 160},
      {"llama.attention.head_count", 4},  {"llama.attention.head_count_kv", 2},
      {"llama.rope.dimension_count", 16}, {"llama.vocab_size", 32000}};
  for (const auto& [key, v] : ints) {
    INFO(key);
    CHECK(f.find(key)->type == GgufType::U32);
    CHECK(f.get_int(key) == v);
  }
  CHECK(f.find("llama.attention.layer_norm_rms_epsilon")->type == GgufType::F32);
  CHECK(f.get_float("llama.attention.layer_norm_rms_epsilon") == Approx(1e-5));
  CHECK(f.get_float("llama.rope.freq_base") == 10000.0);

  GgufFile vocab(kSpmVocab);
  int n_tokenizer_keys = 0;
  for (const auto& [key, value] : vocab.metadata()) {
    if (key.rfind("tokenizer.", 0) != 0) continue;
    INFO(key);
    REQUIRE(f.find(key) != nullptr);
    CHECK(same_value(*f.find(key), value));
    n_tokenizer_keys++;
  }
  CHECK(n_tokenizer_keys >= 8);

  REQUIRE(f.tensors().size() == 3 + 9 * 2);
  for (const GgufTensorInfo& t : f.tensors()) {
    INFO(t.name);
    const bool norm = t.name.find("norm") != std::string::npos;
    CHECK(t.ggml_type == (norm ? 0u : 2u));
    CHECK(t.offset % 32 == 0);
  }
  CHECK(f.tensors()[0].name == "token_embd.weight");
  CHECK(f.tensors()[0].shape == Shape{32000, 64});

  // The Q/K rows are llama.cpp's permutation of the native folder's.
  const std::string dir = tmp.file("native");
  synth({"--shape", "tiny", "--quantization", "q4f16_1", "--vocab", kSpmVocab, "-o", dir});
  auto store = open_native_weights(dir);
  for (const GgufTensorInfo& t : f.tensors()) {
    if (t.name != "blk.1.attn_k.weight") continue;
    const HostTensor* hf = store->find("model.layers.1.self_attn.k_proj.weight");
    REQUIRE(hf != nullptr);
    REQUIRE(hf->nbytes == t.nbytes);
    std::vector<uint8_t> back(t.nbytes);
    permute_qk_rows(t.data, back.data(), 32, 36, 2, /*to_gguf=*/false);
    CHECK(std::memcmp(back.data(), hf->data, t.nbytes) == 0);
    CHECK(std::memcmp(t.data, hf->data, t.nbytes) != 0);
  }
}

TEST_CASE("GgufWriter writes every value type and tensor layout GgufFile reads", "[gguf]") {
  TempDir tmp;
  const std::string path = tmp.file("all.gguf");
  auto int_of = [](GgufType t, int64_t i, uint64_t u) {
    GgufValue v;
    v.type = t;
    v.i = i;
    v.u = u;
    return v;
  };
  std::vector<std::pair<std::string, GgufValue>> kv = {
      {"u8", int_of(GgufType::U8, 200, 200)},
      {"i8", int_of(GgufType::I8, -100, uint64_t(-100))},
      {"u16", int_of(GgufType::U16, 60000, 60000)},
      {"i16", int_of(GgufType::I16, -30000, uint64_t(-30000))},
      {"u32", gguf_u32(4000000000u)},
      {"i32", gguf_i32(-2000000000)},
      {"u64", gguf_u64(~uint64_t{0})},
      {"i64", int_of(GgufType::I64, -(int64_t{1} << 60), uint64_t(-(int64_t{1} << 60)))},
      {"f32", gguf_f32(0.1f)},
      {"bool", gguf_bool(true)},
      {"str", gguf_string(std::string("a\0b", 3))},
      {"strs", gguf_string_array({"x", "", "zz"})},
  };
  GgufValue f64;
  f64.type = GgufType::F64;
  f64.f = 1e300;
  kv.emplace_back("f64", f64);
  GgufValue nested;  // [[1, 2], []] of i32
  nested.type = GgufType::ARRAY;
  nested.array_type = GgufType::ARRAY;
  for (int n : {2, 0}) {
    GgufValue inner;
    inner.type = GgufType::ARRAY;
    inner.array_type = GgufType::I32;
    for (int i = 0; i < n; i++) inner.array.push_back(gguf_i32(i + 1));
    nested.array.push_back(inner);
  }
  kv.emplace_back("nested", nested);

  GgufWriter w;
  for (const auto& [k, v] : kv) w.set(k, v);
  w.set("u8", int_of(GgufType::U8, 201, 201));  // replaces, keeps the place
  const std::vector<float> a = {1, 2, 3};
  std::vector<uint8_t> q(2 * 18, 7);
  const std::vector<uint16_t> h = {1, 2, 3, 4, 5};
  w.add_tensor("a", DType::F32, {3});
  w.add_tensor("q", DType::Q4_0, {2, 32});
  w.add_tensor("h", DType::F16, {5, 1});
  w.begin(path);
  w.write_tensor(a.data(), 12);
  REQUIRE_THROWS_WITH(w.write_tensor(q.data(), 35), Contains("tensor 'q' needs 36 bytes, got 35"));
  w.write_tensor(q.data(), q.size());
  w.write_tensor(h.data(), 10);
  w.finish();

  GgufFile f(path);
  CHECK(f.metadata().size() == kv.size() + 1);  // + general.alignment
  for (const auto& [k, v] : kv) {
    INFO(k);
    REQUIRE(f.find(k) != nullptr);
    if (k == "u8")
      CHECK(f.get_int(k) == 201);
    else
      CHECK(same_value(*f.find(k), v));
  }
  CHECK(f.get_int("u32") == 4000000000LL);
  CHECK(f.find("u64")->u == ~uint64_t{0});
  CHECK(f.get_string("str") == std::string("a\0b", 3));
  CHECK(f.get_string_array("strs") == std::vector<std::string>{"x", "", "zz"});
  REQUIRE(f.tensors().size() == 3);
  CHECK(f.tensors()[0].shape == Shape{3});
  CHECK(f.tensors()[1].shape == Shape{2, 32});
  CHECK(f.tensors()[1].ggml_type == 2);
  CHECK(f.tensors()[2].shape == Shape{5, 1});
  for (const GgufTensorInfo& t : f.tensors()) CHECK(t.offset % 32 == 0);
  CHECK(std::memcmp(f.tensors()[0].data, a.data(), 12) == 0);
  CHECK(std::memcmp(f.tensors()[1].data, q.data(), 36) == 0);
  CHECK(std::memcmp(f.tensors()[2].data, h.data(), 10) == 0);

  // An unfinished write leaves no file behind.
  {
    GgufWriter partial;
    partial.add_tensor("a", DType::F32, {3});
    partial.begin(tmp.file("partial.gguf"));
    REQUIRE_THROWS_WITH(partial.finish(), Contains("0 of 1 tensors written"));
  }
  CHECK_FALSE(fs::exists(tmp.file("partial.gguf")));
  CHECK(fs::directory_iterator(tmp.path()) != fs::directory_iterator());
  for (const auto& e : fs::directory_iterator(tmp.path()))
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
  GgufWriter bad;
  REQUIRE_THROWS_WITH(bad.add_tensor("i", DType::I32, {2}), Contains("cannot store i32"));
}

TEST_CASE("write_llama_gguf matches llama.cpp's converter bit for bit", "[synth][gguf]") {
  // The fixtures' model-f32.gguf files were made by llama.cpp's convert_hf_to_gguf.py.
  for (const char* name : {"llama2", "llama3"}) {
    DYNAMIC_SECTION(name) {
      TempDir tmp;
      const std::string dir = model_dir(name);
      auto store = WeightStore::open_dir(dir);
      std::vector<TensorSource> ts;
      for (const std::string& n : store->names()) {
        const HostTensor* t = store->find(n);
        TensorSource s;
        s.name = n;
        s.dtype = t->dtype;
        s.shape = t->shape;
        s.fill = [t](uint8_t* dst) { std::memcpy(dst, t->data, t->nbytes); };
        ts.push_back(s);
      }
      GgufModelOptions opts;
      write_llama_gguf(tmp.file("out.gguf"), load_hf_config(dir), ts, opts);
      GgufFile ours(tmp.file("out.gguf")), theirs(dir + "/model-f32.gguf");
      REQUIRE(ours.tensors().size() == theirs.tensors().size());
      for (const GgufTensorInfo& t : theirs.tensors()) {
        INFO(t.name);
        const GgufTensorInfo* o = nullptr;
        for (const GgufTensorInfo& x : ours.tensors())
          if (x.name == t.name) o = &x;
        REQUIRE(o != nullptr);
        CHECK(o->ggml_type == t.ggml_type);
        CHECK(o->shape == t.shape);
        REQUIRE(o->nbytes == t.nbytes);
        CHECK(std::memcmp(o->data, t.data, t.nbytes) == 0);  // rope_freqs (llama3) too
      }
      for (const auto& [key, value] : theirs.metadata()) {
        if (key.rfind("llama.", 0) != 0) continue;
        INFO(key);
        REQUIRE(ours.find(key) != nullptr);
        CHECK(same_value(*ours.find(key), value));
      }
      // And it loads to the same logits as the original.
      const Reference ref = load_reference(name);
      auto backend = make_cpu_backend();
      auto model = Model::load(tmp.file("out.gguf"), *backend);
      Session s(*model);
      CHECK(max_rel_error(s.forward(ref.input_ids, true), ref.logits) <= 1e-4);
    }
  }
}

TEST_CASE("llmcli synth errors name the problem", "[synth][cli]") {
  TempDir tmp;
  auto check_error = [](const CommandResult& r, const std::string& what) {
    INFO("stderr: " << r.err);
    CHECK(r.exit_code != 0);
    CHECK(r.exit_code < 128);
    CHECK(r.err.find("error: ") != std::string::npos);
    CHECK(r.err.find(what) != std::string::npos);
  };
  const std::string out = tmp.file("out");
  check_error(run_cli({"synth", "--shape", "llama-3b", "-o", out}), "unknown shape 'llama-3b'");
  check_error(run_cli({"synth", "--shape", "tiny", "--quantization", "q3f16", "-o", out}),
              "unknown quantization 'q3f16' (known: q0f32, q0f16, q0bf16, q8f16_1, q4f16_1)");
  check_error(run_cli({"synth", "--shape", "tiny", "--vocab", tmp.file("none.gguf"), "-o", out}),
              "vocab '" + tmp.file("none.gguf") + "' does not exist");
  check_error(run_cli({"synth", "--shape", "tiny", "--vocab",
                       data_dir() + "/tokenizers/hf-gpt2/tokenizer.json", "--format", "gguf", "-o",
                       tmp.file("x.gguf")}),
              "a GGUF model needs a GGUF vocab");
  check_error(run_cli({"synth", "--shape", "tiny", "--format", "onnx", "-o", out}),
              "unknown format 'onnx'");
  CHECK_FALSE(fs::exists(out));
  CHECK_FALSE(fs::exists(tmp.file("x.gguf")));
}

TEST_CASE("synth with a tokenizer.json vocab copies the tokenizer files", "[synth]") {
  TempDir tmp;
  const std::string dir = tmp.file("gpt2");
  synth({"--shape", "tiny", "--quantization", "q8f16_1", "--vocab",
         data_dir() + "/tokenizers/hf-gpt2/tokenizer.json", "-o", dir});
  const NativeConfig nc = read_native_config(dir);
  CHECK(nc.tokenizer_files == std::vector<std::string>{"tokenizer.json", "tokenizer_config.json"});
  CHECK(nc.model.vocab_size == 50257);
  auto tok = Tokenizer::load(dir);  // the folder works as a tokenizer source as it is
  CHECK(tok->vocab_size() == 50257);
  CHECK(tok->decode(tok->encode("Hello world")) == "Hello world");
  CHECK(open_native_weights(dir)->find("lm_head.weight")->shape == Shape{50257, 64});
}
