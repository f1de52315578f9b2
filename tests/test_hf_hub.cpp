// hf:// model sources (core/sources/hf_hub.h) against an in-process Hugging Face
// look-alike: cpp-httplib on 127.0.0.1 with the Hub's routes (file listing,
// resolve/REV/FILE with Range requests, a CDN redirect for weights), one file
// whose first download drops midway, a repository that wants a token, and 404s.
#include <httplib.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "core/engine/session.h"
#include "core/error.h"
#include "core/model.h"
#include "core/sources/hf_hub.h"
#include "core/sources/http_download.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace llm;
using namespace llm::test;
using Catch::Contains;

namespace {

struct Request {
  std::string path;
  std::string range;  // the Range header, empty when none
  bool auth = false;  // an Authorization header came
};

// The Hub's routes over local folders: ORG/NAME -> a fixture folder.
class FakeHub {
 public:
  struct Repo {
    std::string dir;
    std::vector<std::string> extra_listed;  // listed but not served (must not be fetched)
    std::string token;                      // required when not empty
    std::string drop_file;                  // its first download stops halfway
  };

  explicit FakeHub(std::map<std::string, Repo> repos) : repos_(std::move(repos)) {
    svr_.Get(R"(/api/models/([^/]+)/([^/]+)/revision/([^/]+))", [this](const httplib::Request& req,
                                                                       httplib::Response& res) {
      const Repo* r = repo(req, res, req.matches[1].str() + "/" + req.matches[2].str());
      if (r == nullptr) return;
      nlohmann::json sib = nlohmann::json::array();
      for (const auto& e : fs::directory_iterator(r->dir))
        sib.push_back({{"rfilename", e.path().filename().string()}});
      for (const std::string& f : r->extra_listed) sib.push_back({{"rfilename", f}});
      res.set_content(nlohmann::json{{"id", "x"}, {"siblings", sib}}.dump(), "application/json");
    });
    // Weights go through a redirect to another host name (localhost), as the Hub
    // sends LFS files to its CDN.
    svr_.Get(R"(/([^/]+)/([^/]+)/resolve/([^/]+)/(.+))", [this](const httplib::Request& req,
                                                                httplib::Response& res) {
      const std::string id = req.matches[1].str() + "/" + req.matches[2].str();
      const std::string file = req.matches[4].str();
      if (repo(req, res, id) == nullptr) return;
      if (file.size() > 12 && file.substr(file.size() - 12) == ".safetensors") {
        res.set_redirect("http://localhost:" + std::to_string(port_) + "/cdn/" + id + "/" + file);
        return;
      }
      serve(res, id, file);
    });
    svr_.Get(R"(/cdn/([^/]+)/([^/]+)/(.+))",
             [this](const httplib::Request& req, httplib::Response& res) {
               record(req);
               serve(res, req.matches[1].str() + "/" + req.matches[2].str(), req.matches[3].str());
             });
    port_ = svr_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { svr_.listen_after_bind(); });
  }
  ~FakeHub() {
    svr_.stop();
    thread_.join();
  }

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::vector<Request> requests() {
    std::lock_guard<std::mutex> l(mu_);
    return requests_;
  }
  // Requests whose path ends with suffix.
  std::vector<Request> requests_for(const std::string& suffix) {
    std::vector<Request> out;
    for (const Request& r : requests())
      if (r.path.size() >= suffix.size() &&
          r.path.compare(r.path.size() - suffix.size(), suffix.size(), suffix) == 0)
        out.push_back(r);
    return out;
  }

 private:
  void record(const httplib::Request& req) {
    std::lock_guard<std::mutex> l(mu_);
    requests_.push_back({req.path, req.get_header_value("Range"), req.has_header("Authorization")});
  }

  const Repo* repo(const httplib::Request& req, httplib::Response& res, const std::string& id) {
    record(req);
    auto it = repos_.find(id);
    if (it == repos_.end()) {
      res.status = 404;
      res.set_content("Repository not found", "text/plain");
      return nullptr;
    }
    if (!it->second.token.empty() &&
        req.get_header_value("Authorization") != "Bearer " + it->second.token) {
      res.status = 401;
      res.set_content("Invalid credentials", "text/plain");
      return nullptr;
    }
    return &it->second;
  }

  void serve(httplib::Response& res, const std::string& id, const std::string& file) {
    const Repo& r = repos_.at(id);
    const std::string path = r.dir + "/" + file;
    if (file.find("..") != std::string::npos || !fs::is_regular_file(path)) {
      res.status = 404;
      res.set_content("Entry not found", "text/plain");
      return;
    }
    auto body = std::make_shared<std::string>(read_file(path));
    bool drop = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      drop = file == r.drop_file && dropped_.insert(id + "/" + file).second;
    }
    if (drop) {
      // Announces the whole length, sends half, then closes the connection.
      res.set_content_provider(body->size(), "application/octet-stream",
                               [body](size_t offset, size_t, httplib::DataSink& sink) {
                                 if (offset > 0) return false;
                                 sink.write(body->data(), body->size() / 2);
                                 return true;
                               });
      return;
    }
    // cpp-httplib answers a Range request with 206 and the slice of this body.
    res.set_content(*body, "application/octet-stream");
  }

  std::map<std::string, Repo> repos_;
  httplib::Server svr_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<Request> requests_;
  std::set<std::string> dropped_;
};

HubOptions hub(const FakeHub& h, const TempDir& cache, const std::string& token = "") {
  HubOptions o;
  o.endpoint = h.endpoint();
  o.cache_dir = cache.path();
  o.token = token;
  return o;
}

std::vector<float> logits_of(const std::string& path, const std::vector<int32_t>& ids) {
  auto backend = make_cpu_backend(2);
  auto m = Model::load(path, *backend);
  return Session(*m).forward(ids, true);
}

bool same_bytes(const std::string& a, const std::string& b) { return read_file(a) == read_file(b); }

}  // namespace

TEST_CASE("hf:// URIs", "[hf]") {
  CHECK(is_hf_uri("hf://a/b"));
  CHECK_FALSE(is_hf_uri("tests/data/models/llama2"));
  HfRef r = parse_hf_uri("hf://meta-llama/Llama-3.2-1B");
  CHECK(r.org == "meta-llama");
  CHECK(r.name == "Llama-3.2-1B");
  CHECK(r.revision == "main");
  CHECK(r.file.empty());
  r = parse_hf_uri("hf://TheBloke/Mistral-7B-GGUF@v1.0/mistral-7b.Q4_K_M.gguf");
  CHECK(r.name == "Mistral-7B-GGUF");
  CHECK(r.revision == "v1.0");
  CHECK(r.file == "mistral-7b.Q4_K_M.gguf");
  for (const char* bad :
       {"hf://", "hf://org", "hf://org/", "hf://../x", "hf://org/name/../../etc/passwd.gguf",
        "hf://org/name/config.json", "hf://org/name@", "hf://org/na me"}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH(parse_hf_uri(bad), Contains("hf://ORG/NAME"));
  }
}

TEST_CASE("hf repository files: configs, tokenizer, the indexed shards only", "[hf]") {
  const std::vector<std::string> listing = {"README.md",
                                            "config.json",
                                            "consolidated.safetensors",
                                            "generation_config.json",
                                            "model-00001-of-00002.safetensors",
                                            "model-00002-of-00002.safetensors",
                                            "model.safetensors.index.json",
                                            "tokenizer.json",
                                            "tokenizer_config.json",
                                            "original/params.json"};
  const std::string index =
      R"({"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})";
  CHECK(hf_repo_files(listing, index) ==
        std::vector<std::string>{"config.json", "generation_config.json", "tokenizer.json",
                                 "tokenizer_config.json", "model.safetensors.index.json",
                                 "model-00001-of-00002.safetensors",
                                 "model-00002-of-00002.safetensors"});
  CHECK(hf_repo_files({"config.json", "model.safetensors", "extra.safetensors"}, "") ==
        std::vector<std::string>{"config.json", "model.safetensors"});
  CHECK(hf_repo_files({"config.json", "a.safetensors", "sub/b.safetensors"}, "") ==
        std::vector<std::string>{"config.json", "a.safetensors"});
  // A PEFT adapter's repository (--lora hf://ORG/NAME).
  CHECK(hf_repo_files({"README.md", "adapter_config.json", "adapter_model.safetensors"}, "") ==
        std::vector<std::string>{"adapter_config.json", "adapter_model.safetensors"});
  CHECK_THROWS_WITH(hf_repo_files({"config.json"}, R"({"weight_map":{"a":"gone.safetensors"}})"),
                    Contains("gone.safetensors"));
  CHECK_THROWS_WITH(hf_repo_files({"config.json"}, R"({"weight_map":{"a":"../x.safetensors"}})"),
                    Contains("bad shard name"));
}

TEST_CASE("hf:// repository: downloaded byte for byte, loads with the reference logits", "[hf]") {
  FakeHub h({{"org/llama2", {model_dir("llama2"), {"consolidated.safetensors"}, "", ""}},
             {"org/sharded", {model_dir("llama_bf16_sharded"), {}, "", ""}}});
  TempDir cache;
  std::vector<std::pair<std::string, uint64_t>> progress;
  HubOptions o = hub(h, cache);
  o.progress = [&](const std::string& f, uint64_t done, uint64_t total) {
    if (done == total) progress.push_back({f, total});
  };
  const std::string dir = hf_fetch(parse_hf_uri("hf://org/llama2"), o);
  CHECK(dir == cache.path() + "/hf/org/llama2/main");
  CHECK(same_bytes(dir + "/config.json", model_dir("llama2") + "/config.json"));
  CHECK(same_bytes(dir + "/model.safetensors", model_dir("llama2") + "/model.safetensors"));
  CHECK_FALSE(fs::exists(dir + "/model-f32.gguf"));  // not needed by the folder
  CHECK_FALSE(fs::exists(dir + "/model.safetensors.part"));
  CHECK(h.requests_for("consolidated.safetensors").empty());
  CHECK(h.requests_for("/cdn/org/llama2/model.safetensors").size() == 1);  // redirect followed
  const auto size = fs::file_size(model_dir("llama2") + "/model.safetensors");
  CHECK(std::find(progress.begin(), progress.end(),
                  std::make_pair(std::string("model.safetensors"), uint64_t(size))) !=
        progress.end());
  const Reference ref = load_reference("llama2");
  CHECK(max_rel_error(logits_of(dir, ref.input_ids), ref.logits) <= 1e-4);

  // A complete repository is served from the cache without the network.
  const size_t before = h.requests().size();
  CHECK(hf_fetch(parse_hf_uri("hf://org/llama2"), o) == dir);
  CHECK(h.requests().size() == before);

  SECTION("sharded bf16 through its index") {
    const std::string sd = hf_fetch(parse_hf_uri("hf://org/sharded"), o);
    for (const char* f : {"model.safetensors.index.json", "model-00001-of-00004.safetensors",
                          "model-00004-of-00004.safetensors", "config.json"})
      CHECK(same_bytes(sd + "/" + f, model_dir("llama_bf16_sharded") + "/" + f));
    const Reference r = load_reference("llama_bf16_sharded");
    CHECK(max_rel_error(logits_of(sd, r.input_ids), r.logits) <= 1e-2);
    CHECK(max_rel_error(logits_of(sd, r.input_ids),
                        logits_of(model_dir("llama_bf16_sharded"), r.input_ids)) <= 1e-6);
  }
}

TEST_CASE("hf:// GGUF file: a dropped connection is resumed with a Range request", "[hf]") {
  FakeHub h({{"org/flaky", {model_dir("llama2"), {}, "", "model-f32.gguf"}}});
  TempDir cache;
  const std::string src = model_dir("llama2") + "/model-f32.gguf";
  const std::string got = hf_fetch(parse_hf_uri("hf://org/flaky/model-f32.gguf"), hub(h, cache));
  CHECK(got == cache.path() + "/hf/org/flaky/main/model-f32.gguf");
  CHECK(same_bytes(got, src));
  const std::vector<Request> reqs = h.requests_for("/resolve/main/model-f32.gguf");
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[0].range.empty());
  CHECK(reqs[1].range == "bytes=" + std::to_string(fs::file_size(src) / 2) + "-");
  CHECK_FALSE(fs::exists(got + ".part"));
  const Reference ref = load_reference("llama2");
  CHECK(max_rel_error(logits_of(got, ref.input_ids), ref.logits) <= 1e-4);
}

TEST_CASE("hf:// download resumes a .part left by an earlier run", "[hf]") {
  FakeHub h({{"org/llama2", {model_dir("llama2"), {}, "", ""}}});
  TempDir cache;
  const std::string src = model_dir("llama2") + "/model-f32.gguf";
  const std::string dst = cache.path() + "/hf/org/llama2/main/model-f32.gguf";
  fs::create_directories(fs::path(dst).parent_path());
  write_file(dst + ".part", read_file(src).substr(0, 1000));
  CHECK(hf_fetch(parse_hf_uri("hf://org/llama2/model-f32.gguf"), hub(h, cache)) == dst);
  CHECK(same_bytes(dst, src));
  const std::vector<Request> reqs = h.requests_for("model-f32.gguf");
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].range == "bytes=1000-");

  // A .part that is no prefix (longer than the file): the server refuses the range
  // (416) and the file is fetched again from the start.
  fs::remove(dst);
  write_file(dst + ".part", std::string(fs::file_size(src) + 10, 'x'));
  CHECK(hf_fetch(parse_hf_uri("hf://org/llama2/model-f32.gguf"), hub(h, cache)) == dst);
  CHECK(same_bytes(dst, src));
}

TEST_CASE("hf:// errors: 401 without the token, 404, no server", "[hf]") {
  TempDir gguf_only;
  write_file(gguf_only.file("tiny-Q4_K_M.gguf"),
             read_file(model_dir("llama2") + "/model-f32.gguf"));
  FakeHub h({{"org/gated", {model_dir("llama2"), {}, "secret", ""}},
             {"org/llama2", {model_dir("llama2"), {}, "", ""}},
             {"org/gguf-only", {gguf_only.path(), {}, "", ""}}});
  TempDir cache;
  CHECK_THROWS_WITH(hf_fetch(parse_hf_uri("hf://org/gguf-only"), hub(h, cache)),
                    Contains("no safetensors weights") && Contains("tiny-Q4_K_M.gguf"));
  CHECK_THROWS_WITH(hf_fetch(parse_hf_uri("hf://org/gated"), hub(h, cache)),
                    Contains("HTTP 401") && Contains("set HF_TOKEN"));
  CHECK_THROWS_WITH(hf_fetch(parse_hf_uri("hf://org/gated"), hub(h, cache, "wrong")),
                    Contains("HTTP 401") && Contains("not accepted"));
  CHECK_THROWS_WITH(hf_fetch(parse_hf_uri("hf://org/gated/model-f32.gguf"), hub(h, cache)),
                    Contains("HTTP 401"));
  const std::string dir = hf_fetch(parse_hf_uri("hf://org/gated"), hub(h, cache, "secret"));
  CHECK(same_bytes(dir + "/model.safetensors", model_dir("llama2") + "/model.safetensors"));
  // The token goes to the endpoint, not to the CDN host the weights redirect to.
  const std::vector<Request> resolve = h.requests_for("/org/gated/resolve/main/model.safetensors");
  const std::vector<Request> cdn = h.requests_for("/cdn/org/gated/model.safetensors");
  REQUIRE(resolve.size() == 1);
  CHECK(resolve[0].auth);
  REQUIRE(cdn.size() == 1);
  CHECK_FALSE(cdn[0].auth);

  CHECK_THROWS_WITH(hf_fetch(parse_hf_uri("hf://org/nope"), hub(h, cache)),
                    Contains("HTTP 404") && Contains("/api/models/org/nope/revision/main"));
  CHECK_THROWS_WITH(hf_fetch(parse_hf_uri("hf://org/llama2/nope.gguf"), hub(h, cache)),
                    Contains("HTTP 404") && Contains("/org/llama2/resolve/main/nope.gguf"));
  CHECK_FALSE(fs::exists(cache.path() + "/hf/org/llama2/main/nope.gguf.part"));

  HubOptions dead = hub(h, cache);
  dead.endpoint = "http://127.0.0.1:1";
  CHECK_THROWS_WITH(hf_fetch(parse_hf_uri("hf://org/llama2"), dead),
                    Contains("cannot reach") && Contains("could not connect"));
  CHECK_THROWS_WITH(
      hf_fetch(parse_hf_uri("hf://org/llama2/x.gguf"), dead),
      Contains("cannot download") && Contains("127.0.0.1:1") && Contains("could not connect"));
}

TEST_CASE("llmcli pull and generate take hf:// models", "[hf][cli]") {
  FakeHub h({{"org/llama2", {model_dir("llama2"), {}, "", ""}}});
  TempDir cache;
  ScopedEnv e1("HF_ENDPOINT", h.endpoint().c_str()), e2("LLMRT_CACHE", cache.path().c_str());
  const CommandResult pull = run_cli({"pull", "hf://org/llama2/model-f32.gguf"});
  REQUIRE(pull.exit_code == 0);
  CHECK(pull.out == cache.path() + "/hf/org/llama2/main/model-f32.gguf\n");
  CHECK(pull.err.find("download model-f32.gguf") != std::string::npos);

  const Reference ref = load_reference("llama2");
  const CommandResult gen = run_cli({"generate", "hf://org/llama2", "--device", "cpu",
                                     "--token-ids", join_ids(ref.input_ids), "-n", "16",
                                     "--temperature", "0", "--ignore-eos", "--json"});
  REQUIRE(gen.exit_code == 0);
  CHECK(nlohmann::json::parse(gen.out)["ids"].get<std::vector<int32_t>>() == ref.greedy_ids);

  const CommandResult bad = run_cli({"pull", "hf://org/missing"});
  CHECK(bad.exit_code != 0);
  CHECK(bad.err.find("error: HTTP 404") != std::string::npos);
  CHECK(run_cli({"pull", "org/llama2"}).err.find("hf://ORG/NAME") != std::string::npos);
}

TEST_CASE("llmcli --lora takes an adapter from the Hub", "[hf][cli][lora]") {
  // A rank-2 adapter of the llama2 fixture's layer-0 q_proj, in PEFT's layout.
  TempDir adapter;
  const SafetensorsFile base(model_dir("llama2") + "/model.safetensors");
  const Shape w = base.tensors().at("model.layers.0.self_attn.q_proj.weight").shape;
  std::vector<float> a(static_cast<size_t>(2 * w[1]), 0.25f), b(static_cast<size_t>(w[0] * 2));
  for (size_t i = 0; i < b.size(); i++) b[i] = static_cast<float>(i % 7) * 0.1f - 0.3f;
  const std::string q = "base_model.model.model.layers.0.self_attn.q_proj";
  write_safetensors(adapter.file("adapter_model.safetensors"),
                    {{q + ".lora_A.weight", {DType::F32, {2, w[1]}, a.data(), a.size() * 4}},
                     {q + ".lora_B.weight", {DType::F32, {w[0], 2}, b.data(), b.size() * 4}}});
  write_file(adapter.file("adapter_config.json"),
             R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4})");
  FakeHub h({{"org/adapter", {adapter.path(), {}, "", ""}}});
  TempDir cache, out;
  ScopedEnv e1("HF_ENDPOINT", h.endpoint().c_str()), e2("LLMRT_CACHE", cache.path().c_str());
  auto logits = [&](const std::string& lora, const std::string& file) {
    const CommandResult r =
        run_cli({"logits", model_dir("llama2"), "--device", "cpu", "--token-ids", "1,2,3", "--out",
                 out.file(file), "--lora", lora});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return read_file(out.file(file));
  };
  CHECK(logits("hf://org/adapter", "hub.safetensors") ==
        logits(adapter.path(), "local.safetensors"));
  CHECK(fs::exists(cache.path() + "/hf/org/adapter/main/adapter_config.json"));
}
