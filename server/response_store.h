// The responses the Responses API keeps (`store`, true unless a request says false), for
// `previous_response_id` and GET / DELETE /v1/responses/{id}: in memory, the most recent
// `capacity` of them (the oldest dropped first), none across restarts.
#pragma once

#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>

namespace llm::server {

// One response's part of a conversation as chat messages: its input (instructions apart,
// as OpenAI does not carry them over) and its output, after the turns before it. Shared by
// the responses that continue it, so a long chain holds each message once.
struct ConversationTurn {
  std::shared_ptr<const ConversationTurn> previous;
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
};

// The conversation up to and including `turn`, oldest message first.
nlohmann::ordered_json conversation_messages(const ConversationTurn& turn);

struct StoredResponse {
  nlohmann::json response;  // the response object as it was sent
  std::shared_ptr<const ConversationTurn> turn;
  nlohmann::json input_items = nlohmann::json::array();  // its input, items with ids
};

class ResponseStore {
 public:
  explicit ResponseStore(size_t capacity) : capacity_(capacity) {}
  // Keeps r under id (nothing when the capacity is 0), dropping the oldest when full.
  void put(const std::string& id, StoredResponse r);
  std::optional<StoredResponse> get(const std::string& id) const;
  // Whether there was one to drop.
  bool erase(const std::string& id);
  size_t capacity() const { return capacity_; }

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::list<std::string> order_;  // ids, oldest first
  struct Entry {
    StoredResponse r;
    std::list<std::string>::iterator at;
  };
  std::unordered_map<std::string, Entry> by_id_;
};

}  // namespace llm::server
