// The HTTP server on 127.0.0.1 with the tiny synthetic model: every route, streaming
// and not, every error case, batching that keeps each answer exact, hostile input.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "backends/registry.h"
#include "core/chat/infill_prompt.h"
#include "server/http_server.h"
#include "server/response_store.h"
#include "server/responses_api.h"
#include "test_util.h"

using namespace llm;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

const std::string& tiny_model_path() { return test::tiny_chat_model("q0f32", 11); }

struct TestServer {
  std::unique_ptr<Backend> backend = create_backend("cpu", 2);
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<ChatPrompt> chat;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<server::Server> srv;
  std::thread thread;
  int port = 0;

  explicit TestServer(EngineOptions eo = {}, server::ServerOptions so = {}, bool load = true) {
    so.port = 0;
    so.model_name = "tiny";
    so.shutdown_grace_s = 2;
    if (so.threads == 0) so.threads = 48;
    srv = std::make_unique<server::Server>(so);
    port = srv->bind();
    thread = std::thread([this] { srv->serve(); });
    if (load) this->load(eo);
  }
  void load(EngineOptions eo, const std::string& path = tiny_model_path(),
            Pooling pooling = Pooling::Mean) {
    model = Model::load(path, *backend);
    tok = Tokenizer::load(path);
    chat = std::make_unique<ChatPrompt>(*tok, path);
    if (eo.context_size == 0) eo.context_size = 256;
    engine = std::make_unique<Engine>(*model, tok.get(), eo);
    srv->set_ready(*engine, *tok, chat.get(), pooling);
  }
  ~TestServer() {
    srv->shutdown();
    thread.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60, 0);
    return c;
  }
};

json post(const TestServer& s, const std::string& path, const json& body, int expect_status,
          httplib::Headers headers = {}) {
  auto c = s.client();
  auto res = c.Post(path.c_str(), headers, body.dump(), "application/json");
  REQUIRE(res);
  INFO(res->body);
  REQUIRE(res->status == expect_status);
  return json::parse(res->body);
}

void check_error_shape(const json& j) {
  REQUIRE(j.contains("error"));
  CHECK(j["error"]["message"].is_string());
  CHECK(j["error"]["type"].is_string());
  CHECK(j["error"].contains("param"));
  CHECK(j["error"].contains("code"));
}

json chat_body(const std::string& user, int max_tokens) {
  return {{"model", "tiny"},
          {"messages", json::array({{{"role", "user"}, {"content", user}}})},
          {"max_tokens", max_tokens},
          {"temperature", 0}};
}

// The tiny model copied into dir, with a real chat template of tests/data in place of its
// own.
void copy_with_template(const test::TempDir& dir, const std::string& template_name) {
  namespace fs = std::filesystem;
  for (const auto& e : fs::directory_iterator(tiny_model_path()))
    fs::copy_file(e.path(), dir.path() + "/" + e.path().filename().string());
  fs::copy_file(test::data_dir() + "/chat-templates/" + template_name + ".jinja",
                dir.path() + "/chat_template.jinja", fs::copy_options::overwrite_existing);
}

// Loads the tiny model with a real chat template into s, with a context of n tokens.
void load_templated(TestServer& s, const test::TempDir& dir, const std::string& tmpl, int n) {
  copy_with_template(dir, tmpl);
  EngineOptions eo;
  eo.context_size = n;
  s.load(eo, dir.path());
}

std::string trim_copy(const std::string& s) {
  const size_t b = s.find_first_not_of(" \n\r\t");
  return b == std::string::npos ? "" : s.substr(b, s.find_last_not_of(" \n\r\t") - b + 1);
}

// The data: lines of an SSE body, [DONE] included.
std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    out.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end;
  }
  return out;
}

// A chat request streamed: its chunks in order ([DONE] checked and left out).
std::vector<json> streamed(const TestServer& s, json body) {
  body["stream"] = true;
  auto c = s.client();
  auto res = c.Post("/v1/chat/completions", body.dump(), "application/json");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  std::vector<std::string> data = sse_data(res->body);
  REQUIRE(!data.empty());
  CHECK(data.back() == "[DONE]");
  std::vector<json> chunks;
  for (size_t i = 0; i + 1 < data.size(); i++) chunks.push_back(json::parse(data[i]));
  return chunks;
}

}  // namespace

TEST_CASE("server: health, models, metrics", "[server]") {
  TestServer s({}, {}, /*load=*/false);
  auto c = s.client();
  auto h = c.Get("/health");
  REQUIRE(h);
  CHECK(h->status == 503);  // loading
  auto early = c.Post("/v1/completions", json{{"prompt", "hi"}}.dump(), "application/json");
  REQUIRE(early);
  CHECK(early->status == 503);
  CHECK(early->has_header("Retry-After"));
  s.load({});
  h = c.Get("/health");
  REQUIRE(h);
  CHECK(h->status == 200);
  auto m = c.Get("/v1/models");
  REQUIRE(m);
  REQUIRE(m->status == 200);
  const json models = json::parse(m->body);
  CHECK(models["object"] == "list");
  CHECK(models["data"][0]["id"] == "tiny");
  CHECK(models["data"][0]["object"] == "model");
  // One model by id (OpenAI's models.retrieve); another id is 404, another method 405.
  auto one = c.Get("/v1/models/tiny");
  REQUIRE(one);
  REQUIRE(one->status == 200);
  CHECK(json::parse(one->body) == models["data"][0]);
  auto other = c.Get("/v1/models/org/other");
  REQUIRE(other);
  CHECK(other->status == 404);
  check_error_shape(json::parse(other->body));
  CHECK(json::parse(other->body)["error"]["code"] == "model_not_found");
  auto wrong = c.Post("/v1/models/tiny", "{}", "application/json");
  REQUIRE(wrong);
  CHECK(wrong->status == 405);

  post(s, "/v1/chat/completions", chat_body("Hello", 4), 200);
  auto metrics = c.Get("/metrics");
  REQUIRE(metrics);
  REQUIRE(metrics->status == 200);
  const std::string& t = metrics->body;
  CHECK_THAT(
      t, Catch::Contains("llmrt_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1"));
  CHECK_THAT(t, Catch::Contains("llmrt_generation_tokens_total 4"));
  CHECK_THAT(t, Catch::Contains("llmrt_time_to_first_token_seconds_count 1"));
  CHECK_THAT(t, Catch::Contains("llmrt_time_per_output_token_seconds_count 3"));
  CHECK_THAT(t, Catch::Contains("llmrt_kv_pages_used 0"));
  CHECK_THAT(t, Catch::Contains("llmrt_requests_waiting 0"));
  CHECK_THAT(t, Catch::Contains("llmrt_prefix_cached_tokens_total 0"));
  // The same long question again: its prompt's full pages come from the prefix cache.
  const std::string question(200, 'a');
  post(s, "/v1/chat/completions", chat_body(question, 2), 200);
  post(s, "/v1/chat/completions", chat_body(question, 2), 200);
  CHECK(s.engine->stats().prefix_cached_tokens >= 16);
  CHECK_THAT(c.Get("/metrics")->body, !Catch::Contains("llmrt_prefix_cached_tokens_total 0\n"));
}

TEST_CASE("server: tokenize and detokenize as llama.cpp's routes do", "[server]") {
  TestServer s;
  const std::string text = "Hello world, how are you?";
  const json t = post(s, "/tokenize", {{"content", text}}, 200);
  std::vector<int32_t> ids = t["tokens"].get<std::vector<int32_t>>();
  CHECK(ids == s.tok->encode(text, false));
  CHECK(t["count"] == ids.size());
  CHECK(post(s, "/detokenize", {{"tokens", ids}}, 200)["content"] == s.tok->decode(ids));
  // add_special: the tokenizer's BOS first; with_pieces: each id with its text.
  const json b = post(s, "/tokenize", {{"content", text}, {"add_special", true}}, 200);
  CHECK(b["tokens"][0] == s.tok->bos_id());
  // Pieces as they read inside a text ("Hello world": the second keeps its space).
  const json p = post(s, "/tokenize", {{"content", "Hello world"}, {"with_pieces", true}}, 200);
  REQUIRE(p["tokens"].size() >= 2);
  std::string joined;
  for (const json& piece : p["tokens"]) {
    CHECK(piece["id"].is_number_integer());
    joined += piece["piece"].get<std::string>();
  }
  CHECK(joined.find(" world") != std::string::npos);
  CHECK(post(s, "/detokenize", {{"tokens", {1, -3}}}, 400)["error"]["param"] == "tokens");
  CHECK(post(s, "/detokenize", {{"tokens", {s.tok->vocab_size()}}}, 400)["error"]["param"] ==
        "tokens");
  CHECK(post(s, "/tokenize", {{"text", "x"}}, 400)["error"]["param"] == "content");
}

namespace {

std::vector<float> base64_to_floats(const std::string& b64) {
  static const std::string kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::vector<uint8_t> bytes;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : b64) {
    if (c == '=') break;
    const size_t v = kAlphabet.find(c);
    REQUIRE(v != std::string::npos);
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes.push_back(static_cast<uint8_t>(acc >> bits));
    }
  }
  REQUIRE(bytes.size() % 4 == 0);
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

// The engine's own mean-pooled, normalized embedding of ids.
std::vector<float> engine_embedding(const TestServer& s, const std::vector<int32_t>& ids) {
  EmbeddingRequest r;
  r.prompt = ids;
  auto st = s.engine->submit_embedding(r);
  GenerationEvent ev = st->next();
  REQUIRE(ev.finish == FinishReason::Stop);
  return ev.embedding;
}

}  // namespace

TEST_CASE("server: /v1/embeddings as OpenAI's, every input shape, errors", "[server][embeddings]") {
  TestServer s;
  const int D = s.model->config().hidden_size;
  const std::vector<std::string> texts = {"Hello world", "The sky is blue because",
                                          "a much longer input, with punctuation; and more words"};
  std::vector<std::vector<float>> want;
  for (const auto& t : texts) want.push_back(engine_embedding(s, s.tok->encode(t, true)));

  const json one = post(s, "/v1/embeddings", {{"model", "tiny"}, {"input", texts[0]}}, 200);
  CHECK(one["object"] == "list");
  CHECK(one["model"] == "tiny");
  REQUIRE(one["data"].size() == 1);
  CHECK(one["data"][0]["object"] == "embedding");
  CHECK(one["data"][0]["index"] == 0);
  CHECK(one["data"][0]["embedding"].get<std::vector<float>>() == want[0]);  // exact floats
  const int n0 = static_cast<int>(s.tok->encode(texts[0], true).size());
  CHECK(one["usage"]["prompt_tokens"] == n0);
  CHECK(one["usage"]["total_tokens"] == n0);
  double ss = 0;
  for (float v : want[0]) ss += double(v) * v;
  CHECK(std::fabs(ss - 1.0) < 1e-5);

  // Several inputs at once (batched in the engine), each as alone.
  const json many = post(s, "/v1/embeddings", {{"input", texts}}, 200);
  REQUIRE(many["data"].size() == texts.size());
  for (size_t i = 0; i < texts.size(); i++) {
    CHECK(many["data"][i]["index"] == i);
    const std::vector<float> got = many["data"][i]["embedding"].get<std::vector<float>>();
    REQUIRE(got.size() == want[i].size());
    for (size_t d = 0; d < got.size(); d++) CHECK(std::fabs(got[d] - want[i][d]) < 1e-5);
  }
  // Token ids, one list or several.
  const std::vector<int32_t> ids = s.tok->encode(texts[1], true);
  CHECK(post(s, "/v1/embeddings", {{"input", ids}}, 200)["data"][0]["embedding"]
            .get<std::vector<float>>() == want[1]);
  const json lists = post(s, "/v1/embeddings", {{"input", json::array({ids, ids})}}, 200);
  CHECK(lists["data"].size() == 2);
  CHECK(lists["usage"]["prompt_tokens"] == 2 * ids.size());
  // base64: the float32 bytes themselves.
  const json b64 =
      post(s, "/v1/embeddings", {{"input", texts[1]}, {"encoding_format", "base64"}}, 200);
  CHECK(base64_to_floats(b64["data"][0]["embedding"].get<std::string>()) == want[1]);
  // dimensions: the leading values at unit length again.
  const json cut = post(s, "/v1/embeddings", {{"input", texts[2]}, {"dimensions", 16}}, 200);
  const std::vector<float> short_one = cut["data"][0]["embedding"].get<std::vector<float>>();
  REQUIRE(short_one.size() == 16);
  double head = 0;
  for (int d = 0; d < 16; d++) head += double(want[2][d]) * want[2][d];
  for (int d = 0; d < 16; d++) CHECK(std::fabs(short_one[d] - want[2][d] / std::sqrt(head)) < 1e-5);

  auto param_of = [&](const json& body) {
    const json e = post(s, "/v1/embeddings", body, 400);
    check_error_shape(e);
    return e["error"]["param"];
  };
  CHECK(param_of({{"model", "tiny"}}) == "input");
  CHECK(param_of({{"input", ""}}) == "input");
  CHECK(param_of({{"input", json::array()}}) == "input");
  CHECK(param_of({{"input", {"a", ""}}}) == "input");
  CHECK(param_of({{"input", json::array({"a", json::array({1, 2})})}}) == "input");
  CHECK(param_of({{"input", {1, s.tok->vocab_size() + 5}}}) == "input");
  CHECK(param_of({{"input", {1, -1}}}) == "input");
  CHECK(param_of({{"input", 5}}) == "input");
  CHECK(param_of({{"input", "x"}, {"encoding_format", "hex"}}) == "encoding_format");
  CHECK(param_of({{"input", "x"}, {"dimensions", 0}}) == "dimensions");
  CHECK(param_of({{"input", "x"}, {"dimensions", D + 1}}) == "dimensions");
  // Longer than the context window (256 here): 400, naming the input.
  const json long_input =
      post(s, "/v1/embeddings", {{"input", {"fine", std::string(3000, 'z') + " end"}}}, 400);
  CHECK_THAT(long_input["error"]["message"].get<std::string>(),
             Catch::Contains("input 1") && Catch::Contains("context window"));
  auto c = s.client();
  auto bad = c.Post("/v1/embeddings", "{\"input\": [1,", "application/json");
  REQUIRE(bad);
  CHECK(bad->status == 400);
  auto get = c.Get("/v1/embeddings");
  REQUIRE(get);
  CHECK(get->status == 405);
}

TEST_CASE("server: /v1/embeddings of more inputs than the queue takes, in waves",
          "[server][embeddings]") {
  EngineOptions eo;
  eo.max_seqs = 1;
  eo.prefill_chunk_size = 16;
  eo.max_queue = 2;
  TestServer s(eo);
  std::vector<std::string> texts;
  for (int i = 0; i < 10; i++) texts.push_back("input number " + std::to_string(i) + " here");
  const json all = post(s, "/v1/embeddings", {{"input", texts}}, 200);
  REQUIRE(all["data"].size() == texts.size());
  for (size_t i = 0; i < texts.size(); i++) {
    INFO(i);
    const std::vector<float> want = engine_embedding(s, s.tok->encode(texts[i], true));
    const std::vector<float> got = all["data"][i]["embedding"].get<std::vector<float>>();
    REQUIRE(got.size() == want.size());
    for (size_t d = 0; d < got.size(); d++) CHECK(std::fabs(got[d] - want[d]) < 1e-5);
  }
}

TEST_CASE("server: /v1/embeddings refuses a server pooling none", "[server][embeddings]") {
  TestServer s({}, {}, /*load=*/false);
  s.load({}, tiny_model_path(), Pooling::None);
  const json e = post(s, "/v1/embeddings", {{"input", "hello"}}, 400);
  CHECK_THAT(e["error"]["message"].get<std::string>(), Catch::Contains("--pooling none"));
}

TEST_CASE("server: chat and text completions, streamed and not, agree", "[server]") {
  TestServer s;
  // What the engine gives alone for the same prompt.
  nlohmann::ordered_json msgs =
      nlohmann::ordered_json::array({{{"role", "user"}, {"content", "Tell me a story"}}});
  GenerationRequest g;
  g.prompt = s.chat->encode(msgs);
  g.max_tokens = 12;
  auto direct = s.engine->submit(g);
  std::string expected;
  int expected_tokens = 0;
  for (;;) {
    GenerationEvent ev = direct->next();
    expected += ev.text;
    expected_tokens += static_cast<int>(ev.tokens.size());
    if (ev.finish != FinishReason::None) break;
  }

  const json r = post(s, "/v1/chat/completions", chat_body("Tell me a story", 12), 200);
  CHECK(r["object"] == "chat.completion");
  CHECK(r["model"] == "tiny");
  CHECK(r["id"].get<std::string>().rfind("chatcmpl-", 0) == 0);
  const json& choice = r["choices"][0];
  CHECK(choice["message"]["role"] == "assistant");
  CHECK(choice["message"]["content"] == expected);
  const std::string finish = expected_tokens == 12 ? "length" : "stop";
  CHECK(choice["finish_reason"] == finish);
  CHECK(r["usage"]["prompt_tokens"] == g.prompt.size());
  CHECK(r["usage"]["completion_tokens"] == expected_tokens);
  CHECK(r["usage"]["total_tokens"] == g.prompt.size() + expected_tokens);

  SECTION("streamed chat: chunks add up, finish chunk, usage, [DONE]") {
    json body = chat_body("Tell me a story", 12);
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
    auto c = s.client();
    auto res = c.Post("/v1/chat/completions", body.dump(), "application/json");
    REQUIRE(res);
    REQUIRE(res->status == 200);
    CHECK_THAT(res->get_header_value("Content-Type"), Catch::StartsWith("text/event-stream"));
    const auto data = sse_data(res->body);
    REQUIRE(data.size() >= 4);
    CHECK(data.back() == "[DONE]");
    std::string text;
    const json first = json::parse(data[0]);
    CHECK(first["object"] == "chat.completion.chunk");
    CHECK(first["choices"][0]["delta"]["role"] == "assistant");
    for (size_t i = 0; i + 2 < data.size(); i++) {
      const json j = json::parse(data[i]);
      if (j["choices"][0]["delta"].contains("content"))
        text += j["choices"][0]["delta"]["content"].get<std::string>();
    }
    CHECK(text == expected);
    const json fin = json::parse(data[data.size() - 3]);
    CHECK(fin["choices"][0]["finish_reason"] == finish);
    const json usage = json::parse(data[data.size() - 2]);
    CHECK(usage["choices"].empty());
    CHECK(usage["usage"]["completion_tokens"] == expected_tokens);
  }
  SECTION("text completion from a string and from token ids") {
    const std::vector<int32_t> ids = s.tok->encode("Once upon a time", true);
    json a = post(s, "/v1/completions",
                  {{"prompt", "Once upon a time"}, {"max_tokens", 10}, {"temperature", 0}}, 200);
    json b =
        post(s, "/v1/completions", {{"prompt", ids}, {"max_tokens", 10}, {"temperature", 0}}, 200);
    CHECK(a["object"] == "text_completion");
    CHECK(a["choices"][0]["text"] == b["choices"][0]["text"]);
    CHECK(a["usage"]["prompt_tokens"] == ids.size());
    json st = {
        {"prompt", "Once upon a time"}, {"max_tokens", 10}, {"temperature", 0}, {"stream", true}};
    auto c = s.client();
    auto res = c.Post("/v1/completions", st.dump(), "application/json");
    REQUIRE(res);
    std::string text;
    for (const auto& d : sse_data(res->body))
      if (d != "[DONE]") text += json::parse(d)["choices"][0]["text"].get<std::string>();
    CHECK(text == a["choices"][0]["text"].get<std::string>());
  }
  SECTION("stop strings and logprobs") {
    const std::string content = choice["message"]["content"];
    REQUIRE(content.size() >= 6);
    json body = chat_body("Tell me a story", 12);
    body["stop"] = content.substr(3, 2);
    const json st = post(s, "/v1/chat/completions", body, 200);
    CHECK(st["choices"][0]["finish_reason"] == "stop");
    CHECK(st["choices"][0]["message"]["content"] ==
          content.substr(0, content.find(content.substr(3, 2))));

    json lp = chat_body("Tell me a story", 5);
    lp["logprobs"] = true;
    lp["top_logprobs"] = 2;
    const json l = post(s, "/v1/chat/completions", lp, 200);
    const json& items = l["choices"][0]["logprobs"]["content"];
    REQUIRE(items.size() == 5);
    for (const auto& it : items) {
      CHECK(it["logprob"].get<double>() <= 0);
      REQUIRE(it["top_logprobs"].size() == 2);
      CHECK(it["top_logprobs"][0]["token"] == it["token"]);  // greedy
    }
  }
  SECTION("seeded sampling repeats") {
    json body = chat_body("Tell me a story", 12);
    body["temperature"] = 1.0;
    body["seed"] = 5;
    const json a = post(s, "/v1/chat/completions", body, 200);
    const json b = post(s, "/v1/chat/completions", body, 200);
    CHECK(a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]);
  }
}

TEST_CASE("server: errors in OpenAI's shape with the right status", "[server]") {
  server::ServerOptions so;
  so.max_body = 4096;
  so.api_key = "sekret";
  TestServer s({}, so);
  const httplib::Headers auth = {{"Authorization", "Bearer sekret"}};
  auto c = s.client();

  check_error_shape(post(s, "/v1/chat/completions", chat_body("hi", 2), 401));
  check_error_shape(post(s, "/v1/chat/completions", chat_body("hi", 2), 401,
                         {{"Authorization", "Bearer wrong"}}));
  post(s, "/v1/chat/completions", chat_body("hi", 2), 200, auth);
  // The scheme is case-insensitive; the key is not.
  post(s, "/v1/chat/completions", chat_body("hi", 2), 200, {{"Authorization", "bearer sekret"}});
  check_error_shape(post(s, "/v1/chat/completions", chat_body("hi", 2), 401,
                         {{"Authorization", "Bearer SEKRET"}}));
  check_error_shape(post(s, "/v1/chat/completions", chat_body("hi", 2), 401,
                         {{"Authorization", "Bearer sekret2"}}));
  // The tokenizer routes are guarded too.
  check_error_shape(post(s, "/tokenize", {{"content", "hi"}}, 401));
  post(s, "/tokenize", {{"content", "hi"}}, 200, auth);

  auto raw = [&](const std::string& path, const std::string& body) {
    auto res = c.Post(path.c_str(), auth, body, "application/json");
    REQUIRE(res);
    INFO(res->body);
    check_error_shape(json::parse(res->body));
    return res->status;
  };
  CHECK(raw("/v1/chat/completions", "{\"messages\": [") == 400);
  CHECK(raw("/v1/chat/completions", "[1, 2]") == 400);
  CHECK(raw("/v1/chat/completions", json{{"messages", "hi"}}.dump()) == 400);
  json bad_temp = chat_body("hi", 2);
  bad_temp["temperature"] = "hot";
  {
    auto res = c.Post("/v1/chat/completions", auth, bad_temp.dump(), "application/json");
    REQUIRE(res);
    CHECK(res->status == 400);
    CHECK(json::parse(res->body)["error"]["param"] == "temperature");
  }
  {
    json zero = chat_body("hi", 0);
    auto res = c.Post("/v1/chat/completions", auth, zero.dump(), "application/json");
    REQUIRE(res);
    CHECK(res->status == 400);
    CHECK(json::parse(res->body)["error"]["param"] == "max_tokens");
  }
  json many = chat_body("hi", 2);
  many["n"] = 17;
  CHECK(raw("/v1/chat/completions", many.dump()) == 400);
  CHECK(raw("/v1/completions", json{{"prompt", 5}}.dump()) == 400);
  // Longer than the context window (256 tokens) but under the body limit.
  std::string long_prompt;
  for (int i = 0; i < 400; i++) long_prompt += "x ";
  {
    auto res =
        c.Post("/v1/completions", auth, json{{"prompt", long_prompt}}.dump(), "application/json");
    REQUIRE(res);
    CHECK(res->status == 400);
    CHECK_THAT(json::parse(res->body)["error"]["message"].get<std::string>(),
               Catch::Contains("exceeds the context window"));
  }
  CHECK(raw("/v1/completions", std::string(5000, ' ')) == 413);
  {
    auto res = c.Get("/v1/nope", auth);
    REQUIRE(res);
    CHECK(res->status == 404);
    check_error_shape(json::parse(res->body));
  }
  // Deep nesting and invalid UTF-8 are refused, and the server keeps serving.
  CHECK(raw("/v1/completions", std::string(2000, '[') + std::string(2000, ']')) == 400);
  CHECK(raw("/v1/completions", "{\"prompt\": \"\xff\xfe\"}") == 400);
  post(s, "/v1/chat/completions", chat_body("still there?", 2), 200, auth);
}

// Tools reach the chat template (Qwen2.5's writes them into the system turn), as do an
// assistant's tool_calls and a tool's reply; what cannot be honoured is refused.
TEST_CASE("server: tools go to the chat template", "[server]") {
  test::TempDir dir;
  TestServer s({}, {}, false);
  load_templated(s, dir, "Qwen-Qwen2.5-7B-Instruct", 1024);
  const json weather = {
      {"type", "function"},
      {"function",
       {{"name", "get_weather"},
        {"description", "Weather of a city"},
        {"parameters", {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}}}}}};
  auto prompt_tokens = [&](json body) {
    return post(s, "/v1/chat/completions", body, 200)["usage"]["prompt_tokens"].get<int>();
  };
  json plain = chat_body("weather in Paris?", 1);
  json with_tools = plain;
  with_tools["tools"] = json::array({weather});
  const int n_plain = prompt_tokens(plain), n_tools = prompt_tokens(with_tools);
  CHECK(n_tools > n_plain + 20);  // the tool's signature is in the prompt
  with_tools["tool_choice"] = "none";
  CHECK(prompt_tokens(with_tools) == n_plain);
  with_tools["tool_choice"] = "auto";
  CHECK(prompt_tokens(with_tools) == n_tools);
  // A call and its result, as a client sends them back.
  json turn = with_tools;
  turn["messages"].push_back(
      {{"role", "assistant"},
       {"content", nullptr},
       {"tool_calls",
        json::array(
            {{{"id", "call_1"},
              {"type", "function"},
              {"function", {{"name", "get_weather"}, {"arguments", "{\"city\":\"Paris\"}"}}}}})}});
  turn["messages"].push_back({{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", "18 C"}});
  CHECK(prompt_tokens(turn) > n_tools + 10);

  // With tools the reply is checked for calls (this model writes none): streamed or
  // not, the same content and finish reason.
  json ask = with_tools;
  ask["max_tokens"] = 12;
  const json whole = post(s, "/v1/chat/completions", ask, 200)["choices"][0];
  CHECK(!whole["message"].contains("tool_calls"));
  CHECK(whole["finish_reason"] != "tool_calls");
  const std::vector<json> chunks = streamed(s, ask);
  REQUIRE(chunks.size() >= 2);
  std::string text;
  for (const json& chunk : chunks) {
    const json& d = chunk["choices"][0]["delta"];
    CHECK(!d.contains("tool_calls"));
    if (d.contains("content")) text += d["content"].get<std::string>();
  }
  CHECK(text == whole["message"]["content"].get<std::string>());
  CHECK(chunks.back()["choices"][0]["finish_reason"] == whole["finish_reason"]);

  json bad = with_tools;
  bad["tools"] = "x";
  CHECK(post(s, "/v1/chat/completions", bad, 400)["error"]["param"] == "tools");
  bad = with_tools;
  bad["tool_choice"] = {{"type", "function"}, {"function", {{"name", "nope"}}}};
  CHECK(post(s, "/v1/chat/completions", bad, 400)["error"]["param"] == "tool_choice");
  bad["tool_choice"] = "sometimes";
  CHECK(post(s, "/v1/chat/completions", bad, 400)["error"]["param"] == "tool_choice");

  // tool_choice forcing a call: the reply is constrained to the call (Qwen2.5's
  // <tool_call> syntax, whose opener goes at the end of the prompt).
  const json unit_tool = {{"type", "function"},
                          {"function",
                           {{"name", "set_unit"},
                            {"parameters",
                             {{"type", "object"},
                              {"properties", {{"unit", {{"enum", {"c", "f"}}}}}},
                              {"required", {"unit"}},
                              {"additionalProperties", false}}}}}};
  json forced = chat_body("weather in Paris?", 128);
  forced["tools"] = json::array({weather, unit_tool});
  for (const json& choice :
       {json("required"), json{{"type", "function"}, {"function", {{"name", "set_unit"}}}}}) {
    forced["tool_choice"] = choice;
    const json r = post(s, "/v1/chat/completions", forced, 200)["choices"][0];
    INFO(r.dump());
    if (choice.is_object() || r["finish_reason"] == "tool_calls") {
      CHECK(r["finish_reason"] == "tool_calls");
      CHECK(r["message"]["content"].is_null());
      const json& call = r["message"]["tool_calls"][0];
      const std::string name = call["function"]["name"].get<std::string>();
      CHECK((name == "set_unit" || name == "get_weather"));
      CHECK(json::parse(call["function"]["arguments"].get<std::string>()).is_object());
      if (choice.is_object()) {
        CHECK(name == "set_unit");
        const json args = json::parse(call["function"]["arguments"].get<std::string>());
        CHECK((args == json{{"unit", "c"}} || args == json{{"unit", "f"}}));
      }
    }
  }
  // Streamed: no content, the call in one chunk at the end.
  std::string streamed_content;
  int calls = 0;
  for (const json& chunk : streamed(s, forced)) {
    const json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("content")) streamed_content += delta["content"].get<std::string>();
    if (delta.contains("tool_calls")) calls++;
  }
  CHECK(streamed_content.empty());
  CHECK(calls == 1);
  bad = plain;
  bad["response_format"] = {{"type", "json_schema"}};  // no schema
  CHECK(post(s, "/v1/chat/completions", bad, 400)["error"]["param"] == "response_format");
  bad["response_format"] = {{"type", "text"}};
  post(s, "/v1/chat/completions", bad, 200);
  // JSON mode: the reply is one object (or the start of one, cut by max_tokens).
  json as_json = plain;
  as_json["max_tokens"] = 64;
  as_json["temperature"] = 1;
  as_json["response_format"] = {{"type", "json_object"}};
  // Even seeds favour the tokens "{" and "}" alone (logit bias), so some replies surely
  // close their object.
  json close_bias = json::object();
  for (const char* t : {"{", " {", "}", " }"})
    for (int32_t id : s.tok->encode(t, false))
      if (s.tok->token_bytes(id) == t) close_bias[std::to_string(id)] = 20;
  REQUIRE(close_bias.size() >= 2);
  int objects = 0;
  for (int seed = 1; seed <= 8; seed++) {
    as_json["seed"] = seed;
    if (seed % 2 == 0)
      as_json["logit_bias"] = close_bias;
    else
      as_json.erase("logit_bias");
    const json choice = post(s, "/v1/chat/completions", as_json, 200)["choices"][0];
    const std::string content = choice["message"]["content"].get<std::string>();
    INFO(content);
    CHECK(content.find('{') != std::string::npos);
    if (choice["finish_reason"] == "stop") {
      CHECK(json::parse(content).is_object());
      objects++;
    }
  }
  CHECK(objects >= 4);
  // A schema: every finished reply follows it; one that cannot be enforced is a 400.
  json with_schema = as_json;
  with_schema.erase("logit_bias");
  with_schema["response_format"] = {
      {"type", "json_schema"},
      {"json_schema",
       {{"name", "flags"},
        {"strict", true},
        {"schema",
         {{"type", "object"},
          {"properties", {{"ok", {{"type", "boolean"}}}, {"n", {{"type", "integer"}}}}},
          {"required", {"ok", "n"}},
          {"additionalProperties", false}}}}}};
  int valid = 0;
  for (int seed = 1; seed <= 8; seed++) {
    with_schema["seed"] = seed;
    const json choice = post(s, "/v1/chat/completions", with_schema, 200)["choices"][0];
    if (choice["finish_reason"] != "stop") continue;
    const json j = json::parse(choice["message"]["content"].get<std::string>());
    CHECK(j.size() == 2);
    CHECK(j["ok"].is_boolean());
    CHECK(j["n"].is_number_integer());
    valid++;
  }
  CHECK(valid > 0);
  with_schema["response_format"]["json_schema"]["schema"] = {{"type", "array"}};
  const json e = post(s, "/v1/chat/completions", with_schema, 400);
  CHECK(e["error"]["param"] == "response_format");
  CHECK_THAT(e["error"]["message"].get<std::string>(), Catch::Contains("root must be an object"));
  // A schema whose numbers can take no value is refused the same way, naming the place.
  with_schema["response_format"]["json_schema"]["schema"] = json::parse(
      R"({"type":"object","properties":{"n":{"type":"integer","multipleOf":5,"maximum":4,)"
      R"("minimum":1}}})");
  const json none = post(s, "/v1/chat/completions", with_schema, 400);
  CHECK(none["error"]["param"] == "response_format");
  CHECK_THAT(none["error"]["message"].get<std::string>(),
             Catch::Contains("/properties/n") && Catch::Contains("multiple of multipleOf"));
}

TEST_CASE("server: n choices, streamed and not, each its own seeded request", "[server]") {
  TestServer s;
  json body = chat_body("Tell me a story", 6);
  body["n"] = 3;
  body["temperature"] = 1;
  body["seed"] = 5;
  const json r = post(s, "/v1/chat/completions", body, 200);
  REQUIRE(r["choices"].size() == 3);
  int tokens = 0;
  std::set<std::string> distinct;
  for (int i = 0; i < 3; i++) {
    CHECK(r["choices"][i]["index"] == i);
    distinct.insert(r["choices"][i]["message"]["content"].get<std::string>());
  }
  CHECK(distinct.size() > 1);  // seeds 5, 6, 7
  // Choice i is what n = 1 gives with seed 5 + i.
  json one = body;
  one["n"] = 1;
  one["seed"] = 6;
  CHECK(post(s, "/v1/chat/completions", one, 200)["choices"][0]["message"]["content"] ==
        r["choices"][1]["message"]["content"]);
  tokens = r["usage"]["completion_tokens"].get<int>();
  CHECK(tokens >= 3);
  CHECK(tokens <= 18);

  // Streamed: chunks of the three interleave, each adds up to its choice.
  body["stream_options"] = {{"include_usage", true}};
  std::vector<std::string> text(3);
  std::vector<int> finishes(3, 0);
  int usage_tokens = -1;
  for (const json& chunk : streamed(s, body)) {
    if (chunk["choices"].empty()) {
      usage_tokens = chunk["usage"]["completion_tokens"].get<int>();
      continue;
    }
    const json& ch = chunk["choices"][0];
    const int i = ch["index"].get<int>();
    REQUIRE((i >= 0 && i < 3));
    if (ch["delta"].contains("content")) text[i] += ch["delta"]["content"].get<std::string>();
    if (!ch["finish_reason"].is_null()) finishes[i]++;
  }
  for (int i = 0; i < 3; i++) {
    CHECK(text[i] == r["choices"][i]["message"]["content"].get<std::string>());
    CHECK(finishes[i] == 1);
  }
  CHECK(usage_tokens == tokens);
}

TEST_CASE("server: a reasoning model's thinking goes to reasoning_content", "[server]") {
  // GLM-4.7's generation prompt opens a think block, so a reply that never closes it
  // (this random model's) is all reasoning.
  test::TempDir dir;
  copy_with_template(dir, "GLM-4.7-Flash");
  for (const bool split : {true, false}) {
    CAPTURE(split);
    server::ServerOptions so;
    so.split_reasoning = split;
    TestServer s({}, so, false);
    s.load({}, dir.path());
    const json body = chat_body("Why is the sky blue?", 10);
    const json msg = post(s, "/v1/chat/completions", body, 200)["choices"][0]["message"];
    const std::string all =
        split ? msg["reasoning_content"].get<std::string>() : msg["content"].get<std::string>();
    CHECK(!all.empty());
    CHECK(msg.contains("reasoning_content") == split);
    if (split) CHECK(msg["content"] == "");
    // GLM's tool calls are not one JSON object: a forced call cannot be constrained.
    json force = body;
    force["tools"] = json::array(
        {{{"type", "function"}, {"function", {{"name", "f"}, {"parameters", json::object()}}}}});
    force["tool_choice"] = "required";
    CHECK(post(s, "/v1/chat/completions", force, 400)["error"]["param"] == "tool_choice");
    // Streamed: the same split, piece by piece.
    std::string reasoning, content;
    for (const json& chunk : streamed(s, body)) {
      const json& delta = chunk["choices"][0]["delta"];
      if (delta.contains("reasoning_content"))
        reasoning += delta["reasoning_content"].get<std::string>();
      if (delta.contains("content")) content += delta["content"].get<std::string>();
    }
    // (The whole reply is trimmed, the stream is not.)
    CHECK(trim_copy(split ? reasoning : content) == all);
    CHECK((split ? content : reasoning).empty());
  }
}

TEST_CASE("server: chat_template_kwargs (and Ollama's think) reach the template", "[server]") {
  // Qwen3's template closes an empty think block when enable_thinking is false.
  test::TempDir dir;
  copy_with_template(dir, "Qwen-Qwen3-0.6B");
  TestServer s({}, {}, false);
  s.load({}, dir.path());
  json body = chat_body("Hello", 1);
  const int plain = post(s, "/v1/chat/completions", body, 200)["usage"]["prompt_tokens"];
  body["chat_template_kwargs"] = {{"enable_thinking", false}};
  const int closed = post(s, "/v1/chat/completions", body, 200)["usage"]["prompt_tokens"];
  CHECK(closed > plain);
  body["chat_template_kwargs"] = {{"enable_thinking", true}};
  CHECK(post(s, "/v1/chat/completions", body, 200)["usage"]["prompt_tokens"] == plain);
  const std::string rendered =
      s.chat->render(nlohmann::ordered_json::parse(R"([{"role":"user","content":"Hi"}])"), nullptr,
                     nlohmann::ordered_json{{"enable_thinking", false}});
  CHECK_THAT(rendered, Catch::Contains("<think>\n\n</think>"));
  body["chat_template_kwargs"] = {{"messages", 1}};
  CHECK(post(s, "/v1/chat/completions", body, 400)["error"]["param"] == "chat_template_kwargs");
  body["chat_template_kwargs"] = "x";
  CHECK(post(s, "/v1/chat/completions", body, 400)["error"]["param"] == "chat_template_kwargs");
  // Ollama's think: false is the same prompt.
  const json o = post(s, "/api/chat",
                      {{"messages", json::array({{{"role", "user"}, {"content", "Hello"}}})},
                       {"think", false},
                       {"stream", false},
                       {"options", {{"num_predict", 1}}}},
                      200);
  CHECK(o["prompt_eval_count"] == closed);
}

TEST_CASE("server: reasoning_effort (and the Responses API's reasoning.effort) reach the template",
          "[server]") {
  // Solar Open's template opens the reply with an empty think block at low or minimal
  // effort, and takes high when none is given.
  test::TempDir dir;
  copy_with_template(dir, "upstage-Solar-Open-100B");
  TestServer s({}, {}, false);
  s.load({}, dir.path());
  json body = chat_body("Hello", 1);
  auto prompt_tokens = [&](const json& b) {
    return post(s, "/v1/chat/completions", b, 200)["usage"]["prompt_tokens"].get<int>();
  };
  const int plain = prompt_tokens(body);
  body["reasoning_effort"] = "low";
  const int low = prompt_tokens(body);
  CHECK(low > plain);
  body["reasoning_effort"] = "high";
  CHECK(prompt_tokens(body) == plain);
  // chat_template_kwargs, where it sets the variable, wins.
  body["reasoning_effort"] = "low";
  body["chat_template_kwargs"] = {{"reasoning_effort", "high"}};
  CHECK(prompt_tokens(body) == plain);
  body.erase("chat_template_kwargs");
  for (const json& bad : {json("max"), json(3)}) {
    body["reasoning_effort"] = bad;
    CHECK(post(s, "/v1/chat/completions", body, 400)["error"]["param"] == "reasoning_effort");
  }
  body["reasoning_effort"] = nullptr;  // null is absent
  CHECK(prompt_tokens(body) == plain);
  // The Responses API: reasoning.effort, echoed back.
  const json input = json::array({{{"role", "user"}, {"content", "Hello"}}});
  const json r =
      post(s, "/v1/responses",
           {{"input", input}, {"max_output_tokens", 1}, {"reasoning", {{"effort", "low"}}}}, 200);
  CHECK(r["reasoning"]["effort"] == "low");
  const json r0 = post(s, "/v1/responses", {{"input", input}, {"max_output_tokens", 1}}, 200);
  CHECK(r0["reasoning"]["effort"].is_null());
  CHECK(r["usage"]["input_tokens"].get<int>() > r0["usage"]["input_tokens"].get<int>());
  CHECK(r["usage"]["input_tokens"].get<int>() - r0["usage"]["input_tokens"].get<int>() ==
        low - plain);
  CHECK(post(s, "/v1/responses", {{"input", input}, {"reasoning", {{"effort", "max"}}}},
             400)["error"]["param"] == "reasoning_effort");
  CHECK(post(s, "/v1/responses", {{"input", input}, {"reasoning", "low"}}, 400)["error"]["param"] ==
        "reasoning");
  // Ollama's think takes an effort too.
  auto ollama = [&](const json& think, int status) {
    return post(s, "/api/chat",
                {{"messages", json::array({{{"role", "user"}, {"content", "Hello"}}})},
                 {"think", think},
                 {"stream", false},
                 {"options", {{"num_predict", 1}}}},
                status);
  };
  CHECK(ollama("low", 200)["prompt_eval_count"] == low);
  CHECK(ollama("high", 200)["prompt_eval_count"] == plain);
  CHECK(ollama("max", 400)["error"].get<std::string>().find("think") != std::string::npos);
}

TEST_CASE("server: a full queue answers 429 with Retry-After", "[server]") {
  EngineOptions eo;
  eo.max_seqs = 1;
  eo.max_queue = 1;
  TestServer s(eo);
  json body = chat_body("go on", 200);
  body["max_tokens"] = nullptr;  // until the context is full: keeps the engine busy
  std::atomic<int> ok{0}, refused{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 6; i++) {
    clients.emplace_back([&] {
      auto c = s.client();
      auto res = c.Post("/v1/chat/completions", body.dump(), "application/json");
      if (!res) return;
      if (res->status == 200) ok++;
      if (res->status == 429) {
        refused++;
        CHECK(res->get_header_value("Retry-After") == "1");
      }
    });
  }
  for (auto& t : clients) t.join();
  CHECK(refused > 0);
  CHECK(ok > 0);
  CHECK(ok + refused == 6);
}

TEST_CASE("server: 32 concurrent greedy requests each get their answer alone", "[server][batch]") {
  EngineOptions eo;
  eo.max_seqs = 16;
  eo.prefill_chunk_size = 64;
  TestServer s(eo);
  const int n = 32;
  std::vector<std::string> prompts, alone(n), together(n);
  for (int i = 0; i < n; i++) prompts.push_back("Request number " + std::to_string(i * 7919));
  for (int i = 0; i < n; i++)
    alone[i] =
        post(s, "/v1/completions", {{"prompt", prompts[i]}, {"max_tokens", 12}, {"temperature", 0}},
             200)["choices"][0]["text"];
  std::vector<std::thread> clients;
  for (int i = 0; i < n; i++) {
    clients.emplace_back([&, i] {
      auto c = s.client();
      json body = {
          {"prompt", prompts[i]}, {"max_tokens", 12}, {"temperature", 0}, {"stream", i % 2 == 0}};
      auto res = c.Post("/v1/completions", body.dump(), "application/json");
      if (!res) {
        together[i] =
            "(no response to " + std::to_string(i) + ": " + httplib::to_string(res.error()) + ")";
        return;
      }
      if (res->status != 200) {
        together[i] = "(status " + std::to_string(res->status) + ": " + res->body + ")";
        return;
      }
      if (i % 2 == 1) {
        together[i] = json::parse(res->body)["choices"][0]["text"];
      } else {
        for (const auto& d : sse_data(res->body))
          if (d != "[DONE]") together[i] += json::parse(d)["choices"][0]["text"].get<std::string>();
      }
    });
  }
  for (auto& t : clients) t.join();
  for (int i = 0; i < n; i++) CHECK(together[i] == alone[i]);
}

TEST_CASE("server: a client leaving mid-stream cancels its request", "[server]") {
  TestServer s;
  json body = chat_body("go on and on", 1);
  body["max_tokens"] = nullptr;
  body["stream"] = true;
  {
    auto c = s.client();
    int chunks = 0;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/chat/completions";
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };
    c.send(req);
    CHECK(chunks == 3);
  }
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while ((s.engine->stats().running > 0 || s.engine->stats().pages_used > 0) &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  CHECK(s.engine->stats().running == 0);
  CHECK(s.engine->stats().pages_used == 0);
  CHECK(s.engine->stats().generated_tokens < 200);  // it did not run to the end of the context
}

// Sends `request` on a new connection and returns the response (or what came in 10 s:
// a hang shows as an empty or partial answer).
std::string raw_exchange(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(write(fd, request.data(), request.size()) == ssize_t(request.size()));
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) {
    got.append(buf, static_cast<size_t>(n));
    // One whole response (headers, then Content-Length bytes) is enough.
    const size_t end = got.find("\r\n\r\n"), cl = got.find("Content-Length: ");
    if (end != std::string::npos && cl != std::string::npos && cl < end &&
        got.size() >= end + 4 + std::stoul(got.substr(cl + 16)))
      break;
  }
  close(fd);
  return got;
}

// Bodies whose size httplib 0.11 would not bound (chunked, a Content-Length over the
// limit that never arrives, none at all) are refused from their headers, and a known
// route asked with another method says which one it takes.
TEST_CASE("server: body framing and methods are checked from the headers", "[server]") {
  server::ServerOptions so;
  so.max_body = 4096;
  TestServer s({}, so);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n";
  std::string got =
      raw_exchange(s.port, head + "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"pro\r\n");
  CHECK_THAT(got, Catch::StartsWith("HTTP/1.1 411") && Catch::Contains("chunked bodies"));
  got = raw_exchange(s.port, head + "Content-Length: 100000000\r\n\r\n{");
  CHECK_THAT(got, Catch::StartsWith("HTTP/1.1 413") && Catch::Contains("larger than 4096"));
  got = raw_exchange(s.port, head + "Content-Length: -5\r\n\r\n");
  CHECK_THAT(got, Catch::StartsWith("HTTP/1.1 400") && Catch::Contains("invalid Content-Length"));
  got = raw_exchange(s.port, "POST /health HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK_THAT(got, Catch::StartsWith("HTTP/1.1 411"));
  // Each answered at once, not after a read timeout.
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));

  auto c = s.client();
  auto res = c.Get("/v1/chat/completions");
  REQUIRE(res);
  CHECK(res->status == 405);
  CHECK(res->get_header_value("Allow") == "POST");
  check_error_shape(json::parse(res->body));
  res = c.Delete("/v1/models");
  REQUIRE(res);
  CHECK(res->status == 405);
  CHECK(res->get_header_value("Allow") == "GET");
  post(s, "/v1/chat/completions", chat_body("still there?", 2), 200);
}

TEST_CASE("server: a slow client does not block the others", "[server]") {
  TestServer s;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(s.port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  const std::string partial =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro";
  REQUIRE(write(fd, partial.data(), partial.size()) == ssize_t(partial.size()));
  post(s, "/v1/chat/completions", chat_body("meanwhile", 3), 200);
  close(fd);
}

TEST_CASE("llmcli serve: listens, answers, and exits cleanly on SIGTERM", "[server][cli]") {
  int out_pipe[2];
  REQUIRE(pipe(out_pipe) == 0);
  const std::string cli = llm::test::cli_path();  // before the fork: no allocation after it
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(out_pipe[1], 1);
    close(out_pipe[0]);
    execl(cli.c_str(), cli.c_str(), "serve", tiny_model_path().c_str(), "--port", "0", "--device",
          "cpu", "--context-size", "128", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out_pipe[1]);
  FILE* out = fdopen(out_pipe[0], "r");
  char line[512];
  int port = 0;
  while (fgets(line, sizeof line, out)) {
    if (std::sscanf(line, "llmcli: listening on http://127.0.0.1:%d", &port) == 1) break;
  }
  REQUIRE(port > 0);
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  bool ready = false;
  for (int i = 0; i < 600 && !ready; i++) {
    auto h = c.Get("/health");
    ready = h && h->status == 200;
    if (!ready) std::this_thread::sleep_for(50ms);
  }
  REQUIRE(ready);
  auto res = c.Post("/v1/completions", json{{"prompt", "Hi"}, {"max_tokens", 3}}.dump(),
                    "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  kill(pid, SIGTERM);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  std::string rest;
  while (fgets(line, sizeof line, out)) rest += line;
  fclose(out);
  CHECK_THAT(rest, Catch::Contains("stopped"));
}

namespace {

// The JSON objects of an NDJSON body, one a line.
std::vector<json> ndjson(const std::string& body) {
  std::vector<json> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find('\n', pos);
    if (end == std::string::npos) end = body.size();
    if (end > pos) out.push_back(json::parse(body.substr(pos, end - pos)));
    pos = end + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("server: Ollama's routes (chat, generate, embed, tags, show, version)",
          "[server][ollama]") {
  TestServer s;
  auto c = s.client();
  const json chat = {{"model", "tiny"},
                     {"messages", json::array({{{"role", "user"}, {"content", "Hello"}}})},
                     {"options", {{"temperature", 0}, {"num_predict", 6}}}};
  // Not streamed: the message and Ollama's counts; the same text as OpenAI's route.
  json one = chat;
  one["stream"] = false;
  const json r = post(s, "/api/chat", one, 200);
  CHECK(r["done"] == true);
  CHECK(r["done_reason"] == "length");
  CHECK(r["message"]["role"] == "assistant");
  CHECK(r["eval_count"] == 6);
  CHECK(r["prompt_eval_count"].get<int>() > 0);
  CHECK(r["total_duration"].get<int64_t>() > 0);
  const json openai = post(s, "/v1/chat/completions", chat_body("Hello", 6), 200);
  CHECK(r["message"]["content"] == openai["choices"][0]["message"]["content"]);
  // Streamed by default: NDJSON pieces, then the last line with done.
  auto res = c.Post("/api/chat", chat.dump(), "application/json");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  CHECK_THAT(res->get_header_value("Content-Type"), Catch::Contains("application/x-ndjson"));
  const std::vector<json> lines = ndjson(res->body);
  REQUIRE(lines.size() >= 2);
  std::string text;
  for (size_t i = 0; i + 1 < lines.size(); i++) {
    CHECK(lines[i]["done"] == false);
    text += lines[i]["message"]["content"].get<std::string>();
  }
  CHECK(lines.back()["done"] == true);
  CHECK(lines.back()["eval_count"] == 6);
  CHECK(text == r["message"]["content"]);

  // Generate: through the chat template unless raw; raw is the completions route's text.
  const json gen = post(s, "/api/generate",
                        {{"prompt", "Once upon a time"},
                         {"raw", true},
                         {"stream", false},
                         {"options", {{"temperature", 0}, {"num_predict", 5}}}},
                        200);
  const json comp =
      post(s, "/v1/completions",
           {{"prompt", "Once upon a time"}, {"max_tokens", 5}, {"temperature", 0}}, 200);
  CHECK(gen["response"] == comp["choices"][0]["text"]);
  CHECK(gen["done"] == true);
  const json templated = post(s, "/api/generate",
                              {{"prompt", "Hello"},
                               {"stream", false},
                               {"options", {{"temperature", 0}, {"num_predict", 6}}}},
                              200);
  CHECK(templated["response"] == r["message"]["content"]);
  // format "json": one JSON object.
  const json js = post(s, "/api/chat",
                       {{"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})},
                        {"format", "json"},
                        {"stream", false},
                        {"options", {{"num_predict", 48}, {"seed", 3}}}},
                       200);
  if (js["done_reason"] == "stop")
    CHECK(json::parse(js["message"]["content"].get<std::string>()).is_object());

  // Embed: unit vectors, the same as /v1/embeddings'.
  const json emb = post(s, "/api/embed", {{"model", "tiny"}, {"input", {"a b c", "d e"}}}, 200);
  REQUIRE(emb["embeddings"].size() == 2);
  const json v1 = post(s, "/v1/embeddings", {{"input", "a b c"}}, 200);
  CHECK(emb["embeddings"][0] == v1["data"][0]["embedding"]);
  CHECK(emb["prompt_eval_count"].get<int>() > 0);
  const json legacy = post(s, "/api/embeddings", {{"prompt", "a b c"}}, 200);
  CHECK(legacy["embedding"].size() == emb["embeddings"][0].size());
  // truncate (the default) cuts an input to the context; false refuses it.
  const std::string huge(4000, 'z');
  CHECK(post(s, "/api/embed", {{"input", huge}}, 200)["embeddings"].size() == 1);
  CHECK(post(s, "/api/embed", {{"input", huge}, {"truncate", false}}, 400).contains("error"));

  // The model, as Ollama lists it.
  auto tags = c.Get("/api/tags");
  REQUIRE(tags);
  const json t = json::parse(tags->body);
  REQUIRE(t["models"].size() == 1);
  CHECK(t["models"][0]["name"] == "tiny");
  auto ver = c.Get("/api/version");
  REQUIRE(ver);
  CHECK(json::parse(ver->body).contains("version"));
  const json show = post(s, "/api/show", {{"model", "tiny"}}, 200);
  CHECK(show["model_info"]["llmrt.context_length"] == 256);
  CHECK(show["capabilities"].size() >= 2);
  auto ps = c.Get("/api/ps");
  REQUIRE(ps);
  CHECK(json::parse(ps->body)["models"].size() == 1);

  // An empty request loads the model (it is loaded): done at once.
  const json load = post(s, "/api/generate", {{"model", "tiny"}, {"prompt", ""}}, 200);
  CHECK(load["done"] == true);
  CHECK(load["done_reason"] == "load");
  CHECK(post(s, "/api/chat", {{"messages", json::array()}}, 200)["done_reason"] == "load");

  // Errors in Ollama's shape.
  CHECK(post(s, "/api/chat", {{"messages", "hi"}}, 400)["error"].is_string());
  CHECK(post(s, "/api/chat", {{"messages", json::array({{{"role", 5}, {"content", "x"}}})}},
             400)["error"]
            .is_string());
  CHECK(
      post(s, "/api/generate", {{"prompt", "x"}, {"images", {"AAAA"}}}, 400)["error"].is_string());
  const json format_five = {{"messages", json::array({{{"role", "user"}, {"content", "x"}}})},
                            {"format", 5}};
  CHECK(post(s, "/api/chat", format_five, 400)["error"].is_string());
  auto bad = c.Post("/api/chat", "{\"messages\": [", "application/json");
  REQUIRE(bad);
  CHECK(bad->status == 400);
  CHECK(json::parse(bad->body).contains("error"));
}

TEST_CASE("server: fill in the middle through /v1/completions' suffix and Ollama's",
          "[server][infill]") {
  TestServer s({}, {}, false);
  s.load({}, test::tiny_code_model());
  const std::string before = "def area(r):\n    return ", after = "\n\nprint(area(2))\n";
  const InfillPrompt p = build_infill_prompt(*s.tok, {before, after, {}}, 200);
  // The reply is the completion of the FIM prompt's ids.
  const json by_ids = post(s, "/v1/completions",
                           {{"prompt", p.tokens}, {"max_tokens", 6}, {"temperature", 0}}, 200);
  const json fim =
      post(s, "/v1/completions",
           {{"prompt", before}, {"suffix", after}, {"max_tokens", 6}, {"temperature", 0}}, 200);
  CHECK(fim["choices"][0]["text"] == by_ids["choices"][0]["text"]);
  CHECK(fim["usage"]["prompt_tokens"] == static_cast<int>(p.tokens.size()));
  // Other files (llama.cpp's input_extra) go before the prefix.
  const InfillPrompt px =
      build_infill_prompt(*s.tok, {before, after, {{"util.py", "PI = 3"}}}, 200);
  const json extra = post(s, "/v1/completions",
                          {{"prompt", before},
                           {"suffix", after},
                           {"input_extra", {{{"filename", "util.py"}, {"text", "PI = 3"}}}},
                           {"max_tokens", 2},
                           {"temperature", 0}},
                          200);
  CHECK(extra["usage"]["prompt_tokens"] == static_cast<int>(px.tokens.size()));
  // Ollama's /api/generate with a suffix: the same middle, no chat template.
  const json ollama = post(s, "/api/generate",
                           {{"model", "tiny"},
                            {"prompt", before},
                            {"suffix", after},
                            {"stream", false},
                            {"options", {{"temperature", 0}, {"num_predict", 6}}}},
                           200);
  CHECK(ollama["response"] == fim["choices"][0]["text"]);
  CHECK(ollama["prompt_eval_count"] == static_cast<int>(p.tokens.size()));

  // stop_token_ids (vLLM's): the reply ends at the first of them.
  GenerationRequest g;
  g.prompt = p.tokens;
  g.max_tokens = 6;
  g.sampling.temperature = 0;
  auto stream = s.engine->submit(g);
  std::vector<int32_t> ids;
  for (GenerationEvent ev = stream->next();; ev = stream->next()) {
    ids.insert(ids.end(), ev.tokens.begin(), ev.tokens.end());
    if (ev.finish != FinishReason::None) break;
  }
  REQUIRE(ids.size() == 6);
  const auto first = std::find(ids.begin(), ids.end(), ids[3]) - ids.begin();
  const json cut = post(
      s, "/v1/completions",
      {{"prompt", p.tokens}, {"max_tokens", 6}, {"temperature", 0}, {"stop_token_ids", {ids[3]}}},
      200);
  CHECK(cut["choices"][0]["finish_reason"] == "stop");
  CHECK(cut["usage"]["completion_tokens"] == first + 1);

  check_error_shape(post(s, "/v1/completions", {{"prompt", {1, 2}}, {"suffix", "x"}}, 400));
  check_error_shape(post(s, "/v1/completions", {{"prompt", "a"}, {"suffix", 3}}, 400));
  check_error_shape(
      post(s, "/v1/completions", {{"prompt", "a"}, {"suffix", "b"}, {"input_extra", "x"}}, 400));
  check_error_shape(
      post(s, "/v1/completions", {{"prompt", "a"}, {"input_extra", json::array()}}, 400));
  check_error_shape(post(s, "/v1/completions", {{"prompt", "a"}, {"stop_token_ids", {-1}}}, 400));
  check_error_shape(post(s, "/v1/completions", {{"prompt", "a"}, {"stop_token_ids", 5}}, 400));
  CHECK(post(s, "/api/generate", {{"prompt", "a"}, {"suffix", 1}}, 400)["error"].is_string());
}

TEST_CASE("server: a suffix to a model without FIM tokens is a 400 that says so",
          "[server][infill]") {
  TestServer s;
  const json e = post(s, "/v1/completions", {{"prompt", "a"}, {"suffix", "b"}}, 400);
  check_error_shape(e);
  CHECK_THAT(e["error"]["message"].get<std::string>(),
             Catch::Contains("no fill-in-the-middle tokens"));
  CHECK(e["error"]["param"] == "suffix");
  const json o =
      post(s, "/api/generate", {{"prompt", "a"}, {"suffix", "b"}, {"stream", false}}, 400);
  CHECK_THAT(o["error"].dump(), Catch::Contains("no fill-in-the-middle tokens"));
}

TEST_CASE("server: llama.cpp's /completion and /infill, streamed and not", "[server][llama]") {
  TestServer s({}, {}, false);
  s.load({}, test::tiny_code_model());
  auto c = s.client();
  const std::string prompt = "def add(a, b):\n";
  const json openai =
      post(s, "/v1/completions", {{"prompt", prompt}, {"max_tokens", 6}, {"temperature", 0}}, 200);
  const std::string expect = openai["choices"][0]["text"];

  const json one =
      post(s, "/completion", {{"prompt", prompt}, {"n_predict", 6}, {"temperature", 0}}, 200);
  CHECK(one["content"] == expect);
  CHECK(one["stop"] == true);
  CHECK(one["stop_type"] == "limit");
  CHECK(one["tokens_predicted"] == 6);
  CHECK(one["tokens_evaluated"] == openai["usage"]["prompt_tokens"]);
  CHECK(one["timings"]["predicted_n"] == 6);
  CHECK(one["timings"]["prompt_ms"].get<double>() > 0);
  // Token ids as the prompt, and /completions (llama-server's other name for it).
  const std::vector<int32_t> ids = s.tok->encode(prompt, true);
  const json by_ids =
      post(s, "/completions", {{"prompt", ids}, {"n_predict", 6}, {"temperature", 0}}, 200);
  CHECK(by_ids["content"] == expect);

  // Streamed: events of content pieces, the last with stop and timings, no [DONE].
  auto res = c.Post(
      "/completion",
      json{{"prompt", prompt}, {"n_predict", 6}, {"temperature", 0}, {"stream", true}}.dump(),
      "application/json");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const std::vector<std::string> data = sse_data(res->body);
  REQUIRE(data.size() >= 2);
  std::string text;
  for (size_t i = 0; i + 1 < data.size(); i++) {
    const json e = json::parse(data[i]);
    CHECK(e["stop"] == false);
    text += e["content"].get<std::string>();
  }
  const json last = json::parse(data.back());
  CHECK(last["stop"] == true);
  CHECK(last["tokens_predicted"] == 6);
  CHECK(text == expect);

  // A stop string: stop_type word, stopping_word it.
  size_t at = 1;
  while (at + 2 <= expect.size() && expect.find(expect.substr(at, 2)) != at) at++;
  if (at + 2 <= expect.size() && !(expect[at] & 0x80) && !(expect[at + 1] & 0x80)) {
    const json word = post(s, "/completion",
                           {{"prompt", prompt},
                            {"n_predict", 6},
                            {"temperature", 0},
                            {"stop", {expect.substr(at, 2)}}},
                           200);
    CHECK(word["stop_type"] == "word");
    CHECK(word["stopping_word"] == expect.substr(at, 2));
    CHECK(word["content"] == expect.substr(0, at));
  } else {
    WARN("no two ASCII characters that first occur after the start: stop word unchecked");
  }

  // /infill: input_prefix, then prompt (the cursor's line), before the cursor.
  const json fim = post(s, "/v1/completions",
                        {{"prompt", "def area(r):\n    return "},
                         {"suffix", "\n"},
                         {"input_extra", {{{"filename", "m.py"}, {"text", "PI = 3"}}}},
                         {"max_tokens", 6},
                         {"temperature", 0}},
                        200);
  const json infill = post(s, "/infill",
                           {{"input_prefix", "def area(r):\n"},
                            {"prompt", "    return "},
                            {"input_suffix", "\n"},
                            {"input_extra", {{{"filename", "m.py"}, {"text", "PI = 3"}}}},
                            {"n_predict", 6},
                            {"temperature", 0}},
                           200);
  CHECK(infill["content"] == fim["choices"][0]["text"]);
  CHECK(infill["tokens_evaluated"] == fim["usage"]["prompt_tokens"]);
  // n_predict 0 (a client warming the cache): nothing generated, the prompt counted.
  const json warm = post(s, "/infill", {{"input_prefix", "x = "}, {"n_predict", 0}}, 200);
  CHECK(warm["content"] == "");
  CHECK(warm["tokens_predicted"] == 0);
  CHECK(warm["tokens_evaluated"].get<int>() > 0);

  // What it cannot serve is 400 in llama-server's error shape.
  for (const json& bad :
       {json{{"prompt", "a"}, {"grammar", "root ::= \"a\""}}, json{{"prompt", "a"}, {"n_probs", 3}},
        json{{"n_predict", 2}}, json{{"prompt", "a"}, {"ignore_eos", true}},
        json{{"prompt", "a"}, {"logit_bias", {{1}}}}, json{{"prompt", "a"}, {"stream", "yes"}}}) {
    const json e = post(s, "/completion", bad, 400);
    CHECK(e["error"]["code"] == 400);
    CHECK(e["error"]["message"].is_string());
  }
  auto malformed = c.Post("/infill", "{\"input_prefix\": ", "application/json");
  REQUIRE(malformed);
  CHECK(malformed->status == 400);
}

TEST_CASE("server: /infill to a model without FIM tokens says so", "[server][llama]") {
  TestServer s;
  const json e = post(s, "/infill", {{"input_prefix", "a"}, {"input_suffix", "b"}}, 400);
  CHECK_THAT(e["error"]["message"].get<std::string>(),
             Catch::Contains("no fill-in-the-middle tokens"));
  // /completion works with any model.
  const json ok = post(s, "/completion", {{"prompt", "Hello"}, {"n_predict", 2}}, 200);
  CHECK(ok["tokens_predicted"] == 2);
}

namespace {

// The named events of an Anthropic stream: (event, data) in order.
std::vector<std::pair<std::string, json>> named_events(const std::string& body) {
  std::vector<std::pair<std::string, json>> out;
  size_t pos = 0;
  while ((pos = body.find("event: ", pos)) != std::string::npos) {
    const size_t nl = body.find('\n', pos);
    const std::string name = body.substr(pos + 7, nl - pos - 7);
    REQUIRE(body.compare(nl + 1, 6, "data: ") == 0);
    const size_t end = body.find("\n\n", nl);
    out.emplace_back(name, json::parse(body.substr(nl + 7, end - nl - 7)));
    pos = end;
  }
  return out;
}

}  // namespace

TEST_CASE("server: Anthropic's /v1/messages, streamed and not, tools, count_tokens",
          "[server][anthropic]") {
  test::TempDir dir;
  server::ServerOptions so;
  so.api_key = "sekret";
  TestServer s({}, so, false);
  load_templated(s, dir, "Qwen-Qwen2.5-7B-Instruct", 1024);
  const httplib::Headers key = {{"x-api-key", "sekret"}, {"anthropic-version", "2023-06-01"}};
  const httplib::Headers bearer = {{"Authorization", "Bearer sekret"}};
  auto tokens_of = [&](const json& anthropic) {
    return post(s, "/v1/messages/count_tokens", anthropic, 200, key)["input_tokens"].get<int>();
  };
  auto openai_tokens = [&](json openai) {
    openai["max_tokens"] = 1;
    return post(s, "/v1/chat/completions", openai, 200, bearer)["usage"]["prompt_tokens"]
        .get<int>();
  };

  // The same conversation in both APIs renders the same prompt: a system prompt, text
  // blocks, tools, an assistant's tool_use and the user's tool_result.
  const json schema = {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}};
  const json a = {
      {"model", "tiny"},
      {"max_tokens", 8},
      {"system", json::array({{{"type", "text"}, {"text", "Be brief."}}})},
      {"tools", json::array({{{"name", "get_weather"},
                              {"description", "Weather of a city"},
                              {"input_schema", schema}}})},
      {"messages",
       json::array({{{"role", "user"}, {"content", "weather in Paris?"}},
                    {{"role", "assistant"},
                     {"content", json::array({{{"type", "text"}, {"text", "Let me look."}},
                                              {{"type", "tool_use"},
                                               {"id", "toolu_1"},
                                               {"name", "get_weather"},
                                               {"input", {{"city", "Paris"}}}}})}},
                    {{"role", "user"},
                     {"content", json::array({{{"type", "tool_result"},
                                               {"tool_use_id", "toolu_1"},
                                               {"content", "18 C"}},
                                              {{"type", "text"}, {"text", "And tomorrow?"}}})}}})}};
  const json o = {
      {"tools", json::array({{{"type", "function"},
                              {"function",
                               {{"name", "get_weather"},
                                {"description", "Weather of a city"},
                                {"parameters", schema}}}}})},
      {"messages",
       json::array({{{"role", "system"}, {"content", "Be brief."}},
                    {{"role", "user"}, {"content", "weather in Paris?"}},
                    {{"role", "assistant"},
                     {"content", "Let me look."},
                     {"tool_calls", json::array({{{"id", "toolu_1"},
                                                  {"type", "function"},
                                                  {"function",
                                                   {{"name", "get_weather"},
                                                    {"arguments", {{"city", "Paris"}}}}}}})}},
                    {{"role", "tool"}, {"tool_call_id", "toolu_1"}, {"content", "18 C"}},
                    {{"role", "user"}, {"content", "And tomorrow?"}}})}};
  const int n = tokens_of(a);
  CHECK(n == openai_tokens(o));
  CHECK(n > 60);

  // Not streamed: a message with a text block, stop_reason and usage; the text of the
  // OpenAI route at temperature 0.
  json ask = {{"max_tokens", 8},
              {"temperature", 0},
              {"messages", json::array({{{"role", "user"}, {"content", "Hello"}}})}};
  const json m = post(s, "/v1/messages", ask, 200, key);
  CHECK(m["type"] == "message");
  CHECK(m["role"] == "assistant");
  CHECK(m["id"].get<std::string>().rfind("msg_", 0) == 0);
  CHECK(m["stop_reason"] == "max_tokens");
  CHECK(m["usage"]["output_tokens"] == 8);
  CHECK(m["usage"]["input_tokens"] == tokens_of(ask));
  json same = post(s, "/v1/chat/completions",
                   {{"max_tokens", 8},
                    {"temperature", 0},
                    {"messages", json::array({{{"role", "user"}, {"content", "Hello"}}})}},
                   200, bearer);
  const std::string text = same["choices"][0]["message"]["content"];
  REQUIRE(m["content"].size() == 1);
  CHECK(m["content"][0]["type"] == "text");
  CHECK(m["content"][0]["text"] == text);

  // Streamed: message_start, one text block, message_delta, message_stop.
  ask["stream"] = true;
  auto c = s.client();
  auto res = c.Post("/v1/messages", key, ask.dump(), "application/json");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const auto ev = named_events(res->body);
  REQUIRE(ev.size() >= 6);
  CHECK(ev[0].first == "message_start");
  // The same prompt again: the prefix cache held its whole pages.
  const json& start_usage = ev[0].second["message"]["usage"];
  CHECK(start_usage["input_tokens"].get<int>() +
            start_usage["cache_read_input_tokens"].get<int>() ==
        m["usage"]["input_tokens"].get<int>() + m["usage"]["cache_read_input_tokens"].get<int>());
  CHECK(start_usage["cache_read_input_tokens"].get<int>() > 0);
  CHECK(start_usage["cache_creation_input_tokens"] == 0);
  CHECK(ev[1].first == "content_block_start");
  CHECK(ev[1].second["content_block"]["type"] == "text");
  std::string streamed_text;
  size_t i = 2;
  for (; i < ev.size() && ev[i].first == "content_block_delta"; i++) {
    CHECK(ev[i].second["index"] == 0);
    streamed_text += ev[i].second["delta"]["text"].get<std::string>();
  }
  CHECK(streamed_text == text);
  REQUIRE(i + 3 == ev.size());
  CHECK(ev[i].first == "content_block_stop");
  CHECK(ev[i + 1].first == "message_delta");
  CHECK(ev[i + 1].second["delta"]["stop_reason"] == "max_tokens");
  CHECK(ev[i + 1].second["usage"]["output_tokens"] == 8);
  CHECK(ev[i + 2].first == "message_stop");

  // A stop sequence ends the message there: stop_reason stop_sequence, and which one.
  size_t at = 1;
  while (at + 2 <= text.size() && text.find(text.substr(at, 2)) != at) at++;
  if (at + 2 <= text.size() && !(text[at] & 0x80) && !(text[at + 1] & 0x80)) {
    json stop = ask;
    stop["stream"] = false;
    stop["stop_sequences"] = {text.substr(at, 2)};
    const json st = post(s, "/v1/messages", stop, 200, key);
    CHECK(st["stop_reason"] == "stop_sequence");
    CHECK(st["stop_sequence"] == text.substr(at, 2));
    CHECK(st["content"][0]["text"] == text.substr(0, at));
    stop["stream"] = true;
    auto sr = c.Post("/v1/messages", key, stop.dump(), "application/json");
    REQUIRE(sr);
    bool seen = false;
    for (const auto& [name, data] : named_events(sr->body))
      if (name == "message_delta") {
        seen = true;
        CHECK(data["delta"]["stop_reason"] == "stop_sequence");
        CHECK(data["delta"]["stop_sequence"] == text.substr(at, 2));
      }
    CHECK(seen);
  } else {
    WARN("no two ASCII characters that first occur after the start: stop sequence unchecked");
  }

  // A forced tool: a tool_use block with its input, stop_reason tool_use; streamed, the
  // input as one input_json_delta.
  json call = a;
  call["max_tokens"] = 512;  // the random model writes much whitespace inside the call
  call["temperature"] = 0;
  call["messages"] = json::array({{{"role", "user"}, {"content", "weather in Paris?"}}});
  call["tools"].push_back({{"name", "set_unit"},
                           {"input_schema",
                            {{"type", "object"},
                             {"properties", {{"unit", {{"enum", {"c", "f"}}}}}},
                             {"required", {"unit"}},
                             {"additionalProperties", false}}}});
  call["tool_choice"] = {{"type", "tool"}, {"name", "set_unit"}};
  const json used = post(s, "/v1/messages", call, 200, key);
  INFO(used.dump());
  CHECK(used["stop_reason"] == "tool_use");
  REQUIRE(used["content"].size() == 1);
  CHECK(used["content"][0]["type"] == "tool_use");
  CHECK(used["content"][0]["name"] == "set_unit");
  const json input = used["content"][0]["input"];
  CHECK((input == json{{"unit", "c"}} || input == json{{"unit", "f"}}));
  call["stream"] = true;
  res = c.Post("/v1/messages", key, call.dump(), "application/json");
  REQUIRE(res);
  const auto tev = named_events(res->body);
  std::string partial;
  bool tool_block = false;
  for (const auto& [name, data] : tev) {
    if (name == "content_block_start" && data["content_block"]["type"] == "tool_use") {
      tool_block = true;
      CHECK(data["content_block"]["name"] == "set_unit");
    }
    if (name == "content_block_delta" && data["delta"]["type"] == "input_json_delta")
      partial += data["delta"]["partial_json"].get<std::string>();
    if (name == "message_delta") CHECK(data["delta"]["stop_reason"] == "tool_use");
  }
  CHECK(tool_block);
  CHECK(json::parse(partial) == input);

  // Errors in Anthropic's shape.
  auto bad = [&](const json& body, const std::string& what) {
    const json e = post(s, "/v1/messages", body, 400, key);
    CHECK(e["type"] == "error");
    CHECK(e["error"]["type"] == "invalid_request_error");
    CHECK_THAT(e["error"]["message"].get<std::string>(), Catch::Contains(what));
  };
  bad({{"max_tokens", 4}}, "messages");
  bad({{"messages",
        json::array(
            {{{"role", "user"},
              {"content", json::array({{{"type", "image"}, {"source", json::object()}}})}}})}},
      "image blocks are not supported");
  bad({{"messages", json::array({{{"role", "system"}, {"content", "x"}}})}}, "role");
  json server_tool = ask;
  server_tool["stream"] = false;
  server_tool["tools"] = json::array({{{"type", "web_search_20250305"}, {"name", "web_search"}}});
  bad(server_tool, "only client tools");
  json choice = ask;
  choice["stream"] = false;
  choice["tool_choice"] = {{"type", "sometimes"}};
  bad(choice, "tool_choice");
  // The key: x-api-key or a bearer token; neither is 401.
  auto denied = c.Post("/v1/messages", ask.dump(), "application/json");
  REQUIRE(denied);
  CHECK(denied->status == 401);
  auto wrong = c.Post("/v1/messages", {{"x-api-key", "nope"}}, ask.dump(), "application/json");
  REQUIRE(wrong);
  CHECK(wrong->status == 401);
}

TEST_CASE("server: OpenAI's Responses API, streamed and not, function calls",
          "[server][responses]") {
  test::TempDir dir;
  TestServer s({}, {}, false);
  load_templated(s, dir, "Qwen-Qwen2.5-7B-Instruct", 1024);
  auto c = s.client();
  const json weather = {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}};
  const json unit = {{"type", "object"},
                     {"properties", {{"unit", {{"enum", {"c", "f"}}}}}},
                     {"required", {"unit"}},
                     {"additionalProperties", false}};

  // A conversation with instructions, a function call and its output renders the prompt
  // of the same chat conversation.
  const json input = json::array(
      {{{"role", "user"}, {"content", "weather in Paris?"}},
       {{"type", "function_call"},
        {"call_id", "call_1"},
        {"name", "get_weather"},
        {"arguments", "{\"city\":\"Paris\"}"}},
       {{"type", "function_call_output"}, {"call_id", "call_1"}, {"output", "18 C"}},
       {{"role", "user"},
        {"content", json::array({{{"type", "input_text"}, {"text", "And tomorrow?"}}})}}});
  const json tools = json::array({{{"type", "function"},
                                   {"name", "get_weather"},
                                   {"description", "Weather of a city"},
                                   {"parameters", weather}}});
  const json r = post(s, "/v1/responses",
                      {{"instructions", "Be brief."},
                       {"input", input},
                       {"tools", tools},
                       {"max_output_tokens", 6},
                       {"temperature", 0}},
                      200);
  // Sent in the translation's key order: the template writes the tools with tojson.
  using ojson = nlohmann::ordered_json;
  const ojson chat_body = {
      {"messages",
       ojson::array({{{"role", "user"}, {"content", "weather in Paris?"}},
                     {{"role", "assistant"},
                      {"content", ""},
                      {"tool_calls", ojson::array({{{"id", "call_1"},
                                                    {"type", "function"},
                                                    {"function",
                                                     {{"name", "get_weather"},
                                                      {"arguments", "{\"city\":\"Paris\"}"}}}}})}},
                     {{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", "18 C"}},
                     {{"role", "user"}, {"content", "And tomorrow?"}}})},
      {"tools", ojson::array({{{"type", "function"},
                               {"function",
                                {{"name", "get_weather"},
                                 {"description", "Weather of a city"},
                                 {"parameters", ojson(weather)}}}}})},
      {"max_tokens", 6},
      {"temperature", 0}};
  ojson with_system = chat_body;
  with_system["messages"].insert(with_system["messages"].begin(),
                                 ojson{{"role", "system"}, {"content", "Be brief."}});
  auto chat_res = c.Post("/v1/chat/completions", with_system.dump(), "application/json");
  REQUIRE(chat_res);
  REQUIRE(chat_res->status == 200);
  const json chat = json::parse(chat_res->body);
  CHECK(r["object"] == "response");
  CHECK(r["id"].get<std::string>().rfind("resp_", 0) == 0);
  CHECK(r["usage"]["input_tokens"] == chat["usage"]["prompt_tokens"]);
  CHECK(r["usage"]["output_tokens"] == 6);
  CHECK(r["status"] == "incomplete");
  CHECK(r["incomplete_details"]["reason"] == "max_output_tokens");
  REQUIRE(r["output"].size() == 1);
  CHECK(r["output"][0]["type"] == "message");
  CHECK(r["output"][0]["content"][0]["type"] == "output_text");
  CHECK(r["output"][0]["content"][0]["text"] == chat["choices"][0]["message"]["content"]);

  // Streamed: created, in_progress, the message item's events, incomplete at the end.
  auto res = c.Post(
      "/v1/responses",
      json{{"input", "Hello"}, {"max_output_tokens", 6}, {"temperature", 0}, {"stream", true}}
          .dump(),
      "application/json");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const auto ev = named_events(res->body);
  REQUIRE(ev.size() >= 8);
  CHECK(ev[0].first == "response.created");
  CHECK(ev[1].first == "response.in_progress");
  CHECK(ev[2].first == "response.output_item.added");
  CHECK(ev[3].first == "response.content_part.added");
  std::string text;
  for (size_t i = 0; i < ev.size(); i++) {
    CHECK(ev[i].second["sequence_number"] == static_cast<int>(i));
    CHECK(ev[i].second["type"] == ev[i].first);
    if (ev[i].first == "response.output_text.delta")
      text += ev[i].second["delta"].get<std::string>();
  }
  const json whole = post(s, "/v1/responses",
                          {{"input", "Hello"}, {"max_output_tokens", 6}, {"temperature", 0}}, 200);
  CHECK(text == whole["output"][0]["content"][0]["text"]);
  CHECK(ev.back().first == "response.incomplete");
  CHECK(ev.back().second["response"]["output"] == json::array({[&] {
          json item = whole["output"][0];
          item["id"] = ev.back().second["response"]["output"][0]["id"];
          return item;
        }()}));
  CHECK(ev[ev.size() - 2].first == "response.output_item.done");

  // A forced function call: a function_call item with JSON arguments; streamed, its
  // arguments events.
  json forced = {
      {"input", "weather in Paris?"},
      {"tools",
       json::array({tools[0], {{"type", "function"}, {"name", "set_unit"}, {"parameters", unit}}})},
      {"tool_choice", {{"type", "function"}, {"name", "set_unit"}}},
      {"max_output_tokens", 512},
      {"temperature", 0}};
  const json call = post(s, "/v1/responses", forced, 200);
  INFO(call.dump());
  CHECK(call["status"] == "completed");
  REQUIRE(call["output"].size() == 1);
  CHECK(call["output"][0]["type"] == "function_call");
  CHECK(call["output"][0]["name"] == "set_unit");
  const json args = json::parse(call["output"][0]["arguments"].get<std::string>());
  CHECK((args == json{{"unit", "c"}} || args == json{{"unit", "f"}}));
  forced["stream"] = true;
  res = c.Post("/v1/responses", forced.dump(), "application/json");
  REQUIRE(res);
  std::string streamed_args;
  for (const auto& [name, data] : named_events(res->body))
    if (name == "response.function_call_arguments.done") streamed_args = data["arguments"];
  CHECK(streamed_args == call["output"][0]["arguments"]);

  // What it cannot serve is 400 in OpenAI's shape.
  for (const json& bad :
       {json{{"input", "x"}, {"previous_response_id", 5}}, json{{"max_output_tokens", 2}},
        json{{"input", json::array({{{"role", "user"},
                                     {"content", json::array({{{"type", "input_image"}}})}}})}},
        json{{"input", "x"}, {"tools", json::array({{{"type", "web_search"}}})}},
        json{{"input", "x"}, {"text", {{"format", {{"type", "yaml"}}}}}}}) {
    check_error_shape(post(s, "/v1/responses", bad, 400));
  }
}

TEST_CASE("server: Responses API conversations continue stored responses", "[server][responses]") {
  test::TempDir dir;
  TestServer s({}, {}, false);
  load_templated(s, dir, "Qwen-Qwen2.5-7B-Instruct", 1024);
  auto c = s.client();
  auto text_of = [](const json& r) -> std::string {
    REQUIRE(r["output"].size() == 1);
    return r["output"][0]["content"][0]["text"];
  };
  auto chat = [&](const json& messages) {
    return post(s, "/v1/chat/completions",
                {{"messages", messages}, {"max_tokens", 5}, {"temperature", 0}}, 200);
  };
  const json first = post(s, "/v1/responses",
                          {{"instructions", "Be brief."},
                           {"input", "My name is Ada."},
                           {"max_output_tokens", 5},
                           {"temperature", 0}},
                          200);
  CHECK(first["store"] == true);
  CHECK(first["previous_response_id"].is_null());
  // The request's settings, repeated with OpenAI's defaults.
  CHECK(first["instructions"] == "Be brief.");
  CHECK(first["temperature"] == 0);
  CHECK(first["max_output_tokens"] == 5);
  CHECK(first["top_p"] == 1.0);
  CHECK(first["tool_choice"] == "auto");
  CHECK(first["tools"] == json::array());
  CHECK(first["metadata"] == json::object());
  CHECK(first["text"]["format"]["type"] == "text");
  auto got = c.Get(("/v1/responses/" + first["id"].get<std::string>()).c_str());
  REQUIRE(got);
  REQUIRE(got->status == 200);
  CHECK(json::parse(got->body) == first);

  // The next turn sees the first's input and output, not its instructions: the prompt
  // and the greedy reply of the same chat conversation.
  const json second = post(s, "/v1/responses",
                           {{"previous_response_id", first["id"]},
                            {"input", "What is my name?"},
                            {"max_output_tokens", 5},
                            {"temperature", 0}},
                           200);
  CHECK(second["previous_response_id"] == first["id"]);
  CHECK(second["instructions"].is_null());
  const json turns = json::array({{{"role", "user"}, {"content", "My name is Ada."}},
                                  {{"role", "assistant"}, {"content", text_of(first)}},
                                  {{"role", "user"}, {"content", "What is my name?"}}});
  const json same = chat(turns);
  CHECK(second["usage"]["input_tokens"] == same["usage"]["prompt_tokens"]);
  CHECK(text_of(second) == same["choices"][0]["message"]["content"]);

  // Streamed, the third turn is stored too, as its last event showed it.
  auto res = c.Post("/v1/responses",
                    json{{"previous_response_id", second["id"]},
                         {"input", "Again?"},
                         {"max_output_tokens", 5},
                         {"temperature", 0},
                         {"stream", true}}
                        .dump(),
                    "application/json");
  REQUIRE(res);
  REQUIRE(res->status == 200);
  const json third = named_events(res->body).back().second["response"];
  got = c.Get(("/v1/responses/" + third["id"].get<std::string>()).c_str());
  REQUIRE(got);
  REQUIRE(got->status == 200);
  CHECK(json::parse(got->body) == third);
  json longer = turns;
  longer.push_back({{"role", "assistant"}, {"content", text_of(second)}});
  longer.push_back({{"role", "user"}, {"content", "Again?"}});
  CHECK(third["usage"]["input_tokens"] == chat(longer)["usage"]["prompt_tokens"]);

  // Its input, as OpenAI lists it back: most recent first unless asked, in pages.
  auto items = [&](const json& r, const std::string& query) {
    auto res =
        c.Get(("/v1/responses/" + r["id"].get<std::string>() + "/input_items" + query).c_str());
    REQUIRE(res);
    INFO(res->body);
    return std::make_pair(res->status, json::parse(res->body));
  };
  auto [status, listed] = items(first, "");
  REQUIRE(status == 200);
  CHECK(listed["object"] == "list");
  REQUIRE(listed["data"].size() == 1);
  CHECK(listed["data"][0]["role"] == "user");
  CHECK(listed["data"][0]["content"][0] ==
        json{{"type", "input_text"}, {"text", "My name is Ada."}});
  CHECK(listed["first_id"] == listed["data"][0]["id"]);
  const json three = post(s, "/v1/responses",
                          {{"input", json::array({{{"role", "user"}, {"content", "a"}},
                                                  {{"role", "assistant"}, {"content", "b"}},
                                                  {{"role", "user"}, {"content", "c"}}})},
                           {"max_output_tokens", 1}},
                          200);
  auto [s1, page1] = items(three, "?order=asc&limit=2");
  REQUIRE(s1 == 200);
  REQUIRE(page1["data"].size() == 2);
  CHECK(page1["data"][0]["content"][0]["text"] == "a");
  CHECK(page1["has_more"] == true);
  auto [s2, page2] = items(three, "?order=asc&after=" + page1["last_id"].get<std::string>());
  REQUIRE(s2 == 200);
  REQUIRE(page2["data"].size() == 1);
  CHECK(page2["data"][0]["content"][0]["text"] == "c");
  CHECK(page2["has_more"] == false);
  CHECK(items(three, "").second["data"][0]["content"][0]["text"] == "c");  // desc
  CHECK(items(three, "?limit=0").first == 400);
  CHECK(items(three, "?order=up").first == 400);

  // store: false keeps nothing; a response dropped (or never stored) is 404, and the
  // turns after it still hold its part of the conversation.
  const json unstored =
      post(s, "/v1/responses",
           {{"input", "x"}, {"store", false}, {"max_output_tokens", 1}, {"metadata", {{"k", "v"}}}},
           200);
  CHECK(unstored["store"] == false);
  CHECK(unstored["metadata"] == json{{"k", "v"}});
  got = c.Get(("/v1/responses/" + unstored["id"].get<std::string>()).c_str());
  REQUIRE(got);
  CHECK(got->status == 404);
  check_error_shape(json::parse(got->body));
  auto dropped = c.Delete(("/v1/responses/" + first["id"].get<std::string>()).c_str());
  REQUIRE(dropped);
  REQUIRE(dropped->status == 200);
  CHECK(json::parse(dropped->body) ==
        json{{"id", first["id"]}, {"object", "response"}, {"deleted", true}});
  dropped = c.Delete(("/v1/responses/" + first["id"].get<std::string>()).c_str());
  REQUIRE(dropped);
  CHECK(dropped->status == 404);
  check_error_shape(
      post(s, "/v1/responses", {{"previous_response_id", first["id"]}, {"input", "x"}}, 404));
  const json after = post(s, "/v1/responses",
                          {{"previous_response_id", second["id"]},
                           {"input", "Again?"},
                           {"max_output_tokens", 5},
                           {"temperature", 0}},
                          200);
  CHECK(after["usage"]["input_tokens"] == third["usage"]["input_tokens"]);
  // The same conversation again: its whole pages came from the prefix cache.
  CHECK(after["usage"]["input_tokens_details"]["cached_tokens"].get<int>() >=
        third["usage"]["input_tokens"].get<int>() - 17);
  CHECK(text_of(after) == text_of(third));
}

TEST_CASE("server: usage reports the prompt tokens the prefix cache held", "[server]") {
  TestServer s;
  std::string text;
  for (int i = 0; i < 12; i++) text += "the quick brown fox jumps over the lazy dog ";
  const json body = {{"prompt", text}, {"max_tokens", 2}, {"temperature", 0}};
  const json first = post(s, "/v1/completions", body, 200);
  CHECK(first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0);
  // The same prompt again: whole pages of it (16 tokens each) come from the cache.
  const json again = post(s, "/v1/completions", body, 200);
  const int prompt = again["usage"]["prompt_tokens"],
            cached = again["usage"]["prompt_tokens_details"]["cached_tokens"];
  INFO(prompt << " prompt tokens, " << cached << " cached");
  CHECK(prompt > 32);
  CHECK(cached >= prompt - 16 - 1);
  CHECK(cached < prompt);
  CHECK(cached % 16 == 0);
  CHECK(again["choices"][0]["text"] == first["choices"][0]["text"]);
  // llama.cpp's route: tokens_cached, and prompt_n counting only the tokens run.
  const json llama = post(s, "/completion", {{"prompt", text}, {"n_predict", 2}}, 200);
  CHECK(llama["tokens_cached"] == cached);
  CHECK(llama["timings"]["cache_n"] == cached);
  CHECK(llama["timings"]["prompt_n"] == prompt - cached);
}

TEST_CASE("server: Responses truncation auto drops the oldest turns to fit the context",
          "[server][responses]") {
  test::TempDir dir;
  TestServer s({}, {}, false);
  load_templated(s, dir, "Qwen-Qwen2.5-7B-Instruct", 384);
  std::string words, more;
  for (int i = 0; i < 40; i++) words += "word ";
  for (int i = 0; i < 80; i++) more += "word ";
  // Three chained turns of about 85 tokens each, then one of 80 words (about 160): that
  // no longer fits 384 tokens with room for its 8 output tokens, unless the oldest turns
  // go.
  json previous;
  for (int turn = 0; turn < 3; turn++) {
    json body = {{"input", words}, {"max_output_tokens", 8}, {"temperature", 0}};
    if (turn > 0) body["previous_response_id"] = previous["id"];
    previous = post(s, "/v1/responses", body, 200);
  }
  const json next = {{"previous_response_id", previous["id"]},
                     {"input", more},
                     {"max_output_tokens", 8},
                     {"temperature", 0}};
  check_error_shape(post(s, "/v1/responses", next, 400));
  json auto_next = next;
  auto_next["truncation"] = "auto";
  const json r = post(s, "/v1/responses", auto_next, 200);
  CHECK(r["truncation"] == "auto");
  CHECK(r["usage"]["input_tokens"].get<int>() + 8 < 384);
  CHECK(r["usage"]["input_tokens"].get<int>() > 160);  // the new input stayed
  auto_next["truncation"] = "sometimes";
  check_error_shape(post(s, "/v1/responses", auto_next, 400));
}

TEST_CASE("server: Responses truncation keeps the system message and whole tool turns",
          "[server][responses]") {
  using ojson = nlohmann::ordered_json;
  ojson m = ojson::array(
      {{{"role", "system"}, {"content", "s"}},
       {{"role", "assistant"}, {"content", ""}, {"tool_calls", ojson::array({{{"id", "c1"}}})}},
       {{"role", "tool"}, {"tool_call_id", "c1"}, {"content", "r"}},
       {{"role", "user"}, {"content", "u"}}});
  REQUIRE(server::drop_oldest_turn(m));
  REQUIRE(m.size() == 2);
  CHECK(m[0]["role"] == "system");
  CHECK(m[1]["role"] == "user");
  CHECK_FALSE(server::drop_oldest_turn(m));  // the last message stays
}

TEST_CASE("server: the response store keeps the most recent responses", "[server][responses]") {
  server::ResponseStore store(2);
  auto turn = [](std::shared_ptr<const server::ConversationTurn> previous, const char* text) {
    auto t = std::make_shared<server::ConversationTurn>();
    t->previous = std::move(previous);
    t->messages.push_back({{"role", "user"}, {"content", text}});
    return t;
  };
  const auto a = turn(nullptr, "a"), b = turn(a, "b"), c = turn(b, "c");
  store.put("a", {json{{"id", "a"}}, a});
  store.put("b", {json{{"id", "b"}}, b});
  store.put("c", {json{{"id", "c"}}, c});
  CHECK_FALSE(store.get("a"));  // the oldest, dropped for c
  REQUIRE(store.get("c"));
  CHECK(store.get("c")->response == json{{"id", "c"}});
  const nlohmann::ordered_json messages = server::conversation_messages(*store.get("c")->turn);
  REQUIRE(messages.size() == 3);
  CHECK(messages[0]["content"] == "a");
  CHECK(messages[2]["content"] == "c");
  CHECK(store.erase("b"));
  CHECK_FALSE(store.erase("b"));
  store.put("d", {json{{"id", "d"}}, nullptr});
  CHECK(store.get("c"));
  CHECK(store.get("d"));
  server::ResponseStore none(0);
  none.put("a", {json::object(), a});
  CHECK_FALSE(none.get("a"));
}

namespace {

// Every variant of body with one value (at any depth) replaced by one of another type.
std::vector<json> type_mutations(const json& body) {
  static const json kOthers[] = {5,
                                 -1,
                                 2.5,
                                 "x",
                                 nullptr,
                                 json::array(),
                                 json::object(),
                                 true,
                                 json::array({5}),
                                 json{{"a", 5}}};
  std::vector<json> out;
  std::function<void(const json::json_pointer&, const json&)> walk =
      [&](const json::json_pointer& at, const json& v) {
        if (!at.empty())
          for (const json& other : kOthers) {
            if (other == v) continue;
            json m = body;
            m[at] = other;
            out.push_back(std::move(m));
          }
        if (v.is_object())
          for (auto it = v.begin(); it != v.end(); ++it) walk(at / it.key(), it.value());
        if (v.is_array())
          for (size_t i = 0; i < v.size(); i++) walk(at / i, v[i]);
      };
  walk(json::json_pointer(), body);
  return out;
}

}  // namespace

TEST_CASE("server: a field of the wrong type anywhere is a 4xx, never a 500",
          "[server][anthropic][responses][llama]") {
  test::TempDir dir;
  TestServer s({}, {}, false);
  load_templated(s, dir, "Qwen-Qwen2.5-7B-Instruct", 512);
  auto c = s.client();
  const json schema = {{"type", "object"}, {"properties", {{"a", {{"type", "string"}}}}}};
  const std::vector<std::pair<std::string, json>> bodies = {
      {"/v1/messages",
       {{"max_tokens", 1},
        {"system", json::array({{{"type", "text"}, {"text", "s"}}})},
        {"tools", json::array({{{"name", "f"}, {"input_schema", schema}}})},
        {"tool_choice", {{"type", "auto"}}},
        {"thinking", {{"type", "disabled"}}},
        {"stop_sequences", {"x"}},
        {"messages", json::array({{{"role", "user"}, {"content", "hi"}},
                                  {{"role", "assistant"},
                                   {"content", json::array({{{"type", "tool_use"},
                                                             {"id", "t1"},
                                                             {"name", "f"},
                                                             {"input", {{"a", "b"}}}}})}},
                                  {{"role", "user"},
                                   {"content", json::array({{{"type", "tool_result"},
                                                             {"tool_use_id", "t1"},
                                                             {"content", "ok"}}})}}})}}},
      {"/v1/responses",
       {{"max_output_tokens", 1},
        {"instructions", "s"},
        {"tools", json::array({{{"type", "function"}, {"name", "f"}, {"parameters", schema}}})},
        {"tool_choice", "auto"},
        {"text", {{"format", {{"type", "text"}}}}},
        {"input",
         json::array(
             {{{"role", "user"}, {"content", "hi"}},
              {{"type", "function_call"}, {"call_id", "c1"}, {"name", "f"}, {"arguments", "{}"}},
              {{"type", "function_call_output"}, {"call_id", "c1"}, {"output", "ok"}}})}}},
      {"/completion",
       {{"prompt", "hi"},
        {"n_predict", 1},
        {"temperature", 0.5},
        {"stop", {"x"}},
        {"logit_bias", json::array({json::array({1, 0.5})})}}},
      {"/infill",
       {{"input_prefix", "a"},
        {"input_suffix", "b"},
        {"input_extra", json::array({{{"filename", "f"}, {"text", "t"}}})},
        {"n_predict", 1}}},
      {"/v1/completions",
       {{"prompt", "a"},
        {"suffix", "b"},
        {"max_tokens", 1},
        {"stop_token_ids", {1}},
        {"input_extra", json::array({{{"filename", "f"}, {"text", "t"}}})}}},
      {"/api/generate",
       {{"prompt", "a"}, {"suffix", "b"}, {"stream", false}, {"options", {{"num_predict", 1}}}}},
      {"/v1/chat/completions",
       {{"max_tokens", 1},
        {"messages",
         json::array(
             {{{"role", "system"}, {"content", "s"}},
              {{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "hi"}}})}},
              {{"role", "assistant"},
               {"content", nullptr},
               {"tool_calls", json::array({{{"id", "c1"},
                                            {"type", "function"},
                                            {"function", {{"name", "f"}, {"arguments", "{}"}}}}})}},
              {{"role", "tool"}, {"tool_call_id", "c1"}, {"content", "ok"}}})},
        {"tools", json::array({{{"type", "function"},
                                {"function", {{"name", "f"}, {"parameters", schema}}}}})},
        {"tool_choice", {{"type", "function"}, {"function", {{"name", "f"}}}}},
        {"response_format", {{"type", "json_object"}}},
        {"stream_options", {{"include_usage", true}}},
        {"logit_bias", {{"1", 2}}},
        {"chat_template_kwargs", {{"x", 1}}}}},
      {"/api/chat",
       {{"stream", false},
        {"messages",
         json::array(
             {{{"role", "user"}, {"content", "hi"}},
              {{"role", "assistant"},
               {"content", ""},
               {"tool_calls",
                json::array({{{"function", {{"name", "f"}, {"arguments", {{"a", "b"}}}}}}})}},
              {{"role", "tool"}, {"content", "ok"}, {"tool_name", "f"}}})},
        {"tools", json::array({{{"type", "function"},
                                {"function", {{"name", "f"}, {"parameters", schema}}}}})},
        {"format", "json"},
        {"think", false},
        {"options", {{"num_predict", 1}, {"temperature", 0.5}, {"stop", {"x"}}}}}},
      {"/v1/embeddings", {{"input", json::array({"a", "b"})}, {"encoding_format", "float"}}},
      {"/api/embed", {{"input", json::array({"a"})}, {"truncate", true}}},
      {"/api/embeddings", {{"prompt", "a"}, {"model", "tiny"}}},
      {"/api/show", {{"model", "tiny"}}},
      {"/tokenize", {{"content", "a"}, {"add_special", true}, {"with_pieces", true}}},
      {"/detokenize", {{"tokens", {1, 2}}}},
      {"/v1/messages/count_tokens",
       {{"system", "s"},
        {"tools", json::array({{{"name", "f"}, {"input_schema", schema}}})},
        {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}}}};
  int requests = 0;
  std::vector<std::string> failures;  // path, body and answer of each 5xx
  for (const auto& [path, body] : bodies) {
    for (const json& m : type_mutations(body)) {
      json sent = m;
      // Whatever the mutation, answer in a few tokens.
      for (const char* key : {"max_tokens", "max_output_tokens", "n_predict"})
        if (sent.contains(key) && !sent[key].is_number_integer()) sent.erase(key);
      auto res = c.Post(path.c_str(), sent.dump(), "application/json");
      REQUIRE(res);
      if (res->status >= 500) failures.push_back(path + " " + sent.dump() + " -> " + res->body);
      requests++;
    }
  }
  CHECK(requests > 600);
  for (const std::string& f : failures) UNSCOPED_INFO(f);
  CHECK(failures.empty());
}
