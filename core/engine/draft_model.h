// Speculative decoding with a draft model: a small model of the same vocabulary follows a
// sequence in a Session of its own and proposes the tokens it would write greedily; the
// engine checks them in one step of the large model (as it checks prompt-lookup drafts,
// core/engine/ngram_draft.h) and keeps them up to the first one it would not have drawn.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "core/engine/session.h"
#include "core/model.h"

namespace llm {

class DraftModel {
 public:
  // Allocates one session's cache now, so that running out of memory shows at start-up.
  // Throws llm::Error for a model with a recurrent state (RWKV: it cannot take back the
  // tokens the large model rejects). target_vocab: the large model's ids; the two may pad
  // their embeddings differently (Qwen2.5-0.5B 151,936 rows, Qwen2.5-7B 152,064).
  DraftModel(Model& model, SessionOptions opts, int32_t target_vocab);

  // Up to n tokens the draft model writes greedily after `tokens` (sequence `id`'s so far):
  // its session first runs the tokens it has not seen, after taking back those that
  // differ (the drafts the large model rejected). Fewer near the end of the context, and
  // none past an id the other model lacks (a padding id).
  std::vector<int32_t> propose(uint64_t id, const std::vector<int32_t>& tokens, int n);
  // Forgets a finished sequence; its session (and cache) serves the next one.
  void drop(uint64_t id);
  size_t followed() const { return followers_.size(); }

 private:
  struct Follower {
    std::unique_ptr<Session> session;
    std::vector<int32_t> seen;  // the tokens whose cache rows the session holds
    bool off = false;           // the sequence holds an id the draft model lacks
  };
  Model& model_;
  SessionOptions opts_;
  int32_t target_vocab_;
  std::map<uint64_t, Follower> followers_;
  std::vector<std::unique_ptr<Session>> idle_;  // sessions of finished sequences
};

}  // namespace llm
