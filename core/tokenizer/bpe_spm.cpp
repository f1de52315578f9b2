#include <algorithm>

#include "core/tokenizer/bpe.h"
#include "core/tokenizer/unicode.h"

namespace llm {

namespace {

struct Symbol {
  uint32_t start, len;
  int32_t prev, next;
};

struct Bigram {
  float score;
  int32_t left, right;
  uint32_t size;  // byte length of the joined text when queued; stale if it changed
};

// Max-heap order: higher score first, then the leftmost pair.
struct BigramLess {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

void spm_tokenize(const Vocab& vocab, std::string_view text, std::vector<int32_t>* out) {
  thread_local std::vector<Symbol> syms;
  thread_local std::vector<Bigram> heap;
  syms.clear();
  heap.clear();
  for (uint32_t pos = 0; pos < text.size();) {
    const uint32_t len =
        std::min<uint32_t>(unicode::utf8_len(static_cast<uint8_t>(text[pos])), text.size() - pos);
    const int32_t idx = static_cast<int32_t>(syms.size());
    syms.push_back(Symbol{pos, len, idx - 1, -1});
    if (idx > 0) syms[idx - 1].next = idx;
    pos += len;
  }

  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = syms[left];
    const Symbol& r = syms[right];
    const std::string_view joined = text.substr(l.start, l.len + r.len);
    const int32_t id = vocab.find(joined);
    if (id < 0 || !vocab.mergeable(id)) return;
    heap.push_back(Bigram{vocab.score[id], left, right, l.len + r.len});
    std::push_heap(heap.begin(), heap.end(), BigramLess());
  };

  for (int32_t i = 1; i < static_cast<int32_t>(syms.size()); ++i) try_add(i - 1, i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), BigramLess());
    const Bigram bg = heap.back();
    heap.pop_back();
    Symbol& l = syms[bg.left];
    Symbol& r = syms[bg.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != bg.size) continue;  // outdated
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = bg.left;
    try_add(l.prev, bg.left);
    try_add(bg.left, l.next);
  }

  for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) {
    const Symbol& s = syms[i];
    const std::string_view piece = text.substr(s.start, s.len);
    const int32_t id = vocab.find(piece);
    if (id >= 0 && vocab.mergeable(id)) {
      out->push_back(id);
      continue;
    }
    for (char c : piece) {
      const int32_t b = vocab.byte_token[static_cast<uint8_t>(c)];
      if (b >= 0) {
        out->push_back(b);
      } else if (vocab.unk_id >= 0) {
        out->push_back(vocab.unk_id);
        break;  // one <unk> for the whole piece, as SentencePiece does
      }
    }
  }
}

}  // namespace llm
