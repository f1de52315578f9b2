#include "core/engine/draft_model.h"

#include <algorithm>

#include "core/error.h"

namespace llm {

DraftModel::DraftModel(Model& model, SessionOptions opts, int32_t target_vocab)
    : model_(model), opts_(opts), target_vocab_(target_vocab) {
  idle_.push_back(std::make_unique<Session>(model_, opts_));
  if (idle_.back()->has_recurrent_state())
    fail("draft model: a recurrent state (%s) cannot take back rejected tokens",
         model_.config().model_type.c_str());
  // Its usual steps: the last draft and the model's own token after a draft kept whole
  // (2), or the model's token after a rejected one (1).
  idle_.back()->prepare(1);
  idle_.back()->prepare(2);
}

void DraftModel::drop(uint64_t id) {
  auto it = followers_.find(id);
  if (it == followers_.end()) return;
  it->second.session->reset();
  idle_.push_back(std::move(it->second.session));
  followers_.erase(it);
}

std::vector<int32_t> DraftModel::propose(uint64_t id, const std::vector<int32_t>& tokens, int n) {
  Follower& f = followers_[id];
  if (!f.session) {
    if (idle_.empty()) idle_.push_back(std::make_unique<Session>(model_, opts_));
    f.session = std::move(idle_.back());
    idle_.pop_back();
  }
  Session& s = *f.session;
  n = std::min(n, s.context_size() - static_cast<int>(tokens.size()));
  if (f.off || n <= 0 || tokens.empty()) return {};
  // The tokens it holds that the sequence still has; at least the last one runs again,
  // for its logits.
  size_t keep = 0;
  while (keep < f.seen.size() && keep < tokens.size() && f.seen[keep] == tokens[keep]) keep++;
  keep = std::min(keep, tokens.size() - 1);
  s.rewind(static_cast<int>(keep));
  f.seen.resize(keep);
  std::vector<int32_t> feed(tokens.begin() + static_cast<std::ptrdiff_t>(keep), tokens.end());
  const int32_t draft_vocab = model_.config().vocab_size;
  for (int32_t id : feed)
    if (id < 0 || id >= draft_vocab) {
      f.off = true;  // it cannot read the sequence any further
      return {};
    }
  // Queued a step ahead (Session::queue_greedy): the device does not wait for the host
  // between the draft's tokens.
  std::vector<int32_t> out;
  s.queue_greedy(feed);
  for (int i = 1; i < n; i++) out.push_back(s.queue_greedy_next());
  out.push_back(s.finish_greedy());
  f.seen.insert(f.seen.end(), feed.begin(), feed.end());
  f.seen.insert(f.seen.end(), out.begin(), out.end() - 1);
  // A draft id past the large model's vocabulary (its padding rows) cannot be checked.
  for (size_t i = 0; i < out.size(); i++)
    if (out[i] >= target_vocab_) {
      out.resize(i);
      break;
    }
  return out;
}

}  // namespace llm
