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

void Backend::copy(DeviceBuffer& dst, size_t dst_offset, const DeviceBuffer& src, size_t src_offset,
                   size_t bytes) {
  std::vector<uint8_t> host(bytes);
  download(src, src_offset, host.data(), bytes);
  upload(dst, dst_offset, host.data(), bytes);
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

std::string check_op(const Node& node, const std::vector<const TensorInfo*>& inputs,
                     const TensorInfo& output, const char* backend) {
  const Op op = node.op;
  if (static_cast<int>(op) >= static_cast<int>(Op::kCount))
    return format_message("op %d is not implemented by the %s backend", static_cast<int>(op),
                          backend);
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
  // Matmul weights and get_rows tables may also be quantized (q8_0 / q4_0, and q4_1 where
  // Backend::runs_weight_dtype says so), with rows of whole blocks.
  auto need_float_or_quant = [&](const TensorInfo& t, const char* what) -> std::string {
    if (is_float(t.dtype)) return "";
    if (!is_quant(t.dtype))
      return format_message("%s: %s %s are not supported", name, dtype_name(t.dtype), what);
    const int64_t block = dtype_info(t.dtype).block_elems;
    if (t.shape.row_len() % block != 0)
      return format_message("%s: %s %s need rows that are a multiple of %lld, got %s", name,
                            dtype_name(t.dtype), what, (long long)block, t.shape.str().c_str());
    return "";
  };
  auto need_float = [&](const TensorInfo& t, const char* what) -> std::string {
    if (is_float(t.dtype)) return "";
    if (is_quant(t.dtype))
      return format_message(
          "%s: %s %s are not supported by the %s backend yet (only matmul weights and "
          "get_rows tables may be quantized)",
          name, dtype_name(t.dtype), what, backend);
    return format_message("%s: %s %s are not supported", name, dtype_name(t.dtype), what);
  };
#define LLM_TRY(expr)                   \
  do {                                  \
    std::string llm_r_ = (expr);        \
    if (!llm_r_.empty()) return llm_r_; \
  } while (0)

  if (op != Op::KvAppend && op != Op::Sample) LLM_TRY(need(output, DType::F32, "the output"));
  switch (op) {
    case Op::GetRows: {
      LLM_TRY(in_count(2, 2));
      const TensorInfo &table = *inputs[0], &ids = *inputs[1];
      LLM_TRY(need_float_or_quant(table, "tables"));
      LLM_TRY(need(ids, DType::I32, "ids"));
      if (table.shape.rank != 2) return format_message("get_rows: the table must be 2-d");
      if (output.shape.numel() != ids.shape.numel() * table.shape[1])
        return format_message("get_rows: output %s does not hold %lld rows of %lld",
                              output.shape.str().c_str(), (long long)ids.shape.numel(),
                              (long long)table.shape[1]);
      return "";
    }
    case Op::RmsNorm:
    case Op::LayerNorm: {
      LLM_TRY(op == Op::RmsNorm ? in_count(2, 2) : in_count(2, 3));
      const TensorInfo& x = *inputs[0];
      LLM_TRY(need(x, DType::F32, "x"));
      for (size_t i = 1; i < n_in; i++) {
        LLM_TRY(need_float(*inputs[i], "norm weights"));
        if (inputs[i]->shape.numel() != x.shape.row_len())
          return format_message("%s: weight %s does not match rows of %lld", name,
                                inputs[i]->shape.str().c_str(), (long long)x.shape.row_len());
      }
      if (output.shape.numel() != x.shape.numel())
        return format_message("%s: output shape mismatch", name);
      return "";
    }
    case Op::MatMul: {
      LLM_TRY(in_count(2, 3));
      const TensorInfo &x = *inputs[0], &w = *inputs[1];
      LLM_TRY(need(x, DType::F32, "x"));
      LLM_TRY(need_float_or_quant(w, "weights"));
      if (w.shape.rank != 2 || w.shape[1] != x.shape.row_len())
        return format_message("matmul: weight %s does not match x %s", w.shape.str().c_str(),
                              x.shape.str().c_str());
      if (n_in > 2) {
        LLM_TRY(need_float(*inputs[2], "biases"));
        if (inputs[2]->shape.numel() != w.shape[0])
          return format_message("matmul: bias %s does not match %lld outputs",
                                inputs[2]->shape.str().c_str(), (long long)w.shape[0]);
      }
      if (output.shape.numel() != x.shape.rows() * w.shape[0])
        return format_message("matmul: output %s is not [%lld, %lld]", output.shape.str().c_str(),
                              (long long)x.shape.rows(), (long long)w.shape[0]);
      return "";
    }
    case Op::Rope: {
      LLM_TRY(in_count(3, 3));
      const TensorInfo &x = *inputs[0], &pos = *inputs[1], &freq = *inputs[2];
      LLM_TRY(need(x, DType::F32, "x"));
      LLM_TRY(need(pos, DType::I32, "positions"));
      LLM_TRY(need(freq, DType::F32, "inv_freq"));
      if (p.n_heads <= 0 || p.head_dim <= 0 || int64_t{p.n_heads} * p.head_dim != x.shape.row_len())
        return format_message("rope: %d heads of %d do not match rows of %lld", p.n_heads,
                              p.head_dim, (long long)x.shape.row_len());
      if (p.rot_dims <= 0 || p.rot_dims % 2 || p.rot_dims > p.head_dim)
        return format_message("rope: rot_dims %d must be even and in (0, head_dim %d]", p.rot_dims,
                              p.head_dim);
      if (freq.shape.numel() < p.rot_dims / 2)
        return format_message("rope: inv_freq has %lld entries, needs %d",
                              (long long)freq.shape.numel(), p.rot_dims / 2);
      if (pos.shape.numel() != x.shape.rows()) return "rope: one position per row of x";
      if (output.shape.numel() != x.shape.numel()) return "rope: output shape mismatch";
      return "";
    }
    case Op::KvAppend: {
      LLM_TRY(in_count(3, 3));
      const TensorInfo &src = *inputs[0], &slots = *inputs[1], &cache = *inputs[2];
      LLM_TRY(need(src, DType::F32, "src"));
      LLM_TRY(need(slots, DType::I32, "slots"));
      LLM_TRY(need_float(cache, "caches"));
      if (output.dtype != cache.dtype || output.shape != cache.shape)
        return "kv_append: the output must be the cache";
      if (src.shape.row_len() != cache.shape.row_len())
        return format_message("kv_append: rows of %lld do not match cache rows of %lld",
                              (long long)src.shape.row_len(), (long long)cache.shape.row_len());
      if (slots.shape.numel() != src.shape.rows()) return "kv_append: one slot per row of src";
      return "";
    }
    case Op::Attention: {
      LLM_TRY(in_count(6, 6));
      const TensorInfo &q = *inputs[0], &kc = *inputs[1], &vc = *inputs[2];
      LLM_TRY(need(q, DType::F32, "q"));
      LLM_TRY(need_float(kc, "caches"));
      LLM_TRY(need_float(vc, "caches"));
      LLM_TRY(need(*inputs[3], DType::I32, "positions"));
      LLM_TRY(need(*inputs[4], DType::I32, "seq_ids"));
      LLM_TRY(need(*inputs[5], DType::I32, "block_table"));
      if (p.n_heads <= 0 || p.n_kv_heads <= 0 || p.n_heads % p.n_kv_heads || p.head_dim <= 0)
        return format_message("attention: bad heads (%d query, %d kv, head_dim %d)", p.n_heads,
                              p.n_kv_heads, p.head_dim);
      if (p.page_size <= 0) return "attention: page_size must be positive";
      if (q.shape.row_len() != int64_t{p.n_heads} * p.head_dim)
        return format_message("attention: q rows of %lld are not %d heads of %d",
                              (long long)q.shape.row_len(), p.n_heads, p.head_dim);
      if (kc.shape != vc.shape || kc.shape.row_len() != int64_t{p.n_kv_heads} * p.head_dim)
        return format_message("attention: caches %s / %s are not [slots, %d * %d]",
                              kc.shape.str().c_str(), vc.shape.str().c_str(), p.n_kv_heads,
                              p.head_dim);
      if (inputs[3]->shape.numel() != q.shape.rows() || inputs[4]->shape.numel() != q.shape.rows())
        return "attention: one position and sequence id per token";
      if (inputs[5]->shape.rank != 2) return "attention: the block table must be 2-d";
      if (output.shape.numel() != q.shape.numel()) return "attention: output shape mismatch";
      return "";
    }
    case Op::SiluMul:
    case Op::GeluMul:
    case Op::Add:
    case Op::Mul: {
      LLM_TRY(in_count(2, 2));
      const TensorInfo &a = *inputs[0], &b = *inputs[1];
      LLM_TRY(need(a, DType::F32, "a"));
      LLM_TRY(need(b, DType::F32, "b"));
      const bool bcast = (op == Op::Add || op == Op::Mul) && b.shape.numel() == a.shape.row_len();
      if (b.shape.numel() != a.shape.numel() && !bcast)
        return format_message("%s: b %s does not match a %s", name, b.shape.str().c_str(),
                              a.shape.str().c_str());
      if (output.shape.numel() != a.shape.numel())
        return format_message("%s: output shape mismatch", name);
      return "";
    }
    case Op::Gelu:
    case Op::GeluTanh:
    case Op::Scale: {
      LLM_TRY(in_count(1, 1));
      LLM_TRY(need(*inputs[0], DType::F32, "a"));
      if (output.shape.numel() != inputs[0]->shape.numel())
        return format_message("%s: output shape mismatch", name);
      return "";
    }
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
      if (inputs[1]->shape.numel() != kSampleParamCount * inputs[0]->shape.rows())
        return "sample: params must be [rows, 5] (temperature, u, top_k, top_p, min_p)";
      if (output.shape.numel() != inputs[0]->shape.rows()) return "sample: one output per row of x";
      return "";
    }
    case Op::kCount:
      break;
  }
#undef LLM_TRY
  return format_message("op %d is not implemented by the %s backend", static_cast<int>(op),
                        backend);
}

}  // namespace llm
