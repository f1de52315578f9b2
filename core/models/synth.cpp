#include "core/models/synth.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/error.h"
#include "core/formats/native_folder.h"
#include "core/formats/parallel_rows.h"
#include "core/formats/quantize.h"
#include "core/tokenizer/tokenizer.h"

namespace llm {

namespace fs = std::filesystem;

namespace {

struct SynthShape {
  const char* name;
  int hidden, layers, heads, kv_heads, ffn, vocab, context;
  float rope_theta;
};
// Llama 2 / TinyLlama / Llama 3 8B hyper-parameters (docs/PERF.md's table).
const SynthShape kShapes[] = {
    {"tiny", 64, 2, 4, 2, 160, 32000, 2048, 10000.f},
    {"llama-1b", 2048, 16, 32, 8, 8192, 32000, 2048, 10000.f},
    {"llama-7b", 4096, 32, 32, 32, 11008, 32000, 4096, 10000.f},
    {"llama-8b", 4096, 32, 32, 8, 14336, 128256, 8192, 500000.f},
};

uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// n values of mean `mean` and standard deviation `stddev`, close to normal: the sum of
// four 16-bit uniforms (Irwin-Hall), one 64-bit draw per value. Exact normality does
// not matter here; speed does (7B values per model).
void fill_row(uint64_t state, float* out, int64_t n, float mean, float stddev) {
  constexpr double kMean = 4 * 32767.5, kStd = 65536.0 / 1.7320508075688772;  // sqrt(3)
  const float scale = static_cast<float>(stddev / kStd);
  const float offset = static_cast<float>(mean - kMean * stddev / kStd);
  for (int64_t i = 0; i < n; i++) {
    const uint64_t r = splitmix64(&state);
    const uint32_t sum = static_cast<uint32_t>((r & 0xffff) + ((r >> 16) & 0xffff) +
                                               ((r >> 32) & 0xffff) + (r >> 48));
    out[i] = static_cast<float>(sum) * scale + offset;
  }
}

TensorSource random_tensor(const std::string& name, DType dtype, Shape shape, float mean,
                           float stddev, uint64_t seed, int n_threads) {
  TensorSource t;
  t.name = name;
  t.dtype = dtype;
  t.shape = shape;
  const uint64_t tensor_seed = seed ^ fnv1a(name);
  t.fill = [=](uint8_t* dst) {
    const int64_t rows = shape.rows(), cols = shape.row_len();
    const size_t row_bytes = dtype_row_bytes(dtype, cols);
    auto work = [&](int64_t r0, int64_t r1) {
      std::vector<float> row(cols);
      for (int64_t r = r0; r < r1; r++) {
        // Each row has its own stream, so the values do not depend on the split.
        uint64_t s = tensor_seed + static_cast<uint64_t>(r) * 0x2545F4914F6CDD1Dull;
        fill_row(splitmix64(&s), row.data(), cols, mean, stddev);
        uint8_t* out = dst + r * row_bytes;
        switch (dtype) {
          case DType::F32:
            std::memcpy(out, row.data(), row_bytes);
            break;
          case DType::F16:
          case DType::BF16:
            convert_from_f32(dtype, row.data(), out, cols);
            break;
          case DType::Q8_0:
          case DType::Q4_0:
          case DType::Q4_1:
            quantize_row(dtype, row.data(), out, cols);
            break;
          default:
            fail("synth: cannot make %s tensors", dtype_name(dtype));
        }
      }
    };
    parallel_rows(rows, n_threads, work, /*min_rows=*/8);
  };
  return t;
}

bool is_gguf_file(const std::string& path) {
  char magic[4] = {};
  std::ifstream in(path, std::ios::binary);
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

}  // namespace

std::vector<std::string> synth_shape_names() {
  std::vector<std::string> names;
  for (const SynthShape& s : kShapes) names.push_back(s.name);
  return names;
}

ModelConfig synth_config(const std::string& shape, int vocab_size) {
  const SynthShape* s = nullptr;
  for (const SynthShape& k : kShapes)
    if (shape == k.name) s = &k;
  if (s == nullptr) {
    std::string names;
    for (const std::string& n : synth_shape_names()) names += (names.empty() ? "" : ", ") + n;
    fail("unknown shape '%s' (known: %s)", shape.c_str(), names.c_str());
  }
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = vocab_size > 0 ? vocab_size : s->vocab;
  c.hidden_size = s->hidden;
  c.intermediate_size = s->ffn;
  c.num_layers = s->layers;
  c.num_heads = s->heads;
  c.num_kv_heads = s->kv_heads;
  c.head_dim = s->hidden / s->heads;
  c.max_position_embeddings = s->context;
  c.norm_eps = 1e-5f;
  c.rope_theta = s->rope_theta;
  return c;
}

std::vector<TensorSource> synth_tensors(const ModelConfig& c, DType wt, uint64_t seed,
                                        int n_threads) {
  if (!is_float(wt) && !is_quant(wt)) fail("synth: weights cannot be %s", dtype_name(wt));
  const int64_t D = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  const int64_t Q = int64_t(c.num_heads) * c.head_dim, KV = int64_t(c.num_kv_heads) * c.head_dim;
  std::vector<TensorSource> out;
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    const float stddev = 1.f / std::sqrt(static_cast<float>(cols));
    out.push_back(random_tensor(name, wt, {rows, cols}, 0.f, stddev, seed, n_threads));
  };
  auto norm = [&](const std::string& name) {
    out.push_back(random_tensor(name, DType::F32, {D}, 1.f, 0.1f, seed, n_threads));
  };
  out.push_back(random_tensor("model.embed_tokens.weight", wt, {V, D}, 0.f, 1.f, seed, n_threads));
  for (int l = 0; l < c.num_layers; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    norm(p + "input_layernorm.weight");
    matrix(p + "self_attn.q_proj.weight", Q, D);
    matrix(p + "self_attn.k_proj.weight", KV, D);
    matrix(p + "self_attn.v_proj.weight", KV, D);
    matrix(p + "self_attn.o_proj.weight", D, Q);
    norm(p + "post_attention_layernorm.weight");
    matrix(p + "mlp.gate_proj.weight", F, D);
    matrix(p + "mlp.up_proj.weight", F, D);
    matrix(p + "mlp.down_proj.weight", D, F);
  }
  norm("model.norm.weight");
  matrix("lm_head.weight", V, D);
  return out;
}

void synth_model(const SynthOptions& o) {
  if (o.out.empty()) fail("synth: no output path (-o)");
  if (o.format != "native" && o.format != "gguf")
    fail("unknown format '%s' (known: native, gguf)", o.format.c_str());
  // q4_1 (GGUF only: no scheme names it) stands in for what a Q4_K GGUF loads as.
  const bool q4_1 = o.quantization == "q4_1";
  if (q4_1 && o.format != "gguf")
    fail("synth: --quantization q4_1 writes GGUF files only (--format gguf)");
  const QuantScheme scheme =
      q4_1 ? QuantScheme{"q4_1", DType::Q4_1} : parse_quant_scheme(o.quantization);
  synth_config(o.shape);  // an unknown shape fails before the vocab is read

  // The vocab decides vocab_size and the special ids.
  std::unique_ptr<GgufFile> vocab_gguf;
  std::unique_ptr<Tokenizer> tok;
  std::string vocab_dir;  // holds tokenizer.json
  if (!o.vocab.empty()) {
    std::error_code ec;
    if (!fs::exists(o.vocab, ec)) fail("vocab '%s' does not exist", o.vocab.c_str());
    if (!fs::is_directory(o.vocab, ec) && is_gguf_file(o.vocab)) {
      vocab_gguf = std::make_unique<GgufFile>(o.vocab);
      if (vocab_gguf->find("tokenizer.ggml.tokens") == nullptr)
        fail("'%s' holds no vocab (no tokenizer.ggml.tokens)", o.vocab.c_str());
      tok = Tokenizer::from_gguf(*vocab_gguf);
    } else {
      const fs::path p(o.vocab);
      vocab_dir = fs::is_directory(p, ec) ? p.string()
                  : p.has_parent_path()   ? p.parent_path().string()
                                          : ".";
      if (!fs::is_directory(p, ec) && p.filename() != "tokenizer.json")
        fail("vocab '%s' is neither a GGUF file nor a tokenizer.json", o.vocab.c_str());
      tok = Tokenizer::load(o.vocab);
    }
    if (o.format == "gguf" && !vocab_gguf)
      fail("a GGUF model needs a GGUF vocab (--vocab FILE.gguf); '%s' is a tokenizer.json",
           o.vocab.c_str());
  }
  ModelConfig cfg = synth_config(o.shape, tok ? tok->vocab_size() : 0);
  if (tok) {
    cfg.bos_token_id = tok->bos_id();
    for (int32_t id : tok->eos_ids()) cfg.eos_token_ids.push_back(id);
  }
  const std::vector<TensorSource> tensors =
      synth_tensors(cfg, scheme.weight_dtype, o.seed, o.threads);

  if (o.format == "gguf") {
    GgufModelOptions go;
    go.name = "synth " + o.shape + " " + o.quantization;
    go.vocab = vocab_gguf.get();
    go.progress = o.progress;
    write_llama_gguf(o.out, cfg, tensors, go);
    return;
  }

  std::error_code ec;
  if (fs::exists(o.out, ec) && !fs::is_directory(o.out, ec))
    fail("output '%s' exists and is not a folder", o.out.c_str());
  fs::create_directories(o.out, ec);
  if (ec) fail("cannot create folder '%s': %s", o.out.c_str(), ec.message().c_str());
  NativeWriteOptions wo;
  wo.quantization = scheme.name;
  wo.shard_bytes = o.shard_bytes;
  wo.progress = o.progress;
  write_native_weights(o.out, tensors, wo);

  NativeConfig nc;
  nc.model_type = cfg.model_type;
  nc.quantization = scheme.name;
  nc.model_config_json = model_config_to_json(cfg);
  nc.model = cfg;
  nc.context_window_size = cfg.max_position_embeddings;
  nc.prefill_chunk_size = std::min(2048, cfg.max_position_embeddings);
  nc.bos_token_id = cfg.bos_token_id;
  nc.eos_token_ids = cfg.eos_token_ids;
  std::vector<std::string> pieces;
  if (tok)
    for (int32_t i = 0; i < tok->vocab_size(); i++) pieces.push_back(tok->token_to_piece(i));
  nc.conv_template = guess_conv_template(cfg, pieces);
  if (vocab_gguf) {
    write_vocab_gguf((fs::path(o.out) / "tokenizer.gguf").string(), cfg, *vocab_gguf);
    nc.tokenizer_files = {"tokenizer.gguf"};
  } else if (tok) {
    nc.tokenizer_files = copy_tokenizer_files(vocab_dir, o.out);
  }
  nc.source = "synth --shape " + o.shape + " --seed " + std::to_string(o.seed) +
              (o.vocab.empty() ? "" : " --vocab " + fs::path(o.vocab).filename().string());
  write_native_config(o.out, nc);
}

}  // namespace llm
