#include "server/response_store.h"

#include <vector>

namespace llm::server {

nlohmann::ordered_json conversation_messages(const ConversationTurn& turn) {
  std::vector<const ConversationTurn*> turns;
  for (const ConversationTurn* t = &turn; t; t = t->previous.get()) turns.push_back(t);
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (auto it = turns.rbegin(); it != turns.rend(); ++it)
    for (const auto& m : (*it)->messages) out.push_back(m);
  return out;
}

void ResponseStore::put(const std::string& id, StoredResponse r) {
  if (capacity_ == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto known = by_id_.find(id);
  if (known != by_id_.end()) {
    order_.erase(known->second.at);
    by_id_.erase(known);
  }
  while (by_id_.size() >= capacity_) {
    by_id_.erase(order_.front());
    order_.pop_front();
  }
  order_.push_back(id);
  by_id_.emplace(id, Entry{std::move(r), std::prev(order_.end())});
}

std::optional<StoredResponse> ResponseStore::get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return std::nullopt;
  return it->second.r;
}

bool ResponseStore::erase(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  order_.erase(it->second.at);
  by_id_.erase(it);
  return true;
}

}  // namespace llm::server
