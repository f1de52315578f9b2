#include "server/embeddings.h"

#include <charconv>
#include <cstdlib>
#include <cstring>

#include "server/openai_protocol.h"

namespace llm::server {

using nlohmann::json;
using ojson = nlohmann::ordered_json;

namespace {

std::vector<int32_t> token_ids(const ojson& list, int vocab_size) {
  std::vector<int32_t> ids;
  for (const ojson& t : list) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab_size)
      throw ApiError(400, "'input' token ids must be integers below " + std::to_string(vocab_size),
                     "input");
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return ids;
}

}  // namespace

EmbeddingsRequest parse_embeddings_request(const ojson& body, int vocab_size, int hidden_size) {
  EmbeddingsRequest r;
  if (body.contains("model") && !body["model"].is_null()) {
    if (!body["model"].is_string()) throw ApiError(400, "'model' must be a string", "model");
    r.model = body["model"].get<std::string>();
  }
  if (!body.contains("input") || body["input"].is_null())
    throw ApiError(400, "'input' is required", "input");
  const ojson& in = body["input"];
  const char* kShape =
      "'input' must be a string, a list of strings, a list of token ids or a list of such lists";
  if (in.is_string()) {
    r.texts.push_back(in.get<std::string>());
  } else if (in.is_array() && !in.empty() && in[0].is_number()) {
    r.ids_given = true;
    r.ids.push_back(token_ids(in, vocab_size));
  } else if (in.is_array() && !in.empty()) {
    r.ids_given = in[0].is_array();
    for (const ojson& item : in) {
      if (r.ids_given && item.is_array())
        r.ids.push_back(token_ids(item, vocab_size));
      else if (!r.ids_given && item.is_string())
        r.texts.push_back(item.get<std::string>());
      else
        throw ApiError(400, kShape, "input");
    }
  } else {
    throw ApiError(400, in.is_array() ? "'input' must not be an empty list" : kShape, "input");
  }
  const size_t n = r.ids_given ? r.ids.size() : r.texts.size();
  if (n > kMaxEmbeddingInputs)
    throw ApiError(400,
                   "'input' holds " + std::to_string(n) + " inputs; at most " +
                       std::to_string(kMaxEmbeddingInputs) + " per request",
                   "input");
  for (size_t i = 0; i < n; i++)
    if (r.ids_given ? r.ids[i].empty() : r.texts[i].empty())
      throw ApiError(400,
                     "'input' must not hold an empty " +
                         std::string(r.ids_given ? "list" : "string") + " (input " +
                         std::to_string(i) + ")",
                     "input");
  if (body.contains("encoding_format") && !body["encoding_format"].is_null()) {
    const ojson& f = body["encoding_format"];
    if (!f.is_string() || (f != "float" && f != "base64"))
      throw ApiError(400, "'encoding_format' must be \"float\" or \"base64\"", "encoding_format");
    r.base64 = f == "base64";
  }
  if (body.contains("dimensions") && !body["dimensions"].is_null()) {
    const ojson& d = body["dimensions"];
    if (!d.is_number_integer() || d.get<int64_t>() < 1 || d.get<int64_t>() > hidden_size)
      throw ApiError(400,
                     "'dimensions' must be an integer between 1 and " +
                         std::to_string(hidden_size) + " (the model's embedding size)",
                     "dimensions");
    r.dimensions = static_cast<int>(d.get<int64_t>());
  }
  return r;
}

std::vector<std::vector<int32_t>> embedding_prompts(const EmbeddingsRequest& e,
                                                    const Tokenizer& tokenizer, int context,
                                                    bool truncate) {
  const size_t n = e.ids_given ? e.ids.size() : e.texts.size();
  std::vector<std::vector<int32_t>> prompts(n);
  for (size_t i = 0; i < n; i++) {
    std::vector<int32_t>& p = prompts[i];
    p = e.ids_given ? e.ids[i] : tokenizer.encode(e.texts[i], true);
    if (truncate && static_cast<int>(p.size()) > context) p.resize(static_cast<size_t>(context));
    if (p.empty() || static_cast<int>(p.size()) > context)
      throw ApiError(400,
                     "input " + std::to_string(i) + ": " + std::to_string(p.size()) +
                         " tokens; the context window takes 1 to " + std::to_string(context),
                     "input");
  }
  return prompts;
}

std::vector<std::vector<float>> run_embeddings(Engine& engine,
                                               const std::vector<std::vector<int32_t>>& prompts,
                                               Pooling pooling, bool normalize, int dimensions) {
  std::vector<std::shared_ptr<RequestStream>> streams;
  struct CancelLeft {  // on an error, what is still queued stops
    std::vector<std::shared_ptr<RequestStream>>& streams;
    bool armed = true;
    ~CancelLeft() {
      if (armed)
        for (auto& st : streams) st->cancel();
    }
  } cancel_left{streams};
  const size_t n = prompts.size();
  std::vector<std::vector<float>> out;
  size_t next = 0;
  for (size_t i = 0; i < n; i++) {
    for (; next < n; next++) {
      EmbeddingRequest q;
      q.prompt = prompts[next];
      q.pooling = pooling;
      q.normalize = normalize;
      try {
        streams.push_back(engine.submit_embedding(std::move(q)));
      } catch (const QueueFullError& ex) {
        if (next == i) throw ApiError(429, ex.what(), "", "rate_limit_exceeded");
        break;
      } catch (const Error& ex) {
        throw ApiError(400, "input " + std::to_string(next) + ": " + ex.what(), "input");
      }
    }
    GenerationEvent ev;
    do ev = streams[i]->next();
    while (ev.finish == FinishReason::None);
    if (ev.finish == FinishReason::Error) throw ApiError(500, ev.error, "", "server_error");
    if (ev.finish == FinishReason::Cancelled)
      throw ApiError(503, "the server is shutting down", "", "server_error");
    if (dimensions > 0) {
      // Matryoshka-style: the leading values, at unit length again.
      ev.embedding.resize(static_cast<size_t>(dimensions));
      if (normalize) l2_normalize(ev.embedding.data(), ev.embedding.size());
    }
    out.push_back(std::move(ev.embedding));
  }
  cancel_left.armed = false;
  return out;
}

json json_floats(const float* v, size_t n) {
  json out = json::array();
  out.get_ref<json::array_t&>().reserve(n);
  char buf[32];
  for (size_t i = 0; i < n; i++) {
    // JSON numbers are doubles: the float's shortest decimal read as a double prints as
    // that decimal again, not as the float's 17-digit double expansion.
    const auto end = std::to_chars(buf, buf + sizeof buf - 1, v[i]).ptr;
    *end = '\0';
    out.push_back(std::strtod(buf, nullptr));
  }
  return out;
}

std::string base64_floats(const float* v, size_t n) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::vector<unsigned char> bytes(n * sizeof(float));
  if (n) std::memcpy(bytes.data(), v, bytes.size());  // x86-64 and ARM64: little-endian
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t w = (uint32_t{bytes[i]} << 16) | (uint32_t{bytes[i + 1]} << 8) | bytes[i + 2];
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(w >> s) & 63];
  }
  if (i < bytes.size()) {
    const bool two = i + 1 < bytes.size();
    const uint32_t w = (uint32_t{bytes[i]} << 16) | (two ? uint32_t{bytes[i + 1]} << 8 : 0);
    out += kAlphabet[(w >> 18) & 63];
    out += kAlphabet[(w >> 12) & 63];
    out += two ? kAlphabet[(w >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

json embeddings_response(const std::string& model,
                         const std::vector<std::vector<float>>& embeddings, bool base64,
                         int prompt_tokens) {
  json data = json::array();
  for (size_t i = 0; i < embeddings.size(); i++) {
    const std::vector<float>& e = embeddings[i];
    json item = {{"object", "embedding"}, {"index", i}};
    if (base64)
      item["embedding"] = base64_floats(e.data(), e.size());
    else
      item["embedding"] = json_floats(e.data(), e.size());
    data.push_back(std::move(item));
  }
  return {{"object", "list"},
          {"data", std::move(data)},
          {"model", model},
          {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

}  // namespace llm::server
