// The OpenAI-compatible HTTP server (cpp-httplib): routes, API key, limits,
// streaming, metrics, graceful shutdown. Every request shares one Engine, so
// concurrent requests are batched together. The server listens before the
// model is loaded: /health answers 503 until set_ready().
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "core/chat/chat_prompt.h"
#include "core/engine/engine.h"
#include "core/tokenizer/tokenizer.h"
#include "server/metrics.h"

namespace httplib {
class Server;
}

namespace llm::server {

class ResponseStore;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;             // 0: any free port
  std::string api_key;         // empty: no authentication
  size_t max_body = 8u << 20;  // bytes
  std::string model_name = "llmrt";
  int threads = 0;               // HTTP worker threads; 0: enough for the engine's batch and queue
  double shutdown_grace_s = 10;  // in-flight requests get this long to finish on shutdown
  // Chat replies of templates that think (<think>...</think>) report the thinking as
  // reasoning_content, apart from the content; false keeps it in the content.
  bool split_reasoning = true;
  // Responses API responses kept for previous_response_id and GET /v1/responses/{id}
  // (the most recent; 0: none).
  size_t responses_stored = 1024;
};

// What /api/tags and /api/show say about the model (Ollama's routes).
struct ModelDetails {
  std::string family;        // the architecture (model_type)
  std::string format;        // "gguf", "safetensors" or "native"
  std::string quantization;  // as loaded ("q4f16_1", "q8_0", ...), empty: as stored
  size_t bytes = 0;          // weights on the device
};

class Server {
 public:
  explicit Server(ServerOptions opts);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the socket; returns the port. Throws llm::Error when it cannot.
  int bind();
  // Accepts connections until shutdown(); call from its own thread after bind().
  void serve();
  // The model is loaded: completions are served from now on. chat may be null
  // (no chat template): /v1/chat/completions then answers 400. pooling: how
  // /v1/embeddings pools a prompt's rows (None: it answers 400, as a vector per token is
  // not OpenAI's shape).
  void set_ready(Engine& engine, const Tokenizer& tokenizer, const ChatPrompt* chat,
                 Pooling pooling = Pooling::Mean, ModelDetails details = {});
  // Stops accepting requests, lets in-flight ones finish for the grace period,
  // cancels the rest, and stops serve(). Safe to call from any thread, twice.
  void shutdown();
  Metrics& metrics() { return metrics_; }
  struct Ready;  // what set_ready() gave, shared with the requests using it

 private:
  void routes();
  void ollama_routes();     // ollama_routes.cpp
  void llama_routes();      // llama_routes.cpp
  void anthropic_routes();  // anthropic_routes.cpp
  void responses_routes();  // responses_routes.cpp
  std::shared_ptr<Ready> ready() const;

  ServerOptions opts_;
  std::unique_ptr<httplib::Server> http_;
  std::unique_ptr<ResponseStore> responses_;
  Metrics metrics_;
  mutable std::mutex mu_;
  std::shared_ptr<Ready> ready_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> in_flight_{0};
  std::atomic<bool> shut_down_{false};
};

}  // namespace llm::server
