// Tests for MappedFile, SafetensorsFile, WeightStore and write_safetensors.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/formats/atomic_file.h"
#include "core/formats/mapped_file.h"
#include "core/formats/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

const std::string kModels = llm::test::data_dir() + "/models";

using llm::test::TempDir;

template <typename T>
T at(const llm::HostTensor& t, size_t i) {
  T v;
  std::memcpy(&v, static_cast<const uint8_t*>(t.data) + i * sizeof(T), sizeof(T));
  return v;
}

// Writes a safetensors file by hand: length prefix, header text, then data bytes.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header.size();
  for (int i = 0; i < 8; i++, n >>= 8) out.put(static_cast<char>(n & 0xff));
  out << header << std::string(data_bytes, '\0');
}

template <typename T>
llm::HostTensor host(llm::DType dt, llm::Shape shape, const std::vector<T>& v) {
  llm::HostTensor t;
  t.dtype = dt;
  t.shape = shape;
  t.data = v.data();
  t.nbytes = v.size() * sizeof(T);
  return t;
}

uint64_t header_len(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint8_t b[8];
  in.read(reinterpret_cast<char*>(b), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
  return n;
}

std::string header_text(const std::string& path) {
  const uint64_t n = header_len(path);
  std::ifstream in(path, std::ios::binary);
  in.seekg(8);
  std::string s(n, '\0');
  in.read(&s[0], static_cast<std::streamsize>(n));
  return s;
}

}  // namespace

TEST_CASE("MappedFile maps a file and reports errors", "[safetensors]") {
  TempDir tmp;
  const std::string missing = tmp.file("nope.bin");
  REQUIRE_THROWS_WITH(llm::MappedFile(missing),
                      "cannot open '" + missing + "': No such file or directory");
  REQUIRE_THROWS_WITH(llm::MappedFile(tmp.path()), Contains("not a regular file"));

  const std::string empty = tmp.file("empty.bin");
  std::ofstream(empty).close();
  llm::MappedFile e(empty);
  CHECK(e.size() == 0);
  CHECK(e.data() == nullptr);
  CHECK(e.path() == empty);

  const std::string hello = tmp.file("hello.bin");
  std::ofstream(hello) << "hello";
  llm::MappedFile h(hello);
  REQUIRE(h.size() == 5);
  CHECK(std::string(reinterpret_cast<const char*>(h.data()), 5) == "hello");
}

TEST_CASE("SafetensorsFile reads the reference fixture", "[safetensors]") {
  llm::SafetensorsFile f(kModels + "/llama3/reference.safetensors");
  const auto& ts = f.tensors();
  REQUIRE(ts.size() == 3);
  CHECK(f.metadata().empty());

  const llm::HostTensor& ids = ts.at("input_ids");
  CHECK(ids.dtype == llm::DType::I64);
  CHECK(ids.shape == llm::Shape{24});
  CHECK(ids.nbytes == 24 * 8);
  CHECK(at<int64_t>(ids, 0) == 18);
  CHECK(at<int64_t>(ids, 1) == 74);
  CHECK(at<int64_t>(ids, 23) == 233);

  const llm::HostTensor& logits = ts.at("logits");
  CHECK(logits.dtype == llm::DType::F32);
  CHECK(logits.shape == llm::Shape{24, 256});
  CHECK(logits.nbytes == 24 * 256 * 4);
  CHECK(at<float>(logits, 0) == Approx(0.03441247f));
  CHECK(at<float>(logits, 1) == Approx(-2.850081f));

  const llm::HostTensor& greedy = ts.at("greedy_ids");
  CHECK(greedy.dtype == llm::DType::I64);
  CHECK(greedy.shape == llm::Shape{16});
  CHECK(at<int64_t>(greedy, 0) == 88);
  CHECK(at<int64_t>(greedy, 15) == 96);
}

TEST_CASE("SafetensorsFile reads model fixtures", "[safetensors]") {
  llm::SafetensorsFile f(kModels + "/llama3/model.safetensors");
  CHECK(f.tensors().size() == 21);
  CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}});
  const llm::HostTensor& norm = f.tensors().at("model.norm.weight");
  CHECK(norm.shape == llm::Shape{64});
  CHECK(at<float>(norm, 0) == Approx(1.0104436f));
  CHECK(f.tensors().at("model.layers.0.self_attn.k_proj.weight").shape == llm::Shape{32, 64});
  CHECK(f.tensors().at("model.layers.1.mlp.down_proj.weight").shape == llm::Shape{64, 160});
  CHECK(f.tensors().at("lm_head.weight").shape == llm::Shape{256, 64});

  // Qwen2 carries q/k/v biases and no lm_head (tied embeddings).
  llm::SafetensorsFile q(kModels + "/qwen2/model.safetensors");
  CHECK(q.tensors().size() == 26);
  CHECK(q.tensors().at("model.layers.0.self_attn.q_proj.bias").shape == llm::Shape{64});
  CHECK(q.tensors().at("model.layers.1.self_attn.v_proj.bias").shape == llm::Shape{32});
  CHECK(q.tensors().count("lm_head.weight") == 0);
}

TEST_CASE("WeightStore::open_dir takes model.safetensors when present", "[safetensors]") {
  auto store = llm::WeightStore::open_dir(kModels + "/mistral");
  // model.safetensors (21 tensors), not reference.safetensors beside it.
  const std::vector<std::string> names = store->names();
  CHECK(names.size() == 21);
  CHECK(std::is_sorted(names.begin(), names.end()));
  const llm::HostTensor* emb = store->find("model.embed_tokens.weight");
  REQUIRE(emb != nullptr);
  CHECK(emb->shape == llm::Shape{256, 64});
  CHECK(store->find("logits") == nullptr);
  CHECK(store->find("no.such.tensor") == nullptr);
}

TEST_CASE("write_safetensors round trip", "[safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("rt.safetensors");
  const std::vector<float> f32 = {1.f, -2.f, 3.5f, 0.f, 1e-3f, 7.f};
  const std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x7bff};  // odd byte count: 6
  const std::vector<uint16_t> bf16 = {0x3f80, 0x4000, 0xbf80, 0x0000};
  const std::vector<int32_t> i32 = {1, -2, 3, 2147483647, -5};
  const std::vector<int64_t> i64 = {-1, 1LL << 40};
  const std::vector<float> scalar = {42.f};
  const std::vector<float> empty;
  const std::vector<std::pair<std::string, llm::HostTensor>> in = {
      {"z.f32", host(llm::DType::F32, {2, 3}, f32)},
      {"b.f16", host(llm::DType::F16, {3}, f16)},
      {"c.bf16", host(llm::DType::BF16, {2, 2}, bf16)},
      {"a.i32", host(llm::DType::I32, {5}, i32)},
      {"m.i64", host(llm::DType::I64, {1, 1, 2, 1}, i64)},
      {"scalar", host(llm::DType::F32, llm::Shape{}, scalar)},
      {"empty", host(llm::DType::F32, {0, 4}, empty)},
  };
  llm::write_safetensors(path, in, {{"format", "pt"}, {"note", "round trip"}});
  CHECK_FALSE(fs::exists(path + ".tmp" + std::to_string(::getpid())));

  // Data starts 8-byte aligned and the header keys come out sorted.
  const uint64_t n = header_len(path);
  CHECK((8 + n) % 8 == 0);
  const std::string text = header_text(path);
  const size_t pa = text.find("\"a.i32\""), pb = text.find("\"b.f16\""),
               pm = text.find("\"__metadata__\""), pz = text.find("\"z.f32\"");
  REQUIRE(pa != std::string::npos);
  REQUIRE(pz != std::string::npos);
  CHECK(pm < pa);
  CHECK(pa < pb);
  CHECK(pb < pz);

  llm::SafetensorsFile f(path);
  REQUIRE(f.tensors().size() == in.size());
  CHECK(f.metadata() ==
        std::map<std::string, std::string>{{"format", "pt"}, {"note", "round trip"}});
  llm::MappedFile raw(path);
  for (const auto& [name, t] : in) {
    INFO(name);
    const llm::HostTensor& r = f.tensors().at(name);
    CHECK(r.dtype == t.dtype);
    CHECK(r.shape == t.shape);
    REQUIRE(r.nbytes == t.nbytes);
    if (t.nbytes > 0) CHECK(std::memcmp(r.data, t.data, t.nbytes) == 0);
    // Widest-first data order keeps every tensor aligned to its element size.
    const size_t off = static_cast<const uint8_t*>(r.data) - raw.data();
    CHECK(off % llm::dtype_info(t.dtype).block_bytes == 0);
  }
  CHECK(f.tensors().at("scalar").shape.rank == 0);
  CHECK(at<float>(f.tensors().at("scalar"), 0) == 42.f);
  CHECK(at<int64_t>(f.tensors().at("m.i64"), 1) == (1LL << 40));

  // Without metadata there is no __metadata__ entry; overwriting an existing file works.
  const std::vector<float> two = {1, 2};
  llm::write_safetensors(path, {{"x", host(llm::DType::F32, {2}, two)}});
  CHECK(header_text(path).find("__metadata__") == std::string::npos);
  llm::SafetensorsFile g(path);
  CHECK(g.tensors().size() == 1);
  CHECK(g.metadata().empty());
}

// --out through a symlink writes its target (the link stays a link), and into a FIFO
// in place: the atomic rename replaced both (and /dev/full) with regular files.
TEST_CASE("write_file_atomic keeps links and special files", "[safetensors]") {
  TempDir dir;
  namespace fs = std::filesystem;
  auto write_text = [](const std::string& path, const std::string& text) {
    llm::write_file_atomic(path, [&](std::ostream& o) { o << text; });
  };
  auto read_text = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  write_text(dir.file("a.txt"), "one");
  CHECK(read_text(dir.file("a.txt")) == "one");
  fs::create_symlink(dir.file("a.txt"), dir.file("link"));
  write_text(dir.file("link"), "two");
  CHECK(fs::is_symlink(fs::symlink_status(dir.file("link"))));
  CHECK(read_text(dir.file("a.txt")) == "two");

  REQUIRE(mkfifo(dir.file("fifo").c_str(), 0600) == 0);
  std::string got;
  std::thread reader([&] { got = read_text(dir.file("fifo")); });
  write_text(dir.file("fifo"), "three");
  reader.join();
  CHECK(got == "three");
  CHECK(fs::is_fifo(fs::status(dir.file("fifo"))));
  CHECK_FALSE(fs::exists(dir.file("fifo.tmp") + std::to_string(getpid())));

  CHECK_THROWS_WITH(write_text(dir.path(), "x"), Catch::Contains("it is a directory"));
  if (fs::exists("/dev/full"))
    CHECK_THROWS_WITH(write_text("/dev/full", std::string(1 << 16, 'x')),
                      Catch::Contains("No space left on device"));
}

TEST_CASE("write_safetensors rejects bad input", "[safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("bad.safetensors");
  // q8_0/q4_0 rows are stored as U8 blocks (tests/test_convert.cpp); a scalar has no row.
  const std::vector<uint8_t> q(34);
  llm::HostTensor qt;
  qt.dtype = llm::DType::Q8_0;
  qt.shape = {};
  qt.data = q.data();
  qt.nbytes = q.size();
  REQUIRE_THROWS_WITH(llm::write_safetensors(path, {{"q", qt}}),
                      Contains("tensor 'q' is a q8_0 scalar"));

  const std::vector<float> v = {1, 2, 3};
  REQUIRE_THROWS_WITH(llm::write_safetensors(path, {{"w", host(llm::DType::F32, {4}, v)}}),
                      Contains("tensor 'w' has 12 bytes but f32 [4] needs 16"));
  REQUIRE_THROWS_WITH(llm::write_safetensors(path, {{"w", host(llm::DType::F32, {3}, v)},
                                                    {"w", host(llm::DType::F32, {3}, v)}}),
                      Contains("duplicate tensor 'w'"));
  REQUIRE_THROWS_WITH(llm::write_safetensors(tmp.file("no/such/dir/x.safetensors"),
                                             {{"w", host(llm::DType::F32, {3}, v)}}),
                      Contains("cannot create"));
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("WeightStore::open_dir follows a sharded index", "[safetensors]") {
  TempDir tmp;
  const std::vector<float> a = {1, 2, 3, 4};
  const std::vector<float> b = {5, 6};
  const std::vector<int64_t> c = {7, 8, 9};
  const std::vector<float> extra = {0};
  llm::write_safetensors(
      tmp.file("model-00001-of-00002.safetensors"),
      {{"a", host(llm::DType::F32, {2, 2}, a)}, {"b", host(llm::DType::F32, {2}, b)}});
  llm::write_safetensors(
      tmp.file("model-00002-of-00002.safetensors"),
      {{"c", host(llm::DType::I64, {3}, c)}, {"unlisted", host(llm::DType::F32, {1}, extra)}});
  // A stray file beside the index must be ignored, even with a clashing name.
  llm::write_safetensors(tmp.file("stray.safetensors"), {{"a", host(llm::DType::F32, {1}, extra)}});
  const nlohmann::json index = {{"metadata", {{"total_size", 52}}},
                                {"weight_map",
                                 {{"a", "model-00001-of-00002.safetensors"},
                                  {"b", "model-00001-of-00002.safetensors"},
                                  {"c", "model-00002-of-00002.safetensors"}}}};
  std::ofstream(tmp.file("model.safetensors.index.json")) << index.dump(2);

  auto store = llm::WeightStore::open_dir(tmp.path());
  CHECK(store->names() == std::vector<std::string>{"a", "b", "c"});
  const llm::HostTensor* ta = store->find("a");
  const llm::HostTensor* tc = store->find("c");
  REQUIRE(ta != nullptr);
  REQUIRE(tc != nullptr);
  CHECK(ta->shape == llm::Shape{2, 2});
  CHECK(at<float>(*ta, 3) == 4.f);
  CHECK(at<float>(*store->find("b"), 1) == 6.f);
  CHECK(tc->dtype == llm::DType::I64);
  CHECK(at<int64_t>(*tc, 2) == 9);
  CHECK(store->find("unlisted") == nullptr);

  SECTION("missing shard") {
    fs::remove(tmp.file("model-00002-of-00002.safetensors"));
    REQUIRE_THROWS_WITH(llm::WeightStore::open_dir(tmp.path()),
                        Contains("shard 'model-00002-of-00002.safetensors' is missing"));
  }
  SECTION("index names a tensor its shard lacks") {
    nlohmann::json bad = index;
    bad["weight_map"]["d"] = "model-00002-of-00002.safetensors";
    std::ofstream(tmp.file("model.safetensors.index.json")) << bad.dump();
    REQUIRE_THROWS_WITH(llm::WeightStore::open_dir(tmp.path()),
                        Contains("tensor 'd' is listed in shard 'model-00002-of-00002."
                                 "safetensors' but that file does not contain it"));
  }
  SECTION("bad index JSON") {
    std::ofstream(tmp.file("model.safetensors.index.json")) << "{\"weight_map\": ";
    REQUIRE_THROWS_WITH(llm::WeightStore::open_dir(tmp.path()),
                        Contains("model.safetensors.index.json: invalid JSON"));
  }
  SECTION("index without weight_map") {
    std::ofstream(tmp.file("model.safetensors.index.json")) << "{\"metadata\": {}}";
    REQUIRE_THROWS_WITH(llm::WeightStore::open_dir(tmp.path()),
                        Contains("missing 'weight_map' object"));
  }
}

TEST_CASE("WeightStore::open_dir errors", "[safetensors]") {
  TempDir tmp;
  REQUIRE_THROWS_WITH(llm::WeightStore::open_dir(tmp.path()),
                      "no .safetensors weights in '" + tmp.path() + "'");
  const std::string gone = tmp.file("gone");
  REQUIRE_THROWS_WITH(llm::WeightStore::open_dir(gone),
                      "weights directory '" + gone + "' does not exist");

  const std::vector<float> v = {1, 2};
  llm::write_safetensors(tmp.file("a.safetensors"), {{"w", host(llm::DType::F32, {2}, v)}});
  llm::write_safetensors(tmp.file("b.safetensors"), {{"w", host(llm::DType::F32, {2}, v)}});
  REQUIRE_THROWS_WITH(llm::WeightStore::open_dir(tmp.path()),
                      "duplicate tensor 'w' in '" + tmp.file("b.safetensors") + "' (already in '" +
                          tmp.file("a.safetensors") + "')");
}

TEST_CASE("WeightStore::add_owned keeps and replaces tensors", "[safetensors]") {
  TempDir tmp;
  const std::vector<uint16_t> half = {0x3c00, 0x4000};
  llm::write_safetensors(tmp.file("m.safetensors"), {{"w", host(llm::DType::F16, {2}, half)}});
  auto store = llm::WeightStore::open_dir(tmp.path());
  REQUIRE(store->find("w")->dtype == llm::DType::F16);

  // A converted copy supersedes the mapped original under the same name.
  std::vector<uint8_t> bytes(8);
  const float conv[2] = {1.f, 2.f};
  std::memcpy(bytes.data(), conv, 8);
  store->add_owned("w", llm::DType::F32, {2}, bytes);
  const llm::HostTensor* w = store->find("w");
  REQUIRE(w != nullptr);
  CHECK(w->dtype == llm::DType::F32);
  CHECK(w->nbytes == 8);
  CHECK(at<float>(*w, 1) == 2.f);

  store->add_owned("extra", llm::DType::I32, {1, 1}, std::vector<uint8_t>(4, 0));
  CHECK(store->names() == std::vector<std::string>{"extra", "w"});
  CHECK(store->find("w")->data == w->data);  // earlier pointers stay valid
  REQUIRE_THROWS_WITH(store->add_owned("bad", llm::DType::F32, {3}, std::vector<uint8_t>(8)),
                      Contains("tensor 'bad': 8 bytes given but f32 [3] needs 12"));
  CHECK(store->find("bad") == nullptr);
}

TEST_CASE("SafetensorsFile rejects truncated files", "[safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("model.safetensors");
  fs::copy_file(kModels + "/llama3/model.safetensors", path);
  const uintmax_t size = fs::file_size(path);
  REQUIRE(size == 478560);
  fs::resize_file(path, size - 100);
  REQUIRE_THROWS_WITH(llm::SafetensorsFile(path),
                      "'" + path +
                          "' is truncated: tensor 'model.norm.weight' needs bytes up to "
                          "478560 but the file has 478460");

  fs::resize_file(path, 1000);  // cuts into the header
  REQUIRE_THROWS_WITH(llm::SafetensorsFile(path),
                      "'" + path +
                          "' is truncated: the header needs 2144 bytes but the file has "
                          "1000");
  fs::resize_file(path, 5);
  REQUIRE_THROWS_WITH(llm::SafetensorsFile(path), Contains("is truncated: 5 bytes"));
  fs::resize_file(path, 0);
  REQUIRE_THROWS_WITH(llm::SafetensorsFile(path), Contains("is truncated: 0 bytes"));
}

TEST_CASE("SafetensorsFile validates the header", "[safetensors]") {
  TempDir tmp;
  const std::string path = tmp.file("model.safetensors");
  auto open_with = [&](const std::string& header, size_t data_bytes) {
    write_raw(path, header, data_bytes);
    llm::SafetensorsFile f(path);
  };

  REQUIRE_THROWS_WITH(open_with("{\"x\": {\"dtype\": \"F32\", ", 16),
                      Contains(path + ": invalid safetensors header JSON: "));
  REQUIRE_THROWS_WITH(open_with("[1, 2]", 0), Contains("header is not a JSON object"));
  REQUIRE_THROWS_WITH(open_with(R"({"x":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", 4),
                      path + ": tensor 'x' has unsupported dtype F8_E4M3");
  REQUIRE_THROWS_WITH(open_with(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", 16),
                      path + ": tensor 'x' has 12 bytes but F32 [4] needs 16");
  REQUIRE_THROWS_WITH(
      open_with(R"({"x":{"dtype":"F32","shape":[1,1,1,1,2],"data_offsets":[0,8]}})", 8),
      Contains("tensor 'x' has rank 5"));
  REQUIRE_THROWS_WITH(open_with(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
                      Contains("tensor 'x' has an invalid shape"));
  REQUIRE_THROWS_WITH(open_with(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4),
                      Contains("tensor 'x' has invalid data_offsets"));
  REQUIRE_THROWS_WITH(open_with(R"({"x":{"dtype":"F32","shape":[4]}})", 16),
                      Contains("tensor 'x' has invalid data_offsets"));
  REQUIRE_THROWS_WITH(open_with(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8),
                      Contains("is truncated: tensor 'x' needs bytes up to"));
  REQUIRE_THROWS_WITH(
      open_with(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4),
      Contains("is too large"));

  // Metadata values that are not strings are kept as JSON text.
  write_raw(path,
            R"({"__metadata__":{"format":"pt","n":3},"s":{"dtype":"I32","shape":[],)"
            R"("data_offsets":[0,4]}}  )",
            4);
  llm::SafetensorsFile f(path);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.metadata().at("n") == "3");
  CHECK(f.tensors().at("s").shape.rank == 0);
  CHECK(f.tensors().at("s").nbytes == 4);
}
