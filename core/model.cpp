#include "core/model.h"

#include <sys/stat.h>

#include <cstring>

#include "core/error.h"
#include "core/formats/gguf_model.h"
#include "core/formats/lora.h"
#include "core/formats/native_folder.h"
#include "core/formats/quantize.h"
#include "core/path_util.h"

namespace llm {

namespace {}  // namespace

std::unique_ptr<Model> Model::load(const std::string& path, Backend& backend,
                                   const LoadOptions& opts) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) fail("model path '%s' does not exist", path.c_str());
  std::unique_ptr<Model> m(new Model(path, backend));
  if (!opts.quantization.empty()) {
    m->has_target_ = true;
    m->target_dtype_ = parse_quant_scheme(opts.quantization).weight_dtype;
  }
  if (is_dir(path) && is_native_folder(path)) {
    // llm-config.json: written by llmcli convert / synth (quantized blocks stay as stored).
    m->config_ = read_native_config(path).model;
    m->store_ = open_native_weights(path);
  } else if (is_dir(path)) {
    m->config_ = load_hf_config(path);
    m->store_ = WeightStore::open_dir(path);
  } else if (ends_with(path, ".gguf")) {
    auto gguf = std::make_shared<const GgufFile>(path);
    m->config_ = config_from_gguf(*gguf);
    m->store_ = std::make_unique<WeightStore>();
    add_gguf_weights(gguf, *m->store_, gguf_transcode_target(opts.quantization),
                     backend.runs_weight_dtype(DType::Q4_1) && gguf_keeps_q4_1(opts.quantization));
  } else {
    fail("'%s' is not a model (expected a Hugging Face folder, a native folder or a .gguf file)",
         path.c_str());
  }
  if (!opts.loras.empty()) apply_lora_adapters(opts.loras, m->config_, *m->store_);
  // A one-token graph names every weight the architecture reads.
  StepShape probe;
  const Graph g =
      build_step_graph(m->config_, probe, [&](const std::string& n) { return m->weight_dtype(n); });
  m->upload(g);
  return m;
}

DType Model::weight_dtype(const std::string& name) const {
  const HostTensor* t = store_->find(name);
  if (!t) fail("model '%s' is missing tensor '%s'", path_.c_str(), name.c_str());
  const DType stored = t->dtype;
  if (!is_float(stored) && !is_quant(stored))
    fail("tensor '%s' has dtype %s; expected f32, f16, bf16, q8_0, q4_0 or q4_1", name.c_str(),
         dtype_name(stored));
  // A native folder's q4_1 (from a Q4_K GGUF) on a backend without q4_1 kernels.
  if (!backend_.runs_weight_dtype(stored)) return DType::Q8_0;
  // --quantization converts float matrices whose rows fill whole blocks.
  if (has_target_ && dtype_info(stored).is_float && t->shape.rank == 2) {
    const DType target = target_dtype_;
    if (!dtype_info(target).is_float && t->shape.row_len() % dtype_info(target).block_elems != 0)
      return stored;
    return target;
  }
  return stored;
}

void Model::upload(const Graph& g) {
  // Backends that alias host memory need converted copies to outlive the load.
  const bool keep_host_copies = backend_.info().type == "cpu";
  for (const TensorInfo& info : g.tensors()) {
    if (info.kind != TensorKind::Weight || weights_.count(info.name)) continue;
    const HostTensor* t = store_->find(info.name);
    if (!t) fail("model '%s' is missing tensor '%s'", path_.c_str(), info.name.c_str());
    if (t->shape != info.shape)
      fail("tensor '%s' has shape %s, expected %s", info.name.c_str(), t->shape.str().c_str(),
           info.shape.str().c_str());
    const void* data = t->data;
    size_t bytes = t->nbytes;
    // Vectors (norms, biases) are kept in f32; matrices in their stored dtype or
    // the --quantization target. Misaligned data is copied for aligned loads.
    const bool misaligned = reinterpret_cast<uintptr_t>(data) % 16 != 0;
    std::vector<uint8_t> copy;
    if (t->dtype == info.dtype) {
      if (misaligned)
        copy.assign(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + bytes);
    } else if (is_quant(t->dtype) && is_quant(info.dtype)) {
      copy = quantize_tensor(*t, info.dtype);  // decoded, then requantized
    } else if (!dtype_info(t->dtype).is_float) {
      fail("tensor '%s' has dtype %s; expected %s", info.name.c_str(), dtype_name(t->dtype),
           dtype_name(info.dtype));
    } else if (info.dtype == DType::F32) {
      copy.resize(tensor_bytes(info.dtype, info.shape));
      convert_to_f32(t->dtype, data, reinterpret_cast<float*>(copy.data()), t->shape.numel());
    } else if (info.dtype == DType::F16 || info.dtype == DType::BF16) {
      std::vector<float> f(t->shape.numel());
      convert_to_f32(t->dtype, data, f.data(), t->shape.numel());
      copy.resize(tensor_bytes(info.dtype, info.shape));
      convert_from_f32(info.dtype, f.data(), copy.data(), t->shape.numel());
    } else if (is_quant(info.dtype)) {
      copy = quantize_tensor(*t, info.dtype);
    } else {
      fail("tensor '%s': cannot convert %s to %s", info.name.c_str(), dtype_name(t->dtype),
           dtype_name(info.dtype));
    }
    if (!copy.empty()) {
      data = copy.data();
      bytes = copy.size();
    }
    HostTensor host{info.dtype, info.shape, data, bytes};
    weights_[info.name] = backend_.upload_weight(host, "weight '" + info.name + "'");
    // Device backends copied it: transcoded GGUF tensors need not stay in host memory.
    if (!keep_host_copies) store_->release_owned(info.name);
    dtype_bytes_[info.dtype] += bytes;
    if (!copy.empty() && keep_host_copies) converted_.push_back(std::move(copy));
  }
}

size_t Model::weight_bytes() const {
  size_t sum = 0;
  for (const auto& [t, bytes] : dtype_bytes_) sum += bytes;
  return sum;
}

TensorRef Model::resolve(const TensorInfo& t) const {
  auto it = weights_.find(t.name);
  if (it == weights_.end()) fail("weight '%s' was not loaded", t.name.c_str());
  return {it->second.get(), 0, t.dtype, t.shape};
}

}  // namespace llm
