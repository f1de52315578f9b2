#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>

#include "backends/registry.h"
#include "core/engine/sampler.h"
#include "core/models/synth.h"

namespace llm::test {

namespace fs = std::filesystem;

bool has_device(const std::string& id_prefix) {
  for (const DeviceEntry& d : list_devices())
    if (d.info.id.rfind(id_prefix, 0) == 0) return true;
  return false;
}

std::string model_dir(const std::string& name) {
  const std::string shared = data_dir() + "/models/" + name;
  return fs::exists(shared) ? shared : data_dir() + "/models-extra/" + name;
}

TempDir::TempDir() {
  std::random_device rd;
  for (int attempt = 0; attempt < 100; attempt++) {
    fs::path p = fs::temp_directory_path() / ("llmrt-test-" + std::to_string(rd()));
    if (fs::create_directory(p)) {
      path_ = p.string();
      return;
    }
  }
  throw std::runtime_error("cannot create a temporary folder");
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

Reference load_reference(const std::string& model) {
  SafetensorsFile f(model_dir(model) + "/reference.safetensors");
  Reference r;
  auto ids = [&](const char* name) {
    const HostTensor& t = f.tensors().at(name);
    const int64_t* p = static_cast<const int64_t*>(t.data);
    return std::vector<int32_t>(p, p + t.shape.numel());
  };
  r.input_ids = ids("input_ids");
  r.greedy_ids = ids("greedy_ids");
  const HostTensor& l = f.tensors().at("logits");
  const float* p = static_cast<const float*>(l.data);
  r.logits.assign(p, p + l.shape.numel());
  r.vocab = static_cast<int>(l.shape[1]);
  return r;
}

double max_rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < a.size(); i++) {
    max_diff = std::max(max_diff, std::fabs(double(a[i]) - double(b[i])));
    max_ref = std::max(max_ref, std::fabs(double(b[i])));
  }
  return max_diff / max_ref;
}

namespace {
std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}
}  // namespace

CommandResult run_cli(const std::vector<std::string>& args) {
  TempDir tmp;
  std::string cmd = shell_quote(cli_path());
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " >" + shell_quote(tmp.file("out")) + " 2>" + shell_quote(tmp.file("err")) + " </dev/null";
  const int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(tmp.file("out"));
  r.err = read_file(tmp.file("err"));
  return r;
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); i++) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

std::vector<int32_t> greedy(Session& s, const std::vector<int32_t>& prompt, int n, int vocab) {
  std::vector<int32_t> out;
  std::vector<float> logits = s.forward(prompt, false);
  for (int i = 0; i < n; i++) {
    out.push_back(argmax(logits.data(), vocab));
    if (i + 1 < n) logits = s.forward({out.back()}, false);
  }
  return out;
}

std::vector<int32_t> greedy_on_device(Session& s, const std::vector<int32_t>& prompt, int n) {
  std::vector<int32_t> out;
  int32_t next = s.forward_greedy(prompt);
  for (int i = 0; i < n; i++) {
    out.push_back(next);
    if (i + 1 < n) next = s.forward_greedy({next});
  }
  return out;
}

std::vector<int32_t> greedy_queued(Session& s, const std::vector<int32_t>& prompt, int n) {
  std::vector<int32_t> out;
  s.queue_greedy(prompt);
  for (int i = 0; i + 1 < n; i++) out.push_back(s.queue_greedy_next());
  out.push_back(s.finish_greedy());
  return out;
}

std::vector<float> uniform(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

void copy_model(const std::string& name, const std::string& dst) {
  for (const auto& e : fs::directory_iterator(model_dir(name))) {
    const fs::path target = fs::path(dst) / e.path().filename();
    fs::copy_file(e.path(), target, fs::copy_options::overwrite_existing);
    fs::permissions(target, fs::perms::owner_write, fs::perm_options::add);
  }
}

const std::string& tiny_chat_model(const std::string& quantization, uint64_t seed) {
  static TempDir dir;
  static std::map<std::pair<std::string, uint64_t>, std::string> made;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_pair(quantization, seed);
  auto it = made.find(key);
  if (it != made.end()) return it->second;
  SynthOptions o;
  o.shape = "tiny";
  o.quantization = quantization;
  o.vocab = data_dir() + "/tokenizers/ggml-vocab-llama-spm.gguf";
  o.out = dir.file("tiny-" + quantization + "-" + std::to_string(seed));
  o.seed = seed;
  synth_model(o);
  return made.emplace(key, o.out).first->second;
}

const std::string& tiny_code_model() {
  static TempDir dir;
  static std::string path;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (!path.empty()) return path;
  SynthOptions o;
  o.shape = "tiny";
  o.quantization = "q0f32";
  o.vocab = data_dir() + "/tokenizers/ggml-vocab-starcoder.gguf";
  o.out = dir.file("tiny-code");
  synth_model(o);
  path = o.out;
  return path;
}

}  // namespace llm::test
