// The paged KV cache's bookkeeping: a fixed pool of pages (page_size token slots
// each), a free list, and one page table per sequence. Device memory lives in the
// StepRunner; this class only decides which slots a sequence owns.
#pragma once

#include <cstdint>
#include <vector>

namespace llm {

class PagePool {
 public:
  PagePool(int n_pages, int page_size);

  int page_size() const { return page_size_; }
  int total_pages() const { return n_pages_; }
  int free_pages() const { return static_cast<int>(free_.size()); }
  int used_pages() const { return n_pages_ - free_pages(); }
  // Pages needed to hold n tokens.
  int pages_for(int n_tokens) const { return (n_tokens + page_size_ - 1) / page_size_; }

  // Takes one free page; -1 when none is left.
  int take();
  // Returns pages to the pool (in any order). Each must have come from take().
  void give_back(const std::vector<int>& pages);

 private:
  int n_pages_;
  int page_size_;
  std::vector<int> free_;  // a stack: recently freed pages are reused first
  std::vector<bool> in_use_;
};

// A sequence's page table: page j holds positions [j*page_size, (j+1)*page_size).
class PageTable {
 public:
  const std::vector<int>& pages() const { return pages_; }
  // Grows the table to hold n_tokens; false (and unchanged) when the pool is out of pages.
  bool reserve(PagePool& pool, int n_tokens);
  // Cache slot of a position.
  int32_t slot(int position, int page_size) const {
    return pages_[position / page_size] * page_size + position % page_size;
  }
  void release(PagePool& pool);

 private:
  std::vector<int> pages_;
};

}  // namespace llm
