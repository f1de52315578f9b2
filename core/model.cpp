#include "core/model.h"

#include <sys/stat.h>

#include <cstring>

#include "core/error.h"
#include "core/formats/gguf_model.h"

namespace llm {

namespace {

bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::unique_ptr<Model> Model::load(const std::string& path, Backend& backend) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) fail("model path '%s' does not exist", path.c_str());
  std::unique_ptr<Model> m(new Model(path, backend));
  if (is_dir(path)) {
    m->config_ = load_hf_config(path);
    m->store_ = WeightStore::open_dir(path);
  } else if (ends_with(path, ".gguf")) {
    auto gguf = std::make_shared<const GgufFile>(path);
    m->config_ = config_from_gguf(*gguf);
    m->store_ = std::make_unique<WeightStore>();
    add_gguf_weights(gguf, *m->store_);
  } else {
    fail("'%s' is not a model (expected a Hugging Face folder or a .gguf file)", path.c_str());
  }
  // A one-token graph names every weight the architecture reads.
  StepShape probe;
  const Graph g = build_step_graph(m->config_, probe,
                                   [&](const std::string& n) { return m->weight_dtype(n); });
  m->upload(g);
  return m;
}

DType Model::weight_dtype(const std::string& name) const {
  const HostTensor* t = store_->find(name);
  if (!t) fail("model '%s' is missing tensor '%s'", path_.c_str(), name.c_str());
  if (!dtype_info(t->dtype).is_float)
    fail("tensor '%s' has dtype %s; expected f32, f16 or bf16", name.c_str(),
         dtype_name(t->dtype));
  return t->dtype;
}

void Model::upload(const Graph& g) {
  for (const TensorInfo& info : g.tensors()) {
    if (info.kind != TensorKind::Weight || weights_.count(info.name)) continue;
    const HostTensor* t = store_->find(info.name);
    if (!t) fail("model '%s' is missing tensor '%s'", path_.c_str(), info.name.c_str());
    if (t->shape != info.shape)
      fail("tensor '%s' has shape %s, expected %s", info.name.c_str(), t->shape.str().c_str(),
           info.shape.str().c_str());
    if (!dtype_info(t->dtype).is_float)
      fail("tensor '%s' has dtype %s; expected f32, f16 or bf16", info.name.c_str(),
           dtype_name(t->dtype));
    const void* data = t->data;
    size_t bytes = t->nbytes;
    // Vectors (norms, biases) are kept in f32; matrices in their stored dtype.
    // Misaligned data is copied so that kernels can use aligned loads.
    const bool misaligned = reinterpret_cast<uintptr_t>(data) % 16 != 0;
    if (t->dtype != info.dtype || misaligned) {
      std::vector<uint8_t> copy(tensor_bytes(info.dtype, info.shape));
      if (t->dtype == info.dtype) {
        std::memcpy(copy.data(), data, bytes);
      } else if (info.dtype == DType::F32) {
        convert_to_f32(t->dtype, data, reinterpret_cast<float*>(copy.data()), t->shape.numel());
      } else {
        fail("tensor '%s': cannot convert %s to %s", info.name.c_str(), dtype_name(t->dtype),
             dtype_name(info.dtype));
      }
      converted_.push_back(std::move(copy));
      data = converted_.back().data();
      bytes = converted_.back().size();
    }
    weights_[info.name] = backend_.from_host(data, bytes, "weight '" + info.name + "'");
    weight_bytes_ += bytes;
  }
}

TensorRef Model::resolve(const TensorInfo& t) const {
  auto it = weights_.find(t.name);
  if (it == weights_.end()) fail("weight '%s' was not loaded", t.name.c_str());
  return {it->second.get(), 0, t.dtype, t.shape};
}

}  // namespace llm
