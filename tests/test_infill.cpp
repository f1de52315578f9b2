// Fill in the middle: the FIM markers of real vocabularies (StarCoder's GGUF, a Qwen-style
// tokenizer.json, GGUF metadata naming them), the prompt's layout and how it is cut to
// fit, the engine's stop ids, `llmcli generate --suffix`.
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/chat/infill_prompt.h"
#include "core/formats/gguf.h"
#include "core/formats/gguf_writer.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

using namespace llm;

namespace {

std::string starcoder_vocab() { return test::data_dir() + "/tokenizers/ggml-vocab-starcoder.gguf"; }

// The text of ids with the markers spelled out.
std::string shown(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += tok.is_special(id) ? tok.token_to_piece(id) : tok.decode({id});
  return s;
}

std::string repeated(const std::string& unit, int n) {
  std::string s;
  for (int i = 0; i < n; i++) s += unit;
  return s;
}

}  // namespace

TEST_CASE("FIM markers: found by their text in StarCoder's vocabulary, absent in Llama's",
          "[infill][tokenizer]") {
  const auto tok = Tokenizer::load(starcoder_vocab());
  const FimTokens& f = tok->fim_tokens();
  REQUIRE(f.available());
  CHECK_FALSE(f.suffix_first);
  CHECK(tok->token_to_piece(f.prefix) == "<fim_prefix>");
  CHECK(tok->token_to_piece(f.suffix) == "<fim_suffix>");
  CHECK(tok->token_to_piece(f.middle) == "<fim_middle>");
  CHECK(tok->token_to_piece(f.pad) == "<fim_pad>");
  CHECK(tok->token_to_piece(f.repo) == "<repo_name>");
  CHECK(tok->token_to_piece(f.file_sep) == "<file_sep>");
  CHECK(f.eot == -1);
  std::vector<int32_t> ends = f.end_ids();
  std::sort(ends.begin(), ends.end());
  std::vector<int32_t> expect = {f.pad, f.repo, f.file_sep};
  std::sort(expect.begin(), expect.end());
  CHECK(ends == expect);

  const auto llama = Tokenizer::load(test::data_dir() + "/tokenizers/ggml-vocab-llama-spm.gguf");
  CHECK_FALSE(llama->fim_tokens().available());
  InfillInput in;
  in.prefix = "a";
  in.suffix = "b";
  CHECK_THROWS_WITH(build_infill_prompt(*llama, in, 100),
                    Catch::Contains("no fill-in-the-middle tokens"));
}

TEST_CASE("FIM markers: GGUF metadata names them first", "[infill][tokenizer]") {
  test::TempDir dir;
  const GgufFile src(starcoder_vocab());
  const auto plain = Tokenizer::load(starcoder_vocab());
  // Swapped on purpose, so that the test sees the keys win over the texts; the old key
  // names (prefix_token_id, ...) as llama.cpp's older converters wrote them.
  const int32_t pre = plain->fim_tokens().suffix, suf = plain->fim_tokens().prefix;
  GgufWriter w;
  for (const auto& [key, value] : src.metadata()) w.set(key, value);
  w.set("tokenizer.ggml.fim_pre_token_id", gguf_u32(static_cast<uint32_t>(pre)));
  w.set("tokenizer.ggml.suffix_token_id", gguf_u32(static_cast<uint32_t>(suf)));
  w.set("tokenizer.ggml.fim_mid_token_id", gguf_u32(1u << 30));  // out of range: ignored
  w.begin(dir.file("named.gguf"));
  w.finish();
  const auto tok = Tokenizer::load(dir.file("named.gguf"));
  CHECK(tok->fim_tokens().prefix == pre);
  CHECK(tok->fim_tokens().suffix == suf);
  CHECK(tok->fim_tokens().middle == plain->fim_tokens().middle);
}

TEST_CASE("FIM markers: a tokenizer.json's added tokens (Qwen2.5-Coder's names)",
          "[infill][tokenizer]") {
  test::TempDir dir;
  const std::string src = test::data_dir() + "/tokenizers/hf-gpt2";
  std::ifstream in(src + "/tokenizer.json");
  nlohmann::json t = nlohmann::json::parse(in);
  int32_t next = 50257;
  for (const char* text : {"<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                           "<|repo_name|>", "<|file_sep|>"}) {
    t["added_tokens"].push_back({{"id", next++},
                                 {"content", text},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", false},
                                 {"special", true}});
  }
  test::write_file(dir.file("tokenizer.json"), t.dump());
  std::filesystem::copy_file(src + "/tokenizer_config.json", dir.file("tokenizer_config.json"));
  const auto tok = Tokenizer::load(dir.path());
  const FimTokens& f = tok->fim_tokens();
  REQUIRE(f.available());
  CHECK(f.prefix == 50257);
  CHECK(f.middle == 50258);
  CHECK(f.suffix == 50259);
  CHECK(f.pad == 50260);
  CHECK(f.repo == 50261);
  CHECK(f.file_sep == 50262);

  InfillInput fill;
  fill.prefix = "def add(a, b):\n    return ";
  fill.suffix = "\n\nprint(add(1, 2))\n";
  const InfillPrompt p = build_infill_prompt(*tok, fill, 4096);
  CHECK(shown(*tok, p.tokens) ==
        "<|fim_prefix|>def add(a, b):\n    return <|fim_suffix|>\n\nprint(add(1, "
        "2))\n<|fim_middle|>");
}

TEST_CASE("infill prompt: PSM layout, repo files, and cuts that keep the code at the cursor",
          "[infill]") {
  const auto tok = Tokenizer::load(starcoder_vocab());
  const FimTokens& f = tok->fim_tokens();
  InfillInput in;
  in.prefix = "def fib(n):\n    if n < 2:\n        return n\n    return ";
  in.suffix = "\n\nprint(fib(10))\n";
  const InfillPrompt p = build_infill_prompt(*tok, in, 1000);
  CHECK(shown(*tok, p.tokens) ==
        "<fim_prefix>" + in.prefix + "<fim_suffix>" + in.suffix + "<fim_middle>");
  // The code's own tokens, exactly as tokenized alone (markers written in it stay text).
  const std::vector<int32_t> pre = tok->encode(in.prefix), suf = tok->encode(in.suffix);
  REQUIRE(p.tokens.size() == pre.size() + suf.size() + 3);
  CHECK(std::equal(pre.begin(), pre.end(), p.tokens.begin() + 1));
  CHECK(p.prefix_tokens_dropped == 0);
  CHECK(p.suffix_tokens_dropped == 0);
  CHECK(p.stop_ids == f.end_ids());

  InfillInput lit;
  lit.prefix = "x = '<fim_middle>'";
  lit.suffix = "";
  const InfillPrompt q = build_infill_prompt(*tok, lit, 100);
  CHECK(std::count(q.tokens.begin(), q.tokens.end(), f.middle) == 1);

  // Other files: StarCoder's repo layout before the prefix.
  in.extra = {{"util.py", "def one():\n    return 1\n"}, {"b.py", "B = 2"}};
  const InfillPrompt r = build_infill_prompt(*tok, in, 1000);
  CHECK(shown(*tok, r.tokens) ==
        "<repo_name>project\n<file_sep>util.py\ndef one():\n    return 1\n<file_sep>b.py\nB = "
        "2\n<file_sep><fim_prefix>" +
            in.prefix + "<fim_suffix>" + in.suffix + "<fim_middle>");

  // A budget too small for everything: three quarters to the prefix's end, the rest to
  // the suffix's start, nothing left for the files (the first of them dropped first).
  InfillInput big;
  big.prefix = repeated("a = 1\n", 200) + "last_line = ";
  big.suffix = "first_after()\n" + repeated("b = 2\n", 200);
  big.extra = {{"x.py", repeated("c = 3\n", 50)}};
  const int budget = 103;  // 100 tokens of code and 3 markers
  const InfillPrompt c = build_infill_prompt(*tok, big, budget);
  REQUIRE(static_cast<int>(c.tokens.size()) == budget);
  const std::vector<int32_t> bp = tok->encode(big.prefix), bs = tok->encode(big.suffix);
  CHECK(c.prefix_tokens_dropped == static_cast<int>(bp.size()) - 75);
  CHECK(c.suffix_tokens_dropped == static_cast<int>(bs.size()) - 25);
  CHECK(c.extra_tokens_dropped > 0);
  CHECK(c.tokens[0] == f.prefix);
  CHECK(std::equal(bp.end() - 75, bp.end(), c.tokens.begin() + 1));
  CHECK(c.tokens[76] == f.suffix);
  CHECK(std::equal(bs.begin(), bs.begin() + 25, c.tokens.begin() + 77));
  CHECK(c.tokens.back() == f.middle);
  CHECK(shown(*tok, c.tokens).find("last_line = <fim_suffix>first_after()") != std::string::npos);

  // A short suffix leaves its share to the prefix; a large budget keeps the files.
  big.suffix = "end";
  const InfillPrompt d = build_infill_prompt(*tok, big, budget);
  CHECK(static_cast<int>(d.tokens.size()) == budget);
  CHECK(d.suffix_tokens_dropped == 0);
  CHECK(d.prefix_tokens_dropped ==
        static_cast<int>(bp.size()) - (100 - static_cast<int>(tok->encode("end").size())));
  const InfillPrompt e = build_infill_prompt(*tok, big, 100000);
  CHECK(e.prefix_tokens_dropped + e.suffix_tokens_dropped + e.extra_tokens_dropped == 0);

  CHECK_THROWS_WITH(build_infill_prompt(*tok, in, 2), Catch::Contains("at least 3 tokens"));
}

TEST_CASE("llmcli generate --suffix: the middle of a code model, and a clear error without",
          "[infill][cli]") {
  const std::string model = test::tiny_code_model();
  // The same tokens as the prompt's ids given directly: generate prints ids then.
  const auto tok = Tokenizer::load(model);
  const InfillPrompt p = build_infill_prompt(*tok, {"def f(x):\n    return ", "\n", {}}, 200);
  auto ids =
      test::run_cli({"generate", model, "--device", "cpu", "--token-ids", test::join_ids(p.tokens),
                     "-n", "6", "--json", "--ignore-eos", "--temperature", "0"});
  REQUIRE(ids.exit_code == 0);
  auto fim =
      test::run_cli({"generate", model, "--device", "cpu", "-p", "def f(x):\n    return ",
                     "--suffix", "\n", "-n", "6", "--json", "--ignore-eos", "--temperature", "0"});
  INFO(fim.err);
  REQUIRE(fim.exit_code == 0);
  CHECK(nlohmann::json::parse(fim.out)["ids"] == nlohmann::json::parse(ids.out)["ids"]);

  auto none = test::run_cli({"generate", test::tiny_chat_model("q0f32", 11), "--device", "cpu",
                             "-p", "a", "--suffix", "b", "-n", "2"});
  CHECK(none.exit_code != 0);
  CHECK_THAT(none.err, Catch::Contains("no fill-in-the-middle tokens"));
}
