#include "core/formats/lora.h"

#include <sys/stat.h>

#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/formats/gguf.h"
#include "core/formats/gguf_model.h"
#include "core/formats/gguf_writer.h"
#include "core/formats/parallel_rows.h"
#include "core/formats/quantize.h"
#include "core/path_util.h"

namespace llm {

namespace {

using json = nlohmann::json;

// One adapted weight: its low-rank factors, or a whole replacement (PEFT's
// modules_to_save).
struct Delta {
  const HostTensor* a = nullptr;  // [r, in] ([r, vocab] for an embedding)
  const HostTensor* b = nullptr;  // [out, r] ([hidden, r] for an embedding)
  const HostTensor* full = nullptr;
  bool embedding = false;  // PEFT's lora_embedding_A/B: delta = (B A)^T
  float alpha = 0;         // scale = alpha / r (alpha / sqrt(r) with rsLoRA); 0: scale 1
};

struct Adapter {
  std::string path;
  std::map<std::string, Delta> deltas;  // by the model's weight name
  bool rslora = false;
  bool qk_gguf_order = false;  // Q/K rows as llama.cpp's converter orders them
  bool gguf = false;
  // What keeps the tensors' memory alive.
  std::unique_ptr<SafetensorsFile> st;
  std::shared_ptr<GgufFile> gf;
  std::vector<std::unique_ptr<HostTensor>> gguf_tensors;
};

// The float32 values of a tensor of any dtype the formats hold.
std::vector<float> to_f32(const HostTensor& t) {
  const int64_t n = t.shape.numel();
  std::vector<float> out(static_cast<size_t>(n));
  if (is_float(t.dtype)) {
    convert_to_f32(t.dtype, t.data, out.data(), n);
    return out;
  }
  if (!is_quant(t.dtype)) fail("cannot read %s values", dtype_name(t.dtype));
  const int64_t rows = t.shape.rank >= 2 ? n / t.shape.row_len() : 1;
  const int64_t cols = n / rows;
  const size_t row_bytes = t.nbytes / static_cast<size_t>(rows);
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t* src = static_cast<const uint8_t*>(t.data) + r * row_bytes;
    dequantize_row(t.dtype, src, out.data() + r * cols, cols);
  }
  return out;
}

Adapter read_peft(const std::string& path) {
  Adapter ad;
  ad.path = path;
  const std::string dir = is_dir(path) ? path : path.substr(0, path.find_last_of('/') + 1);
  const std::string file = is_dir(path) ? path + "/adapter_model.safetensors" : path;
  struct stat st;
  if (stat(file.c_str(), &st) != 0) {
    if (stat((dir + "/adapter_model.bin").c_str(), &st) == 0)
      fail("LoRA '%s': only safetensors adapters are supported (found adapter_model.bin)",
           path.c_str());
    fail("LoRA '%s': no adapter_model.safetensors", path.c_str());
  }
  std::ifstream in(dir + "/adapter_config.json");
  if (!in) fail("LoRA '%s': no adapter_config.json beside the weights", path.c_str());
  json cfg;
  try {
    cfg = json::parse(in);
  } catch (const json::exception& e) {
    fail("LoRA '%s': adapter_config.json: %s", path.c_str(), e.what());
  }
  if (!cfg.is_object()) fail("LoRA '%s': adapter_config.json is not an object", path.c_str());
  const std::string type = cfg.value("peft_type", "LORA");
  if (type != "LORA") fail("LoRA '%s': PEFT type %s is not supported", path.c_str(), type.c_str());
  if (cfg.value("use_dora", false))
    fail("LoRA '%s': DoRA adapters are not supported", path.c_str());
  if (cfg.value("fan_in_fan_out", false))
    fail("LoRA '%s': fan_in_fan_out adapters (GPT-2's Conv1D) are not supported", path.c_str());
  ad.rslora = cfg.value("use_rslora", false);
  auto number = [&](const json& v, const char* what) {
    if (!v.is_number()) fail("LoRA '%s': %s must be a number", path.c_str(), what);
    return v.get<float>();
  };
  const float alpha = cfg.contains("lora_alpha") ? number(cfg["lora_alpha"], "lora_alpha") : 8.f;
  // alpha_pattern: other alphas for modules whose name ends with the key.
  std::vector<std::pair<std::string, float>> alpha_pattern;
  if (cfg.contains("alpha_pattern") && cfg["alpha_pattern"].is_object())
    for (auto it = cfg["alpha_pattern"].begin(); it != cfg["alpha_pattern"].end(); ++it)
      alpha_pattern.emplace_back(it.key(), number(it.value(), "alpha_pattern"));

  ad.st = std::make_unique<SafetensorsFile>(file);
  for (const auto& [raw, t] : ad.st->tensors()) {
    std::string name = raw;
    const std::string prefix = "base_model.model.";
    if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
    // A saved adapter's names carry no adapter name, but some tools keep ".default".
    for (const char* tag : {".lora_A.default.", ".lora_B.default."}) {
      const size_t at = name.find(tag);
      if (at != std::string::npos) name.erase(at + 7, 8);
    }
    auto module_of = [&](const std::string& suffix) {
      return ends_with(name, suffix) ? name.substr(0, name.size() - suffix.size()) : std::string();
    };
    std::string module;
    Delta* d = nullptr;
    if (!(module = module_of(".lora_A.weight")).empty()) {
      d = &ad.deltas[module + ".weight"];
      d->a = &t;
    } else if (!(module = module_of(".lora_B.weight")).empty()) {
      d = &ad.deltas[module + ".weight"];
      d->b = &t;
    } else if (!(module = module_of(".lora_embedding_A")).empty()) {
      d = &ad.deltas[module + ".weight"];
      d->a = &t;
      d->embedding = true;
    } else if (!(module = module_of(".lora_embedding_B")).empty()) {
      d = &ad.deltas[module + ".weight"];
      d->b = &t;
      d->embedding = true;
    } else if (name.find("lora_magnitude_vector") != std::string::npos) {
      fail("LoRA '%s': DoRA adapters are not supported", path.c_str());
    } else {
      ad.deltas[name].full = &t;  // modules_to_save: the whole weight
      continue;
    }
    d->alpha = alpha;
    for (const auto& [key, a] : alpha_pattern)
      if (module == key || ends_with(module, "." + key)) d->alpha = a;
  }
  return ad;
}

Adapter read_gguf(const std::string& path) {
  Adapter ad;
  ad.path = path;
  ad.gguf = true;
  ad.gf = std::make_shared<GgufFile>(path);
  const GgufFile& g = *ad.gf;
  if (g.get_string_or("general.type", "") != "adapter" ||
      g.get_string_or("adapter.type", "") != "lora")
    fail("'%s' is not a LoRA adapter (GGUF general.type \"adapter\", adapter.type \"lora\")",
         path.c_str());
  const std::string arch = g.get_string_or("general.architecture", "");
  ad.qk_gguf_order = arch == "llama";
  const float alpha = static_cast<float>(g.get_float_or("adapter.lora.alpha", 0.0));
  for (const GgufTensorInfo& t : g.tensors()) {
    const bool is_a = ends_with(t.name, ".lora_a"), is_b = ends_with(t.name, ".lora_b");
    if (!is_a && !is_b) continue;
    DType dt;
    if (!dtype_from_ggml_type(t.ggml_type, &dt))
      fail("LoRA '%s': tensor '%s' has ggml type %u (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
           path.c_str(), t.name.c_str(), t.ggml_type);
    HostTensor h;
    h.dtype = dt;
    h.shape = t.shape;
    h.data = t.data;
    h.nbytes = t.nbytes;
    const std::string target = hf_tensor_name(arch, t.name.substr(0, t.name.size() - 7));
    Delta& d = ad.deltas[target];
    ad.gguf_tensors.push_back(std::make_unique<HostTensor>(h));
    if (is_a)
      d.a = ad.gguf_tensors.back().get();
    else
      d.b = ad.gguf_tensors.back().get();
    d.alpha = alpha;
  }
  return ad;
}

// Merges one adapted weight: W += scale * B A (or its replacement).
void merge(const Adapter& ad, const std::string& target, const Delta& d, float user_scale,
           const ModelConfig& config, WeightStore& store, int n_threads) {
  const HostTensor* w = store.find(target);
  const char* path = ad.path.c_str();
  if (!w)
    fail("LoRA '%s' adapts '%s', which this model does not have (an adapter for another model?)",
         path, target.c_str());
  if (!w->data) fail("LoRA '%s': weight '%s' is no longer in host memory", path, target.c_str());
  const Shape shape = w->shape;
  if (d.full) {
    if (d.full->shape != shape)
      fail("LoRA '%s': '%s' is %s in the adapter but %s in the model", path, target.c_str(),
           d.full->shape.str().c_str(), shape.str().c_str());
  } else {
    if (!d.a || !d.b)
      fail("LoRA '%s': '%s' has only one of its two factors (A and B)", path, target.c_str());
    if (shape.rank != 2 || d.a->shape.rank != 2 || d.b->shape.rank != 2)
      fail("LoRA '%s': '%s' is not a matrix", path, target.c_str());
  }
  const int64_t rows = shape.dims[0], cols = shape.dims[1];
  std::vector<float> wf = to_f32(*w);
  if (d.full) {
    wf = to_f32(*d.full);
  } else {
    const int64_t r = d.a->shape.dims[0];
    // A [r, in] and B [out, r]; an embedding's A [r, vocab] and B [hidden, r] give (B A)^T.
    const int64_t out = d.embedding ? cols : rows, in = d.embedding ? rows : cols;
    if (d.a->shape.dims[1] != in || d.b->shape.dims[0] != out || d.b->shape.dims[1] != r)
      fail("LoRA '%s': '%s' is %s in the model, but its factors are A %s and B %s", path,
           target.c_str(), shape.str().c_str(), d.a->shape.str().c_str(), d.b->shape.str().c_str());
    std::vector<float> a = to_f32(*d.a), b = to_f32(*d.b);
    // Q and K rows: a PEFT adapter's in Hugging Face's order, a llama GGUF adapter's in
    // llama.cpp's; reorder B's rows to the model's.
    const bool base_gguf_order = config.model_type == "llama" && config.rope_interleaved;
    const bool q = ends_with(target, "self_attn.q_proj.weight");
    const bool k = ends_with(target, "self_attn.k_proj.weight");
    if ((q || k) && ad.qk_gguf_order != base_gguf_order) {
      std::vector<float> moved(b.size());
      permute_qk_rows(reinterpret_cast<const uint8_t*>(b.data()),
                      reinterpret_cast<uint8_t*>(moved.data()), out, r * sizeof(float),
                      q ? config.num_heads : config.num_kv_heads, base_gguf_order);
      b = std::move(moved);
    }
    if (ends_with(target, "query_key_value.weight") && ad.gguf != config.qkv_blocked)
      fail(
          "LoRA '%s': GPT-NeoX's query_key_value rows are grouped differently in GGUF files; "
          "apply the adapter to a model of its own format",
          path);
    float scale = user_scale;
    if (d.alpha != 0)
      scale *= d.alpha / (ad.rslora ? std::sqrt(static_cast<float>(r)) : static_cast<float>(r));
    if (d.embedding) {
      // (B A)^T = A^T B^T: the same product with A^T [vocab, r] and B^T [r, hidden].
      auto transposed = [](const std::vector<float>& m, int64_t m_rows, int64_t m_cols) {
        std::vector<float> t(m.size());
        for (int64_t i = 0; i < m_rows; i++)
          for (int64_t j = 0; j < m_cols; j++) t[j * m_rows + i] = m[i * m_cols + j];
        return t;
      };
      std::vector<float> at = transposed(a, r, rows), bt = transposed(b, cols, r);
      b = std::move(at);
      a = std::move(bt);
    }
    // W[o, :] += scale * sum_j B[o, j] * A[j, :]
    parallel_rows(rows, n_threads, [&](int64_t r0, int64_t r1) {
      for (int64_t o = r0; o < r1; o++)
        for (int64_t j = 0; j < r; j++) {
          const float c = scale * b[o * r + j];
          float* dst = wf.data() + o * cols;
          const float* src = a.data() + j * cols;
          for (int64_t i = 0; i < cols; i++) dst[i] += c * src[i];
        }
    });
  }
  // Back to the weight's own dtype, so memory and --quantization stay as without the adapter.
  const DType dtype = w->dtype;
  std::vector<uint8_t> bytes(tensor_bytes(dtype, shape));
  if (is_float(dtype)) {
    convert_from_f32(dtype, wf.data(), bytes.data(), shape.numel());
  } else {
    const HostTensor f{DType::F32, shape, wf.data(), wf.size() * sizeof(float)};
    bytes = quantize_tensor(f, dtype, n_threads);
  }
  store.add_owned(target, dtype, shape, std::move(bytes));
}

}  // namespace

void apply_lora_adapters(const std::vector<LoraSpec>& adapters, const ModelConfig& config,
                         WeightStore& store, int n_threads) {
  for (const LoraSpec& spec : adapters) {
    struct stat st;
    if (stat(spec.path.c_str(), &st) != 0)
      fail("LoRA adapter '%s' does not exist", spec.path.c_str());
    const Adapter ad = ends_with(spec.path, ".gguf") ? read_gguf(spec.path) : read_peft(spec.path);
    if (ad.deltas.empty()) fail("LoRA '%s' holds no adapter tensors", spec.path.c_str());
    for (const auto& [target, d] : ad.deltas)
      merge(ad, target, d, spec.scale, config, store, n_threads);
  }
}

}  // namespace llm
