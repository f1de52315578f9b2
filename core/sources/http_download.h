// Downloading one file over HTTP(S) (cpp-httplib): redirects followed, an optional
// bearer token, resume of an interrupted download from FILE.part with a Range
// request, and an atomic rename once the size matches what the server announced.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace llm {

// Called as bytes arrive: bytes of the file on disk so far, and its full size
// (0 when the server does not say).
using DownloadProgress = std::function<void(uint64_t done, uint64_t total)>;

struct HttpOptions {
  std::string token;     // sent as "Authorization: Bearer TOKEN" when not empty
  int max_attempts = 4;  // a dropped connection is resumed this many times in all
  int timeout_s = 60;    // connect and read timeouts
};

// The body of a GET (small responses: JSON listings); throws llm::Error naming the
// URL for network failures and HTTP errors (401/403: a hint about HF_TOKEN).
std::string http_get(const std::string& url, const HttpOptions& opts);

// Downloads url to path through path + ".part"; a .part left by an earlier
// attempt is resumed. Throws llm::Error (the .part is kept for a later resume).
void http_download(const std::string& url, const std::string& path, const HttpOptions& opts,
                   const DownloadProgress& progress = nullptr);

}  // namespace llm
