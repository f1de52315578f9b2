// Small helpers for paths and names that several loaders share.
#pragma once

#include <sys/stat.h>

#include <string>
#include <string_view>

namespace llm {

inline bool is_dir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace llm
