// llama.cpp's own server API beside OpenAI's: POST /completion (and /completions) and
// POST /infill, as llama.cpp's clients send them (llama.vscode, llama.vim, scripts written
// for llama-server). A request is translated to the OpenAI completion body this server
// validates (openai_protocol.h); replies and the events of their stream are built here.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/engine/engine.h"
#include "server/openai_protocol.h"
#include "server/single_reply.h"

namespace llm::server {

struct LlamaRequest {
  nlohmann::ordered_json openai;  // an OpenAI completion body
  bool stream = false;
  bool evaluate_only = false;  // n_predict 0: nothing to generate
};

// /completion (infill false): prompt (text or token ids), n_predict, temperature, top_k,
// top_p, min_p (llama.cpp's defaults 0.8, 40, 0.95, 0.05 where not given), seed (-1:
// random), stop, repeat_penalty, presence_penalty, frequency_penalty, logit_bias (pairs
// [id, bias or false]), json_schema, stream. /infill (infill true): input_prefix,
// input_suffix, input_extra and prompt (the text right before the cursor, after
// input_prefix) instead of a prompt. Hints that change no result (cache_prompt, id_slot,
// t_max_*) are ignored; what would change the result and is not served (grammar,
// n_probs, ignore_eos, mirostat) is 400.
LlamaRequest parse_llama_request(const nlohmann::ordered_json& body, bool infill);

// llama.cpp's completion object: content, stop, stop_type ("eos", "limit"), the token
// counts and timings. last: the final one (stop true, with timings and stop_type).
nlohmann::json llama_reply(const std::string& model, const std::string& content, bool last,
                           FinishReason why, const ReplyTimings& t);

// llama.cpp's error body: {"error": {"code", "message", "type"}}.
nlohmann::json llama_error(const ApiError& e);

}  // namespace llm::server
