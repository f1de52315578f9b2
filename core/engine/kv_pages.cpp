#include "core/engine/kv_pages.h"

#include "core/error.h"

namespace llm {

PagePool::PagePool(int n_pages, int page_size)
    : n_pages_(n_pages), page_size_(page_size), in_use_(n_pages, false) {
  if (n_pages <= 0 || page_size <= 0)
    fail("KV cache needs at least one page of at least one token (%d pages of %d)", n_pages,
         page_size);
  free_.reserve(n_pages);
  for (int p = n_pages - 1; p >= 0; p--) free_.push_back(p);
}

int PagePool::take() {
  if (free_.empty()) return -1;
  const int p = free_.back();
  free_.pop_back();
  in_use_[p] = true;
  return p;
}

void PagePool::give_back(const std::vector<int>& pages) {
  for (int p : pages) {
    if (p < 0 || p >= n_pages_ || !in_use_[p]) fail("internal: page %d returned twice", p);
    in_use_[p] = false;
    free_.push_back(p);
  }
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

}  // namespace llm
