#include "core/sources/hf_hub.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/path_util.h"
#include "core/sources/http_download.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace llm {

namespace {

const char kScheme[] = "hf://";
const char kCompleteMarker[] = ".llmrt-complete";

// Names Hugging Face allows for owners, repositories and revisions; keeps
// "..", "/" and the like out of cache paths.
bool valid_part(const std::string& s, bool revision) {
  if (s.empty() || s == "." || s == ".." || s.size() > 256) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
          (revision && c == '/')))
      return false;
  return s.find("..") == std::string::npos;
}

// A repository file name: relative, no "..", no empty parts.
bool valid_file(const std::string& f) {
  if (f.empty() || f.front() == '/' || f.back() == '/' || f.find('\\') != std::string::npos)
    return false;
  size_t pos = 0;
  while (pos <= f.size()) {
    size_t slash = f.find('/', pos);
    if (slash == std::string::npos) slash = f.size();
    const std::string part = f.substr(pos, slash - pos);
    if (part.empty() || part == "." || part == "..") return false;
    pos = slash + 1;
  }
  return true;
}

// Percent-encodes everything but unreserved characters (and '/' when keep_slash).
std::string url_encode(const std::string& s, bool keep_slash) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string endpoint_of(const HubOptions& o) {
  std::string e = o.endpoint.empty() ? "https://huggingface.co" : o.endpoint;
  while (!e.empty() && e.back() == '/') e.pop_back();
  return e;
}

std::string file_url(const HfRef& r, const HubOptions& o, const std::string& file) {
  return endpoint_of(o) + "/" + r.org + "/" + r.name + "/resolve/" + url_encode(r.revision, false) +
         "/" + url_encode(file, true);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '%s'", path.c_str());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Fetches one file into dir unless it is there already.
std::string fetch_file(const HfRef& r, const HubOptions& o, const std::string& dir,
                       const std::string& file) {
  const fs::path local = fs::path(dir) / file;
  std::error_code ec;
  if (fs::is_regular_file(local, ec)) return local.string();
  fs::create_directories(local.parent_path(), ec);
  if (ec) fail("cannot create '%s': %s", local.parent_path().c_str(), ec.message().c_str());
  HttpOptions h;
  h.token = o.token;
  DownloadProgress p;
  if (o.progress) p = [&](uint64_t done, uint64_t total) { o.progress(file, done, total); };
  http_download(file_url(r, o, file), local.string(), h, p);
  return local.string();
}

// Configuration and tokenizer files a model folder may use.
const char* const kSmallFiles[] = {
    "config.json",         "generation_config.json",
    "tokenizer.json",      "tokenizer_config.json",
    "tokenizer.model",     "special_tokens_map.json",
    "chat_template.jinja", "chat_template.json",
    "added_tokens.json",   "vocab.json",
    "merges.txt",          "llm-config.json",
    "adapter_config.json",  // a PEFT LoRA adapter's repository (--lora hf://...)
};

}  // namespace

bool is_hf_uri(const std::string& s) { return s.compare(0, sizeof(kScheme) - 1, kScheme) == 0; }

HfRef parse_hf_uri(const std::string& uri) {
  auto bad = [&](const char* why) -> HfRef {
    fail("'%s' is not a Hugging Face model: %s (expected hf://ORG/NAME[@REVISION][/FILE.gguf])",
         uri.c_str(), why);
  };
  if (!is_hf_uri(uri)) return bad("no hf:// prefix");
  const std::string rest = uri.substr(sizeof(kScheme) - 1);
  const size_t s1 = rest.find('/');
  if (s1 == std::string::npos) return bad("no repository name");
  HfRef r;
  r.org = rest.substr(0, s1);
  const size_t s2 = rest.find('/', s1 + 1);
  std::string name = rest.substr(s1 + 1, s2 == std::string::npos ? std::string::npos : s2 - s1 - 1);
  if (s2 != std::string::npos) r.file = rest.substr(s2 + 1);
  const size_t at = name.find('@');
  if (at != std::string::npos) {
    r.revision = name.substr(at + 1);
    name = name.substr(0, at);
  }
  r.name = name;
  if (!valid_part(r.org, false) || !valid_part(r.name, false))
    return bad("invalid organisation or repository name");
  if (!valid_part(r.revision, true)) return bad("invalid revision");
  if (s2 != std::string::npos && (!valid_file(r.file) || !ends_with(r.file, ".gguf")))
    return bad("a single file must be a .gguf file");
  return r;
}

HubOptions hub_options_from_env() {
  HubOptions o;
  if (const char* e = std::getenv("HF_ENDPOINT"); e && *e) o.endpoint = e;
  if (const char* t = std::getenv("HF_TOKEN"); t && *t) o.token = t;
  if (const char* c = std::getenv("LLMRT_CACHE"); c && *c) {
    o.cache_dir = c;
  } else {
    const char* home = std::getenv("HOME");
    o.cache_dir = std::string(home && *home ? home : ".") + "/.cache/llmrt";
  }
  return o;
}

std::vector<std::string> hf_repo_files(const std::vector<std::string>& listing,
                                       const std::string& index_json) {
  const std::set<std::string> have(listing.begin(), listing.end());
  std::vector<std::string> out;
  for (const char* f : kSmallFiles)
    if (have.count(f)) out.push_back(f);
  std::set<std::string> weights;
  if (!index_json.empty()) {
    json idx;
    try {
      idx = json::parse(index_json);
    } catch (const json::exception& e) {
      fail("model.safetensors.index.json is not valid JSON: %s", e.what());
    }
    if (!idx.contains("weight_map") || !idx["weight_map"].is_object())
      fail("model.safetensors.index.json has no weight_map object");
    for (const auto& kv : idx["weight_map"].items()) {
      if (!kv.value().is_string() || !valid_file(kv.value().get<std::string>()))
        fail("model.safetensors.index.json: bad shard name for '%s'", kv.key().c_str());
      weights.insert(kv.value().get<std::string>());
    }
    out.push_back("model.safetensors.index.json");
  } else if (have.count("model.safetensors")) {
    weights.insert("model.safetensors");
  } else {
    for (const std::string& f : listing)
      if (f.find('/') == std::string::npos && ends_with(f, ".safetensors")) weights.insert(f);
  }
  for (const std::string& w : weights) {
    if (!have.count(w))
      fail("the repository lists no file '%s' (named in its shard index)", w.c_str());
    out.push_back(w);
  }
  return out;
}

std::string hf_fetch(const HfRef& r, const HubOptions& o) {
  if (o.cache_dir.empty()) fail("no cache folder for hf:// downloads (set LLMRT_CACHE)");
  const std::string dir =
      (fs::path(o.cache_dir) / "hf" / r.org / r.name / url_encode(r.revision, false)).string();
  if (!r.file.empty()) return fetch_file(r, o, dir, r.file);

  std::error_code ec;
  if (fs::is_regular_file(fs::path(dir) / kCompleteMarker, ec)) return dir;
  HttpOptions h;
  h.token = o.token;
  const std::string list_url = endpoint_of(o) + "/api/models/" + r.org + "/" + r.name +
                               "/revision/" + url_encode(r.revision, false);
  std::vector<std::string> listing;
  try {
    const json j = json::parse(http_get(list_url, h));
    for (const json& s : j.at("siblings")) {
      const std::string f = s.at("rfilename").get<std::string>();
      if (valid_file(f)) listing.push_back(f);
    }
  } catch (const json::exception& e) {
    fail("%s: unexpected file listing: %s", list_url.c_str(), e.what());
  }
  std::string index;
  if (std::find(listing.begin(), listing.end(), "model.safetensors.index.json") != listing.end())
    index = read_text(fetch_file(r, o, dir, "model.safetensors.index.json"));
  const std::vector<std::string> files = hf_repo_files(listing, index);
  const bool has_weights = std::any_of(files.begin(), files.end(), [](const std::string& f) {
    return ends_with(f, ".safetensors");
  });
  if (!has_weights) {
    std::string ggufs;
    for (const std::string& f : listing)
      if (ends_with(f, ".gguf")) ggufs += (ggufs.empty() ? "" : ", ") + f;
    fail("hf://%s/%s has no safetensors weights%s%s", r.org.c_str(), r.name.c_str(),
         ggufs.empty() ? "" : "; pick one GGUF file as hf://ORG/NAME/FILE.gguf: ", ggufs.c_str());
  }
  for (const std::string& f : files) fetch_file(r, o, dir, f);
  std::ofstream marker(fs::path(dir) / kCompleteMarker);
  for (const std::string& f : files) marker << f << "\n";
  if (!marker) fail("cannot write '%s/%s'", dir.c_str(), kCompleteMarker);
  return dir;
}

std::string resolve_model_source(
    const std::string& model,
    const std::function<void(const std::string&, uint64_t, uint64_t)>& progress) {
  if (!is_hf_uri(model)) return model;
  HubOptions o = hub_options_from_env();
  o.progress = progress;
  return hf_fetch(parse_hf_uri(model), o);
}

}  // namespace llm
