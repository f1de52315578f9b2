#include "core/sources/http_download.h"

#include <httplib.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>

#include "core/error.h"

namespace fs = std::filesystem;

namespace llm {

namespace {

// "https://host:port/a/b?c" -> {"https://host:port", "/a/b?c"}.
std::pair<std::string, std::string> split_url(const std::string& url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos ||
      (url.compare(0, scheme, "http") != 0 && url.compare(0, scheme, "https") != 0))
    fail("'%s' is not an http:// or https:// URL", url.c_str());
  const size_t path = url.find('/', scheme + 3);
  if (path == std::string::npos) return {url, "/"};
  return {url.substr(0, path), url.substr(path)};
}

std::unique_ptr<httplib::Client> make_client(const std::string& base, const HttpOptions& o) {
  auto c = std::make_unique<httplib::Client>(base);
  if (!c->is_valid()) fail("cannot make an HTTP client for '%s'", base.c_str());
  c->set_follow_location(false);  // get() follows redirects itself, see there
  c->set_connection_timeout(o.timeout_s, 0);
  c->set_read_timeout(o.timeout_s, 0);
  return c;
}

// cpp-httplib 0.11 names its errors only ("Connection"); say what happened. A read
// error is also what a server that stops sending for timeout_s seconds gives.
std::string describe(httplib::Error e, int timeout_s) {
  switch (e) {
    case httplib::Error::Connection:
      return "could not connect (no network, a wrong HF_ENDPOINT or a firewall)";
    case httplib::Error::ConnectionTimeout:
      return "the connection timed out";
    case httplib::Error::Read:
      return "the connection broke, or the server sent nothing for " + std::to_string(timeout_s) +
             " s, while reading";
    case httplib::Error::Write:
      return "the connection broke while sending";
    case httplib::Error::ExceedRedirectCount:
      return "too many redirects";
    case httplib::Error::SSLConnection:
      return "the TLS handshake failed";
    case httplib::Error::SSLLoadingCerts:
      return "the system's CA certificates could not be loaded";
    case httplib::Error::SSLServerVerification:
      return "the server's TLS certificate was not accepted";
    default:
      return "network error (" + httplib::to_string(e) + ")";
  }
}

[[noreturn]] void http_error(int status, const std::string& url, bool has_token) {
  if (status == 401 || status == 403)
    fail("HTTP %d for %s: access denied (%s)", status, url.c_str(),
         has_token ? "HF_TOKEN was sent but is not accepted for this repository"
                   : "a gated or private repository: set HF_TOKEN to an access token");
  if (status == 404) fail("HTTP 404 for %s: no such repository, revision or file", url.c_str());
  fail("HTTP %d for %s", status, url.c_str());
}

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};

uint64_t file_size_or_zero(const std::string& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? 0 : static_cast<uint64_t>(n);
}

// "bytes 100-199/1000" -> start 100, total 1000; false when malformed.
bool parse_content_range(const std::string& v, uint64_t* start, uint64_t* total) {
  unsigned long long a = 0, b = 0, t = 0;
  if (std::sscanf(v.c_str(), "bytes %llu-%llu/%llu", &a, &b, &t) != 3) return false;
  *start = a;
  *total = t;
  return true;
}

// Location -> an absolute URL (Hugging Face sends absolute ones; allow paths).
std::string absolute_url(const std::string& location, const std::string& base) {
  if (location.compare(0, 7, "http://") == 0 || location.compare(0, 8, "https://") == 0)
    return location;
  return base + (location.empty() || location[0] != '/' ? "/" : "") + location;
}

struct GetResult {
  int status = 0;  // the last response's status, 0 when none came
  httplib::Error error = httplib::Error::Success;
};

// A GET that follows up to 10 redirects itself, sending the token only to the
// first URL's host: the Hub redirects weights to pre-signed CDN URLs, which must
// not get a second credential (nor should any other host see the token).
// on_response sees the final response (not the redirects) and may refuse it.
GetResult get(const std::string& url, const HttpOptions& o, const httplib::Headers& extra,
              const std::function<bool(const httplib::Response&)>& on_response,
              const std::function<bool(const char*, size_t)>& on_data) {
  const std::string origin = split_url(url).first;
  std::string current = url;
  for (int hop = 0; hop <= 10; hop++) {
    const auto [base, path] = split_url(current);
    httplib::Headers h = extra;
    if (!o.token.empty() && base == origin) h.emplace("Authorization", "Bearer " + o.token);
    GetResult g;
    std::string location;
    auto client = make_client(base, o);
    httplib::Result r = client->Get(
        path, h,
        [&](const httplib::Response& res) {
          g.status = res.status;
          if (res.status >= 300 && res.status < 400 && res.has_header("Location")) {
            location = res.get_header_value("Location");
            return false;
          }
          return on_response(res);
        },
        [&](const char* data, size_t n) { return on_data(data, n); });
    if (!location.empty()) {
      current = absolute_url(location, base);
      continue;
    }
    g.error = r ? httplib::Error::Success : r.error();
    return g;
  }
  return {0, httplib::Error::ExceedRedirectCount};
}

}  // namespace

std::string http_get(const std::string& url, const HttpOptions& opts) {
  std::string body;
  const GetResult g = get(
      url, opts, {}, [](const httplib::Response& res) { return res.status == 200; },
      [&](const char* data, size_t n) {
        body.append(data, n);
        return true;
      });
  if (g.status != 0 && g.status != 200) http_error(g.status, url, !opts.token.empty());
  if (g.error != httplib::Error::Success)
    fail("cannot reach %s: %s", url.c_str(), describe(g.error, opts.timeout_s).c_str());
  return body;
}

void http_download(const std::string& url, const std::string& path, const HttpOptions& opts,
                   const DownloadProgress& progress) {
  split_url(url);  // a clear error for a malformed URL before anything is written
  const std::string part = path + ".part";
  std::string last_error;
  for (int attempt = 1; attempt <= opts.max_attempts; attempt++) {
    uint64_t have = file_size_or_zero(part);
    uint64_t total = 0;
    int status = 0;
    bool bad_range = false;
    std::unique_ptr<FILE, FileCloser> f;
    std::string write_error;

    httplib::Headers headers;
    if (have > 0) headers.emplace("Range", "bytes=" + std::to_string(have) + "-");
    const GetResult g = get(
        url, opts, headers,
        [&](const httplib::Response& res) {
          status = res.status;
          if (status == 200) {
            // A full body (no resume asked, or the server ignores Range): start over.
            have = 0;
            if (res.has_header("Content-Length"))
              total = std::strtoull(res.get_header_value("Content-Length").c_str(), nullptr, 10);
            f.reset(std::fopen(part.c_str(), "wb"));
          } else if (status == 206) {
            uint64_t start = 0;
            if (!parse_content_range(res.get_header_value("Content-Range"), &start, &total) ||
                start != have) {
              bad_range = true;
              return false;
            }
            f.reset(std::fopen(part.c_str(), "ab"));
          } else {
            if (status == 416) bad_range = true;  // the .part is no prefix of this file
            return false;
          }
          if (!f) {
            write_error = "cannot write '" + part + "': " + std::strerror(errno);
            return false;
          }
          if (progress) progress(have, total);
          return true;
        },
        [&](const char* data, size_t n) {
          if (std::fwrite(data, 1, n, f.get()) != n) {
            write_error = "cannot write '" + part + "': " + std::strerror(errno);
            return false;
          }
          have += n;
          if (progress) progress(have, total);
          return true;
        });
    const bool flushed = f && std::fflush(f.get()) == 0;
    f.reset();
    if (!write_error.empty()) fail("%s", write_error.c_str());
    if (bad_range) {
      // Start from scratch on the next attempt.
      std::error_code ec;
      fs::remove(part, ec);
      last_error = "the server did not resume from byte " + std::to_string(have);
      continue;
    }
    if (status != 0 && status != 200 && status != 206) http_error(status, url, !opts.token.empty());
    if (g.error != httplib::Error::Success || !flushed) {
      last_error = g.error == httplib::Error::Success ? "cannot flush '" + part + "'"
                                                      : describe(g.error, opts.timeout_s);
      continue;  // resume from what reached the disk
    }
    const uint64_t size = file_size_or_zero(part);
    if (total != 0 && size != total) {
      last_error = "got " + std::to_string(size) + " of " + std::to_string(total) + " bytes";
      continue;
    }
    std::error_code ec;
    fs::rename(part, path, ec);
    if (ec)
      fail("cannot rename '%s' to '%s': %s", part.c_str(), path.c_str(), ec.message().c_str());
    return;
  }
  const uint64_t kept = file_size_or_zero(part);
  fail("cannot download %s after %d attempts: %s%s", url.c_str(), opts.max_attempts,
       last_error.c_str(),
       kept > 0 ? (" (the " + std::to_string(kept) + " bytes in '" + part +
                   "' are kept: the next run resumes from there)")
                      .c_str()
                : "");
}

}  // namespace llm
