// OpenAI's /v1/embeddings: the request's inputs (text or token ids, one or many), and
// the response with each embedding as JSON numbers or base64 float32.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/engine/engine.h"
#include "core/tokenizer/tokenizer.h"

namespace llm::server {

struct EmbeddingsRequest {
  std::string model;
  // One entry per input, in order: its text, or its token ids (ids_given).
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> ids;
  bool ids_given = false;
  bool base64 = false;  // encoding_format "base64"
  int dimensions = 0;   // > 0: the first this many values, normalized again
};

// The most inputs one request may hold (OpenAI's limit).
constexpr size_t kMaxEmbeddingInputs = 2048;

// Validates a parsed body; throws ApiError (400) naming the offending param. `input` is a
// string, a list of strings, a list of token ids or a list of such lists, none empty;
// ids are below vocab_size; dimensions within [1, hidden_size].
EmbeddingsRequest parse_embeddings_request(const nlohmann::ordered_json& body, int vocab_size,
                                           int hidden_size);

// {"object":"list","data":[{"object":"embedding","index":i,"embedding":...}],"model",
// "usage":{"prompt_tokens","total_tokens"}}.
nlohmann::json embeddings_response(const std::string& model,
                                   const std::vector<std::vector<float>>& embeddings, bool base64,
                                   int prompt_tokens);

// The token ids of a request's inputs (texts tokenized with the model's specials), every
// one checked before any runs: ApiError (400, param input) unless it has 1 to context
// tokens; truncate cuts longer ones to the context instead (Ollama's default).
std::vector<std::vector<int32_t>> embedding_prompts(const EmbeddingsRequest& e,
                                                    const Tokenizer& tokenizer, int context,
                                                    bool truncate);

// The embeddings of prompts through the engine, in order: queued as far as the engine's
// queue takes them, the rest as earlier ones finish; cut to `dimensions` (> 0) and at
// unit length again when normalized. Throws ApiError: 429 when none can be queued, 400
// for a prompt the engine refuses (naming its index), 500 / 503 when the engine fails or
// stops; what was queued is cancelled then.
std::vector<std::vector<float>> run_embeddings(Engine& engine,
                                               const std::vector<std::vector<int32_t>>& prompts,
                                               Pooling pooling, bool normalize, int dimensions);

// v as JSON numbers, each the shortest decimal that reads back as the same float.
nlohmann::json json_floats(const float* v, size_t n);
// v's little-endian float32 bytes in base64 (OpenAI's encoding_format "base64").
std::string base64_floats(const float* v, size_t n);

}  // namespace llm::server
