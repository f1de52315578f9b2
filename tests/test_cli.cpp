// llmcli end to end: logits/generate reproduce the references, and bad input
// gives a one-line error naming the problem and a non-zero exit.
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/formats/safetensors.h"
#include "test_util.h"

using namespace llm;
using namespace llm::test;
namespace fs = std::filesystem;

namespace {

// Exit code non-zero, one line on stderr starting "error:" and containing what.
void check_error(const CommandResult& r, const std::string& what) {
  INFO("stderr: " << r.err);
  CHECK(r.exit_code != 0);
  CHECK(r.exit_code < 128);  // not killed by a signal
  CHECK(r.err.find("error: ") != std::string::npos);
  CHECK(r.err.find(what) != std::string::npos);
}

// Rewrites DIR/model.safetensors with `edit` applied to its tensor list.
template <typename Edit>
void rewrite_weights(const std::string& dir, Edit edit) {
  std::vector<std::pair<std::string, HostTensor>> tensors;
  std::vector<std::vector<uint8_t>> keep;
  {
    SafetensorsFile f(dir + "/model.safetensors");
    for (const auto& [name, t] : f.tensors()) {
      keep.emplace_back(static_cast<const uint8_t*>(t.data),
                        static_cast<const uint8_t*>(t.data) + t.nbytes);
      HostTensor copy = t;
      copy.data = keep.back().data();
      tensors.emplace_back(name, copy);
    }
  }
  edit(tensors, keep);
  write_safetensors(dir + "/model.safetensors", tensors);
}

}  // namespace

TEST_CASE("llmcli logits reproduces the reference", "[cli]") {
  for (const char* name : {"llama3", "qwen2"}) {
    DYNAMIC_SECTION(name) {
      const Reference ref = load_reference(name);
      TempDir tmp;
      const auto r = run_cli({"logits", model_dir(name), "--device", "cpu", "--token-ids",
                              join_ids(ref.input_ids), "--out", tmp.file("x.safetensors")});
      INFO(r.err);
      REQUIRE(r.exit_code == 0);
      SafetensorsFile out(tmp.file("x.safetensors"));
      const HostTensor& t = out.tensors().at("logits");
      CHECK(t.dtype == DType::F32);
      CHECK(t.shape == Shape({24, 256}));
      const float* p = static_cast<const float*>(t.data);
      CHECK(max_rel_error(std::vector<float>(p, p + t.shape.numel()), ref.logits) <= 1e-4);
    }
  }
}

TEST_CASE("llmcli generate --json gives the reference greedy ids", "[cli]") {
  const Reference ref = load_reference("mistral");
  const auto r = run_cli({"generate", model_dir("mistral"), "--device", "auto", "--token-ids",
                          join_ids(ref.input_ids), "-n", "16", "--temperature", "0", "--json"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["ids"].get<std::vector<int32_t>>() == ref.greedy_ids);
}

TEST_CASE("llmcli generate --lookup-draft gives the reference greedy ids", "[cli][speculative]") {
  // The reference prompt twice: its second half drafts from the first.
  const Reference ref = load_reference("llama2");
  std::vector<int32_t> twice = ref.input_ids;
  twice.insert(twice.end(), ref.input_ids.begin(), ref.input_ids.end());
  std::vector<std::vector<int32_t>> outs;
  for (const char* draft : {"0", "6"}) {
    const auto r =
        run_cli({"generate", model_dir("llama2"), "--device", "cpu", "--token-ids", join_ids(twice),
                 "-n", "24", "--temperature", "0", "--json", "--lookup-draft", draft});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    outs.push_back(nlohmann::json::parse(r.out)["ids"].get<std::vector<int32_t>>());
    if (std::string(draft) != "0") CHECK_THAT(r.err, Catch::Contains("draft"));
  }
  CHECK(outs[0].size() == 24);
  CHECK(outs[1] == outs[0]);
  const auto bad =
      run_cli({"generate", model_dir("llama2"), "--token-ids", "1,2", "--lookup-draft", "99"});
  CHECK(bad.exit_code != 0);
}

TEST_CASE("llmcli generate --draft-model gives the reference greedy ids", "[cli][speculative]") {
  // The model as its own draft: the same ids.
  const Reference ref = load_reference("llama2");
  const auto r = run_cli({"generate", model_dir("llama2"), "--device", "cpu", "--token-ids",
                          join_ids(ref.input_ids), "-n", std::to_string(ref.greedy_ids.size()),
                          "--temperature", "0", "--json", "--draft-model", model_dir("llama2"),
                          "--draft-max", "3"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out)["ids"].get<std::vector<int32_t>>() == ref.greedy_ids);
  CHECK_THAT(r.err, Catch::Contains("llmcli: draft "));
  CHECK_THAT(r.err, Catch::Contains("drafts "));
  // Another vocabulary (Llama 2's 32,000 tokens), or a recurrent model: refused, saying so.
  const auto other = run_cli({"generate", model_dir("llama2"), "--token-ids", "1,2",
                              "--draft-model", test::tiny_chat_model("q0f32", 11)});
  CHECK(other.exit_code != 0);
  CHECK_THAT(other.err, Catch::Contains("the draft model's vocabulary (32000 tokens)"));
  const auto rwkv = run_cli(
      {"generate", model_dir("llama2"), "--token-ids", "1,2", "--draft-model", model_dir("rwkv")});
  CHECK(rwkv.exit_code != 0);
  CHECK_THAT(rwkv.err, Catch::Contains("cannot take back rejected tokens"));
}

TEST_CASE("llmcli refuses a draft model whose tokens spell other text", "[cli][speculative]") {
  // A model of GPT-2's vocabulary, and copies of it with GPT-2's tokenizer.json: as it is,
  // and with the ids of its first two tokens swapped (the same 50,257 tokens).
  namespace fs = std::filesystem;
  const TempDir dir;
  const std::string model = dir.file("gpt2-vocab"), same = dir.file("same"),
                    swapped = dir.file("swapped");
  REQUIRE(run_cli({"synth", "--shape", "tiny", "--quantization", "q0f32", "--vocab",
                   data_dir() + "/tokenizers/ggml-vocab-gpt-2.gguf", "-o", model})
              .exit_code == 0);
  nlohmann::json tok =
      nlohmann::json::parse(read_file(data_dir() + "/tokenizers/hf-gpt2/tokenizer.json"));
  for (const std::string& copy : {same, swapped}) {
    fs::copy(model, copy, fs::copy_options::recursive);
    if (copy == swapped) {
      nlohmann::json& vocab = tok["model"]["vocab"];
      for (auto& [piece, id] : vocab.items()) id = id == 0 ? 1 : id == 1 ? 0 : id.get<int>();
    }
    std::ofstream(copy + "/tokenizer.json") << tok.dump();
  }
  const auto ok = run_cli({"generate", model, "--device", "cpu", "-p", "hello", "-n", "4",
                           "--temperature", "0", "--draft-model", same});
  INFO(ok.err);
  CHECK(ok.exit_code == 0);
  CHECK_THAT(ok.err, Catch::Contains("drafts "));
  const auto bad = run_cli(
      {"generate", model, "--device", "cpu", "-p", "hello", "-n", "4", "--draft-model", swapped});
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.err, Catch::Contains("the draft model's vocabulary is not the model's: token 0 "
                                      "is '!' in the model and '\"' in the draft"));
}

TEST_CASE("llmcli generate with an f16 KV cache gives the reference greedy ids", "[cli]") {
  const Reference ref = load_reference("llama3");
  const auto r = run_cli({"generate", model_dir("llama3"), "--device", "cpu", "--token-ids",
                          join_ids(ref.input_ids), "-n", "16", "--temperature", "0", "--json",
                          "--kv-cache-type", "f16"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out)["ids"].get<std::vector<int32_t>>() == ref.greedy_ids);
}

TEST_CASE("llmcli generate samples reproducibly with a seed", "[cli]") {
  const std::vector<std::string> args = {
      "generate", model_dir("llama2"), "--token-ids", "1,2,3",  "-n", "12",    "--temperature",
      "1.5",      "--top-p",           "0.9",         "--seed", "7",  "--json"};
  const auto a = run_cli(args), b = run_cli(args);
  REQUIRE(a.exit_code == 0);
  CHECK(a.out == b.out);
  const auto ids = nlohmann::json::parse(a.out)["ids"].get<std::vector<int32_t>>();
  CHECK(ids.size() == 12);
  // At temperature 1.5 the sampled sequence is not the greedy one.
  const auto g = run_cli({"generate", model_dir("llama2"), "--token-ids", "1,2,3", "-n", "12",
                          "--temperature", "0", "--json"});
  CHECK(nlohmann::json::parse(g.out)["ids"].get<std::vector<int32_t>>() != ids);
}

TEST_CASE("llmcli devices lists the CPU", "[cli]") {
  const auto r = run_cli({"devices", "--json"});
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  bool has_cpu = false;
  for (const auto& d : j["devices"]) has_cpu |= d["id"] == "cpu";
  CHECK(has_cpu);
  CHECK(j["auto"].is_string());
}

TEST_CASE("llmcli errors name the problem", "[cli][errors]") {
  TempDir tmp;
  const std::string ids = "1,2,3";
  SECTION("missing model") {
    check_error(run_cli({"generate", tmp.file("nope"), "--token-ids", ids}), "does not exist");
  }
  SECTION("folder without config.json") {
    check_error(run_cli({"generate", tmp.path(), "--token-ids", ids}), "config.json");
  }
  SECTION("unknown KV cache type") {
    check_error(
        run_cli({"generate", model_dir("llama3"), "--token-ids", ids, "--kv-cache-type", "q8_0"}),
        "--kv-cache-type q8_0: expected f32, f16 or bf16");
  }
  SECTION("truncated weights") {
    copy_model("llama3", tmp.path());
    const std::string w = tmp.file("model.safetensors");
    fs::resize_file(w, fs::file_size(w) - 1000);
    check_error(run_cli({"generate", tmp.path(), "--token-ids", ids}), "truncated");
  }
  SECTION("missing weight file") {
    copy_model("llama3", tmp.path());
    fs::remove(tmp.file("model.safetensors"));
    fs::remove(tmp.file("reference.safetensors"));
    check_error(run_cli({"generate", tmp.path(), "--token-ids", ids}), "no .safetensors");
  }
  SECTION("tensor with the wrong shape") {
    copy_model("llama3", tmp.path());
    rewrite_weights(tmp.path(), [](auto& tensors, auto&) {
      for (auto& [name, t] : tensors)
        if (name == "model.layers.1.self_attn.k_proj.weight") t.shape = {16, 128};  // was [32, 64]
    });
    check_error(run_cli({"generate", tmp.path(), "--token-ids", ids}),
                "tensor 'model.layers.1.self_attn.k_proj.weight' has shape [16, 128], expected "
                "[32, 64]");
  }
  SECTION("tensor with the wrong dtype") {
    copy_model("llama3", tmp.path());
    rewrite_weights(tmp.path(), [](auto& tensors, auto&) {
      for (auto& [name, t] : tensors)
        if (name == "model.norm.weight") {
          t.dtype = DType::I32;
        }
    });
    check_error(run_cli({"generate", tmp.path(), "--token-ids", ids}),
                "tensor 'model.norm.weight' has dtype i32");
  }
  SECTION("missing tensor") {
    copy_model("llama3", tmp.path());
    rewrite_weights(tmp.path(), [](auto& tensors, auto&) {
      tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                                   [](auto& e) { return e.first == "lm_head.weight"; }),
                    tensors.end());
    });
    check_error(run_cli({"generate", tmp.path(), "--token-ids", ids}),
                "missing tensor 'lm_head.weight'");
  }
  SECTION("unknown model_type") {
    copy_model("llama3", tmp.path());
    std::string cfg = read_file(tmp.file("config.json"));
    cfg.replace(cfg.find("\"llama\""), 7, "\"gpt2\"");
    write_file(tmp.file("config.json"), cfg);
    check_error(run_cli({"generate", tmp.path(), "--token-ids", ids}),
                "unsupported model_type 'gpt2'");
  }
  SECTION("malformed config.json") {
    copy_model("llama3", tmp.path());
    write_file(tmp.file("config.json"), "{\"model_type\": \"llama\",");
    check_error(run_cli({"generate", tmp.path(), "--token-ids", ids}), "invalid JSON");
  }
  SECTION("token id out of range") {
    check_error(run_cli({"logits", model_dir("llama3"), "--token-ids", "5,300", "--out",
                         tmp.file("x.safetensors")}),
                "token id 300 is out of range (vocab size 256)");
  }
  SECTION("token ids that are not numbers") {
    check_error(run_cli({"generate", model_dir("llama3"), "--token-ids", "1,x"}),
                "invalid token id 'x'");
  }
  SECTION("prompt longer than the context") {
    check_error(run_cli({"logits", model_dir("llama3"), "--context-size", "4", "--token-ids",
                         "1,2,3,4,5", "--out", tmp.file("x.safetensors")}),
                "prompt of 5 tokens exceeds the context window of 4 tokens");
    // The model's own limit (max_position_embeddings 128) applies by default.
    std::string many = "1";
    for (int i = 0; i < 128; i++) many += ",1";
    check_error(run_cli({"generate", model_dir("llama3"), "--token-ids", many}),
                "exceeds the context window of 128 tokens");
  }
  SECTION("threads and context sizes out of range") {
    // Option errors come from CLI11 (its own format and exit status).
    auto option_error = [](const CommandResult& r, const std::string& what) {
      INFO("stderr: " << r.err);
      CHECK(r.exit_code != 0);
      CHECK(r.exit_code < 128);
      CHECK(r.err.find(what) != std::string::npos);
    };
    option_error(run_cli({"generate", model_dir("llama3"), "--token-ids", ids, "--threads", "0"}),
                 "--threads: Value 0 not in range 1 to 1024");
    option_error(
        run_cli({"generate", model_dir("llama3"), "--token-ids", ids, "--threads", "100000"}),
        "not in range 1 to 1024");
    option_error(
        run_cli({"generate", model_dir("llama3"), "--token-ids", ids, "--context-size", "-1"}),
        "--context-size: Value -1 not in range");
    // Refused before the cache is allocated, not after taking all memory.
    check_error(run_cli({"generate", model_dir("llama3"), "--token-ids", ids, "--context-size",
                         "1000000000"}),
                "needs a KV cache of");
  }
  SECTION("options that need another") {
    check_error(run_cli({"generate", model_dir("llama3"), "--token-ids", ids, "--system", "hi"}),
                "--system, --conv-template and --chat-template-kwargs need --chat");
    check_error(run_cli({"generate", model_dir("llama3"), "-p", ""}),
                "give exactly one of -p TEXT (not empty) and --token-ids");
  }
  SECTION("invalid device") {
    check_error(run_cli({"generate", model_dir("llama3"), "--device", "tpu", "--token-ids", ids}),
                "invalid device 'tpu'");
  }
  SECTION("invalid sampling parameters") {
    check_error(run_cli({"generate", model_dir("llama3"), "--token-ids", ids, "--top-p", "0"}),
                "top_p must be in (0, 1]");
  }
}

TEST_CASE("llmcli tokenize and detokenize", "[cli][tokenizer]") {
  const std::string vocab = data_dir() + "/tokenizers/ggml-vocab-gpt-2.gguf";
  // The first vector of the gpt-2 conformance file.
  auto r = run_cli({"tokenize", vocab, "--text", "ied 4 ½ months", "--json"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out)["ids"].get<std::vector<int32_t>>() ==
        std::vector<int32_t>{798, 604, 25208, 1933});
  r = run_cli({"detokenize", vocab, "--ids", "798,604,25208,1933"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "ied 4 ½ months\n");
  // A Hugging Face folder: tokenizer.json.
  r = run_cli({"tokenize", data_dir() + "/tokenizers/hf-gpt2", "--text", "ied 4 ½ months"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "798,604,25208,1933\n");
  // Special tokens only with --parse-special; BOS only with --add-special.
  const std::string spm = data_dir() + "/tokenizers/ggml-vocab-llama-spm.gguf";
  r = run_cli({"tokenize", spm, "--text", "<s>hi", "--json"});
  const auto plain = nlohmann::json::parse(r.out)["ids"].get<std::vector<int32_t>>();
  r = run_cli({"tokenize", spm, "--text", "<s>hi", "--json", "--parse-special"});
  const auto parsed = nlohmann::json::parse(r.out)["ids"].get<std::vector<int32_t>>();
  REQUIRE(!parsed.empty());
  CHECK(parsed[0] == 1);
  CHECK(plain[0] != 1);
  r = run_cli({"tokenize", spm, "--text", "hi", "--json", "--add-special"});
  CHECK(nlohmann::json::parse(r.out)["ids"][0] == 1);
  // Inputs past what an argument holds (128 KiB) come from files.
  TempDir tmp;
  std::string big;
  for (int i = 0; i < 30000; i++) big += "ied 4 ½ months";
  write_file(tmp.file("big.txt"), big);
  r = run_cli({"tokenize", vocab, "--file", tmp.file("big.txt")});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.rfind("798,604,25208,1933,", 0) == 0);
  write_file(tmp.file("ids.txt"), r.out);
  r = run_cli({"detokenize", vocab, "--ids-file", tmp.file("ids.txt")});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == big + "\n");
  check_error(run_cli({"tokenize", vocab}), "give one of --text and --file");
  check_error(run_cli({"tokenize", vocab, "--file", tmp.path()}), "is a folder");
}

TEST_CASE("llmcli tokenize errors", "[cli][tokenizer][errors]") {
  check_error(run_cli({"tokenize", model_dir("llama3") + "/model-f32.gguf", "--text", "x"}),
              "tokenizer");
  check_error(run_cli({"detokenize", data_dir() + "/tokenizers/ggml-vocab-gpt-2.gguf", "--ids",
                       "99999999"}),
              "99999999");
}

TEST_CASE("llmcli bench reports prefill and decode speed", "[cli]") {
  const auto r = run_cli(
      {"bench", model_dir("llama2"), "--device", "cpu", "-p", "8", "-n", "4", "-r", "2", "--json"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  REQUIRE(j["results"].size() == 2);
  CHECK(j["results"][0]["test"] == "pp8");
  CHECK(j["results"][1]["test"] == "tg4");
  CHECK(j["results"][1]["samples"].size() == 2);
  CHECK(j["results"][1]["tokens_per_second"].get<double>() > 0);
  CHECK(j["results"][1]["depth"] == 0);
  // At a depth (llama-bench's -d): both tests after that many tokens, named as llama-bench's.
  const auto d = run_cli({"bench", model_dir("llama2"), "--device", "cpu", "-p", "8", "-n", "4",
                          "-d", "20", "-r", "1", "--json"});
  INFO(d.err);
  REQUIRE(d.exit_code == 0);
  const auto jd = nlohmann::json::parse(d.out);
  REQUIRE(jd["results"].size() == 2);
  CHECK(jd["results"][0]["test"] == "pp8 @ d20");
  CHECK(jd["results"][1]["test"] == "tg4 @ d20");
  CHECK(jd["results"][1]["depth"] == 20);
  CHECK(jd["results"][1]["samples"].size() == 1);
  check_error(run_cli({"bench", model_dir("llama2"), "-p", "8", "-n", "4", "-d", "20",
                       "--context-size", "16"}),
              "pp8 at depth 20 needs a context of 28 tokens; --context-size is 16");
  check_error(run_cli({"bench", model_dir("llama2"), "-d", "-1"}), "-d must be >= 0");
  check_error(run_cli({"bench", model_dir("llama2"), "--batch", "2", "-d", "8"}),
              "-d runs with --batch 1 only");
  // Batched: several sequences at once through the engine.
  const auto b = run_cli(
      {"bench", model_dir("llama2"), "--batch", "1,3", "-p", "8", "-n", "4", "-r", "1", "--json"});
  INFO(b.err);
  REQUIRE(b.exit_code == 0);
  const auto jb = nlohmann::json::parse(b.out);
  REQUIRE(jb["results"].size() == 2);
  CHECK(jb["results"][1]["batch"] == 3);
  CHECK(jb["results"][1]["tg_tokens_per_second"].get<double>() > 0);
  check_error(run_cli({"bench", model_dir("llama2"), "--batch", "0"}), "must be positive");
  // Sequences that could not reach -n tokens were counted as if they had.
  check_error(run_cli({"bench", model_dir("llama2"), "--batch", "2", "-p", "10", "-n", "100",
                       "--context-size", "64"}),
              "need a context of 110 tokens; --context-size is 64");
}

TEST_CASE("llmcli template renders as transformers does", "[cli][chat]") {
  const auto doc =
      nlohmann::ordered_json::parse(read_file(data_dir() + "/chat-templates/expected.json"));
  TempDir tmp;
  int checked = 0;
  for (const auto& c : doc["cases"]) {
    if (!c.contains("expected") || c["template"] != "meta-llama-Llama-3.1-8B-Instruct.jinja")
      continue;
    write_file(tmp.file("m.json"),
               doc["conversations"][c["conversation"].get<std::string>()].dump());
    std::vector<std::string> args = {
        "template",   data_dir() + "/chat-templates/" + c["template"].get<std::string>(),
        "--messages", tmp.file("m.json"),
        "--date",     "2026-01-15"};
    if (c["add_generation_prompt"].get<bool>()) args.push_back("--add-generation-prompt");
    const auto r = run_cli(args);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out == c["expected"].get<std::string>());
    checked++;
  }
  CHECK(checked >= 4);

  // A Hugging Face folder's tokenizer_config.json: its template and special tokens.
  write_file(tmp.file("tokenizer_config.json"),
             R"({"bos_token": {"content": "<|b|>"}, "eos_token": "<|e|>",
                 "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token }}{% endfor %}"})");
  write_file(tmp.file("m.json"), R"([{"role": "user", "content": "hi"}])");
  auto r = run_cli({"template", tmp.path(), "--messages", tmp.file("m.json")});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == "<|b|>user: hi<|e|>");
  // A built-in conversation template.
  r = run_cli({"template", "--conv-template", "chatml", "--messages", tmp.file("m.json"),
               "--add-generation-prompt"});
  REQUIRE(r.exit_code == 0);
  // chatml's default system prompt, then the turn and the generation prompt.
  CHECK(r.out.rfind("<|im_start|>system\n", 0) == 0);
  const std::string tail = "<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
  CHECK(r.out.size() > tail.size());
  CHECK(r.out.compare(r.out.size() - tail.size(), tail.size(), tail) == 0);
  check_error(run_cli({"template", model_dir("llama3"), "--messages", tmp.file("m.json")}),
              "has no chat template");
  check_error(run_cli({"template", "--conv-template", "nope", "--messages", tmp.file("m.json")}),
              "unknown conversation template 'nope'");
  write_file(tmp.file("bad.json"), "[{\"role\": ");
  check_error(
      run_cli({"template", "--conv-template", "chatml", "--messages", tmp.file("bad.json")}),
      "invalid JSON");
  // Inline JSON is taken as it is; a folder is not a file.
  const CommandResult inl =
      run_cli({"template", tmp.path(), "--messages", R"([{"role": "user", "content": "hi"}])"});
  REQUIRE(inl.exit_code == 0);
  CHECK(inl.out == "<|b|>user: hi<|e|>");
  check_error(run_cli({"template", "--conv-template", "chatml", "--messages", tmp.path()}),
              "is a folder, not a JSON file");
  // --date is checked whether or not the template asks for it; Feb 30 is no date.
  for (const char* bad : {"bogus", "2026-02-30", "2026-1-5"})
    check_error(run_cli({"template", tmp.path(), "--messages", tmp.file("m.json"), "--date", bad}),
                "is not a calendar date YYYY-MM-DD");
}
