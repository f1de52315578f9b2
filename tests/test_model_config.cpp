// Tests for parse_hf_config / load_hf_config.
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/models/model_config.h"
#include "test_util.h"

using Catch::Contains;
using Catch::StartsWith;
using nlohmann::json;

namespace {

const std::string kModels = llm::test::data_dir() + "/models";

// The smallest config each model type accepts; tests tweak single fields.
json base_config(const std::string& model_type) {
  return {{"model_type", model_type}, {"vocab_size", 1000},     {"hidden_size", 128},
          {"intermediate_size", 256}, {"num_hidden_layers", 3}, {"num_attention_heads", 8}};
}

llm::ModelConfig parse(const json& j) { return llm::parse_hf_config(j.dump()); }

}  // namespace

TEST_CASE("supported model types", "[config]") {
  CHECK(llm::supported_model_types() ==
        std::vector<std::string>{"llama", "mistral", "qwen2", "phi3", "gpt_neox", "gptj", "rwkv"});
}

TEST_CASE("llama3 fixture config", "[config]") {
  const llm::ModelConfig c = llm::load_hf_config(kModels + "/llama3");
  CHECK(c.model_type == "llama");
  CHECK(c.vocab_size == 256);
  CHECK(c.hidden_size == 64);
  CHECK(c.intermediate_size == 160);
  CHECK(c.num_layers == 2);
  CHECK(c.num_heads == 4);
  CHECK(c.num_kv_heads == 2);
  CHECK(c.head_dim == 16);
  CHECK(c.max_position_embeddings == 128);
  CHECK(c.norm_eps == Approx(1e-5f));
  CHECK(c.rope_theta == 500000.f);
  CHECK(c.rope_scaling.type == "llama3");
  CHECK(c.rope_scaling.factor == 8.f);
  CHECK(c.rope_scaling.low_freq_factor == 1.f);
  CHECK(c.rope_scaling.high_freq_factor == 4.f);
  CHECK(c.rope_scaling.original_max_position_embeddings == 32);
  CHECK(c.sliding_window == 0);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK_FALSE(c.attention_bias);
  CHECK_FALSE(c.attention_out_bias);
  CHECK_FALSE(c.mlp_bias);
  CHECK(c.hidden_act == "silu");
  CHECK(c.bos_token_id == 1);
  CHECK(c.eos_token_ids == std::vector<int>{2});
}

TEST_CASE("llama2 fixture config", "[config]") {
  const llm::ModelConfig c = llm::load_hf_config(kModels + "/llama2");
  CHECK(c.model_type == "llama");
  CHECK(c.num_heads == 4);
  CHECK(c.num_kv_heads == 4);
  CHECK(c.head_dim == 16);
  CHECK(c.norm_eps == Approx(1e-6f));
  CHECK(c.rope_theta == 10000.f);
  CHECK(c.rope_scaling.type == "default");
  CHECK(c.rope_scaling.factor == 1.f);
  CHECK(c.sliding_window == 0);
}

TEST_CASE("qwen2 fixture config", "[config]") {
  const llm::ModelConfig c = llm::load_hf_config(kModels + "/qwen2");
  CHECK(c.model_type == "qwen2");
  CHECK(c.num_layers == 2);
  CHECK(c.num_kv_heads == 2);
  CHECK(c.norm_eps == Approx(1e-6f));
  CHECK(c.rope_theta == 1000000.f);
  CHECK(c.tie_word_embeddings);
  CHECK(c.attention_bias);
  CHECK_FALSE(c.attention_out_bias);
  CHECK_FALSE(c.mlp_bias);
  CHECK(c.sliding_window == 0);  // use_sliding_window is false
  CHECK(c.bos_token_id == -1);
  CHECK(c.eos_token_ids.empty());
}

TEST_CASE("mistral fixture config", "[config]") {
  const llm::ModelConfig c = llm::load_hf_config(kModels + "/mistral");
  CHECK(c.model_type == "mistral");
  CHECK(c.num_kv_heads == 2);
  CHECK(c.head_dim == 16);
  CHECK(c.norm_eps == Approx(1e-5f));
  CHECK(c.rope_theta == 1000000.f);
  CHECK(c.sliding_window == 8);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK_FALSE(c.attention_bias);
  CHECK_FALSE(c.attention_out_bias);
}

TEST_CASE("config defaults", "[config]") {
  json j = base_config("llama");
  j["head_dim"] = nullptr;
  const llm::ModelConfig c = parse(j);
  CHECK(c.num_kv_heads == 8);
  CHECK(c.head_dim == 16);
  CHECK(c.max_position_embeddings == 2048);
  CHECK(c.norm_eps == Approx(1e-6f));
  CHECK(c.rope_theta == 10000.f);
  CHECK(c.rope_scaling.type == "default");
  CHECK(c.hidden_act == "silu");
  CHECK(c.bos_token_id == -1);
  CHECK(c.eos_token_ids.empty());
  CHECK_FALSE(c.tie_word_embeddings);

  CHECK(parse(base_config("mistral")).norm_eps == Approx(1e-5f));
  CHECK(parse(base_config("qwen2")).norm_eps == Approx(1e-6f));

  // An explicit head_dim wins and lifts the divisibility requirement.
  j = base_config("llama");
  j["hidden_size"] = 100;
  j["head_dim"] = 32;
  j["eos_token_id"] = {1, 7};
  j["bos_token_id"] = 0;
  j["max_position_embeddings"] = 4096.0;  // integral floats are accepted
  const llm::ModelConfig d = parse(j);
  CHECK(d.head_dim == 32);
  CHECK(d.eos_token_ids == std::vector<int>{1, 7});
  CHECK(d.bos_token_id == 0);
  CHECK(d.max_position_embeddings == 4096);
}

TEST_CASE("config errors name the problem", "[config]") {
  REQUIRE_THROWS_WITH(
      parse(base_config("gpt2")),
      "unsupported model_type 'gpt2' (supported: llama, mistral, qwen2, phi3, gpt_neox, "
      "gptj, rwkv)");
  // A GPTQ / AWQ / FP8 folder: its quantized layout named, not tensors missing later.
  json q = base_config("llama");
  q["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 128}};
  REQUIRE_THROWS_WITH(parse(q), Catch::Contains("quant_method 'gptq'") && Catch::Contains("GGUF"));
  q["quantization_config"] = nullptr;
  CHECK(parse(q).hidden_size == base_config("llama")["hidden_size"]);
  json j = base_config("llama");
  j.erase("model_type");
  REQUIRE_THROWS_WITH(parse(j), "config.json: missing field 'model_type'");
  j["model_type"] = 3;
  REQUIRE_THROWS_WITH(parse(j), "config.json: field 'model_type' must be a string");

  j = base_config("llama");
  j.erase("hidden_size");
  REQUIRE_THROWS_WITH(parse(j), "config.json: missing field 'hidden_size'");
  j = base_config("qwen2");
  j["num_attention_heads"] = "8";
  REQUIRE_THROWS_WITH(parse(j),
                      "config.json: field 'num_attention_heads' must be a positive integer");
  j["num_attention_heads"] = 0;
  REQUIRE_THROWS_WITH(parse(j),
                      "config.json: field 'num_attention_heads' must be a positive integer");
  j["num_attention_heads"] = 8.5;
  REQUIRE_THROWS_WITH(parse(j),
                      "config.json: field 'num_attention_heads' must be a positive integer");
  j = base_config("llama");
  j["num_key_value_heads"] = 3;
  REQUIRE_THROWS_WITH(parse(j), Contains("num_attention_heads (8) must be a multiple of "
                                         "num_key_value_heads (3)"));
  j = base_config("llama");
  j["hidden_size"] = 100;
  REQUIRE_THROWS_WITH(parse(j), Contains("hidden_size (100) is not divisible"));
  j = base_config("llama");
  j["rms_norm_eps"] = "tiny";
  REQUIRE_THROWS_WITH(parse(j), "config.json: field 'rms_norm_eps' must be a positive number");
  j = base_config("llama");
  j["tie_word_embeddings"] = "yes";
  REQUIRE_THROWS_WITH(parse(j), "config.json: field 'tie_word_embeddings' must be true or false");
  j = base_config("mistral");
  j["hidden_act"] = "gelu";
  REQUIRE_THROWS_WITH(parse(j), Contains("hidden_act 'gelu' is not supported"));
  j = base_config("llama");
  j["eos_token_id"] = {2, "x"};
  REQUIRE_THROWS_WITH(parse(j), Contains("field 'eos_token_id' must be a non-negative integer"));

  REQUIRE_THROWS_WITH(llm::parse_hf_config("{\"model_type\": \"llama\","),
                      StartsWith("config.json: invalid JSON: "));
  REQUIRE_THROWS_WITH(llm::parse_hf_config("[]"), "config.json: expected a JSON object");

  const std::string dir = llm::test::data_dir() + "/no_such_model";
  REQUIRE_THROWS_WITH(llm::load_hf_config(dir), "no config.json in '" + dir + "'");
}

TEST_CASE("rope scaling forms", "[config]") {
  const json llama3 = {{"rope_type", "llama3"},
                       {"factor", 32.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};

  SECTION("rope_parameters carries the type and rope_theta") {
    json j = base_config("llama");
    json rp = llama3;
    rp["rope_theta"] = 500000.0;
    j["rope_parameters"] = rp;
    const llm::ModelConfig c = parse(j);
    CHECK(c.rope_theta == 500000.f);
    CHECK(c.rope_scaling.type == "llama3");
    CHECK(c.rope_scaling.factor == 32.f);
    CHECK(c.rope_scaling.original_max_position_embeddings == 8192);

    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
    const llm::ModelConfig d = parse(j);
    CHECK(d.rope_theta == 1e6f);
    CHECK(d.rope_scaling.type == "default");
  }
  SECTION("classic rope_scaling with the old 'type' key") {
    json j = base_config("mistral");
    j["rope_theta"] = 20000;
    j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
    const llm::ModelConfig c = parse(j);
    CHECK(c.rope_theta == 20000.f);
    CHECK(c.rope_scaling.type == "linear");
    CHECK(c.rope_scaling.factor == 2.f);
    j["rope_scaling"] = nullptr;
    CHECK(parse(j).rope_scaling.type == "default");
  }
  SECTION("llama3 scaling needs all its fields") {
    json j = base_config("llama");
    json rs = llama3;
    rs.erase("low_freq_factor");
    j["rope_scaling"] = rs;
    REQUIRE_THROWS_WITH(parse(j),
                        "config.json: missing field 'rope_scaling.low_freq_factor' "
                        "(needed by rope type 'llama3')");
    rs = llama3;
    rs.erase("original_max_position_embeddings");
    j.erase("rope_scaling");
    j["rope_parameters"] = rs;
    REQUIRE_THROWS_WITH(
        parse(j), Contains("missing field 'rope_parameters.original_max_position_embeddings'"));
    rs = llama3;
    rs["high_freq_factor"] = 1.0;
    j["rope_parameters"] = rs;
    REQUIRE_THROWS_WITH(parse(j), Contains("must be greater than low_freq_factor"));
    j["rope_parameters"] = {{"rope_type", "linear"}};
    REQUIRE_THROWS_WITH(parse(j), Contains("missing field 'rope_parameters.factor'"));
  }
  SECTION("unknown types are refused") {
    json j = base_config("qwen2");
    j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
    REQUIRE_THROWS_WITH(parse(j), "unsupported rope_scaling type 'yarn'");
    j["rope_scaling"] = "llama3";
    REQUIRE_THROWS_WITH(parse(j), "config.json: field 'rope_scaling' must be an object");
  }
}

TEST_CASE("qwen2 tied embeddings, biases and sliding window", "[config]") {
  json j = base_config("qwen2");
  j["tie_word_embeddings"] = true;
  j["attention_bias"] = false;  // Qwen2 has q/k/v biases regardless
  j["sliding_window"] = 16;
  llm::ModelConfig c = parse(j);
  CHECK(c.tie_word_embeddings);
  CHECK(c.attention_bias);
  CHECK_FALSE(c.attention_out_bias);
  CHECK(c.sliding_window == 0);  // ignored unless use_sliding_window

  j["use_sliding_window"] = true;
  CHECK(parse(j).sliding_window == 16);
  j["sliding_window"] = nullptr;
  REQUIRE_THROWS_WITH(parse(j), Contains("missing field 'sliding_window'"));

  j = base_config("qwen2");
  j["tie_word_embeddings"] = false;
  CHECK_FALSE(parse(j).tie_word_embeddings);
}

TEST_CASE("mistral sliding window", "[config]") {
  json j = base_config("mistral");
  CHECK(parse(j).sliding_window == 0);
  j["sliding_window"] = nullptr;
  CHECK(parse(j).sliding_window == 0);
  j["sliding_window"] = 4096;
  CHECK(parse(j).sliding_window == 4096);
  j["sliding_window"] = -1;
  REQUIRE_THROWS_WITH(parse(j),
                      "config.json: field 'sliding_window' must be a non-negative integer");
  // Llama never uses a sliding window, whatever the file says.
  j = base_config("llama");
  j["sliding_window"] = 4096;
  CHECK(parse(j).sliding_window == 0);
}

TEST_CASE("llama attention and mlp biases", "[config]") {
  json j = base_config("llama");
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  const llm::ModelConfig c = parse(j);
  CHECK(c.attention_bias);
  CHECK(c.attention_out_bias);
  CHECK(c.mlp_bias);
  // Mistral has no bias options.
  j["model_type"] = "mistral";
  const llm::ModelConfig m = parse(j);
  CHECK_FALSE(m.attention_bias);
  CHECK_FALSE(m.attention_out_bias);
  CHECK_FALSE(m.mlp_bias);
}
