#include "core/formats/gguf_writer.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>
#include <regex>

#include "core/error.h"
#include "core/formats/gguf_quants.h"

namespace llm {

namespace {

constexpr uint32_t kVersion = 3;
constexpr uint64_t kAlignment = 32;  // llama.cpp's default; also written as general.alignment

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

GgufValue int_value(GgufType t, int64_t i, uint64_t u) {
  GgufValue v;
  v.type = t;
  v.i = i;
  v.u = u;
  return v;
}

// llama_ftype of a file whose matrices are mostly of dtype t.
uint32_t file_type_of(DType t) {
  switch (t) {
    case DType::F32:
      return 0;  // LLAMA_FTYPE_ALL_F32
    case DType::F16:
      return 1;  // LLAMA_FTYPE_MOSTLY_F16
    case DType::Q4_0:
      return 2;  // LLAMA_FTYPE_MOSTLY_Q4_0
    case DType::Q4_1:
      return 3;  // LLAMA_FTYPE_MOSTLY_Q4_1
    case DType::Q8_0:
      return 7;  // LLAMA_FTYPE_MOSTLY_Q8_0
    case DType::BF16:
      return 32;  // LLAMA_FTYPE_MOSTLY_BF16
    default:
      fail("GGUF: no llama.cpp file type for %s weights", dtype_name(t));
  }
}

// general.architecture for a model type, as llama.cpp names it.
std::string gguf_arch(const ModelConfig& c) {
  if (c.model_type == "llama" || c.model_type == "mistral") return "llama";
  if (c.model_type == "qwen2") return "qwen2";
  fail("GGUF: no llama.cpp architecture for model_type '%s'", c.model_type.c_str());
}

void set_hparams(GgufWriter& w, const std::string& arch, const ModelConfig& c) {
  const std::string p = arch + ".";
  auto u32 = [](int v) { return gguf_u32(static_cast<uint32_t>(v)); };
  w.set(p + "context_length", u32(c.max_position_embeddings));
  w.set(p + "embedding_length", u32(c.hidden_size));
  w.set(p + "block_count", u32(c.num_layers));
  w.set(p + "feed_forward_length", u32(c.intermediate_size));
  w.set(p + "attention.head_count", u32(c.num_heads));
  w.set(p + "attention.head_count_kv", u32(c.num_kv_heads));
  w.set(p + "attention.key_length", u32(c.head_dim));
  w.set(p + "attention.value_length", u32(c.head_dim));
  w.set(p + "attention.layer_norm_rms_epsilon", gguf_f32(c.norm_eps));
  w.set(p + "rope.freq_base", gguf_f32(c.rope_theta));
  w.set(p + "rope.dimension_count", u32(c.head_dim));
  if (c.rope_scaling.type == "linear") {
    w.set(p + "rope.scaling.type", gguf_string("linear"));
    w.set(p + "rope.scaling.factor", gguf_f32(c.rope_scaling.factor));
  }
  if (c.sliding_window > 0) w.set(p + "attention.sliding_window", u32(c.sliding_window));
  w.set(p + "vocab_size", u32(c.vocab_size));
}

void copy_tokenizer_keys(GgufWriter& w, const GgufFile& vocab) {
  for (const auto& [key, value] : vocab.metadata())
    if (key.compare(0, 10, "tokenizer.") == 0) w.set(key, value);
}

// llama3 rope scaling as llama.cpp stores it: per-frequency divisors (rope_freqs.weight),
// computed as its converter does.
std::vector<float> llama3_rope_factors(const ModelConfig& c) {
  const RopeScaling& rs = c.rope_scaling;
  const double old_ctx = rs.original_max_position_embeddings;
  const double low_wavelen = old_ctx / rs.low_freq_factor;
  const double high_wavelen = old_ctx / rs.high_freq_factor;
  std::vector<float> out;
  for (int i = 0; i < c.head_dim; i += 2) {
    const double freq = 1.0 / std::pow(double(c.rope_theta), double(i) / c.head_dim);
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.f);
    } else if (wavelen > low_wavelen) {
      out.push_back(rs.factor);
    } else {
      const double smooth =
          (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
      out.push_back(static_cast<float>(1.0 / ((1 - smooth) / rs.factor + smooth)));
    }
  }
  return out;
}

}  // namespace

uint32_t ggml_type_of(DType t) {
  switch (t) {
    case DType::F32:
      return 0;
    case DType::F16:
      return 1;
    case DType::Q4_0:
      return 2;
    case DType::Q4_1:
      return 3;
    case DType::Q8_0:
      return 8;
    case DType::BF16:
      return 30;
    default:
      fail("GGUF: cannot store %s tensors", dtype_name(t));
  }
}

GgufValue gguf_u32(uint32_t v) { return int_value(GgufType::U32, v, v); }
GgufValue gguf_i32(int32_t v) { return int_value(GgufType::I32, v, static_cast<uint64_t>(v)); }
GgufValue gguf_u64(uint64_t v) { return int_value(GgufType::U64, static_cast<int64_t>(v), v); }
GgufValue gguf_bool(bool v) { return int_value(GgufType::BOOL, v, v); }

GgufValue gguf_f32(float v) {
  GgufValue out;
  out.type = GgufType::F32;
  out.f = v;
  return out;
}

GgufValue gguf_string(const std::string& v) {
  GgufValue out;
  out.type = GgufType::STRING;
  out.str = v;
  return out;
}

GgufValue gguf_string_array(const std::vector<std::string>& v) {
  GgufValue out;
  out.type = GgufType::ARRAY;
  out.array_type = GgufType::STRING;
  for (const std::string& s : v) out.array.push_back(gguf_string(s));
  return out;
}

GgufWriter::~GgufWriter() {
  if (f_ != nullptr) {
    std::fclose(f_);
    std::remove(tmp_.c_str());
  }
}

void GgufWriter::set(const std::string& key, GgufValue v) {
  if (f_ != nullptr) fail("GGUF writer: set('%s') after begin()", key.c_str());
  for (auto& kv : kv_) {
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  }
  kv_.emplace_back(key, std::move(v));
}

void GgufWriter::add_tensor(const std::string& name, DType dtype, const Shape& shape) {
  add_info(name, ggml_type_of(dtype), shape, tensor_bytes(dtype, shape));
}

void GgufWriter::add_ggml_tensor(const std::string& name, uint32_t ggml_type, const Shape& shape) {
  const GgmlBlockLayout* l = ggml_block_layout(ggml_type);
  if (l == nullptr)
    fail("GGUF writer: tensor '%s': ggml type %u is not a block type", name.c_str(), ggml_type);
  if (shape.rank == 0 || shape.row_len() % l->block_elems != 0)
    fail("GGUF writer: tensor '%s' %s: rows must be a multiple of %lld values", name.c_str(),
         shape.str().c_str(), static_cast<long long>(l->block_elems));
  add_info(name, ggml_type, shape,
           static_cast<size_t>(shape.numel() / l->block_elems) * l->block_bytes);
}

void GgufWriter::add_info(const std::string& name, uint32_t ggml_type, const Shape& shape,
                          size_t nbytes) {
  if (f_ != nullptr) fail("GGUF writer: add_tensor('%s') after begin()", name.c_str());
  if (shape.rank == 0) fail("GGUF writer: tensor '%s' has no dimensions", name.c_str());
  for (const Info& t : tensors_)
    if (t.name == name) fail("GGUF writer: duplicate tensor '%s'", name.c_str());
  const uint64_t offset =
      tensors_.empty() ? 0 : align_up(tensors_.back().offset + tensors_.back().nbytes, kAlignment);
  tensors_.push_back({name, ggml_type, shape, offset, nbytes});
}

void GgufWriter::put(const void* p, size_t n) {
  if (n > 0 && std::fwrite(p, 1, n, f_) != n)
    fail("cannot write '%s': %s", tmp_.c_str(), std::strerror(errno));
  pos_ += n;
}

void GgufWriter::pad_to(uint64_t alignment) {
  static const uint8_t kZeros[64] = {};
  const uint64_t n = align_up(pos_, alignment) - pos_;
  put(kZeros, static_cast<size_t>(n));
}

void GgufWriter::put_value(const GgufValue& v) {
  auto put_int = [&](auto x) { put(&x, sizeof x); };
  switch (v.type) {
    case GgufType::U8:
      return put_int(static_cast<uint8_t>(v.u));
    case GgufType::I8:
      return put_int(static_cast<int8_t>(v.i));
    case GgufType::U16:
      return put_int(static_cast<uint16_t>(v.u));
    case GgufType::I16:
      return put_int(static_cast<int16_t>(v.i));
    case GgufType::U32:
      return put_int(static_cast<uint32_t>(v.u));
    case GgufType::I32:
      return put_int(static_cast<int32_t>(v.i));
    case GgufType::U64:
      return put_int(static_cast<uint64_t>(v.u));
    case GgufType::I64:
      return put_int(static_cast<int64_t>(v.i));
    case GgufType::BOOL:
      return put_int(static_cast<uint8_t>(v.i != 0));
    case GgufType::F32:
      return put_int(static_cast<float>(v.f));
    case GgufType::F64:
      return put_int(static_cast<double>(v.f));
    case GgufType::STRING:
      put_int(static_cast<uint64_t>(v.str.size()));
      return put(v.str.data(), v.str.size());
    case GgufType::ARRAY:
      put_int(static_cast<uint32_t>(v.array_type));
      put_int(static_cast<uint64_t>(v.array.size()));
      for (const GgufValue& e : v.array) {
        if (e.type != v.array_type)
          fail("GGUF writer: array element of type %u in an array of type %u",
               static_cast<unsigned>(e.type), static_cast<unsigned>(v.array_type));
        put_value(e);
      }
      return;
  }
  fail("GGUF writer: unknown value type %u", static_cast<unsigned>(v.type));
}

void GgufWriter::begin(const std::string& path) {
  if (f_ != nullptr) fail("GGUF writer: begin() called twice");
  set("general.alignment", gguf_u32(kAlignment));
  path_ = path;
  tmp_ = path + ".tmp" + std::to_string(::getpid());
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (f_ == nullptr) fail("cannot create '%s': %s", tmp_.c_str(), std::strerror(errno));
  std::setvbuf(f_, nullptr, _IOFBF, 1 << 22);

  const uint32_t magic = 0x46554747;  // "GGUF"
  put(&magic, 4);
  put(&kVersion, 4);
  const uint64_t n_tensors = tensors_.size(), n_kv = kv_.size();
  put(&n_tensors, 8);
  put(&n_kv, 8);
  for (const auto& [key, value] : kv_) {
    const uint64_t len = key.size();
    put(&len, 8);
    put(key.data(), key.size());
    const uint32_t type = static_cast<uint32_t>(value.type);
    put(&type, 4);
    put_value(value);
  }
  for (const Info& t : tensors_) {
    const uint64_t len = t.name.size();
    put(&len, 8);
    put(t.name.data(), t.name.size());
    const uint32_t n_dims = static_cast<uint32_t>(t.shape.rank);
    put(&n_dims, 4);
    // GGUF lists dimensions innermost first.
    for (int d = t.shape.rank - 1; d >= 0; d--) {
      const uint64_t ne = static_cast<uint64_t>(t.shape[d]);
      put(&ne, 8);
    }
    put(&t.ggml_type, 4);
    put(&t.offset, 8);
  }
  pad_to(kAlignment);
  pos_ = 0;  // from here on: offsets in the data section
  next_ = 0;
}

void GgufWriter::write_tensor(const void* data, size_t nbytes) {
  if (f_ == nullptr) fail("GGUF writer: write_tensor() before begin()");
  if (next_ >= tensors_.size()) fail("GGUF writer: more tensors written than declared");
  const Info& t = tensors_[next_];
  if (nbytes != t.nbytes)
    fail("GGUF writer: tensor '%s' needs %zu bytes, got %zu", t.name.c_str(), t.nbytes, nbytes);
  put(data, nbytes);
  pad_to(kAlignment);  // llama.cpp pads after every tensor, the last one included
  next_++;
}

void GgufWriter::finish() {
  if (f_ == nullptr) fail("GGUF writer: finish() before begin()");
  if (next_ != tensors_.size())
    fail("GGUF writer: %zu of %zu tensors written to '%s'", next_, tensors_.size(), path_.c_str());
  const bool ok = std::fflush(f_) == 0;
  const int err = errno;
  std::fclose(f_);
  f_ = nullptr;
  if (!ok || std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    std::remove(tmp_.c_str());
    fail("cannot write '%s': %s", path_.c_str(), std::strerror(ok ? errno : err));
  }
}

std::string gguf_tensor_name(const std::string& hf) {
  static const std::pair<const char*, const char*> kGlobal[] = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"},
  };
  for (const auto& [from, to] : kGlobal)
    if (hf == from) return to;
  static const std::pair<const char*, const char*> kLayer[] = {
      {"input_layernorm", "attn_norm"},    {"self_attn.q_proj", "attn_q"},
      {"self_attn.k_proj", "attn_k"},      {"self_attn.v_proj", "attn_v"},
      {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
      {"mlp.gate_proj", "ffn_gate"},       {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"},
  };
  static const std::regex kLayerName(R"(model\.layers\.(\d+)\.(.+)\.(weight|bias))");
  std::smatch m;
  if (std::regex_match(hf, m, kLayerName)) {
    for (const auto& [from, to] : kLayer)
      if (m[2] == from) return "blk." + m[1].str() + "." + to + "." + m[3].str();
  }
  return "";
}

void permute_qk_rows(const uint8_t* src, uint8_t* dst, int64_t rows, size_t row_bytes, int n_heads,
                     bool to_gguf) {
  if (n_heads <= 0 || rows % n_heads != 0 || (rows / n_heads) % 2 != 0)
    fail("cannot permute %lld rows for %d heads", static_cast<long long>(rows), n_heads);
  const int64_t dh = rows / n_heads, half = dh / 2;
  for (int64_t h = 0; h < n_heads; h++) {
    for (int64_t r = 0; r < half; r++) {
      for (int64_t s = 0; s < 2; s++) {
        const int64_t hf = h * dh + s * half + r, gg = h * dh + 2 * r + s;
        const int64_t from = to_gguf ? hf : gg, to = to_gguf ? gg : hf;
        std::memcpy(dst + to * row_bytes, src + from * row_bytes, row_bytes);
      }
    }
  }
}

void write_llama_gguf(const std::string& path, const ModelConfig& cfg,
                      const std::vector<TensorSource>& tensors, const GgufModelOptions& opts) {
  if (cfg.model_type != "llama" && cfg.model_type != "mistral")
    fail("GGUF export supports the llama family only, not model_type '%s'", cfg.model_type.c_str());
  if (cfg.rope_interleaved) fail("GGUF export expects Q/K rows in Hugging Face order");
  GgufWriter w;
  w.set("general.architecture", gguf_string("llama"));
  w.set("general.type", gguf_string("model"));
  if (!opts.name.empty()) w.set("general.name", gguf_string(opts.name));

  // The file type follows the attention matrices, as llama.cpp's quantizer sets it.
  DType main = DType::F32;
  bool quantized = false;
  for (const TensorSource& t : tensors) {
    if (t.name == "model.layers.0.self_attn.q_proj.weight") main = t.dtype;
    quantized = quantized || is_quant(t.dtype);
  }
  w.set("general.file_type", gguf_u32(file_type_of(main)));
  if (quantized) w.set("general.quantization_version", gguf_u32(2));
  set_hparams(w, "llama", cfg);

  if (opts.vocab != nullptr) {
    copy_tokenizer_keys(w, *opts.vocab);
    const GgufValue* tokens = opts.vocab->find("tokenizer.ggml.tokens");
    if (tokens != nullptr && static_cast<int64_t>(tokens->array.size()) != cfg.vocab_size)
      fail(
          "the vocab '%s' has %zu tokens but the model has vocab_size %d (llama.cpp refuses "
          "such a file)",
          opts.vocab->path().c_str(), tokens->array.size(), cfg.vocab_size);
  } else {
    w.set("tokenizer.ggml.model", gguf_string("none"));
  }

  // llama3 rope scaling travels as a tensor.
  std::vector<float> rope_freqs = cfg.rope_freq_factors;
  if (rope_freqs.empty() && cfg.rope_scaling.type == "llama3")
    rope_freqs = llama3_rope_factors(cfg);
  if (!rope_freqs.empty())
    w.add_tensor("rope_freqs.weight", DType::F32, {static_cast<int64_t>(rope_freqs.size())});

  std::vector<const TensorSource*> order;
  uint64_t total = 0;
  for (const TensorSource& t : tensors) {
    // Rotary caches of old checkpoints are recomputed by every runtime; llama.cpp
    // refuses files with tensors it does not use.
    if (t.name.size() > 20 && t.name.compare(t.name.size() - 20, 20, "rotary_emb.inv_freq") == 0)
      continue;
    const std::string name = gguf_tensor_name(t.name);
    if (name.empty()) fail("GGUF export: no llama.cpp name for tensor '%s'", t.name.c_str());
    w.add_tensor(name, t.dtype, t.shape);
    order.push_back(&t);
    total += t.nbytes();
  }

  w.begin(path);
  if (!rope_freqs.empty()) w.write_tensor(rope_freqs.data(), rope_freqs.size() * sizeof(float));
  std::unique_ptr<uint8_t[]> buf, tmp;
  size_t cap = 0;
  uint64_t done = 0;
  static const std::regex kQk(R"(model\.layers\.\d+\.self_attn\.(q|k)_proj\.(weight|bias))");
  for (const TensorSource* t : order) {
    const size_t n = t->nbytes();
    if (n > cap) {
      buf.reset(new uint8_t[n]);
      tmp.reset();
      cap = n;
    }
    std::smatch m;
    if (std::regex_match(t->name, m, kQk)) {
      if (!tmp) tmp.reset(new uint8_t[cap]);
      t->fill(tmp.get());
      const int heads = m[1] == "q" ? cfg.num_heads : cfg.num_kv_heads;
      const int64_t rows = t->shape[0];
      permute_qk_rows(tmp.get(), buf.get(), rows, n / rows, heads, /*to_gguf=*/true);
    } else {
      t->fill(buf.get());
    }
    w.write_tensor(buf.get(), n);
    done += n;
    if (opts.progress) opts.progress(done, total);
  }
  w.finish();
}

void write_vocab_gguf(const std::string& path, const ModelConfig& cfg, const GgufFile& vocab) {
  GgufWriter w;
  const std::string arch = gguf_arch(cfg);
  w.set("general.architecture", gguf_string(arch));
  w.set("general.type", gguf_string("vocab"));
  set_hparams(w, arch, cfg);
  copy_tokenizer_keys(w, vocab);
  w.begin(path);
  w.finish();
}

}  // namespace llm
