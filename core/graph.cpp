#include "core/graph.h"

#include <cstring>

#include "core/error.h"

namespace llm {

const char* op_name(Op op) {
  static const char* kNames[] = {
      "get_rows", "rms_norm", "layer_norm",  "matmul",    "rope",        "kv_append", "attention",
      "silu_mul", "gelu_mul", "gelu",        "gelu_tanh", "add",         "mul",       "scale",
      "slice",    "mix",      "sigmoid_mul", "relu_sqr",  "token_shift", "wkv",       "sample"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<size_t>(Op::kCount),
                "op names out of sync with Op");
  return kNames[static_cast<int>(op)];
}

TensorId Graph::new_tensor(TensorInfo info) {
  if (!info.name.empty()) {
    if (by_name_.count(info.name)) fail("graph: duplicate tensor name '%s'", info.name.c_str());
    by_name_[info.name] = static_cast<TensorId>(tensors_.size());
  }
  tensors_.push_back(std::move(info));
  return static_cast<TensorId>(tensors_.size() - 1);
}

TensorId Graph::weight(const std::string& name, DType dtype, Shape shape) {
  return new_tensor({name, TensorKind::Weight, dtype, shape, {}});
}

TensorId Graph::input(const std::string& name, DType dtype, Shape shape) {
  return new_tensor({name, TensorKind::Input, dtype, shape, {}});
}

TensorId Graph::state(const std::string& name, DType dtype, Shape shape) {
  return new_tensor({name, TensorKind::State, dtype, shape, {}});
}

TensorId Graph::constant(const std::string& name, DType dtype, Shape shape, const void* data) {
  TensorInfo info{name, TensorKind::Constant, dtype, shape, {}};
  const size_t n = tensor_bytes(dtype, shape);
  info.constant.resize(n);
  std::memcpy(info.constant.data(), data, n);
  return new_tensor(std::move(info));
}

TensorId Graph::add(Op op, const std::string& name, std::vector<TensorId> inputs, DType out_dtype,
                    Shape out_shape, OpParams params) {
  for (TensorId in : inputs)
    if (in < 0 || in >= static_cast<TensorId>(tensors_.size()))
      fail("graph: node '%s' has an invalid input", name.c_str());
  const TensorId out = new_tensor({"", TensorKind::Intermediate, out_dtype, out_shape, {}});
  nodes_.push_back({op, name, std::move(inputs), out, params});
  return out;
}

void Graph::add_inplace(Op op, const std::string& name, std::vector<TensorId> inputs,
                        TensorId target, OpParams params) {
  nodes_.push_back({op, name, std::move(inputs), target, params});
}

void Graph::mark_output(TensorId t, const std::string& name) {
  TensorInfo& info = tensors_[t];
  if (info.kind != TensorKind::Intermediate) fail("graph: only an intermediate can be an output");
  info.kind = TensorKind::Output;
  info.name = name;
  by_name_[name] = t;
}

TensorId Graph::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : it->second;
}

}  // namespace llm
