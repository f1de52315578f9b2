// Helpers shared by the tests: fixture paths, temp folders, running llmcli.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/engine/session.h"
#include "core/formats/safetensors.h"

namespace llm::test {

// tests/data, or $LLMRT_TEST_DATA for a test binary run away from its source tree (the
// GPU machine).
inline std::string data_dir() {
  const char* dir = std::getenv("LLMRT_TEST_DATA");
  return dir && *dir ? dir : LLM_TEST_DATA;
}
// Sets an environment variable for a scope and restores it after (unsets it for a null
// value): the tests' knobs, and what the CLI's child processes inherit.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      old_ = old;
      had_ = true;
    }
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_.c_str(), old_.c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};
// The llmcli built with the tests, or $LLMRT_CLI (a test binary run elsewhere).
inline std::string cli_path() {
  const char* cli = std::getenv("LLMRT_CLI");
  return cli && *cli ? cli : LLM_CLI_PATH;
}
// A fixture model folder: tests/data/models/NAME (transformers' tiny checkpoints
// from shared/) or tests/data/models-extra/NAME (made by scripts/make_fixtures.py).
std::string model_dir(const std::string& name);

// Whether llmcli's device list has one whose id starts with id_prefix ("cuda:", ...).
bool has_device(const std::string& id_prefix);

// A fresh temporary folder, removed with its contents at scope exit.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The reference outputs of a fixture model (transformers, float32).
struct Reference {
  std::vector<int32_t> input_ids;
  std::vector<float> logits;  // [input_ids.size(), vocab]
  std::vector<int32_t> greedy_ids;
  int vocab = 0;
};
Reference load_reference(const std::string& model);

// max |a - b| / max |b|.
double max_rel_error(const std::vector<float>& a, const std::vector<float>& b);

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs llmcli with the given arguments (shell-quoted here).
CommandResult run_cli(const std::vector<std::string>& args);

std::string join_ids(const std::vector<int32_t>& ids);

// n tokens by greedy decoding after prompt, through the session's KV cache.
std::vector<int32_t> greedy(Session& s, const std::vector<int32_t>& prompt, int n, int vocab);
// The same through Session::forward_greedy (the argmax taken on the device).
std::vector<int32_t> greedy_on_device(Session& s, const std::vector<int32_t>& prompt, int n);
// The same through Session::queue_greedy: each token fed to the next step on the device.
std::vector<int32_t> greedy_queued(Session& s, const std::vector<int32_t>& prompt, int n);

// n values uniform in [lo, hi).
std::vector<float> uniform(size_t n, std::mt19937& rng, float lo = -1.f, float hi = 1.f);

// One row of Op::Sample's parameters (cuts off by default).
inline std::vector<float> sample_row_params(float temperature, float u, float top_k = 0.f,
                                            float top_p = 1.f, float min_p = 0.f) {
  return {temperature, u, top_k, top_p, min_p};
}

using Bytes = std::vector<uint8_t>;
template <class T>
Bytes to_bytes(const std::vector<T>& v) {
  Bytes b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& text);
// The tiny synthetic llama (hidden 64, 2 layers) with the Llama 2 vocabulary, a
// native folder made once per (quantization, seed) for the whole test run: an
// end-to-end model with a real tokenizer and chat template.
const std::string& tiny_chat_model(const std::string& quantization, uint64_t seed);
// The same tiny llama (q0f32) with StarCoder's vocabulary: a model with fill-in-the-middle
// tokens (<fim_prefix>, ...), made once for the whole test run.
const std::string& tiny_code_model();

// Copies a fixture model folder into dst (a folder that exists).
void copy_model(const std::string& name, const std::string& dst);

}  // namespace llm::test
