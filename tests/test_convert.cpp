// llmcli convert / gen-config and the native folder: quantized safetensors, the
// folder reloading to the same weights and logits as quantizing at load, GGUF
// sources, llm-config.json, and damaged folders.
#include <sys/resource.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "backends/cpu/cpu_backend.h"
#include "core/engine/session.h"
#include "core/error.h"
#include "core/formats/gguf_model.h"
#include "core/formats/native_folder.h"
#include "core/formats/quantize.h"
#include "core/model.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

using namespace llm;
using namespace llm::test;
using Catch::Contains;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* kSchemes[] = {"q4f16_1", "q8f16_1", "q0f16", "q0bf16", "q0f32"};

HostTensor host(DType dt, Shape s, const void* data) {
  return HostTensor{dt, s, data, tensor_bytes(dt, s)};
}

void check_error(const CommandResult& r, const std::string& what) {
  INFO("stderr: " << r.err);
  CHECK(r.exit_code != 0);
  CHECK(r.exit_code < 128);
  CHECK(r.err.find("error: ") != std::string::npos);
  CHECK(r.err.find(what) != std::string::npos);
}

void convert(const std::vector<std::string>& args) {
  std::vector<std::string> all = {"convert"};
  all.insert(all.end(), args.begin(), args.end());
  const CommandResult r = run_cli(all);
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
}

// All logits of the reference prompt on the CPU; empty (with a warning) while the
// CPU backend cannot run the weights' dtype.
std::vector<float> cpu_logits(const std::string& model, const std::vector<int32_t>& ids,
                              const LoadOptions& lo = {}) {
  auto backend = make_cpu_backend();
  try {
    auto m = Model::load(model, *backend, lo);
    Session s(*m);
    return s.forward(ids, true);
  } catch (const Error& e) {
    if (std::string(e.what()).find("not supported by the cpu backend yet") == std::string::npos)
      throw;
    WARN("skipped until the CPU backend runs these weights: " << e.what());
    return {};
  }
}

bool same_bytes(const HostTensor& a, const HostTensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.nbytes == b.nbytes &&
         std::memcmp(a.data, b.data, a.nbytes) == 0;
}

}  // namespace

TEST_CASE("safetensors stores q8_0/q4_0 tensors as U8 blocks", "[convert][safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("q.safetensors");
  std::vector<float> f(3 * 64);
  for (size_t i = 0; i < f.size(); i++) f[i] = std::sin(i * 0.37f);
  std::vector<uint8_t> q4(3 * 36), q8(3 * 68);
  for (int r = 0; r < 3; r++) {
    quantize_row_q4_0(f.data() + r * 64, q4.data() + r * 36, 64);
    quantize_row_q8_0(f.data() + r * 64, q8.data() + r * 68, 64);
  }
  const std::vector<float> odd = {1, 2, 3};
  write_safetensors(path,
                    {{"w.q4", host(DType::Q4_0, {3, 64}, q4.data())},
                     {"w.q8", host(DType::Q8_0, {3, 1, 64}, q8.data())},
                     {"f", host(DType::F32, {3}, odd.data())}},
                    {{"note", "x"}});
  SafetensorsFile st(path);
  REQUIRE(st.tensors().size() == 3);
  CHECK(same_bytes(st.tensors().at("w.q4"), host(DType::Q4_0, {3, 64}, q4.data())));
  CHECK(same_bytes(st.tensors().at("w.q8"), host(DType::Q8_0, {3, 1, 64}, q8.data())));
  CHECK(st.metadata().at("note") == "x");
  CHECK(st.metadata().at("llmrt.dtype.w.q4") == "q4_0");
  CHECK(st.metadata().at("llmrt.shape.w.q8") == "[3,1,64]");

  // The header says U8 [rows, row_bytes] (standard readers accept it); data 16-aligned.
  const std::string raw = read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  CHECK((8 + n) % 64 == 0);
  const json header = json::parse(raw.substr(8, n));
  CHECK(header["w.q4"]["dtype"] == "U8");
  CHECK(header["w.q4"]["shape"] == json::array({3, 36}));
  CHECK(header["w.q8"]["shape"] == json::array({3, 68}));
  MappedFile mf(path);
  for (const char* name : {"w.q4", "w.q8"})
    CHECK((static_cast<const uint8_t*>(st.tensors().at(name).data) - mf.data()) % 4 == 0);

  // Metadata that disagrees with the stored bytes is named, with the tensor.
  auto rewrite = [&](const std::string& key, const std::string& value) {
    json h = header;
    h["__metadata__"][key] = value;
    std::string text = h.dump();
    REQUIRE(text.size() <= n);
    text.append(n - text.size(), ' ');
    std::string bytes = raw;
    bytes.replace(8, n, text);
    write_file(tmp.file("bad.safetensors"), bytes);
    return tmp.file("bad.safetensors");
  };
  std::string bad = rewrite("llmrt.shape.w.q4", "[3,96]");
  REQUIRE_THROWS_WITH(SafetensorsFile(bad), bad +
                                                ": tensor 'w.q4': stored U8 [3, 36] does not "
                                                "hold q4_0 [3, 96]");
  bad = rewrite("llmrt.dtype.w.q4", "q5_k");
  REQUIRE_THROWS_WITH(SafetensorsFile(bad), Contains("tensor 'w.q4' has unsupported packed dtype "
                                                     "'q5_k'"));
  bad = rewrite("llmrt.shape.w.q8", "[3, 64");
  REQUIRE_THROWS_WITH(SafetensorsFile(bad),
                      Contains("tensor 'w.q8' has an invalid logical shape '[3, 64'"));
}

TEST_CASE("convert writes exactly the tensors that quantizing at load makes", "[convert]") {
  const std::string src = model_dir("llama3");
  for (const char* q : kSchemes) {
    DYNAMIC_SECTION(q) {
      TempDir tmp;
      const std::string dir = tmp.file("out");
      convert({src, "-o", dir, "--quantization", q, "--threads", "3"});
      auto got = open_native_weights(dir);
      auto from = WeightStore::open_dir(src);
      const DType target = parse_quant_scheme(q).weight_dtype;
      REQUIRE(got->names() == from->names());
      for (const std::string& name : from->names()) {
        INFO(name);
        const HostTensor& s = *from->find(name);
        const HostTensor& t = *got->find(name);
        CHECK(t.shape == s.shape);
        if (s.shape.rank != 2) {  // vectors stay as stored (the loader makes them f32)
          CHECK(same_bytes(t, s));
        } else if (target == DType::Q8_0 || target == DType::Q4_0) {
          const std::vector<uint8_t> want = quantize_tensor(s, target, 1);
          CHECK(same_bytes(t, host(target, s.shape, want.data())));
        } else if (target == DType::F16 || target == DType::BF16) {
          std::vector<uint16_t> want(s.shape.numel());
          const float* v = static_cast<const float*>(s.data);
          for (size_t i = 0; i < want.size(); i++)
            want[i] = target == DType::F16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
          CHECK(same_bytes(t, host(target, s.shape, want.data())));
        } else {
          CHECK(same_bytes(t, s));
        }
      }
    }
  }
}

TEST_CASE("a converted folder reloads with the logits of quantizing at load", "[convert]") {
  // Bitwise on the CPU: same quantizer, same kernels.
  const Reference ref = load_reference("llama3");
  for (const char* q : kSchemes) {
    DYNAMIC_SECTION(q) {
      TempDir tmp;
      const std::string dir = tmp.file("out");
      convert({model_dir("llama3"), "-o", dir, "--quantization", q});
      const std::vector<float> want = cpu_logits(model_dir("llama3"), ref.input_ids, {q});
      const std::vector<float> got = cpu_logits(dir, ref.input_ids);
      if (want.empty() || got.empty()) continue;
      REQUIRE(got.size() == want.size());
      CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
      // Loading it again with the same --quantization changes nothing.
      CHECK(cpu_logits(dir, ref.input_ids, {q}) == got);
      if (std::string(q) == "q0f32") CHECK(max_rel_error(got, ref.logits) <= 1e-4);
      if (std::string(q) == "q8f16_1") CHECK(max_rel_error(got, ref.logits) <= 0.05);
      // bf16 keeps 8 significant bits (f16: 11): measured 4.5e-3 (q0f16: 5e-4).
      if (std::string(q) == "q0bf16") CHECK(max_rel_error(got, ref.logits) <= 0.02);
    }
  }
}

TEST_CASE("convert shards, prints a progress summary, and re-converts", "[convert]") {
  TempDir tmp;
  const std::string src = model_dir("llama_bf16_sharded");
  const std::string a = tmp.file("a"), b = tmp.file("b"), c = tmp.file("c");
  GenConfigOptions opts;
  opts.quantization = "q8f16_1";
  opts.shard_bytes = 40000;
  uint64_t last_done = 0, last_total = 0;
  int calls = 0;
  opts.progress = [&](uint64_t done, uint64_t total) {
    CHECK(done >= last_done);
    last_done = done;
    last_total = total;
    calls++;
  };
  convert_model(src, a, opts);
  CHECK(last_done == last_total);
  CHECK(calls > 5);
  const json index = json::parse(read_file(a + "/model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& e : index["weight_map"].items()) shards.insert(e.value().get<std::string>());
  CHECK(shards.size() > 3);
  for (const std::string& s : shards) CHECK(fs::exists(a + "/" + s));
  CHECK(index["metadata"]["total_size"].get<uint64_t>() == last_total);

  // The CLI: one summary line when stderr is not a terminal.
  const CommandResult r = run_cli({"convert", src, "-o", b, "--quantization", "q8f16_1"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find("convert q8f16_1: ") != std::string::npos);
  CHECK(r.err.find(" in ") != std::string::npos);

  // A native folder converts too: q0f32 -> q8f16_1 gives the same bytes as directly
  // (bf16 -> f32 is exact).
  convert({src, "-o", c, "--quantization", "q0f32"});
  convert({c, "-o", tmp.file("d"), "--quantization", "q8f16_1"});
  auto direct = open_native_weights(b), twice = open_native_weights(tmp.file("d"));
  for (const std::string& n : direct->names()) {
    INFO(n);
    const HostTensor& x = *direct->find(n);
    const HostTensor& y = *twice->find(n);
    if (x.shape.rank == 2) CHECK(same_bytes(x, y));
  }
  const Reference ref = load_reference("llama_bf16_sharded");
  const std::vector<float> l1 = cpu_logits(a, ref.input_ids), l2 = cpu_logits(b, ref.input_ids);
  CHECK(l1 == l2);
}

// A conversion that fails half way (here: files may not grow past 100 KB, as on a full
// disk) removes the folder it made, and says why; a folder that was there stays.
TEST_CASE("a failed convert leaves no half-written folder", "[convert]") {
  TempDir tmp;
  GenConfigOptions opts;
  opts.quantization = "q0f32";
  rlimit old{};
  REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of the signal
  rlimit small = old;
  small.rlim_cur = 100 * 1024;
  REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string err_new, err_kept;
  try {
    convert_model(model_dir("llama3"), tmp.file("new"), opts);
  } catch (const Error& e) {
    err_new = e.what();
  }
  fs::create_directories(tmp.file("kept"));
  try {
    convert_model(model_dir("llama3"), tmp.file("kept"), opts);
  } catch (const Error& e) {
    err_kept = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  CHECK_THAT(err_new, Catch::Contains("cannot write") && Catch::Contains("File too large"));
  CHECK_FALSE(fs::exists(tmp.file("new")));
  CHECK_THAT(err_kept, Catch::Contains("cannot write"));
  CHECK(fs::is_directory(tmp.file("kept")));
  // With room again the same conversion succeeds.
  convert_model(model_dir("llama3"), tmp.file("new"), opts);
  CHECK(fs::exists(tmp.file("new") + "/llm-config.json"));
}

TEST_CASE("convert of a GGUF puts llama.cpp's Q/K rows back in order", "[convert][gguf]") {
  const Reference ref = load_reference("llama2");
  TempDir tmp;
  const std::string from_gguf = tmp.file("g"), from_hf = tmp.file("h");
  convert({model_dir("llama2") + "/model-f32.gguf", "-o", from_gguf, "--quantization", "q4f16_1"});
  convert({model_dir("llama2"), "-o", from_hf, "--quantization", "q4f16_1"});
  // Row-wise quantization commutes with the row permutation: the same bytes.
  auto g = open_native_weights(from_gguf), h = open_native_weights(from_hf);
  for (const std::string& n : h->names()) {
    INFO(n);
    REQUIRE(g->find(n) != nullptr);
    CHECK(same_bytes(*g->find(n), *h->find(n)));
  }
  const NativeConfig nc = read_native_config(from_gguf);
  CHECK_FALSE(nc.model.rope_interleaved);
  CHECK(nc.tokenizer_files.empty());  // the fixture GGUF has no vocab

  // llama3's rope scaling travels as llmrt_rope_freq_factors.
  const std::string l3 = tmp.file("l3");
  convert({model_dir("llama3") + "/model-f32.gguf", "-o", l3, "--quantization", "q0f32"});
  const NativeConfig c3 = read_native_config(l3);
  CHECK(c3.model.rope_freq_factors.size() == 8);
  const Reference ref3 = load_reference("llama3");
  CHECK(max_rel_error(cpu_logits(l3, ref3.input_ids), ref3.logits) <= 1e-4);
}

TEST_CASE("convert of a GGUF with a vocab writes tokenizer.gguf", "[convert][gguf]") {
  TempDir tmp;
  const std::string gguf = tmp.file("tiny.gguf"), dir = tmp.file("out");
  const std::string vocab = data_dir() + "/tokenizers/ggml-vocab-llama-spm.gguf";
  const CommandResult r = run_cli({"synth", "--shape", "tiny", "--quantization", "q8f16_1",
                                   "--vocab", vocab, "--format", "gguf", "-o", gguf});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  convert({gguf, "-o", dir, "--quantization", "q4f16_1"});
  const NativeConfig nc = read_native_config(dir);
  CHECK(nc.tokenizer_files == std::vector<std::string>{"tokenizer.gguf"});
  CHECK(nc.conv_template == "llama-2");
  CHECK(nc.bos_token_id == 1);
  CHECK(nc.quantization == "q4f16_1");
  auto tok = Tokenizer::load(dir + "/tokenizer.gguf");
  CHECK(tok->encode("Hello world") == std::vector<int32_t>{15043, 3186});
  // q8_0 stays q8_0: only float matrices are quantized.
  CHECK(open_native_weights(dir)->find("lm_head.weight")->dtype == DType::Q8_0);
  const std::vector<int32_t> ids = {1, 15043, 3186};
  const std::vector<float> a = cpu_logits(gguf, ids), b = cpu_logits(dir, ids);
  if (!a.empty() && !b.empty()) CHECK(max_rel_error(b, a) <= 1e-5);

  // Another model converted into the same folder, one without a tokenizer: the first
  // one's tokenizer.gguf goes (the loader would have taken it).
  convert({model_dir("llama3"), "-o", dir, "--quantization", "q0f32"});
  CHECK(read_native_config(dir).tokenizer_files.empty());
  CHECK_FALSE(fs::exists(dir + "/tokenizer.gguf"));
}

TEST_CASE("llmcli gen-config writes llm-config.json", "[convert][cli]") {
  TempDir tmp;
  // A Hugging Face folder with a tokenizer and a generation config.
  const std::string src = tmp.file("src"), out = tmp.file("out");
  fs::create_directory(src);
  copy_model("llama3", src);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(data_dir() + "/tokenizers/hf-gpt2/" + f, src + "/" + f);
  write_file(
      src + "/generation_config.json",
      R"({"temperature": 0.6, "top_p": 0.9, "eos_token_id": [2, 50256], "pad_token_id": 0})");
  const CommandResult r =
      run_cli({"gen-config", src, "-o", out, "--quantization", "q4f16_1", "--conv-template",
               "chatml", "--context-window-size", "96", "--prefill-chunk-size", "32"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const json j = json::parse(read_file(out + "/llm-config.json"));
  CHECK(j["version"] == 1);
  CHECK(j["model_type"] == "llama");
  CHECK(j["quantization"] == "q4f16_1");
  CHECK(j["model_config"]["hidden_size"] == 64);
  CHECK(j["model_config"]["rope_scaling"]["rope_type"] == "llama3");
  CHECK(j["context_window_size"] == 96);
  CHECK(j["prefill_chunk_size"] == 32);
  CHECK(j["sliding_window_size"] == -1);
  CHECK(j["conv_template"] == "chatml");
  CHECK(j["temperature"] == 0.6);
  CHECK(j["top_p"] == 0.9);
  CHECK(j["repetition_penalty"] == 1.0);
  CHECK(j["presence_penalty"] == 0.0);
  CHECK(j["frequency_penalty"] == 0.0);
  CHECK(j["bos_token_id"].is_number_integer());
  CHECK(j["eos_token_id"] == json::array({2, 50256}));
  CHECK(j["pad_token_id"] == 0);
  CHECK(j["tokenizer_files"] ==
        json::array({"tokenizer.json", "tokenizer_config.json", "generation_config.json"}));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    CHECK(fs::exists(out + "/" + f));
  CHECK_FALSE(fs::exists(out + "/model.safetensors.index.json"));  // gen-config writes no weights

  const NativeConfig nc = read_native_config(out);
  CHECK(nc.model.hidden_size == 64);
  CHECK(nc.model.rope_scaling.type == "llama3");
  CHECK(nc.model.eos_token_ids == std::vector<int>{2, 50256});

  // Defaults: the model's context, min(2048, it) prefill, a guessed template.
  const std::string out2 = tmp.file("out2");
  REQUIRE(run_cli({"gen-config", model_dir("mistral"), "-o", out2, "--quantization", "q0f16"})
              .exit_code == 0);
  const NativeConfig m = read_native_config(out2);
  const ModelConfig mc = load_hf_config(model_dir("mistral"));
  CHECK(m.context_window_size == mc.max_position_embeddings);
  CHECK(m.prefill_chunk_size == std::min(2048, mc.max_position_embeddings));
  CHECK(m.sliding_window_size == mc.sliding_window);
  CHECK(m.model.sliding_window == mc.sliding_window);
  CHECK(m.conv_template == "mistral");
  CHECK(m.tokenizer_files.empty());
}

TEST_CASE("gen-config and convert reject bad options", "[convert][cli]") {
  TempDir tmp;
  const std::string src = model_dir("llama3"), out = tmp.file("out");
  check_error(run_cli({"convert", src, "-o", out, "--quantization", "q5f16"}),
              "unknown quantization 'q5f16'");
  check_error(run_cli({"gen-config", src, "-o", out, "--quantization", "q4f16_1", "--conv-template",
                       "nope"}),
              "unknown conversation template 'nope' (known: ");
  check_error(run_cli({"gen-config", src, "-o", out, "--quantization", "q4f16_1",
                       "--context-window-size", "64", "--prefill-chunk-size", "128"}),
              "--prefill-chunk-size 128 is larger than the context window 64");
  check_error(run_cli({"convert", tmp.file("nothing"), "-o", out, "--quantization", "q4f16_1"}),
              "does not exist");
  const std::string copy = tmp.file("copy");
  fs::create_directory(copy);
  copy_model("llama3", copy);
  for (const char* cmd : {"convert", "gen-config"}) {
    check_error(run_cli({cmd, copy, "-o", copy + "/.", "--quantization", "q4f16_1"}),
                "is the source folder");
    CHECK_FALSE(fs::exists(copy + "/llm-config.json"));
  }
  CHECK_FALSE(fs::exists(out));
  const CommandResult r = run_cli({"convert", src, "-o", out});
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("--quantization") != std::string::npos);
  // 0 is the library's "default"; given on the command line it is a mistake.
  for (const char* opt :
       {"--context-window-size", "--prefill-chunk-size", "--sliding-window-size"}) {
    const CommandResult z =
        run_cli({"gen-config", src, "-o", out, "--quantization", "q4f16_1", opt, "0"});
    INFO(opt << ": " << z.err);
    CHECK(z.exit_code != 0);
    CHECK(z.err.find(opt) != std::string::npos);
  }
  CHECK_FALSE(fs::exists(out));
}

TEST_CASE("damaged native folders fail naming the file and the tensor", "[convert]") {
  TempDir tmp;
  const std::string dir = tmp.file("m");
  GenConfigOptions opts;
  opts.quantization = "q4f16_1";
  opts.shard_bytes = 16000;
  convert_model(model_dir("llama3"), dir, opts);
  auto backend = make_cpu_backend();
  REQUIRE_NOTHROW(Model::load(dir, *backend));
  const json index = json::parse(read_file(dir + "/model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& e : index["weight_map"].items()) shards.insert(e.value().get<std::string>());
  REQUIRE(shards.size() >= 3);
  const std::string second = *std::next(shards.begin()), third = *std::next(shards.begin(), 2);

  SECTION("truncated shard") {
    const std::string shard = dir + "/" + second;
    fs::resize_file(shard, fs::file_size(shard) - 10);
    REQUIRE_THROWS_WITH(Model::load(dir, *backend),
                        Contains("'" + shard + "' is truncated: tensor '"));
  }
  SECTION("missing shard") {
    fs::remove(dir + "/" + third);
    REQUIRE_THROWS_WITH(Model::load(dir, *backend), Contains("shard '" + third + "' is missing"));
  }
  SECTION("corrupted packed metadata") {
    const std::string shard =
        dir + "/" + index["weight_map"]["model.embed_tokens.weight"].get<std::string>();
    std::string bytes = read_file(shard);
    const std::string key = "\"llmrt.shape.model.embed_tokens.weight\":\"[256,";
    const size_t at = bytes.find(key + "64]\"");
    REQUIRE(at != std::string::npos);
    bytes.replace(at, key.size() + 4, key + "96]\"");
    write_file(shard, bytes);
    REQUIRE_THROWS_WITH(Model::load(dir, *backend),
                        shard +
                            ": tensor 'model.embed_tokens.weight': stored U8 [256, 36] does "
                            "not hold q4_0 [256, 96]");
  }
  SECTION("no weights") {
    fs::remove(dir + "/model.safetensors.index.json");
    REQUIRE_THROWS_WITH(Model::load(dir, *backend),
                        Contains("has no model.safetensors.index.json"));
  }
  SECTION("llm-config.json") {
    const std::string cfg = dir + "/llm-config.json";
    json j = json::parse(read_file(cfg));
    auto load_with = [&](const json& edited) {
      write_file(cfg, edited.dump());
      Model::load(dir, *backend);
    };
    json v = j;
    v["version"] = 2;
    REQUIRE_THROWS_WITH(load_with(v), Contains("format version 2 is newer than this build"));
    v = j;
    v["quantization"] = "q3f16_0";
    REQUIRE_THROWS_WITH(load_with(v), Contains("unknown quantization 'q3f16_0'"));
    v = j;
    v["model_config"].erase("hidden_size");
    REQUIRE_THROWS_WITH(load_with(v), cfg +
                                          ": model_config: config.json: missing field "
                                          "'hidden_size'");
    v = j;
    v["top_p"] = 5;
    REQUIRE_THROWS_WITH(load_with(v), cfg + ": field 'top_p' must be a number in (0, 1]");
    v = j;
    v["presence_penalty"] = -3;
    REQUIRE_THROWS_WITH(load_with(v), Contains("'presence_penalty' must be a number from -2 to 2"));
    v = j;
    v["eos_token_id"] = "two";
    REQUIRE_THROWS_WITH(load_with(v), cfg +
                                          ": field 'eos_token_id' must be a token id or a "
                                          "list of them");
    write_file(cfg, "{\"version\": 1,");
    REQUIRE_THROWS_WITH(Model::load(dir, *backend), Contains(cfg + ": invalid JSON"));
  }
}

TEST_CASE("model_config_to_json reads back to the same config", "[convert]") {
  for (const char* name : {"llama3", "mistral", "qwen2", "llama_mqa_bias", "mistral_w5"}) {
    DYNAMIC_SECTION(name) {
      const ModelConfig a = load_hf_config(model_dir(name));
      const ModelConfig b = parse_model_config(model_config_to_json(a));
      CHECK(b.model_type == a.model_type);
      CHECK(b.vocab_size == a.vocab_size);
      CHECK(b.hidden_size == a.hidden_size);
      CHECK(b.intermediate_size == a.intermediate_size);
      CHECK(b.num_layers == a.num_layers);
      CHECK(b.num_heads == a.num_heads);
      CHECK(b.num_kv_heads == a.num_kv_heads);
      CHECK(b.head_dim == a.head_dim);
      CHECK(b.max_position_embeddings == a.max_position_embeddings);
      CHECK(b.norm_eps == a.norm_eps);
      CHECK(b.rope_theta == a.rope_theta);
      CHECK(b.rope_scaling.type == a.rope_scaling.type);
      CHECK(b.rope_scaling.factor == a.rope_scaling.factor);
      CHECK(b.rope_scaling.original_max_position_embeddings ==
            a.rope_scaling.original_max_position_embeddings);
      CHECK(b.sliding_window == a.sliding_window);
      CHECK(b.tie_word_embeddings == a.tie_word_embeddings);
      CHECK(b.attention_bias == a.attention_bias);
      CHECK(b.attention_out_bias == a.attention_out_bias);
      CHECK(b.mlp_bias == a.mlp_bias);
      CHECK(b.bos_token_id == a.bos_token_id);
      CHECK(b.eos_token_ids == a.eos_token_ids);
    }
  }
  // GGUF-only facts travel as llmrt_* extensions.
  const ModelConfig g = config_from_gguf(GgufFile(model_dir("llama3") + "/model-f32.gguf"));
  const ModelConfig back = parse_model_config(model_config_to_json(g));
  CHECK(back.rope_freq_factors == g.rope_freq_factors);
  CHECK(back.rope_interleaved);
}
