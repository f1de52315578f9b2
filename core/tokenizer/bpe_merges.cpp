#include <algorithm>

#include "core/tokenizer/bpe.h"
#include "core/tokenizer/unicode.h"

namespace llm {

namespace {

struct Symbol {
  int32_t id;  // -1 once merged into its left neighbour
  int32_t prev, next;
};

struct Pair {
  int32_t rank;
  int32_t left, right;
  int32_t left_id, right_id, result;
};

// Min-heap order: lowest rank first, then the leftmost pair.
struct PairGreater {
  bool operator()(const Pair& a, const Pair& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

void push_symbol(std::vector<Symbol>* syms, int32_t id) {
  const int32_t idx = static_cast<int32_t>(syms->size());
  syms->push_back(Symbol{id, idx - 1, -1});
  if (idx > 0) (*syms)[idx - 1].next = idx;
}

}  // namespace

void bpe_tokenize_word(const Vocab& vocab, const BpeOptions& opt, std::string_view word,
                       std::vector<int32_t>* out) {
  if (word.empty()) return;
  if (opt.ignore_merges) {
    const int32_t id =
        opt.byte_level ? vocab.find(unicode::bytes_to_byte_level(word)) : vocab.find(word);
    if (id >= 0) {
      out->push_back(id);
      return;
    }
  }

  thread_local std::vector<Symbol> syms;
  thread_local std::vector<Pair> heap;
  syms.clear();
  heap.clear();
  if (opt.byte_level) {
    for (char c : word) {
      // A byte the vocab cannot spell (StarCoder has none for 0xF5-0xFF, which UTF-8
      // never uses) is dropped, as Hugging Face and llama.cpp do; <unk> is often the
      // end-of-text token in these vocabs and must not be injected.
      const int32_t id = vocab.byte_level_token[static_cast<uint8_t>(c)];
      if (id >= 0) push_symbol(&syms, id);
    }
  } else {
    bool prev_unk = false;
    for (size_t pos = 0; pos < word.size();) {
      const size_t len =
          std::min<size_t>(unicode::utf8_len(static_cast<uint8_t>(word[pos])), word.size() - pos);
      const std::string_view ch = word.substr(pos, len);
      pos += len;
      const int32_t id = vocab.find(ch);
      if (id >= 0) {
        push_symbol(&syms, id);
        prev_unk = false;
        continue;
      }
      bool all_bytes = opt.byte_fallback;
      for (size_t k = 0; all_bytes && k < ch.size(); ++k) {
        all_bytes = vocab.byte_token[static_cast<uint8_t>(ch[k])] >= 0;
      }
      if (all_bytes) {
        for (char c : ch) push_symbol(&syms, vocab.byte_token[static_cast<uint8_t>(c)]);
        prev_unk = false;
      } else if (vocab.unk_id >= 0 && !(opt.fuse_unk && prev_unk)) {
        push_symbol(&syms, vocab.unk_id);
        prev_unk = true;
      }
    }
  }

  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const MergeTable::Entry* m = vocab.merges.find(syms[left].id, syms[right].id);
    if (m == nullptr) return;
    heap.push_back(Pair{m->rank, left, right, syms[left].id, syms[right].id, m->result});
    std::push_heap(heap.begin(), heap.end(), PairGreater());
  };

  for (int32_t i = 1; i < static_cast<int32_t>(syms.size()); ++i) try_add(i - 1, i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), PairGreater());
    const Pair p = heap.back();
    heap.pop_back();
    Symbol& l = syms[p.left];
    if (l.id != p.left_id || l.next != p.right || syms[p.right].id != p.right_id) continue;
    Symbol& r = syms[p.right];
    l.id = p.result;
    r.id = -1;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = p.left;
    try_add(l.prev, p.left);
    try_add(p.left, l.next);
  }

  for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) out->push_back(syms[i].id);
}

}  // namespace llm
