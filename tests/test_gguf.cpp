// Tests for GgufFile: the llama.cpp-converted fixture models, the llama.cpp vocab
// GGUFs, and hand-built or damaged files for every error path.
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/formats/gguf.h"
#include "core/formats/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

const std::string kModels = llm::test::data_dir() + "/models";
const std::string kVocabs = llm::test::data_dir() + "/tokenizers";

using llm::test::TempDir;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  // Unlink first: ext4 flushes a file rewritten through truncation on close, which
  // made the thousands of rewrites below take seconds.
  std::error_code ec;
  fs::remove(path, ec);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

const llm::GgufTensorInfo* find_tensor(const llm::GgufFile& f, const std::string& name) {
  for (const llm::GgufTensorInfo& t : f.tensors())
    if (t.name == name) return &t;
  return nullptr;
}

// Little-endian byte building for hand-made GGUF files.
struct Bytes {
  std::string b;
  template <typename T>
  Bytes& put(T v) {
    char raw[sizeof(T)];
    std::memcpy(raw, &v, sizeof(T));
    b.append(raw, sizeof(T));
    return *this;
  }
  Bytes& u32(uint32_t v) { return put(v); }
  Bytes& u64(uint64_t v) { return put(v); }
  Bytes& str(const std::string& s) {
    u64(s.size());
    b += s;
    return *this;
  }
  // Key + type for a metadata entry; the value follows.
  Bytes& key(const std::string& k, llm::GgufType t) {
    str(k);
    return u32(static_cast<uint32_t>(t));
  }
  Bytes& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name);
    u32(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) u64(d);
    u32(type);
    return u64(offset);
  }
};

// Header + metadata + tensor infos, padded to `align`, then `data_bytes` of data.
std::string gguf(uint64_t n_kv, const Bytes& kv, uint64_t n_tensors = 0, const Bytes& infos = {},
                 size_t data_bytes = 0, size_t align = 32) {
  Bytes out;
  out.b = "GGUF";
  out.u32(3).u64(n_tensors).u64(n_kv);
  out.b += kv.b + infos.b;
  out.b.resize((out.b.size() + align - 1) / align * align, '\0');
  for (size_t i = 0; i < data_bytes; i++) out.b.push_back(static_cast<char>(i));
  return out.b;
}

// One string entry, enough for a valid file.
Bytes one_kv() {
  Bytes kv;
  kv.key("general.architecture", llm::GgufType::STRING).str("test");
  return kv;
}

}  // namespace

TEST_CASE("GGUF: llama3 fixture metadata", "[gguf]") {
  const std::string path = kModels + "/llama3/model-f32.gguf";
  llm::GgufFile f(path);
  CHECK(f.path() == path);
  CHECK(f.version() == 3);
  CHECK(f.alignment() == 32);
  CHECK(f.metadata().size() == 19);
  CHECK(f.get_string("general.architecture") == "llama");
  CHECK(f.get_string("general.name") == "Llama3");
  CHECK(f.get_string("tokenizer.ggml.model") == "none");
  CHECK(f.get_int("llama.block_count") == 2);
  CHECK(f.get_int("llama.embedding_length") == 64);
  CHECK(f.get_int("llama.feed_forward_length") == 160);
  CHECK(f.get_int("llama.attention.head_count") == 4);
  CHECK(f.get_int("llama.attention.head_count_kv") == 2);
  CHECK(f.get_int("llama.vocab_size") == 256);
  CHECK(f.get_int("llama.context_length") == 128);
  CHECK(f.get_float("llama.rope.freq_base") == 500000.0);
  CHECK(f.get_float("llama.attention.layer_norm_rms_epsilon") == Approx(1e-5).epsilon(1e-6));
  // Integers may be read as floats; the *_or forms default only missing keys.
  CHECK(f.get_float("llama.block_count") == 2.0);
  CHECK(f.get_int_or("llama.sliding_window", -1) == -1);
  CHECK(f.get_int_or("llama.block_count", -1) == 2);
  CHECK(f.get_string_or("general.license", "none") == "none");
  CHECK(f.get_float_or("llama.rope.scale", 1.5) == 1.5);
  CHECK(f.find("general.license") == nullptr);

  const llm::GgufValue* v = f.find("llama.block_count");
  REQUIRE(v != nullptr);
  CHECK(v->type == llm::GgufType::U32);
  CHECK(v->is_int());
  CHECK(v->i == 2);
  CHECK(v->u == 2);
  CHECK_FALSE(f.find("general.architecture")->is_int());
}

TEST_CASE("GGUF: llama3 tensors match the safetensors checkpoint", "[gguf]") {
  llm::GgufFile f(kModels + "/llama3/model-f32.gguf");
  llm::SafetensorsFile st(kModels + "/llama3/model.safetensors");
  // 2 layers x 9 tensors + embeddings, output, output norm, rope_freqs.
  REQUIRE(f.tensors().size() == 22);

  const llm::GgufTensorInfo* embd = find_tensor(f, "token_embd.weight");
  REQUIRE(embd != nullptr);
  CHECK(embd->shape == llm::Shape({256, 64}));
  CHECK(embd->ggml_type == 0);
  CHECK(embd->nbytes == 256 * 64 * 4);
  llm::DType dt = llm::DType::I64;
  REQUIRE(llm::dtype_from_ggml_type(embd->ggml_type, &dt));
  CHECK(dt == llm::DType::F32);

  const llm::HostTensor& ref = st.tensors().at("model.embed_tokens.weight");
  REQUIRE(ref.nbytes == embd->nbytes);
  const float* a = reinterpret_cast<const float*>(embd->data);
  const float* b = static_cast<const float*>(ref.data);
  for (int i = 0; i < 8; i++) CHECK(a[i] == b[i]);
  CHECK(a[0] != 0.0f);
  CHECK(std::memcmp(embd->data, ref.data, ref.nbytes) == 0);

  const llm::GgufTensorInfo* q = find_tensor(f, "blk.0.attn_q.weight");
  REQUIRE(q != nullptr);
  CHECK(q->shape == llm::Shape({64, 64}));
  const llm::GgufTensorInfo* k = find_tensor(f, "blk.1.attn_k.weight");
  REQUIRE(k != nullptr);
  CHECK(k->shape == llm::Shape({32, 64}));  // 2 KV heads x 16
  // GGUF stores dims innermost first: (160, 64) on disk is [64, 160] here, as in HF.
  const llm::GgufTensorInfo* down = find_tensor(f, "blk.0.ffn_down.weight");
  REQUIRE(down != nullptr);
  CHECK(down->shape == llm::Shape({64, 160}));
  const llm::HostTensor& ref_down = st.tensors().at("model.layers.0.mlp.down_proj.weight");
  REQUIRE(down->nbytes == ref_down.nbytes);
  CHECK(std::memcmp(down->data, ref_down.data, ref_down.nbytes) == 0);
  const llm::GgufTensorInfo* norm = find_tensor(f, "output_norm.weight");
  REQUIRE(norm != nullptr);
  CHECK(norm->shape == llm::Shape({64}));
  CHECK(norm->shape.rank == 1);

  // Every tensor sits at data_start + offset, and the data section is aligned in memory.
  const uint8_t* base = f.tensors()[0].data - f.tensors()[0].offset;
  CHECK(reinterpret_cast<uintptr_t>(base) % f.alignment() == 0);
  for (const llm::GgufTensorInfo& t : f.tensors()) {
    CHECK(t.offset % f.alignment() == 0);
    CHECK(t.data == base + t.offset);
    CHECK(t.nbytes == static_cast<size_t>(t.shape.numel()) * 4);
  }
}

TEST_CASE("GGUF: every fixture model opens and matches its checkpoint", "[gguf]") {
  const std::pair<const char*, const char*> models[] = {{"llama2", "llama"},
                                                        {"llama3", "llama"},
                                                        {"mistral", "llama"},
                                                        {"qwen2", "qwen2"},
                                                        {"phi3", "phi3"}};
  for (const auto& m : models) {
    INFO(m.first);
    llm::GgufFile f(kModels + "/" + m.first + "/model-f32.gguf");
    llm::SafetensorsFile st(kModels + "/" + m.first + "/model.safetensors");
    const std::string arch = m.second;
    CHECK(f.get_string("general.architecture") == arch);
    CHECK(f.get_int(arch + ".block_count") == 2);
    CHECK(f.get_int(arch + ".embedding_length") == 64);
    CHECK(f.get_int(arch + ".attention.head_count") == 4);
    const llm::GgufTensorInfo* embd = find_tensor(f, "token_embd.weight");
    REQUIRE(embd != nullptr);
    CHECK(embd->shape == llm::Shape({256, 64}));
    const llm::HostTensor& ref = st.tensors().at("model.embed_tokens.weight");
    REQUIRE(embd->nbytes == ref.nbytes);
    CHECK(std::memcmp(embd->data, ref.data, ref.nbytes) == 0);
    for (const llm::GgufTensorInfo& t : f.tensors()) CHECK(t.ggml_type == 0);
  }
}

TEST_CASE("GGUF: gpt-2 vocab", "[gguf]") {
  llm::GgufFile f(kVocabs + "/ggml-vocab-gpt-2.gguf");
  CHECK(f.tensors().empty());
  CHECK(f.get_string("general.architecture") == "gpt2");
  CHECK(f.get_string("tokenizer.ggml.model") == "gpt2");
  CHECK(f.get_string("tokenizer.ggml.pre") == "gpt-2");
  const std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  REQUIRE(tokens.size() == 50257);
  CHECK(tokens[0] == "!");
  CHECK(tokens[50256] == "<|endoftext|>");
  const std::vector<std::string> merges = f.get_string_array("tokenizer.ggml.merges");
  REQUIRE(merges.size() == 50000);
  CHECK(merges[0] == "\xC4\xA0 t");  // "Ġ t"
  const std::vector<int64_t> types = f.get_int_array("tokenizer.ggml.token_type");
  REQUIRE(types.size() == tokens.size());
  CHECK(types[0] == 1);
  CHECK(types[50256] == 3);
  CHECK(f.get_int("tokenizer.ggml.bos_token_id") == 50256);
  CHECK(f.get_float("gpt2.attention.layer_norm_epsilon") == Approx(1e-5).epsilon(1e-6));

  const llm::GgufValue* arr = f.find("tokenizer.ggml.tokens");
  REQUIRE(arr != nullptr);
  CHECK(arr->type == llm::GgufType::ARRAY);
  CHECK(arr->array_type == llm::GgufType::STRING);
  CHECK(arr->array.size() == 50257);
}

TEST_CASE("GGUF: llama-spm vocab", "[gguf]") {
  llm::GgufFile f(kVocabs + "/ggml-vocab-llama-spm.gguf");
  CHECK(f.get_string("tokenizer.ggml.model") == "llama");
  CHECK(f.get_string("tokenizer.ggml.pre") == "default");
  const std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  REQUIRE(tokens.size() == 32000);
  CHECK(tokens[0] == "<unk>");
  CHECK(tokens[1] == "<s>");
  CHECK(tokens[3] == "<0x00>");
  CHECK(tokens[301] == "\xE2\x96\x81l");  // "▁l"
  const std::vector<float> scores = f.get_float_array("tokenizer.ggml.scores");
  REQUIRE(scores.size() == tokens.size());
  CHECK(scores[0] == 0.0f);
  CHECK(scores[300] == -41.0f);
  CHECK(scores[301] == -42.0f);
  CHECK(scores[31999] == -31740.0f);
  const std::vector<int64_t> types = f.get_int_array("tokenizer.ggml.token_type");
  REQUIRE(types.size() == tokens.size());
  CHECK(types[0] == 2);  // unknown
  CHECK(types[1] == 3);  // control
  CHECK(types[3] == 6);  // byte
  CHECK(f.find("tokenizer.ggml.scores")->array_type == llm::GgufType::F32);
  CHECK(f.get_int("tokenizer.ggml.unknown_token_id") == 0);
  // Bools count as integers.
  CHECK(f.find("tokenizer.ggml.add_bos_token")->type == llm::GgufType::BOOL);
  CHECK(f.get_int("tokenizer.ggml.add_bos_token") == 1);
  CHECK(f.get_int("tokenizer.ggml.add_eos_token") == 0);
}

TEST_CASE("GGUF: every vocab fixture opens", "[gguf]") {
  int n = 0;
  for (const auto& e : fs::directory_iterator(kVocabs)) {
    if (e.path().extension() != ".gguf") continue;
    INFO(e.path().string());
    llm::GgufFile f(e.path().string());
    const size_t n_tokens = f.get_string_array("tokenizer.ggml.tokens").size();
    CHECK(n_tokens > 30000);
    CHECK(f.get_int_array("tokenizer.ggml.token_type").size() == n_tokens);
    if (f.find("tokenizer.ggml.scores"))
      CHECK(f.get_float_array("tokenizer.ggml.scores").size() == n_tokens);
    n++;
  }
  CHECK(n == 5);

  llm::GgufFile ds(kVocabs + "/ggml-vocab-deepseek-llm.gguf");
  const std::vector<std::string> tokens = ds.get_string_array("tokenizer.ggml.tokens");
  REQUIRE(tokens.size() == 102400);
  CHECK(tokens[100000] ==
        "<\xEF\xBD\x9C"
        "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>");
  CHECK(ds.get_string_array("tokenizer.ggml.merges").size() == 99757);
  CHECK(ds.get_string("tokenizer.ggml.pre") == "deepseek-llm");
}

TEST_CASE("GGUF: accessor errors name the key and the type", "[gguf]") {
  const std::string path = kVocabs + "/ggml-vocab-llama-spm.gguf";
  llm::GgufFile f(path);
  CHECK_THROWS_AS(f.get_string("general.licence"), llm::Error);
  CHECK_THROWS_WITH(f.get_string("general.licence"),
                    Contains("GGUF key 'general.licence' is missing") && Contains(path));
  CHECK_THROWS_WITH(f.get_int("nope"), Contains("GGUF key 'nope' is missing"));
  CHECK_THROWS_WITH(f.get_float("nope"), Contains("GGUF key 'nope' is missing"));
  CHECK_THROWS_WITH(f.get_int_array("nope"), Contains("GGUF key 'nope' is missing"));
  CHECK_THROWS_WITH(f.get_int("general.architecture"),
                    Contains("GGUF key 'general.architecture' has type string, expected an "
                             "integer"));
  CHECK_THROWS_WITH(f.get_int_or("general.architecture", 7),
                    Contains("has type string, expected an integer"));
  CHECK_THROWS_WITH(f.get_string("llama.block_count"),
                    Contains("GGUF key 'llama.block_count' has type u32, expected a string"));
  CHECK_THROWS_WITH(f.get_string_or("llama.block_count", "x"),
                    Contains("has type u32, expected a string"));
  CHECK_THROWS_WITH(f.get_float("general.architecture"),
                    Contains("has type string, expected a float"));
  CHECK_THROWS_WITH(f.get_int("llama.attention.layer_norm_rms_epsilon"),
                    Contains("has type f32, expected an integer"));
  CHECK_THROWS_WITH(f.get_int("tokenizer.ggml.tokens"),
                    Contains("has type array of string, expected an integer"));
  CHECK_THROWS_WITH(f.get_string_array("tokenizer.ggml.scores"),
                    Contains("has type array of f32, expected an array of strings"));
  CHECK_THROWS_WITH(f.get_float_array("tokenizer.ggml.tokens"),
                    Contains("expected an array of numbers"));
  CHECK_THROWS_WITH(f.get_int_array("tokenizer.ggml.scores"),
                    Contains("expected an array of integers"));
  CHECK_THROWS_WITH(f.get_string_array("general.architecture"),
                    Contains("has type string, expected an array of strings"));
}

TEST_CASE("GGUF: truncated files", "[gguf]") {
  TempDir tmp;
  const std::string model = read_bytes(kModels + "/llama3/model-f32.gguf");
  const std::string path = tmp.file("cut.gguf");
  // Every cut inside the header, metadata and tensor infos, then some in the data.
  std::vector<size_t> cuts;
  for (size_t n = 0; n < 2200; n++) cuts.push_back(n);
  for (size_t n : {size_t{4096}, model.size() / 2, model.size() - 256, model.size() - 1})
    cuts.push_back(n);
  for (size_t n : cuts) {
    INFO("cut at " << n);
    write_bytes(path, model.substr(0, n));
    CHECK_THROWS_WITH(llm::GgufFile(path), Contains("truncated") && Contains(path));
  }
  write_bytes(path, model);
  CHECK_NOTHROW(llm::GgufFile(path));

  // A vocab file has no data section: cuts inside its last array must still fail.
  const std::string vocab = read_bytes(kVocabs + "/ggml-vocab-gpt-2.gguf");
  for (size_t n : {size_t{10}, size_t{300}, vocab.size() / 2, vocab.size() - 1}) {
    INFO("vocab cut at " << n);
    write_bytes(path, vocab.substr(0, n));
    CHECK_THROWS_WITH(llm::GgufFile(path), Contains("truncated") && Contains(path));
  }
}

TEST_CASE("GGUF: wrong magic and versions", "[gguf]") {
  TempDir tmp;
  const std::string path = tmp.file("bad.gguf");
  const std::string model = read_bytes(kModels + "/llama3/model-f32.gguf");

  write_bytes(path, "GGML" + model.substr(4));
  CHECK_THROWS_WITH(llm::GgufFile(path), Contains("'" + path + "' is not a GGUF file"));
  write_bytes(path, "{\"hello\": 1}\n");
  CHECK_THROWS_WITH(llm::GgufFile(path), Contains("is not a GGUF file"));
  write_bytes(path, "xy");
  CHECK_THROWS_WITH(llm::GgufFile(path), Contains("is not a GGUF file"));
  write_bytes(path, "GG");
  CHECK_THROWS_WITH(llm::GgufFile(path), Contains("truncated"));
  write_bytes(path, "");
  CHECK_THROWS_WITH(llm::GgufFile(path), Contains("truncated"));

  std::string v1 = model;
  v1[4] = 1;
  write_bytes(path, v1);
  CHECK_THROWS_WITH(llm::GgufFile(path), Contains("unsupported GGUF version 1") && Contains(path));
  std::string big_endian = model;
  big_endian.replace(4, 4, std::string("\0\0\0\3", 4));
  write_bytes(path, big_endian);
  CHECK_THROWS_WITH(llm::GgufFile(path), Contains("big-endian"));

  // Version 2 has the same layout.
  std::string v2 = model;
  v2[4] = 2;
  write_bytes(path, v2);
  llm::GgufFile f(path);
  CHECK(f.version() == 2);
  CHECK(f.tensors().size() == 22);
}

TEST_CASE("GGUF: every metadata type round-trips", "[gguf]") {
  TempDir tmp;
  const std::string path = tmp.file("types.gguf");
  using T = llm::GgufType;
  Bytes kv;
  kv.key("u8", T::U8).put<uint8_t>(250);
  kv.key("i8", T::I8).put<int8_t>(-5);
  kv.key("u16", T::U16).put<uint16_t>(65000);
  kv.key("i16", T::I16).put<int16_t>(-30000);
  kv.key("u32", T::U32).put<uint32_t>(4000000000u);
  kv.key("i32", T::I32).put<int32_t>(-2000000000);
  kv.key("u64", T::U64).put<uint64_t>(uint64_t{1} << 40);
  kv.key("i64", T::I64).put<int64_t>(-(int64_t{1} << 50));
  kv.key("f32", T::F32).put<float>(0.25f);
  kv.key("f64", T::F64).put<double>(-1e300);
  kv.key("bool", T::BOOL).put<uint8_t>(1);
  kv.key("str", T::STRING).str("h\xC3\xA9llo");
  kv.key("empty", T::STRING).str("");
  kv.key("u64big", T::U64).put<uint64_t>(~uint64_t{0});
  // [[1, 2], [], [3]] as an array of u16 arrays.
  kv.key("nested", T::ARRAY).u32(uint32_t(T::ARRAY)).u64(3);
  kv.u32(uint32_t(T::U16)).u64(2).put<uint16_t>(1).put<uint16_t>(2);
  kv.u32(uint32_t(T::U16)).u64(0);
  kv.u32(uint32_t(T::U16)).u64(1).put<uint16_t>(3);
  kv.key("i8s", T::ARRAY).u32(uint32_t(T::I8)).u64(3);
  kv.put<int8_t>(-1).put<int8_t>(0).put<int8_t>(7);
  kv.key("f64s", T::ARRAY).u32(uint32_t(T::F64)).u64(2).put<double>(0.5).put<double>(-2);
  kv.key("noarr", T::ARRAY).u32(uint32_t(T::STRING)).u64(0);
  write_bytes(path, gguf(18, kv));

  llm::GgufFile f(path);
  CHECK(f.metadata().size() == 18);
  CHECK(f.get_int("u8") == 250);
  CHECK(f.get_int("i8") == -5);
  CHECK(f.get_int("u16") == 65000);
  CHECK(f.get_int("i16") == -30000);
  CHECK(f.get_int("u32") == 4000000000LL);
  CHECK(f.get_int("i32") == -2000000000);
  CHECK(f.get_int("u64") == (int64_t{1} << 40));
  CHECK(f.get_int("i64") == -(int64_t{1} << 50));
  CHECK(f.get_float("f32") == 0.25);
  CHECK(f.get_float("f64") == -1e300);
  CHECK(f.get_int("bool") == 1);
  CHECK(f.find("bool")->is_int());
  CHECK_THROWS_WITH(f.get_float("bool"), Contains("has type bool, expected a float"));
  CHECK(f.get_string("str") == "h\xC3\xA9llo");
  CHECK(f.get_string("empty").empty());
  CHECK(f.find("u64big")->u == ~uint64_t{0});
  CHECK_THROWS_WITH(f.get_int("u64big"), Contains("does not fit"));

  const llm::GgufValue* nested = f.find("nested");
  REQUIRE(nested != nullptr);
  CHECK(nested->array_type == T::ARRAY);
  REQUIRE(nested->array.size() == 3);
  CHECK(nested->array[0].array_type == T::U16);
  REQUIRE(nested->array[0].array.size() == 2);
  CHECK(nested->array[0].array[1].i == 2);
  CHECK(nested->array[1].array.empty());
  CHECK(nested->array[2].array[0].u == 3);
  CHECK_THROWS_WITH(f.get_int_array("nested"), Contains("array of array"));
  CHECK(f.get_int_array("i8s") == std::vector<int64_t>{-1, 0, 7});
  CHECK(f.get_float_array("i8s") == std::vector<float>{-1, 0, 7});
  CHECK(f.get_float_array("f64s") == std::vector<float>{0.5f, -2.0f});
  CHECK(f.get_string_array("noarr").empty());
  CHECK(f.tensors().empty());
}

TEST_CASE("GGUF: tensor infos, sizes and alignment", "[gguf]") {
  TempDir tmp;
  const std::string path = tmp.file("t.gguf");
  using T = llm::GgufType;

  // Custom alignment 64 and a mix of ggml types; sizes follow ggml's block layout.
  Bytes kv;
  kv.key("general.alignment", T::U32).u32(64);
  Bytes infos;
  infos.tensor("a.f16", {8, 3}, 1, 0);              // 48 bytes
  infos.tensor("b.q4_0", {64, 2}, 2, 64);           // 2 rows x 2 blocks x 18 = 72
  infos.tensor("c.q8_0", {32}, 8, 192);             // 34
  infos.tensor("d.q4_k", {256, 2, 1, 1}, 12, 256);  // 2 x 144 = 288
  infos.tensor("e.i32", {5, 1, 2}, 26, 576);        // 40
  infos.tensor("f.scalar", {}, 0, 640);             // 4
  infos.tensor("g.empty", {0, 4}, 0, 704);          // 0
  write_bytes(path, gguf(1, kv, 7, infos, 704, 64));
  llm::GgufFile f(path);
  CHECK(f.alignment() == 64);
  REQUIRE(f.tensors().size() == 7);
  const auto& t = f.tensors();
  CHECK(t[0].shape == llm::Shape({3, 8}));
  CHECK(t[0].nbytes == 48);
  CHECK(t[1].shape == llm::Shape({2, 64}));
  CHECK(t[1].nbytes == 72);
  CHECK(t[2].nbytes == 34);
  CHECK(t[3].shape == llm::Shape({1, 1, 2, 256}));
  CHECK(t[3].nbytes == 288);
  CHECK(t[4].shape == llm::Shape({2, 1, 5}));
  CHECK(t[4].nbytes == 40);
  CHECK(t[5].shape.rank == 0);
  CHECK(t[5].nbytes == 4);
  CHECK(t[6].nbytes == 0);
  // Data bytes were written as 0, 1, 2, ...: check the pointers land on them.
  CHECK(t[0].data[0] == 0);
  CHECK(t[1].data[0] == 64);
  CHECK(t[2].data[1] == 193);
  CHECK(t[4].data[0] == static_cast<uint8_t>(576));

  llm::DType dt;
  CHECK(llm::dtype_from_ggml_type(1, &dt));
  CHECK(dt == llm::DType::F16);
  CHECK(llm::dtype_from_ggml_type(2, &dt));
  CHECK(dt == llm::DType::Q4_0);
  CHECK(llm::dtype_from_ggml_type(8, &dt));
  CHECK(dt == llm::DType::Q8_0);
  CHECK(llm::dtype_from_ggml_type(26, &dt));
  CHECK(dt == llm::DType::I32);
  CHECK(llm::dtype_from_ggml_type(27, &dt));
  CHECK(dt == llm::DType::I64);
  CHECK(llm::dtype_from_ggml_type(30, &dt));
  CHECK(dt == llm::DType::BF16);
  CHECK_FALSE(llm::dtype_from_ggml_type(12, &dt));
  CHECK(llm::dtype_from_ggml_type(3, &dt));
  CHECK(dt == llm::DType::Q4_1);
  CHECK_FALSE(llm::dtype_from_ggml_type(28, &dt));
  CHECK_FALSE(llm::dtype_from_ggml_type(999, &dt));
}

TEST_CASE("GGUF: corrupt headers fail cleanly", "[gguf]") {
  TempDir tmp;
  const std::string path = tmp.file("c.gguf");
  using T = llm::GgufType;
  auto expect = [&](const std::string& bytes, const std::string& what) {
    write_bytes(path, bytes);
    CHECK_THROWS_WITH(llm::GgufFile(path), Contains(what) && Contains(path));
  };

  // Absurd counts and lengths are caught before anything is allocated.
  expect(gguf(uint64_t{1} << 60, one_kv()), "truncated");
  expect(gguf(1, one_kv(), uint64_t{1} << 60), "truncated");
  {
    Bytes kv;
    kv.u64(uint64_t{1} << 62).b += "key";
    expect(gguf(1, kv), "truncated");
  }
  {
    Bytes kv;
    kv.key("s", T::STRING).u64(~uint64_t{0});
    expect(gguf(1, kv), "truncated");
  }
  for (T et : {T::U8, T::U64, T::STRING, T::ARRAY}) {
    Bytes kv;
    kv.key("arr", T::ARRAY).u32(uint32_t(et)).u64(uint64_t{1} << 61);
    expect(gguf(1, kv), "truncated");
  }
  {
    // A key of control bytes (a NUL among them) and 1,000 more: escaped and cut, so the
    // message keeps its reason and prints no raw bytes.
    Bytes kv;
    kv.str(std::string("ab\0\x01", 4) + std::string(1000, 'k')).u32(77);
    write_bytes(path, gguf(1, kv));
    try {
      llm::GgufFile f(path);
      FAIL("no error");
    } catch (const llm::Error& e) {
      const std::string msg = e.what();
      CHECK_THAT(msg, Contains("ab\\x00\\x01kk") && Contains("...") &&
                          Contains("has unknown value type 77"));
      CHECK(msg.size() < 400);
    }
  }
  {
    Bytes infos;
    infos.str(std::string(1 << 20, 'x'));  // fine length, but the file ends in it
    std::string bytes = gguf(1, one_kv(), 1, infos);
    expect(bytes.substr(0, bytes.size() - 100), "truncated");
  }

  // Arrays nested beyond any real use, unknown value types.
  {
    Bytes kv;
    kv.key("deep", T::ARRAY);
    for (int i = 0; i < 100000; i++) kv.u32(uint32_t(T::ARRAY)).u64(1);
    kv.u32(uint32_t(T::U8)).u64(0);
    expect(gguf(1, kv), "corrupt");
  }
  {
    Bytes kv;
    kv.key("odd", static_cast<T>(13)).u64(0);
    expect(gguf(1, kv), "corrupt");
    Bytes arr;
    arr.key("odd", T::ARRAY).u32(77).u64(0);
    expect(gguf(1, arr), "unknown value type 77");
  }
  {
    Bytes kv = one_kv();
    kv.key("general.architecture", T::STRING).str("again");
    expect(gguf(2, kv), "duplicate metadata key 'general.architecture'");
  }

  // Alignment must be a power of two.
  for (uint32_t a : {0u, 3u, 48u}) {
    Bytes kv;
    kv.key("general.alignment", T::U32).u32(a);
    expect(gguf(1, kv), "general.alignment");
  }
  {
    Bytes kv;
    kv.key("general.alignment", T::STRING).str("32");
    expect(gguf(1, kv), "corrupt");
  }

  // Tensor infos.
  auto one_tensor = [&](std::vector<uint64_t> ne, uint32_t type, uint64_t offset,
                        size_t data_bytes) {
    Bytes infos;
    infos.tensor("blk.0.w", std::move(ne), type, offset);
    return gguf(1, one_kv(), 1, infos, data_bytes);
  };
  // Sanity: the helper makes a valid file.
  write_bytes(path, one_tensor({4, 4}, 0, 0, 64));
  CHECK_NOTHROW(llm::GgufFile(path));
  {
    Bytes infos;
    infos.str("w5").u32(5);
    for (int i = 0; i < 5; i++) infos.u64(1);
    infos.u32(0).u64(0);
    expect(gguf(1, one_kv(), 1, infos, 32), "5 dimensions");
  }
  write_bytes(path, one_tensor({4}, 99, 0, 32));
  CHECK_THROWS_WITH(llm::GgufFile(path), Contains("'blk.0.w'") && Contains("ggml type 99"));
  write_bytes(path, one_tensor({32}, 16, 0, 64));  // IQ2_XXS: not in our table
  CHECK_THROWS_WITH(llm::GgufFile(path), Contains("ggml type 16"));
  expect(one_tensor({4, 4}, 0, 16, 128), "not a multiple of the alignment 32");
  expect(one_tensor({4, 4}, 0, 0, 63), "truncated");
  expect(one_tensor({4, 4}, 0, 32, 64), "truncated");
  expect(one_tensor({4, 4}, 0, ~uint64_t{0} - 31, 64), "truncated");
  expect(one_tensor({uint64_t{1} << 32, uint64_t{1} << 32}, 0, 0, 32), "absurd dimensions");
  expect(one_tensor({~uint64_t{0}}, 0, 0, 32), "absurd dimensions");
  expect(one_tensor({0, ~uint64_t{0}}, 0, 0, 32), "absurd dimensions");
  expect(one_tensor({uint64_t{1} << 40, 1 << 20}, 0, 0, 32), "truncated");
  expect(one_tensor({33, 2}, 2, 0, 128), "not a multiple of the Q4_0 block size 32");
  {
    Bytes infos;
    infos.tensor("w", {4}, 0, 0).tensor("w", {4}, 0, 32);
    expect(gguf(1, one_kv(), 2, infos, 64), "duplicate tensor 'w'");
  }
}

TEST_CASE("GGUF: random corruption gives llm::Error or a valid file", "[gguf]") {
  TempDir tmp;
  const std::string path = tmp.file("fuzz.gguf");
  using T = llm::GgufType;
  // A small file with every structure in it: strings, nested arrays, several tensors.
  Bytes kv;
  kv.key("general.alignment", T::U32).u32(32);
  kv.key("name", T::STRING).str("fuzz");
  kv.key("ids", T::ARRAY).u32(uint32_t(T::I32)).u64(3);
  kv.put<int32_t>(1).put<int32_t>(2).put<int32_t>(3);
  kv.key("toks", T::ARRAY).u32(uint32_t(T::STRING)).u64(2).str("a").str("bc");
  kv.key("nest", T::ARRAY).u32(uint32_t(T::ARRAY)).u64(1).u32(uint32_t(T::F32)).u64(1);
  kv.put<float>(1.5f);
  Bytes infos;
  infos.tensor("w0", {8, 2}, 0, 0).tensor("w1", {32}, 8, 64).tensor("w2", {4}, 1, 128);
  const std::string good = gguf(5, kv, 3, infos, 160);
  write_bytes(path, good);
  REQUIRE(llm::GgufFile(path).tensors().size() == 3);

  std::mt19937 rng(1234);
  int failures = 0;
  for (int iter = 0; iter < 3000; iter++) {
    std::string bad = good;
    const size_t header = good.size() - 160;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; e++) {
      const size_t at = rng() % header;
      if (rng() % 2 == 0) {
        bad[at] = static_cast<char>(rng());
      } else {
        // Large values into 8-byte fields hit the count/length/offset checks.
        const uint64_t v = (uint64_t{rng()} << 32 | rng()) >> (rng() % 64);
        for (size_t i = 0; i < 8 && at + i < header; i++)
          bad[at + i] = static_cast<char>(v >> 8 * i);
      }
    }
    write_bytes(path, bad);
    try {
      llm::GgufFile f(path);
      for (const llm::GgufTensorInfo& t : f.tensors()) {
        REQUIRE(t.data != nullptr);
        volatile uint8_t sink = t.nbytes ? t.data[t.nbytes - 1] : 0;  // inside the map (ASan)
        (void)sink;
      }
    } catch (const llm::Error& e) {
      failures++;
      REQUIRE_THAT(e.what(), Contains(path));
    }
  }
  CHECK(failures > 1000);
}
