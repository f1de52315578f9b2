// Op checks that every GPU backend's tests run against the CPU backend: each covers a
// family of nodes on random inputs of awkward sizes, compared through `compare` (one
// node on the CPU and on the backend: max |Δ| / max |cpu|), within its bound.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "backend_test_util.h"

namespace llm::test {

using CompareWithCpu =
    std::function<double(const Node& node, const std::vector<HostT>& ins, const HostT& out)>;

// RmsNorm and LayerNorm (with and without a bias) of 1 and 7 rows of each of dims, for
// each weight dtype; the bias has the weight's dtype or, without bias_like_weight, f32.
// Within 1e-5.
void check_norm_ops(const CompareWithCpu& compare, const std::vector<int64_t>& dims,
                    const std::vector<DType>& weight_types, bool bias_like_weight);

// Rope (NeoX and GPT-J, whole and partial rotary) of 7 tokens at positions from 0 to
// last_pos. Within 2e-6.
void check_rope_ops(const CompareWithCpu& compare, int32_t last_pos);

// SiluMul, GeluMul, Add and Mul (also with one row broadcast), Gelu, GeluTanh and Scale
// of 7 rows of 67, the first input in [-a_range, a_range]. Within 1e-6.
void check_elementwise_ops(const CompareWithCpu& compare, float a_range);

// Attention of a ragged batch for each case: two sequences in one step (sequence 0
// continues at positions 9..13, sequence 1 starts at 0..2), their pages of 4 slots
// scattered over the cache. Within 1e-5.
void check_attention_ops(const CompareWithCpu& compare, const std::vector<AttentionCase>& cases);

}  // namespace llm::test
