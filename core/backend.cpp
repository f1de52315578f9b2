#include "core/backend.h"

#include <vector>

#include "core/error.h"

namespace llm {

std::unique_ptr<DeviceBuffer> Backend::from_host(const void* data, size_t bytes,
                                                 const std::string& what) {
  auto buf = alloc(bytes, what);
  upload(*buf, 0, data, bytes);
  return buf;
}

void Backend::clear(DeviceBuffer& dst, size_t offset, size_t bytes) {
  const std::vector<uint8_t> zeros(bytes, 0);
  upload(dst, offset, zeros.data(), bytes);
}

void Backend::check_bound(const BoundNode& bn, const char* who) const {
  if (!bn.node) fail("%s: bound node without a node", who);
  std::vector<TensorInfo> infos(bn.inputs.size());
  std::vector<const TensorInfo*> ptrs;
  for (size_t k = 0; k < bn.inputs.size(); k++) {
    infos[k].dtype = bn.inputs[k].dtype;
    infos[k].shape = bn.inputs[k].shape;
    ptrs.push_back(&infos[k]);
  }
  TensorInfo out;
  out.dtype = bn.output.dtype;
  out.shape = bn.output.shape;
  const std::string why = check(*bn.node, ptrs, out);
  if (!why.empty()) fail("%s: node '%s': %s", who, bn.node->name.c_str(), why.c_str());
}

std::string check_shared_op(const Node& node, const std::vector<const TensorInfo*>& inputs,
                            const TensorInfo& output) {
  const Op op = node.op;
  const char* name = op_name(op);
  const OpParams& p = node.params;
  const size_t n_in = inputs.size();
  auto in_count = [&](size_t lo, size_t hi) -> std::string {
    if (n_in < lo || n_in > hi)
      return format_message("%s: takes %zu to %zu inputs, got %zu", name, lo, hi, n_in);
    for (const TensorInfo* t : inputs)
      if (!t) return format_message("%s: missing input", name);
    return "";
  };
  auto need = [&](const TensorInfo& t, DType d, const char* what) -> std::string {
    if (t.dtype == d) return "";
    return format_message("%s: %s must be %s, got %s", name, what, dtype_name(d),
                          dtype_name(t.dtype));
  };
#define LLM_TRY(expr)                   \
  do {                                  \
    std::string llm_r_ = (expr);        \
    if (!llm_r_.empty()) return llm_r_; \
  } while (0)
  if (op != Op::Sample) LLM_TRY(need(output, DType::F32, "the output"));
  switch (op) {
    case Op::Slice: {
      LLM_TRY(in_count(1, 1));
      const TensorInfo& a = *inputs[0];
      LLM_TRY(need(a, DType::F32, "a"));
      const int64_t g = p.n_heads;
      if (g <= 0 || a.shape.row_len() % g != 0)
        return format_message("slice: %lld groups do not divide rows of %lld", (long long)g,
                              (long long)a.shape.row_len());
      const int64_t w_in = a.shape.row_len() / g;
      if (p.head_dim <= 0 || p.offset < 0 || p.offset + p.head_dim > w_in)
        return format_message("slice: columns %d..%d are outside groups of %lld", p.offset,
                              p.offset + p.head_dim, (long long)w_in);
      if (output.shape.numel() != a.shape.rows() * g * p.head_dim)
        return "slice: output shape mismatch";
      return "";
    }
    case Op::Mix: {
      LLM_TRY(in_count(3, 3));
      for (size_t i = 0; i < 3; i++) LLM_TRY(need(*inputs[i], DType::F32, "inputs"));
      if (inputs[1]->shape.numel() != inputs[0]->shape.numel() ||
          inputs[2]->shape.numel() != inputs[0]->shape.row_len())
        return "mix: a and b must match and w must be one row";
      if (output.shape.numel() != inputs[0]->shape.numel()) return "mix: output shape mismatch";
      return "";
    }
    case Op::SigmoidMul:
    case Op::ReluSqr: {
      LLM_TRY(op == Op::SigmoidMul ? in_count(2, 2) : in_count(1, 1));
      for (size_t i = 0; i < n_in; i++) LLM_TRY(need(*inputs[i], DType::F32, "inputs"));
      if (n_in == 2 && inputs[1]->shape.numel() != inputs[0]->shape.numel())
        return format_message("%s: a and b must match", name);
      if (output.shape.numel() != inputs[0]->shape.numel())
        return format_message("%s: output shape mismatch", name);
      return "";
    }
    case Op::TokenShift:
    case Op::Wkv: {
      const bool shift = op == Op::TokenShift;
      LLM_TRY(shift ? in_count(4, 4) : in_count(7, 7));
      const size_t n_f32 = shift ? 2 : 5;
      for (size_t i = 0; i < n_f32; i++) LLM_TRY(need(*inputs[i], DType::F32, "inputs"));
      LLM_TRY(need(*inputs[n_f32], DType::I32, "seq_ids"));
      LLM_TRY(need(*inputs[n_f32 + 1], DType::I32, "state_slots"));
      const TensorInfo &x = *inputs[0], &state = *inputs[n_f32 - 1];
      const int64_t w = x.shape.row_len();
      if (!shift && (inputs[1]->shape.numel() != x.shape.numel() || inputs[2]->shape.numel() != w ||
                     inputs[3]->shape.numel() != w))
        return "wkv: k, v must match and time_decay, time_first must be one row";
      if (state.shape.rank != 2 || state.shape[1] != (shift ? w : 3 * w))
        return format_message("%s: state %s is not [slots, %lld]", name, state.shape.str().c_str(),
                              (long long)(shift ? w : 3 * w));
      if (inputs[n_f32]->shape.numel() != x.shape.rows())
        return format_message("%s: one seq id per token", name);
      if (output.shape.numel() != x.shape.numel())
        return format_message("%s: output shape mismatch", name);
      return "";
    }
    case Op::Sample: {
      LLM_TRY(in_count(2, 2));
      LLM_TRY(need(*inputs[0], DType::F32, "x"));
      LLM_TRY(need(*inputs[1], DType::F32, "params"));
      if (output.dtype != DType::I32) return "sample: the output must be i32";
      if (inputs[0]->shape.rank < 1 || inputs[0]->shape.row_len() < 1)
        return "sample: x has no columns";
      if (inputs[1]->shape.numel() != 2 * inputs[0]->shape.rows())
        return "sample: params must be [rows, 2] (temperature, u)";
      if (output.shape.numel() != inputs[0]->shape.rows()) return "sample: one output per row of x";
      return "";
    }
    default:
      break;
  }
#undef LLM_TRY
  return format_message("%s is not one of the ops check_shared_op knows", name);
}

}  // namespace llm
