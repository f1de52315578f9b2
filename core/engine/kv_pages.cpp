#include "core/engine/kv_pages.h"

#include <algorithm>

#include "core/error.h"

namespace llm {

PagePool::PagePool(int n_pages, int page_size)
    : n_pages_(n_pages),
      page_size_(page_size),
      refs_(static_cast<size_t>(std::max(n_pages, 0)), 0),
      hash_of_(refs_.size(), 0),
      published_(refs_.size(), false),
      idle_pos_(refs_.size()) {
  if (n_pages <= 0 || page_size <= 0)
    fail("KV cache needs at least one page of at least one token (%d pages of %d)", n_pages,
         page_size);
  free_.reserve(n_pages);
  for (int p = n_pages - 1; p >= 0; p--) free_.push_back(p);
}

int PagePool::take() {
  int p = -1;
  if (!free_.empty()) {
    p = free_.back();
    free_.pop_back();
  } else if (!idle_.empty()) {
    // The least recently used cached prefix gives its page up.
    p = idle_.front();
    idle_.pop_front();
    by_hash_.erase(hash_of_[p]);
    published_[p] = false;
  } else {
    return -1;
  }
  refs_[p] = 1;
  return p;
}

void PagePool::give_back(const std::vector<int>& pages) {
  for (int p : pages) {
    if (p < 0 || p >= n_pages_ || refs_[p] <= 0) fail("internal: page %d returned twice", p);
    if (--refs_[p] > 0) continue;
    if (published_[p])
      idle_pos_[p] = idle_.insert(idle_.end(), p);
    else
      free_.push_back(p);
  }
}

int PagePool::adopt(uint64_t hash) {
  const auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return -1;
  const int p = it->second;
  if (refs_[p] == 0) idle_.erase(idle_pos_[p]);
  refs_[p]++;
  return p;
}

void PagePool::publish(int page, uint64_t hash) {
  if (page < 0 || page >= n_pages_ || refs_[page] <= 0)
    fail("internal: publishing page %d, which nobody holds", page);
  if (published_[page] || by_hash_.count(hash)) return;
  by_hash_.emplace(hash, page);
  hash_of_[page] = hash;
  published_[page] = true;
}

bool PageTable::reserve(PagePool& pool, int n_tokens) {
  const int need = pool.pages_for(n_tokens) - static_cast<int>(pages_.size());
  if (need <= 0) return true;
  if (need > pool.free_pages()) return false;
  for (int i = 0; i < need; i++) pages_.push_back(pool.take());
  return true;
}

void PageTable::release(PagePool& pool) {
  pool.give_back(pages_);
  pages_.clear();
}

uint64_t prefix_page_hash(uint64_t previous, const int32_t* tokens, int n) {
  // splitmix64 over the chain and each token: well mixed, and 64 bits make a collision
  // (which would reuse the wrong keys and values) negligible.
  auto mix = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  };
  uint64_t h = mix(previous ^ 0x5851f42d4c957f2dull);
  for (int i = 0; i < n; i++) h = mix(h ^ static_cast<uint32_t>(tokens[i]));
  return h;
}

}  // namespace llm
