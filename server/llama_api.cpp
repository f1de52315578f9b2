#include "server/llama_api.h"

#include "server/openai_protocol.h"

namespace llm::server {

using nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

std::string text_field(const ojson& body, const char* key) {
  if (!present(body, key)) return "";
  if (!body[key].is_string())
    throw ApiError(400, std::string("'") + key + "' must be a string", key);
  return body[key].get<std::string>();
}

}  // namespace

LlamaRequest parse_llama_request(const ojson& body, bool infill) {
  LlamaRequest r;
  ojson& o = r.openai;
  o = ojson::object();
  if (infill) {
    // The text before the cursor: input_prefix, then prompt (llama.vscode sends the
    // cursor's line there).
    o["prompt"] = text_field(body, "input_prefix") + text_field(body, "prompt");
    o["suffix"] = text_field(body, "input_suffix");
    if (present(body, "input_extra")) o["input_extra"] = body["input_extra"];
  } else {
    if (!present(body, "prompt")) throw ApiError(400, "'prompt' is required", "prompt");
    o["prompt"] = body["prompt"];
  }
  r.stream = optional_bool(body, "stream", r.stream, "");
  // llama-server's sampling defaults where the request does not say.
  o["temperature"] = 0.8;
  o["top_k"] = 40;
  o["top_p"] = 0.95;
  o["min_p"] = 0.05;
  for (const char* key :
       {"temperature", "top_k", "top_p", "min_p", "stop", "presence_penalty", "frequency_penalty"})
    if (present(body, key)) o[key] = body[key];
  if (present(body, "repeat_penalty")) o["repetition_penalty"] = body["repeat_penalty"];
  if (present(body, "seed")) {
    const ojson& seed = body["seed"];
    if (!seed.is_number_integer()) throw ApiError(400, "'seed' must be an integer", "seed");
    if (seed.get<int64_t>() >= 0) o["seed"] = seed;  // -1: a random one
  }
  if (present(body, "n_predict")) {
    const ojson& n = body["n_predict"];
    if (!n.is_number_integer()) throw ApiError(400, "'n_predict' must be an integer", "n_predict");
    if (n.get<int64_t>() > 0) o["max_tokens"] = n;  // -1: until the end or the context
    r.evaluate_only = n.get<int64_t>() == 0;
  }
  if (present(body, "logit_bias")) {
    // llama.cpp's pairs [[id, bias], ...] (false: never) or OpenAI's object.
    const ojson& b = body["logit_bias"];
    if (b.is_array()) {
      ojson bias = ojson::object();
      for (const ojson& pair : b) {
        if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_integer() ||
            !(pair[1].is_number() || pair[1] == false))
          throw ApiError(400, "'logit_bias' must be a list of [token id, bias or false] pairs",
                         "logit_bias");
        bias[std::to_string(pair[0].get<int64_t>())] = pair[1] == false ? ojson(-100) : pair[1];
      }
      o["logit_bias"] = std::move(bias);
    } else {
      o["logit_bias"] = b;
    }
  }
  if (present(body, "json_schema"))
    o["response_format"] = {{"type", "json_schema"},
                            {"json_schema", {{"name", "schema"}, {"schema", body["json_schema"]}}}};
  if (present(body, "grammar") && body["grammar"] != "")
    throw ApiError(400, "GBNF grammars are not supported; use json_schema", "grammar");
  if (present(body, "n_probs") && body["n_probs"] != 0)
    throw ApiError(400, "'n_probs' is not supported; use /v1/completions with logprobs", "n_probs");
  if (present(body, "ignore_eos") && body["ignore_eos"] == true)
    throw ApiError(400, "'ignore_eos' is not supported", "ignore_eos");
  if (present(body, "mirostat") && body["mirostat"] != 0)
    throw ApiError(400, "mirostat sampling is not supported", "mirostat");
  return r;
}

json llama_reply(const std::string& model, const std::string& content, bool last, FinishReason why,
                 const ReplyTimings& t) {
  json j = {{"index", 0},
            {"content", content},
            {"tokens", json::array()},
            {"stop", last},
            {"id_slot", 0},
            {"model", model},
            {"tokens_predicted", t.eval_tokens},
            {"tokens_evaluated", t.prompt_tokens}};
  if (!last) return j;
  j["stop_type"] = why == FinishReason::Length ? "limit" : t.stop_string.empty() ? "eos" : "word";
  j["stopping_word"] = t.stop_string;
  j["truncated"] = false;
  j["tokens_cached"] = t.cached_tokens;
  const double prompt_ms = t.prompt_s * 1e3, eval_ms = t.eval_s * 1e3;
  // The decode rate counts the tokens after the first, as the engine's own summary does.
  const int decoded = t.eval_tokens > 1 ? t.eval_tokens - 1 : 0;
  // As llama-server: prompt_n counts the prompt tokens run, cache_n those the cache held.
  const int run = t.prompt_tokens - t.cached_tokens;
  j["timings"] = {{"cache_n", t.cached_tokens},
                  {"prompt_n", run},
                  {"prompt_ms", prompt_ms},
                  {"prompt_per_token_ms", run > 0 ? prompt_ms / run : 0.0},
                  {"prompt_per_second", prompt_ms > 0 ? run * 1e3 / prompt_ms : 0.0},
                  {"predicted_n", t.eval_tokens},
                  {"predicted_ms", eval_ms},
                  {"predicted_per_token_ms", decoded > 0 ? eval_ms / decoded : 0.0},
                  {"predicted_per_second", eval_ms > 0 ? decoded * 1e3 / eval_ms : 0.0}};
  return j;
}

json llama_error(const ApiError& e) {
  return {{"error",
           {{"code", e.status},
            {"message", e.what()},
            {"type", e.status >= 500 ? "server_error" : "invalid_request_error"}}}};
}

}  // namespace llm::server
