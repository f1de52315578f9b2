#include "core/tokenizer/vocab.h"

#include <cstdio>
#include <cstring>

#include "core/tokenizer/unicode.h"

namespace llm {

uint64_t TokenIndex::hash(std::string_view s) {
  // FNV-1a with a final mix: fast on short keys, good enough spread for a vocab.
  uint64_t h = 1469598103934665603ull;
  for (char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 1099511628211ull;
  }
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 32);
}

void TokenIndex::build(const std::vector<std::string>* texts) {
  texts_ = texts;
  size_t cap = 16;
  while (cap < texts->size() * 2) cap <<= 1;
  slots_.assign(cap, -1);
  mask_ = cap - 1;
  for (size_t id = 0; id < texts->size(); ++id) {
    const std::string& t = (*texts)[id];
    uint64_t i = hash(t) & mask_;
    while (slots_[i] >= 0 && (*texts)[slots_[i]] != t) i = (i + 1) & mask_;
    slots_[i] = static_cast<int32_t>(id);  // a duplicate text maps to its last id
  }
}

int32_t TokenIndex::find(std::string_view text) const {
  if (slots_.empty()) return -1;
  uint64_t i = hash(text) & mask_;
  while (true) {
    const int32_t id = slots_[i];
    if (id < 0) return -1;
    const std::string& t = (*texts_)[id];
    if (t.size() == text.size() && std::memcmp(t.data(), text.data(), t.size()) == 0) return id;
    i = (i + 1) & mask_;
  }
}

void MergeTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  if (cap > slots_.size()) {
    std::vector<Entry> old;
    old.swap(slots_);
    slots_.assign(cap, Entry{});
    count_ = 0;
    for (const Entry& e : old) {
      if (e.key != ~0ull)
        add(static_cast<int32_t>(e.key >> 32), static_cast<int32_t>(e.key), e.rank, e.result);
    }
  }
}

void MergeTable::grow() { reserve(slots_.empty() ? 16 : slots_.size()); }

static uint64_t mix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return k;
}

void MergeTable::add(int32_t left, int32_t right, int32_t rank, int32_t result) {
  if ((count_ + 1) * 2 > slots_.size()) grow();
  const uint64_t k = key(left, right);
  const uint64_t mask = slots_.size() - 1;
  uint64_t i = mix64(k) & mask;
  while (slots_[i].key != ~0ull) {
    if (slots_[i].key == k) return;
    i = (i + 1) & mask;
  }
  slots_[i] = Entry{k, rank, result};
  ++count_;
}

const MergeTable::Entry* MergeTable::find(int32_t left, int32_t right) const {
  if (slots_.empty()) return nullptr;
  const uint64_t k = key(left, right);
  const uint64_t mask = slots_.size() - 1;
  uint64_t i = mix64(k) & mask;
  while (true) {
    const Entry& e = slots_[i];
    if (e.key == k) return &e;
    if (e.key == ~0ull) return nullptr;
    i = (i + 1) & mask;
  }
}

int parse_byte_token(std::string_view s) {
  if (s.size() != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = s[i];
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else
      return -1;
    v = v * 16 + d;
  }
  return v;
}

void Vocab::finalize() {
  if (score.size() < text.size()) score.resize(text.size(), 0.0f);
  if (type.size() < text.size()) type.resize(text.size(), TokenType::kNormal);
  index.build(&text);
  byte_token.fill(-1);
  byte_level_token.fill(-1);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    const int32_t id = find(name);
    if (id >= 0 && (type[id] == TokenType::kByte || type[id] == TokenType::kNormal ||
                    type[id] == TokenType::kUndefined)) {
      byte_token[b] = id;
    }
    byte_level_token[b] = find(unicode::byte_to_utf8(static_cast<uint8_t>(b)));
  }
}

bool Vocab::add_merge(std::string_view left, std::string_view right, int32_t rank) {
  const int32_t l = find(left);
  const int32_t r = find(right);
  if (l < 0 || r < 0) return false;
  std::string joined;
  joined.reserve(left.size() + right.size());
  joined.append(left).append(right);
  const int32_t m = find(joined);
  if (m < 0) return false;
  merges.add(l, r, rank, m);
  return true;
}

bool Vocab::metaspace_cut_safe() const {
  static const char kMeta[] = "\xE2\x96\x81";
  for (int32_t id = 0; id < size(); ++id) {
    if (!mergeable(id)) continue;
    const std::string& t = text[id];
    size_t pos = t.find(kMeta, 1);
    while (pos != std::string::npos) {
      // Safe only if everything before this U+2581 is itself a run of U+2581.
      for (size_t i = 0; i < pos; i += 3) {
        if (t.compare(i, 3, kMeta) != 0) return false;
      }
      pos = t.find(kMeta, pos + 3);
    }
  }
  return true;
}

}  // namespace llm
