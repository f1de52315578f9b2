// The paged KV cache's bookkeeping: a fixed pool of pages (page_size token slots
// each), a free list, and one page table per sequence. Device memory lives in the
// StepRunner; this class only decides which slots a sequence owns.
//
// Prefix caching: a full page whose keys and values are written can be published
// under the hash of every token up to its end (PrefixHasher). A later sequence whose
// prompt starts with the same tokens adopts the page instead of computing it again.
// Pages are counted by reference; a published page nobody uses stays cached until
// take() needs it (least recently used first). Published pages are only read: a
// sequence writes from its first own position on, past every page it adopted.
#pragma once

#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace llm {

class PagePool {
 public:
  PagePool(int n_pages, int page_size);

  int page_size() const { return page_size_; }
  int total_pages() const { return n_pages_; }
  // Pages take() can hand out: free ones and cached ones nobody uses.
  int free_pages() const { return static_cast<int>(free_.size() + idle_.size()); }
  int used_pages() const { return n_pages_ - free_pages(); }
  int cached_pages() const { return static_cast<int>(by_hash_.size()); }
  // Pages needed to hold n tokens.
  int pages_for(int n_tokens) const { return (n_tokens + page_size_ - 1) / page_size_; }

  // Takes a page (a free one, else the least recently used cached one); -1 when none is
  // left.
  int take();
  // Drops one reference to each page (in any order). Each must be held.
  void give_back(const std::vector<int>& pages);

  // The page published under hash, with a reference taken for the caller; -1 if none.
  int adopt(uint64_t hash);
  // Publishes a held page, full and written, under hash (unless another page already
  // holds that prefix).
  void publish(int page, uint64_t hash);

 private:
  int n_pages_;
  int page_size_;
  std::vector<int> free_;  // a stack: recently freed pages are reused first
  std::vector<int> refs_;
  std::unordered_map<uint64_t, int> by_hash_;
  std::vector<uint64_t> hash_of_;  // per page, valid while published_
  std::vector<bool> published_;
  std::list<int> idle_;                             // published, unreferenced: oldest first
  std::vector<std::list<int>::iterator> idle_pos_;  // per page, valid while in idle_
};

// A sequence's page table: page j holds positions [j*page_size, (j+1)*page_size).
class PageTable {
 public:
  const std::vector<int>& pages() const { return pages_; }
  // Grows the table to hold n_tokens; false (and unchanged) when the pool is out of pages.
  bool reserve(PagePool& pool, int n_tokens);
  // Appends a page taken with PagePool::adopt.
  void append(int page) { pages_.push_back(page); }
  // Cache slot of a position.
  int32_t slot(int position, int page_size) const {
    return pages_[position / page_size] * page_size + position % page_size;
  }
  void release(PagePool& pool);

 private:
  std::vector<int> pages_;
};

// The hash of a token prefix, one page at a time: the hash of pages 0..j chains the
// hash of pages 0..j-1 with page j's tokens.
uint64_t prefix_page_hash(uint64_t previous, const int32_t* tokens, int n);

}  // namespace llm
