// Models from the Hugging Face Hub: "hf://ORG/NAME[@REV]" (a whole repository:
// config, tokenizer and chat-template files, safetensors weights) or
// "hf://ORG/NAME[@REV]/FILE.gguf" (one file), downloaded with resume into a cache
// ($LLMRT_CACHE, default ~/.cache/llmrt) as hf/ORG/NAME/REV/FILE. The endpoint is
// $HF_ENDPOINT (default https://huggingface.co), the token $HF_TOKEN.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace llm {

struct HfRef {
  std::string org, name;
  std::string revision = "main";
  std::string file;  // empty: the whole repository
};

bool is_hf_uri(const std::string& s);
// Throws llm::Error explaining the expected form.
HfRef parse_hf_uri(const std::string& uri);

struct HubOptions {
  std::string endpoint;   // "https://huggingface.co" or "http://127.0.0.1:PORT[/prefix]"
  std::string token;      // empty: anonymous
  std::string cache_dir;  // the cache root (hf/... goes below it)
  // Progress per file: its name in the repository, bytes so far, its size (0: unknown).
  std::function<void(const std::string& file, uint64_t done, uint64_t total)> progress;
};
// From $HF_ENDPOINT, $HF_TOKEN, $LLMRT_CACHE (or $HOME/.cache/llmrt).
HubOptions hub_options_from_env();

// The files of a repository worth fetching to run it, chosen from its listing:
// configs, tokenizer and chat-template files, and the weights (the shards that
// model.safetensors.index.json names, else model.safetensors, else every
// top-level *.safetensors). index_json: the index's text when there is one.
std::vector<std::string> hf_repo_files(const std::vector<std::string>& listing,
                                       const std::string& index_json);

// Downloads what is missing from the cache and returns the local path: the
// folder of a repository or the path of the file. A repository downloaded
// completely once (marker file .llmrt-complete) is used without the network.
std::string hf_fetch(const HfRef& ref, const HubOptions& opts);

// hf:// URIs through hf_fetch with hub_options_from_env() (plus progress);
// anything else comes back unchanged.
std::string resolve_model_source(
    const std::string& model,
    const std::function<void(const std::string&, uint64_t, uint64_t)>& progress = nullptr);

}  // namespace llm
